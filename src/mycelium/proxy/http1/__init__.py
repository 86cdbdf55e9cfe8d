"""HTTP/1.1 through the proxy: the asyncio shells around the sans-IO core in
`mycelium.proxy.protocols.http1`.

`downstream.py` serves a client's connection, one `Exchange` (`exchange.py`) per
request: the router's HTTP/1.1 leg, with its synchronous fast path (an attempt goes
on a pooled keep-alive connection, `upstream.http1_pool`). `body.py` holds request
bodies (replayable while small); `mirror.py` sends a rule's copy of a request.
"""
