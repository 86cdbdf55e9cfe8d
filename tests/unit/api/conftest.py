"""Small helpers for the resource API tests: load inline YAML, collect the issues."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mycelium.api import Resource, ResourceValidationError, ValidationIssue
from mycelium.api.loading import load_documents

REPO_ROOT = Path(__file__).resolve().parents[3]


def load(text: str, source: str = "test.yaml") -> list[Resource]:
    """The resources of an inline YAML text (dedented)."""
    return load_documents(textwrap.dedent(text), source=source)


def issues_of(text: str, source: str = "test.yaml") -> list[ValidationIssue]:
    """The issues the loader reports for `text`, which must be invalid."""
    with pytest.raises(ResourceValidationError) as raised:
        load(text, source)
    return list(raised.value.issues)


def only_issue(text: str) -> ValidationIssue:
    """The single issue reported for `text`."""
    issues = issues_of(text)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]
