"""Outlier detection: passive health checking from the outcomes of real requests.

An endpoint that fails several times in a row is ejected, taken out of the available
set for a while, and comes back by itself when that time is up. The rules are Envoy's
consecutive-errors detectors:

- *5xx*: any 5xx response and any local failure (connect failure, reset, timeout);
- *gateway errors*: 502, 503 and 504, and the same local failures (the proxy would
  answer 503, 502 and 504 for them);
- a response below 500 resets both runs; a 5xx that is not a gateway error resets the
  gateway-error run only.

An ejection lasts `base_ejection_time * n`, where n counts the endpoint's ejections in
a row, capped at `max_ejection_time`; each `interval` an endpoint spends back in service
takes one off n. Outcomes reported for an endpoint while it is ejected (requests that
were already in flight) are ignored.

Never more than `max_ejection_percent` of the cluster is ejected at once, rounding down,
except that one endpoint may always be ejected (as Envoy documents: "will eject at least
one host regardless of the value"); so 10 % of 20 endpoints allows two, of 3 endpoints
one. 0 % switches ejection off. An endpoint that could not be ejected for lack of room
is ejected at its next failure once room frees up, since its run keeps counting.

The detector keeps its per-endpoint state on `EndpointState`; it learns the cluster's
size from the sequences passed to `available` (or `update_membership`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mycelium.errors import ConfigError
from mycelium.proxy.upstream.endpoint import EndpointState

type LocalFailure = Literal["connect", "reset", "timeout"]

# Envoy's cap on an ejection's length when none is configured: five minutes, or the
# base ejection time if that is longer.
DEFAULT_MAX_EJECTION_SECONDS = 300.0

_GATEWAY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointOutlierStatus:
    """One endpoint's line on the admin `/clusters` page."""

    key: str
    healthy: bool  # what the registry says
    ejected: bool
    ejected_for_seconds: float  # time left in the current ejection (0 when not ejected)
    ejection_count: int  # ejections in a row: the next one lasts this + 1 base times
    consecutive_5xx: int
    consecutive_gateway_errors: int


