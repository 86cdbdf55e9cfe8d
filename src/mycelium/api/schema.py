"""JSON Schema export: one schema per kind, plus an index, for editors and the docs.

`python -m mycelium.api.schema docs/schema` (or `make schema`) rewrites the directory
from the models; a unit test fails when the committed files differ from what the models
produce, so the docs cannot drift from the code. The output is deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mycelium.api.kinds import KINDS, SHORT_NAMES
from mycelium.api.meta import API_VERSION, Resource

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
INDEX_NAME = "README.md"
SCHEMA_SUFFIX = ".schema.json"


def schema_file_name(kind: str) -> str:
    """`httproute.schema.json` for "HTTPRoute"."""
    return f"{kind.lower()}{SCHEMA_SUFFIX}"


def schema_of(model: type[Resource]) -> dict[str, Any]:
    """The JSON Schema of one kind, in its YAML spelling (camelCase)."""
    generated = model.model_json_schema(by_alias=True, mode="validation")
    # apiVersion and kind have defaults in Python (so models can be built without
    # them), but a document must say both: the loader refuses one that does not.
    required = ["apiVersion", "kind", *generated.get("required", [])]
    generated["required"] = list(dict.fromkeys(required))
    return {"$schema": SCHEMA_DIALECT, **generated}


def render_schemas() -> dict[str, str]:
    """File name -> content of every file the exporter writes."""
    files = {
        schema_file_name(kind): json.dumps(schema_of(model), indent=2, ensure_ascii=False) + "\n"
        for kind, model in KINDS.items()
    }
    files[INDEX_NAME] = _index()
    return files


def _index() -> str:
    lines = [
        "# Resource schemas",
        "",
        "JSON Schemas (draft 2020-12) of every Mycelium resource kind, "
        f"`apiVersion: {API_VERSION}`.",
        "Generated from the models by `make schema` "
        "(`python -m mycelium.api.schema docs/schema`): do not edit by hand.",
        "See [../resources.md](../resources.md) for what each kind means, with examples.",
        "",
        "| kind | short names | scope | schema | what it is |",
        "|---|---|---|---|---|",
    ]
    for kind, model in KINDS.items():
        scope = "cluster" if model.cluster_scoped else "namespace"
        summary = (model.__doc__ or "").strip().splitlines()[0]
        short = ", ".join(f"`{name}`" for name in SHORT_NAMES[kind])
        file = schema_file_name(kind)
        lines.append(f"| {kind} | {short} | {scope} | [{file}]({file}) | {summary} |")
    lines += [
        "",
        "Editors that use the YAML language server validate a file against a schema named",
        "in a first-line comment, for example:",
        "",
        "```yaml",
        "# yaml-language-server: $schema=../../docs/schema/httproute.schema.json",
        "```",
        "",
        "(a path relative to the YAML file, or a URL where the schemas are published).",
        "",
    ]
    return "\n".join(lines)


def export_schemas(directory: Path) -> list[Path]:
    """Write every schema and the index into `directory`; return the paths written.

    Schema files of kinds that no longer exist are removed, so the directory mirrors
    the models exactly.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = render_schemas()
    for stale in directory.glob(f"*{SCHEMA_SUFFIX}"):
        if stale.name not in files:
            stale.unlink()
    written: list[Path] = []
    for name, content in files.items():
        path = directory / name
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mycelium.api.schema",
        description="Write the JSON Schema of every Mycelium resource kind into a directory.",
    )
    parser.add_argument("directory", type=Path, help="where to write, e.g. docs/schema")
    args = parser.parse_args(argv)
    for path in export_schemas(args.directory):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
