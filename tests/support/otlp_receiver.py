"""A small OTLP/HTTP trace receiver for tests: it accepts POST /v1/traces and decodes
each body with the official `opentelemetry-proto` messages, as a collector would.

JSON bodies go through protobuf's own `json_format.Parse` into an
`ExportTraceServiceRequest`, after the one rewrite OTLP's JSON encoding asks of its
receivers: trace and span ids are hex there, where protobuf's JSON mapping expects
base64 for `bytes` fields. Protobuf bodies are parsed as they are. A body that does not
decode gets a 400 and is remembered in `rejected`, so that tests see it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


@dataclass(frozen=True)
class ReceivedSpan:
    """A span as the receiver decoded it, with its resource's attributes."""

    service: str  # the resource's service.name
    resource: dict[str, Any]
    span: Span

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes_of(self.span.attributes)


def attributes_of(values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        assert isinstance(item, KeyValue)
        which = item.value.WhichOneof("value")
        out[item.key] = getattr(item.value, which) if which else None
    return out


def _hex_ids_to_base64(document: Any) -> Any:
    """OTLP JSON (specification, "JSON Protobuf Encoding"): ids are hex, not base64."""
    if isinstance(document, dict):
        return {
            key: (
                base64.b64encode(bytes.fromhex(value)).decode()
                if key in _ID_FIELDS and isinstance(value, str)
                else _hex_ids_to_base64(value)
            )
            for key, value in document.items()
        }
    if isinstance(document, list):
        return [_hex_ids_to_base64(item) for item in document]
    return document


def decode(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    if content_type == "application/json":
        json_format.Parse(json.dumps(_hex_ids_to_base64(json.loads(body))), request)
    elif content_type == "application/x-protobuf":
        request.ParseFromString(body)
    else:
        raise ValueError(f"unsupported content type {content_type!r}")
    return request


@dataclass
class OtlpReceiver:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            decoded = decode(body, request.content_type)
        except (ValueError, json_format.ParseError) as exc:
            self.rejected.append(str(exc))
            return web.Response(status=400, text=str(exc))
        self.requests.append(decoded)
        reply = ExportTraceServiceResponse()
        if request.content_type == "application/json":
            return web.json_response(json_format.MessageToDict(reply))
        return web.Response(body=reply.SerializeToString(), content_type="application/x-protobuf")

    def spans(self) -> list[ReceivedSpan]:
        out = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = attributes_of(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    out.extend(
                        ReceivedSpan(str(resource.get("service.name", "")), resource, span)
                        for span in scope_spans.spans
                    )
        return out

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans() if span.trace_id == trace_id]
