"""The bootstrap's installer leaves no service running or enabled, and keeps apt quiet.

Debian's etcd-server enables a system etcd on 2379 at boot; nginx one on port 80. The
test builds a real Debian package that does what they do in its maintainer script
(enables its systemd unit and its SysV links, starts itself through invoke-rc.d, talks
on the terminal), installs it with `tools/install-packages.sh` through apt, as the
bootstrap does, and checks the host afterwards: the unit and the links disabled, the
service never started, the chatter in the log and not on the terminal. The package is
purged afterwards, whatever happened.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[3]
INSTALLER = ROOT / "tools" / "install-packages.sh"
NAME = "mycelium-test-daemon"
STARTED = Path(f"/run/{NAME}.started")
POLICY = Path("/usr/sbin/policy-rc.d")

POSTINST = f"""#!/bin/sh
set -e
echo "{NAME}: postinst chatter a user should not see"
if [ "$1" = configure ]; then
  deb-systemd-helper enable {NAME}.service
  update-rc.d {NAME} defaults
  invoke-rc.d {NAME} start || true
fi
"""
INIT_SCRIPT = f"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          {NAME}
# Required-Start:    $remote_fs
# Required-Stop:     $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: a stand-in for etcd-server's service, for a test
### END INIT INFO
case "$1" in
  start) touch {STARTED} ;;
esac
exit 0
"""
UNIT = f"""[Unit]
Description=a stand-in for etcd-server's service, for a test

[Service]
ExecStart=/bin/touch {STARTED}

[Install]
WantedBy=multi-user.target
"""
POSTRM = f"""#!/bin/sh
set -e
if [ "$1" = purge ]; then
  update-rc.d {NAME} remove >/dev/null || true
  deb-systemd-helper purge {NAME}.service >/dev/null || true
fi
"""


def build_package(work: Path) -> Path:
    tree = work / NAME
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "lib" / "systemd" / "system").mkdir(parents=True)
    (tree / "etc" / "init.d").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {NAME}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: Mycelium tests <tests@mycelium.invalid>\n"
        "Description: a package with a service, as etcd-server has one\n"
    )
    for script, text in (("postinst", POSTINST), ("postrm", POSTRM)):
        (tree / "DEBIAN" / script).write_text(text)
        (tree / "DEBIAN" / script).chmod(0o755)
    (tree / "etc" / "init.d" / NAME).write_text(INIT_SCRIPT)
    (tree / "etc" / "init.d" / NAME).chmod(0o755)
    (tree / "lib" / "systemd" / "system" / f"{NAME}.service").write_text(UNIT)
    deb = work / f"{NAME}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def enabled_links() -> list[str]:
    found = [str(p) for p in Path("/etc/systemd/system").glob(f"*.wants/{NAME}.service")]
    for level in "2345":
        found += [str(p) for p in Path(f"/etc/rc{level}.d").glob(f"S*{NAME}")]
    return found


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail("this test installs a Debian package: run it as root on Debian")
    deb = build_package(tmp_path)
    # The test checks the installer's own policy-rc.d: a host's (Docker images have
    # one) is moved aside, and put back afterwards.
    saved = tmp_path / "policy-rc.d.saved"
    if POLICY.exists():
        shutil.move(POLICY, saved)
    STARTED.unlink(missing_ok=True)
    try:
        yield deb
    finally:
        subprocess.run(["dpkg", "--purge", NAME], capture_output=True, check=False)
        STARTED.unlink(missing_ok=True)
        if saved.exists():
            shutil.move(saved, POLICY)


def test_a_package_that_enables_and_starts_its_service_is_left_disabled_and_stopped(
    package: Path, tmp_path: Path
) -> None:
    log = tmp_path / "apt.log"
    done = subprocess.run(
        ["bash", str(INSTALLER), str(log), str(package)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert subprocess.run(["dpkg", "-s", NAME], capture_output=True, check=False).returncode == 0

    assert enabled_links() == [], "the installer left the package's service enabled"
    assert not STARTED.exists(), "the package's service was started during the install"
    assert not POLICY.exists(), "the installer's policy-rc.d outlived it"

    # The terminal gets two sentences; apt and the maintainer scripts go to the log.
    lines = done.stdout.splitlines()
    assert lines[0] == f"installing Debian packages: {package} (log: {log})"
    assert lines[1] == (
        f"left disabled (the install enabled them; nothing here needs them running): {NAME}"
    )
    assert len(lines) == 2
    assert "postinst chatter" not in done.stdout + done.stderr
    assert "postinst chatter" in log.read_text()


def test_a_failed_install_shows_its_log_and_fails(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail("this test runs apt: run it as root on Debian")
    log = tmp_path / "apt.log"
    done = subprocess.run(
        ["bash", str(INSTALLER), str(log), "mycelium-no-such-package"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 1
    assert "Unable to locate package mycelium-no-such-package" in done.stderr
    assert f"the install failed: its log is above, and in {log}" in done.stderr
