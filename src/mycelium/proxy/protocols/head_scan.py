"""Whether the compiled fast lane for HTTP/1.1 heads (`_head_scan.pyx`) is here.

It is built from the Cython source when the project is installed (`setup.py`); without
a C compiler the install goes on without it and every head takes the full path, which
gives the same events, only slower. `MYCELIUM_PURE_PYTHON=1` turns the lane off, to
compare or to debug.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

REQUEST_TUPLE = tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes, int, int]
RESPONSE_TUPLE = tuple[int, bytes, list[tuple[bytes, bytes]], int, bool, int]


def _declined(*_: Any) -> None:
    return None


scan_request_head: Callable[[bytes, int, int], REQUEST_TUPLE | None] = _declined
scan_response_head: Callable[[bytes, int], RESPONSE_TUPLE | None] = _declined
# Building events: kind 0 for requests, 1 for responses (see `_head_scan.bind_event`).
bind_event: Callable[[int, type, tuple[str, ...]], None] | None = None
bind_framings: Callable[[Any, Any, Callable[[int], Any]], None] | None = None
new_event: Callable[[int, tuple[Any, ...]], Any] | None = None
# One whole message in one read: its events, or None (see `_head_scan.whole_request`).
whole_request: Callable[[bytes, int, int, int, int | None], list[Any] | None] = _declined
whole_response: Callable[[bytes, int, int, int | None], list[Any] | None] = _declined
AVAILABLE = False
WHY_NOT = ""

if os.environ.get("MYCELIUM_PURE_PYTHON", "") not in ("", "0"):
    WHY_NOT = "MYCELIUM_PURE_PYTHON is set"
else:
    try:
        from mycelium.proxy.protocols import _head_scan
    except ImportError as exc:
        WHY_NOT = f"the compiled module is missing ({exc}); reinstall with a C compiler"
    else:
        scan_request_head = _head_scan.scan_request_head
        scan_response_head = _head_scan.scan_response_head
        bind_event = _head_scan.bind_event
        bind_framings = _head_scan.bind_framings
        new_event = _head_scan.new_event
        whole_request = _head_scan.whole_request
        whole_response = _head_scan.whole_response
        AVAILABLE = True
