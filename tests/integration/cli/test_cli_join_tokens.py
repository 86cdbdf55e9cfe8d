"""A workload's first certificate: `myc token create` mints a join token, a CSR sent
with it comes back signed for exactly that identity, and the token is good once. The
controller is the real `myc controller` process; the SVID is checked with openssl."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from tests.integration.cli.conftest import MYC, Controller, free_port, wait_until

from mycelium.identity.csr import new_key_and_request
from mycelium.identity.spiffe import SpiffeId

REVIEWS = SpiffeId("cluster.local", "shop", "reviews")


def ask_for_svid(controller: Controller, token: str, csr_pem: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        controller.url + "/identity/v1/svids",
        data=json.dumps({"csr": csr_pem.decode()}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def mint(controller: Controller, *args: str) -> str:
    return controller.myc("token", "create", *args).ok().strip()


def test_a_join_token_buys_one_svid_for_its_identity(
    controller: Controller, tmp_path: Path
) -> None:
    token = mint(controller, "-n", "shop", "--service-account", "reviews", "--ttl", "10m")
    request = new_key_and_request(REVIEWS)

    status, answer = ask_for_svid(controller, token, request.csr_pem)

    assert status == 200, answer
    assert answer["identity"] == REVIEWS.uri
    certificate = x509.load_pem_x509_certificate(answer["certificate"].encode())
    assert SpiffeId.from_certificate(certificate) == REVIEWS
    (tmp_path / "svid.pem").write_text(answer["certificate"])
    (tmp_path / "bundle.pem").write_text(answer["trustBundle"])
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "bundle.pem"), str(tmp_path / "svid.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert "PRIVATE KEY" not in json.dumps(answer)

    # The same token again, even with a fresh key: replayed.
    again, refusal = ask_for_svid(controller, token, new_key_and_request(REVIEWS).csr_pem)
    assert again == 401
    assert refusal["error"] == "token_replayed"
    # The log says what was refused and from where, never the token.
    log = controller.log.read_text()
    assert "join token replayed" in log
    assert token not in log
    assert token.split(".")[2] not in log


def test_forged_and_mismatched_requests_are_refused(controller: Controller) -> None:
    token = mint(controller, "-n", "shop", "--service-account", "reviews")
    prefix, payload, mac = token.split(".")
    # A different first character: all six of its bits are MAC bits.
    forged = f"{prefix}.{payload}.{'B' if mac[0] == 'A' else 'A'}{mac[1:]}"

    status, refusal = ask_for_svid(controller, forged, new_key_and_request(REVIEWS).csr_pem)
    assert (status, refusal["error"]) == (401, "token_forged")

    # A good token for reviews cannot buy the payments identity.
    payments = new_key_and_request(SpiffeId("cluster.local", "shop", "payments"))
    status, refusal = ask_for_svid(controller, token, payments.csr_pem)
    assert (status, refusal["error"]) == (400, "identity_mismatch")

    status, refusal = ask_for_svid(controller, "", new_key_and_request(REVIEWS).csr_pem)
    assert (status, refusal["error"]) == (401, "token_malformed")


def test_the_cli_prints_the_identity_and_expiry_on_request(controller: Controller) -> None:
    document = json.loads(
        controller.myc(
            "token",
            "create",
            "-n",
            "shop",
            "--service-account",
            "reviews",
            "--ttl",
            "1h",
            "-o",
            "json",
        ).ok()
    )
    assert document["identity"] == REVIEWS.uri
    assert document["token"].startswith("myc1.")
    assert document["expiresAt"].endswith("+00:00")

    refused = controller.myc("token", "create", "-n", "Shop")
    assert refused.code != 0
    assert "not a lowercase DNS label" in refused.stderr
    bad_ttl = controller.myc("token", "create", "--ttl", "ten minutes")
    assert bad_ttl.code != 0
    assert "--ttl" in bad_ttl.stderr


def test_myc_proxy_takes_its_token_from_the_environment_not_the_command_line(
    controller: Controller, tmp_path: Path
) -> None:
    token = mint(controller, "-n", "default", "--service-account", "reviews")
    admin_port = free_port()
    args = [
        *MYC,
        *("proxy", "--id", "reviews-cli-0", "--service-account", "reviews"),
        *("--discovery", f"127.0.0.1:{controller.discovery_port}"),
        *("--outbound", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{admin_port}"),
        *("--health", f"127.0.0.1:{free_port()}"),
    ]
    with open(tmp_path / "proxy.log", "wb") as log:
        proxy = subprocess.Popen(
            args, env=controller.env(MYC_JOIN_TOKEN=token), stdout=log, stderr=subprocess.STDOUT
        )
    try:

        def identity() -> Any:
            try:
                url = f"http://127.0.0.1:{admin_port}/config_dump"
                with urllib.request.urlopen(url, timeout=2) as response:
                    return json.loads(response.read())["identity"]
            except OSError:
                return None

        found = wait_until(identity, 20, "the proxy's SVID")
        assert found["spiffeId"] == "spiffe://cluster.local/ns/default/sa/reviews"
        cmdline = Path(f"/proc/{proxy.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline
        assert token not in (tmp_path / "proxy.log").read_text()
    finally:
        proxy.terminate()
        proxy.wait(15)


def test_myc_check_passes_on_a_healthy_mesh_and_fails_loudly_otherwise(
    controller: Controller,
) -> None:
    healthy = controller.myc("check")
    assert healthy.code == 0, healthy.stderr
    assert "OK    CA root CN=mycelium root CA (cluster.local)" in healthy.stdout
    assert "OK    clock skew" in healthy.stdout

    # The CA lives ten years: asking for more than that makes its expiry a failure.
    strict = controller.myc("check", "--ca-warning", "100000h")
    assert strict.code == 1
    assert "FAIL  CA root" in strict.stdout

    nowhere = controller.myc("check", MYC_CONTROLLER=f"http://127.0.0.1:{free_port()}")
    assert nowhere.code != 0


def test_myc_proxy_on_a_taken_port_says_so_in_a_sentence(
    controller: Controller, tmp_path: Path
) -> None:
    token = mint(controller, "-n", "default", "--service-account", "reviews")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        args = [
            *MYC,
            *("proxy", "--id", "reviews-cli-1", "--service-account", "reviews"),
            *("--discovery", f"127.0.0.1:{controller.discovery_port}"),
            *("--outbound", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{taken}"),
            *("--health", f"127.0.0.1:{free_port()}"),
        ]
        done = subprocess.run(
            args,
            env=controller.env(MYC_JOIN_TOKEN=token),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"cannot listen on 127.0.0.1:{taken}" in done.stderr
    assert "Address already in use" in done.stderr
    assert "ss -ltnp" in done.stderr


def test_myc_proxy_without_its_trust_bundle_says_which_file_and_how_to_give_it(
    controller: Controller, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-root.pem"
    args = [
        *MYC,
        *("proxy", "--id", "reviews-cli-2", "--service-account", "reviews"),
        *("--discovery", f"127.0.0.1:{controller.discovery_port}"),
        *("--trust-bundle", str(missing)),
        *("--outbound", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{free_port()}"),
        *("--health", f"127.0.0.1:{free_port()}"),
    ]
    done = subprocess.run(
        args, env=controller.env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"cannot use the trust bundle {missing}: No such file or directory" in done.stderr
    assert "--trust-bundle FILE" in done.stderr
