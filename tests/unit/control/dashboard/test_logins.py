"""Login codes and dashboard sessions, with the clock passed in."""

from __future__ import annotations

from mycelium.control.dashboard.logins import (
    CODE_SECONDS,
    MAX_CODES,
    MAX_SESSIONS,
    SESSION_SECONDS,
    DashboardLogins,
)


def test_a_code_opens_one_session_once() -> None:
    logins = DashboardLogins()
    code = logins.mint_code(now=0.0)
    session = logins.redeem(code, now=1.0)
    assert session is not None
    assert logins.admits(session, now=2.0)
    assert logins.redeem(code, now=3.0) is None  # spent


def test_codes_and_sessions_expire() -> None:
    logins = DashboardLogins()
    late = logins.mint_code(now=0.0)
    assert logins.redeem(late, now=CODE_SECONDS) is None
    session = logins.redeem(logins.mint_code(now=0.0), now=1.0)
    assert logins.admits(session, now=SESSION_SECONDS)
    assert not logins.admits(session, now=1.0 + SESSION_SECONDS)


def test_unknown_or_missing_secrets_open_nothing() -> None:
    logins = DashboardLogins()
    logins.redeem(logins.mint_code(now=0.0), now=0.0)
    assert logins.redeem("", now=0.0) is None
    assert logins.redeem("guess", now=0.0) is None
    assert not logins.admits(None, now=0.0)
    assert not logins.admits("guess", now=0.0)


def test_what_is_kept_is_bounded_oldest_first() -> None:
    logins = DashboardLogins()
    first = logins.mint_code(now=0.0)
    for _ in range(MAX_CODES):
        logins.mint_code(now=0.0)
    assert logins.redeem(first, now=0.0) is None  # pushed out by newer codes
    sessions = [logins.redeem(logins.mint_code(now=0.0), now=0.0) for _ in range(MAX_SESSIONS + 1)]
    assert not logins.admits(sessions[0], now=0.0)
    assert logins.admits(sessions[-1], now=0.0)
