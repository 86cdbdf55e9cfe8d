"""The options `myc proxy` and `myc gateway` share, declared once.

Both start the same proxy in another role, so who it is, where its controller is, its
telemetry and its drain are the same options with the same flags, environment
variables and checks. Declared twice they drifted (one read its environment variable,
the other did not); here each is an `Annotated` type the two commands use as it is.
The runtime starts a gateway pod with just `myc gateway`, so every shared option also
reads the environment variable its help names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

# As telemetry/tracing.py's DEFAULT_SAMPLING (Istio's 1 %), not imported: the CLI
# starts without the proxy's modules.
DEFAULT_TRACE_SAMPLING = 0.01
DEFAULT_DRAIN_SECONDS = 10.0


def env_option(*names: str, envvar: str, help: str, **kwargs: Any) -> Any:
    """An option that also reads `envvar`, and says so in its help."""
    return typer.Option(*names, envvar=envvar, show_envvar=True, help=help, **kwargs)


NodeId = Annotated[
    str,
    env_option(
        "--id", envvar="MYC_POD_NAME", metavar="ID", help="This proxy's unique, stable name."
    ),
]
Namespace = Annotated[
    str, env_option("--namespace", "-n", envvar="MYC_POD_NAMESPACE", help="Its namespace.")
]
WorkloadName = Annotated[
    str | None,
    env_option(
        "--workload",
        envvar="MYC_WORKLOAD",
        help="Register as this Workload (a sidecar: with --address; a gateway: default its --id).",
    ),
]
ServiceAccount = Annotated[
    str,
    env_option(
        "--service-account", envvar="MYC_SERVICE_ACCOUNT", help="Its identity's service account."
    ),
]
Labels = Annotated[
    list[str] | None,
    env_option(
        "--label",
        "-l",
        envvar="MYC_POD_LABELS",
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="Its labels (what selectors match); repeat, or separate by commas.",
    ),
]
Discovery = Annotated[
    list[str] | None,
    env_option(
        "--discovery",
        envvar="MYC_DISCOVERY",
        metavar="HOST:PORT",
        help="A controller's discovery address (repeat for several).",
    ),
]
TrustBundle = Annotated[
    Path | None,
    env_option(
        "--trust-bundle",
        envvar="MYC_TRUST_BUNDLE",
        metavar="FILE",
        help="The mesh root CA, to verify the controller. Default: HOME/ca/root.pem.",
    ),
]
StateDir = Annotated[
    Path | None,
    env_option(
        "--state-dir",
        envvar="MYC_STATE_DIR",
        metavar="DIR",
        help="Where the last-known-good config is kept, to start without a controller.",
    ),
]
AccessLog = Annotated[
    str | None,
    env_option(
        "--access-log",
        envvar="MYC_ACCESS_LOG",
        metavar="FILE|-",
        help="JSON lines, one per request and per TCP connection (docs/access-log.md).",
    ),
]
AccessLogSampling = Annotated[
    float,
    env_option(
        "--access-log-sampling",
        envvar="MYC_ACCESS_LOG_SAMPLING",
        metavar="RATIO",
        min=0.0,
        max=1.0,
        help="The share of requests logged, 0 to 1; errors are always logged.",
    ),
]
TraceCollector = Annotated[
    str | None,
    env_option(
        "--trace-collector",
        envvar="MYC_TRACE_COLLECTOR",
        metavar="http://HOST:PORT",
        help="Export spans to this OpenTelemetry collector (OTLP/HTTP, JSON).",
    ),
]
TraceSampling = Annotated[
    float,
    env_option(
        "--trace-sampling",
        envvar="MYC_TRACE_SAMPLING",
        metavar="RATIO",
        help="Share of new traces started here (0-1); sampled parents are always continued.",
    ),
]
MetricsAdvertise = Annotated[
    str | None,
    env_option(
        "--metrics-advertise",
        envvar="MYC_METRICS_ADVERTISE",
        metavar="HOST:PORT",
        help="Where Prometheus reaches the metrics port, for the controller's service "
        "discovery. Default: the metrics address, unless it is a wildcard.",
    ),
]
# As telemetry/workload_labels.py's DEFAULT_CLUSTER (Istio's default cluster name).
DEFAULT_CLUSTER = "Kubernetes"
ClusterName = Annotated[
    str,
    env_option(
        "--cluster",
        envvar="MYC_CLUSTER",
        metavar="NAME",
        help="Where this proxy runs, in the metrics' source_cluster and destination_cluster.",
    ),
]
DrainSeconds = Annotated[
    float,
    env_option(
        "--drain-seconds",
        envvar="MYC_DRAIN_SECONDS",
        help="How long SIGTERM waits for requests in flight.",
    ),
]
JoinToken = Annotated[
    str | None,
    env_option(
        "--join-token",
        envvar="MYC_JOIN_TOKEN",
        help="A token from `myc token create`: the proxy gets its certificate with it.",
    ),
]
