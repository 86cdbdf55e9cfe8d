"""`myc apply` validates locally and reports every issue before anything is sent.

The controller URL points at a port where nothing listens: had the command sent
anything, it would fail with "cannot reach the controller" instead.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from mycelium.cli.main import app

NOWHERE = "http://127.0.0.1:9"

GOOD_SERVICE = """\
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""

BAD_ROUTES = """\
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{name: reviews}]
  rules:
  - backendRefs: [{name: reviews, port: 9080, weight: -1}]
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: ratings}
spec:
  parentRefs: [{name: ratings}]
  rules:
  - backendRefs: [{name: ratings, port: 70000}]
"""

runner = CliRunner()


def apply(*args: str, stdin: str | None = None) -> Result:
    return runner.invoke(app, ["--controller", NOWHERE, "apply", *args], input=stdin)


def test_every_issue_is_reported_with_file_document_resource_and_field(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(BAD_ROUTES)

    result = apply("-f", str(routes))

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "error: 2 problems found by local validation; nothing was applied: fix them and apply again"
    )
    assert lines[1].startswith(
        f"  {routes}, document 1, HTTPRoute/default/reviews: spec.rules[0].backendRefs[0].weight: "
    )
    assert lines[2].startswith(
        f"  {routes}, document 2, HTTPRoute/default/ratings: spec.rules[0].backendRefs[0].port: "
    )
    assert "cannot reach" not in result.stderr


def test_issues_of_several_files_are_reported_together(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(BAD_ROUTES)
    (tmp_path / "b.yaml").write_text("kind: Service\n")

    result = apply("-f", str(tmp_path / "a.yaml"), "-f", str(tmp_path / "b.yaml"))

    assert result.exit_code == 1
    problems = result.stderr.splitlines()[1:]
    assert {line.split(",")[0].strip() for line in problems} == {
        str(tmp_path / "a.yaml"),
        str(tmp_path / "b.yaml"),
    }


def test_a_resource_defined_in_two_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(GOOD_SERVICE)
    (tmp_path / "two.yaml").write_text(GOOD_SERVICE)

    result = apply("-f", str(tmp_path))

    assert result.exit_code == 1
    assert "1 problem found by local validation" in result.stderr
    assert f"{tmp_path / 'two.yaml'}, document 1, Service/default/reviews" in result.stderr


def test_standard_input_is_named_in_messages() -> None:
    result = apply("-f", "-", stdin=BAD_ROUTES)

    assert result.exit_code == 1
    assert "  <stdin>, document 2, HTTPRoute/default/ratings" in result.stderr


def test_yaml_syntax_errors_are_issues_too(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Service\nmetadata: {name: [\n")

    result = apply("-f", str(broken))

    assert result.exit_code == 1
    assert str(broken) in result.stderr
    assert "Traceback" not in result.output


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    result = apply("-f", str(tmp_path / "nope.yaml"))

    assert result.exit_code == 1
    assert result.stderr == f'error: the path "{tmp_path / "nope.yaml"}" does not exist\n'


def test_a_directory_without_manifests_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a manifest")

    result = apply("-f", str(tmp_path))

    assert result.exit_code == 1
    assert "holds no .yaml, .yml or .json file" in result.stderr


def test_files_without_resources_are_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("---\n# nothing here\n---\n")

    result = apply("-f", str(empty))

    assert result.exit_code == 1
    assert result.stderr == f"error: no resources found in {empty}: nothing to do\n"
