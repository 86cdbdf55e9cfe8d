"""The kind registry, store keys, and the rules each kind enforces on its own spec."""

from __future__ import annotations

import pytest

from mycelium.api import (
    KINDS,
    AuthorizationPolicy,
    DestinationPolicy,
    HTTPRoute,
    Namespace,
    ObjectMeta,
    ResourceValidationError,
    Service,
    UnknownKind,
    from_json_bytes,
    from_stored,
    kind_prefix,
    parse_store_key,
    resolve_kind,
    store_key,
)
from mycelium.api.service import ServicePort, ServiceSpec

from .conftest import load, only_issue


def doc(kind: str, spec: str, *, name: str = "reviews", namespace: str = "bookinfo") -> str:
    """A one-resource YAML document; `spec` is a flow mapping."""
    return (
        f"apiVersion: mycelium.io/v1\nkind: {kind}\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
    )


# --- registry ------------------------------------------------------------------------------


def test_every_kind_is_registered_under_its_own_name() -> None:
    assert list(KINDS) == [
        "Namespace",
        "Service",
        "Workload",
        "HTTPRoute",
        "TCPRoute",
        "DestinationPolicy",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "RateLimitPolicy",
        "Gateway",
        "Deployment",
    ]
    for kind, model in KINDS.items():
        assert model.__name__ == kind
        assert model.model_fields["kind"].default == kind


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("HTTPRoute", "HTTPRoute"),
        ("httproute", "HTTPRoute"),
        ("httproutes", "HTTPRoute"),
        ("hr", "HTTPRoute"),
        ("svc", "Service"),
        ("services", "Service"),
        ("wl", "Workload"),
        ("tcpr", "TCPRoute"),
        ("dp", "DestinationPolicy"),
        ("destinationpolicies", "DestinationPolicy"),
        ("pa", "PeerAuthentication"),
        ("authz", "AuthorizationPolicy"),
        ("ap", "AuthorizationPolicy"),
        ("rlp", "RateLimitPolicy"),
        ("gw", "Gateway"),
        ("ns", "Namespace"),
        ("namespaces", "Namespace"),
        ("Gateways", "Gateway"),
    ],
)
def test_resolve_kind_accepts_kubectl_style_names(name: str, kind: str) -> None:
    assert resolve_kind(name) is KINDS[kind]


def test_an_unknown_kind_lists_the_valid_names() -> None:
    with pytest.raises(UnknownKind) as raised:
        resolve_kind("virtualservice")
    message = str(raised.value)
    assert "unknown kind 'virtualservice'" in message
    assert "HTTPRoute (hr)" in message
    assert "AuthorizationPolicy (authz, ap)" in message


# --- keys and references -------------------------------------------------------------------


def test_keys_and_refs_of_namespaced_and_cluster_scoped_resources() -> None:
    [service] = load(doc("Service", "{ports: [{name: http, port: 9080}]}"))
    assert service.key == "/mycelium/service/bookinfo/reviews"
    assert service.ref == "Service/bookinfo/reviews"
    [namespace] = load("apiVersion: mycelium.io/v1\nkind: Namespace\nmetadata: {name: bookinfo}\n")
    assert namespace.key == "/mycelium/namespace/_/bookinfo"
    assert namespace.ref == "Namespace/bookinfo"
    assert kind_prefix("HTTPRoute") == "/mycelium/httproute/"
    assert store_key("Gateway", "edge", "public") == "/mycelium/gateway/edge/public"


def test_a_stored_value_decodes_from_its_key() -> None:
    [namespace] = load("apiVersion: mycelium.io/v1\nkind: Namespace\nmetadata: {name: mesh}\n")
    assert parse_store_key(namespace.key) == (Namespace, "", "mesh")
    decoded = from_stored(namespace.key, namespace.to_json_bytes())
    assert decoded == namespace
    assert decoded.origin is None  # origin is not stored
    with pytest.raises(ValueError, match="not a resource key"):
        parse_store_key("/other/service/a/b")


