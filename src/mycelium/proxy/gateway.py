"""A gateway proxy's listeners, as requests and connections look them up.

Built once per config from the `gateway` entry (`build_gateway`), immutable after:
for every port, its listeners by hostname; for every HTTP(S) listener, its virtual hosts
as compiled routes; for every listener that terminates TLS, its TLS context, made from
the operator's certificate and key files now, so that a file that cannot be used NACKs
the config (naming the file) and the previous config keeps serving.

Names are looked up most specific first, as the Gateway API orders them: an exact
name, then the longest `*.suffix` wildcard that covers it, then a listener (or virtual
host) for any name. An HTTP port finds its listener by the request's Host, a TLS port
by the ClientHello's server name (SNI) before anything is decrypted. No socket here.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from mycelium.discovery import config as cfg
from mycelium.proxy.destination import strip_port
from mycelium.proxy.edge_tls import CertificateFileError, edge_server_context
from mycelium.proxy.errors import NoRoute, ProxyError
from mycelium.proxy.routing import CompiledRoute

type PortFamily = Literal["http", "tls", "tcp"]

_FAMILY: dict[str, PortFamily] = {"HTTP": "http", "HTTPS": "tls", "TLS": "tls", "TCP": "tcp"}


class UnknownHost(ProxyError):
    """No listener on the port serves the request's host."""

    status = 404
    reason = "unknown_host"


class HostTable[T]:
    """Values by hostname pattern: a name, `*.suffix`, or None / "*" for any name."""

    __slots__ = ("_any", "_exact", "_wildcards", "patterns")

    def __init__(self, entries: Iterable[tuple[str | None, T]]) -> None:
        self._exact: dict[str, T] = {}
        self._wildcards: list[tuple[str, T]] = []  # (".suffix", value), longest first
        self._any: T | None = None
        self.patterns: list[str] = []
        for pattern, value in entries:
            name = (pattern or "*").lower()
            self.patterns.append(name)
            if name == "*":
                self._any = value
            elif name.startswith("*."):
                self._wildcards.append((name[1:], value))
            else:
                self._exact[name] = value
        self._wildcards.sort(key=lambda item: -len(item[0]))

    def values(self) -> list[T]:
        found = [*self._exact.values(), *(value for _, value in self._wildcards)]
        return [*found, self._any] if self._any is not None else found

    def find(self, host: str | None) -> T | None:
        """The value of the most specific pattern that covers `host` (None: no name)."""
        if host:
            name = host.lower()
            found = self._exact.get(name)
            if found is not None:
                return found
            for suffix, value in self._wildcards:
                if name.endswith(suffix) and len(name) > len(suffix):
                    return value
        return self._any


@dataclass(frozen=True, slots=True)
class ServedListener:
    config: cfg.GatewayListener
    virtual_hosts: HostTable[CompiledRoute]
    tls: ssl.SSLContext | None  # for a listener that terminates TLS


@dataclass(frozen=True, slots=True)
class GatewayPort:
    port: int
    family: PortFamily  # how its connections are told apart: Host, SNI, or not at all
    listeners: HostTable[ServedListener]


@dataclass(frozen=True, slots=True)
class GatewayRoutes:
    ports: dict[int, GatewayPort]
    problems: list[str]

    def listener(self, port: int, host: str | None) -> ServedListener | None:
        served = self.ports.get(port)
        return served.listeners.find(host) if served is not None else None

    def route(self, port: int, host: str) -> tuple[ServedListener, CompiledRoute]:
        """The listener and virtual host a request to `port` with Host `host` takes;
        raises `UnknownHost` or `NoRoute` saying which name is not served."""
        name = strip_port(host).lower()
        served = self.ports.get(port)
        listener = served.listeners.find(name) if served is not None else None
        if served is None or listener is None:
            names = ", ".join(served.listeners.patterns) if served is not None else "nothing"
            raise UnknownHost(
                f"no listener on gateway port {port} serves host {name or '(none)'!r} "
                f"(it serves: {names})"
            )
        route = listener.virtual_hosts.find(name)
        if route is None:
            attached = ", ".join(listener.virtual_hosts.patterns) or "none"
            raise NoRoute(
                f"no HTTPRoute on listener {listener.config.name} serves host {name!r} "
                f"(attached hostnames: {attached})"
            )
        return listener, route


def build_gateway(
    config: cfg.GatewayConfig, compile_route: Callable[[cfg.ServiceRoute], CompiledRoute]
) -> GatewayRoutes:
    """The lookup tables of a `gateway` entry; raises ValueError (naming the listener
    and the file) when a certificate or key cannot be used."""
    by_port: dict[int, list[ServedListener]] = {}
    for listener in config.listeners:
        by_port.setdefault(listener.port, []).append(_served(listener, compile_route))
    ports = {
        port: GatewayPort(
            port,
            _FAMILY[listeners[0].config.protocol],
            HostTable((item.config.hostname, item) for item in listeners),
        )
        for port, listeners in by_port.items()
    }
    return GatewayRoutes(ports, list(config.problems))


def _served(
    listener: cfg.GatewayListener, compile_route: Callable[[cfg.ServiceRoute], CompiledRoute]
) -> ServedListener:
    tls = None
    if listener.tls is not None and listener.tls.mode == "Terminate":
        certificate, key = listener.tls.certificate_file, listener.tls.key_file
        if certificate is None or key is None:
            raise ValueError(f"gateway listener {listener.name} terminates TLS without files")
        try:
            tls = edge_server_context(certificate, key)
        except CertificateFileError as exc:
            raise ValueError(f"gateway listener {listener.name}: {exc}") from None
    routes = [
        (
            vhost.hostname,
            compile_route(
                cfg.ServiceRoute(
                    service=listener.name,
                    hosts=[vhost.hostname],
                    ports=[cfg.ServicePort(name="http", port=listener.port, protocol="HTTP")],
                    http_rules=vhost.rules,
                    tcp_backends=[],
                )
            ),
        )
        for vhost in listener.virtual_hosts
    ]
    return ServedListener(listener, HostTable(routes), tls)
