"""`myc gateway`: run a proxy in the gateway role, in the foreground.

The runtime starts a gateway pod as a container whose command is just `myc gateway`,
so every option also reads an environment variable; the pod's own variables are:

  MYC_POD_NAME         --id, and the Workload it registers as (--workload)
  MYC_POD_NAMESPACE    --namespace
  MYC_SERVICE_ACCOUNT  --service-account
  MYC_POD_LABELS       --label, as KEY=VALUE,KEY2=VALUE2
  MYC_POD_ADDRESS      --address: where the listeners bind, and the Workload's address;
                       admin and health default to ADDRESS:15000 and ADDRESS:15021
  MYC_ADVERTISE_ADDRESS --advertise-address: the Workload's address when peers reach
                       the gateway elsewhere than where it binds (a port forward)
  MYC_DISCOVERY        --discovery HOST:PORT
  MYC_TRUST_BUNDLE     --trust-bundle FILE
  MYC_JOIN_TOKEN       --join-token
  MYC_TRACE_COLLECTOR  --trace-collector http://HOST:PORT (docs/tracing.md)
  MYC_TRACE_SAMPLING   --trace-sampling RATIO
"""

from __future__ import annotations

from typing import Annotated

import typer

from mycelium import ports
from mycelium.cli import proxy_options as o
from mycelium.cli.commands.proxy import (
    check_tracing,
    controller_addresses,
    exec_proxy,
    parse_labels,
    scrape_address,
)
from mycelium.cli.errors import InputError
from mycelium.cli.settings import settings_of


def gateway_command(
    ctx: typer.Context,
    *,
    node_id: o.NodeId,
    namespace: o.Namespace = "default",
    workload: o.WorkloadName = None,
    service_account: o.ServiceAccount = "default",
    label: o.Labels = None,
    address: Annotated[
        str | None,
        o.env_option(
            "--address",
            envvar="MYC_POD_ADDRESS",
            metavar="IP",
            help="Where its listeners bind (default 0.0.0.0), and its Workload's address.",
        ),
    ] = None,
    advertise_address: Annotated[
        str | None,
        o.env_option(
            "--advertise-address",
            envvar="MYC_ADVERTISE_ADDRESS",
            metavar="IP",
            help="Register the Workload at this address instead of --address (peers reach "
            "the gateway there, through a port forward).",
        ),
    ] = None,
    controller: o.Discovery = None,
    trust_bundle: o.TrustBundle = None,
    state_dir: o.StateDir = None,
    admin: Annotated[
        str | None,
        o.env_option(
            "--admin",
            envvar="MYC_ADMIN",
            metavar="[HOST:]PORT",
            help=f"Admin endpoints. Default: ADDRESS:{ports.ADMIN} (127.0.0.1 without --address).",
        ),
    ] = None,
    health: Annotated[
        str | None,
        o.env_option(
            "--health",
            envvar="MYC_HEALTH",
            metavar="[HOST:]PORT",
            help=f"Readiness endpoint. Default: ADDRESS:{ports.HEALTH}.",
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        o.env_option(
            "--metrics",
            envvar="MYC_METRICS",
            metavar="[HOST:]PORT",
            help=f"Prometheus metrics (/stats/prometheus). Default: ADDRESS:{ports.METRICS}.",
        ),
    ] = None,
    access_log: o.AccessLog = None,
    trace_collector: o.TraceCollector = None,
    trace_sampling: o.TraceSampling = o.DEFAULT_TRACE_SAMPLING,
    cluster: o.ClusterName = o.DEFAULT_CLUSTER,
    metrics_advertise: o.MetricsAdvertise = None,
    access_log_sampling: o.AccessLogSampling = 1.0,
    drain_seconds: o.DrainSeconds = o.DEFAULT_DRAIN_SECONDS,
    join_token: o.JoinToken = None,
) -> None:
    """Run an ingress or egress gateway in the foreground until SIGTERM, then drain.

    The gateway is the mesh's proxy in the gateway role: it serves the listeners of
    every Gateway in its namespace whose selector matches its labels, routes them by
    the HTTPRoutes and TCPRoutes attached to those Gateways, and calls the mesh's
    workloads over mTLS with its own certificate (get one with --join-token). Its
    listeners open and close as the Gateways change. Every option also reads the
    environment variable named in its help, so that a pod runs just `myc gateway`.

    [bold]Examples[/]

      # an ingress gateway on 127.0.0.30, for Gateways that select app=ingress
      myc gateway --id ingress-0 -l app=ingress --address 127.0.0.30 \\
          --service-account ingress \\
          --join-token "$(myc token create --service-account ingress)"

      # the same from a pod's environment
      MYC_POD_NAME=ingress-0 MYC_POD_LABELS=app=ingress MYC_POD_ADDRESS=127.0.0.30 myc gateway
    """
    from mycelium.discovery.protocol import NodeInfo  # noqa: PLC0415
    from mycelium.proxy.settings import ListenAddress, ProxySettings  # noqa: PLC0415

    home = settings_of(ctx).home
    operations_host = address or "127.0.0.1"
    try:
        check_tracing(trace_collector, trace_sampling)
        metrics_address = ListenAddress.parse(metrics or f"{operations_host}:{ports.METRICS}")
        settings = ProxySettings(
            node=NodeInfo(
                id=node_id,
                namespace=namespace,
                workload=workload or node_id,
                service_account=service_account,
                role="gateway",
                labels=parse_labels(label or []),
                address=advertise_address or address,
                metrics=scrape_address(metrics_advertise) or metrics_address.reachable,
            ),
            controllers=controller_addresses(controller),
            trust_bundle=trust_bundle or home / "ca" / "root.pem",
            state_dir=state_dir,
            outbound=None,  # a gateway serves its Gateways' listeners, not an app's calls
            gateway_address=address or "0.0.0.0",
            admin=ListenAddress.parse(admin or f"{operations_host}:{ports.ADMIN}"),
            health=ListenAddress.parse(health or f"{operations_host}:{ports.HEALTH}"),
            metrics=metrics_address,
            drain_seconds=drain_seconds,
            access_log=access_log,
            trace_collector=trace_collector,
            trace_sampling=trace_sampling,
            cluster=cluster,
            access_log_sampling=access_log_sampling,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    exec_proxy(settings, join_token)
