"""Envoy's response flags, from the proxy's own reason words.

Every request the proxy answered or cut itself carries a `reason` (the
`x-mycelium-reason` header: `no_route`, `upstream_timeout`...), and every relayed TCP
connection ends for one reason (`net.relay.RelayEnd`: `connect_failed`,
`downstream_lost`...). Istio's access logs and its `response_flags` metric label speak
Envoy's short codes instead (UH, UF, NR...), and dashboards and alerts built for Istio
key on them; this module is the one translation, shared by the access log and the
metrics. "-" means no flag: the upstream answered, or nothing Envoy would flag happened.

Sans-IO: a table and a function, no state.
"""

from __future__ import annotations

NO_FLAG = "-"

# reason word -> Envoy response flag. Words that are not here (denied, draining,
# internal_error, request_timeout, egress_denied, status_NNN...) have no Envoy
# counterpart: Envoy reports those through the response code and its details, not a flag.
_FLAGS: dict[str, str] = {
    # HTTP: the proxy's answers (proxy/errors.py)
    "no_healthy_upstream": "UH",
    "upstream_connect_failed": "UF",
    "upstream_timeout": "UT",
    "no_route": "NR",
    "unknown_service": "NR",  # no route configured for that host
    "unknown_host": "NR",  # a gateway serves no virtual host of that name
    "retry_budget_exhausted": "URX",
    "rate_limited": "RL",
    "circuit_open": "UO",
    "upstream_reset": "UR",
    "upstream_protocol_error": "UPE",
    "fault_injected": "FI",
    "client_reset": "DC",
    "bad_request": "DPE",
    # TCP: how a relayed connection ended (net/relay.RelayEnd)
    "connect_failed": "UF",
    "connect_timeout": "UF",  # Envoy's TCP proxy flags a connect timeout UF as well
    "downstream_lost": "DC",
    "upstream_lost": "UC",
    "idle_timeout": "SI",  # Envoy's stream idle timeout
}


def response_flags(reason: str, status: int) -> str:
    """The Envoy response flag for a request (or TCP connection) that ended with `reason`
    and `status` (0: no response was sent, or a TCP connection).

    A request with no reason and no status never got an answer because its client left
    first: Envoy's DC (downstream connection termination).
    """
    if reason:
        return _FLAGS.get(reason, NO_FLAG)
    return "DC" if status == 0 else NO_FLAG
