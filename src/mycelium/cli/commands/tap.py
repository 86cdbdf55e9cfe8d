"""`myc tap`: live requests through the proxies of a Deployment, Service or pod.

The controller does the reaching: the proxies may sit in network namespaces the host
cannot reach, but each keeps a discovery stream to the controller, which starts the tap
on them and relays what they see (`GET /api/v1/tap`, NDJSON). One line per request
here; `-o json` prints the request lines as JSON objects, one per line, for jq.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer

from mycelium.cli.commands.options import (
    DEFAULT_NAMESPACE,
    AllNamespacesOption,
    NamespaceOption,
)
from mycelium.cli.errors import InputError
from mycelium.cli.settings import settings_of


class TapFormat(StrEnum):
    json = "json"


def tap_command(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="TARGET",
            help="deploy/NAME, svc/NAME, pod/NAME, or all (every proxy of the namespace).",
            show_default=False,
        ),
    ] = None,
    *,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
    all_namespaces: AllNamespacesOption = False,
    every_proxy: Annotated[
        bool, typer.Option("--all", help="Tap every proxy, in every namespace (all -A).")
    ] = False,
    path: Annotated[
        str | None, typer.Option("--path", metavar="PREFIX", help="Only paths starting so.")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", metavar="CODE|Nxx", help="Only this status: 503, or 5xx."),
    ] = None,
    method: Annotated[
        str | None, typer.Option("--method", metavar="METHOD", help="Only this method.")
    ] = None,
    max_requests: Annotated[
        int,
        typer.Option("--max", metavar="N", min=0, help="Stop after N requests (0: no limit)."),
    ] = 0,
    seconds: Annotated[
        float,
        typer.Option(
            "--seconds", metavar="S", min=0.1, max=3600, help="Stop after this long at most."
        ),
    ] = 600.0,
    output: Annotated[
        TapFormat | None,
        typer.Option("-o", "--output", help="One JSON object per request.", show_default=False),
    ] = None,
) -> None:
    """Stream live requests through the proxies of a workload.

    One line per finished request, as the proxy that served it saw it: direction
    (inbound: a peer called the app; outbound: the app called a service), method,
    authority, path, status, latency, source and its mTLS identity, destination, and
    the proxy's reason when it answered itself. Each proxy sends at most 100 requests a
    second; what it leaves out is counted on standard error.

    [bold]Examples[/]

      myc tap deploy/reviews
      myc tap svc/ratings --status 5xx
      myc tap deploy/productpage --path /api --max 20 -o json | jq .latency_ms
      myc tap all -n shop          # every proxy of namespace shop
      myc tap all -A --seconds 30  # every proxy (also: myc tap --all)
    """
    if every_proxy:
        if target not in (None, "all"):
            raise InputError(f"--all taps every proxy: name no other target than all ({target})")
        target, all_namespaces = "all", True
    if target is None:
        raise InputError(
            "name a target: deploy/NAME, svc/NAME, pod/NAME or all "
            "(-n NS for a namespace, -A for every one)"
        )
    params = {"target": target, "max": str(max_requests), "seconds": str(seconds)}
    if not all_namespaces:
        params["namespace"] = namespace
    for name, value in (("path", path), ("status", status), ("method", method)):
        if value:
            params[name] = value
    settings = settings_of(ctx)
    with settings.client() as client:
        for line in client.tap(params):
            kind = line["type"]
            if kind == "request":
                typer.echo(json.dumps(line) if output else request_text(line))
            elif kind == "started":
                names = ", ".join(p["workload"] or p["id"] for p in line["proxies"])
                typer.echo(f"tapping {line['target']}: {names}", err=True)
            elif kind == "proxy_joined":
                typer.echo(f"{line['workload'] or line['proxy']} joined the tap", err=True)
            elif kind == "proxy_ended":
                who = line.get("workload") or line["proxy"]
                typer.echo(f"{who} left the tap ({line['reason']})", err=True)
            elif kind == "dropped":
                typer.echo(f"{line['proxy']}: {line['count']} requests over the rate", err=True)
            elif kind == "end":
                typer.echo(f"tap ended ({line['reason']}): {line['requests']} requests", err=True)


def _mesh_text(line: dict[str, Any]) -> str:
    """The mesh leg's security, named for the leg it is (sidecar to sidecar): inbound
    from the caller, outbound to the destination. The app's own leg to its sidecar is
    plaintext by design and not shown."""
    if not line.get("mesh_mtls"):
        return "mesh=plaintext"
    peer = line.get("mesh_peer") or "?"
    return f"mesh=mtls {'from' if line['direction'] == 'inbound' else 'to'}={peer}"


def request_text(line: dict[str, Any]) -> str:
    """One request, as `myc tap` prints it."""
    direction = {"inbound": "in ", "outbound": "out"}.get(line["direction"], line["direction"])
    parts = [
        line.get("workload") or line["proxy"],
        direction,
        line["method"],
        line["authority"] + line["path"],
        str(line["status"]),
        f"{line['latency_ms']:.1f}ms",
        f"src={line['source']}",
        f"dst={line['destination'] or '-'}",
        _mesh_text(line),
    ]
    if line["reason"]:
        parts.append(f"reason={line['reason']} flags={line['response_flags']}")
    return " ".join(parts)
