"""The one storage contract the control plane is written against.

Two backends implement it: `sqlite` (embedded, one machine) and `etcd` (a real etcd v3
cluster). The semantics are etcd's, so that code written against one behaves the same on
the other:

- every successful write increments one global, monotonic `revision`;
- a key's `create_revision` and `mod_revision` are the revisions of its creation and
  last change; a deleted key is gone (no tombstones are visible through `get`/`range`);
- `watch(prefix, from_revision)` yields every event at revision >= `from_revision`, in
  revision order, exactly once, and raises `CompactedError` if that history was compacted;
- a transaction applies all its operations at one revision, or none of them;
- a lease with a TTL deletes the keys attached to it when it expires, unless kept alive.

Keys are `str` (stored as UTF-8), values are `bytes`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from mycelium.errors import MeshError


class StoreError(MeshError):
    """The store could not complete an operation."""


class StoreUnavailable(StoreError):
    """No backend endpoint answered; the operation may or may not have been applied."""


class CompareFailed(StoreError):
    """A compare-and-swap precondition did not hold; nothing was written."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(
            f"{key!r} changed underneath us: expected revision {expected}, found {actual}; "
            "read it again and retry"
        )
        self.key = key
        self.expected = expected
        self.actual = actual


class CompactedError(StoreError):
    """A watch asked for history the store no longer keeps."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(
            f"revision {requested} was compacted (the oldest revision kept is {compacted}); "
            "list the prefix again and watch from the revision that list returned"
        )
        self.requested = requested
        self.compacted = compacted


class LeaseNotFound(StoreError):
    """The lease expired or was revoked."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id} does not exist (expired or revoked); grant a new one")
        self.lease_id = lease_id


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0  # 0: not attached to a lease


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["put", "delete"]
    key: str
    value: bytes  # empty for a delete
    revision: int  # the revision that made this change
    create_revision: int = 0  # for a put: when the key was created; 0 for a delete
    lease: int = 0


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    revision: int  # the store revision the range was read at; watch from revision + 1


# --- transactions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    """Holds when `key`'s mod_revision equals `mod_revision` (0 means: key absent)."""

    key: str
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


type TxnOp = Put | Delete


def check_key(key: str) -> None:
    """Refuse the empty key, which etcd refuses too; every backend calls this first."""
    if not key:
        raise StoreError("a store key must not be empty; keys look like /mycelium/<kind>/...")


def check_txn(compares: Sequence[Compare], ops: Sequence[TxnOp]) -> None:
    """Refuse a transaction that writes one key twice, as etcd does, on every backend."""
    for compare in compares:
        check_key(compare.key)
    written: set[str] = set()
    for op in ops:
        check_key(op.key)
        if op.key in written:
            raise StoreError(
                f"a transaction writes {op.key!r} twice; merge those operations into one"
            )
        written.add(op.key)


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # the revision of the write when succeeded, else the current revision
    failed_compares: list[Compare] = field(default_factory=list)


# --- the protocol ---------------------------------------------------------------------


@runtime_checkable
class Store(Protocol):
    """An async key-value store with etcd's revision, watch and lease semantics."""

    name: str  # "sqlite" or "etcd": shown in status output and test ids

    async def get(self, key: str) -> KeyValue | None:
        """The current value of `key`, or None."""
        ...

    async def range(self, prefix: str) -> RangeResult:
        """Every live key starting with `prefix`, sorted by key, read at one revision."""
        ...

    async def put(
        self, key: str, value: bytes, *, expect_revision: int | None = None, lease: int = 0
    ) -> int:
        """Write `key`; return the new revision.

        With `expect_revision`, write only if the key's mod_revision equals it (0: only if
        absent), else raise `CompareFailed`. A non-zero `lease` that does not exist raises
        `LeaseNotFound`.
        """
        ...

    async def delete(self, key: str, *, expect_revision: int | None = None) -> int | None:
        """Delete `key`; return the revision of the delete, or None if it did not exist.

        With `expect_revision`, delete only if the key's mod_revision equals it, else raise
        `CompareFailed`.
        """
        ...

    async def txn(self, compares: Sequence[Compare], ops: Sequence[TxnOp]) -> TxnResult:
        """If every compare holds, apply all `ops` at one new revision; else apply none."""
        ...

    async def revision(self) -> int:
        """The current store revision."""
        ...

    def watch(self, prefix: str, from_revision: int | None = None) -> AsyncIterator[Event]:
        """Events under `prefix` from `from_revision` (inclusive; None: from now on).

        Never drops, duplicates or reorders events, also across backend reconnects and
        the loss of one etcd member. Raises `CompactedError` when `from_revision` is
        older than the kept history. Ends when the consumer stops iterating (aclose).
        """
        ...

    async def grant_lease(self, ttl: float) -> int:
        """A new lease id that expires `ttl` seconds from now unless kept alive."""
        ...

    async def keep_alive(self, lease_id: int) -> float:
        """Reset the lease's TTL; return the TTL granted. Raises `LeaseNotFound`."""
        ...

    async def revoke_lease(self, lease_id: int) -> None:
        """Expire the lease now, deleting its keys. Unknown leases are ignored."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget history older than `revision`; watches from before it raise CompactedError."""
        ...

    async def close(self) -> None:
        """Release connections and files; the object is unusable afterwards."""
        ...
