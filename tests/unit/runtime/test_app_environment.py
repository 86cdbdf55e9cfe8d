"""A process pod's app environment: the mesh's settings win over what the runtime
inherited, so no inherited proxy setting can send the app's calls around its sidecar."""

from __future__ import annotations

from pathlib import Path

from mycelium.api.deployment import Container
from mycelium.runtime.process_pods import PodAddresses, PodSpec, app_environment


def test_inherited_proxy_settings_cannot_route_around_the_sidecar() -> None:
    spec = PodSpec(
        name="reviews-0",
        namespace="shop",
        labels={"app": "reviews"},
        service_account="reviews",
        container=Container.model_validate(
            {"name": "reviews", "command": ["reviews"], "env": [{"name": "LEVEL", "value": "2"}]}
        ),
        restart_policy="OnFailure",
        grace_seconds=10,
        working_dir=Path(),
    )
    inherited = {
        "PATH": "/usr/bin",
        "no_proxy": "*",
        "ALL_PROXY": "http://corp:3128",
        "https_proxy": "http://corp:3128",
        "MYC_TOKEN": "secret",
    }

    env = app_environment(spec, PodAddresses("127.0.64.2", "127.1.64.2"), inherited)

    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.0.64.2:15001"
    assert env["no_proxy"] == env["NO_PROXY"] == ""
    assert "ALL_PROXY" not in env
    assert "https_proxy" not in env
    assert "MYC_TOKEN" not in env  # the runtime's admin token is not the app's
    assert env["PATH"] == "/usr/bin"
    assert env["MYC_APP_ADDRESS"] == "127.1.64.2"
    assert env["LEVEL"] == "2"
