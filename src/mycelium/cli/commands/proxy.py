"""`myc proxy`: run a sidecar proxy in the foreground (the runtime starts these for pods)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from mycelium import ports
from mycelium.cli import proxy_options as o
from mycelium.cli.errors import InputError
from mycelium.cli.settings import settings_of

if TYPE_CHECKING:
    from mycelium.discovery.client import ControllerAddress
    from mycelium.proxy.settings import ProxySettings


def check_tracing(collector: str | None, sampling: float) -> None:
    """--trace-collector and --trace-sampling, checked before the proxy starts."""
    from mycelium.telemetry.otlp import CollectorAddress  # noqa: PLC0415

    if collector is not None:
        CollectorAddress.parse(collector)  # raises ValueError naming the problem
    if not 0.0 <= sampling <= 1.0:
        raise ValueError(f"--trace-sampling {sampling} must be a ratio between 0 and 1")


def scrape_address(advertise: str | None) -> str | None:
    """--metrics-advertise, checked: a HOST:PORT a scraper can dial."""
    if advertise is None:
        return None
    host, sep, port = advertise.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics-advertise {advertise!r} must look like HOST:PORT")
    if host.strip("[]") in ("0.0.0.0", "::"):
        raise ValueError(
            f"--metrics-advertise {advertise!r} is a wildcard: give an address a scraper can dial"
        )
    return advertise


def parse_labels(values: list[str]) -> dict[str, str]:
    """Labels from `KEY=VALUE` items, each maybe a comma-separated list of them."""
    labels = {}
    for item in (part for value in values for part in value.split(",")):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="'--label'")
        labels[key] = value
    return labels


def controller_addresses(values: list[str] | None) -> list[ControllerAddress]:
    from mycelium.discovery.client import ControllerAddress  # noqa: PLC0415

    return [ControllerAddress.parse(c) for c in (values or [f"127.0.0.1:{ports.DISCOVERY}"])]


def exec_proxy(settings: ProxySettings, join_token: str | None) -> None:
    """Become the proxy process (`python -m mycelium.proxy`) with these settings."""
    # The token travels in the environment, not on the command line, where anyone
    # could read it in the process list.
    if join_token:
        os.environ["MYC_JOIN_TOKEN"] = join_token
    # Replace this process with a lean one: a proxy should not carry the CLI's
    # libraries (Typer, rich: ~15 MB) for its whole life.
    os.execv(
        sys.executable,
        [sys.executable, "-m", "mycelium.proxy", settings.to_json().decode()],
    )


def proxy_command(
    ctx: typer.Context,
    *,
    node_id: o.NodeId,
    namespace: o.Namespace = "default",
    workload: o.WorkloadName = None,
    service_account: o.ServiceAccount = "default",
    label: o.Labels = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="The workload's address, as peers reach it."),
    ] = None,
    port: Annotated[
        list[int] | None,
        typer.Option("--port", "-p", help="A port the app serves (repeat)."),
    ] = None,
    controller: o.Discovery = None,
    trust_bundle: o.TrustBundle = None,
    state_dir: o.StateDir = None,
    outbound: Annotated[
        str, typer.Option("--outbound", metavar="[HOST:]PORT", help="The app's calls go here.")
    ] = f"127.0.0.1:{ports.OUTBOUND}",
    mode: Annotated[
        Literal["explicit", "transparent"],
        typer.Option(
            "--mode",
            help="transparent: nftables redirects the pod's traffic to --outbound/--inbound.",
        ),
    ] = "explicit",
    inbound: Annotated[
        str | None,
        typer.Option(
            "--inbound",
            metavar="[HOST:]PORT",
            help="Transparent mode: where redirected inbound traffic arrives "
            f"(e.g. {ports.INBOUND}).",
        ),
    ] = None,
    inbound_address: Annotated[
        str | None,
        typer.Option(
            "--inbound-address",
            metavar="IP",
            help="Serve each inbound service port on this address (explicit mode).",
        ),
    ] = None,
    app_address: Annotated[
        str, typer.Option("--app-address", metavar="IP", help="Where the local app listens.")
    ] = "127.0.0.1",
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            "--upstream",
            metavar="SERVICE[:PORT]=[HOST:]PORT",
            help="A local port for one service, for apps that cannot use HTTP_PROXY.",
        ),
    ] = None,
    subscribe: Annotated[
        list[str] | None,
        typer.Option("--subscribe", metavar="SERVICE", help="Fetch a service's config at start."),
    ] = None,
    admin: Annotated[
        str, typer.Option("--admin", metavar="[HOST:]PORT", help="Admin endpoints (loopback).")
    ] = f"127.0.0.1:{ports.ADMIN}",
    health: Annotated[
        str, typer.Option("--health", metavar="[HOST:]PORT", help="Readiness endpoint.")
    ] = f"127.0.0.1:{ports.HEALTH}",
    metrics: Annotated[
        str,
        typer.Option(
            "--metrics",
            metavar="[HOST:]PORT",
            help="Prometheus metrics: /stats/prometheus and /metrics.",
        ),
    ] = f"127.0.0.1:{ports.METRICS}",
    no_metrics: Annotated[
        bool,
        typer.Option(
            "--no-metrics",
            help="Do not record the per-request metrics (the proxy's own are still served); "
            "for measuring what they cost.",
        ),
    ] = False,
    access_log: o.AccessLog = None,
    trace_collector: o.TraceCollector = None,
    trace_sampling: o.TraceSampling = o.DEFAULT_TRACE_SAMPLING,
    cluster: o.ClusterName = o.DEFAULT_CLUSTER,
    metrics_advertise: o.MetricsAdvertise = None,
    access_log_sampling: o.AccessLogSampling = 1.0,
    drain_seconds: o.DrainSeconds = o.DEFAULT_DRAIN_SECONDS,
    wait_for_join: Annotated[
        bool,
        typer.Option(
            "--wait-for-join",
            help="Register the workload only on POST /join to the admin port (the runtime "
            "does once the app is ready), and leave on POST /leave.",
        ),
    ] = False,
    join_token: o.JoinToken = None,
) -> None:
    """Run a sidecar proxy in the foreground until SIGTERM, then drain.

    The proxy takes all of its traffic configuration from a controller's discovery
    stream (and, when the controller is away, from the last configuration it saved).
    In explicit mode the app sends its HTTP calls to the outbound port (HTTP_PROXY, or
    a Host header naming the service), or to a local port per service (--upstream);
    the proxy serves each of the workload's service ports on --inbound-address and
    hands the requests to the app on --app-address.

    [bold]Examples[/]

      # a caller: reviews.default reachable on 127.0.0.1:19080
      myc proxy --id productpage-0 --upstream reviews:9080=19080

      # a server: registers itself and serves its ports on 127.0.0.2
      myc proxy --id reviews-v1-0 --workload reviews-v1-0 -l app=reviews -l version=v1 \\
          --address 127.0.0.2 --port 9080 --inbound-address 127.0.0.2
    """
    from mycelium.discovery.protocol import NodeInfo  # noqa: PLC0415
    from mycelium.proxy.settings import ListenAddress, LocalUpstream, ProxySettings  # noqa: PLC0415

    home = settings_of(ctx).home
    try:
        controllers = controller_addresses(controller)
        locals_ = []
        for item in upstream or []:
            target, sep, listen = item.partition("=")
            if not sep:
                raise ValueError(f"--upstream {item!r} must look like SERVICE[:PORT]=[HOST:]PORT")
            service, _, service_port = target.partition(":")
            locals_.append(
                LocalUpstream(
                    ListenAddress.parse(listen),
                    service,
                    int(service_port) if service_port else None,
                )
            )
        if inbound is not None and mode != "transparent":
            raise ValueError(
                "--inbound needs --mode transparent (explicit mode: --inbound-address)"
            )
        default_host = "0.0.0.0" if mode == "transparent" else "127.0.0.1"
        check_tracing(trace_collector, trace_sampling)
        metrics_address = ListenAddress.parse(metrics)
        settings = ProxySettings(
            node=NodeInfo(
                id=node_id,
                namespace=namespace,
                workload=workload,
                service_account=service_account,
                labels=parse_labels(label or []),
                address=address,
                ports=port or [],
                metrics=scrape_address(metrics_advertise) or metrics_address.reachable,
            ),
            controllers=controllers,
            trust_bundle=trust_bundle or home / "ca" / "root.pem",
            state_dir=state_dir,
            mode="transparent" if mode == "transparent" else "explicit",
            outbound=ListenAddress.parse(outbound),
            inbound=ListenAddress.parse(inbound, default_host) if inbound else None,
            inbound_address=inbound_address,
            app_address=app_address,
            admin=ListenAddress.parse(admin),
            health=ListenAddress.parse(health),
            metrics=metrics_address,
            record_metrics=not no_metrics,
            local_upstreams=locals_,
            subscriptions=subscribe or [],
            drain_seconds=drain_seconds,
            access_log=access_log,
            trace_collector=trace_collector,
            trace_sampling=trace_sampling,
            cluster=cluster,
            access_log_sampling=access_log_sampling,
            wait_for_join=wait_for_join,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    exec_proxy(settings, join_token)
