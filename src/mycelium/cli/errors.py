"""Errors the `myc` command reports to the operator.

Every expected failure of a command is a `CliError`: the command group prints it as
`error: <message>` on stderr, followed by its indented `detail_lines()`, and exits 1 with
no traceback. Foreign exceptions (aiohttp, OSError, YAML) are translated into this family
only at the edges (`client.py`, `manifests.py`).
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass

from mycelium.errors import MeshError


class CliError(MeshError):
    """A failure the operator can fix; printed without a traceback."""

    def detail_lines(self) -> list[str]:
        """Lines printed under the `error:` line, one problem each."""
        return []


class InputError(CliError):
    """A path, file or argument given on the command line cannot be used."""


class ControllerStartFailed(CliError):
    """`myc controller` could not bind its ports or use its home."""

    def __init__(self, error: OSError) -> None:
        if error.errno == errno.EADDRINUSE:
            advice = (
                "another process holds the port (another controller?): stop it, or choose "
                "other ports with --listen-api and --listen-discovery"
            )
        elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            advice = "check the permissions of the home directory (--home) and the ports"
        else:
            advice = "check the addresses and the home directory"
        super().__init__(f"the controller could not start: {error}: {advice}")


# --- talking to the controller ------------------------------------------------------


class ControllerUnreachable(CliError):
    """Nothing answered at the controller's address."""

    def __init__(self, url: str, reason: str | None = None) -> None:
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"cannot reach the controller at {url}{why}: is it running? "
            "start it with 'myc controller'"
        )
        self.url = url


class ControllerTimeout(CliError):
    """The controller accepted the connection but did not answer in time."""

    def __init__(self, url: str, seconds: float) -> None:
        super().__init__(
            f"the controller at {url} did not answer within {seconds:g} s: "
            "check its log, and that its store is reachable"
        )
        self.url = url


class TokenRefused(CliError):
    """The controller answered 401 to our admin token (or to its absence)."""


class ControllerError(CliError):
    """The controller answered with an error document (status >= 400)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ResourceNotFound(ControllerError):
    """The resource named on the command line does not exist (404)."""


class StreamEnded(CliError):
    """A watch stream ended while the command still expected events."""


# --- invalid resources, found locally or by the controller --------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Issue:
    """One problem in the input, located as precisely as the validator could.

    `document` counts YAML documents in `source` from 1; `resource` is
    `Kind/namespace/name` when the document got far enough to have one; `path` is the
    dotted field path; `line` the 1-based line in `source`. Unknown parts are None.
    """

    source: str
    document: int | None
    resource: str | None
    path: str | None
    message: str
    line: int | None = None

    def describe(self) -> str:
        where = [self.source]
        if self.document is not None:
            where.append(f"document {self.document}")
        if self.resource:
            where.append(self.resource)
        field = f"{self.path}: " if self.path else ""
        line = f" (line {self.line})" if self.line is not None else ""
        return f"{', '.join(where)}: {field}{self.message}{line}"


class InvalidResources(CliError):
    """The input does not validate; nothing was applied."""

    def __init__(self, issues: Sequence[Issue], *, found_by: str) -> None:
        count = len(issues)
        noun = "problem" if count == 1 else "problems"
        super().__init__(
            f"{count} {noun} found by {found_by}; nothing was applied: fix them and apply again"
        )
        self.issues = list(issues)

    def detail_lines(self) -> list[str]:
        return [issue.describe() for issue in self.issues]
