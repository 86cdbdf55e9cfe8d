"""One upstream endpoint of a cluster, as the balancers and the outlier detector see it.

An `EndpointState` lives as long as its endpoint stays in the cluster: a config update
changes `weight`, `labels` and `healthy` in place, so the live counters, the latency
estimate and the ejection history survive it. The I/O shell reports each request's
start and end (`request_started`, `request_finished`); balancers only read.

Changing `weight` or `healthy` bumps the class-wide `EndpointState.epoch`. Balancers and
the outlier detector cache what they derive from an endpoint sequence (weight tables,
hash rings, the available list) and use the epoch to notice in-place changes without
rescanning every endpoint on every request.

Time is a monotonic clock in seconds, passed in; nothing here reads a clock.
"""

from __future__ import annotations

import math
from typing import ClassVar

# Linkerd's decay time constant for its peak-EWMA latency estimate: long enough that one
# lucky fast response does not erase a slow history, short enough that an endpoint that
# recovered is tried again within tens of seconds.
DEFAULT_DECAY_SECONDS = 10.0


class PeakEwmaLatency:
    """A peak-sensitive, exponentially decaying estimate of an endpoint's latency.

    The scheme is Finagle's "peak EWMA", which Linkerd uses for balancing. Each response
    time `rtt` observed at time `t` updates the estimate `E` (seconds):

    - if `rtt >= E`, the estimate jumps to it at once (`E = rtt`): a slowdown is believed
      on first sight;
    - otherwise it moves towards it by a weight that grows with the time since the last
      observation: `w = exp(-(t - t_last) / decay_seconds)`, `E = E * w + rtt * (1 - w)`.
      Many fast responses in a short time are needed to bring a peak down.

    Between observations the estimate read at `now` fades towards zero,
    `E * exp(-(now - t_last) / decay_seconds)`, so an endpoint that was avoided because
    it was slow eventually looks cheap enough to be tried again, and its next response
    tells the truth. Before the first observation there is no evidence: the estimate is
    0.0 and `observations` is 0 (the balancer treats that case on its own).
    """

    __slots__ = ("_at", "_value", "decay_seconds", "observations")

    def __init__(self, decay_seconds: float = DEFAULT_DECAY_SECONDS) -> None:
        self.decay_seconds = decay_seconds
        self.observations = 0
        self._value = 0.0
        self._at = 0.0

    def estimate(self, now: float) -> float:
        """The current estimate in seconds (does not change the state)."""
        if not self.observations:
            return 0.0
        elapsed = now - self._at
        if elapsed <= 0.0:
            return self._value
        return self._value * math.exp(-elapsed / self.decay_seconds)

    def observe(self, now: float, rtt: float) -> None:
        """Fold in one response time `rtt` (seconds) observed at `now`."""
        value = self._value
        if not self.observations or rtt >= value:
            self._value = rtt
        else:
            elapsed = now - self._at
            w = math.exp(-elapsed / self.decay_seconds) if elapsed > 0.0 else 1.0
            self._value = value * w + rtt * (1.0 - w)
        self._at = now
        self.observations += 1


def endpoint_key(address: str, port: int) -> str:
    """`address:port`, with an IPv6 address in brackets: how endpoints are named."""
    if ":" in address and not address.startswith("["):
        return f"[{address}]:{port}"
    return f"{address}:{port}"


