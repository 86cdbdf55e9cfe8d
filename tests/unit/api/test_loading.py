"""Loading YAML: every mistake an operator can make is reported precisely, all at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mycelium.api import HTTPRoute, Namespace, Origin, ResourceValidationError, Service
from mycelium.api.loading import load_file, load_paths

from .conftest import issues_of, load, only_issue

SERVICE = """
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""


def route(rule: str) -> str:
    """An HTTPRoute for reviews whose single rule is `rule` (YAML, indented by 4)."""
    return (
        """
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{name: reviews}]
  rules:
  - """
        + rule.strip().replace("\n", "\n    ")
        + "\n"
    )


# --- what loads --------------------------------------------------------------------------


def test_a_service_loads_with_its_defaults_filled_in() -> None:
    [service] = load(SERVICE)
    assert isinstance(service, Service)
    assert service.ref == "Service/bookinfo/reviews"
    port = service.spec.ports[0]
    assert (port.target_port, port.protocol, port.opaque) == (9080, "HTTP", False)


def test_empty_documents_are_skipped_but_still_counted() -> None:
    text = "---\n# only a comment\n---\n" + SERVICE + "---\n"
    [service] = load(text)
    assert service.origin == Origin("test.yaml", 2, 5)


def test_origin_is_kept_per_document() -> None:
    second = SERVICE.replace("reviews", "ratings")
    resources = load(SERVICE + "---" + second)
    assert [r.origin.document for r in resources if r.origin] == [1, 2]
    assert all(r.origin is not None and r.origin.source == "test.yaml" for r in resources)


def test_a_namespace_needs_no_spec_and_no_namespace() -> None:
    [namespace] = load("apiVersion: mycelium.io/v1\nkind: Namespace\nmetadata: {name: bookinfo}\n")
    assert isinstance(namespace, Namespace)
    assert namespace.spec.mode == "sidecar"
    assert namespace.key == "/mycelium/namespace/_/bookinfo"


def test_durations_and_integer_percentages_are_accepted() -> None:
    [loaded] = load(
        route("""
backendRefs: [{name: reviews}]
timeout: 1.5s
fault: {delay: {fixedDelay: 250ms, percentage: 10}}
""")
    )
    assert isinstance(loaded, HTTPRoute)
    rule = loaded.spec.rules[0]
    assert rule.timeout == 1.5
    assert rule.fault is not None
    assert rule.fault.delay is not None
    assert (rule.fault.delay.fixed_delay, rule.fault.delay.percentage) == (0.25, 10.0)


# --- what is refused, and how it is told -------------------------------------------------


def test_unknown_kind_suggests_the_right_spelling() -> None:
    issue = only_issue(SERVICE.replace("kind: Service", "kind: HttpRoute"))
    assert issue.path == "kind"
    assert "unknown kind 'HttpRoute'" in issue.message
    assert "did you mean 'HTTPRoute'" in issue.message
    assert "Gateway" in issue.message  # the valid kinds are listed


def test_missing_kind_is_reported() -> None:
    issue = only_issue(SERVICE.replace("kind: Service\n", ""))
    assert issue.path == "kind"
    assert "missing" in issue.message


def test_unknown_field_names_the_valid_ones() -> None:
    issue = only_issue(SERVICE.replace("port: 9080", "prot: 9080, port: 9080"))
    assert issue.path == "spec.ports[0].prot"
    assert issue.resource == "Service/bookinfo/reviews"
    assert "unknown field 'prot'" in issue.message
    assert "did you mean 'port'" in issue.message
    assert "targetPort" in issue.message


def test_a_string_where_a_number_belongs_is_a_type_error() -> None:
    issue = only_issue(SERVICE.replace("port: 9080", 'port: "9080"'))
    assert issue.path == "spec.ports[0].port"
    assert "valid integer" in issue.message
    assert "string '9080'" in issue.message
    assert issue.line == 7


def test_a_bad_regular_expression_is_reported_with_the_regex_error() -> None:
    issue = only_issue(
        route("""
matches: [{path: {type: RegularExpression, value: "/api/(v1|v2"}}]
backendRefs: [{name: reviews}]
""")
    )
    assert issue.path == "spec.rules[0].matches[0].path.value"
    assert "invalid regular expression '/api/(v1|v2'" in issue.message
    assert "missing )" in issue.message


