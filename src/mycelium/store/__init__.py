"""The control plane's store: one contract (`Store`), two backends, one way to open them.

`open_store(url)` picks the backend from a URL:

- `sqlite:///abs/path/store.db` or `sqlite:relative/path.db`: the embedded store;
- `etcd://host:port[,host:port...]`: a real etcd cluster, one endpoint per member.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mycelium.store.base import (
    CompactedError,
    Compare,
    CompareFailed,
    Delete,
    Event,
    KeyValue,
    LeaseNotFound,
    Put,
    RangeResult,
    Store,
    StoreError,
    StoreUnavailable,
    TxnOp,
    TxnResult,
)
from mycelium.store.sqlite import SqliteStore
from mycelium.store.timed import StoreObserver, TimedStore

if TYPE_CHECKING:
    from mycelium.store.etcd import EtcdStore

__all__ = [
    "CompactedError",
    "Compare",
    "CompareFailed",
    "Delete",
    "EtcdStore",
    "Event",
    "KeyValue",
    "LeaseNotFound",
    "Put",
    "RangeResult",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreObserver",
    "StoreUnavailable",
    "TimedStore",
    "TxnOp",
    "TxnResult",
    "open_store",
]

ACCEPTED_URLS = (
    "sqlite:///absolute/path/store.db, sqlite:relative/path/store.db, "
    "etcd://host:port[,host:port...]"
)


def __getattr__(name: str) -> Any:
    # The etcd backend pulls in gRPC (~75 ms); load it only for those who use it.
    if name == "EtcdStore":
        from mycelium.store.etcd import EtcdStore  # noqa: PLC0415

        return EtcdStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def open_store(url: str) -> Store:
    """Open the store that `url` names; a URL of no accepted form raises StoreError."""
    if url.startswith("sqlite:"):
        rest = url.removeprefix("sqlite:")
        if rest.startswith("///"):
            path = rest.removeprefix("//")  # keeps the leading "/" of the absolute path
        elif rest.startswith("/"):
            path = ""  # sqlite:/x and sqlite://host/x are ambiguous: refuse them
        else:
            path = rest
        if path and not path.endswith("/"):
            return await SqliteStore.open(path)
    elif url.startswith("etcd://"):
        from mycelium.store.etcd import EtcdStore, parse_endpoint  # noqa: PLC0415  (see above)

        endpoints = url.removeprefix("etcd://").rstrip("/").split(",")
        try:
            for endpoint in endpoints:
                parse_endpoint(endpoint)
        except StoreError as exc:
            raise StoreError(f"bad store URL {url!r}: {exc}; accepted: {ACCEPTED_URLS}") from None
        return await EtcdStore.open(endpoints)
    raise StoreError(f"bad store URL {url!r}; accepted forms: {ACCEPTED_URLS}")
