"""rsm: 3 replica processes (`python -m rsm.replica`), load from the benchmark
process over the raw client protocol.

The cluster is what `rsm init` writes for 3 replicas on 127.0.0.1 with the
app `BenchCounter`; every setting is rsm's default. Durability: every `Ready`
batch (hard state and entries) is ONE synced LMDB transaction (fsync) before
the replica acknowledges it to the leader or applies it, so a command is on
disk on a majority before its answer.

Load: the benchmark process (not a replica) opens one client connection to the
leader and keeps `in_flight` sessionless `submit` requests outstanding, sending
the next as each answer arrives (no `AsyncClient`, no exactly-once session:
the same work the other systems' clients do). At the end a linearizable
`get` must equal the number of answers: nothing was lost.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rsm import aio
from rsm.config import render_config, write_secret
from rsm.net.connection import Connection, connect
from rsm.protocol import Code, Request, decode_response, encode_request, encode_submit
from rsm.statemachine import decode_result, encode_call

from . import common
from .common import (
    CALL_TIMEOUT_S,
    POLL_INTERVAL_S,
    BenchError,
    Children,
    Recorder,
    Timing,
    Workload,
    free_ports,
    log_tail,
    scratch_dir,
)
from .machine import BenchCounter

APP = "benchmarks.peers.machine:BenchCounter"
CLUSTER_ID = "bench-peers"
REPLICAS = 3

DURABILITY = "fsync per batch"


def describe() -> str:
    return (f"{DURABILITY} (one synced LMDB transaction); default settings; load: the benchmark "
            "process, one client connection to the leader, raw protocol, no sessions")


class _Cluster:
    """cluster.toml, the secret and the replica processes under `root`."""

    def __init__(self, root: Path, children: Children) -> None:
        self.root = root
        self.children = children
        ports = free_ports(2 * REPLICAS)
        self.ids = [f"n{i + 1}" for i in range(REPLICAS)]
        table = {node_id: (f"127.0.0.1:{ports[2 * i]}", f"127.0.0.1:{ports[2 * i + 1]}", f"data/{node_id}")
                 for i, node_id in enumerate(self.ids)}
        self.client_addresses = {node_id: ("127.0.0.1", ports[2 * i + 1]) for i, node_id in enumerate(self.ids)}
        write_secret(root / "cluster.secret")
        self.secret = (root / "cluster.secret").read_bytes().strip()
        text = render_config(cluster_id=CLUSTER_ID, app=APP, secret_file="cluster.secret", replicas=table)
        text += f'\n[replica]\ncpu_scheduling = "{common.CPU_POLICY}"\n'

        (root / "cluster.toml").write_text(text)

    def start(self) -> None:
        for node_id in self.ids:
            argv = [sys.executable, "-m", "rsm.replica", str(self.root / "cluster.toml"), node_id]
            with open(self.root / f"{node_id}.log", "ab") as log:
                proc = self.children.spawn(argv, log=log, stdout=subprocess.PIPE)
            assert proc.stdout is not None
            line = proc.stdout.readline().decode(errors="replace")  # one line once it listens
            if "ready" not in line:
                raise BenchError(f"rsm replica {node_id} did not start: {line!r}\n"
                                 f"{log_tail(self.root / f'{node_id}.log')}")


async def _call(conn: Connection, request: Request) -> Any:
    conn.send(encode_request(request))
    response = decode_response(await asyncio.wait_for(conn.recv(), CALL_TIMEOUT_S))
    if response.request_id != request.request_id or response.code != Code.OK:
        raise BenchError(f"rsm answered {response} to {request.kind}")
    return response.value


async def _wait_for_leader(conns: dict[str, Connection], timeout_s: float) -> str:
    """The leader once every replica names the same one."""
    deadline = time.monotonic() + timeout_s
    rid = 0
    while time.monotonic() < deadline:
        views = []
        for conn in conns.values():
            rid += 1
            views.append(await _call(conn, Request(rid, "status")))
        leaders = {view["leader"] for view in views}
        if len(leaders) == 1 and None not in leaders:
            return str(views[0]["leader"])
        await asyncio.sleep(POLL_INTERVAL_S)
    raise BenchError(f"rsm: no leader within {timeout_s} s")


async def _drive(cluster: _Cluster, workload: Workload, timing: Timing) -> dict[str, float]:
    conns: dict[str, Connection] = {}
    try:
        for node_id, address in cluster.client_addresses.items():
            conns[node_id] = await connect(address, cluster_id=CLUSTER_ID, secret=cluster.secret)
        leader = await _wait_for_leader(conns, timing.startup_timeout_s)
        load = await connect(cluster.client_addresses[leader], cluster_id=CLUSTER_ID, secret=cluster.secret,
                             client_id="bench-load")
        conns["load"] = load
        payload = encode_call(BenchCounter, "add", (workload.payload(),))
        sent_s: dict[int, float] = {}
        next_id = 0

        def send() -> None:
            nonlocal next_id
            next_id += 1
            sent_s[next_id] = time.perf_counter()
            load.send(encode_submit(next_id, payload))

        recorder = Recorder(timing)
        for _ in range(workload.in_flight):
            send()
        while sent_s:
            timeout_s = CALL_TIMEOUT_S if recorder.running() else timing.drain_timeout_s
            async with asyncio.timeout(timeout_s):
                frames = await load.recv_batch()  # every answer that has arrived
            if not frames:
                raise BenchError("rsm closed the connection")
            done_s = time.perf_counter()
            for frame in frames:
                response = decode_response(frame)
                if response.code != Code.OK:
                    raise BenchError(f"rsm answered {response.code.name}: {response.value!r}")
                recorder.record(sent_s.pop(response.request_id), done_s)
                if recorder.running(done_s):
                    send()
        count = decode_result(await _call(conns[leader], Request(next_id + 1, "query", encode_call(BenchCounter, "get"))))
        if count != recorder.completed:
            raise BenchError(f"rsm: counter is {count} after {recorder.completed} answered increments")
        return recorder.result()
    finally:
        for conn in conns.values():
            await conn.close()


def run_rsm(workload: Workload, timing: Timing, *, parent_dir: str | None = None) -> dict[str, float]:
    """One measurement on a fresh 3-replica rsm cluster."""
    with scratch_dir(parent_dir, "rsm-bench-peers-rsm-") as root, Children() as children:
        cluster = _Cluster(root, children)
        cluster.start()
        try:
            return aio.run(_drive(cluster, workload, timing))
        except Exception as exc:  # any failure: add the replicas' logs
            logs = "\n".join(f"--- {n}\n{log_tail(root / f'{n}.log')}" for n in cluster.ids)
            raise BenchError(f"rsm {workload.name}: {exc!r}\n{logs}") from exc


def describe_client() -> str:
    return (f"{DURABILITY} (one synced LMDB transaction); default settings; load: `rsm bench`, one client "
            "process, the real AsyncClient (sessions, exactly-once retries)")


def run_rsm_client(workload: Workload, timing: Timing, *, parent_dir: str | None = None) -> dict[str, float]:
    """One measurement through `rsm bench` (its own fresh cluster): what an
    application sees, sessions and all, rather than the raw protocol."""
    from rsm.bench import BenchOptions, run

    result = run(BenchOptions(processes=1, in_flight=workload.in_flight, value_bytes=workload.payload_bytes,
                              duration_s=timing.measure_s, warmup_s=timing.warmup_s, data_dir=parent_dir,
                              cpu_scheduling=common.CPU_POLICY))
    if not result["commands"]:
        raise BenchError(f"rsm_client {workload.name}: no command completed")
    return {name: float(result[name]) for name in ("throughput_per_s", "p50_ms", "p99_ms")}