def test_a_bad_header_regex_is_reported_too() -> None:
    issue = only_issue(
        route("""
matches: [{headers: [{name: end-user, type: RegularExpression, value: "[a-"}]}]
backendRefs: [{name: reviews}]
""")
    )
    assert issue.path == "spec.rules[0].matches[0].headers[0].value"
    assert "invalid regular expression" in issue.message


def test_weights_that_add_up_to_zero_are_refused() -> None:
    issue = only_issue(
        route("backendRefs: [{name: reviews, weight: 0}, {name: ratings, weight: 0}]")
    )
    assert issue.path == "spec.rules[0].backendRefs"
    assert "add up to 0" in issue.message


def test_a_negative_weight_is_refused() -> None:
    issue = only_issue(route("backendRefs: [{name: reviews, weight: -1}]"))
    assert issue.path == "spec.rules[0].backendRefs[0].weight"
    assert "greater than or equal to 0" in issue.message


def test_a_rule_without_backends_needs_a_full_abort() -> None:
    issue = only_issue(route("timeout: 1s"))
    assert issue.path == "spec.rules[0]"
    assert "at least one backendRef" in issue.message
    # ...and with an abort of every request, it answers by itself:
    [loaded] = load(route("fault: {abort: {httpStatus: 503}}"))
    assert isinstance(loaded, HTTPRoute)


def test_the_same_resource_twice_in_one_file_is_refused() -> None:
    issues = issues_of(SERVICE + "---" + SERVICE.replace("9080", "9081"))
    assert len(issues) == 1
    assert issues[0].document == 2
    assert issues[0].path == "metadata.name"
    assert "already defined in test.yaml, document 1" in issues[0].message


def test_the_same_name_in_another_namespace_or_kind_is_fine() -> None:
    other_namespace = SERVICE.replace("namespace: bookinfo", "namespace: staging")
    assert len(load(SERVICE + "---" + other_namespace)) == 2


def test_a_document_that_is_not_a_mapping_is_refused() -> None:
    issue = only_issue("- just\n- a list\n")
    assert issue.document == 1
    assert issue.path == ""
    assert "must be a mapping" in issue.message
    assert "a list" in issue.message


def test_a_file_that_is_not_yaml_names_the_line() -> None:
    text = "apiVersion: mycelium.io/v1\nkind: Service\nmetadata: {name: x\nspec: {}\n"
    issue = only_issue(text)
    assert "not valid YAML" in issue.message
    assert issue.line is not None
    assert issue.line >= 3
    assert f"(line {issue.line})" in str(issue)


def test_missing_api_version_is_reported() -> None:
    issue = only_issue(SERVICE.replace("apiVersion: mycelium.io/v1\n", ""))
    assert issue.path == "apiVersion"
    assert "apiVersion: mycelium.io/v1" in issue.message


def test_a_wrong_api_version_is_reported_once() -> None:
    issue = only_issue(SERVICE.replace("mycelium.io/v1", "networking.istio.io/v1"))
    assert issue.path == "apiVersion"
    assert "unsupported apiVersion 'networking.istio.io/v1'" in issue.message


@pytest.mark.parametrize("duration", ["5", "5 seconds", "-1s", "1d", "0s", "ms"])
def test_a_bad_duration_is_refused_with_the_syntax(duration: str) -> None:
    issue = only_issue(route(f"backendRefs: [{{name: reviews}}]\ntimeout: {duration}"))
    assert issue.path == "spec.rules[0].timeout"
    assert "'250ms'" in issue.message


def test_a_bad_cidr_is_refused() -> None:
    text = """
apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {name: office}
spec:
  rules:
  - from: [{source: {ipBlocks: ["10.0.0.0/8", "10.1.2.3/16", "not-an-ip"]}}]
"""
    issues = issues_of(text)
    assert [i.path for i in issues] == [
        "spec.rules[0].from[0].source.ipBlocks[1]",
        "spec.rules[0].from[0].source.ipBlocks[2]",
    ]
    assert "did you mean '10.1.0.0/16'" in issues[0].message
    assert "not a valid IP block" in issues[1].message


def test_a_key_given_twice_is_refused_rather_than_silently_dropped() -> None:
    issue = only_issue(
        SERVICE.replace("selector: {app: reviews}", "selector: {app: reviews}\n  selector: {}")
    )
    assert issue.path == "spec.selector"
    assert "appears twice" in issue.message
    assert issue.line == 7


