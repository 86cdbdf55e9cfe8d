"""A `hello` Service and Deployment for runtime tests, running tests/support/pod_app.py.

`hello_manifest` writes the YAML a user would: the Service on `port`, and a Deployment
whose pods run the app in `mode` (see pod_app.py) with the given replicas and extra
environment, probed on `/`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

APP = Path(__file__).with_name("pod_app.py")


def hello_manifest(
    *,
    port: int,
    events: Path,
    mode: str = "serve",
    replicas: int = 1,
    env: dict[str, str] | None = None,
    grace_seconds: int | None = None,
) -> str:
    service = {
        "apiVersion": "mycelium.io/v1",
        "kind": "Service",
        "metadata": {"name": "hello"},
        "spec": {"selector": {"app": "hello"}, "ports": [{"name": "http", "port": port}]},
    }
    variables = {"PORT": str(port), "EVENT_FILE": str(events), **(env or {})}
    pod_spec: dict[str, object] = {
        "serviceAccountName": "hello",
        "containers": [
            {
                "name": "hello",
                "command": [sys.executable, str(APP), mode],
                "env": [{"name": k, "value": v} for k, v in variables.items()],
                "ports": [{"containerPort": port}],
                "readinessProbe": {"httpGet": {"path": "/", "port": port}},
            }
        ],
    }
    if grace_seconds is not None:
        pod_spec["terminationGracePeriodSeconds"] = grace_seconds
    deployment = {
        "apiVersion": "mycelium.io/v1",
        "kind": "Deployment",
        "metadata": {"name": "hello"},
        "spec": {
            "replicas": replicas,
            "template": {"metadata": {"labels": {"app": "hello"}}, "spec": pod_spec},
        },
    }
    return yaml.safe_dump_all([service, deployment], sort_keys=False)
