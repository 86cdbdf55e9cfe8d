"""`myc check`'s judgement of the controller's facts: every problem fails."""

from __future__ import annotations

from typing import Any

from mycelium.cli.checks import Thresholds, evaluate

NOW = 1_800_000_000.0
DAY = 86400.0


def facts(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "time": NOW,
        "caExpiresAt": NOW + 3000 * DAY,
        "svids": [
            {
                "proxy": "reviews-0",
                "identity": "spiffe://cluster.local/ns/default/sa/reviews",
                "issuedAt": NOW - 3600,
                "expiresAt": NOW + 23 * 3600,
            }
        ],
        "proxies": [
            {"id": "reviews-0", "state": "synced", "lastNack": None, "pendingSeconds": None}
        ],
    }
    base.update(overrides)
    return base


def failures(found: dict[str, Any], received_at: float = NOW, rtt: float = 0.0) -> dict[str, str]:
    return {f.name: f.detail for f in evaluate(found, received_at, rtt, Thresholds()) if not f.ok}


def test_a_healthy_mesh_passes_every_check() -> None:
    assert failures(facts()) == {}


def test_a_skewed_clock_fails() -> None:
    assert "clock skew" in failures(facts(), received_at=NOW + 60)
    # half the round trip is not skew
    assert failures(facts(), received_at=NOW + 4, rtt=8) == {}


def test_a_ca_close_to_expiry_fails_even_though_it_still_works() -> None:
    found = failures(facts(caExpiresAt=NOW + 10 * DAY))
    assert found["CA signer"] == "expires in 10.0d"


def test_an_intermediate_close_to_expiry_fails_though_its_root_is_fine() -> None:
    chain = [
        {"role": "root", "subject": "CN=corp root", "expiresAt": NOW + 3000 * DAY},
        {"role": "intermediate", "subject": "CN=corp mesh", "expiresAt": NOW + 5 * DAY},
        {"role": "signer", "subject": "CN=mesh issuing", "expiresAt": NOW + 300 * DAY},
    ]
    found = failures(facts(caCertificates=chain))
    assert found == {"CA intermediate CN=corp mesh": "expires in 5.0d"}


def test_a_workload_certificate_that_missed_its_renewal_fails() -> None:
    stale = {
        "proxy": "ratings-0",
        "identity": "spiffe://cluster.local/ns/default/sa/ratings",
        "issuedAt": NOW - 20 * 3600,
        "expiresAt": NOW + 4 * 3600,  # a sixth of its life left: renewal at half failed
    }
    expired = {**stale, "proxy": "db-0", "expiresAt": NOW - 60}
    found = failures(facts(svids=[stale, expired]))
    assert "ratings-0 expires in 4.0h, not renewed" in found["workload certificates"]
    assert "db-0" in found["workload certificates"]
    assert "EXPIRED" in found["workload certificates"]


def test_nacking_or_silent_proxies_fail() -> None:
    proxies = [
        {"id": "a", "state": "nack", "lastNack": "route/x: bad regex", "pendingSeconds": None},
        {"id": "b", "state": "pending", "lastNack": None, "pendingSeconds": 120.0},
        {"id": "c", "state": "pending", "lastNack": None, "pendingSeconds": 0.2},
    ]
    detail = failures(facts(proxies=proxies))["proxies in sync"]
    assert "a NACKs: route/x: bad regex" in detail
    assert "b has not acknowledged for 2.0m" in detail
    assert "c " not in detail  # a push in flight for a moment is normal