def test_a_corrupt_stored_value_is_a_validation_error() -> None:
    with pytest.raises(ResourceValidationError, match="stored value"):
        from_json_bytes("svc", b'{"kind": "Service"}')


def test_stored_json_is_canonical_and_complete() -> None:
    [service] = load(doc("Service", "{ports: [{name: http, port: 9080}]}"))
    data = service.to_json_bytes()
    assert data.startswith(b'{"apiVersion":"mycelium.io/v1","kind":"Service","metadata":')
    assert b'"targetPort":9080' in data  # defaults are stored, not implied
    assert b'"protocol":"HTTP"' in data


def test_equality_ignores_where_a_resource_was_read() -> None:
    text = doc("Service", "{ports: [{name: http, port: 9080}]}")
    [first] = load(text, source="a.yaml")
    [second] = load(text, source="b.yaml")
    assert first.origin != second.origin
    assert first == second


def test_models_can_be_built_in_python_with_snake_case_names() -> None:
    service = Service(
        metadata=ObjectMeta(name="ratings"),
        spec=ServiceSpec(ports=[ServicePort(name="http", port=9080, target_port=8080)]),
    )
    assert service.metadata.namespace == "default"
    assert service.spec.ports[0].target_port == 8080
    with pytest.raises(Exception, match="frozen"):
        service.metadata = ObjectMeta(name="other")  # type: ignore[misc]


# --- names, metadata, scope ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["Reviews", "reviews_v2", "-reviews", "a" * 64, ""])
def test_names_are_dns_labels(name: str) -> None:
    issue = only_issue(doc("Service", "{ports: [{name: http, port: 9080}]}", name=f"'{name}'"))
    assert issue.path == "metadata.name"
    assert "lowercase letters, digits and '-'" in issue.message


def test_label_keys_and_values_follow_kubernetes() -> None:
    text = doc("Service", "{ports: [{name: http, port: 9080}]}").replace(
        "namespace: bookinfo}",
        "namespace: bookinfo, labels: {app.kubernetes.io/name: reviews, 'bad key!': x}}",
    )
    issue = only_issue(text)
    assert issue.path == "metadata.labels['bad key!']"
    assert "not a valid label key" in issue.message


def test_a_cluster_scoped_kind_refuses_a_namespace() -> None:
    issue = only_issue(doc("Namespace", "{mode: ambient}"))
    assert issue.path == "metadata.namespace"
    assert "remove metadata.namespace" in issue.message


def test_a_waypoint_needs_an_ambient_namespace() -> None:
    text = "apiVersion: mycelium.io/v1\nkind: Namespace\nmetadata: {name: shop}\n"
    issue = only_issue(text + "spec: {waypoint: shop-waypoint}\n")
    assert "only applies to ambient" in issue.message
    [namespace] = load(text + "spec: {mode: ambient, waypoint: shop-waypoint}\n")
    assert isinstance(namespace, Namespace)
    assert namespace.spec.waypoint == "shop-waypoint"


# --- Service and Workload ------------------------------------------------------------------


def test_service_ports_must_be_unique_by_name_and_number() -> None:
    issue = only_issue(doc("Service", "{ports: [{name: http, port: 80}, {name: http, port: 81}]}"))
    assert (issue.path, issue.message) == (
        "spec.ports",
        "port names must be unique; repeated: http",
    )
    issue = only_issue(doc("Service", "{ports: [{name: a, port: 80}, {name: b, port: 80}]}"))
    assert "port numbers must be unique; repeated: 80" in issue.message


EXTERNAL_PORTS = "ports: [{name: http, port: 80, targetPort: 8080}]"


