"""JSON Schema export: docs/schema matches the models, and the schemas say what YAML says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mycelium.api import KINDS
from mycelium.api.schema import export_schemas, render_schemas, schema_of

from .conftest import REPO_ROOT

DOCS_SCHEMA = REPO_ROOT / "docs" / "schema"


def test_docs_schema_is_up_to_date_with_the_models() -> None:
    expected = render_schemas()
    present = {path.name: path.read_text(encoding="utf-8") for path in DOCS_SCHEMA.iterdir()}
    stale = sorted(name for name, text in expected.items() if present.get(name) != text)
    extra = sorted(set(present) - set(expected))
    assert (stale, extra) == ([], []), "docs/schema is out of date: run `make schema`"


def test_export_writes_one_schema_per_kind_and_an_index(tmp_path: Path) -> None:
    (tmp_path / "virtualservice.schema.json").write_text("{}")  # a kind that is gone
    written = export_schemas(tmp_path)
    names = sorted(path.name for path in written)
    assert names == sorted([f"{kind.lower()}.schema.json" for kind in KINDS] + ["README.md"])
    assert sorted(path.name for path in tmp_path.iterdir()) == names
    index = (tmp_path / "README.md").read_text()
    for kind in KINDS:
        assert f"[{kind.lower()}.schema.json]({kind.lower()}.schema.json)" in index


def test_the_exporter_runs_as_a_module(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mycelium.api.schema", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "httproute.schema.json").is_file()
    assert "wrote" in result.stdout


def definition(schema: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = schema["$defs"][name]
    return found


def test_a_schema_requires_the_envelope_and_forbids_unknown_fields() -> None:
    for kind, model in KINDS.items():
        schema = schema_of(model)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["required"][:3] == ["apiVersion", "kind", "metadata"], kind
        assert schema["additionalProperties"] is False
        assert schema["properties"]["kind"]["const"] == kind
        for name, sub in schema["$defs"].items():
            if sub.get("type") == "object" and "properties" in sub:
                assert sub["additionalProperties"] is False, f"{kind}: {name}"


def test_schemas_use_the_yaml_spelling_and_string_durations() -> None:
    policy = schema_of(KINDS["DestinationPolicy"])
    outlier = definition(policy, "OutlierDetection")["properties"]
    assert set(outlier) >= {"consecutive5xxErrors", "interval", "baseEjectionTime"}
    assert outlier["interval"]["default"] == "10s"
    assert definition(policy, "Duration")["type"] == "string"
    assert "sourceIP" in definition(policy, "ConsistentHash")["properties"]
    authz = schema_of(KINDS["AuthorizationPolicy"])
    assert "from" in definition(authz, "AuthorizationRule")["properties"]
    service = schema_of(KINDS["Service"])
    target_port = definition(service, "ServicePort")["properties"]["targetPort"]
    assert "default" not in target_port  # it defaults to `port`, not to null
    json.dumps(service)  # serializable as it is
