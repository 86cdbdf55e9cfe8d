"""Reading the files named by `-f` and validating them before anything is sent.

`read_manifests` turns `-f` arguments into `ManifestFile`s: a file as given, a directory
as its `*.yaml`, `*.yml` and `*.json` files in name order (not recursive), `-` as
standard input (once). The name each file carries is the path as the operator typed it,
so that error messages point at something they can open.

`validate_locally` runs the same loader the controller runs and collects every issue of
every file before failing, so that one run shows everything to fix and nothing
half-valid reaches the controller.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mycelium.cli.errors import InputError, InvalidResources, Issue

if TYPE_CHECKING:
    from mycelium.api import Resource
    from mycelium.api.errors import ValidationIssue

STDIN_ARGUMENT = "-"
STDIN_NAME = "<stdin>"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One input file as sent to `POST /api/v1/apply`: its name is shown in errors."""

    name: str
    content: str


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """Which resource a document defines; `namespace` is None for cluster-scoped kinds."""

    kind: str
    namespace: str | None
    name: str


def read_manifests(arguments: Sequence[str], stdin: TextIO) -> list[ManifestFile]:
    """The files named by `-f` arguments, in the order given."""
    files: list[ManifestFile] = []
    stdin_read = False
    for argument in arguments:
        if argument == STDIN_ARGUMENT:
            if stdin_read:
                raise InputError("'-f -' is given twice: standard input can be read only once")
            stdin_read = True
            files.append(ManifestFile(STDIN_NAME, stdin.read()))
            continue
        path = Path(argument)
        if path.is_dir():
            members = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES
            )
            if not members:
                raise InputError(
                    f'the directory "{argument}" holds no .yaml, .yml or .json file: '
                    "name a file, or a directory of manifests"
                )
            files.extend(_read_file(member, str(member)) for member in members)
        elif path.exists():
            files.append(_read_file(path, argument))
        else:
            raise InputError(f'the path "{argument}" does not exist')
    return files


def _read_file(path: Path, shown_as: str) -> ManifestFile:
    try:
        return ManifestFile(shown_as, path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f'"{shown_as}" is not UTF-8 text: manifests are YAML or JSON') from exc
    except OSError as exc:
        raise InputError(f'cannot read "{shown_as}": {exc.strerror}') from exc


def validate_locally(files: Sequence[ManifestFile]) -> list[ResourceRef]:
    """Validate every file; return the resources they define, in order.

    Raises `InvalidResources` listing every issue of every file, or `InputError` when the
    files define no resource at all.
    """
    # Imported here: the resource models (pydantic) cost start-up time that `--help`
    # and `get` do not need.
    from mycelium.api.errors import ResourceValidationError  # noqa: PLC0415
    from mycelium.api.loading import duplicate_issues, load_documents  # noqa: PLC0415

    resources: list[Resource] = []
    api_issues: list[ValidationIssue] = []
    for file in files:
        try:
            resources.extend(load_documents(file.content, source=file.name))
        except ResourceValidationError as exc:
            api_issues.extend(exc.issues)
    # A resource defined in two files is as ambiguous as one defined twice in a file.
    api_issues.extend(duplicate_issues(resources))
    if api_issues:
        issues = [
            Issue(
                source=i.source,
                document=i.document or None,
                resource=i.resource,
                path=i.path or None,
                message=i.message,
                line=i.line,
            )
            for i in api_issues
        ]
        raise InvalidResources(issues, found_by="local validation")
    if not resources:
        names = ", ".join(f.name for f in files) or "the input"
        raise InputError(f"no resources found in {names}: nothing to do")
    return [ResourceRef(r.kind, r.metadata.namespace or None, r.metadata.name) for r in resources]


def in_namespace(files: Sequence[ManifestFile], namespace: str) -> list[ManifestFile]:
    """The files with every namespaced resource that names no namespace put in
    `namespace` (`myc apply -n`, as kubectl does). A resource that names another
    namespace is an error, not moved: kubectl refuses it the same way. Call it on files
    `validate_locally` accepted."""
    import yaml  # noqa: PLC0415 - only apply -n needs it

    from mycelium.cli.kinds import resolve  # noqa: PLC0415

    placed: list[ManifestFile] = []
    for file in files:
        documents = [d for d in yaml.safe_load_all(file.content) if d is not None]
        for number, document in enumerate(documents, 1):
            if not resolve(str(document["kind"])).namespaced:
                continue
            metadata = document.setdefault("metadata", {})
            stated = metadata.get("namespace")
            if stated is not None and stated != namespace:
                raise InputError(
                    f"{file.name}, document {number}: {document['kind']} "
                    f"{metadata.get('name')!r} is in namespace {stated!r}, not {namespace!r} "
                    f"as -n says: drop -n, or pass -n {stated}"
                )
            metadata["namespace"] = namespace
        # Each document as JSON (which is YAML), in a stream as the file was.
        placed.append(ManifestFile(file.name, "\n---\n".join(map(json.dumps, documents))))
    return placed
