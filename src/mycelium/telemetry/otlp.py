"""Span export over OTLP/HTTP with JSON encoding, to an OpenTelemetry collector.

The OTLP specification allows two encodings on HTTP; JSON keeps protobuf (and grpcio)
out of the sidecar, whose memory and start-up time matter more than a few bytes on a
once-a-second POST. The JSON mapping is protobuf's, with the two deviations OTLP
prescribes: trace and span ids are hex strings (not base64) and enums are numbers.

The hot path only appends a finished span to a bounded queue (`add`); when the queue is
full the span is dropped and counted. A background task (`run`) posts batches to
`/v1/traces` once a second, or as soon as a batch is full, one POST at a time, each
with a deadline. A collector that is slow, refuses or is away costs counted failures
and dropped spans, never a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from mycelium.telemetry.tracing import Span

__all__ = ["CollectorAddress", "OtlpHttpExporter", "encode_spans"]

log = logging.getLogger("mycelium.telemetry")

# Spans waiting for export. At 1 % sampling this is minutes of a busy proxy; at 100 %
# about a second of one (the proxy serves tens of thousands of requests a second), which
# bounds the memory a collector outage can cost (a span is about 1 KB).
MAX_QUEUED_SPANS = 8192
# Spans per POST: the OTel SDK's default batch size (OTEL_BSP_MAX_EXPORT_BATCH_SIZE).
BATCH_SPANS = 512
# How long a span may wait for its batch (the OTel SDK's schedule delay is 5 s; one
# second keeps traces fresh for whoever watches them).
EXPORT_INTERVAL_SECONDS = 1.0
# One POST, connecting included: a collector slower than this is treated as down.
EXPORT_TIMEOUT_SECONDS = 5.0
# The OTLP/HTTP path for traces (OTLP specification, "OTLP/HTTP Request").
TRACES_PATH: Final = "/v1/traces"
_STATUS_CODE_ERROR: Final = 2  # opentelemetry.proto.trace.v1.Status.StatusCode

type Connect = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@dataclass(frozen=True, slots=True)
class CollectorAddress:
    """Where spans go: `http://HOST:PORT` (POSTs to /v1/traces) or a full URL."""

    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, text: str) -> CollectorAddress:
        parts = urlsplit(text)
        if parts.scheme != "http":
            raise ValueError(
                f"trace collector {text!r} must be an http:// URL (OTLP/HTTP; TLS to the "
                "collector is not supported: run it beside the proxy)"
            )
        if not parts.hostname:
            raise ValueError(f"trace collector {text!r} names no host")
        try:
            port = parts.port or 4318  # OTLP/HTTP's registered port
        except ValueError:
            raise ValueError(f"trace collector {text!r} has an invalid port") from None
        path = parts.path if parts.path not in ("", "/") else TRACES_PATH
        return cls(parts.hostname, port, path)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"


def _attribute(key: str, value: str | int) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}  # int64: a string in JSON
    return {"key": key, "value": {"stringValue": value}}


# Most attribute values repeat from span to span (the method, the service, the upstream,
# the client, the status): their OTLP objects are built once and shared, since building
# nested dicts is most of an export's cost at high sampling. Bounded: emptied when full.
_ATTRIBUTE_CACHE_SIZE = 4096
_attributes: dict[tuple[str, str | int], dict[str, Any]] = {}


def _cached_attribute(key: str, value: str | int) -> dict[str, Any]:
    pair = (key, value)
    found = _attributes.get(pair)
    if found is None:
        if len(_attributes) >= _ATTRIBUTE_CACHE_SIZE:
            _attributes.clear()
        found = _attributes[pair] = _attribute(key, value)
    return found


def _span_json(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": f"{span.trace_id:032x}",
        "spanId": f"{span.span_id:016x}",
        "name": span.name,
        "kind": span.kind,
        "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.end_ns),
        "attributes": [_cached_attribute(k, v) for k, v in span.attributes.items()],
    }
    if span.parent_span_id:
        out["parentSpanId"] = f"{span.parent_span_id:016x}"
    if span.tracestate:
        out["traceState"] = span.tracestate.decode("latin-1")
    if span.error:
        out["status"] = _ERROR_STATUS
    return out


_ERROR_STATUS: Final = {"code": _STATUS_CODE_ERROR}


def encode_spans(spans: list[Span], resource: dict[str, str], scope_version: str) -> bytes:
    """An ExportTraceServiceRequest in OTLP's JSON encoding."""
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attribute(k, v) for k, v in resource.items()]},
                "scopeSpans": [
                    {
                        "scope": {"name": "mycelium.proxy", "version": scope_version},
                        "spans": [_span_json(span) for span in spans],
                    }
                ],
            }
        ]
    }
    # msgspec's encoder (already the discovery protocol's): several times json's speed
    return msgspec.json.encode(request)