def test_an_external_service_lists_its_endpoints() -> None:
    [svc] = load(
        doc(
            "Service",
            "{external: true, hosts: [api.example.com], " + EXTERNAL_PORTS + ", "
            "endpoints: [{address: 203.0.113.10}, {address: 203.0.113.11, ports: {http: 81}}]}",
        )
    )
    assert isinstance(svc, Service)
    assert svc.spec.external
    assert [(e.address, e.ports) for e in svc.spec.endpoints] == [
        ("203.0.113.10", {}),
        ("203.0.113.11", {"http": 81}),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{external: true, " + EXTERNAL_PORTS + "}", "an external Service needs endpoints"),
        (
            "{external: true, selector: {app: x}, endpoints: [{address: 203.0.113.10}], "
            + EXTERNAL_PORTS
            + "}",
            "an external Service selects no workloads",
        ),
        (
            "{endpoints: [{address: 203.0.113.10}], " + EXTERNAL_PORTS + "}",
            "endpoints are only for external Services",
        ),
        (
            "{external: true, endpoints: [{address: 203.0.113.10, ports: {https: 443}}], "
            + EXTERNAL_PORTS
            + "}",
            "endpoint 203.0.113.10 names port https, which is not a port of this Service",
        ),
    ],
)
def test_an_external_service_is_refused_with_a_sentence(spec: str, message: str) -> None:
    issue = only_issue(doc("Service", spec))
    assert issue.path == "spec"
    assert message in issue.message


def test_an_external_endpoint_is_an_ip_address() -> None:
    issue = only_issue(
        doc(
            "Service",
            "{external: true, endpoints: [{address: api.example.com}], " + EXTERNAL_PORTS + "}",
        )
    )
    assert issue.path == "spec.endpoints[0].address"


def test_a_service_needs_a_port_and_a_valid_vip() -> None:
    assert only_issue(doc("Service", "{ports: []}")).message == "needs at least one entry"
    issue = only_issue(doc("Service", "{ports: [{name: a, port: 80}], vip: 10.0.0.300}"))
    assert issue.path == "spec.vip"
    assert "not an IPv4 address" in issue.message


def test_a_workload_has_an_address_and_sensible_defaults() -> None:
    [workload] = load(doc("Workload", "{address: 'fd00::7'}", name="reviews-v1-1"))
    assert workload.spec.service_account == "default"  # type: ignore[attr-defined]
    assert workload.spec.weight == 1  # type: ignore[attr-defined]
    issue = only_issue(doc("Workload", "{address: reviews.local}", name="w"))
    assert "not an IP address" in issue.message


# --- HTTPRoute -----------------------------------------------------------------------------


def http_route(rule: str) -> str:
    return doc("HTTPRoute", f"{{parentRefs: [{{name: reviews}}], rules: [{rule}]}}")


def test_prefix_paths_must_be_absolute() -> None:
    issue = only_issue(http_route("{matches: [{path: {value: api}}], backendRefs: [{name: a}]}"))
    assert issue.path == "spec.rules[0].matches[0].path.value"
    assert "must start with '/'" in issue.message


def test_replace_prefix_match_needs_prefix_matches() -> None:
    rule = (
        "{matches: [{path: {type: Exact, value: /a}}], backendRefs: [{name: a}], "
        "filters: {urlRewrite: {path: {replacePrefixMatch: /b}}}}"
    )
    assert "must use path type PathPrefix" in only_issue(http_route(rule)).message


def test_a_path_rewrite_sets_exactly_one_replacement() -> None:
    rule = "{backendRefs: [{name: a}], filters: {urlRewrite: {path: {}}}}"
    assert "exactly one of" in only_issue(http_route(rule)).message


def test_retry_status_codes_go_with_retriable_status_codes() -> None:
    asked = "{backendRefs: [{name: a}], retries: {attempts: 2, retryOn: [retriable-status-codes]}}"
    assert "list them in retriableStatusCodes" in only_issue(http_route(asked)).message
    unasked = "{backendRefs: [{name: a}], retries: {attempts: 2, retriableStatusCodes: [503]}}"
    assert "only used when retryOn" in only_issue(http_route(unasked)).message


