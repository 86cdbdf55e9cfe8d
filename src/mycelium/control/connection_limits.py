"""How many connections the controller holds for one kind of client, in all and per
client address.

A connection costs memory (kernel and TLS buffers, what it sent so far) before the
controller knows who is on the other end, so the number of such connections must be
bounded or a flood of them exhausts the host. The cap per address keeps one flooding
address from taking every place: the rest of the mesh can still connect while it
floods. Sans-IO: the server asks before it reads anything and says when the connection
is done (or authenticated, when only unauthenticated ones are limited).
"""

from __future__ import annotations

from typing import Literal

type ConnectionRefusal = Literal["too_many_connections", "too_many_from_address"]


class ConnectionLimits:
    """At most `total` connections at once, at most `per_address` of them from one
    client address."""

    def __init__(self, total: int, per_address: int) -> None:
        if not 0 < per_address <= total:
            raise ValueError(f"need 0 < per_address ({per_address}) <= total ({total})")
        self.total = total
        self.per_address = per_address
        self._by_address: dict[str, int] = {}
        self.open = 0

    def try_open(self, address: str) -> ConnectionRefusal | None:
        """Take a place for a connection from `address`; the reason when there is none."""
        if self.open >= self.total:
            return "too_many_connections"
        held = self._by_address.get(address, 0)
        if held >= self.per_address:
            return "too_many_from_address"
        self._by_address[address] = held + 1
        self.open += 1
        return None

    def close(self, address: str) -> None:
        """Give back the place a connection from `address` took."""
        held = self._by_address.get(address, 0)
        if held <= 0:
            raise ValueError(f"no connection from {address} is open")
        if held == 1:
            del self._by_address[address]  # the table holds live addresses only
        else:
            self._by_address[address] = held - 1
        self.open -= 1

    def held_by(self, address: str) -> int:
        return self._by_address.get(address, 0)
