"""`myc gateway` as the runtime starts it: the bare command, everything else from the
pod's environment (MYC_POD_*, MYC_DISCOVERY, MYC_TRUST_BUNDLE, MYC_JOIN_TOKEN)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from typing import Any

from tests.integration.cli.conftest import MYC, Controller, wait_until

ADDRESS = "127.0.0.31"


def free_port_on(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
    except (urllib.error.URLError, OSError):
        return 0, {}, b""


def config_dump() -> dict[str, Any]:
    status, _, body = get(f"http://{ADDRESS}:15000/config_dump")
    return json.loads(body) if status == 200 else {}


def test_myc_gateway_takes_its_configuration_from_the_pods_environment(
    controller: Controller,
) -> None:
    port = free_port_on(ADDRESS)
    gateway = f"""
apiVersion: mycelium.io/v1
kind: Gateway
metadata: {{name: public, namespace: edge}}
spec:
  selector: {{app: ingress, tier: edge}}
  listeners: [{{name: web, port: {port}, protocol: HTTP}}]
"""
    controller.myc("apply", "-f", "-", stdin=gateway).ok()
    token = controller.myc("token", "create", "-n", "edge", "--service-account", "ingress").ok()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYC_")}
    env.update(
        MYC_POD_NAME="ingress-7",
        MYC_POD_NAMESPACE="edge",
        MYC_SERVICE_ACCOUNT="ingress",
        MYC_POD_LABELS="app=ingress,tier=edge",
        MYC_POD_ADDRESS=ADDRESS,
        MYC_DISCOVERY=f"127.0.0.1:{controller.discovery_port}",
        MYC_TRUST_BUNDLE=str(controller.home / "ca" / "root.pem"),
        MYC_JOIN_TOKEN=token.strip(),
    )
    process = subprocess.Popen(
        [*MYC, "gateway"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        # health and admin on the pod's address, at Istio's ports
        wait_until(
            lambda: get(f"http://{ADDRESS}:15021/healthz/ready")[0] == 200, 30, "gateway ready"
        )
        dump = wait_until(
            lambda: (d := config_dump()).get("identity") and "gateway" in d["entries"] and d,
            30,
            "an SVID and the gateway entry",
        )
        assert dump["identity"]["spiffeId"] == "spiffe://cluster.local/ns/edge/sa/ingress"
        [listener] = dump["entries"]["gateway"]["body"]["listeners"]
        assert listener["name"] == "edge/public/web"
        # the Gateway's listener is bound on the pod's address (no route attached yet)
        status, headers, _ = wait_until(
            lambda: (answer := get(f"http://{ADDRESS}:{port}/"))[0] and answer,
            30,
            "the listener",
        )
        assert (status, headers["x-mycelium-reason"]) == (404, "no_route")
        # registered as a Workload named after the pod, with its labels and address
        listed = json.loads(controller.myc("get", "workloads", "-n", "edge", "-o", "json").ok())
        [workload] = listed.get("items", [listed])
        assert workload["metadata"]["name"] == "ingress-7"
        assert workload["metadata"]["labels"] == {"app": "ingress", "tier": "edge"}
        assert workload["spec"]["address"] == ADDRESS
        assert "ingress-7" in controller.myc("status").ok()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output.decode(errors="replace")
