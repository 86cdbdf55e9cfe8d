"""Side by side: a base commit against this working tree, on the proxy's speed benches.

Issue 14 asks that the engine's restructure lose no speed, "measured side by side in
one run against the commit before the restructure" (ab94d75). Measured in two runs an
hour apart on a shared machine, two commits differ by whatever else the machine did;
interleaved in one run, that noise falls on both alike.

What it does:

1. Checks the base out into a temporary git worktree (`git worktree add --detach`) and
   copies this tree's bench scripts over the base's, so that both sides are measured by
   the same instrument: only `src/` and `tests/support/` (which the benches use to reach
   the proxy's internals) are each side's own. The base's own mtls_latency.py cannot run
   (its sidecars all bind 127.0.0.1:15020); this tree's can.
2. Builds each side as the project builds itself (`pip wheel`, which runs setup.py in
   an isolated environment with Cython: the HTTP/1.1 fast lane `_head_scan.pyx`), and
   puts the compiled modules beside their sources, into the base worktree and into this
   tree (`*.so` is ignored by git). Each side's compiled modules must then import under
   its PYTHONPATH: one side without its fast lane would be twice as slow for that alone.
3. Runs rounds of `sidecar.py`, `proxy_path.py` and `mtls_latency.py`, each bench once
   per side in turn with PYTHONPATH=<side>/src:<side>, the side that goes first
   alternating by round (base-head, head-base, ...), so that a drift in the machine's
   load over a round hits both sides alike. Each run writes its summary with `--json`.
4. Prints, per headline figure, each side's median over the rounds with its range, the
   ratio head/base of the medians, the median of the rounds' own ratios (the two runs
   of a round are minutes apart, not an hour), and whether head is within 5 % of base
   (the issue's bar) in the direction that matters. `*` marks the figures the issue names.

Bounded: `--rounds` (4), and `--max-minutes` (60): a round that would end past it is not
started. Every bench run has its own timeout and runs in its own process group, so that
a timeout, Ctrl-C or SIGTERM stops the nginx, HAProxy, controller and sidecars it
started. The worktree is removed on the way out, whatever happened; the runs' logs are
kept when something failed.

    .venv/bin/python bench/compare_commits.py                    # base ab94d75, 4 rounds
    .venv/bin/python bench/compare_commits.py --rounds 5 --json /tmp/compare.json
    .venv/bin/python bench/compare_commits.py --only proxy_path --rounds 7
    .venv/bin/python bench/compare_commits.py --smoke            # one tiny round: it works

Needs haproxy, nginx-light and wrk (the benches install them when missing, as root). The
figures are as good as the machine is quiet: quote them from an otherwise idle one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASE = "ab94d75"  # the commit before issue 14's restructure
# The issue's bar: head within 5 % of base, or better.
TOLERANCE = 0.05
# What the bench scripts import from the tests' support package (copied with them).
BENCH_HELPERS = ("tests/support/host_packages.py",)
# A bench run's timeout beyond its expected length: a controller and sidecars that start
# slowly on a loaded machine, apt-get on a first run.
RUN_SLACK_SECONDS = 180
# Seconds of a bench run besides its load (starting nginx, a controller, sidecars),
# for the budget's estimate before the first round has been timed.
SETUP_SECONDS = 15


class CompareFailure(SystemExit):
    """The comparison cannot go on: exit 1 with why."""

    def __init__(self, message: str) -> None:
        super().__init__(f"compare_commits: {message}")


@dataclass(frozen=True, kw_only=True)
class Headline:
    """One figure from a bench's summary, and which way is better."""

    label: str
    path: tuple[str, ...]  # keys into the bench's JSON summary
    higher_is_better: bool
    named_by_issue: bool = False

    def read(self, summary: dict[str, Any]) -> float | None:
        value: Any = summary
        for key in self.path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True, kw_only=True)
class Bench:
    name: str
    script: str
    args: Callable[[argparse.Namespace], list[str]]
    seconds: Callable[[argparse.Namespace], float]  # expected length of one run
    headlines: tuple[Headline, ...]


