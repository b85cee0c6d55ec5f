"""`rsm bench`: throughput and latency of a cluster, measured from client processes.

It starts a local 3-replica cluster (or uses `--config`), runs `--processes`
client processes that each keep `--in-flight` commands outstanding (through
the real `AsyncClient`: sessions, exactly-once, leader discovery), for
`--duration` seconds after a warm-up, and reports:

- throughput: commands acknowledged per second (each one applied, persisted on
  a majority);
- latency p50 / p90 / p99 / p99.9 / max, measured by the clients;
- what explains them, from the replicas' counters: commands per fsync (group
  commit), entries per AppendEntries message (batching), CPU seconds per 1,000
  commands and resident memory of each replica.

The command is `BenchCounter.add(payload)`: it adds the payload's length to a
counter, so `--value-bytes` sets the command size. Every figure is measured
in the run that prints it; nothing is hard-coded.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from rsm import aio
from rsm.statemachine import StateMachine, command, query

if TYPE_CHECKING:
    from rsm.cli import ReplicaProcesses

#: Warm-up before measuring, so connections, sessions and caches are in place.
WARMUP_S = 1.0
#: How long to wait for a local cluster to elect a leader.
START_TIMEOUT_S = 30.0


class BenchCounter(StateMachine):
    """The benchmark's machine: one command whose size the benchmark chooses."""

    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    @command
    def add(self, payload: bytes) -> int:
        self.total += len(payload)
        self.count += 1
        return self.count

    @query
    def get(self) -> int:
        return self.count


@attrs.frozen(kw_only=True)
class BenchOptions:
    processes: int = 2
    in_flight: int = 128  # per process
    value_bytes: int = 10
    duration_s: float = 10.0
    replicas: int = 3
    warmup_s: float = WARMUP_S
    #: Where a local cluster keeps its data (default: the temp directory).
    data_dir: str | None = None
    #: A local cluster's `[replica] cpu_scheduling`.
    cpu_scheduling: str = "batch"


# ----------------------------------------------------------------------- worker
async def _worker(config: str, in_flight: int, value_bytes: int, warmup_s: float, duration_s: float,
                  out: str) -> None:
    from rsm.client import AsyncClient

    payload = os.urandom(value_bytes)
    latencies_us = array.array("Q")
    client = AsyncClient.from_config(config)
    try:
        counter = client.proxy(BenchCounter)
        start = time.perf_counter()
        measure_from = start + warmup_s
        stop_at = measure_from + duration_s
        done = 0

        async def loop() -> int:
            nonlocal done
            answered = 0
            while True:
                sent = time.perf_counter()
                if sent >= stop_at:
                    return answered
                await counter.add(payload)
                answered += 1
                now = time.perf_counter()
                if now >= measure_from and sent >= measure_from:
                    latencies_us.append(int((now - sent) * 1e6))
                    done += 1

        async def progress() -> None:
            while True:
                await asyncio.sleep(0.5)
                print(f"done {done}", flush=True)

        reporter = asyncio.get_running_loop().create_task(progress())
        totals = await asyncio.gather(*(loop() for _ in range(in_flight)))
        reporter.cancel()
        print(f"total {sum(totals)}", flush=True)  # every answered add, warm-up included
    finally:
        await client.aclose()
    with open(out, "wb") as f:
        latencies_us.tofile(f)


def worker_main(argv: list[str]) -> int:
    config, in_flight, value_bytes, warmup_s, duration_s, out = argv
    aio.run(_worker(config, int(in_flight), int(value_bytes), float(warmup_s), float(duration_s), out))
    return 0


# --------------------------------------------------------------------- cluster
def local_cluster(replicas: int, parent_dir: str | None = None,
                  cpu_scheduling: str = "batch") -> tuple[Path, ReplicaProcesses]:
    """A throwaway cluster of BenchCounter replicas on 127.0.0.1 (not started)."""
    from rsm.cli import ReplicaProcesses
    from rsm.config import free_local_ports, render_config, write_secret

    root = Path(tempfile.mkdtemp(prefix="rsm-bench-", dir=parent_dir))
    ports = free_local_ports(2 * replicas)
    table = {
        f"n{i + 1}": (f"127.0.0.1:{ports[2 * i]}", f"127.0.0.1:{ports[2 * i + 1]}", f"data/n{i + 1}")
        for i in range(replicas)
    }
    write_secret(root / "cluster.secret")
    config = root / "cluster.toml"
    config.write_text(render_config(cluster_id="bench", app="rsm.bench:BenchCounter",
                                    secret_file="cluster.secret", replicas=table)
                      + f'\n[replica]\ncpu_scheduling = "{cpu_scheduling}"\n')
    return config, ReplicaProcesses(config, list(table), root)


# ----------------------------------------------------------------------- driver
def _statuses(config: Path) -> dict[str, dict[str, Any]]:
    from rsm.client import Client

    with Client.from_config(config) as client:
        return {k: v for k, v in client.status_all().items() if isinstance(v, dict)}


def _count(config: Path) -> int:
    """BenchCounter's count, read linearizably."""
    from rsm.client import Client

    with Client.from_config(config) as client:
        return int(client.call(BenchCounter, "get"))


def _wait_for_leader(config: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            views = _statuses(config)
        except Exception:
            views = {}
        if any(v["role"] == "leader" for v in views.values()):
            return
        time.sleep(0.1)
    raise RuntimeError("no leader elected")


def percentile(sorted_values: list[int], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))] / 1000.0


