"""What the operator reads when something is wrong: one sentence, exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mycelium import __version__

if TYPE_CHECKING:
    from conftest import Controller

ORPHAN_ROUTE = """\
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: orphan}
spec:
  parentRefs: [{name: nowhere}]
  rules:
  - backendRefs: [{name: nowhere, port: 80}]
"""


def test_a_controller_that_is_not_running(controller: Controller) -> None:
    nowhere = f"http://127.0.0.1:{controller.free_port()}"

    result = controller.myc("get", "svc", MYC_CONTROLLER=nowhere)

    assert result.code == 1
    assert result.stderr == (
        f"error: cannot reach the controller at {nowhere}: is it running? "
        "start it with 'myc controller'\n"
    )


def test_a_valid_file_is_sent_only_when_it_validates(
    controller: Controller, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{controller.free_port()}"
    good = tmp_path / "good.yaml"
    good.write_text("apiVersion: mycelium.io/v1\nkind: Namespace\nmetadata: {name: x}\n")

    # Valid here, so myc tries to send it (and finds nobody): validation did not stop it.
    result = controller.myc("apply", "-f", str(good), MYC_CONTROLLER=nowhere)

    assert result.code == 1
    assert result.stderr.startswith(f"error: cannot reach the controller at {nowhere}")


def test_version_shows_both_sides(controller: Controller) -> None:
    assert controller.myc("version").ok() == (
        f"Client Version: {__version__}\nServer Version: {__version__} (store: sqlite)\n"
    )


def test_a_wrong_token_is_refused(controller: Controller) -> None:
    result = controller.myc("get", "svc", MYC_TOKEN="not-the-token")

    assert result.code == 1
    assert result.stderr.startswith(
        "error: the controller refused the admin token from MYC_TOKEN: "
    )
    assert "Traceback" not in result.stderr


def test_a_home_without_token_says_where_it_looked(controller: Controller, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"

    result = controller.myc("get", "svc", MYC_HOME=str(elsewhere))

    assert result.code == 1
    assert result.stderr.startswith(
        "error: the controller refused the admin token: none was found at "
        f"{elsewhere / 'admin-token'}"
    )


def test_the_controller_checks_references_and_reports_them_like_local_issues(
    controller: Controller,
) -> None:
    result = controller.myc("apply", "-f", "-", stdin=ORPHAN_ROUTE)

    assert result.code == 1
    first, *issues = result.stderr.splitlines()
    assert first.startswith("error: ")
    assert "found by the controller; nothing was applied" in first
    assert issues
    assert all(
        line.startswith("  <stdin>, document 1, HTTPRoute/default/orphan") for line in issues
    )
    assert "nowhere" in result.stderr
    assert controller.myc("get", "hr").stderr == "No resources found in default namespace.\n"


def test_a_missing_resource_is_an_error_unless_ignored(controller: Controller) -> None:
    missing = controller.myc("delete", "svc", "ghost")
    ignored = controller.myc("delete", "svc", "ghost", "--ignore-not-found")
    described = controller.myc("describe", "svc", "ghost")

    assert (missing.code, missing.stderr) == (1, 'error: services "ghost" not found\n')
    assert (ignored.code, ignored.stdout, ignored.stderr) == (0, "", "")
    assert (described.code, described.stderr) == (1, 'error: services "ghost" not found\n')


def test_the_controller_command_reports_a_port_in_use(controller: Controller) -> None:
    taken = controller.url.rsplit(":", 1)[1]

    result = controller.myc(
        "controller",
        "--home",
        str(controller.home.parent / "second"),
        "--listen-api",
        f"127.0.0.1:{taken}",
        "--listen-discovery",
        f"127.0.0.1:{controller.free_port()}",
    )

    assert result.code == 1, result.stderr
    assert "error: " in result.stderr
    assert "Traceback" not in result.stderr
