"""Route matching as data: requests in, rule and backend out."""

from __future__ import annotations

import random
from collections import Counter

from mycelium.discovery import config as cfg
from mycelium.proxy.routing import RequestFacts, compile_route


def rule(
    name: str, *matches: cfg.RouteMatch, backends: tuple[tuple[str, int], ...] = ()
) -> cfg.HttpRule:
    return cfg.HttpRule(
        name=name,
        matches=list(matches),
        backends=[cfg.WeightedCluster(cluster=c, weight=w) for c, w in backends or (("svc", 1),)],
    )


def route(*rules: cfg.HttpRule) -> cfg.ServiceRoute:
    return cfg.ServiceRoute(
        service="reviews.default",
        hosts=["reviews"],
        ports=[],
        http_rules=[*rules, rule("default")],
        tcp_backends=[],
    )


def facts(target: str, method: str = "GET", **headers: str) -> RequestFacts:
    return RequestFacts.from_target(
        method, target, {k.replace("_", "-"): v for k, v in headers.items()}
    )


def prefix(value: str) -> cfg.RouteMatch:
    return cfg.RouteMatch(path=cfg.StringMatch(type="PathPrefix", value=value))


def test_a_longer_prefix_wins_whatever_the_rule_order() -> None:
    compiled = compile_route(route(rule("short", prefix("/api")), rule("long", prefix("/api/v2"))))
    assert compiled.match(facts("/api/v2/books")).rule.name == "long"  # type: ignore[union-attr]
    assert compiled.match(facts("/api/v1")).rule.name == "short"  # type: ignore[union-attr]
    assert compiled.match(facts("/other")).rule.name == "default"  # type: ignore[union-attr]


def test_prefixes_match_whole_path_segments() -> None:
    compiled = compile_route(route(rule("foo", prefix("/foo"))))
    assert compiled.match(facts("/foo")).rule.name == "foo"  # type: ignore[union-attr]
    assert compiled.match(facts("/foo/bar?x=1")).rule.name == "foo"  # type: ignore[union-attr]
    assert compiled.match(facts("/foobar")).rule.name == "default"  # type: ignore[union-attr]


def test_exact_and_regex_paths_headers_method_and_query() -> None:
    compiled = compile_route(
        route(
            rule("exact", cfg.RouteMatch(path=cfg.StringMatch(type="Exact", value="/login"))),
            rule(
                "regex",
                cfg.RouteMatch(path=cfg.StringMatch(type="RegularExpression", value=r"/item/\d+")),
            ),
            rule(
                "jason", cfg.RouteMatch(headers=[cfg.KeyValueMatch(name="End-User", value="jason")])
            ),
            rule("post", cfg.RouteMatch(method="POST")),
            rule(
                "beta",
                cfg.RouteMatch(
                    query_params=[
                        cfg.KeyValueMatch(name="beta", value="1|yes", type="RegularExpression")
                    ]
                ),
            ),
        )
    )
    name = lambda f: compiled.match(f).rule.name  # type: ignore[union-attr]  # noqa: E731
    assert name(facts("/login")) == "exact"
    assert name(facts("/item/42")) == "regex"
    assert name(facts("/item/x")) == "default"
    assert name(facts("/", end_user="jason")) == "jason"
    assert name(facts("/", end_user="mike")) == "default"
    assert name(facts("/", method="POST")) == "post"
    assert name(facts("/?beta=yes")) == "beta"
    assert name(facts("/?beta=no")) == "default"


def test_weights_split_traffic_in_proportion() -> None:
    compiled = compile_route(route(rule("split", backends=(("v1", 90), ("v2", 10)))))
    split = compiled.rules[0]
    rng = random.Random(7)
    counts = Counter(split.pick_backend(rng.random()).cluster for _ in range(10_000))  # type: ignore[union-attr]
    assert 8_800 < counts["v1"] < 9_200
    assert counts["v1"] + counts["v2"] == 10_000


def test_a_zero_weight_backend_is_never_picked() -> None:
    split = compile_route(route(rule("s", backends=(("v1", 0), ("v2", 5))))).rules[0]
    assert {split.pick_backend(x / 100).cluster for x in range(100)} == {"v2"}  # type: ignore[union-attr]
