"""Per-command CPU cost of each step a replica takes, in one process.

`rsm bench` says how much CPU each replica spends per 1,000 commands; this
says where it goes, step by step, without sockets, disks or other processes
in the way. Each step runs on a batch of `--batch` commands the way the
replica runs it (a `BenchCounter.add` in a client session, 10-byte argument)
and is reported in microseconds per command (the best of `--repeat` runs).

    .venv/bin/python benchmarks/hotpath.py [--batch 128] [--repeat 30]

Leader steps: decode the client's request frames, propose, encode one
AppendEntries, write the batch to LMDB (no fsync: that cost is the disk's),
apply, encode the answers. Follower steps: decode the AppendEntries, write,
apply. Apply and the LMDB write appear on both.
"""

from __future__ import annotations

import argparse
import random
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rsm.bench import BenchCounter
from rsm.codec import decode_message, encode_message
from rsm.consensus.config import Config
from rsm.consensus.types import ConfState, Entry, EntryKind, HardState, Message, MessageType
from rsm.protocol import Request, decode_submit, encode_ok, encode_request
from rsm.statemachine import MachineHost, encode_register_session, prepare_call
from rsm.storage import open_store
from rsm.storage.memory import MemoryStorage

ENTRY_HEADER = struct.Struct(">Q")


def _best_us(fn: Callable[[], object], repeat: int, per: int, clock: Callable[[], float] = time.perf_counter) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best / per * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    n, repeat = args.batch, args.repeat

    prepared = prepare_call(BenchCounter, "add", [b"x" * 10])
    payloads = [prepared.payload(1, seq, seq) for seq in range(1, n + 1)]
    frames = [encode_request(Request(i, "submit", p)) for i, p in enumerate(payloads)]
    stamped = [ENTRY_HEADER.pack(1_700_000_000_000) + p for p in payloads]
    entries = [Entry(1000 + i, 3, EntryKind.NORMAL, d) for i, d in enumerate(stamped)]
    append = Message(type=MessageType.APPEND, src="n1", dst="n2", term=3, log_term=3, index=999, commit=990,
                     entries=tuple(entries))
    wire = encode_message(append)

    rows: list[tuple[str, str, float]] = []

    rows.append(("leader", "decode submit frames", _best_us(lambda: [decode_submit(f) for f in frames], repeat, n)))

    from rsm.consensus.node import Node

    def propose() -> None:
        storage = MemoryStorage(ConfState(voters=frozenset({"n1"})))
        node = Node("n1", Config(), storage, random.Random(1))
        node.campaign()
        while node.has_ready():
            rd = node.ready()
            storage.save(rd.hard_state, rd.entries)
            node.advance(rd)
        start = time.perf_counter()
        node.propose_batch(stamped)
        timings.append(time.perf_counter() - start)

    timings: list[float] = []
    for _ in range(repeat):
        propose()
    rows.append(("leader", "propose_batch", min(timings) / n * 1e6))
    rows.append(("leader", "encode AppendEntries", _best_us(lambda: encode_message(append), repeat, n)))
    rows.append(("follower", "decode AppendEntries", _best_us(lambda: decode_message(wire), repeat, n)))

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "raft", cluster_id="c", node_id="n1",
                           initial_conf=ConfState(voters=frozenset({"n1"})))
        store.save(HardState(term=1), [])
        next_index = [1]

        def save() -> None:
            batch = [Entry(next_index[0] + i, 1, EntryKind.NORMAL, d) for i, d in enumerate(stamped)]
            next_index[0] += n
            store._log.save(None, batch)

        # CPU time, not wall time: the fsync's wait is the disk's, its system
        # calls are ours.
        rows.append(("both", "LMDB save (CPU, with fsync)", _best_us(save, repeat, n, time.process_time)))
        store.close()

    host = MachineHost(BenchCounter())
    host.apply_batch([(1, 1, 1_700_000_000_000, encode_register_session())])
    index = [2]

    def apply() -> None:
        items = [(index[0] + i, 1, 1_700_000_000_000 + index[0], p) for i, p in enumerate(payloads)]
        index[0] += n
        host.apply_batch(items)

    # Each run replays the same seqs: later runs are answered from the session's
    # remembered results, so measure fresh sessions by re-registering.
    def apply_fresh() -> None:
        host.apply_batch([(index[0], 1, 1_700_000_000_000, encode_register_session())])
        index[0] += 1
        apply()

    rows.append(("both", "apply (session command)", _best_us(apply_fresh, repeat, n)))
    result = host.apply_batch([(index[0], 1, 1_700_000_000_000, encode_register_session())])[0]
    rows.append(("leader", "encode answers", _best_us(lambda: [encode_ok(i, result) for i in range(n)], repeat, n)))

    print(f"per-command CPU, batches of {n}, best of {repeat} (microseconds)")
    for who, step, us in rows:
        print(f"  {who:8} {step:28} {us:7.2f}")
    leader = sum(us for who, _, us in rows if who in ("leader", "both"))
    follower = sum(us for who, _, us in rows if who in ("follower", "both"))
    print(f"  sum: leader {leader:.1f}, follower {follower:.1f} microseconds per command; `rsm bench` reports "
          "the whole process (event loop, sockets, timers too) in CPU seconds per 1,000 commands")


if __name__ == "__main__":
    main()
