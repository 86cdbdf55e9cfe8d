"""The etcd backend: the `Store` contract over a real etcd v3 cluster, through aetcd.

One aetcd client per endpoint. A request goes to the preferred member; when that member
cannot be reached (gRPC UNAVAILABLE, a deadline, a refused connection) the request moves
on to the next one, cycling through the members until the operation's deadline, and
then raises `StoreUnavailable` naming every endpoint and what it answered.

What is retried on another member after a failure that may have reached the server:
- reads, lease grants and keep-alives, revokes and compactions: always. A retried grant
  may leave an unused lease behind, which expires by itself;
- unconditional puts and deletes, and transactions without compares: always. At worst
  the same write lands twice, at two revisions; last-writer-wins holds either way;
- guarded writes that defeat their own compare once applied (a put or delete with
  `expect_revision`, a txn that puts a compared key or deletes one it expects present):
  retried, because at most one of the attempts can pass the compare. If a retry then
  finds the compare failing, our own lost attempt may be what changed the key, so the
  caller gets `StoreUnavailable` ("may have been applied"), never a wrong `CompareFailed`;
- any other guarded txn: not retried once it may have been sent (`StoreUnavailable`).

A watch resumes on another member from the revision after the last one it delivered;
etcd sends all the events of one revision in one response, so none is lost or repeated.
aetcd's and gRPC's exceptions are translated into ours in this module and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aetcd
from aetcd import rpc
from aetcd.utils import prefix_range_end

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
    StoreError,
    StoreUnavailable,
    TxnOp,
    TxnResult,
    check_key,
    check_txn,
)

log = logging.getLogger(__name__)

# Long enough for one leader election on a real network (1-3 s with etcd's defaults)
# plus a retry; short enough that a controller notices a dead cluster quickly.
DEFAULT_TIMEOUT_S = 5.0

# After every member has failed once, pause before the next round so an election can
# finish instead of being hammered by a busy loop.
RETRY_PAUSE_S = 0.1

# Cancelling a watch sends a request on its stream; a dead stream must not hold aclose().
WATCH_CANCEL_TIMEOUT_S = 1.0

GRPC_OPTIONS: dict[str, int] = {
    # A range over a large prefix can exceed gRPC's 4 MiB default reply size.
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
    # Notice a member that vanished without closing its sockets (a host crash, a cable)
    # within ~15 s. etcd tolerates pings every 5 s or more by default.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}

# gRPC's wording when no connection could be made, so the request never left this host.
_NEVER_SENT = "failed to connect to all addresses"

type _Retry = Literal["always", "guarded", "once"]


@dataclass(slots=True)
class _Member:
    address: str
    client: Any  # aetcd.Client: aetcd ships no type information


@dataclass(frozen=True, slots=True)
class _TxnReply:
    succeeded: bool
    revision: int
    actual: list[int]  # when failed: each compared key's mod_revision, in compare order
    deleted: list[bool]  # when succeeded: per op, whether it deleted a key


def parse_endpoint(text: str) -> tuple[str, int]:
    """`host:port` (or `http://host:port`) -> (host, port); raises StoreError."""
    address = text.strip().removeprefix("http://").rstrip("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StoreError(f"bad etcd endpoint {text!r}: expected host:port, e.g. 127.0.0.1:2379")
    return host, int(port)


class EtcdStore:
    """The etcd `Store`: see the module docstring. Open with `await EtcdStore.open`."""

    name: str = "etcd"

    def __init__(self, members: list[_Member], timeout: float) -> None:
        self._members = members
        self._timeout = timeout
        self._preferred = 0  # index of the member requests go to first
        self._closed = False

    @classmethod
    async def open(cls, endpoints: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> EtcdStore:
        """Connect to the members at `endpoints` (host:port); fail unless one answers."""
        if not endpoints:
            raise StoreError("no etcd endpoint given; pass host:port[,host:port...]")
        if not timeout > 0:
            raise StoreError(f"the etcd timeout must be positive, got {timeout}")
        members = []
        for endpoint in endpoints:
            host, port = parse_endpoint(endpoint)
            client = aetcd.Client(host=host, port=port, timeout=timeout, options=GRPC_OPTIONS)
            members.append(_Member(f"{host}:{port}", client))
        store = cls(members, timeout)
        try:
            await store.revision()
        except BaseException:
            await store.close()
            raise
        return store

    @property
    def endpoints(self) -> list[str]:
        return [member.address for member in self._members]

    # --- the Store protocol --------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        check_key(key)
        found = await self._request(f"get {key!r}", lambda client: client.get(key.encode()))
        return None if found is None else _key_value(found)

    async def range(self, prefix: str) -> RangeResult:
        start, end = _key_range(prefix)
        reply = await self._request(
            f"range {prefix!r}",
            lambda client: client.get_range(start, end, sort_order="ascend", sort_target="key"),
        )
        return RangeResult(
            kvs=[_key_value(kv) for kv in reply], revision=int(reply.header.revision)
        )

    async def put(
        self, key: str, value: bytes, *, expect_revision: int | None = None, lease: int = 0
    ) -> int:
        check_key(key)
        if expect_revision is not None:
            reply = await self._txn(
                f"put {key!r}", [Compare(key, expect_revision)], [Put(key, value, lease)]
            )
            if not reply.succeeded:
                raise CompareFailed(key, expect_revision, reply.actual[0])
            return reply.revision

        async def put(client: Any) -> Any:
            try:
                return await client.put(key.encode(), value, lease=lease or None)
            except aetcd.ClientError as exc:
                if _lease_missing(exc):
                    raise LeaseNotFound(lease) from None
                raise

        written = await self._request(f"put {key!r}", put)
        return int(written.header.revision)

    async def delete(self, key: str, *, expect_revision: int | None = None) -> int | None:
        check_key(key)
        if expect_revision is not None:
            reply = await self._txn(
                f"delete {key!r}", [Compare(key, expect_revision)], [Delete(key)]
            )
            if not reply.succeeded:
                raise CompareFailed(key, expect_revision, reply.actual[0])
            return reply.revision if reply.deleted[0] else None
        deleted = await self._request(f"delete {key!r}", lambda client: client.delete(key.encode()))
        return None if deleted is None else int(deleted.header.revision)

    async def txn(self, compares: Sequence[Compare], ops: Sequence[TxnOp]) -> TxnResult:
        check_txn(compares, ops)
        reply = await self._txn("txn", list(compares), list(ops))
        failed = (
            []
            if reply.succeeded
            else [
                compare
                for compare, actual in zip(compares, reply.actual, strict=True)
                if actual != compare.mod_revision
            ]
        )
        return TxnResult(succeeded=reply.succeeded, revision=reply.revision, failed_compares=failed)

    async def revision(self) -> int:
        async def read_revision(client: Any) -> int:
            await client.connect()
            # Any linearizable read carries the store revision in its header.
            reply = await client.kvstub.Range(
                rpc.RangeRequest(key=b"\0", limit=1, keys_only=True),
                timeout=self._timeout,
                metadata=client.metadata,
            )
            return int(reply.header.revision)

        return await self._request("revision", read_revision)

    async def watch(self, prefix: str, from_revision: int | None = None) -> AsyncIterator[Event]:
        """See `Store.watch`; survives the loss of members as the module docstring says."""
        self._check_open()
        start, end = _key_range(prefix)
        if from_revision is None:
            next_revision = await self.revision() + 1
        else:
            next_revision = max(from_revision, 1)  # etcd reads start_revision 0 as "now"
        failures = _Failures(self._timeout, self.endpoints)
        while True:
            index = self._preferred
            member = self._members[index]
            floor = next_revision
            stream: Any = None
            try:
                stream = await member.client.watch(start, range_end=end, start_revision=floor)
                failures.clear()
                async for raw in stream:
                    event = _event(raw)
                    if event.revision < floor:
                        continue  # etcd never sends these; a resumed stream must not either
                    yield event
                    next_revision = event.revision + 1
            except aetcd.RevisionCompactedError as exc:
                raise CompactedError(next_revision, int(exc.compacted_revision)) from None
            except Exception as exc:
                if not _unreachable(exc):
                    raise StoreError(
                        f"etcd watch {prefix!r} failed on {member.address}: {_details(exc)}"
                    ) from exc
                self._skip(index)
                await failures.record(f"watch {prefix!r}", member.address, exc)
                continue
            finally:
                if stream is not None:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(WATCH_CANCEL_TIMEOUT_S):
                            await stream.cancel()
            # aetcd ends a stream without an error only when its client closes.
            self._check_open()

    async def grant_lease(self, ttl: float) -> int:
        if not ttl > 0:
            raise StoreError(f"a lease TTL must be positive, got {ttl}")
        seconds = max(1, math.ceil(ttl))  # etcd counts whole seconds
        lease = await self._request("lease grant", lambda client: client.lease(seconds))
        return int(lease.id)

    async def keep_alive(self, lease_id: int) -> float:
        reply = await self._request(
            f"keep-alive of lease {lease_id}", lambda client: client.refresh_lease(lease_id)
        )
        if reply is None or reply.TTL <= 0:  # etcd answers TTL 0 for an unknown lease
            raise LeaseNotFound(lease_id)
        return float(reply.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        async def revoke(client: Any) -> None:
            try:
                await client.revoke_lease(lease_id)
            except aetcd.ClientError as exc:
                if not _lease_missing(exc):
                    raise

        await self._request(f"revoke of lease {lease_id}", revoke)

    async def compact(self, revision: int) -> None:
        if revision <= 0:
            return

        async def compact(client: Any) -> None:
            try:
                await client.compact(revision)
            except aetcd.ClientError as exc:
                if _status(exc) != rpc.StatusCode.OUT_OF_RANGE:
                    raise
                if "future" in _details(exc):
                    raise StoreError(
                        f"cannot compact to revision {revision}: the store has not reached it"
                    ) from None
                # "has been compacted": history before it is gone already, as asked.

        await self._request(f"compaction to {revision}", compact)

    async def close(self) -> None:
        self._closed = True
        for member in self._members:
            with contextlib.suppress(Exception):
                await member.client.close()

    # --- transactions --------------------------------------------------------------

    async def _txn(self, what: str, compares: list[Compare], ops: list[TxnOp]) -> _TxnReply:
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=compare.key.encode(),
                    result=rpc.Compare.EQUAL,
                    target=rpc.Compare.MOD,
                    mod_revision=compare.mod_revision,
                )
                for compare in compares
            ],
            success=[_request_op(op) for op in ops],
            # On failure, read the compared keys at the same revision to say what they were.
            failure=[
                rpc.RequestOp(request_range=rpc.RangeRequest(key=c.key.encode(), keys_only=True))
                for c in compares
            ],
        )

        async def transact(client: Any) -> _TxnReply:
            await client.connect()
            try:
                reply = await client.kvstub.Txn(
                    request, timeout=self._timeout, metadata=client.metadata
                )
            except rpc.AioRpcError as exc:
                if _lease_missing(exc):
                    leases = [op.lease for op in ops if isinstance(op, Put) and op.lease]
                    raise LeaseNotFound(await _missing_lease(client, leases)) from None
                if "too many operations in txn" in (exc.details() or ""):
                    raise StoreError(
                        f"a transaction of {max(len(compares), len(ops))} operations is more "
                        "than this etcd accepts (its --max-txn-ops, 128 by default): apply "
                        "fewer resources at once, or run etcd with a larger --max-txn-ops"
                    ) from None
                raise
            if reply.succeeded:
                deleted = [
                    isinstance(op, Delete) and bool(response.response_delete_range.deleted)
                    for op, response in zip(ops, reply.responses, strict=True)
                ]
                return _TxnReply(True, int(reply.header.revision), [], deleted)
            actual = [
                int(response.response_range.kvs[0].mod_revision)
                if response.response_range.kvs
                else 0
                for response in reply.responses
            ]
            return _TxnReply(False, int(reply.header.revision), actual, [])

        return await self._request(
            what,
            transact,
            retry=_retry_policy(compares, ops),
            compare_failed=lambda reply: not reply.succeeded,
        )

    # --- requests and failover -----------------------------------------------------

    async def _request[T](
        self,
        what: str,
        call: Callable[[Any], Awaitable[T]],
        *,
        retry: _Retry = "always",
        compare_failed: Callable[[T], bool] | None = None,
    ) -> T:
        """Run `call(client)` on the preferred member, failing over as the docstring says."""
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        # Each attempt gets a share of the budget, so that one hung member leaves time to
        # try the others.
        attempt_budget = self._timeout / len(self._members)
        failures = _Failures(self._timeout, self.endpoints, deadline)
        maybe_applied = False
        while True:
            index = self._preferred
            member = self._members[index]
            try:
                async with asyncio.timeout(min(attempt_budget, deadline - loop.time())):
                    result = await call(member.client)
            except StoreError:
                raise
            except Exception as exc:
                if not _unreachable(exc):
                    raise StoreError(
                        f"etcd {what} failed on {member.address}: {_details(exc)}"
                    ) from exc
                sent = _NEVER_SENT not in _details(exc).lower()
                if sent and retry == "once":
                    raise StoreUnavailable(
                        f"etcd {what}: lost {member.address} during the request "
                        f"({_details(exc)}); it may or may not have been applied: read the "
                        "keys it writes to find out"
                    ) from exc
                maybe_applied = maybe_applied or sent
                self._skip(index)
                await failures.record(what, member.address, exc)
                continue
            if maybe_applied and compare_failed is not None and compare_failed(result):
                raise StoreUnavailable(
                    f"etcd {what}: the compare failed after an earlier attempt was cut off; "
                    "that attempt may be what changed the key: read it to find out"
                )
            return result

    def _skip(self, index: int) -> None:
        """Move the preference past a member that failed (unless another did already)."""
        if self._preferred == index:
            self._preferred = (index + 1) % len(self._members)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the etcd store is closed")


class _Failures:
    """The failed attempts of one operation: paces retries, and says when to give up."""

    def __init__(self, timeout: float, endpoints: list[str], deadline: float | None = None) -> None:
        self._timeout = timeout
        self._endpoints = endpoints
        self._deadline = deadline  # None: the deadline starts at the first failure
        self._by_address: dict[str, str] = {}
        self._attempts = 0

    def clear(self) -> None:
        self._by_address.clear()
        self._attempts = 0
        self._deadline = None

    async def record(self, what: str, address: str, exc: BaseException) -> None:
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self._timeout
        if address not in self._by_address:  # once per member, not once per retry
            log.warning(
                "etcd %s: %s did not answer (%s); trying the other members",
                what,
                address,
                _details(exc),
            )
        self._by_address[address] = _details(exc)
        self._attempts += 1
        remaining = self._deadline - loop.time()
        if remaining <= 0:
            tried = "; ".join(f"{a}: {reason}" for a, reason in self._by_address.items())
            raise StoreUnavailable(
                f"etcd {what}: no member answered within {self._timeout:g} s "
                f"(endpoints {', '.join(self._endpoints)}; {tried}); check that etcd "
                "is running and reachable from here"
            ) from exc
        if self._attempts % len(self._endpoints) == 0:
            await asyncio.sleep(min(RETRY_PAUSE_S, remaining))


def _retry_policy(compares: Sequence[Compare], ops: Sequence[TxnOp]) -> _Retry:
    if not compares:
        return "always"
    expected = {compare.key: compare.mod_revision for compare in compares}
    for op in ops:
        if op.key in expected and (isinstance(op, Put) or expected[op.key] != 0):
            return "guarded"
    return "once"


async def _missing_lease(client: Any, leases: list[int]) -> int:
    """Which of `leases` etcd does not know (its error does not say), else the first."""
    for lease in leases[:-1]:
        with contextlib.suppress(aetcd.ClientError):
            info = await client.get_lease_info(lease, keys=False)
            if info.TTL < 0:  # etcd's answer for an unknown lease
                return lease
    return leases[-1] if leases else 0


def _request_op(op: TxnOp) -> Any:
    if isinstance(op, Put):
        return rpc.RequestOp(
            request_put=rpc.PutRequest(key=op.key.encode(), value=op.value, lease=op.lease)
        )
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=op.key.encode()))


def _key_range(prefix: str) -> tuple[bytes, bytes]:
    """etcd's [key, range_end) for every key starting with `prefix`."""
    if not prefix:
        return b"\0", b"\0"  # etcd's spelling of "every key"
    start = prefix.encode()
    end = prefix_range_end(start)
    return start, (b"\0" if end == start else end)


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(
        key=bytes(kv.key).decode(),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        lease=int(kv.lease),
    )


def _event(raw: Any) -> Event:
    kv = raw.kv
    if raw.kind == "PUT":
        return Event(
            type="put",
            key=bytes(kv.key).decode(),
            value=bytes(kv.value),
            revision=int(kv.mod_revision),
            create_revision=int(kv.create_revision),
            lease=int(kv.lease),
        )
    return Event(
        type="delete", key=bytes(kv.key).decode(), value=b"", revision=int(kv.mod_revision)
    )


def _status(exc: BaseException) -> Any:
    """The gRPC status code behind an aetcd or gRPC exception, or None."""
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, rpc.AioRpcError):
            return candidate.code()
    return None


def _details(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer within this attempt's share of the timeout"
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, rpc.AioRpcError):
            return str(candidate.details())
    return str(exc) or type(exc).__name__


def _unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the member could not serve us (try another), not a refusal."""
    if isinstance(
        exc,
        TimeoutError
        | aetcd.ConnectionFailedError
        | aetcd.ConnectionTimeoutError
        | aetcd.WatchTimeoutError,
    ):
        return True
    return _status(exc) in (rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED)


def _lease_missing(exc: BaseException) -> bool:
    return _status(exc) == rpc.StatusCode.NOT_FOUND and "lease" in _details(exc)
