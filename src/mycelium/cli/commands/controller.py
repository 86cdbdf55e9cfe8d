"""`myc controller`: run the control plane in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mycelium import ports
from mycelium.cli.errors import ControllerStartFailed
from mycelium.cli.settings import settings_of

DEFAULT_API_LISTEN = f"127.0.0.1:{ports.API}"
DEFAULT_DISCOVERY_LISTEN = f"127.0.0.1:{ports.DISCOVERY}"


def parse_listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` into (host, port); raises `typer.BadParameter`."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise typer.BadParameter(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:15014)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise typer.BadParameter(f"{text!r}: write an IPv6 host in brackets, as [::1]:15014")
    try:
        port = int(port_text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise typer.BadParameter(f"{text!r}: the port must be between 0 and 65535")
    return host, port


def controller_command(
    ctx: typer.Context,
    *,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="URL",
            help="Where resources live: etcd://HOST:2379 (several: etcd://h1:2379,h2:2379) "
            "or sqlite:///PATH. Default: an embedded SQLite store under the home.",
            show_default=False,
        ),
    ] = None,
    listen_api: Annotated[
        str,
        typer.Option(
            "--listen-api", metavar="HOST:PORT", help="The REST API and dashboard (myc, curl)."
        ),
    ] = DEFAULT_API_LISTEN,
    listen_discovery: Annotated[
        str,
        typer.Option(
            "--listen-discovery",
            metavar="HOST:PORT",
            help="The discovery stream and certificate signing (proxies).",
        ),
    ] = DEFAULT_DISCOVERY_LISTEN,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            metavar="DIR",
            help="Where the controller keeps its admin token, CA and embedded store. "
            "Default: the global --home (~/.mycelium).",
            show_default=False,
        ),
    ] = None,
    allow_anonymous_proxies: Annotated[
        bool,
        typer.Option(
            "--allow-anonymous-proxies",
            help="Let proxies without a join token or certificate get config and "
            "register workloads (a plaintext mesh; anyone who reaches the discovery "
            "port could then claim any workload).",
        ),
    ] = False,
) -> None:
    """Run a controller in the foreground until Ctrl-C.

    The controller keeps the registry of services and workloads, compiles resources into
    per-proxy configuration, pushes it to the proxies on the discovery port, signs their
    certificates, and serves the REST API that every other myc command talks to.
    At its first start it writes an admin token to HOME/admin-token (mode 0600), which
    myc reads from there; on another machine, copy it into MYC_TOKEN. Proxies must
    prove who they are on the discovery stream (a join token, then their certificate).

    [bold]Examples[/]

      # one machine, embedded store under ~/.mycelium
      myc controller

      # a throwaway controller on other ports
      myc controller --home /tmp/mesh --listen-api 127.0.0.1:25014 \\
          --listen-discovery 127.0.0.1:25012

      # backed by an etcd cluster
      myc controller --store etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379
    """
    api_host, api_port = parse_listen_address(listen_api)
    discovery_host, discovery_port = parse_listen_address(listen_discovery)
    home_dir = home.expanduser() if home is not None else settings_of(ctx).home
    # Imported here: the controller pulls in the store, CA and compiler, which no other
    # command needs.
    from mycelium.control.config import ControllerConfig  # noqa: PLC0415
    from mycelium.control.main import run_controller  # noqa: PLC0415

    config = ControllerConfig(
        home=home_dir,
        store_url=store,
        api_host=api_host,
        api_port=api_port,
        discovery_host=discovery_host,
        discovery_port=discovery_port,
        allow_anonymous_proxies=allow_anonymous_proxies,
    )
    try:
        run_controller(config)
    except OSError as exc:
        raise ControllerStartFailed(exc) from exc
