"""What `myc check` concludes from the controller's facts, without I/O.

Each check is a `Finding` that passes or fails; any failure makes the command exit
non-zero. Nothing is only a warning: a check that merely warned is how an expiring
certificate becomes an outage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A workload certificate with less than this share of its life left has missed its
# renewal at half-life by a wide margin.
RENEWAL_MISSED_WHEN_LEFT = 0.25


@dataclass(frozen=True, slots=True)
class Thresholds:
    ca_warning_seconds: float = 30 * 86400
    max_skew_seconds: float = 5.0
    stale_after_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    ok: bool
    detail: str


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.2f}s"


def evaluate(
    facts: dict[str, Any], received_at: float, round_trip: float, thresholds: Thresholds
) -> list[Finding]:
    """Judge `facts` (GET /api/v1/check), received at local time `received_at` after a
    request that took `round_trip` seconds."""
    findings: list[Finding] = []
    server_time = float(facts["time"])
    # The controller stamped its time about half a round trip before we got it.
    skew = server_time - (received_at - round_trip / 2)
    findings.append(
        Finding(
            "clock skew",
            abs(skew) <= thresholds.max_skew_seconds,
            f"{'ahead' if skew > 0 else 'behind'} by {_duration(skew)} "
            f"(at most {_duration(thresholds.max_skew_seconds)})",
        )
    )
    # Every certificate the mesh's trust rests on: the roots, the intermediates and the
    # signer (older controllers report only the signer's expiry).
    ca_certificates = facts.get("caCertificates") or [
        {"role": "signer", "subject": "", "expiresAt": facts["caExpiresAt"]}
    ]
    for certificate in ca_certificates:
        left = float(certificate["expiresAt"]) - server_time
        subject = certificate.get("subject") or ""
        findings.append(
            Finding(
                f"CA {certificate['role']}" + (f" {subject}" if subject else ""),
                left > thresholds.ca_warning_seconds,
                f"expires in {_duration(left)}" if left > 0 else "has EXPIRED",
            )
        )
    failing = []
    for svid in facts.get("svids", []):
        expires, issued = float(svid["expiresAt"]), float(svid["issuedAt"])
        left = expires - server_time
        if left <= 0:
            failing.append(f"{svid['proxy']} ({svid['identity']}) EXPIRED")
        elif left < (expires - issued) * RENEWAL_MISSED_WHEN_LEFT:
            failing.append(f"{svid['proxy']} expires in {_duration(left)}, not renewed")
    count = len(facts.get("svids", []))
    findings.append(
        Finding(
            "workload certificates",
            not failing,
            "; ".join(failing) if failing else f"{count} current",
        )
    )
    unhealthy = []
    for proxy in facts.get("proxies", []):
        if proxy["state"] == "nack":
            unhealthy.append(f"{proxy['id']} NACKs: {proxy.get('lastNack') or '?'}")
        pending = proxy.get("pendingSeconds")
        if pending is not None and pending > thresholds.stale_after_seconds:
            unhealthy.append(f"{proxy['id']} has not acknowledged for {_duration(pending)}")
    total = len(facts.get("proxies", []))
    findings.append(
        Finding(
            "proxies in sync",
            not unhealthy,
            "; ".join(unhealthy) if unhealthy else f"{total} connected, all synced",
        )
    )
    return findings
