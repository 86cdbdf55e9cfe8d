"""Argument handling before any request: usage errors exit 2, expected errors exit 1.

The controller URL points at a port where nothing listens, so that a test which
reached the network by mistake would fail with "cannot reach" rather than pass. (The
"cannot reach" message itself is tested in tests/integration/cli.)
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner, Result

from mycelium import __version__
from mycelium.cli.commands.controller import parse_listen_address
from mycelium.cli.main import app

NOWHERE = "http://127.0.0.1:9"

runner = CliRunner()


def myc(*args: str) -> Result:
    return runner.invoke(app, ["--controller", NOWHERE, *args])


def test_an_unknown_kind_is_an_error_that_lists_the_valid_kinds() -> None:
    result = myc("get", "pods")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown kind 'pods'; valid kinds are: ")
    assert "Service (svc)" in result.stderr
    assert "Traceback" not in result.output


def test_an_unknown_output_format_is_a_usage_error() -> None:
    result = myc("get", "svc", "-o", "table")

    assert result.exit_code == 2


def test_a_name_across_all_namespaces_is_a_usage_error() -> None:
    result = myc("get", "svc", "reviews", "-A")

    assert result.exit_code == 2
    assert "across all namespaces" in result.stderr


@pytest.mark.parametrize(
    "args",
    [["delete"], ["delete", "svc"], ["delete", "svc", "reviews", "-f", "x.yaml"]],
    ids=["nothing", "kind-without-name", "name-and-file"],
)
def test_delete_needs_exactly_one_way_to_name_what_to_delete(args: list[str]) -> None:
    result = myc(*args)

    assert result.exit_code == 2


def test_apply_needs_a_file() -> None:
    result = myc("apply")

    assert result.exit_code == 2
    assert "-f" in result.stderr


def test_a_controller_url_that_cannot_be_one_is_a_usage_error() -> None:
    result = runner.invoke(app, ["--controller", "localhost:15014", "get", "svc"])

    assert result.exit_code == 2
    assert "http://HOST:PORT" in result.stderr


def test_version_client_only_does_not_touch_the_network() -> None:
    result = myc("version", "--client", "-o", "json")

    assert result.exit_code == 0
    assert result.stderr == ""
    assert f'"clientVersion": "{__version__}"' in result.stdout
    assert "serverVersion" not in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:15014", ("127.0.0.1", 15014)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:15012", ("::1", 15012)),
        ("localhost:8080", ("localhost", 8080)),
    ],
)
def test_listen_addresses_are_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["15014", ":15014", "::1:15014", "host:http", "host:70000"])
def test_malformed_listen_addresses_are_usage_errors(text: str) -> None:
    result = runner.invoke(app, ["controller", "--listen-api", text])

    assert result.exit_code == 2
