"""The router: what happens to a request between its head arriving and its response
head going back, written once for every protocol.

A listener's role (`roles`) finds the request's destination, or admits it to the local
app; the route's rule runs its filters and picks a backend; `forward` attempts, times
out and retries under the rule's policy, the cluster's breaker and retry budget, and
reports each attempt to outlier detection (`attempts`). HTTP/1.1 (`proxy.http1`) and
HTTP/2 (`proxy.http2`) each supply only how an attempt is sent upstream and how the
answer goes downstream (`UpstreamLeg`).
"""