class EndpointState:
    """One endpoint of a cluster: its identity, its registry state, and live counters.

    Registry state (set from config; `weight` and `healthy` bump `epoch` on change):
      key        `address:port`, unique within the cluster, the name in logs and caches
      weight     relative share of traffic (>= 1); 2 means twice the share of a 1
      labels     the workload's labels (subset routing reads them)
      identity   the SPIFFE ID the peer must present
      workload   the registered Workload, "<ns>/<name>" ("" when unknown; telemetry)
      healthy    what the registry says; False keeps it out of the available set

    Live counters (kept by the I/O shell through the methods below):
      in_flight        requests sent and not yet finished (least-request and peak-EWMA
                       read it)
      connections      connections open to it (the connection pool keeps this)
      requests_total   requests finished, failures_total of which failed
      last_started_at  when the last request to it started (None: never)
      latency          its `PeakEwmaLatency`, fed by `request_finished`

    Outlier state (kept by `OutlierDetector` only):
      consecutive_5xx, consecutive_gateway_errors  current failure runs
      ejected_until    when the current ejection ends (None: not ejected)
      ejection_count   ejections "in a row": the multiplier of the next ejection time
      returned_at      when the last ejection ended (None: never ejected)
    """

    # Bumped on every change of any endpoint's `weight` or `healthy`: caches derived from
    # endpoint sequences compare it instead of rescanning the endpoints.
    epoch: ClassVar[int] = 0

    __slots__ = (
        "_healthy",
        "_weight",
        "address",
        "connections",
        "consecutive_5xx",
        "consecutive_gateway_errors",
        "ejected_until",
        "ejection_count",
        "failures_total",
        "identity",
        "in_flight",
        "key",
        "labels",
        "last_started_at",
        "latency",
        "mtls",
        "port",
        "requests_total",
        "returned_at",
        "workload",
    )

    def __init__(
        self,
        *,
        address: str,
        port: int,
        key: str | None = None,
        weight: int = 1,
        labels: dict[str, str] | None = None,
        identity: str = "",
        healthy: bool = True,
        latency: PeakEwmaLatency | None = None,
        mtls: bool = False,
        workload: str = "",
    ) -> None:
        self.key = key if key is not None else endpoint_key(address, port)
        self.address = address
        self.port = port
        self._weight = max(int(weight), 1)
        self.labels = labels if labels is not None else {}
        self.identity = identity
        self.workload = workload
        self.mtls = mtls  # it runs a proxy: connect with mTLS and expect `identity`
        self._healthy = healthy
        self.in_flight = 0
        self.connections = 0
        self.requests_total = 0
        self.failures_total = 0
        self.last_started_at: float | None = None
        self.latency = latency if latency is not None else PeakEwmaLatency()
        self.consecutive_5xx = 0
        self.consecutive_gateway_errors = 0
        self.ejected_until: float | None = None
        self.ejection_count = 0
        self.returned_at: float | None = None

    @property
    def weight(self) -> int:
        return self._weight

    @weight.setter
    def weight(self, value: int) -> None:
        # A weight of 0 would make an endpoint unreachable by weighted choice yet still
        # "available"; the registry's way to drain an endpoint is `healthy = False`.
        value = max(int(value), 1)
        if value != self._weight:
            self._weight = value
            EndpointState.epoch += 1

    @property
    def healthy(self) -> bool:
        return self._healthy

    @healthy.setter
    def healthy(self, value: bool) -> None:
        if value != self._healthy:
            self._healthy = value
            EndpointState.epoch += 1

    def request_started(self, now: float) -> None:
        """A request was sent to this endpoint (call once per attempt, retries included)."""
        self.in_flight += 1
        self.last_started_at = now

    def request_finished(self, now: float, latency_seconds: float, ok: bool) -> None:
        """The attempt begun by `request_started` ended after `latency_seconds`.

        `ok` is False for a failed attempt (5xx, connect failure, reset, timeout). A
        failure never lowers the latency estimate: an endpoint that fails fast must not
        look fast, or a latency-aware balancer would pour traffic into it.
        """
        if self.in_flight > 0:
            self.in_flight -= 1
        self.requests_total += 1
        if ok:
            self.latency.observe(now, latency_seconds)
        else:
            self.failures_total += 1
            self.latency.observe(now, max(latency_seconds, self.latency.estimate(now)))

    def __repr__(self) -> str:
        return (
            f"EndpointState({self.key!r}, weight={self._weight}, healthy={self._healthy}, "
            f"in_flight={self.in_flight})"
        )
