"""Benchmark: rsm against PySyncObj and etcd, same machine, same workloads.

Each system runs as 3 replicas on 127.0.0.1, a fresh cluster for every
measurement. The workloads: a counter increment with a 10-byte and with a
1 KB argument, at 1 and at 256 commands in flight ("10B@1", "10B@256",
"1KB@1", "1KB@256"). Each measurement is a warm-up, then a fixed window;
throughput is commands completed in the window per second, latency p50/p99
is over those commands. Runs go workload by workload, every system in turn,
so drift on the machine hits all of them alike.

Systems (docs/performance.md has the details):

- rsm: fsync per batch; load from this process, raw client protocol.
- pysyncobj: no fsync (log in memory); load INSIDE the leader process (it has
  no client protocol); default config (entries batched every 0.1 s).
- pysyncobj_nobatch: the same with ``appendEntriesUseBatch=False``.
- etcd: fsync per batch (its default); a put of the argument to one key;
  load from this process over its HTTP/JSON gateway. Skipped if no `etcd`.

Prints a table with every figure and its ratio rsm/peer and, last, one JSON
line: {system: {workload: {"throughput_per_s", "p50_ms", "p99_ms"}}}, where a
system that cannot run maps to {"skipped": reason} and a measurement that
failed to {"error": message}. Exit status 1 if any measurement failed.

    .venv/bin/python benchmarks/peers.py [--seconds 5] [--warmup 1] [--runs 1]
        [--systems rsm,pysyncobj,pysyncobj_nobatch,etcd] [--workloads 10B@1,1KB@256] [--dir PATH]

Run it on the file system the replicas would use (``--dir``): on tmpfs an
fsync is free and the rsm and etcd figures say nothing about durability.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.peers` importable

from benchmarks.peers import common, etcd_bench, pysyncobj_bench, rsm_bench
from benchmarks.peers.common import (
    DEFAULT_WORKLOADS,
    MEASURE_S,
    STARTUP_TIMEOUT_S,
    WARMUP_S,
    Skipped,
    Timing,
    Workload,
    median_result,
)
from rsm.config import CPU_SCHEDULING, apply_cpu_scheduling

FIGURES = ("throughput_per_s", "p50_ms", "p99_ms")
Runner = Callable[[Workload, Timing, str | None], dict[str, float]]


class System:
    def __init__(self, name: str, durability: str, describe: Callable[[], str],
                 check: Callable[[], str], run: Runner) -> None:
        self.name, self.durability, self.describe, self.check, self.run = name, durability, describe, check, run


SYSTEMS = {
    "rsm": System("rsm", rsm_bench.DURABILITY, rsm_bench.describe, lambda: dist_version("rsm"),
                  lambda w, t, d: rsm_bench.run_rsm(w, t, parent_dir=d)),
    "rsm_client": System("rsm_client", rsm_bench.DURABILITY, rsm_bench.describe_client, lambda: dist_version("rsm"),
                         lambda w, t, d: rsm_bench.run_rsm_client(w, t, parent_dir=d)),
    "pysyncobj": System("pysyncobj", pysyncobj_bench.DURABILITY, lambda: pysyncobj_bench.describe(True),
                        pysyncobj_bench.version,
                        lambda w, t, d: pysyncobj_bench.run_pysyncobj(w, t, batch=True, parent_dir=d)),
    "pysyncobj_nobatch": System("pysyncobj_nobatch", pysyncobj_bench.DURABILITY,
                                lambda: pysyncobj_bench.describe(False), pysyncobj_bench.version,
                                lambda w, t, d: pysyncobj_bench.run_pysyncobj(w, t, batch=False, parent_dir=d)),
    "etcd": System("etcd", etcd_bench.DURABILITY, etcd_bench.describe, etcd_bench.version,
                   lambda w, t, d: etcd_bench.run_etcd(w, t, parent_dir=d)),
}


def machine_description(data_dir: Path) -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} x {cpu}, Python {platform.python_version()}, data in {data_dir}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the benchmark like Ctrl-C: clusters are stopped on the way out


def ratio(rsm: dict[str, Any], peer: dict[str, Any], key: str) -> str:
    if key not in rsm or key not in peer or not peer[key]:
        return "-"
    return f"{rsm[key] / peer[key]:.2f}"


def render(results: dict[str, dict[str, Any]], workloads: list[Workload], systems: list[System],
           title: str, console: Console) -> None:
    table = Table(title=title, caption="rsm/peer: above 1 is rsm ahead for cmds/s, behind for latency")
    for column in ("workload", "system", "durability", "cmds/s", "p50 ms", "p99 ms",
                   "rsm/peer cmds/s", "rsm/peer p50", "rsm/peer p99"):
        table.add_column(column, justify="left" if column in ("workload", "system", "durability") else "right")
    for i, workload in enumerate(workloads):
        rsm_figures = results.get("rsm", {}).get(workload.name, {})
        for system in systems:
            entry = results[system.name]
            figures = entry.get(workload.name, entry)
            if "skipped" in figures or "error" in figures:
                note = figures.get("skipped") or "failed: " + figures["error"].splitlines()[0][:60]
                table.add_row(workload.name, system.name, system.durability, f"[yellow]{note}[/yellow]",
                              "", "", "", "", "")
                continue
            ratios = ["", "", ""] if system.name.startswith("rsm") else [
                ratio(rsm_figures, figures, key) for key in FIGURES]
            table.add_row(workload.name, system.name, system.durability,
                          f"{figures['throughput_per_s']:,.0f}", f"{figures['p50_ms']:.2f}",
                          f"{figures['p99_ms']:.2f}", *ratios)
        if i < len(workloads) - 1:
            table.add_section()
    console.print(table)
    for system in systems:
        console.print(f"[bold]{system.name}[/bold]: {system.describe()}", highlight=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=MEASURE_S, help="measured seconds per workload")
    parser.add_argument("--warmup", type=float, default=WARMUP_S, help="warm-up seconds before each window")
    parser.add_argument("--runs", type=int, default=1, help="runs per workload; each figure is the median")
    parser.add_argument("--startup-timeout", type=float, default=STARTUP_TIMEOUT_S,
                        help="seconds a cluster may take to elect a leader")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, from: " + ", ".join(SYSTEMS))
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS), help="comma-separated SIZE@IN_FLIGHT")
    parser.add_argument("--dir", default=None, help="where the clusters keep their data (default: the temp dir)")
    parser.add_argument("--cpu-scheduling", choices=CPU_SCHEDULING, default="batch",
                        help="CPU policy of every process: batch (SCHED_BATCH, rsm's default, inherited by every "
                             "system's processes) or normal (none changed; rsm replicas told not to)")
    args = parser.parse_args()
    try:
        systems = [SYSTEMS[name] for name in args.systems.split(",")]
        workloads = [Workload.parse(name) for name in args.workloads.split(",")]
        timing = Timing(warmup_s=args.warmup, measure_s=args.seconds,
                        startup_timeout_s=args.startup_timeout).validate()
        if args.runs < 1:
            raise ValueError("--runs must be at least 1")
    except (KeyError, ValueError) as exc:
        parser.error(str(exc))
    # The same policy for every system: set on this process, inherited by the
    # replicas, servers and workers it starts.
    common.CPU_POLICY = args.cpu_scheduling
    policy = apply_cpu_scheduling(args.cpu_scheduling)
    signal.signal(signal.SIGTERM, _interrupt)
    err = Console(stderr=True)
    console = Console(width=None if sys.stdout.isatty() else 160)

    results: dict[str, dict[str, Any]] = {}
    versions: dict[str, str] = {}
    for system in systems:
        try:
            versions[system.name] = system.check()
            results[system.name] = {}
        except Skipped as exc:
            results[system.name] = {"skipped": str(exc)}
            err.print(f"[yellow]{system.name} skipped: {exc}[/yellow]")
    runnable = [s for s in systems if "skipped" not in results[s.name]]

    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    started = datetime.datetime.now(datetime.UTC)
    try:
        for run in range(args.runs):
            for workload in workloads:
                for system in runnable:
                    key = (system.name, workload.name)
                    if workload.name in results[system.name]:  # failed in an earlier run
                        continue
                    err.print(f"run {run + 1}/{args.runs} {workload.name:8} {system.name} ...", end=" ")
                    try:
                        figures = system.run(workload, timing, args.dir)
                    except Exception as exc:
                        err.print("[red]failed[/red]")
                        err.print(traceback.format_exc())
                        results[system.name][workload.name] = {"error": str(exc).splitlines()[0] if str(exc) else repr(exc)}
                        continue
                    err.print(f"{figures['throughput_per_s']:,.0f} cmds/s p50 {figures['p50_ms']:.2f} ms "
                              f"p99 {figures['p99_ms']:.2f} ms", highlight=False)
                    samples.setdefault(key, []).append(figures)
    except KeyboardInterrupt:
        err.print("[red]interrupted; every cluster was stopped[/red]")
        return 130
    for (name, workload_name), runs in samples.items():
        if workload_name not in results[name]:
            results[name][workload_name] = {k: round(v, 3) for k, v in median_result(runs).items()}

    data_dir = Path(args.dir or tempfile.gettempdir()).resolve()
    console.print(f"{started:%Y-%m-%d %H:%M} UTC; {machine_description(data_dir)}; "
                  + ", ".join(f"{name} {v}" for name, v in versions.items()), highlight=False)
    title = (f"3 replicas on 127.0.0.1, fresh cluster per figure; {args.runs} run(s) of "
             f"{timing.warmup_s:g} s warm-up + {timing.measure_s:g} s measured; CPU policy {policy}")
    render(results, workloads, systems, title, console)
    print(json.dumps(results), flush=True)
    failed = any("error" in figures for entry in results.values() for figures in entry.values()
                 if isinstance(figures, dict))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
