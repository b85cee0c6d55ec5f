"""End to end: real replica processes (`rsm replica`), the client, the CLI.

Each cluster is three `python -m rsm.cli replica` processes on free loopback
ports, in a temporary directory. Waits are for conditions (a leader, an
exit), each bounded; nothing sleeps for a guessed time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("rsm.replica", reason="the replica runtime is not in this tree yet")

from examples.counter.machine import Counter
from examples.kvstore.machine import KVStore
from rsm.cli import ReplicaProcesses, free_base_port, init_cluster
from rsm.client import AsyncClient, Client
from rsm.config import load_config

NODES = ["n1", "n2", "n3"]


def start_cluster(directory: Path, app: str) -> tuple[Path, ReplicaProcesses]:
    config = init_cluster(directory, replicas=3, base_port=free_base_port(6), app=app)
    processes = ReplicaProcesses(config, NODES, directory / "logs")
    processes.start()
    return config, processes


def logs(processes: ReplicaProcesses) -> str:
    return "\n".join(f"--- {c.log_path}\n{c.log_path.read_text()[-3000:]}" for c in processes.children.values())


def wait_for(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def kv_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    config, processes = start_cluster(tmp_path_factory.mktemp("kv"), "examples.kvstore.machine:KVStore")
    try:
        yield config
    finally:
        codes = processes.stop()
        assert {n: 0 for n in NODES} == codes, logs(processes)


def run_cli(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout_s)


def test_kvstore_command_line_against_a_real_cluster(kv_cluster: Path) -> None:
    kv = ["-m", "examples.kvstore", "--config", str(kv_cluster)]
    put = run_cli(*kv, "put", "colour", "blue")
    assert (0, "ok\n") == (put.returncode, put.stdout), put.stderr
    assert "blue\n" == run_cli(*kv, "get", "colour").stdout
    assert 0 == run_cli(*kv, "cas", "colour", "blue", "green").returncode
    assert 1 == run_cli(*kv, "cas", "colour", "blue", "red").returncode
    assert "colour\tgreen\n" == run_cli(*kv, "scan", "col").stdout
    assert 1 == run_cli(*kv, "get", "missing").returncode


def test_rsm_status_json_on_a_real_cluster(kv_cluster: Path) -> None:
    with Client.from_config(kv_cluster) as client:
        client.proxy(KVStore).put("k", "v")  # a leader exists and has committed something
        leader = client.leader

        def everyone_applied() -> bool:
            return all(isinstance(s, dict) and s["applied"] == s["commit"] for s in client.status_all().values())

        wait_for(everyone_applied)
    result = run_cli("-m", "rsm.cli", "status", "--config", str(kv_cluster), "--json")
    report = json.loads(result.stdout)
    assert 0 == result.returncode, result.stdout + result.stderr
    assert (leader, True, []) == (report["leader"], report["healthy"], report["divergence"])
    assert {"leader"} == {r["role"] for r in report["replicas"].values()} - {"follower"}


def test_queries_served_by_a_follower(kv_cluster: Path) -> None:
    with Client.from_config(kv_cluster) as writer:
        writer.proxy(KVStore).put("shared", "written through the leader")
        follower = next(n for n in NODES if n != writer.leader)
    with Client.from_config(kv_cluster, read_from=follower) as reader:
        # Linearizable: the follower asks the leader for a read index first, so
        # it sees the write that completed before the query started.
        assert "written through the leader" == reader.proxy(KVStore).get("shared")
        assert reader.leader is None  # no command was sent: it never needed the leader


def test_commands_in_flight_across_a_leader_crash_apply_exactly_once(tmp_path: Path) -> None:
    config, processes = start_cluster(tmp_path, "examples.counter.machine:Counter")
    try:
        results, killed = asyncio.run(increments_across_a_crash(config, processes))
        total = len(results)
        # Every increment ran exactly once: the values are 1..N with no gap
        # (a double apply skips a value) and no repeat.
        assert list(range(1, total + 1)) == sorted(results), logs(processes)
        assert [(killed, -signal.SIGKILL)] == processes.poll()  # the death is reported, not hidden
    finally:
        processes.stop()


async def increments_across_a_crash(config: Path, processes: ReplicaProcesses) -> tuple[list[int], str]:
    """32 workers increment back to back (so commands are always in flight);
    the leader is SIGKILLed after 100 answers; they go on to 400 in all."""
    results: list[int] = []
    hundred = asyncio.Event()
    async with AsyncClient.from_config(config) as client:
        counter = client.proxy(Counter)

        async def worker() -> None:
            while len(results) < 400:
                results.append(await counter.increment())
                if len(results) >= 100:
                    hundred.set()

        workers = [asyncio.ensure_future(worker()) for _ in range(32)]
        await hundred.wait()
        killed = client.leader
        assert killed is not None
        processes.kill(killed, signal.SIGKILL)
        await asyncio.gather(*workers)
        assert killed != client.leader
        assert client.stats.retries > 0  # commands really were in flight at the crash
        assert len(results) == await counter.get()
        return results, killed


def test_rsm_cluster_up_starts_and_stops_every_replica(tmp_path: Path) -> None:
    base_port = free_base_port(6)
    up = subprocess.Popen(
        [sys.executable, "-m", "rsm.cli", "cluster", "up", "--dir", str(tmp_path), "--base-port", str(base_port),
         "--app", "examples.counter.machine:Counter", "--refresh-s", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(up.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(line.startswith("leader: n") for line in lines))
        with Client.from_config(tmp_path / "cluster.toml") as client:
            assert 1 == client.proxy(Counter).increment()
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)
        reader.join(5)
    output = "".join(lines)
    assert 0 == up.returncode, output
    assert "stopped: n1 exit 0, n2 exit 0, n3 exit 0" in output
    config = load_config(tmp_path / "cluster.toml")
    assert sorted(NODES) == sorted(config.replicas)


def _gone(pid: int) -> bool:
    """The process has exited (a zombie left for init to reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_replicas_stop_when_their_supervisor_is_sigkilled(tmp_path: Path) -> None:
    config = init_cluster(tmp_path, replicas=3, base_port=free_base_port(6), app="examples.counter.machine:Counter")
    # A supervisor of its own, so that this test can SIGKILL it.
    script = (
        "import sys, time; from rsm.cli import ReplicaProcesses\n"
        f"p = ReplicaProcesses({str(config)!r}, {NODES!r}, {str(tmp_path / 'logs')!r}); p.start()\n"
        "print(*[c.process.pid for c in p.children.values()], flush=True)\n"
        "time.sleep(120)\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert supervisor.stdout is not None
    pids = [int(pid) for pid in supervisor.stdout.readline().split()]
    try:
        assert 3 == len(pids)
        with Client.from_config(config) as client:
            assert 1 == client.proxy(Counter).increment()  # the replicas are up and serving
        supervisor.kill()
        supervisor.wait(10)
        wait_for(lambda: all(_gone(pid) for pid in pids), timeout_s=20.0)
    finally:
        for pid in pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
    # They stopped cleanly (SIGTERM-like), saying why.
    for node_id in NODES:
        text = (tmp_path / "logs" / f"{node_id}.log").read_text()
        assert "supervisor" in text and "is gone; stopping" in text, text[-2000:]
        assert f"replica {node_id} stopped" in text, text[-2000:]