def lower(label: str, *path: str, issue: bool = False) -> Headline:
    return Headline(label=label, path=path, higher_is_better=False, named_by_issue=issue)


def higher(label: str, *path: str, issue: bool = False) -> Headline:
    return Headline(label=label, path=path, higher_is_better=True, named_by_issue=issue)


BENCHES = (
    Bench(
        name="sidecar",
        script="sidecar.py",
        # Two of sidecar.py's own rounds (ABBA inside), of four paths each.
        args=lambda a: ["--seconds", str(a.seconds), "--rounds", "1" if a.smoke else "2"],
        seconds=lambda a: SETUP_SECONDS + 4 * a.seconds * (1 if a.smoke else 2),
        headlines=(
            higher("sidecar req/s / HAProxy", "rps_vs_haproxy_per_round", "median", issue=True),
            higher("sidecar req/s", "mycelium", "rps"),
            lower("sidecar p99 ms", "mycelium", "p99_ms"),
            lower("sidecar CPU us/req", "mycelium_vs_no_telemetry", "cpu_us_per_request"),
        ),
    ),
    Bench(
        name="proxy_path",
        script="proxy_path.py",
        args=lambda a: ["--iterations", "2000", "--rounds", "1"] if a.smoke else [],
        seconds=lambda a: 5 if a.smoke else 15,
        headlines=(lower("proxy_path us/req", "us_per_request", issue=True),),
    ),
    Bench(
        name="mtls_latency",
        script="mtls_latency.py",
        args=lambda a: (
            ["--smoke"]
            if a.smoke
            else ["--seconds", str(a.seconds), "--rounds", "1", "--warmup", "2"]
        ),
        seconds=lambda a: SETUP_SECONDS + 3 * ((1 + 1) if a.smoke else (a.seconds + 2)),
        headlines=(
            lower("mTLS pair added p50 ms", "mtls", "added_p50_ms", issue=True),
            lower("mTLS pair added p99 ms", "mtls", "added_p99_ms", issue=True),
            lower("mTLS path p99 ms", "mtls", "p99_ms"),
            lower("plain pair added p99 ms", "plain", "added_p99_ms"),
            lower("mTLS client CPU us/req", "mtls", "cpu_us_per_request", "client"),
            lower("mTLS server CPU us/req", "mtls", "cpu_us_per_request", "server"),
        ),
    ),
)


