"""Errors of the resource API: what is wrong with the user's resources, and where.

A `ValidationIssue` names the file, the document in it, the resource when known, and
the dotted field path, so that the operator can go straight to the line to fix. The
loader collects every issue of an input before raising one `ResourceValidationError`,
so that one run shows everything to fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mycelium.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationIssue:
    """One problem in one resource definition."""

    source: str
    """The file (or other input, such as "request body") the resource came from."""
    document: int
    """The 1-based index of the YAML document in `source`; 0 when not known."""
    resource: str | None
    """"HTTPRoute/default/reviews" when kind and name could be read, else None."""
    path: str
    """The dotted field path, e.g. "spec.rules[0].backendRefs[1].weight"; "" for the whole."""
    message: str
    """What is wrong and what to do about it."""
    line: int | None = None
    """The 1-based line in `source` where the offending field starts, when known."""

    def __str__(self) -> str:
        where = [self.source]
        if self.document > 0:
            where.append(f"document {self.document}")
        if self.resource is not None:
            where.append(self.resource)
        location = ", ".join(where)
        field = f"{self.path}: " if self.path else ""
        line = f" (line {self.line})" if self.line is not None else ""
        return f"{location}: {field}{self.message}{line}"


class ResourceValidationError(ConfigError):
    """One or more resource definitions are invalid; `issues` lists every problem found."""

    def __init__(self, issues: Iterable[ValidationIssue]) -> None:
        self.issues: tuple[ValidationIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class UnknownKind(ConfigError):
    """A kind name that no resource type answers to."""

    def __init__(self, name: str, valid: Sequence[str]) -> None:
        super().__init__(f"unknown kind {name!r}; valid kinds are: {', '.join(valid)}")
        self.name = name
        self.valid = tuple(valid)
