"""HTTP/2 (h2c, prior knowledge) and gRPC through the proxy: the asyncio shells around
the sans-IO core in `mycelium.proxy.protocols.http2`.

`detecting.py` hands a listener's connection to HTTP/1 or HTTP/2 from its first bytes;
`downstream.py` serves a client's connection, one `Http2Exchange` (`stream.py`) per
stream; `upstream.py` keeps one multiplexed connection per endpoint. `channel.py` is
what both sides share: writes, and sending under flow control.
"""
