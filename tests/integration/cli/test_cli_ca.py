"""`myc ca` against a real controller process: status shows the root and signer, a
new root is made offline, trusting it is one append and a reload, and files that do
not fit are refused with the file named while the CA in force stays."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.cli.conftest import Controller


def test_a_new_root_is_trusted_with_one_append_and_a_reload(
    controller: Controller, tmp_path: Path
) -> None:
    before = json.loads(controller.myc("ca", "status", "-o", "json").ok())
    assert len(before["roots"]) == 1
    assert before["signer"]["root"] == before["roots"][0]["keyId"]
    table = controller.myc("ca", "status").ok()
    assert "LIVE CERTIFICATES" in table
    assert before["roots"][0]["keyId"][:16] in table

    made = controller.myc("ca", "new-root", "--out", str(tmp_path / "next")).ok()
    assert "root.key (0600)" in made
    assert "PRIVATE KEY" not in made
    assert (tmp_path / "next" / "root.key").stat().st_mode & 0o777 == 0o600
    with (controller.home / "ca" / "root.pem").open("ab") as bundle:
        bundle.write((tmp_path / "next" / "root.pem").read_bytes())

    after = json.loads(controller.myc("ca", "reload", "-o", "json").ok())

    assert len(after["roots"]) == 2
    assert after["signer"]["keyId"] == before["signer"]["keyId"]  # still the old signer


def test_files_that_do_not_fit_are_refused_and_the_ca_stays(
    controller: Controller, tmp_path: Path
) -> None:
    controller.myc("ca", "new-root", "--out", str(tmp_path / "other")).ok()
    signing, key = controller.home / "ca" / "signing.pem", controller.home / "ca" / "signing.key"
    kept = signing.read_bytes(), key.read_bytes()
    # a signer (and its key) from a root the bundle does not hold
    signing.write_bytes((tmp_path / "other" / "root.pem").read_bytes())
    key.write_bytes((tmp_path / "other" / "root.key").read_bytes())

    refused = controller.myc("ca", "reload")

    assert refused.code != 0
    assert "signing.pem" in refused.stderr
    assert "root.pem" in refused.stderr  # what to do: trust its root first
    assert "PRIVATE KEY" not in refused.stderr + refused.stdout
    signing.write_bytes(kept[0])
    key.write_bytes(kept[1])
    status = json.loads(controller.myc("ca", "status", "-o", "json").ok())
    assert len(status["roots"]) == 1  # nothing was applied


def test_the_ca_key_appears_in_no_output_log_or_api_answer(controller: Controller) -> None:
    key = (controller.home / "ca" / "signing.key").read_text()
    secret_lines = [line for line in key.splitlines() if line and "PRIVATE KEY" not in line]
    assert secret_lines

    seen = "\n".join(
        [
            controller.myc("ca", "status", "-o", "json").ok(),
            controller.myc("ca", "reload", "-o", "yaml").ok(),
            controller.myc("status", "-o", "json").ok(),
            controller.myc("check").stdout,
            controller.log.read_text(),
        ]
    )

    assert "PRIVATE KEY" not in seen
    assert not [line for line in secret_lines if line in seen]
