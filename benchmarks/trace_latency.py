"""Where one command's time goes at 1 in flight: a timeline across processes.

Starts 3 replicas (`BenchCounter`, default settings) whose driver steps are
wrapped to record CLOCK_MONOTONIC timestamps (the same clock in every
process), sends `--commands` sessionless `add`s one at a time over the raw
client protocol, then lines the records up against each command's send and
answer times. It prints the median of each stage and, with `--timeline`, the
raw events around the median command.

    .venv/bin/python benchmarks/trace_latency.py [--commands 3000] [--timeline]

The wrappers cost a few microseconds per step; the figures are for finding
the big items, not for quoting latency (use `rsm bench` or `peers.py`).
Stages, in the order a command meets them:

- client -> leader: from the client's send to the leader reading the frame;
- leader: request -> appends sent: decode, propose, encode, both writes;
- leader fsync: its own LMDB commit of the entry;
- leader -> follower: appends written -> the faster follower reading them;
- follower fsync: that follower's LMDB commit;
- follower: fsync -> ack sent;
- ack -> answer sent: the leader reads the ack, commits, applies, answers;
- leader -> client: answer written -> the client has it.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Run as a replica: `trace_latency.py --replica CONFIG NODE_ID OUT_DIR`.
_REPLICA = "--replica"


def _replica_main(config: str, node_id: str, out_dir: str) -> int:
    """A replica whose steps record timestamps, written out at exit."""
    import atexit

    from rsm import replica
    from rsm.net import connection, framing

    events: list[tuple[int, str]] = []
    now = time.monotonic_ns

    def dump() -> None:
        with open(Path(out_dir) / f"{node_id}.json", "w") as f:
            json.dump(events, f)

    atexit.register(dump)

    def wrap(cls: type, name: str, label: str) -> None:
        original = getattr(cls, name)

        def wrapped(*args: object, **kwargs: object) -> object:
            events.append((now(), label))
            result = original(*args, **kwargs)
            events.append((now(), label + ":end"))
            return result

        setattr(cls, name, wrapped)

    wrap(framing.FrameWriter, "write_frames", "write")
    wrap(replica.Replica, "_on_peer_frame", "peer_frame")
    wrap(replica.Replica, "_propose_submits", "propose")
    wrap(replica.Replica, "_persist", "persist")
    wrap(replica.Replica, "_apply", "apply")
    recv_batch = connection.Connection.recv_batch

    async def traced_recv_batch(self: connection.Connection) -> list[bytes]:
        frames = await recv_batch(self)
        events.append((now(), "client_frames"))
        return frames

    connection.Connection.recv_batch = traced_recv_batch  # type: ignore[method-assign]
    return replica.main(config, node_id)


async def _drive(ports: list[int], secret: bytes, commands: int,
                 in_flight: int) -> tuple[str, list[tuple[int, int]]]:
    from rsm.bench import BenchCounter
    from rsm.net.connection import connect
    from rsm.protocol import Code, Request, decode_response, encode_request
    from rsm.statemachine import encode_call

    leader = None
    while leader is None:
        for i, port in enumerate(ports):
            conn = await connect(("127.0.0.1", port), cluster_id="trace", secret=secret)
            conn.send(encode_request(Request(1, "status")))
            status = decode_response(await conn.recv()).value
            await conn.close()
            if status["role"] == "leader":
                leader = i
        await asyncio.sleep(0.05)
    conn = await connect(("127.0.0.1", ports[leader]), cluster_id="trace", secret=secret)
    payload = encode_call(BenchCounter, "add", [b"x" * 10])
    sent: dict[int, int] = {}
    marks = []
    next_id = 10

    def send() -> None:
        nonlocal next_id
        next_id += 1
        sent[next_id] = time.monotonic_ns()
        conn.send(encode_request(Request(next_id, "submit", payload)))

    for _ in range(min(in_flight, commands)):
        send()
    while sent:
        frames = await conn.recv_batch()
        now = time.monotonic_ns()
        for frame in frames:
            response = decode_response(frame)
            if response.code != Code.OK:
                raise SystemExit(f"command {response.request_id} answered {response}")
            marks.append((sent.pop(response.request_id), now))
            if next_id - 10 < commands:
                send()
    await conn.close()
    return f"n{leader + 1}", marks


def _first(times: list[int], labels: list[str], label: str, after: int, before: int) -> int | None:
    i = bisect.bisect_left(times, after)
    while i < len(times) and times[i] <= before:
        if labels[i] == label:
            return times[i]
        i += 1
    return None


def _last(times: list[int], labels: list[str], label: str, after: int, before: int) -> int | None:
    i = bisect.bisect_right(times, before) - 1
    while i >= 0 and times[i] >= after:
        if labels[i] == label:
            return times[i]
        i -= 1
    return None


def _stages(leader: str, events: dict[str, list[tuple[int, str]]],
            marks: list[tuple[int, int]]) -> dict[str, list[float]]:
    """Per command, the duration of each stage (microseconds), where found."""
    series = {node: ([t for t, _ in evs], [label for _, label in evs]) for node, evs in events.items()}
    followers = [n for n in events if n != leader]
    out: dict[str, list[float]] = {}

    def add(name: str, a: int | None, b: int | None) -> None:
        if a is not None and b is not None and b >= a:
            out.setdefault(name, []).append((b - a) / 1000)

    lt, ll = series[leader]
    for t0, t1 in marks:
        recv = _first(lt, ll, "client_frames", t0, t1)
        if recv is None:
            continue
        appends_start = _first(lt, ll, "write", recv, t1)
        appends_end = _first(lt, ll, "write:end", recv, t1)
        persist = _first(lt, ll, "persist", recv, t1)
        persist_end = _first(lt, ll, "persist:end", persist or recv, t1)
        answer = _last(lt, ll, "write", recv, t1)
        add("client -> leader", t0, recv)
        add("leader: request -> appends sent", recv, appends_end)
        add("leader fsync", persist, persist_end)
        best: tuple[int, int, int, int, int] | None = None
        for node in followers:
            ft, fl = series[node]
            got = _first(ft, fl, "peer_frame", appends_start or recv, t1)
            fsync = _first(ft, fl, "persist", got or t1, t1)
            fsync_end = _first(ft, fl, "persist:end", fsync or t1, t1)
            ack = _first(ft, fl, "write:end", fsync_end or t1, t1)
            if None not in (got, fsync, fsync_end, ack) and (best is None or ack < best[4]):  # type: ignore[operator]
                best = (appends_start or recv, got, fsync, fsync_end, ack)  # type: ignore[assignment]
        if best is not None:
            sent, got, fsync, fsync_end, ack = best
            add("leader -> follower", sent, got)
            add("follower fsync", fsync, fsync_end)
            add("follower: fsync -> ack sent", fsync_end, ack)
            add("ack -> answer sent", ack, answer)
        add("leader -> client", answer, t1)
        add("total", t0, t1)
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == _REPLICA:
        return _replica_main(*sys.argv[2:5])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=1,
                        help="commands outstanding at once (the stages are clearest at 1)")
    parser.add_argument("--warmup", type=int, default=300, help="first commands left out of the figures")
    parser.add_argument("--timeline", action="store_true", help="print the events around the median command")
    parser.add_argument("--dir", default=None, help="where the cluster keeps its data (default: a temp dir)")
    args = parser.parse_args()

    from rsm import aio
    from rsm.config import free_local_ports, render_config, write_secret

    root = Path(tempfile.mkdtemp(prefix="rsm-trace-", dir=args.dir))
    trace = root / "trace"
    trace.mkdir()
    ports = free_local_ports(6)
    table = {f"n{i + 1}": (f"127.0.0.1:{ports[2 * i]}", f"127.0.0.1:{ports[2 * i + 1]}", f"data/n{i + 1}")
             for i in range(3)}
    write_secret(root / "cluster.secret")
    (root / "cluster.toml").write_text(render_config(cluster_id="trace", app="rsm.bench:BenchCounter",
                                                     secret_file="cluster.secret", replicas=table))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    procs = []
    try:
        for node in table:
            with open(root / f"{node}.log", "wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, __file__, _REPLICA, str(root / "cluster.toml"), node, str(trace)],
                    env=env, stdout=subprocess.PIPE, stderr=log))
        for proc in procs:
            assert proc.stdout is not None
            if "ready" not in proc.stdout.readline().decode(errors="replace"):
                raise SystemExit(f"a replica did not start; see {root}")
        secret = (root / "cluster.secret").read_bytes().strip()
        leader, marks = aio.run(_drive([ports[2 * i + 1] for i in range(3)], secret, args.commands, args.in_flight))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    events = {node: [tuple(e) for e in json.loads((trace / f"{node}.json").read_text())] for node in table}
    marks = marks[args.warmup:]
    stages = _stages(leader, events, marks)
    print(f"{len(marks)} commands at {args.in_flight} in flight, leader {leader}; "
          "median of each stage (microseconds):")
    for name, values in stages.items():
        print(f"  {name:34} {statistics.median(values):8.1f}   (found for {len(values)})")
    if args.timeline:
        ordered = sorted(range(len(marks)), key=lambda k: marks[k][1] - marks[k][0])
        t0, t1 = marks[ordered[len(ordered) // 2]]
        print(f"\nthe median command ({(t1 - t0) / 1000:.1f} us), every recorded step (L: leader):")
        merged = sorted((t, ("L " if node == leader else node), label)
                        for node, evs in events.items() for t, label in evs if t0 - 50_000 <= t <= t1 + 20_000)
        for t, who, label in merged:
            print(f"  {(t - t0) / 1000:8.1f} {who:3} {label}")
    print(f"data: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
