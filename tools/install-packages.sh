#!/usr/bin/env bash
# Install Debian packages for the demo, the tests or a bench, and change nothing else on
# the host. Packages that ship a service enable it, and would start it: etcd-server a
# system etcd on 2379 at every boot, nginx a web server on port 80. Ours start their own
# processes, so no service is started while installing (policy-rc.d says "forbidden"),
# and every unit the install enabled is disabled again. apt's and debconf's chatter goes
# to LOG, shown only when the install fails.
#
#   tools/install-packages.sh LOG PACKAGE...
#
# Prints one line naming what it installs, and one naming what it left disabled. Only
# packages not yet installed are touched. Needs root and apt-get.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 LOG PACKAGE..." >&2; exit 2; }
log=$1
shift

missing=()
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

mkdir -p "$(dirname "$log")"
: >"$log"

# What boots: systemd's enablement links, and the SysV start links for hosts without it.
enabled() {
  {
    find /etc/systemd/system -path '*.wants/*' -printf 'unit %f\n' 2>/dev/null || true
    find /etc/rc[2-5].d -name 'S*' -printf 'sysv %f\n' 2>/dev/null | sed -E 's/ S[0-9]+/ /' || true
  } | sort -u
}
before=$(enabled)

policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# installed by mycelium tools/install-packages.sh while it runs\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [ -n "$own_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

echo "installing Debian packages: ${missing[*]} (log: $log)"
if ! {
  apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
} >>"$log" 2>&1; then
  cat "$log" >&2
  echo "the install failed: its log is above, and in $log" >&2
  exit 1
fi

disabled=()
while read -r kind name; do
  [ -n "$name" ] || continue
  case "$kind" in
    unit)
      # systemctl disables offline too (no running systemd needed); without it, the
      # links are what enabling made
      if command -v systemctl >/dev/null 2>&1; then
        systemctl --no-reload disable "$name" >>"$log" 2>&1 || true
        if [ -d /run/systemd/system ]; then
          systemctl stop "$name" >>"$log" 2>&1 || true
        fi
      else
        rm -f /etc/systemd/system/*.wants/"$name"
      fi
      ;;
    sysv)
      update-rc.d "$name" disable >>"$log" 2>&1 || true
      ;;
  esac
  disabled+=("$name")
done < <(comm -13 <(echo "$before") <(enabled))

if [ ${#disabled[@]} -gt 0 ]; then
  # a service's unit and its SysV script share its name: say it once
  names=$(printf '%s\n' "${disabled[@]}" | sed 's/\.service$//' | sort -u | tr '\n' ' ')
  echo "left disabled (the install enabled them; nothing here needs them running): ${names% }"
fi
