"""Who is at each end of a request, in the words of Istio's standard metric labels.

A proxy labels its own workload and the workload at the other end with the same eight
facts Istio's proxies use (`WorkloadLabels`), each worked out from a workload's name,
namespace and labels the way Istio derives it, so that dashboards, Kiali-style graphs
and alerting rules written for Istio group Mycelium's series the same way:

- the workload is the Deployment that runs a pod (the node agent writes it into the
  pod's labels as `WORKLOAD_NAME_LABEL`), or a registered Workload's own name: never
  a pod, whose name changes with every rollout and would start new series each time;
- `app` and `version` are the labels of those names; for the other end Kubernetes'
  recommended `app.kubernetes.io/name` and `/version` come first, and a proxy's own
  end reads `app` and `version` only, empty when absent (Istio's quirks, kept so that
  series match theirs);
- the canonical service and revision follow Istio's precedence: its
  `service.istio.io/canonical-*` labels, then `app.kubernetes.io/*`, then `app` and
  `version`, then the workload's name and `latest`;
- the cluster is the mesh's name for where the workload runs (Istio's default,
  `Kubernetes`).

The calling proxy introduces itself over mTLS (`encode_peer`: a request field over
HTTP, a preamble over TCP); the served proxy believes the introduction only beside the
certificate that proves the caller's namespace, which it takes from the certificate
(`parse_peer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

UNKNOWN = "unknown"  # Istio's word for a label the reporter cannot know
DEFAULT_CLUSTER = "Kubernetes"  # Istio's default cluster name (its CLUSTER_ID)
# The node agent labels each pod with the Deployment that runs it; Istio's own label
# for the same override is honoured too, so manifests written for it keep working.
WORKLOAD_NAME_LABEL = "service.mycelium.io/workload-name"
_WORKLOAD_NAME_LABELS = (WORKLOAD_NAME_LABEL, "service.istio.io/workload-name")
_CANONICAL_NAME_LABELS = ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
_CANONICAL_REVISION_LABELS = (
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
)
_PEER_APP_LABELS = ("app.kubernetes.io/name", "app")
_PEER_VERSION_LABELS = ("app.kubernetes.io/version", "version")
DEFAULT_REVISION = "latest"  # also a peer's when nothing is known of it, as Istio writes


def _first(labels: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = labels.get(key)
        if value:
            return value
    return None


def workload_name(registered: str, labels: Mapping[str, str]) -> str:
    """The workload telemetry names: the Deployment a pod belongs to, else `registered`
    (a Workload's or a proxy's own name)."""
    return _first(labels, _WORKLOAD_NAME_LABELS) or registered or UNKNOWN


@dataclass(frozen=True, slots=True)
class WorkloadLabels:
    """One end of a request as Istio's labels describe it."""

    name: str = UNKNOWN
    namespace: str = UNKNOWN
    principal: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = DEFAULT_REVISION
    cluster: str = UNKNOWN

    @classmethod
    def of(
        cls,
        registered: str,
        namespace: str,
        labels: Mapping[str, str],
        *,
        cluster: str,
        principal: str = UNKNOWN,
        local: bool = False,
    ) -> WorkloadLabels:
        """A workload known by its registered name, namespace and labels: the proxy's
        own (`local`) or the other end's."""
        name = workload_name(registered, labels)
        if local:
            app, version = labels.get("app", ""), labels.get("version", "")
        else:
            app = _first(labels, _PEER_APP_LABELS) or UNKNOWN
            version = _first(labels, _PEER_VERSION_LABELS) or UNKNOWN
        return cls(
            name=name,
            namespace=namespace or UNKNOWN,
            principal=principal,
            app=app,
            version=version,
            canonical_service=_first(labels, _CANONICAL_NAME_LABELS) or name,
            canonical_revision=_first(labels, _CANONICAL_REVISION_LABELS) or DEFAULT_REVISION,
            cluster=cluster,
        )

    @classmethod
    def from_principal(cls, principal: str | None) -> WorkloadLabels:
        """What a SPIFFE ID alone tells: the namespace (`spiffe://td/ns/<ns>/sa/<sa>`)."""
        if not principal:
            return cls()
        parts = principal.split("/")
        namespace = parts[parts.index("ns") + 1] if "ns" in parts[:-1] else UNKNOWN
        return cls(namespace=namespace, principal=principal)

    def with_principal(self, principal: str) -> WorkloadLabels:
        return replace(self, principal=principal)


# The introduction's fields, in the order `encode_peer` writes them.
_PEER_FIELDS = ("workload", "namespace", "app", "version", "service", "revision", "cluster")


def encode_peer(me: WorkloadLabels) -> bytes:
    """This proxy's introduction to the proxies it calls (`metrics.PEER_HEADER`)."""
    values = (
        me.name,
        me.namespace,
        me.app,
        me.version,
        me.canonical_service,
        me.canonical_revision,
        me.cluster,
    )
    text = ";".join(f"{key}={value}" for key, value in zip(_PEER_FIELDS, values, strict=True))
    return text.encode("latin-1", "replace")


def parse_peer(value: bytes, principal: str | None) -> WorkloadLabels:
    """An introduction, trusted only beside an mTLS identity: the namespace is the one
    the certificate proves, whatever the introduction says."""
    fields = dict(part.split("=", 1) for part in value.decode("latin-1").split(";") if "=" in part)
    proven = WorkloadLabels.from_principal(principal)
    return WorkloadLabels(
        name=fields.get("workload") or UNKNOWN,
        namespace=proven.namespace,
        principal=proven.principal,
        app=fields.get("app") or UNKNOWN,  # a peer's: unknown, not empty
        version=fields.get("version") or UNKNOWN,
        canonical_service=fields.get("service") or UNKNOWN,
        canonical_revision=fields.get("revision") or DEFAULT_REVISION,
        cluster=fields.get("cluster") or UNKNOWN,
    )
