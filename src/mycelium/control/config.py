"""The controller's settings, parsed once and validated, and where it keeps its files.

`<home>` (default `~/.mycelium`, env `MYC_HOME`) holds:
- `admin-token`      the REST API's bearer token, generated at first start, mode 0600;
- `store.db`         the embedded store, when no etcd URL is given;
- `ca/`              the root CA and the controller's serving certificate.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from mycelium import ports
from mycelium.control import api_limits


def default_home() -> Path:
    return Path(os.environ.get("MYC_HOME") or Path.home() / ".mycelium")


@dataclass(frozen=True, slots=True)
class DiscoveryLimits:
    """What the discovery port lets clients cost it (docs/discovery.md, "Limits").

    Before a stream is authenticated a peer is nobody: it gets `hello_seconds` for its
    TLS handshake and hello together, and at most `unauthenticated` such connections are
    held at once, `unauthenticated_per_address` from one address. Each may hold some
    0.7 MB of TLS and read buffers while it floods (measured: bench/controller_flood.py),
    so 64 bound a flood's cost to some 45 MB however many connections it opens; a
    legitimate proxy takes its place for a few ms, so 64 at once admit hundreds of
    reconnecting proxies a second, and those refused retry after their backoff. After
    it, a proxy may send `messages_per_second` on average (`message_burst` at once)
    before its stream is read more slowly; it heart-beats every 5 s and reports every
    5 s, so a proxy at the limit is broken or hostile. Pushes it leaves unread beyond
    the one in flight and `unread_bytes` more cut the stream: the controller does not
    buffer for a proxy that does not read."""

    hello_seconds: float = 10.0
    unauthenticated: int = 64
    unauthenticated_per_address: int = 8
    messages_per_second: float = 100.0
    message_burst: int = 1000
    unread_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """The REST port's defences against clients that hold it without asking anything
    (control/api_limits.py says why each default): connections in all and per client
    address, seconds for a request head, for a body once the token passed, and for an
    idle kept-alive connection."""

    connections: int = api_limits.MAX_API_CONNECTIONS
    connections_per_address: int = api_limits.MAX_API_CONNECTIONS_PER_ADDRESS
    request_head_seconds: float = api_limits.REQUEST_HEAD_SECONDS
    body_seconds: float = api_limits.BODY_SECONDS
    keepalive_seconds: float = api_limits.KEEPALIVE_SECONDS


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    home: Path
    store_url: str | None = None  # None: the embedded SQLite store under `home`
    api_host: str = "127.0.0.1"
    api_port: int = ports.API
    discovery_host: str = "127.0.0.1"
    discovery_port: int = ports.DISCOVERY
    trust_domain: str = "cluster.local"
    svid_ttl_seconds: float = 24 * 3600  # workload certificates' life (DESIGN.md: 24 h)
    # After the signer changes, proxies renew at a random moment within this window.
    rotation_spread_seconds: float = 60.0
    # Let proxies without a join token or SVID open a discovery stream (a plaintext
    # mesh). Off: every stream must prove the identity it claims.
    allow_anonymous_proxies: bool = False
    discovery_limits: DiscoveryLimits = DiscoveryLimits()
    api_limits: ApiLimits = ApiLimits()
    heartbeat_seconds: float = 5.0  # proxies heart-beat this often...
    lease_ttl_seconds: float = 15.0  # ...and vanish from the registry this long after the last

    @property
    def effective_store_url(self) -> str:
        return self.store_url or f"sqlite:///{(self.home / 'store.db').resolve()}"

    @property
    def token_path(self) -> Path:
        return self.home / "admin-token"

    @property
    def ca_dir(self) -> Path:
        return self.home / "ca"


def ensure_admin_token(path: Path) -> str:
    """Read the admin token, creating it (0600, 256 random bits) on first start."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token