def test_retry_attempts_are_bounded() -> None:
    issue = only_issue(http_route("{backendRefs: [{name: a}], retries: {attempts: 11}}"))
    assert issue.path == "spec.rules[0].retries.attempts"


def test_a_fault_percentage_is_between_0_and_100() -> None:
    rule = "{backendRefs: [{name: a}], fault: {abort: {httpStatus: 503, percentage: 101}}}"
    issue = only_issue(http_route(rule))
    assert issue.path == "spec.rules[0].fault.abort.percentage"


def test_an_unknown_retry_condition_lists_the_valid_ones() -> None:
    rule = "{backendRefs: [{name: a}], retries: {attempts: 1, retryOn: [timeout]}}"
    issue = only_issue(http_route(rule))
    assert issue.path == "spec.rules[0].retries.retryOn[0]"
    assert "'gateway-error'" in issue.message


def test_header_filters_do_not_set_and_remove_the_same_header() -> None:
    rule = "{backendRefs: [{name: a}], filters: {requestHeaders: {set: {x-a: '1'}, remove: [X-A]}}}"
    assert "both set and removed" in only_issue(http_route(rule)).message


def test_header_filters_refuse_values_that_would_split_the_message() -> None:
    rule = '{backendRefs: [{name: a}], filters: {responseHeaders: {add: {x-a: "1\\r\\nx-b: 2"}}}}'
    issue = only_issue(http_route(rule))
    assert issue.path == "spec.rules[0].filters.responseHeaders.add.x-a"
    assert "remove CR, LF and NUL" in issue.message


def test_a_full_route_loads() -> None:
    rule = (
        "{name: jason, matches: [{path: {type: PathPrefix, value: /reviews}, "
        "headers: [{name: end-user, value: jason}], queryParams: [{name: debug, value: '1'}], "
        "method: GET}], filters: {requestHeaders: {set: {x-canary: 'yes'}}, "
        "urlRewrite: {path: {replacePrefixMatch: /v2/reviews}, hostname: reviews.internal}}, "
        "backendRefs: [{name: reviews, subset: v3, port: 9080}], timeout: 3s, "
        "retries: {attempts: 3, perTryTimeout: 1s, retryOn: [5xx, reset]}, "
        "mirror: {backendRef: {name: reviews, subset: v2}, percentage: 5}}"
    )
    [route] = load(http_route(rule))
    assert isinstance(route, HTTPRoute)
    [parsed] = route.spec.rules
    assert parsed.filters is not None
    assert parsed.filters.request_headers is not None
    assert parsed.filters.request_headers.set == {"x-canary": "yes"}
    assert parsed.mirror is not None
    assert parsed.mirror.percentage == 5.0


# --- DestinationPolicy ---------------------------------------------------------------------


def test_consistent_hash_goes_with_its_balancer_type() -> None:
    spec = "{host: reviews, loadBalancer: {type: CONSISTENT_HASH}}"
    assert "needs consistentHash" in only_issue(doc("DestinationPolicy", spec)).message
    spec = "{host: reviews, loadBalancer: {consistentHash: {header: x-user}}}"
    assert (
        "only applies to type CONSISTENT_HASH" in only_issue(doc("DestinationPolicy", spec)).message
    )
    spec = (
        "{host: reviews, loadBalancer: {type: CONSISTENT_HASH, "
        "consistentHash: {header: x, cookie: y}}}"
    )
    assert "exactly one hash key" in only_issue(doc("DestinationPolicy", spec)).message
    spec = (
        "{host: reviews, loadBalancer: {type: CONSISTENT_HASH, consistentHash: {sourceIP: true}}}"
    )
    [policy] = load(doc("DestinationPolicy", spec))
    assert isinstance(policy, DestinationPolicy)
    assert policy.spec.load_balancer is not None
    assert policy.spec.load_balancer.consistent_hash is not None
    assert policy.spec.load_balancer.consistent_hash.source_ip is True