class OutlierDetector:
    """Ejects endpoints after runs of failures; see the module docstring for the rules.

    consecutive_5xx             failures in a row (any 5xx or local failure) that eject;
                                None: this detector is off
    consecutive_gateway_errors  502/503/504 or local failures in a row that eject; None: off
    base_ejection_time          seconds of the first ejection; the n-th in a row lasts n times
    max_ejection_percent        at most this share of the cluster ejected at once (0-100)
    interval                    seconds back in service that take one off the multiplier
    max_ejection_time           cap on one ejection in seconds (default: 300 s, or base if longer)

    Counters for metrics: `ejections_total`, and `ejections_refused` (an endpoint met a
    threshold but `max_ejection_percent` left no room).
    """

    def __init__(
        self,
        consecutive_5xx: int | None,
        consecutive_gateway_errors: int | None,
        base_ejection_time: float,
        max_ejection_percent: float,
        *,
        interval: float = 10.0,
        max_ejection_time: float | None = None,
    ) -> None:
        for name, threshold in (
            ("consecutive_5xx", consecutive_5xx),
            ("consecutive_gateway_errors", consecutive_gateway_errors),
        ):
            if threshold is not None and threshold < 1:
                raise ConfigError(
                    f"outlier detection {name} is {threshold}: use 1 or more, or leave it "
                    "unset to turn that detector off"
                )
        if base_ejection_time <= 0:
            raise ConfigError(
                f"outlier detection base_ejection_time is {base_ejection_time}s: use a "
                "positive number of seconds"
            )
        if not 0 <= max_ejection_percent <= 100:
            raise ConfigError(
                f"outlier detection max_ejection_percent is {max_ejection_percent}: use a "
                "percentage from 0 to 100"
            )
        if interval <= 0:
            raise ConfigError(f"outlier detection interval is {interval}s: use a positive value")
        self.consecutive_5xx = consecutive_5xx
        self.consecutive_gateway_errors = consecutive_gateway_errors
        self.base_ejection_time = base_ejection_time
        self.max_ejection_percent = max_ejection_percent
        self.interval = interval
        self.max_ejection_time = (
            max_ejection_time
            if max_ejection_time is not None
            else max(DEFAULT_MAX_EJECTION_SECONDS, base_ejection_time)
        )
        self.ejections_total = 0
        self.ejections_refused = 0
        self._cluster_size = 0
        self._ejected: dict[str, EndpointState] = {}
        self._next_return = math.inf  # earliest end among current ejections
        self._generation = 0  # bumped whenever an ejection starts or ends
        # The last `available` answer and what it was computed from.
        self._source: Sequence[EndpointState] | None = None
        self._source_length = -1
        self._source_stamp = (-1, -1)
        self._available: list[EndpointState] = []

    @classmethod
    def disabled(cls) -> OutlierDetector:
        """A detector that never ejects: `available` then only filters on health (and
        still caches its answer, which keeps the balancers on their fast path)."""
        return cls(None, None, base_ejection_time=30.0, max_ejection_percent=0.0)

    # --- what the I/O shell reports ---

    def record(
        self,
        endpoint: EndpointState,
        *,
        status: int | None = None,
        failure: LocalFailure | None = None,
        now: float,
    ) -> bool:
        """Report one attempt's outcome: its response `status`, or the local `failure`
        that kept it from having one. True when this report ejected the endpoint."""
        if now >= self._next_return:
            self._end_ejections(now)
        if endpoint.ejected_until is not None:
            return False  # a straggler from before the ejection: it says nothing new
        if failure is not None:
            gateway = five_xx = True
        elif status is not None and status >= 500:
            five_xx, gateway = True, status in _GATEWAY_STATUSES
        else:
            endpoint.consecutive_5xx = 0
            endpoint.consecutive_gateway_errors = 0
            return False
        endpoint.consecutive_5xx += 1
        if gateway:
            endpoint.consecutive_gateway_errors += 1
        else:
            endpoint.consecutive_gateway_errors = 0
        limit_5xx = self.consecutive_5xx
        limit_gateway = self.consecutive_gateway_errors
        if (five_xx and limit_5xx is not None and endpoint.consecutive_5xx >= limit_5xx) or (
            gateway
            and limit_gateway is not None
            and endpoint.consecutive_gateway_errors >= limit_gateway
        ):
            return self._eject(endpoint, now)
        return False

    def update_membership(self, endpoints: Sequence[EndpointState]) -> None:
        """Tell the detector the cluster's endpoints (all of them, healthy or not)."""
        self._cluster_size = len(endpoints)
        if self._ejected:
            present = {e.key for e in endpoints}
            for key in [k for k in self._ejected if k not in present]:
                del self._ejected[key]
            self._next_return = min(
                (e.ejected_until or math.inf for e in self._ejected.values()), default=math.inf
            )
        self._generation += 1

    # --- what the balancer is given ---

    def is_ejected(self, endpoint: EndpointState, now: float) -> bool:
        until = endpoint.ejected_until
        return until is not None and now < until

    def available(self, endpoints: Sequence[EndpointState], now: float) -> list[EndpointState]:
        """The endpoints that may take traffic: healthy and not ejected.

        `endpoints` is the whole cluster. The answer is cached: while the cluster, the
        ejections and every endpoint's health are unchanged, the same list object comes
        back (so balancers stay on their fast path). Do not mutate it.
        """
        if now >= self._next_return:
            self._end_ejections(now)
        if (
            endpoints is self._source
            and len(endpoints) == self._source_length
            and self._source_stamp == (self._generation, EndpointState.epoch)
        ):
            return self._available
        if endpoints is not self._source or len(endpoints) != self._source_length:
            self.update_membership(endpoints)
        self._available = [e for e in endpoints if e.healthy and e.ejected_until is None]
        self._source = endpoints
        self._source_length = len(endpoints)
        self._source_stamp = (self._generation, EndpointState.epoch)
        return self._available

    def snapshot(
        self, endpoints: Sequence[EndpointState], now: float
    ) -> list[EndpointOutlierStatus]:
        """Each endpoint's ejection state, for the admin `/clusters` page."""
        out: list[EndpointOutlierStatus] = []
        for e in endpoints:
            until = e.ejected_until
            ejected = until is not None and now < until
            out.append(
                EndpointOutlierStatus(
                    key=e.key,
                    healthy=e.healthy,
                    ejected=ejected,
                    ejected_for_seconds=max(until - now, 0.0) if until is not None else 0.0,
                    ejection_count=e.ejection_count,
                    consecutive_5xx=e.consecutive_5xx,
                    consecutive_gateway_errors=e.consecutive_gateway_errors,
                )
            )
        return out

    @property
    def ejected_count(self) -> int:
        """Endpoints ejected right now (as of the last call that was given a time)."""
        return len(self._ejected)

    # --- inside ---

    def _room_for_one_more(self) -> bool:
        if self.max_ejection_percent <= 0:
            return False
        allowed = max(1, math.floor(self._cluster_size * self.max_ejection_percent / 100))
        return len(self._ejected) < allowed

    def _eject(self, endpoint: EndpointState, now: float) -> bool:
        if not self._room_for_one_more():
            self.ejections_refused += 1
            return False
        count = endpoint.ejection_count
        if endpoint.returned_at is not None and count:
            # Time spent healthy since the last ejection earns the multiplier back down.
            count = max(0, count - int((now - endpoint.returned_at) // self.interval))
        count += 1
        until = now + min(self.base_ejection_time * count, self.max_ejection_time)
        endpoint.ejection_count = count
        endpoint.ejected_until = until
        # A fresh run is needed to eject it again once it is back.
        endpoint.consecutive_5xx = 0
        endpoint.consecutive_gateway_errors = 0
        self._ejected[endpoint.key] = endpoint
        self._next_return = min(self._next_return, until)
        self._generation += 1
        self.ejections_total += 1
        return True

    def _end_ejections(self, now: float) -> None:
        next_return = math.inf
        for key, endpoint in list(self._ejected.items()):
            until = endpoint.ejected_until
            if until is None or now >= until:
                endpoint.ejected_until = None
                endpoint.returned_at = until if until is not None else now
                del self._ejected[key]
            else:
                next_return = min(next_return, until)
        self._next_return = next_return
        self._generation += 1
