"""`myc metrics`: what Prometheus would store for one workload, without a Prometheus.

It asks the controller's service discovery (`/prometheus/targets`) where the
workload's proxies are scraped, scrapes each one as Prometheus would, and prints the
exposition with the target labels Prometheus adds (`instance` and the discovery's
`namespace`, `pod`, `workload`, `app`, `version`, `role`) joined to every sample: the
series a query would see, in Prometheus' own text format, ready for `grep`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer
from prometheus_client.parser import text_string_to_metric_families

from mycelium.cli.commands.options import DEFAULT_NAMESPACE, NamespaceOption
from mycelium.cli.commands.pods import DEPLOYMENT_WORDS
from mycelium.cli.errors import CliError
from mycelium.cli.settings import settings_of

TARGET_FORMS = "deploy/NAME (a Deployment's pods), pod/NAME or NAME (a workload or a pod)"


def selected(groups: list[dict[str, Any]], target: str, namespace: str) -> list[dict[str, Any]]:
    """The discovered proxies `target` names in `namespace`."""
    kind, _, name = target.rpartition("/")
    kind = kind.lower()
    if kind and kind not in DEPLOYMENT_WORDS and kind not in ("pod", "pods", "po"):
        raise CliError(f"{target!r}: name {TARGET_FORMS}")
    keys = ("workload",) if kind in DEPLOYMENT_WORDS else ("pod",) if kind else ("workload", "pod")
    return [
        group
        for group in groups
        if group["labels"].get("namespace") == namespace
        and group["labels"].get("role") != "controller"
        and any(group["labels"].get(key) == name for key in keys)
    ]


def with_target_labels(exposition: str, labels: dict[str, str]) -> str:
    """`exposition` again, each sample with the target's `labels` first, as Prometheus
    attaches them; a scraped label a target label would hide is kept as
    `exported_<name>`, as Prometheus keeps it (its default, honor_labels: false), and
    an empty one is left out, as Prometheus stores it."""
    out: list[str] = []
    for family in text_string_to_metric_families(exposition):
        if not family.samples:
            continue  # nothing Prometheus would store
        # the parser names a counter without its `_total`; the exposition had it
        name = family.name
        if family.type == "counter" and family.samples[0].name == f"{name}_total":
            name = f"{name}_total"
        out.append(f"# HELP {name} {family.documentation}")
        out.append(f"# TYPE {name} {family.type}")
        for sample in family.samples:
            # an empty value is no label at all to Prometheus (grpc_response_status="")
            scraped = {
                (f"exported_{name}" if name in labels else name): value
                for name, value in sample.labels.items()
                if value
            }
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in {**labels, **scraped}.items())
            out.append(f"{sample.name}{{{text}}} {_number(sample.value)}")
    return "\n".join(out) + "\n"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() else repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help=f"Whose proxies: {TARGET_FORMS}.")],
    *,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Print the metrics of a workload's proxies as Prometheus would store them.

    Scrapes each proxy the controller's service discovery lists for TARGET (Istio's
    standard metrics and the proxy's own), and adds the target labels Prometheus would
    (instance, namespace, pod, workload, app, version, role) to every sample: what
    Prometheus would see, for a mesh without one.

    [bold]Examples[/]

      myc metrics deploy/reviews-v2 -n bookinfo | grep istio_requests_total
      myc metrics productpage-v1-26a05e-0 -n bookinfo
    """
    with settings_of(ctx).client() as client:
        groups = selected(client.scrape_targets(), target, namespace)
        if not groups:
            raise CliError(
                f"no proxy of {target!r} is connected in namespace {namespace}; "
                f"`myc ps -n {namespace}` lists the pods ({TARGET_FORMS})"
            )
        for group in groups:
            labels = {k: v for k, v in group["labels"].items() if not k.startswith("__")}
            path = group["labels"].get("__metrics_path__", "/metrics")
            for address in group["targets"]:
                text = client.scrape(f"http://{address}{path}")
                typer.echo(with_target_labels(text, {"instance": address, **labels}), nl=False)
