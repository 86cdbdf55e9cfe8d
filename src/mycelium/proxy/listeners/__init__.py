"""The proxy's listeners: what is bound (`server`), and what becomes of each accepted
connection: TCP relay or HTTP (`tcp_routing`), HTTP/1 or HTTP/2 and mesh TLS detected
from the first bytes (`detecting`), a gateway's TLS ports (`gateway_connections`), an
opaque inbound port's mTLS (`opaque_inbound`). Each listener is bound with its role
(`router.roles`).
"""