def test_every_issue_of_a_file_is_collected() -> None:
    broken = SERVICE.replace("port: 9080", "port: 0")
    text = broken + "---\n" + "kind: Nope\n" + "---\n" + route("backendRefs: [{name: Reviews}]")
    issues = issues_of(text)
    assert [(i.document, i.path) for i in issues] == [
        (1, "spec.ports[0].port"),
        (2, "apiVersion"),
        (2, "kind"),
        (3, "spec.rules[0].backendRefs[0].name"),
    ]


def test_the_report_reads_file_document_resource_field_message() -> None:
    text = SERVICE + "---" + route("backendRefs: [{name: reviews, weight: nine}]")
    with pytest.raises(ResourceValidationError) as raised:
        load(text, source="bookinfo.yaml")
    assert str(raised.value) == (
        "bookinfo.yaml, document 2, HTTPRoute/default/reviews: "
        "spec.rules[0].backendRefs[0].weight: Input should be a valid integer, "
        "got a string 'nine' (line 15)"
    )


# --- files and directories -----------------------------------------------------------------


def test_load_file_names_the_file_in_issues(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(SERVICE.replace("9080", "70000"))
    with pytest.raises(ResourceValidationError) as raised:
        load_file(path)
    [issue] = raised.value.issues
    assert issue.source == str(path)
    assert "less than or equal to 65535" in issue.message


def test_a_missing_file_is_an_issue_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(ResourceValidationError) as raised:
        load_file(tmp_path / "nope.yaml")
    assert "no such file" in str(raised.value)


def test_a_directory_loads_its_resource_files_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(SERVICE.replace("reviews", "ratings"))
    (tmp_path / "a.yml").write_text(SERVICE)
    service = load(SERVICE)[0]
    document = json.loads(service.to_json_bytes())
    document["metadata"]["name"] = "details"
    (tmp_path / "c.json").write_text(json.dumps(document))
    (tmp_path / "notes.txt").write_text("not a resource")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "d.yaml").write_text("this is not even looked at: [")
    names = [r.metadata.name for r in load_paths([tmp_path])]
    assert names == ["reviews", "ratings", "details"]


def test_duplicates_across_files_of_one_load_are_refused(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(SERVICE)
    (tmp_path / "two.yaml").write_text(SERVICE)
    with pytest.raises(ResourceValidationError) as raised:
        load_paths([tmp_path / "one.yaml", tmp_path / "two.yaml"])
    [issue] = raised.value.issues
    assert issue.source == str(tmp_path / "two.yaml")
    assert f"already defined in {tmp_path / 'one.yaml'}, document 1" in issue.message


def test_issues_of_all_files_are_reported_together(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: [\n")
    (tmp_path / "worse.json").write_text("{not json")
    with pytest.raises(ResourceValidationError) as raised:
        load_paths([tmp_path, tmp_path / "missing.yaml"])
    sources = [issue.source for issue in raised.value.issues]
    assert sources == [
        str(tmp_path / "bad.yaml"),
        str(tmp_path / "worse.json"),
        str(tmp_path / "missing.yaml"),
    ]
    assert "not valid JSON" in raised.value.issues[1].message


def test_an_empty_directory_is_an_issue(tmp_path: Path) -> None:
    with pytest.raises(ResourceValidationError, match=r"no \.yaml, \.yml or \.json files"):
        load_paths([tmp_path])


def test_a_number_where_text_belongs_suggests_quotes() -> None:
    issue = only_issue(SERVICE.replace("{app: reviews}", "{app: reviews, version: 1.0}"))
    assert issue.path == "spec.selector.version"
    assert "put it in quotes" in issue.message


def test_an_alias_bomb_is_refused_without_expanding_it() -> None:
    layers = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    layers += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = SERVICE.replace("spec:", "bomb:\n  " + "\n  ".join(layers) + "\nspec:")
    issue = only_issue(text)
    assert "more than 100000 values" in issue.message


def test_an_alias_cycle_is_refused() -> None:
    issue = only_issue(SERVICE.replace("selector: {app: reviews}", "selector: &loop [*loop]"))
    assert "alias cycle" in issue.message
    assert "nests deeper than 64 levels" in issue.message


def test_documents_before_a_syntax_error_are_still_checked() -> None:
    text = SERVICE.replace("port: 9080", "port: 0") + "---\nkind: [\n"
    issues = issues_of(text)
    assert [(i.document, i.path) for i in issues] == [(1, "spec.ports[0].port"), (2, "")]
    assert "not valid YAML" in issues[1].message
