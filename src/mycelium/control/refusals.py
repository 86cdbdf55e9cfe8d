"""What the controller refused from its clients: counted by reason, logged without
flooding the log.

Every refusal (a connection over a cap, an oversized frame, a forged telemetry row) is
counted under a stable one-word reason, which `/metrics` exports. Each is logged with
the peer and a sentence, but a flood must not turn into a flood of log lines (disk and
the operator's attention are resources too): per reason, one line a second at most,
and the next line says how many were left out meanwhile. Sans-IO but for the logger:
the caller passes the time.
"""

from __future__ import annotations

import logging
from collections import Counter

# One line per reason per this many seconds; the others are counted, not logged.
LOG_INTERVAL_SECONDS = 1.0


class RefusalLog:
    def __init__(self, logger: logging.Logger, what: str) -> None:
        """`what` names the refused thing in log lines: "discovery connection"..."""
        self.counts: Counter[str] = Counter()
        self._logger = logger
        self._what = what
        self._logged_at: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def refuse(self, reason: str, peer: str, detail: str, now: float) -> None:
        """Count a refusal of `reason` from `peer`; log it unless this reason was
        logged less than a second ago. `detail` says what was wrong, for the operator."""
        self.counts[reason] += 1
        last = self._logged_at.get(reason)
        if last is not None and now - last < LOG_INTERVAL_SECONDS:
            self._unlogged[reason] += 1
            return
        self._logged_at[reason] = now
        skipped = self._unlogged.pop(reason, 0)
        self._logger.warning(
            "refused %s from %s (%s): %s%s",
            self._what,
            peer,
            reason,
            detail,
            f" [and {skipped} more like it since the last such line]" if skipped else "",
        )
