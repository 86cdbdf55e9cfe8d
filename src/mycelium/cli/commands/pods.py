"""`myc up`, `down`, `ps`, `logs`, `exec`, `scale`, `restart`: local pods on this machine.

`myc up -f mesh.yaml` starts a controller (unless one already answers at the
controller URL), applies the manifest, starts the node agent, and waits until every
Deployment's pods are ready. As root, pods are network namespaces (`--pods netns`);
otherwise, or with `--pods process`, they are processes on loopback addresses.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from mycelium import ports
from mycelium.cli.commands.options import (
    DEFAULT_NAMESPACE,
    AllNamespacesOption,
    FilenameOption,
    NamespaceOption,
)
from mycelium.cli.errors import CliError
from mycelium.cli.kinds import qualified_name
from mycelium.cli.manifests import ManifestFile, read_manifests, validate_locally
from mycelium.cli.render import console_for, print_table
from mycelium.cli.settings import settings_of

if TYPE_CHECKING:
    from mycelium.runtime.local_mesh import LocalMesh

# How a `KIND/NAME` argument may name a Deployment (as kubectl spells it).
DEPLOYMENT_WORDS = frozenset({"deploy", "deployment", "deployments"})
POD_HEADERS = ("NAMESPACE", "POD", "READY", "PHASE", "RESTARTS", "ADDRESS", "REASON")


def _local_mesh(ctx: typer.Context, discovery: str) -> LocalMesh:
    # Imported here: only these commands need the runtime.
    from mycelium.runtime.local_mesh import LocalMesh  # noqa: PLC0415

    settings = settings_of(ctx)
    return LocalMesh(settings.home, settings.controller_url.rstrip("/"), discovery)


def up_command(
    ctx: typer.Context,
    *,
    filenames: FilenameOption,
    discovery: Annotated[
        str,
        typer.Option(
            "--listen-discovery",
            metavar="HOST:PORT",
            help="Where a controller started here listens for proxies.",
        ),
    ] = f"127.0.0.1:{ports.DISCOVERY}",
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for every pod to be ready.")
    ] = 120.0,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="URL",
            help="The store of a controller started here: etcd://HOST:PORT[,HOST:PORT...] "
            "or sqlite:///PATH. Default: an embedded SQLite store under the home.",
        ),
    ] = None,
    pods_as: Annotated[
        str | None,
        typer.Option(
            "--pods",
            metavar="netns|process",
            help="netns: a network namespace per pod (needs root; the default as root). "
            "process: processes on loopback addresses (the default otherwise).",
        ),
    ] = None,
) -> None:
    """Run the manifest's Deployments as pods here, each with its sidecar.

    Starts a controller (embedded store, under the home) unless one already answers,
    applies every resource of the manifest, starts the node agent, and waits until
    each Deployment has its replicas ready. The mesh keeps running; `myc down` stops it.

    [bold]Examples[/]

      myc up -f examples/bookinfo/mesh.yaml
      myc up -f mesh.yaml --pods process --store etcd://127.0.0.1:2379
    """
    runtime = pods_as or ("netns" if os.geteuid() == 0 else "process")
    if runtime not in ("netns", "process"):
        raise CliError(f"--pods {runtime!r} must be netns or process")
    if runtime == "netns":
        from mycelium.runtime.netns_pods import NetnsUnavailable, check_available  # noqa: PLC0415

        try:
            check_available()
        except NetnsUnavailable as exc:
            raise CliError(str(exc)) from None
    files = read_manifests(filenames, sys.stdin)
    validate_locally(files)
    mesh = _local_mesh(ctx, discovery)
    console = console_for()
    if not mesh.controller_answers():
        console.print(f"starting a controller (home {mesh.home})")
        mesh.start_controller(store)
    with settings_of(ctx).client() as client:
        outcome = client.apply(files, dry_run=False)
    for result in outcome.results:
        console.print(f"{qualified_name(result.kind, result.name)} {result.action}")
    if not mesh.agent_running():
        manifest_dir = Path(filenames[0]).parent if filenames and filenames[0] != "-" else Path()
        mesh.start_agent(manifest_dir, runtime)
    wanted = _replicas_wanted(files)
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        pods = mesh.pods()
        missing = _not_ready(wanted, pods)
        progress = f"{sum(w for w in wanted.values()) - sum(missing.values())}/" + str(
            sum(wanted.values())
        )
        if progress != shown:
            console.print(f"pods ready: {progress}")
            shown = progress
        if not missing:
            break
        if time.monotonic() > deadline or not mesh.agent_running():
            print_table(console, POD_HEADERS, [_row(p) for p in pods])
            raise CliError(
                "not every pod became ready in time: "
                + ", ".join(f"{name} ({count} missing)" for name, count in missing.items())
                + f"; see `myc ps`, `myc logs POD`, and {mesh.run_dir / 'agent.log'}"
            )
        time.sleep(0.2)
    console.print(Text(""))
    print_table(console, POD_HEADERS, [_row(p) for p in mesh.pods()])


def down_command(
    ctx: typer.Context,
    *,
    discovery: Annotated[
        str, typer.Option("--listen-discovery", metavar="HOST:PORT", hidden=True)
    ] = f"127.0.0.1:{ports.DISCOVERY}",
) -> None:
    """Stop the pods, the node agent, and the controller `myc up` started.

    Each pod's app goes first, then its sidecar drains. A controller that was already
    running before `myc up` is left alone.

    [bold]Examples[/]

      myc down
    """
    stopped = _local_mesh(ctx, discovery).stop()
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def ps_command(
    ctx: typer.Context,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
    all_namespaces: AllNamespacesOption = False,
) -> None:
    """List the pods the node agent runs, in one namespace (-n) or all (-A).

    READY is the app's readiness probe; PHASE is running, backoff, completed (a job),
    failed or stopping; REASON says why a pod is not running.

    [bold]Examples[/]

      myc ps
      myc ps -n shop
      myc ps -A
    """
    mesh = _running_mesh(ctx)
    every = mesh.pods()
    pods = every if all_namespaces else [p for p in every if p["namespace"] == namespace]
    if not pods:
        elsewhere = len(every) - len(pods)
        hint = f" ({elsewhere} in other namespaces: myc ps -A)" if elsewhere else ""
        where = "" if all_namespaces else f" in namespace {namespace}"
        typer.echo(f"no pods{where}{hint}")
        return
    print_table(console_for(), POD_HEADERS, [_row(p) for p in pods])


def _running_mesh(ctx: typer.Context) -> LocalMesh:
    """The mesh of this home, or a CliError when no node agent runs there."""
    mesh = _local_mesh(ctx, "")
    if not mesh.agent_running():
        raise CliError(
            f"no mesh runs with home {mesh.home} (MYC_HOME or --home): `myc up -f FILE` starts one"
        )
    return mesh


def _pod_named(ctx: typer.Context, target: str, namespace: str) -> dict[str, Any]:
    """The pod `target` names: POD, or deploy/NAME (one of the Deployment's pods,
    a ready one first, as kubectl picks one)."""
    pods = [p for p in _running_mesh(ctx).pods() if p["namespace"] == namespace]
    kind, slash, name = target.partition("/")
    if not slash:
        found = [p for p in pods if p["name"] == target]
        if not found:
            raise CliError(
                f"no pod {target!r} runs in namespace {namespace}; `myc ps -n {namespace}` "
                "lists them (POD, or deploy/NAME for one of a Deployment's pods)"
            )
        return found[0]
    if kind.lower() not in DEPLOYMENT_WORDS:
        raise CliError(f"{target!r}: name a pod (POD) or a Deployment's pod (deploy/NAME)")
    found = [p for p in pods if p.get("deployment") == name]
    if not found:
        raise CliError(
            f"no pod of deployment {name!r} runs in namespace {namespace}; "
            f"`myc ps -n {namespace}` lists them"
        )
    found.sort(key=lambda p: (not p["ready"], p["phase"] != "running", str(p["name"])))
    return found[0]


PodArgument = Annotated[
    str,
    typer.Argument(
        metavar="POD|deploy/NAME",
        help="A pod's name (see myc ps), or deploy/NAME for one of a Deployment's pods.",
    ),
]


def logs_command(
    ctx: typer.Context,
    target: PodArgument,
    *,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
    sidecar: Annotated[
        bool, typer.Option("--sidecar", help="The sidecar's log instead of the app's.")
    ] = False,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing.")] = False,
) -> None:
    """Print a pod's app (or sidecar) log.

    The app's standard output and error as the node agent captured them, or with
    --sidecar its proxy's; -f keeps printing what comes.

    [bold]Examples[/]

      myc logs reviews-v2-41855f-0
      myc logs deploy/reviews-v2 --sidecar -f
      myc logs -n shop deploy/cart
    """
    pod = _pod_named(ctx, target, namespace)
    mesh = _local_mesh(ctx, "")
    path = mesh.state_dir / "pods" / pod["namespace"] / pod["name"]
    path = path / ("sidecar.log" if sidecar else "app.log")
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise CliError(f"{path} does not exist yet: the process has not started") from None
    with handle:
        sys.stdout.buffer.write(handle.read())
        sys.stdout.flush()
        while follow:
            chunk = handle.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.2)


def exec_command(
    ctx: typer.Context,
    target: PodArgument,
    command: Annotated[list[str], typer.Argument(help="The command and its arguments.")],
    *,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Run a command as one of the pod's own processes.

    In a netns pod the command runs inside the pod's network namespace (its /etc/hosts
    names the services, its sidecar intercepts every call); in a process pod it gets
    HTTP_PROXY pointing at the pod's sidecar. Either way its calls go through the mesh
    as the pod's identity. Its exit status is the command's.

    [bold]Examples[/]

      myc exec reviews-v2-41855f-0 -- curl -s http://ratings:9080/ratings/0
      myc exec deploy/reviews-v2 -- curl -s http://ratings:9080/ratings/0
    """
    listed = _pod_named(ctx, target, namespace)
    env = {
        k: v for k, v in os.environ.items() if k != "MYC_TOKEN" and not k.lower().endswith("_proxy")
    }
    env.update(
        MYC_POD_NAME=str(listed["name"]),
        MYC_POD_NAMESPACE=str(listed["namespace"]),
        MYC_POD_ADDRESS=str(listed["address"]),
        MYC_APP_ADDRESS=str(listed.get("app_address", "")),
        NO_PROXY="",
        no_proxy="",
    )
    netns = listed.get("netns")
    if netns:
        # Inside the pod's namespace its sidecar intercepts every call, as the app's.
        from mycelium.runtime.netns_pods import IP  # noqa: PLC0415

        command = [IP, "netns", "exec", str(netns), *command]
    else:
        proxy = f"http://{listed['address']}:{ports.OUTBOUND}"
        env.update(HTTP_PROXY=proxy, http_proxy=proxy)
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        raise CliError(f"cannot run {command[0]!r}: {exc.strerror}") from None


