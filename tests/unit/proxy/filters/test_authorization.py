"""AuthorizationPolicy decisions in Istio's order: DENY first, then no ALLOW policy
means allow, a matching ALLOW allows, anything else is denied; AUDIT only notes."""

from __future__ import annotations

from mycelium.discovery import config as cfg
from mycelium.proxy.filters.authorization import AccessRequest, Authorizer

PRODUCTPAGE = "spiffe://cluster.local/ns/shop/sa/productpage"
STRANGER = "spiffe://cluster.local/ns/other/sa/stranger"


def policy(action: str, *rules: cfg.AuthzRule, name: str = "shop/p") -> cfg.AuthzPolicy:
    return cfg.AuthzPolicy(name=name, action=action, rules=list(rules))  # type: ignore[arg-type]


def get(path: str = "/", principal: str | None = PRODUCTPAGE, **kw: object) -> AccessRequest:
    return AccessRequest(
        source_ip=str(kw.pop("source_ip", "198.18.0.5")),
        port=int(kw.pop("port", 9080)),  # type: ignore[call-overload]
        principal=principal,
        method=str(kw.pop("method", "GET")),
        path=path,
        headers=kw.pop("headers", {}),  # type: ignore[arg-type]
    )


def tcp(principal: str | None = PRODUCTPAGE, port: int = 5432) -> AccessRequest:
    return AccessRequest(source_ip="198.18.0.5", port=port, principal=principal)


FROM_PRODUCTPAGE = cfg.AuthzRule(
    sources=[cfg.SourceMatch(principals=["cluster.local/ns/shop/sa/productpage"])]
)


def test_no_policy_allows_everything() -> None:
    decision = Authorizer([]).decide(get())
    assert decision.allowed
    assert decision.policy is None


def test_an_allow_policy_lets_in_only_what_it_names() -> None:
    authorizer = Authorizer([policy("ALLOW", FROM_PRODUCTPAGE, name="shop/viewers")])
    assert authorizer.decide(get()).policy == "shop/viewers"
    assert not authorizer.decide(get(principal=STRANGER)).allowed
    assert not authorizer.decide(get(principal=None)).allowed  # plaintext: no principal


def test_an_allow_policy_without_rules_allows_nothing() -> None:
    assert not Authorizer([policy("ALLOW")]).decide(get()).allowed


def test_deny_wins_over_allow() -> None:
    deny_admin = cfg.AuthzRule(operations=[cfg.OperationMatch(paths=["/admin*"])])
    authorizer = Authorizer(
        [policy("ALLOW", FROM_PRODUCTPAGE), policy("DENY", deny_admin, name="shop/no-admin")]
    )
    assert authorizer.decide(get("/books")).allowed
    denied = authorizer.decide(get("/admin/users"))
    assert not denied.allowed
    assert denied.policy == "shop/no-admin"


def test_paths_match_exactly_by_prefix_or_by_suffix() -> None:
    rule = cfg.AuthzRule(operations=[cfg.OperationMatch(paths=["/health", "/api/*", "*.css"])])
    authorizer = Authorizer([policy("ALLOW", rule)])
    for path, allowed in [
        ("/health", True),
        ("/healthz", False),
        ("/api/v1/books", True),
        ("/site.css", True),
        ("/index.html", False),
    ]:
        assert authorizer.decide(get(path)).allowed is allowed, path


def test_not_forms_exclude() -> None:
    rule = cfg.AuthzRule(
        sources=[cfg.SourceMatch(not_namespaces=["other"])],
        operations=[cfg.OperationMatch(not_methods=["DELETE"])],
    )
    authorizer = Authorizer([policy("ALLOW", rule)])
    assert authorizer.decide(get()).allowed
    assert not authorizer.decide(get(principal=STRANGER)).allowed
    assert not authorizer.decide(get(method="DELETE")).allowed


def test_ip_blocks_and_headers_and_ports() -> None:
    rule = cfg.AuthzRule(
        sources=[cfg.SourceMatch(ip_blocks=["198.18.0.0/24"])],
        operations=[cfg.OperationMatch(ports=[9080])],
        conditions=[cfg.ConditionMatch(key="request.headers[x-user]", values=["alice", "bo*"])],
    )
    authorizer = Authorizer([policy("ALLOW", rule)])
    assert authorizer.decide(get(headers={"x-user": "bob"})).allowed
    assert not authorizer.decide(get(headers={"x-user": "carol"})).allowed
    assert not authorizer.decide(get(headers={})).allowed
    assert not authorizer.decide(get(headers={"x-user": "alice"}, source_ip="198.19.0.5")).allowed
    assert not authorizer.decide(get(headers={"x-user": "alice"}, port=8080)).allowed


def test_tcp_cannot_satisfy_http_rules_of_an_allow_policy() -> None:
    http_rule = cfg.AuthzRule(operations=[cfg.OperationMatch(methods=["GET"])])
    assert not Authorizer([policy("ALLOW", http_rule)]).decide(tcp()).allowed
    # but a DENY policy with HTTP parts refuses the connection rather than let it by
    assert not Authorizer([policy("DENY", http_rule)]).decide(tcp()).allowed
    # L4-only rules apply to TCP as they are
    by_port = cfg.AuthzRule(operations=[cfg.OperationMatch(ports=[5432])])
    assert Authorizer([policy("ALLOW", by_port)]).decide(tcp()).allowed
    assert not Authorizer([policy("ALLOW", by_port)]).decide(tcp(port=6379)).allowed


def test_any_authenticated_peer() -> None:
    rule = cfg.AuthzRule(sources=[cfg.SourceMatch(principals=["*"])])
    authorizer = Authorizer([policy("ALLOW", rule)])
    assert authorizer.decide(get(principal=STRANGER)).allowed
    assert not authorizer.decide(get(principal=None)).allowed


def test_audit_policies_only_note() -> None:
    rule = cfg.AuthzRule(operations=[cfg.OperationMatch(paths=["/admin*"])])
    decision = Authorizer([policy("AUDIT", rule, name="shop/audit-admin")]).decide(get("/admin"))
    assert decision.allowed
    assert decision.audited == ("shop/audit-admin",)
