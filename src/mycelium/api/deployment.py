"""Deployment: how many pods of one app to run on this machine, and how to run them.

The shape is Kubernetes' (`spec.replicas`, `spec.template.metadata.labels`,
`spec.template.spec.containers[0]` with command, args, env, ports and a readiness
probe), so a `mesh.yaml` reads like the manifests people already write. The runtime
(`myc up`) turns each replica into a pod: the app's process, its sidecar when the
namespace is in sidecar mode, and its own network namespace when run as root.

Differences from Kubernetes, each refused with a sentence rather than ignored:
- a pod runs one app container: the sidecar is the mesh's to add;
- `restartPolicy` (on the pod template) defaults to OnFailure: an app that exits 0 has
  completed (a job) and its pod ends; one that fails restarts with backoff. Always
  restarts both; Never restarts neither;
- `command` is the program to run on this machine, a path or a name on PATH.

Invariants after validation: the selector (if given) matches the template's labels,
which are never empty; container port numbers and names are unique; a readiness probe
has exactly one of httpGet, tcpSocket or exec.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from mycelium.api.meta import ApiModel, Resource, repeated
from mycelium.api.scalars import DnsLabel, Labels, PortNumber

# More replicas than this of one app on one machine is a typo rather than a plan.
MAX_REPLICAS = 64
# A pod template annotated with this set to "false" gets no sidecar: a gateway, which
# is a proxy itself. Its app then receives the pod's identity and the controller's
# address in its environment (MYC_* variables; see runtime/process_pods.py).
SIDECAR_INJECT = "sidecar.mycelium.io/inject"
# Environment variable names, as POSIX shells accept them.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

type RestartPolicy = Literal["OnFailure", "Always", "Never"]


class EnvVar(ApiModel):
    name: str
    value: str = ""

    @field_validator("name")
    @classmethod
    def _posix_name(cls, name: str) -> str:
        if not _ENV_NAME.match(name):
            raise ValueError(
                f"{name!r} is not an environment variable name (letters, digits and "
                "underscores, not starting with a digit)"
            )
        return name


class ContainerPort(ApiModel):
    container_port: PortNumber
    """The port the app listens on (a Service's targetPort)."""
    name: DnsLabel | None = None
    host_port: PortNumber | None = None
    """Publish the port on the host's 127.0.0.1 (an ingress gateway's listener): the
    node agent forwards it to a ready pod of the Deployment."""


class HttpGetAction(ApiModel):
    path: str = "/"
    port: PortNumber

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"the probe path must start with '/', not {path!r}")
        return path


class TcpSocketAction(ApiModel):
    port: PortNumber


class ExecAction(ApiModel):
    command: Annotated[list[str], Field(min_length=1)]


class Probe(ApiModel):
    """Ready when an HTTP GET answers 2xx/3xx, a TCP connect succeeds, or a command
    exits 0; checked every `periodSeconds` (Kubernetes' field names, whole seconds)."""

    http_get: HttpGetAction | None = None
    tcp_socket: TcpSocketAction | None = None
    exec: ExecAction | None = None
    initial_delay_seconds: Annotated[int, Field(ge=0, le=3600)] = 0
    period_seconds: Annotated[int, Field(ge=1, le=3600)] = 1
    timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 1

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        given = [
            name
            for name, action in (
                ("httpGet", self.http_get),
                ("tcpSocket", self.tcp_socket),
                ("exec", self.exec),
            )
            if action is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "a probe needs exactly one of httpGet, tcpSocket or exec"
                + (f"; got {', '.join(given)}" if given else "")
            )
        return self


