"""Who may read the dashboard's API: one-time login links, and the sessions they open.

The dashboard shows every resource's YAML, the traffic graph and live taps: as much
as the REST API, which needs the admin token. The page must not hold that token (a
browser keeps what a page holds), so `myc dashboard`, which has the token, asks the
controller for a login code, and the browser opens `/dashboard/login?code=...` once:
the code is spent, and a session cookie (HttpOnly, SameSite=Strict, the dashboard's
path only) opens the API for SESSION_SECONDS. Sans-IO: the clock is passed in.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict

CODE_SECONDS = 120.0  # a login link works once, within two minutes
SESSION_SECONDS = 12 * 3600.0  # a working day
MAX_CODES = 16  # unspent codes kept; the oldest goes first
MAX_SESSIONS = 64  # open sessions kept; the oldest goes first
COOKIE = "myc_dashboard"


class DashboardLogins:
    def __init__(self) -> None:
        # secret -> when it stops working (time.monotonic()), oldest first
        self._codes: OrderedDict[str, float] = OrderedDict()
        self._sessions: OrderedDict[str, float] = OrderedDict()

    def mint_code(self, now: float) -> str:
        """A new one-time login code (for `myc dashboard`'s link)."""
        code = secrets.token_urlsafe(32)
        self._codes[code] = now + CODE_SECONDS
        while len(self._codes) > MAX_CODES:
            self._codes.popitem(last=False)
        return code

    def redeem(self, code: str, now: float) -> str | None:
        """Spend `code`: the new session's secret, or None if the code is unknown,
        spent or expired."""
        expires = self._codes.pop(code, None) if code else None
        if expires is None or now >= expires:
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[session] = now + SESSION_SECONDS
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def admits(self, session: str | None, now: float) -> bool:
        """Whether `session` (a cookie's value) is open."""
        if not session:
            return False
        for known, expires in list(self._sessions.items()):
            if now >= expires:
                del self._sessions[known]
            elif hmac.compare_digest(known, session):
                return True
        return False