@dataclass
class Side:
    name: str  # "base" or "head"
    root: Path
    description: str
    # bench name -> one summary per round
    summaries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.pop("MYCELIUM_PURE_PYTHON", None)  # both sides on their compiled fast lane
        env["PYTHONPATH"] = os.pathsep.join([str(self.root / "src"), str(self.root)])
        return env


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise CompareFailure(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def build(side: Side, wheels: Path) -> list[str]:
    """Build `side` as the project builds itself and put its compiled modules beside
    their sources; returns their module names."""
    out = wheels / side.name
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(side.root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise CompareFailure(f"building {side.name} failed:\n{done.stdout}\n{done.stderr}")
    [wheel] = out.glob("*.whl")
    modules = []
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.endswith(".so"):
                # Beside the old one, then renamed over it: a process that has the old
                # one loaded (this tree's test run, its proxies) keeps its mapping.
                # Writing into the loaded file crashed them.
                target = side.root / "src" / member
                fresh = target.with_name(target.name + ".new")
                fresh.write_bytes(archive.read(member))
                os.replace(fresh, target)
                modules.append(member.split(".", 1)[0].replace("/", "."))
    sources = sorted(p.relative_to(side.root) for p in (side.root / "src").rglob("*.pyx"))
    if sources and not modules:
        raise CompareFailure(
            f"{side.name}: {', '.join(map(str, sources))} did not compile (no C compiler or "
            f"Python headers?); pip said:\n{done.stderr}"
        )
    return modules


def check_imports(side: Side, modules: list[str]) -> None:
    """Under its PYTHONPATH a side imports its own mycelium and its compiled modules."""
    code = (
        "import importlib, sys, mycelium\n"
        "print(mycelium.__file__)\n"
        "for name in sys.argv[1:]: importlib.import_module(name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *modules],
        capture_output=True,
        text=True,
        env=side.env(),
        check=False,
    )
    if done.returncode != 0:
        raise CompareFailure(f"{side.name}: its code does not import:\n{done.stderr}")
    where = Path(done.stdout.strip())
    if not where.is_relative_to(side.root / "src"):
        raise CompareFailure(f"{side.name} imports mycelium from {where}, not {side.root}/src")


def run_bench(bench: Bench, side: Side, args: argparse.Namespace, logs: Path, round_: int) -> None:
    """One run of `bench` on `side`; its summary is appended to the side's."""
    result = logs / f"{bench.name}-{side.name}-{round_}.json"
    log = logs / f"{bench.name}-{side.name}-{round_}.log"
    command = [
        sys.executable,
        str(side.root / "bench" / bench.script),
        *bench.args(args),
        *("--json", str(result)),
    ]
    timeout = bench.seconds(args) + RUN_SLACK_SECONDS
    with open(log, "wb") as out:
        # Its own process group: everything the bench starts is stopped with it.
        proc = subprocess.Popen(
            command,
            cwd=side.root,
            env=side.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout)
        except BaseException:
            stop_group(proc)
            raise
    if proc.returncode != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-4000:]
        raise CompareFailure(
            f"{bench.script} failed on {side.name} (exit {proc.returncode}):\n{tail}"
        )
    side.summaries.setdefault(bench.name, []).append(json.loads(result.read_text()))


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the bench's process group (the benches unwind and stop what they
    started), then SIGKILL to whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def number(value: float) -> str:
    """Three or four significant digits: 33453, 139.4, 10.54, 0.352."""
    if abs(value) >= 1000:
        return f"{value:.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    text = number(statistics.median(values))
    return text if len(values) == 1 else f"{text} [{number(min(values))}-{number(max(values))}]"


