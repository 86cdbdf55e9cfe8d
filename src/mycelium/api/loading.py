"""Reading resources from YAML (or JSON) text, files and directories.

The loader validates an input as a whole: it collects every problem of every document
(syntax, shape, unknown kind, apiVersion, field errors, duplicated YAML keys, the same
resource defined twice) and raises one `ResourceValidationError` listing them all, each
with its file, document number, resource, field path and line. Either everything loads,
or nothing does: `apply` relies on that to write all or nothing.

Each returned resource remembers where it came from in `resource.origin` (an `Origin`:
source, 1-based document index, line). That lives in a private attribute, so it is not
stored and does not affect equality.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml

from mycelium.api.diagnostics import extend_path, problems, yaml_type_name
from mycelium.api.errors import ResourceValidationError, ValidationIssue
from mycelium.api.kinds import KINDS
from mycelium.api.meta import API_VERSION, Origin, Resource, resource_ref

# File name endings read from a directory, as kubectl does for `-f <dir>`.
RESOURCE_FILE_SUFFIXES = (".yaml", ".yml", ".json")

_YAML_MERGE_TAG = "tag:yaml.org,2002:merge"

# YAML aliases let a few lines stand for an exponential number of nodes ("billion
# laughs"), or a cycle. No real resource comes near this many fields; beyond it we stop
# rather than let one document occupy the controller.
MAX_DOCUMENT_NODES = 100_000
MAX_DOCUMENT_DEPTH = 64


@dataclass(frozen=True, slots=True)
class _Document:
    index: int  # 1-based, counting empty documents too, so numbers match the file
    data: Any
    node: yaml.Node | None  # the YAML node tree, to find the line of a field


# --- public entry points -------------------------------------------------------------------


def load_documents(text: str, *, source: str) -> list[Resource]:
    """Every resource in `text`, a stream of YAML documents; empty documents are skipped.

    `source` names the input in messages (a file name, "request body"...). Raises
    `ResourceValidationError` listing every problem found.
    """
    resources, issues = _load_yaml(text, source)
    issues.extend(duplicate_issues(resources))
    if issues:
        raise ResourceValidationError(issues)
    return resources


def load_file(path: Path | str) -> list[Resource]:
    """Every resource in one file (`.json` is read as JSON, anything else as YAML)."""
    resources, issues = _load_path(Path(path))
    issues.extend(duplicate_issues(resources))
    if issues:
        raise ResourceValidationError(issues)
    return resources


def load_paths(paths: Iterable[Path | str]) -> list[Resource]:
    """Every resource in the given files and directories, in order.

    A directory contributes its `*.yaml`, `*.yml` and `*.json` files (not those of its
    subdirectories), sorted by name. A resource defined twice across all of them is an
    error, as is a path that does not exist or a directory without resource files.
    """
    resources: list[Resource] = []
    issues: list[ValidationIssue] = []
    for path in map(Path, paths):
        for file in _expand(path, issues):
            loaded, found = _load_path(file)
            resources.extend(loaded)
            issues.extend(found)
    issues.extend(duplicate_issues(resources))
    if issues:
        raise ResourceValidationError(issues)
    return resources


def duplicate_issues(resources: Sequence[Resource]) -> list[ValidationIssue]:
    """An issue for every resource whose kind, namespace and name came earlier in the list."""
    first_seen: dict[str, Resource] = {}
    issues: list[ValidationIssue] = []
    for resource in resources:
        earlier = first_seen.setdefault(resource.key, resource)
        if earlier is resource:
            continue
        where = _describe_origin(earlier.origin)
        issues.append(
            resource.issue(
                "metadata.name",
                f"{resource.ref} is already defined in {where}: each resource may appear "
                "only once in one apply; remove or rename one of them",
            )
        )
    return issues


# --- files ---------------------------------------------------------------------------------


def _expand(path: Path, issues: list[ValidationIssue]) -> list[Path]:
    if path.is_dir():
        files = sorted(
            child
            for child in path.iterdir()
            if child.is_file() and child.suffix.lower() in RESOURCE_FILE_SUFFIXES
        )
        if not files:
            issues.append(
                _file_issue(
                    str(path),
                    "the directory holds no .yaml, .yml or .json files (subdirectories are "
                    "not searched): name the files, or check the path",
                )
            )
        return files
    return [path]


def _load_path(path: Path) -> tuple[list[Resource], list[ValidationIssue]]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], [_file_issue(source, "no such file: check the path")]
    except UnicodeDecodeError as error:
        return [], [_file_issue(source, f"not UTF-8 text ({error.reason} at byte {error.start})")]
    except OSError as error:
        return [], [_file_issue(source, f"cannot be read: {error.strerror or error}")]
    if path.suffix.lower() == ".json":
        return _load_json(text, source)
    return _load_yaml(text, source)


def _file_issue(
    source: str, message: str, *, document: int = 0, line: int | None = None
) -> ValidationIssue:
    return ValidationIssue(
        source=source, document=document, resource=None, path="", message=message, line=line
    )


# --- parsing -------------------------------------------------------------------------------


def _load_yaml(text: str, source: str) -> tuple[list[Resource], list[ValidationIssue]]:
    documents, syntax_issues = _parse_yaml(text, source)
    issues: list[ValidationIssue] = []
    resources = _validate_all(documents, source, issues)
    # The documents before a syntax error are checked too, and reported first.
    return resources, issues + syntax_issues


def _parse_yaml(text: str, source: str) -> tuple[list[_Document], list[ValidationIssue]]:
    documents: list[_Document] = []
    loader = yaml.SafeLoader(text)
    index = 0
    try:
        while loader.check_node():
            index += 1
            node = loader.get_node()
            data = loader.construct_document(node)
            documents.append(_Document(index, data, node))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "syntax error"
        context = f" ({error.context})" if error.context and error.problem else ""
        # A syntax error ends the stream; the documents before it are still checked.
        return documents, [
            _file_issue(
                source,
                f"not valid YAML: {problem}{context}",
                document=max(index, 1),
                line=mark.line + 1 if mark is not None else None,
            )
        ]
    except yaml.YAMLError as error:
        return documents, [_file_issue(source, f"not valid YAML: {error}", document=max(index, 1))]
    finally:
        loader.dispose()
    return documents, []


def _load_json(text: str, source: str) -> tuple[list[Resource], list[ValidationIssue]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return [], [
            _file_issue(source, f"not valid JSON: {error.msg}", document=1, line=error.lineno)
        ]
    # A JSON file holds one resource, or a list of them (one "document" each).
    items = data if isinstance(data, list) else [data]
    documents = [_Document(index, item, None) for index, item in enumerate(items, start=1)]
    issues: list[ValidationIssue] = []
    return _validate_all(documents, source, issues), issues


def _field_lines(
    document: _Document, source: str
) -> tuple[dict[str, int] | None, list[ValidationIssue]]:
    """The line of every field path in the document, and an issue per repeated key.

    YAML keeps the last of two equal keys without a word; we refuse instead. Lines are
    None when the document is too large or too deep to look at (see MAX_DOCUMENT_NODES).
    """
    lines: dict[str, int] = {}
    repeats: list[ValidationIssue] = []
    if document.node is None:
        return lines, repeats

    def issue(path: str, message: str, line: int) -> ValidationIssue:
        return ValidationIssue(
            source=source,
            document=document.index,
            resource=_raw_ref(document.data),
            path=path,
            message=message,
            line=line,
        )

    stack: list[tuple[yaml.Node, str, int]] = [(document.node, "", 0)]
    visited = 0
    while stack:
        node, path, depth = stack.pop()
        visited += 1
        if visited > MAX_DOCUMENT_NODES or depth > MAX_DOCUMENT_DEPTH:
            message = (
                f"the document has more than {MAX_DOCUMENT_NODES} values, or nests deeper "
                f"than {MAX_DOCUMENT_DEPTH} levels, once YAML aliases are expanded (an alias "
                "bomb or an alias cycle?): write it out plainly"
            )
            return None, [issue("", message, document.node.start_mark.line + 1)]
        children: list[tuple[yaml.Node, str, int]] = []
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if key_node.tag == _YAML_MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                child_path = extend_path(path, key)
                if key in seen:
                    message = (
                        f"the key {key!r} appears twice in this mapping: YAML would silently "
                        "keep only the last one; remove one"
                    )
                    repeats.append(issue(child_path, message, line))
                seen.add(key)
                children.append((value_node, child_path, line))
        elif isinstance(node, yaml.SequenceNode):
            children = [
                (item, extend_path(path, i), item.start_mark.line + 1)
                for i, item in enumerate(node.value)
            ]
        for child, child_path, line in children:
            lines.setdefault(child_path, line)
            stack.append((child, child_path, depth + 1))
    repeats.sort(key=lambda issue: issue.line or 0)
    return lines, repeats


# --- validation ----------------------------------------------------------------------------


def _validate_all(
    documents: Sequence[_Document], source: str, issues: list[ValidationIssue]
) -> list[Resource]:
    resources: list[Resource] = []
    for document in documents:
        if document.data is None:
            continue  # an empty document, e.g. after a trailing `---`
        resource = _validate(document, source, issues)
        if resource is not None:
            resources.append(resource)
    return resources


def _validate(document: _Document, source: str, issues: list[ValidationIssue]) -> Resource | None:
    start = document.node.start_mark.line + 1 if document.node is not None else None
    lines, repeats = _field_lines(document, source)
    issues.extend(repeats)
    if lines is None:
        return None
    origin = Origin(source, document.index, start, lines)

    def report(path: str, message: str) -> None:
        issues.append(
            ValidationIssue(
                source=source,
                document=document.index,
                resource=_raw_ref(document.data),
                path=path,
                message=message,
                line=origin.line_of(path),
            )
        )

    data = document.data
    if not isinstance(data, dict):
        report(
            "",
            "a resource must be a mapping with apiVersion, kind, metadata and spec; "
            f"this document is {yaml_type_name(data)}",
        )
        return None
    api_version = data.get("apiVersion")
    if api_version is None:
        report("apiVersion", f"missing: start every resource with apiVersion: {API_VERSION}")
    elif api_version != API_VERSION:
        report("apiVersion", f"unsupported apiVersion {api_version!r}: use {API_VERSION}")
    kind = data.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        report("kind", _unknown_kind_message(kind))
        return None
    try:
        resource = model.model_validate(data)
    except pydantic.ValidationError as error:
        for problem in problems(error, model):
            if problem.location[:1] == ("apiVersion",):
                continue  # reported above, with a better message
            report(problem.path, problem.message)
        return None
    if repeats:
        return None
    return resource.with_origin(origin)


def _unknown_kind_message(kind: object) -> str:
    valid = ", ".join(KINDS)
    if kind is None:
        return f"missing: say which kind of resource this is, one of: {valid}"
    if not isinstance(kind, str):
        return f"must be a string naming the kind, got {kind!r}; one of: {valid}"
    by_lowercase = {name.lower(): name for name in KINDS}
    suggestion = by_lowercase.get(kind.lower()) or next(
        iter(difflib.get_close_matches(kind, list(KINDS), n=1)), None
    )
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    return f"unknown kind {kind!r}{hint}; valid kinds (spelled exactly): {valid}"


def _raw_ref(data: Any) -> str | None:
    """ "Kind/namespace/name" from an unvalidated document, when it says enough."""
    if not isinstance(data, dict):
        return None
    kind, metadata = data.get("kind"), data.get("metadata")
    if not isinstance(kind, str) or not isinstance(metadata, dict):
        return None
    name = metadata.get("name")
    if not isinstance(name, str):
        return None
    model = KINDS.get(kind)
    namespace = metadata.get("namespace") or "default"
    if model is not None and model.cluster_scoped:
        namespace = ""
    return resource_ref(kind, namespace if isinstance(namespace, str) else "?", name)


def _describe_origin(origin: Origin | None) -> str:
    if origin is None:
        return "the same input"
    return f"{origin.source}, document {origin.document}"
