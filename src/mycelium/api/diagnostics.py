"""Turning pydantic's validation errors into messages an operator can act on.

Pydantic reports a location tuple and a terse message. Here the location becomes a dotted
path in the YAML's own spelling ("spec.rules[0].backendRefs[1].weight"), and the message
says what was found and what is expected: an unknown field names the valid ones (and
the likely intended one), a wrong type names the type that was given.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAliasType

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

type Location = tuple[int | str, ...]

# Longer input values are cut in messages: the operator has the file, not a dump.
MAX_SHOWN_INPUT = 60

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_DICT_KEY_MARKER = "[key]"

_YAML_TYPE_NAMES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "list",
    dict: "mapping",
    type(None): "null value",
}


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One pydantic error, translated: where (path and raw location) and what."""

    location: Location
    path: str
    message: str


def format_path(location: Sequence[int | str]) -> str:
    """("spec", "rules", 0, "weight") -> "spec.rules[0].weight"; odd keys go in brackets."""
    text = ""
    for part in location:
        text = extend_path(text, part)
    return text


def extend_path(path: str, part: int | str) -> str:
    """The path of child `part` of the field at `path`."""
    if part == _DICT_KEY_MARKER:
        return path
    if isinstance(part, int) or part.isdigit():
        return f"{path}[{part}]"
    if _IDENTIFIER.fullmatch(part):
        return f"{path}.{part}" if path else part
    return f"{path}[{part!r}]"


def problems(error: ValidationError, model: type[BaseModel]) -> Iterator[FieldProblem]:
    """Each error of `error` (raised validating `model`) as a path and a readable message."""
    for detail in error.errors(include_url=False):
        location = tuple(detail["loc"])
        yield FieldProblem(location, format_path(location), describe(detail, model))


def describe(detail: ErrorDetails, model: type[BaseModel]) -> str:
    """A message for one pydantic error, saying what was found and what to write instead."""
    kind = detail["type"]
    ctx = detail.get("ctx") or {}
    location = tuple(detail["loc"])
    given = detail.get("input")
    prefix = "key: " if location and location[-1] == _DICT_KEY_MARKER else ""
    if kind == "value_error" and "error" in ctx:
        return prefix + str(ctx["error"])
    if kind == "extra_forbidden":
        return _unknown_field(model, location)
    if kind == "missing":
        return f"required field {location[-1]!r} is missing" if location else "required"
    if kind in {"model_type", "dict_type"}:
        return prefix + f"expected a mapping, got {_shown(given)}"
    if kind == "list_type":
        return prefix + f"expected a list, got {_shown(given)}"
    if kind == "too_short" and "min_length" in ctx:
        wanted = ctx["min_length"]
        return "needs at least one entry" if wanted == 1 else f"needs at least {wanted} entries"
    if kind == "string_pattern_mismatch":
        return prefix + f"{given!r} does not match the pattern {ctx.get('pattern')}"
    message = prefix + f"{detail['msg']}, got {_shown(given)}"
    if kind == "string_type" and isinstance(given, int | float | bool):
        # YAML reads 1.0, 8080, yes and off as numbers and booleans.
        message += "; put it in quotes if you meant the text"
    return message


def yaml_type_name(value: object) -> str:
    """What YAML calls the type of `value`, with an article: "a list", "an integer"."""
    name = _YAML_TYPE_NAMES.get(type(value), type(value).__name__)
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > MAX_SHOWN_INPUT:
        text = text[: MAX_SHOWN_INPUT - 3] + "..."
    return f"{yaml_type_name(value)} {text}"


def _unknown_field(model: type[BaseModel], location: Location) -> str:
    name = str(location[-1]) if location else "?"
    parent = model_at(model, location[:-1])
    if parent is None:
        return f"unknown field {name!r}"
    valid = [info.alias or field for field, info in parent.model_fields.items()]
    hint = ""
    if close := difflib.get_close_matches(name, valid, n=1):
        hint = f" (did you mean {close[0]!r}?)"
    return f"unknown field {name!r}{hint}; valid fields here: {', '.join(valid)}"


def model_at(model: type[BaseModel], location: Location) -> type[BaseModel] | None:
    """The model class validating the value at `location` under `model`, if it is one."""
    current: Any = model
    for part in location:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            current = _field_annotation(current, part)
            if current is None:
                return None
            continue
        origin, args = typing.get_origin(current), typing.get_args(current)
        if origin is list and args:
            current = args[0]
        elif origin is dict and len(args) == 2:
            current = args[1]
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _field_annotation(model: type[BaseModel], name: int | str) -> Any:
    for field, info in model.model_fields.items():
        if name in (field, info.alias):
            return info.annotation
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip `type` aliases, Annotated and `| None` to reach the type that matters."""
    while True:
        if isinstance(annotation, TypeAliasType):
            annotation = annotation.__value__
            continue
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(rest) == 1:
                annotation = rest[0]
                continue
        return annotation