def compare(base: Side, head: Side, benches: list[Bench]) -> list[dict[str, Any]]:
    rows = []
    for bench in benches:
        for line in bench.headlines:
            values = {
                side.name: [line.read(s) for s in side.summaries.get(bench.name, [])]
                for side in (base, head)
            }
            b = [v for v in values["base"] if v is not None]
            h = [v for v in values["head"] if v is not None]
            row: dict[str, Any] = {
                "figure": line.label,
                "named_by_issue": line.named_by_issue,
                "higher_is_better": line.higher_is_better,
                "base": b,
                "head": h,
            }
            # A ratio means something between positive figures only: what the mTLS pair
            # "adds" is its p99 minus the direct path's in the same run, and a stall on
            # the direct path makes it negative.
            if b and h and statistics.median(b) > 0 and statistics.median(h) > 0:
                ratio = statistics.median(h) / statistics.median(b)
                paired = [
                    hv / bv
                    for bv, hv in zip(values["base"], values["head"], strict=True)
                    if bv is not None and hv is not None and bv > 0 and hv > 0
                ]
                row["ratio_of_medians"] = round(ratio, 3)
                if paired:
                    row["median_of_round_ratios"] = round(statistics.median(paired), 3)
                ok = ratio >= 1 - TOLERANCE if line.higher_is_better else ratio <= 1 + TOLERANCE
                row["within_5_percent"] = ok
            rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], rounds: int) -> None:
    print(f"\nmedians over {rounds} round(s) [min-max]; head/base: of the medians, and the")
    print("median of each round's own ratio; * = a figure issue 14 names\n")
    header = f"{'figure':27s} {'base':>22s} {'head':>22s} {'head/base':>9s} {'paired':>7s}  5 %"
    print(header)
    print("-" * len(header))
    for row in rows:
        label = ("* " if row["named_by_issue"] else "  ") + row["figure"]
        better = "higher" if row["higher_is_better"] else "lower"
        ratio = row.get("ratio_of_medians")
        verdict = "" if ratio is None else ("ok" if row["within_5_percent"] else "WORSE")
        print(
            f"{label:27s} {spread(row['base']):>22s} {spread(row['head']):>22s} "
            f"{'n/a' if ratio is None else f'{ratio:.3f}':>9s} "
            f"{row.get('median_of_round_ratios', 'n/a')!s:>7s}  {verdict} ({better} is better)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default=DEFAULT_BASE, help="commit to compare against")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="rounds of every bench on each side (even: each side goes first as often)",
    )
    parser.add_argument(
        "--seconds", type=int, default=5, help="wrk's seconds per path in sidecar and mtls runs"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[b.name for b in BENCHES],
        help="run only this bench (repeat for several)",
    )
    parser.add_argument(
        "--max-minutes", type=float, default=60.0, help="start no round that would end later"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    parser.add_argument(
        "--smoke", action="store_true", help="one round of 1-s runs: proves it works, no more"
    )
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.seconds = 1, 1
    benches = [b for b in BENCHES if args.only is None or b.name in args.only]
    # SIGTERM unwinds through `finally` too: the worktree goes, the bench run is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    base_commit = git("rev-parse", "--verify", f"{args.base}^{{commit}}")
    head_commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="myc-compare-"))
    logs = tmp / "logs"
    logs.mkdir()
    base = Side("base", tmp / "base", f"{base_commit[:10]} (worktree {tmp / 'base'})")
    head = Side(
        "head",
        ROOT,
        f"{head_commit[:10]}{' + uncommitted changes' if dirty else ''} ({ROOT})",
    )
    failed = True
    worktree_added = False
    try:
        git("worktree", "add", "--detach", str(base.root), base_commit)
        worktree_added = True
        # The same instrument on both sides: this tree's bench scripts, and the test
        # helpers they import (a base older than a helper lacks it).
        for script in (ROOT / "bench").glob("*.py"):
            shutil.copy2(script, base.root / "bench" / script.name)
        for helper in BENCH_HELPERS:
            shutil.copy2(ROOT / helper, base.root / helper)
        for side in (base, head):
            print(f"building {side.name}: {side.description}", flush=True)
            modules = build(side, tmp / "wheels")
            check_imports(side, modules)
            print(f"  compiled: {', '.join(modules) or 'none'}", flush=True)

        budget = args.max_minutes * 60
        expected_round = sum(2 * b.seconds(args) for b in benches)
        rounds_done = 0
        for round_ in range(args.rounds):
            elapsed = time.monotonic() - started
            if round_ > 0 and elapsed + expected_round > budget:
                print(f"stopping after {round_} round(s): --max-minutes {args.max_minutes:g}")
                break
            round_started = time.monotonic()
            order = (base, head) if round_ % 2 == 0 else (head, base)
            for bench in benches:
                for side in order:
                    t0 = time.monotonic()
                    run_bench(bench, side, args, logs, round_ + 1)
                    figures = ", ".join(
                        f"{h.label} {number(value)}"
                        for h in bench.headlines[:2]
                        if (value := h.read(side.summaries[bench.name][-1])) is not None
                    )
                    print(
                        f"round {round_ + 1} {bench.name:12s} {side.name}: {figures} "
                        f"({time.monotonic() - t0:.0f} s)",
                        flush=True,
                    )
            rounds_done += 1
            # The next round's estimate: this one as it took, not as hoped.
            expected_round = time.monotonic() - round_started

        rows = compare(base, head, benches)
        print(f"\nbase {base.description}\nhead {head.description}")
        print_table(rows, rounds_done)
        report = {
            "base": base_commit,
            "head": head_commit,
            "head_uncommitted_changes": dirty,
            "rounds": rounds_done,
            "smoke": args.smoke,
            "seconds": args.seconds,
            "minutes": round((time.monotonic() - started) / 60, 1),
            "figures": rows,
            "summaries": {side.name: side.summaries for side in (base, head)},
        }
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\n{report['minutes']} min", flush=True)
        failed = False
    finally:
        if worktree_added:
            done = subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base.root)],
                capture_output=True,
                check=False,
            )
            if done.returncode != 0:
                shutil.rmtree(base.root, ignore_errors=True)
                subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)
        if failed:
            shutil.rmtree(tmp / "wheels", ignore_errors=True)
            print(f"logs kept in {logs}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
