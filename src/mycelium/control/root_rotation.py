"""Root rotation's guard: a reload must not drop a root that live certificates need.

The steps themselves (trust the new root, sign with it, drop the old one) are file
edits followed by `myc ca reload`; docs/identity.md walks through them.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography import x509

from mycelium.control.ca_material import key_id
from mycelium.control.svids import LatestSvid
from mycelium.errors import ConfigError


def proxies_cut_off(
    old_roots: list[x509.Certificate],
    new_roots: list[x509.Certificate],
    latest: Mapping[str, LatestSvid],
    now: float,
) -> list[str]:
    """The proxies whose live certificate chains to a root the new bundle drops."""
    dropped = {key_id(r) for r in old_roots} - {key_id(r) for r in new_roots}
    return sorted(
        proxy for proxy, svid in latest.items() if svid.root in dropped and svid.expires_at > now
    )


class RootStillInUse(ConfigError):
    """A reload would drop a root that live workload certificates still chain to."""

    def __init__(self, holders: list[str]) -> None:
        shown = ", ".join(holders[:5]) + (
            f" and {len(holders) - 5} more" if len(holders) > 5 else ""
        )
        super().__init__(
            f"{len(holders)} proxies still hold certificates from a root the new trust "
            f"bundle drops ({shown}); they would be cut off. Wait until they have renewed "
            "from the new signer (`myc ca status`), or reload with --force"
        )
        self.holders = holders
