"""What the REST port (15014) lets a client hold before it has proved anything, and
when one connection's request head is due.

Before the admin token is checked, a client can cost the controller a connection, a
request head and (were it read) a body. Each is bounded here: the number of
connections (in all and per client address, `ConnectionLimits`), the time a head may
take to arrive (`HeadDeadline`), the size of a head (aiohttp's parser limits), the
time and size of a body. The REST port's guard (`api_guard`) applies them; this
module holds the numbers and the one decision that has a state, sans-IO: the caller
passes the time and arms its own timer.
"""

from __future__ import annotations

from typing import Literal

# Connections on the REST port, in all and from one client address. Its clients are
# people and their scripts: the CLI opens one connection per command, the dashboard a
# few (a page, its polls, a tap), a script's HTTP pool up to ten; a handful each, so 64
# from one address leaves a busy operator's host plenty. 512 in all bounds what idle
# connections can cost (each may buffer up to a head, see MAX_HEADERS below) far
# below a controller's memory, and still serves dozens of operators at once.
MAX_API_CONNECTIONS = 512
MAX_API_CONNECTIONS_PER_ADDRESS = 64

# Seconds for a whole request head to arrive, from the connection opening or from the
# first byte of a later request on a kept-alive connection. Our clients send a head in
# one write; 10 s covers a congested link many times over while a slowloris client
# (one header byte at a time) holds its place for seconds, not for ever.
REQUEST_HEAD_SECONDS = 10.0
# Seconds an idle kept-alive connection stays open between requests. The dashboard
# polls every few seconds and the CLI's commands come in bursts; 75 s (nginx's
# default) lets both reuse a connection, and an idle one gives its place back.
KEEPALIVE_SECONDS = 75.0
# Seconds for a whole request body to arrive, once the token was accepted. The largest
# body (an apply, at most MAX_BODY_BYTES) takes well under a second on any link a
# person works over; a body slower than this is not a client we want to wait for.
BODY_SECONDS = 30.0
# After refusing a request whose body is still coming (401, 408, 413), the server
# reads and drops what arrives for up to this long before closing: closing with
# unread data resets the connection, and the client could lose the answer it is owed.
# Short, because the refused client holds one of the places meanwhile.
LINGER_SECONDS = 5.0

# The request line: a path with its query. Our longest are a tap's (a target, a path
# prefix, a few filters): a few hundred bytes. 8 KiB is what nginx admits too, so a
# client that works through a reverse proxy works directly.
MAX_REQUEST_LINE_BYTES = 8 * 1024
# One header, name and value. Ours are short (a bearer token is 43 characters), but a
# browser on the dashboard sends every cookie any app on this host set for it, and one
# cookie may be 4 KiB.
MAX_HEADER_FIELD_BYTES = 8 * 1024
# Headers in one request. The CLI sends six, a browser about twenty. With the field
# limit this bounds a head at about 264 KiB, so the connection cap bounds what heads
# in flight can hold: 512 x 264 KiB, about 132 MiB, at the very worst.
MAX_HEADERS = 32

type Phase = Literal["awaiting_head", "serving", "idle", "closing"]


class HeadDeadline:
    """When one connection's next request head is due.

    The clock runs only while a head is awaited: from the connection opening, and on a
    kept-alive connection from the first byte after a response. It stops when a head
    has arrived: a response may stream for hours (a watch, a tap). Between requests the
    connection is idle and the keep-alive timeout is what closes it; after a response
    that ends the connection ("closing") nothing more is awaited.
    """

    def __init__(self, seconds: float, opened_at: float) -> None:
        if seconds <= 0:
            raise ValueError(f"a head deadline must be positive, not {seconds} s")
        self.seconds = seconds
        self.phase: Phase = "awaiting_head"
        self.due: float | None = opened_at + seconds

    def data_received(self, now: float) -> bool:
        """Bytes arrived. True when they start a head's clock (the caller arms a timer
        for `due`): the first bytes on an idle connection."""
        if self.phase != "idle":
            return False
        self.phase = "awaiting_head"
        self.due = now + self.seconds
        return True

    def head_received(self) -> None:
        """A whole head arrived; the request is being served, without a deadline."""
        self.phase = "serving"
        self.due = None

    def response_ended(self, *, keep_alive: bool) -> None:
        """The response to the head is done: the connection waits for the next
        request, or (not kept alive) closes without reading one."""
        self.phase = "idle" if keep_alive else "closing"
        self.due = None

    def overdue(self, now: float) -> bool:
        return self.due is not None and now >= self.due
