"""An operator's session against a real controller: apply, get, describe, delete, status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from conftest import Controller

BOOKINFO = """\
apiVersion: mycelium.io/v1
kind: Service
metadata:
  name: reviews
  labels: {app: reviews}
spec:
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080}
---
apiVersion: mycelium.io/v1
kind: Workload
metadata:
  name: reviews-v1
  labels: {app: reviews, version: v1}
spec:
  address: 127.0.10.4
  serviceAccount: reviews
---
apiVersion: mycelium.io/v1
kind: Workload
metadata:
  name: ratings-v1
  labels: {app: ratings}
spec:
  address: 127.0.10.5
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata:
  name: reviews
spec:
  parentRefs: [{name: reviews}]
  rules:
  - backendRefs: [{name: reviews, port: 9080}]
"""

SHOP_SERVICE = """\
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  selector: {app: cart}
  ports: [{name: http, port: 8080}]
"""


def table(stdout: str) -> list[dict[str, str]]:
    """Rows of a `myc get` table as dicts (cells never contain spaces in these tests)."""
    header, *rows = [line.split() for line in stdout.splitlines() if line.strip()]
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_apply_get_describe_delete(controller: Controller, tmp_path: Path) -> None:
    manifest = tmp_path / "bookinfo.yaml"
    manifest.write_text(BOOKINFO)

    # apply: one line per resource, kubectl style
    assert controller.myc("apply", "-f", str(manifest)).ok().splitlines() == [
        "service.mycelium.io/reviews created",
        "workload.mycelium.io/reviews-v1 created",
        "workload.mycelium.io/ratings-v1 created",
        "httproute.mycelium.io/reviews created",
    ]

    # get: a table with the kind's columns
    (service,) = table(controller.myc("get", "services").ok())
    assert service["NAME"] == "reviews"
    assert service["VIP"].startswith("198.19.")  # allocated by the controller
    assert service["PORTS"] == "9080/HTTP"
    assert service["SELECTOR"] == "app=reviews"
    assert int(service["REVISION"]) > 0
    (route,) = table(controller.myc("get", "hr").ok())
    assert (route["PARENTS"], route["BACKENDS"]) == ("reviews", "reviews:9080(100%)")

    # get -o yaml: the stored resource, with its revisions
    document = yaml.safe_load(controller.myc("get", "svc", "reviews", "-o", "yaml").ok())
    assert document["kind"] == "Service"
    assert document["metadata"]["name"] == "reviews"
    assert document["metadata"]["revision"] == int(service["REVISION"])
    assert document["spec"]["ports"][0]["targetPort"] == 9080

    # describe: the workloads the selector matches, not the others
    described = controller.myc("describe", "service", "reviews").ok()
    assert "Name:         reviews" in described
    assert "Namespace:    default" in described
    assert "selector:\n    app: reviews" in described
    assert "Workloads:" in described
    assert "reviews-v1" in described
    assert "ratings-v1" not in described
    assert "Proxies:      <none> connected" in described

    # delete, then it is gone
    assert controller.myc("delete", "httproute", "reviews").ok() == (
        "httproute.mycelium.io/reviews deleted\n"
    )
    gone = controller.myc("get", "httproute", "reviews")
    assert (gone.code, gone.stderr) == (1, 'error: httproutes "reviews" not found\n')
    assert controller.myc("get", "httproutes").stderr == (
        "No resources found in default namespace.\n"
    )

    # status: the store has moved on
    status = controller.myc("status").ok()
    assert f"Controller:   {controller.url}" in status
    assert "Store:        sqlite" in status
    assert "Workloads:    2" in status


def test_applying_again_reports_what_changed(controller: Controller, tmp_path: Path) -> None:
    manifest = tmp_path / "bookinfo.yaml"
    manifest.write_text(BOOKINFO)
    controller.myc("apply", "-f", str(manifest)).ok()

    manifest.write_text(BOOKINFO.replace("port: 9080}", "port: 9081}", 1))
    lines = controller.myc("apply", "-f", str(manifest)).ok().splitlines()

    assert lines[0] == "service.mycelium.io/reviews configured"
    assert set(lines[1:]) == {
        "workload.mycelium.io/reviews-v1 unchanged",
        "workload.mycelium.io/ratings-v1 unchanged",
        "httproute.mycelium.io/reviews unchanged",
    }


def test_a_dry_run_shows_each_field_that_would_change(controller: Controller) -> None:
    controller.myc("apply", "-f", "-", stdin=BOOKINFO).ok()
    changed = BOOKINFO.replace(
        "  - backendRefs: [{name: reviews, port: 9080}]\n",
        "  - backendRefs: [{name: reviews, port: 9080, weight: 90}]\n    timeout: 2s\n",
    )
    out = controller.myc("apply", "--dry-run", "-f", "-", stdin=changed).ok().splitlines()

    at = out.index("httproute.mycelium.io/reviews configured (dry run)")
    assert out[at + 1 : at + 3] == [
        "  spec.rules[0].backendRefs[0].weight: 1 -> 90",
        '  spec.rules[0].timeout: (unset) -> "2s"',
    ]
    assert "service.mycelium.io/reviews unchanged (dry run)" in out
    # and nothing was written
    shown = controller.myc("get", "httproute", "reviews", "-o", "yaml").ok()
    assert "timeout" not in shown


def test_a_dry_run_writes_nothing(controller: Controller) -> None:
    out = controller.myc("apply", "--dry-run", "-f", "-", stdin=SHOP_SERVICE).ok()

    assert out == "service.mycelium.io/cart created (dry run)\n"
    assert controller.myc("get", "svc", "-n", "shop").stderr == (
        "No resources found in shop namespace.\n"
    )


def test_apply_n_puts_resources_that_name_no_namespace_there(controller: Controller) -> None:
    out = controller.myc("apply", "-n", "staging", "-f", "-", stdin=BOOKINFO).ok()

    assert "httproute.mycelium.io/reviews created" in out
    staged = table(controller.myc("get", "svc", "-n", "staging").ok())
    assert [row["NAME"] for row in staged] == ["reviews"]
    assert controller.myc("get", "svc", "reviews").code == 1  # not in default

    # A resource that names another namespace is refused, and nothing is written.
    refused = controller.myc("apply", "-n", "staging", "-f", "-", stdin=SHOP_SERVICE)
    assert refused.code == 1
    assert "Service 'cart' is in namespace 'shop', not 'staging' as -n says" in refused.stderr
    assert "pass -n shop" in refused.stderr
    assert controller.myc("get", "svc", "cart", "-n", "shop").code == 1


def test_output_formats(controller: Controller) -> None:
    controller.myc("apply", "-f", "-", stdin=BOOKINFO).ok()
    controller.myc("apply", "-f", "-", stdin=SHOP_SERVICE).ok()

    # -A adds the namespace; -n picks one
    rows = table(controller.myc("get", "svc", "-A").ok())
    assert {(r["NAME"], r["NAMESPACE"]) for r in rows} == {("reviews", "default"), ("cart", "shop")}
    assert [r["NAME"] for r in table(controller.myc("get", "svc", "-n", "shop").ok())] == ["cart"]

    # -o json: one object, or a list under "items"
    listing = json.loads(controller.myc("get", "workloads", "-o", "json").ok())
    assert sorted(i["metadata"]["name"] for i in listing["items"]) == ["ratings-v1", "reviews-v1"]
    single = json.loads(controller.myc("get", "wl", "reviews-v1", "-o", "json").ok())
    assert single["spec"]["address"] == "127.0.10.4"

    # -o yaml for a list: documents separated by ---
    documents = list(yaml.safe_load_all(controller.myc("get", "wl", "-o", "yaml").ok()))
    assert sorted(d["metadata"]["name"] for d in documents) == ["ratings-v1", "reviews-v1"]

    # -o name, and -o wide's extra columns
    assert sorted(controller.myc("get", "wl", "-o", "name").ok().split()) == [
        "workload.mycelium.io/ratings-v1",
        "workload.mycelium.io/reviews-v1",
    ]
    wide = {r["NAME"]: r for r in table(controller.myc("get", "wl", "-o", "wide").ok())}
    assert wide["reviews-v1"]["SERVICE-ACCOUNT"] == "reviews"
    assert wide["reviews-v1"]["HEALTHY"] == "true"
    assert wide["ratings-v1"]["SERVICE-ACCOUNT"] == "default"


def test_delete_by_file_and_missing_resources(controller: Controller, tmp_path: Path) -> None:
    manifest = tmp_path / "bookinfo.yaml"
    manifest.write_text(BOOKINFO)
    controller.myc("apply", "-f", str(manifest)).ok()
    controller.myc("delete", "workload", "ratings-v1").ok()

    result = controller.myc("delete", "-f", str(manifest))

    # Everything that exists is deleted; the missing one is reported; exit 1 at the end.
    assert result.code == 1
    assert result.stdout.splitlines() == [
        "service.mycelium.io/reviews deleted",
        "workload.mycelium.io/reviews-v1 deleted",
        "httproute.mycelium.io/reviews deleted",
    ]
    assert result.stderr == 'error: workloads "ratings-v1" not found\n'
    assert controller.myc("delete", "-f", str(manifest), "--ignore-not-found").ok() == ""


def test_cluster_scoped_kinds_have_no_namespace(controller: Controller) -> None:
    namespace = "apiVersion: mycelium.io/v1\nkind: Namespace\nmetadata: {name: shop}\n"
    controller.myc("apply", "-f", "-", stdin=namespace).ok()

    rows = table(controller.myc("get", "namespaces", "-A").ok())

    assert [(r["NAME"], r["MODE"]) for r in rows] == [("shop", "sidecar")]
    assert "NAMESPACE" not in rows[0]
    assert "Namespace:" not in controller.myc("describe", "ns", "shop").ok()
    assert controller.myc("delete", "ns", "shop", "-n", "ignored").ok() == (
        "namespace.mycelium.io/shop deleted\n"
    )


def test_what_get_prints_can_be_applied_again(controller: Controller, tmp_path: Path) -> None:
    manifest = tmp_path / "bookinfo.yaml"
    manifest.write_text(BOOKINFO)
    controller.myc("apply", "-f", str(manifest)).ok()
    shown = controller.myc("get", "httproute", "reviews", "-o", "yaml").ok()
    assert "revision:" in shown  # the server's revisions are part of what get shows...
    # ...the fields nobody set are not (as kubectl omits them), defaults that were are
    assert "null" not in shown
    assert "[]" not in shown
    assert "{}" not in shown
    assert "weight: 1" in shown
    again = controller.myc("apply", "-f", "-", stdin=shown).ok()
    assert "httproute.mycelium.io/reviews unchanged" in again  # ...and apply ignores them
    as_json = json.loads(controller.myc("get", "httproute", "reviews", "-o", "json").ok())
    assert "fault" not in as_json["spec"]["rules"][0]
    assert "null" not in controller.myc("describe", "httproute", "reviews").ok()