class OtlpHttpExporter:
    """Batches finished spans and posts them to a collector, off the hot path.

    Counters (in the proxy's `counters`): `trace_spans_exported`, `trace_spans_dropped`
    (queue full, or the collector refused or was away), `trace_export_failures` (POSTs
    that did not get a 2xx).
    """

    def __init__(
        self,
        collector: CollectorAddress,
        resource: dict[str, str],
        counters: MutableMapping[str, int],
        *,
        connect: Connect | None = None,
        scope_version: str = "",
        max_queued: int = MAX_QUEUED_SPANS,
        batch: int = BATCH_SPANS,
        interval: float = EXPORT_INTERVAL_SECONDS,
        timeout: float = EXPORT_TIMEOUT_SECONDS,
    ) -> None:
        self.collector = collector
        self.resource = resource
        self.counters = counters
        self._connect: Connect = connect or asyncio.open_connection
        self._scope_version = scope_version
        self._queue: deque[Span] = deque()
        self._max_queued = max_queued
        self._batch = batch
        self._interval = interval
        self._timeout = timeout
        self._wake = asyncio.Event()
        self._failing = False  # logged once per outage, not once per batch

    def add(self, span: Span) -> None:
        """Queue a finished span (the tracer's export hook; called on the hot path)."""
        queue = self._queue
        if len(queue) >= self._max_queued:
            self.counters["trace_spans_dropped"] += 1
            return
        queue.append(span)
        if len(queue) == self._batch:
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Post what is queued once a second, or when a batch fills; until cancelled."""
        while True:
            try:
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Post everything queued now, a batch at a time (also at drain)."""
        while self._queue:
            count = min(len(self._queue), self._batch)
            spans = [self._queue.popleft() for _ in range(count)]
            body = encode_spans(spans, self.resource, self._scope_version)
            if await self._post(body):
                self.counters["trace_spans_exported"] += count
            else:
                self.counters["trace_export_failures"] += 1
                self.counters["trace_spans_dropped"] += count
                return  # the rest waits for the next round rather than hammer the collector

    async def _post(self, body: bytes) -> bool:
        collector = self.collector
        head = (
            f"POST {collector.path} HTTP/1.1\r\n"
            f"host: {collector.host}:{collector.port}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode("latin-1")
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await self._connect(collector.host, collector.port)
                writer.write(head + body)
                await writer.drain()
                status_line = await reader.readuntil(b"\r\n")
            parts = status_line.split(b" ", 2)
            status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
            problem = "" if 200 <= status < 300 else f"answered {status_line.strip()!r}"
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            problem = f"failed: {exc or type(exc).__name__}"
        finally:
            if writer is not None:
                writer.close()
        if problem:
            if not self._failing:
                log.warning(
                    "the trace collector at %s %s; spans are dropped until it accepts them "
                    "(check --trace-collector and that the collector listens for OTLP/HTTP)",
                    collector,
                    problem,
                )
            self._failing = True
            return False
        if self._failing:
            log.info("the trace collector at %s accepts spans again", collector)
        self._failing = False
        return True