def _replicas_wanted(files: Sequence[ManifestFile]) -> dict[str, int]:
    from mycelium.api.deployment import Deployment  # noqa: PLC0415
    from mycelium.api.loading import load_documents  # noqa: PLC0415

    wanted = {}
    for file in files:
        for resource in load_documents(file.content, source=file.name):
            if isinstance(resource, Deployment):
                key = f"{resource.metadata.namespace}/{resource.metadata.name}"
                wanted[key] = resource.spec.replicas
    return wanted


def _not_ready(wanted: dict[str, int], pods: list[dict[str, Any]]) -> dict[str, int]:
    missing = {}
    for key, replicas in wanted.items():
        namespace, name = key.split("/")
        ready = sum(
            1
            for p in pods
            if p["namespace"] == namespace
            and p["deployment"] == name
            and (p["ready"] or p["phase"] == "completed")
        )
        if ready < replicas:
            missing[key] = replicas - ready
    return missing


def _row(pod: dict[str, Any]) -> list[str]:
    return [
        str(pod["namespace"]),
        str(pod["name"]),
        "1/1" if pod["ready"] else "0/1",
        str(pod["phase"]),
        str(pod["restarts"]),
        str(pod["address"]),
        str(pod["reason"] or ""),
    ]


def scale_command(
    ctx: typer.Context,
    deployment: Annotated[str, typer.Argument(help="deploy/NAME or NAME.")],
    *,
    replicas: Annotated[int, typer.Option("--replicas", help="How many pods (0-64).")],
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Set how many pods a Deployment runs.

    The Deployment is updated in the controller; the node agent then starts or stops
    pods (the highest numbers go first).

    [bold]Examples[/]

      myc scale deploy/reviews-v2 --replicas 3
    """
    _update_deployment(ctx, deployment, namespace, replicas=replicas)


def restart_command(
    ctx: typer.Context,
    deployment: Annotated[str, typer.Argument(help="deploy/NAME or NAME.")],
    *,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Replace a Deployment's pods one at a time, without losing ready capacity.

    Stamps the Deployment with the time (`mycelium.io/restartedAt`), which gives it a
    new pod template: the node agent starts a new pod, and stops an old one only once
    the new one is ready, until all are new.

    [bold]Examples[/]

      myc restart deploy/reviews-v2
    """
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _update_deployment(ctx, deployment, namespace, restarted_at=stamp)


def _update_deployment(
    ctx: typer.Context,
    reference: str,
    namespace: str,
    *,
    replicas: int | None = None,
    restarted_at: str | None = None,
) -> None:
    # Imported here: the runtime's modules and the resource models are not needed for
    # `--help`.
    from mycelium.api.documents import SERVED_ONLY  # noqa: PLC0415
    from mycelium.runtime.reconcile import RESTARTED_AT  # noqa: PLC0415

    kind, _, name = reference.rpartition("/")
    if kind and kind.lower() not in DEPLOYMENT_WORDS:
        raise CliError(f"{reference!r} is not a Deployment: write deploy/NAME")
    with settings_of(ctx).client() as client:
        document = dict(client.get_resource("Deployment", namespace, name))
        metadata = {k: v for k, v in dict(document["metadata"]).items() if k not in SERVED_ONLY}
        spec = dict(document["spec"])
        if replicas is not None:
            spec["replicas"] = replicas
        if restarted_at is not None:
            metadata["annotations"] = {
                **metadata.get("annotations", {}),
                RESTARTED_AT: restarted_at,
            }
        document.update(metadata=metadata, spec=spec)
        content = json.dumps(document)
        files = [ManifestFile(name=f"deployment/{name}", content=content)]
        outcome = client.apply(files, dry_run=False)
    for result in outcome.results:
        typer.echo(f"{qualified_name(result.kind, result.name)} {result.action}")