def test_destination_policy_defaults_and_host() -> None:
    spec = (
        "{host: reviews.shop, outlierDetection: {consecutiveGatewayErrors: 3}, retryBudget: {}, "
        "connectionPool: {maxConnections: 100, connectTimeout: 250ms}}"
    )
    [policy] = load(doc("DestinationPolicy", spec))
    assert isinstance(policy, DestinationPolicy)
    assert policy.service() == ("shop", "reviews")
    detection = policy.spec.outlier_detection
    assert detection is not None
    assert (detection.interval, detection.base_ejection_time) == (10.0, 30.0)
    assert detection.max_ejection_percent == 10
    budget = policy.spec.retry_budget
    assert budget is not None
    assert (budget.ratio, budget.ttl) == (0.2, 10.0)
    assert b'"interval":"10s"' in policy.to_json_bytes()


def test_destination_policy_refuses_bad_hosts_subsets_and_triggers() -> None:
    assert "not a Service host" in only_issue(doc("DestinationPolicy", "{host: a.b.c}")).message
    spec = "{host: r, subsets: [{name: v1, labels: {version: v1}}, {name: v1, labels: {v: x}}]}"
    assert "subset names must be unique" in only_issue(doc("DestinationPolicy", spec)).message
    spec = "{host: r, subsets: [{name: v1, labels: {}}]}"
    assert "at least one label" in only_issue(doc("DestinationPolicy", spec)).message
    spec = "{host: r, outlierDetection: {interval: 5s}}"
    assert "needs a trigger" in only_issue(doc("DestinationPolicy", spec)).message


# --- security ------------------------------------------------------------------------------


def test_port_level_mtls_needs_a_selector() -> None:
    spec = "{mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: PERMISSIVE}}}"
    assert "add a selector" in only_issue(doc("PeerAuthentication", spec)).message
    spec = (
        "{selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}, "
        "portLevelMtls: {8080: {mode: DISABLE}}}"
    )
    [policy] = load(doc("PeerAuthentication", spec))
    assert list(policy.spec.port_level_mtls) == [8080]  # type: ignore[attr-defined]


def test_mtls_mode_is_one_of_three() -> None:
    issue = only_issue(doc("PeerAuthentication", "{mtls: {mode: strict}}"))
    assert issue.path == "spec.mtls.mode"
    assert "'STRICT', 'PERMISSIVE' or 'DISABLE'" in issue.message


@pytest.mark.parametrize("path", ["/api/*", "*/info", "*", "/exact"])
def test_authorization_paths_take_a_prefix_or_suffix_wildcard(path: str) -> None:
    spec = f"{{rules: [{{to: [{{operation: {{paths: ['{path}']}}}}]}}]}}"
    [policy] = load(doc("AuthorizationPolicy", spec))
    assert isinstance(policy, AuthorizationPolicy)


@pytest.mark.parametrize("path", ["/api/*/v1", "*/a*", "api"])
def test_authorization_paths_refuse_other_wildcards(path: str) -> None:
    spec = f"{{rules: [{{to: [{{operation: {{paths: ['{path}']}}}}]}}]}}"
    issue = only_issue(doc("AuthorizationPolicy", spec))
    assert issue.path == "spec.rules[0].to[0].operation.paths[0]"


def test_authorization_from_is_spelled_from() -> None:
    spec = (
        "{selector: {matchLabels: {app: reviews}}, action: DENY, rules: [{from: [{source: "
        "{notNamespaces: [bookinfo]}}], when: [{key: 'request.headers[x-user]', values: [a*]}]}]}"
    )
    [policy] = load(doc("AuthorizationPolicy", spec))
    assert isinstance(policy, AuthorizationPolicy)
    [rule] = policy.spec.rules
    assert rule.from_[0].source.not_namespaces == ["bookinfo"]
    assert b'"from":[' in policy.to_json_bytes()


