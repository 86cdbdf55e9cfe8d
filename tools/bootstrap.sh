#!/usr/bin/env bash
# Bootstrap a fresh clone: find Python >= 3.12, create .venv, install the project, and —
# when running as root — the Debian packages the demo (`bootstrap.sh demo`) or the tests
# (`bootstrap.sh test`, the default) use, without starting or enabling any service.
# Idempotent: a second run only checks. Everything comes from the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP=$VENV/.bootstrapped
# What `make demo` needs (`bootstrap.sh demo`): gcc and libc6-dev build the proxy's one
# compiled module (setup.py; a Debian python3.12 also needs python3.12-dev, added below
# when it is the one found); iproute2 and nftables put the pods in network namespaces.
DEMO_PACKAGES=(gcc libc6-dev iproute2 nftables)
# What `make test` adds (`bootstrap.sh test`): etcd for the store's tests (each starts its
# own member), chromium for the dashboard's browser tests, curl, h2load (nghttp2-client),
# openssl and procps as real clients and tools, prometheus to run Istio's dashboard
# queries against a mesh, and the benches' peers (haproxy, nginx-light, wrk), which CI
# runs in their smoke mode.
TEST_PACKAGES=(etcd-server etcd-client curl procps openssl chromium nghttp2-client
  prometheus haproxy nginx-light wrk)

find_python() {
  # Prefer 3.12 (the target), then any newer 3.x; plain executables before pyenv's.
  local minor candidate path version
  for minor in 12 13 14; do
    candidate=python3.$minor
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'pass' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
    # pyenv's shims only answer for a selected version, so look in its versions directly.
    if command -v pyenv >/dev/null 2>&1; then
      for version in $(pyenv versions --bare 2>/dev/null | grep -E "^3\.$minor\.[0-9]+$" | sort -rV); do
        path="$(pyenv root)/versions/$version/bin/python3"
        [ -x "$path" ] && { echo "$path"; return 0; }
      done
    fi
  done
  if command -v python3 >/dev/null 2>&1 &&
     python3 -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    command -v python3; return 0
  fi
  return 1
}

install_debian_packages() {
  [ "$(id -u)" -eq 0 ] || return 0
  command -v apt-get >/dev/null 2>&1 || return 0
  # quiet, no service started or left enabled: see the script
  bash tools/install-packages.sh .bootstrap/apt.log "${DEBIAN_PACKAGES[@]}" | sed 's/^/bootstrap: /'
}

PURPOSE=${1:-test}
case "$PURPOSE" in
  demo) DEBIAN_PACKAGES=("${DEMO_PACKAGES[@]}") ;;
  test) DEBIAN_PACKAGES=("${DEMO_PACKAGES[@]}" "${TEST_PACKAGES[@]}") ;;
  --packages)  # what each purpose installs, for the README and its test
    echo "demo: ${DEMO_PACKAGES[*]}"
    echo "test: ${DEMO_PACKAGES[*]} ${TEST_PACKAGES[*]}"
    exit 0 ;;
  *) echo "usage: $0 [demo|test|--packages]" >&2; exit 2 ;;
esac

PY=$(find_python) || PY=""
case "$PY" in
  /usr/bin/python3*) DEBIAN_PACKAGES+=("$(basename "$PY")-dev" "$(basename "$PY")-venv") ;;
esac
install_debian_packages

no_python() {
  # What exists on this machine, and fixes that work on it: Debian 12 packages Python
  # 3.11 only (Debian 13 has 3.13, which will do), and no registry this bootstrap may
  # use ships a 3.12 interpreter, so it names the two usual ways to get one.
  local found="none"
  if command -v python3 >/dev/null 2>&1; then
    found="$(python3 --version 2>&1) at $(command -v python3)"
  fi
  cat >&2 <<MESSAGE
bootstrap: Python 3.12 or newer is required; this machine has: $found.
  Without root, either of these puts one under your home, then run make again:
    uv:    install uv (its standalone installer, or 'pipx install uv'), then
           uv python install 3.12
           uv venv --seed --python 3.12 .venv
    pyenv: install pyenv, then
           pyenv install 3.12
           (the bootstrap finds pyenv's versions by itself)
MESSAGE
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "  As root on Debian 13 or newer: apt-get install python3 python3-venv" >&2
  fi
  exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
  [ -n "$PY" ] || no_python
  echo "bootstrap: creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi

# The install also compiles the HTTP/1.1 head fast lane (setup.py): redo it when its
# source changes, or an old build would shadow the new code.
FAST_LANE=src/mycelium/proxy/protocols/_head_scan.pyx
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ setup.py -nt "$STAMP" ] ||
  [ "$FAST_LANE" -nt "$STAMP" ]; then
  # pip's own chatter goes to a log; it is shown only when the install fails.
  if ! "$VENV/bin/python" -m pip install -e '.[dev]' >"$VENV/pip.log" 2>&1; then
    cat "$VENV/pip.log" >&2
    echo "bootstrap: pip install failed (log above, also in $VENV/pip.log)" >&2
    exit 1
  fi
  touch "$STAMP"
fi