def run(options: BenchOptions, config: Path | None = None, on_progress: Any = None) -> dict[str, Any]:
    """Run the benchmark and return every figure (milliseconds for latencies)."""
    cluster = None
    if config is None:
        config, cluster = local_cluster(options.replicas, options.data_dir, options.cpu_scheduling)
        cluster.start()
    config_path = config
    outs = [Path(tempfile.mkstemp(prefix="rsm-bench-lat-")[1]) for _ in range(options.processes)]
    try:
        _wait_for_leader(config_path)
        count_before = _count(config_path)
        before = _statuses(config_path)
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "rsm.bench", "--worker", str(config_path), str(options.in_flight),
                 str(options.value_bytes), str(options.warmup_s), str(options.duration_s), str(out)],
                stdout=subprocess.PIPE, text=True,
            )
            for out in outs
        ]
        answered = _follow(workers, options, on_progress)
        codes = [w.wait() for w in workers]
        if any(codes):
            raise RuntimeError(f"a client process failed (exit {codes})")
        after = _statuses(config_path)
        applied = _count(config_path) - count_before
        if applied != answered:
            raise RuntimeError(f"the counter grew by {applied} but {answered} adds were answered: "
                               "a command was lost or applied twice")
    finally:
        if cluster:
            cluster.stop()
            if not os.environ.get("RSM_BENCH_KEEP"):
                shutil.rmtree(config_path.parent, ignore_errors=True)
    latencies: list[int] = []
    for out in outs:
        values = array.array("Q")
        values.frombytes(out.read_bytes())
        latencies.extend(values)
        out.unlink()
    latencies.sort()
    return _report(options, latencies, before, after)


def _follow(workers: list[subprocess.Popen[str]], options: BenchOptions, on_progress: Any) -> int:
    """Read the workers' progress lines until they all finish; return how
    many commands they had answered in all."""
    import selectors

    sel = selectors.DefaultSelector()
    done = {id(w): 0 for w in workers}
    for w in workers:
        assert w.stdout is not None
        sel.register(w.stdout, selectors.EVENT_READ, w)
    open_ = len(workers)
    answered = 0
    while open_:
        for key, _ in sel.select(timeout=1.0):
            line = key.fileobj.readline()  # type: ignore[union-attr]
            if not line:
                sel.unregister(key.fileobj)
                open_ -= 1
            elif line.startswith("done "):
                done[id(key.data)] = int(line.split()[1])
                if on_progress:
                    on_progress(sum(done.values()))
            elif line.startswith("total "):
                answered += int(line.split()[1])
    return answered


def _report(options: BenchOptions, latencies: list[int], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    count = len(latencies)
    replicas = {}
    for node_id, view in after.items():
        old = before.get(node_id, {})
        c1, c0 = view.get("counters", {}), old.get("counters", {})

        def delta(name: str, c1: dict[str, int] = c1, c0: dict[str, int] = c0) -> int:
            return int(c1.get(name, 0)) - int(c0.get(name, 0))

        cpu = float(view.get("cpu_s", 0.0)) - float(old.get("cpu_s", 0.0))
        # The CPU was spent on every command applied between the two status
        # readings, warm-up included, so that is the count to divide by.
        applied = delta("applied") or count
        replicas[node_id] = {
            "role": view["role"],
            "commands_per_fsync": round(delta("entries_persisted") / max(1, delta("fsyncs")), 1),
            "entries_per_append": round(delta("entries_sent") / delta("appends_sent"), 1) if delta("appends_sent") else None,
            "cpu_s_per_1000_commands": round(1000 * cpu / max(1, applied), 4),
            "rss_mib": round(view.get("rss_bytes", 0) / 2**20, 1),
            "rss_mib_at_start": round(old.get("rss_bytes", 0) / 2**20, 1),
        }
    return {
        "processes": options.processes,
        "in_flight_per_process": options.in_flight,
        "in_flight": options.processes * options.in_flight,
        "value_bytes": options.value_bytes,
        "duration_s": options.duration_s,
        "commands": count,
        "throughput_per_s": round(count / options.duration_s, 1),
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "p999_ms": percentile(latencies, 0.999),
        "max_ms": latencies[-1] / 1000.0 if latencies else 0.0,
        "replicas": replicas,
    }


def print_report(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]{result['throughput_per_s']:,.0f} commands/s[/bold]  ({result['commands']:,} in "
        f"{result['duration_s']} s, {result['in_flight']} in flight from {result['processes']} client processes, "
        f"{result['value_bytes']}-byte values)"
    )
    console.print(
        "latency ms  p50 {p50_ms:.2f}  p90 {p90_ms:.2f}  p99 {p99_ms:.2f}  p99.9 {p999_ms:.2f}  max {max_ms:.2f}".format(**result)
    )
    table = Table("replica", "role", "commands/fsync", "entries/append", "CPU s per 1k cmds", "RSS MiB (start)")
    for node_id, r in sorted(result["replicas"].items()):
        table.add_row(node_id, r["role"], str(r["commands_per_fsync"]), str(r["entries_per_append"] or "-"),
                      f"{r['cpu_s_per_1000_commands']:.3f}", f"{r['rss_mib']} ({r['rss_mib_at_start']})")
    console.print(table)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2:]))
    print(json.dumps(run(BenchOptions(duration_s=float(sys.argv[1]) if len(sys.argv) > 1 else 5.0))))
