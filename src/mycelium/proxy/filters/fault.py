"""Fault injection: delay and/or abort a percentage of a rule's requests (Istio's
`fault`), to rehearse failures. The abort's response says it was injected, so nobody
mistakes a drill for an outage."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from mycelium.discovery import config as cfg
from mycelium.proxy.errors import FaultInjected

if TYPE_CHECKING:
    from mycelium.proxy.filters.base import FilteredRequest


class FaultFilter:
    def __init__(self, policy: cfg.FaultPolicy, rng: random.Random) -> None:
        self._delay = policy.delay_seconds
        self._delay_share = policy.delay_percentage / 100.0
        self._abort = policy.abort_status
        self._abort_share = policy.abort_percentage / 100.0
        self._rng = rng

    def on_request(self, request: FilteredRequest) -> float | None:
        if self._abort is not None and self._rng.random() < self._abort_share:
            raise FaultInjected(
                self._abort, f"fault injected by rule {request.rule_name}: abort {self._abort}"
            )
        if self._delay is not None and self._rng.random() < self._delay_share:
            return self._delay
        return None
