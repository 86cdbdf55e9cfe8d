"""Any valid resource survives the store and the YAML round trip unchanged (hypothesis).

Strategies build valid documents of every kind as plain data, the way a user writes
them; each must validate, encode to the stored JSON and decode to an equal resource,
and its YAML and JSON forms must load back to the same resource as well.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.api import KINDS, Resource, from_json_bytes
from mycelium.api.loading import load_documents

type Doc = dict[str, Any]

names = st.from_regex(r"[a-z]([a-z0-9-]{0,12}[a-z0-9])?", fullmatch=True)
label_keys = st.from_regex(r"([a-z]{1,6}\.io/)?[a-z][a-z0-9_.-]{0,8}[a-z0-9]", fullmatch=True)
label_values = st.from_regex(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,8}[A-Za-z0-9])?)?", fullmatch=True)
labels = st.dictionaries(label_keys, label_values, max_size=3)
selector_labels = st.dictionaries(label_keys, label_values, min_size=1, max_size=3)
ports = st.integers(1, 65535)
hostnames = st.from_regex(
    r"(\*\.)?[a-z]([a-z0-9-]{0,7}[a-z0-9])?(\.[a-z][a-z0-9]{0,5}){0,2}", fullmatch=True
)
header_names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9-]{0,12}", fullmatch=True)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
durations = st.one_of(
    st.builds("{}{}".format, st.integers(1, 100_000), st.sampled_from(["ms", "s", "m", "h"])),
    st.builds("{}.{}s".format, st.integers(0, 100), st.integers(1, 999)),
)
percentages = st.one_of(st.integers(0, 100), st.floats(0, 100, allow_nan=False))
paths = st.from_regex(r"/[a-z0-9/_-]{0,12}", fullmatch=True)
regexes = st.sampled_from([r"/api/v[0-9]+/.*", r"^/(a|b)$", r"[a-z]+", r".*\.png"])
ipv4 = st.ip_addresses(v=4).map(str)
ips = st.ip_addresses().map(str)
cidrs = st.one_of(ips, st.sampled_from(["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]))
wildcards = st.one_of(names, names.map("{}*".format), names.map("*{}".format), st.just("*"))


def document(
    kind: str, spec: st.SearchStrategy[Doc], *, cluster: bool = False
) -> st.SearchStrategy[Doc]:
    metadata = st.fixed_dictionaries(
        {"name": names},
        optional={"labels": labels, "annotations": st.dictionaries(names, text, max_size=2)}
        | ({} if cluster else {"namespace": names}),
    )
    return st.fixed_dictionaries(
        {
            "apiVersion": st.just("mycelium.io/v1"),
            "kind": st.just(kind),
            "metadata": metadata,
            "spec": spec,
        }
    )


# --- per kind ------------------------------------------------------------------------------

namespace_spec = st.one_of(
    st.fixed_dictionaries({}, optional={"mode": st.just("sidecar")}),
    st.fixed_dictionaries({"mode": st.just("ambient")}, optional={"waypoint": names}),
)

service_port = st.fixed_dictionaries(
    {"name": names, "port": ports},
    optional={
        "targetPort": ports,
        "protocol": st.sampled_from(["HTTP", "HTTP2", "GRPC", "TCP", "TLS"]),
        "opaque": st.booleans(),
    },
)
service_spec = st.fixed_dictionaries(
    {
        "ports": st.lists(
            service_port,
            min_size=1,
            max_size=4,
            unique_by=(lambda p: p["name"], lambda p: p["port"]),
        )
    },
    optional={"selector": labels, "vip": ipv4, "hosts": st.lists(hostnames, max_size=2)},
)

workload_spec = st.fixed_dictionaries(
    {"address": ips},
    optional={
        "serviceAccount": names,
        "ports": st.lists(
            st.fixed_dictionaries({"port": ports}, optional={"name": names}), max_size=3
        ),
        "node": names,
        "weight": st.integers(1, 1000),
        "healthy": st.booleans(),
    },
)

parent_ref = st.fixed_dictionaries(
    {"name": names},
    optional={"kind": st.sampled_from(["Service", "Gateway"]), "namespace": names, "port": ports},
)
backend_ref = st.fixed_dictionaries(
    {"name": names},
    optional={"namespace": names, "port": ports, "subset": names, "weight": st.integers(0, 1000)},
)
backend_refs = st.lists(backend_ref, min_size=1, max_size=3).filter(
    lambda refs: sum(ref.get("weight", 1) for ref in refs) > 0
)
path_match = st.one_of(
    st.fixed_dictionaries(
        {}, optional={"type": st.sampled_from(["Exact", "PathPrefix"]), "value": paths}
    ),
    st.fixed_dictionaries({"type": st.just("RegularExpression"), "value": regexes}),
)
value_match = st.one_of(
    st.fixed_dictionaries(
        {"name": header_names, "value": text}, optional={"type": st.just("Exact")}
    ),
    st.fixed_dictionaries(
        {"name": header_names, "value": regexes, "type": st.just("RegularExpression")}
    ),
)
http_match = st.fixed_dictionaries(
    {},
    optional={
        "path": path_match,
        "headers": st.lists(value_match, max_size=2),
        "queryParams": st.lists(value_match, max_size=2),
        "method": st.sampled_from(["GET", "POST", "DELETE"]),
    },
)
header_modifier = st.fixed_dictionaries(
    {},
    optional={
        "set": st.dictionaries(header_names.map(lambda n: "s-" + n), text, max_size=2),
        "add": st.dictionaries(header_names, text, max_size=2),
        "remove": st.lists(header_names.map(lambda n: "r-" + n), max_size=2),
    },
)
filters = st.fixed_dictionaries(
    {},
    optional={
        "requestHeaders": header_modifier,
        "responseHeaders": header_modifier,
        "urlRewrite": st.fixed_dictionaries(
            {},
            optional={
                "path": st.fixed_dictionaries({"replaceFullPath": paths}),
                "hostname": hostnames,
            },
        ),
    },
)
retries = st.one_of(
    st.fixed_dictionaries(
        {"attempts": st.integers(0, 10)},
        optional={
            "perTryTimeout": durations,
            "retryOn": st.lists(
                st.sampled_from(
                    ["5xx", "gateway-error", "reset", "connect-failure", "refused-stream"]
                ),
                max_size=3,
            ),
        },
    ),
    st.fixed_dictionaries(
        {
            "attempts": st.integers(0, 10),
            "retryOn": st.just(["retriable-status-codes"]),
            "retriableStatusCodes": st.lists(st.integers(100, 599), min_size=1, max_size=3),
        }
    ),
)
fault = st.one_of(
    st.fixed_dictionaries(
        {
            "delay": st.fixed_dictionaries(
                {"fixedDelay": durations}, optional={"percentage": percentages}
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "abort": st.fixed_dictionaries(
                {"httpStatus": st.integers(100, 599)}, optional={"percentage": percentages}
            )
        }
    ),
)
mirror = st.fixed_dictionaries(
    {
        "backendRef": st.fixed_dictionaries(
            {"name": names}, optional={"subset": names, "port": ports}
        )
    },
    optional={"percentage": percentages},
)
http_rule = st.fixed_dictionaries(
    {"backendRefs": backend_refs},
    optional={
        "matches": st.lists(http_match, max_size=2),
        "filters": filters,
        "timeout": durations,
        "retries": retries,
        "fault": fault,
        "mirror": mirror,
    },
)
http_route_spec = st.fixed_dictionaries(
    {
        "parentRefs": st.lists(parent_ref, min_size=1, max_size=2),
        "rules": st.lists(http_rule, min_size=1, max_size=3),
    },
    optional={"hostnames": st.lists(hostnames, max_size=2)},
)
tcp_route_spec = st.fixed_dictionaries(
    {
        "parentRefs": st.lists(parent_ref, min_size=1, max_size=2),
        "rules": st.lists(
            st.fixed_dictionaries({"backendRefs": backend_refs}), min_size=1, max_size=2
        ),
    }
)

load_balancer = st.one_of(
    st.fixed_dictionaries(
        {}, optional={"type": st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST", "P2C_EWMA"])}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("CONSISTENT_HASH"),
            "consistentHash": st.one_of(
                st.fixed_dictionaries({"header": header_names}),
                st.fixed_dictionaries({"cookie": names}),
                st.fixed_dictionaries({"sourceIP": st.just(True)}),
            ),
        }
    ),
)
destination_policy_spec = st.fixed_dictionaries(
    {"host": st.one_of(names, st.builds("{}.{}".format, names, names))},
    optional={
        "loadBalancer": load_balancer,
        "connectionPool": st.fixed_dictionaries(
            {},
            optional={
                "maxConnections": st.integers(1, 10_000),
                "maxPendingRequests": st.integers(1, 10_000),
                "maxRequestsInFlight": st.integers(1, 10_000),
                "connectTimeout": durations,
                "idleTimeout": durations,
            },
        ),
        "outlierDetection": st.fixed_dictionaries(
            {"consecutive5xxErrors": st.integers(1, 100)},
            optional={
                "consecutiveGatewayErrors": st.integers(1, 100),
                "interval": durations,
                "baseEjectionTime": durations,
                "maxEjectionPercent": percentages,
            },
        ),
        "retryBudget": st.fixed_dictionaries(
            {},
            optional={
                "ratio": st.floats(0, 1, allow_nan=False),
                "minRetriesPerSecond": st.integers(0, 1000),
                "ttl": durations,
            },
        ),
        "subsets": st.lists(
            st.fixed_dictionaries({"name": names, "labels": selector_labels}),
            max_size=3,
            unique_by=lambda s: s["name"],
        ),
    },
)

mtls = st.fixed_dictionaries({"mode": st.sampled_from(["STRICT", "PERMISSIVE", "DISABLE"])})
peer_authentication_spec = st.one_of(
    st.fixed_dictionaries({"mtls": mtls}),
    st.fixed_dictionaries(
        {
            "selector": st.fixed_dictionaries({"matchLabels": selector_labels}),
            "mtls": mtls,
            "portLevelMtls": st.dictionaries(ports, mtls, max_size=2),
        }
    ),
)

source = st.fixed_dictionaries(
    {"principals": st.lists(wildcards, min_size=1, max_size=2)},
    optional={
        "notPrincipals": st.lists(wildcards, max_size=2),
        "namespaces": st.lists(wildcards, max_size=2),
        "notNamespaces": st.lists(wildcards, max_size=2),
        "ipBlocks": st.lists(cidrs, max_size=2),
        "notIpBlocks": st.lists(cidrs, max_size=2),
    },
)
operation = st.fixed_dictionaries(
    {"methods": st.lists(st.sampled_from(["GET", "POST", "PUT"]), min_size=1, max_size=2)},
    optional={
        "notMethods": st.lists(st.sampled_from(["DELETE", "PATCH"]), max_size=1),
        "paths": st.lists(st.one_of(paths, paths.map("{}*".format), st.just("*.png")), max_size=2),
        "notPaths": st.lists(paths, max_size=2),
        "ports": st.lists(ports, max_size=2),
        "notPorts": st.lists(ports, max_size=2),
    },
)
condition = st.one_of(
    st.fixed_dictionaries(
        {
            "key": header_names.map("request.headers[{}]".format),
            "values": st.lists(wildcards, min_size=1, max_size=2),
        }
    ),
    st.fixed_dictionaries(
        {"key": st.just("source.ip"), "notValues": st.lists(cidrs, min_size=1, max_size=2)}
    ),
    st.fixed_dictionaries(
        {"key": st.just("destination.port"), "values": st.lists(ports.map(str), min_size=1)}
    ),
)
authorization_policy_spec = st.fixed_dictionaries(
    {},
    optional={
        "selector": st.fixed_dictionaries({}, optional={"matchLabels": labels}),
        "action": st.sampled_from(["ALLOW", "DENY", "AUDIT"]),
        "rules": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "from": st.lists(st.fixed_dictionaries({"source": source}), max_size=2),
                    "to": st.lists(st.fixed_dictionaries({"operation": operation}), max_size=2),
                    "when": st.lists(condition, max_size=2),
                },
            ),
            max_size=2,
        ),
    },
)

rate_limit_policy_spec = st.fixed_dictionaries(
    {
        "targetRef": st.fixed_dictionaries(
            {"kind": st.sampled_from(["Service", "HTTPRoute"]), "name": names}
        ),
        "limit": st.fixed_dictionaries(
            {"requests": st.integers(1, 10**6), "per": durations},
            optional={"burst": st.integers(1, 10**6)},
        ),
    },
    optional={"scope": st.sampled_from(["route", "workload"])},
)

tls = st.fixed_dictionaries(
    {"certificateFile": st.just("/etc/certs/tls.crt"), "keyFile": st.just("/etc/certs/tls.key")},
    optional={"mode": st.just("Terminate")},
)
listener = st.one_of(
    st.fixed_dictionaries(
        {"name": names, "port": ports, "protocol": st.sampled_from(["HTTP", "TCP"])},
        optional={"hostname": hostnames},
    ),
    st.fixed_dictionaries(
        {"name": names, "port": ports, "protocol": st.sampled_from(["HTTPS", "TLS"]), "tls": tls},
        optional={"hostname": hostnames},
    ),
    st.fixed_dictionaries(
        {
            "name": names,
            "port": ports,
            "protocol": st.just("TLS"),
            "tls": st.just({"mode": "Passthrough"}),
        }
    ),
)
gateway_spec = st.fixed_dictionaries(
    {
        "selector": selector_labels,
        "listeners": st.lists(
            listener,
            min_size=1,
            max_size=3,
            unique_by=(
                lambda item: item["name"],
                lambda item: (item["port"], item.get("hostname")),
            ),
        ),
    }
)

documents = st.one_of(
    document("Namespace", namespace_spec, cluster=True),
    document("Service", service_spec),
    document("Workload", workload_spec),
    document("HTTPRoute", http_route_spec),
    document("TCPRoute", tcp_route_spec),
    document("DestinationPolicy", destination_policy_spec),
    document("PeerAuthentication", peer_authentication_spec),
    document("AuthorizationPolicy", authorization_policy_spec),
    document("RateLimitPolicy", rate_limit_policy_spec),
    document("Gateway", gateway_spec),
)

ROUND_TRIP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ROUND_TRIP
@given(documents)
def test_a_valid_resource_survives_the_store(doc: Doc) -> None:
    resource = KINDS[doc["kind"]].model_validate(doc)
    stored = resource.to_json_bytes()
    decoded = from_json_bytes(resource.kind, stored)
    assert decoded == resource
    assert decoded.to_json_bytes() == stored


@ROUND_TRIP
@given(documents)
def test_a_valid_resource_reads_back_from_its_yaml_and_its_stored_json(doc: Doc) -> None:
    [from_yaml] = load_documents(yaml.safe_dump(doc), source="generated.yaml")
    expected: Resource = KINDS[doc["kind"]].model_validate(doc)
    assert from_yaml == expected
    # What the store holds can be saved to a file and applied again as it is.
    stored = json.loads(expected.to_json_bytes())
    [reapplied] = load_documents(yaml.safe_dump(stored), source="stored.yaml")
    assert reapplied == expected