class Container(ApiModel):
    name: DnsLabel
    command: Annotated[list[str], Field(min_length=1)]
    """The program and its first arguments, as run on this machine."""
    args: list[str] = []
    env: list[EnvVar] = []
    working_dir: str | None = None
    """Relative paths are relative to the manifest's directory."""
    ports: list[ContainerPort] = []
    readiness_probe: Probe | None = None

    @field_validator("env")
    @classmethod
    def _env_unique(cls, env: list[EnvVar]) -> list[EnvVar]:
        if names := repeated([e.name for e in env]):
            raise ValueError(f"environment variables set twice: {', '.join(names)}")
        return env

    @field_validator("ports")
    @classmethod
    def _ports_unique(cls, ports: list[ContainerPort]) -> list[ContainerPort]:
        if numbers := repeated([p.container_port for p in ports]):
            raise ValueError(f"ports listed twice: {', '.join(map(str, numbers))}")
        if names := repeated([p.name for p in ports if p.name is not None]):
            raise ValueError(f"port names listed twice: {', '.join(names)}")
        return ports


class PodMeta(ApiModel):
    labels: Annotated[Labels, Field(min_length=1)]
    """What Services select; `version` is what subsets split traffic by."""
    annotations: dict[str, str] = {}

    @field_validator("annotations")
    @classmethod
    def _inject_is_a_boolean(cls, annotations: dict[str, str]) -> dict[str, str]:
        value = annotations.get(SIDECAR_INJECT)
        if value is not None and value not in ("true", "false"):
            raise ValueError(f'{SIDECAR_INJECT} must be "true" or "false", not {value!r}')
        return annotations

    @property
    def wants_sidecar(self) -> bool:
        return self.annotations.get(SIDECAR_INJECT, "true") == "true"


class PodSpec(ApiModel):
    service_account_name: DnsLabel = "default"
    """The identity the pod runs as: spiffe://<trust domain>/ns/<namespace>/sa/<this>."""
    containers: Annotated[list[Container], Field(min_length=1)]
    restart_policy: RestartPolicy = "OnFailure"
    termination_grace_period_seconds: Annotated[int, Field(ge=0, le=3600)] = 10
    """How long the app gets after SIGTERM before SIGKILL."""
    host_network: bool = False
    """Run in the host's network (on a loopback address of its own) rather than in a
    pod network: what an egress gateway needs to reach outside the mesh. Pods reach it
    through the node's bridge address; only pods without a sidecar may ask for it."""

    @field_validator("containers")
    @classmethod
    def _one_app(cls, containers: list[Container]) -> list[Container]:
        if len(containers) != 1:
            raise ValueError(
                f"a pod runs one app container, not {len(containers)} (the mesh adds the "
                "sidecar itself): put other processes in Deployments of their own"
            )
        return containers


class PodTemplate(ApiModel):
    metadata: PodMeta
    spec: PodSpec

    @model_validator(mode="after")
    def _host_network_has_no_sidecar(self) -> Self:
        if self.spec.host_network and self.metadata.wants_sidecar:
            raise ValueError(
                "spec.hostNetwork puts the pod in the host's network, where no sidecar "
                f'intercepts its traffic: annotate the template {SIDECAR_INJECT}: "false" '
                "(a gateway, which is a proxy itself), or remove hostNetwork"
            )
        return self


class LabelSelector(ApiModel):
    match_labels: Labels = {}


class DeploymentSpec(ApiModel):
    replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] = 1
    selector: LabelSelector | None = None
    """Optional, as the pods are this Deployment's own; when given it must match the
    template's labels."""
    template: PodTemplate

    @model_validator(mode="after")
    def _selector_matches_template(self) -> Self:
        if self.selector is None:
            return self
        labels = self.template.metadata.labels
        missing = {
            key: value
            for key, value in self.selector.match_labels.items()
            if labels.get(key) != value
        }
        if missing:
            shown = ", ".join(f"{k}={v}" for k, v in missing.items())
            raise ValueError(
                f"selector.matchLabels {shown} does not match template.metadata.labels: "
                "the Deployment would select none of its own pods"
            )
        return self

    @property
    def container(self) -> Container:
        return self.template.spec.containers[0]


class Deployment(Resource):
    """Pods of one app on this machine: how many, and how to run them (`myc up`)."""

    kind: Literal["Deployment"] = "Deployment"
    spec: DeploymentSpec
