"""HTTP/2 (h2c, prior knowledge) and gRPC through the proxy: the asyncio shells around
the sans-IO core in `mycelium.proxy.protocols.http2`.

`downstream.py` serves a client's connection, one `Http2Exchange` (`stream.py`) per
stream: the router's HTTP/2 leg (an attempt is a stream on a pooled connection,
`upstream.http2_pool`). `mirror.py` sends a rule's copy of a stream.
"""