def test_conditions_name_a_known_attribute_and_fitting_values() -> None:
    spec = "{rules: [{when: [{key: request.body, values: [x]}]}]}"
    assert "unsupported condition key" in only_issue(doc("AuthorizationPolicy", spec)).message
    spec = "{rules: [{when: [{key: source.ip, values: [10.0.0.0/33]}]}]}"
    assert "not a valid IP block" in only_issue(doc("AuthorizationPolicy", spec)).message
    spec = "{rules: [{when: [{key: destination.port}]}]}"
    assert "needs values or notValues" in only_issue(doc("AuthorizationPolicy", spec)).message


def test_an_empty_source_is_refused() -> None:
    spec = "{rules: [{from: [{source: {}}]}]}"
    issue = only_issue(doc("AuthorizationPolicy", spec))
    assert issue.path == "spec.rules[0].from[0].source"
    assert "would match every peer" in issue.message


# --- RateLimitPolicy and Gateway -----------------------------------------------------------


def test_a_rate_limit_needs_a_positive_request_count() -> None:
    spec = "{targetRef: {kind: Service, name: ratings}, limit: {requests: 0, per: 1s}}"
    issue = only_issue(doc("RateLimitPolicy", spec))
    assert issue.path == "spec.limit.requests"


GATEWAY_TLS = "{certificateFile: /etc/certs/gw.pem, keyFile: /etc/certs/gw.key}"


def test_gateway_listeners_fit_their_protocol() -> None:
    def listener(text: str) -> str:
        return doc("Gateway", f"{{selector: {{app: ingress}}, listeners: [{text}]}}", name="edge")

    assert "needs tls" in only_issue(listener("{name: web, port: 443, protocol: HTTPS}")).message
    text = "{name: web, port: 443, protocol: HTTPS, tls: {certificateFile: /c.pem}}"
    assert "certificateFile and tls.keyFile" in only_issue(listener(text)).message
    text = "{name: web, port: 80, protocol: HTTP, tls: {mode: Passthrough}}"
    assert "does not apply to a HTTP listener" in only_issue(listener(text)).message
    text = "{name: web, port: 443, protocol: HTTPS, tls: {mode: Passthrough}}"
    assert "use protocol TLS" in only_issue(listener(text)).message
    [gateway] = load(listener(f"{{name: web, port: 443, protocol: HTTPS, tls: {GATEWAY_TLS}}}"))
    assert gateway.spec.listeners[0].tls.mode == "Terminate"  # type: ignore[attr-defined]


def test_gateway_listeners_are_distinct() -> None:
    listeners = (
        "[{name: a, port: 80, protocol: HTTP, hostname: shop.example.com}, "
        "{name: b, port: 80, protocol: HTTP, hostname: shop.example.com}]"
    )
    spec = f"{{selector: {{app: ingress}}, listeners: {listeners}}}"
    issue = only_issue(doc("Gateway", spec, name="edge"))
    assert "same port and hostname (port 80 host shop.example.com)" in issue.message
    spec = (
        "{selector: {app: ingress}, listeners: [{name: a, port: 80, protocol: HTTP}, "
        "{name: a, port: 81, protocol: HTTP}]}"
    )
    assert "listener names must be unique" in only_issue(doc("Gateway", spec, name="e")).message


def test_a_port_named_for_grpc_or_http2_is_spoken_to_that_way_unless_it_says_otherwise() -> None:
    def protocol(**port: object) -> str:
        return ServicePort.model_validate({"port": 9090, **port}).protocol

    assert protocol(name="grpc") == "GRPC"
    assert protocol(name="grpc-ratings") == "GRPC"
    assert protocol(name="http2-api") == "HTTP2"
    assert protocol(name="grpc-web") == "HTTP"  # gRPC-Web travels over HTTP/1.1
    assert protocol(name="grpcx") == "HTTP"
    assert protocol(name="grpc", protocol="HTTP") == "HTTP"  # a stated protocol wins
