"""Micro-benchmark of the sans-IO HTTP/1.1 core: microseconds per keep-alive request.

What a proxy pays per request in `mycelium.proxy.protocols.http1`, measured on one
reused parser as on a keep-alive connection, against httptools alone on the same bytes:

- `httptools_bare`: llhttp through httptools with no callbacks (the C floor);
- `httptools_collecting`: httptools with the callbacks a server needs (URL, fields);
- `parse_request`: `RequestParser.feed` of a ~200-byte GET -> head + end events;
- `encode_response`: `encode_response_head` + a 12-byte body;
- `request_cycle`: both, i.e. one keep-alive request parsed and its response written;
- `proxy_cycle`: the four steps of a proxied request: parse the client's request,
  strip hop-by-hop fields and encode it upstream, parse the upstream's response, encode
  it for the client.

Reported: the median over `--rounds` rounds of `--iterations` calls each, in us. It is a
benchmark, not a test: run it by hand on a quiet machine, e.g.

    .venv/bin/python bench/http1_parser.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import httptools

from mycelium.proxy.protocols.headers import strip_hop_by_hop
from mycelium.proxy.protocols.http1 import (
    RequestParser,
    RequestReceived,
    ResponseParser,
    ResponseReceived,
    encode_request_head,
    encode_response_head,
)

REQUEST = (
    b"GET /api/v1/reviews/42?lang=en HTTP/1.1\r\n"
    b"Host: reviews.shop.svc.cluster.local:9080\r\n"
    b"User-Agent: curl/7.88.1\r\n"
    b"Accept: */*\r\n"
    b"X-Request-Id: 5f1c2b7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f\r\n"
    b"Accept-Encoding: gzip\r\n\r\n"
)
RESPONSE_HEADERS = [
    (b"content-type", b"text/plain"),
    (b"content-length", b"12"),
    (b"date", b"Tue, 25 Nov 2025 20:00:00 GMT"),
]
BODY = b"hello world\n"
UPSTREAM_RESPONSE = encode_response_head(200, b"OK", RESPONSE_HEADERS) + BODY


def measure(step: Callable[[], object], iterations: int, rounds: int) -> float:
    """Median microseconds per call of `step` over `rounds` rounds."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(iterations):
            step()
        samples.append((time.perf_counter_ns() - start) / iterations / 1000)
    return statistics.median(samples)


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--iterations", type=int, default=100_000)
    arguments.add_argument("--rounds", type=int, default=9)
    options = arguments.parse_args()

    class NoCallbacks:
        pass

    class Collecting:
        def __init__(self) -> None:
            self.url = b""
            self.fields: list[tuple[bytes, bytes]] = []

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.fields.append((name, value))

        def on_message_complete(self) -> None:
            self.url = b""
            self.fields = []

    bare = httptools.HttpRequestParser(NoCallbacks())
    collecting = httptools.HttpRequestParser(Collecting())
    downstream = RequestParser()
    upstream = ResponseParser()

    def request_cycle() -> bytes:
        downstream.feed(REQUEST)
        return encode_response_head(200, b"OK", RESPONSE_HEADERS) + BODY

    def proxy_cycle() -> bytes:
        request = downstream.feed(REQUEST)[0]
        assert isinstance(request, RequestReceived)
        encode_request_head(request.method, request.target, strip_hop_by_hop(request.headers))
        upstream.expect(request.method)
        response = upstream.feed(UPSTREAM_RESPONSE)[0]
        assert isinstance(response, ResponseReceived)
        headers = strip_hop_by_hop(response.headers)
        return encode_response_head(response.status, response.reason, headers) + BODY

    steps: dict[str, Callable[[], object]] = {
        "httptools_bare": lambda: bare.feed_data(REQUEST),
        "httptools_collecting": lambda: collecting.feed_data(REQUEST),
        "parse_request": lambda: downstream.feed(REQUEST),
        "encode_response": lambda: encode_response_head(200, b"OK", RESPONSE_HEADERS) + BODY,
        "request_cycle": request_cycle,
        "proxy_cycle": proxy_cycle,
    }
    results = {
        name: measure(step, options.iterations, options.rounds) for name, step in steps.items()
    }
    overhead = results["parse_request"] - results["httptools_bare"]
    for name, micros in results.items():
        print(f"{name:22} {micros:6.2f} us")
    print(f"{'parse overhead':22} {overhead:6.2f} us beyond httptools_bare")
    report = {
        "python": sys.version.split()[0],
        "httptools": httptools.__version__,
        "request_bytes": len(REQUEST),
        "iterations": options.iterations,
        "rounds": options.rounds,
        "us_per_call": {name: round(micros, 3) for name, micros in results.items()},
        "parse_overhead_us": round(overhead, 3),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
