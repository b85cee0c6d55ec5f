"""Real processes, real SIGKILLs, real write failures.

A child (crash_child.py) runs a deterministic workload (crash_workload.py) and
prints `ACK n` once operation n returned. The test kills it with SIGKILL at
seeded random moments, reopens the store, and checks it against the model:
every acknowledged operation is there, intact, and at most the one operation
in flight is there as well, wholly or not at all (no partial batch).
"""

from __future__ import annotations

import copy
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

from rsm.consensus.types import Entry, EntryKind, HardState
from rsm.storage import DiskStorage, MemoryStorage

from .crash_workload import apply, new_model, observe, open_crash_store

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

#: SIGKILLs in total across all child runs.
KILLS = 60
SEED = 20240607


def start_child(path: Path, first: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "crash_child.py"), str(path), str(SEED), str(first), "100000"],
        stdout=subprocess.PIPE, text=True, cwd=REPO, env=ENV,
    )


def run_and_kill(path: Path, first: int, acks_before_kill: int) -> int:
    """Start a child at operation `first`, SIGKILL it right after reading its
    `acks_before_kill`-th acknowledgement; return how many operations it acknowledged."""
    with start_child(path, first) as child:
        assert child.stdout is not None
        try:
            assert child.stdout.readline() == "READY\n"
            for _ in range(acks_before_kill):
                assert child.stdout.readline().startswith("ACK ")
        finally:
            child.send_signal(signal.SIGKILL)
            rest = child.stdout.read()  # acknowledgements printed before the kill landed
    assert child.returncode == -signal.SIGKILL
    acked = acks_before_kill + rest.count("ACK ")
    assert rest.count("ACK ") == len(rest.splitlines()), rest
    return acked


def assert_newest_batch_whole(entries: tuple[Entry, ...]) -> None:
    """Read batch boundaries from the data: every index of the newest append
    holds its tagged entry (or a CONFIG entry, which carries no tag)."""
    tagged = {}
    for entry in entries:
        if entry.kind == EntryKind.NORMAL:
            op, position, count = re.match(rb"op(\d+):(\d+)/(\d+)\|", entry.data).groups()  # type: ignore[union-attr]
            tagged[entry.index] = (int(op), int(position), int(count))
    if not tagged:
        return
    index, (op, position, count) = max(tagged.items(), key=lambda item: item[1][0])
    start = index - position
    by_index = {entry.index: entry for entry in entries}
    for j in range(count):
        entry = by_index.get(start + j)
        assert entry is not None, f"entry {j} of the newest batch (op {op}) is missing"
        assert entry.kind == EntryKind.CONFIG or tagged[entry.index] == (op, j, count)


def check_after_crash(store: DiskStorage, model: MemoryStorage, next_op: int) -> tuple[MemoryStorage, int]:
    """The store equals the model after the acknowledged operations, or after
    one more; return the model that matched and the next operation to run."""
    seen = observe(store)
    if seen == observe(model):
        return model, next_op
    in_flight = copy.deepcopy(model)
    apply(in_flight, SEED, next_op)
    assert seen == observe(in_flight), f"after op {next_op - 1}: the store matches neither the acknowledged state nor the one after"
    return in_flight, next_op + 1


def test_sigkill_never_loses_or_tears_an_acknowledged_batch(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "data"
    model, next_op = new_model(), 0
    last_hard_state = HardState()
    for _ in range(KILLS):
        acked = run_and_kill(path, next_op, rng.randint(0, 8))
        for n in range(next_op, next_op + acked):
            apply(model, SEED, n)
        next_op += acked
        with open_crash_store(path) as store:
            matched, after = check_after_crash(store, model, next_op)
            hard_state = store.initial_state()[0]
            seen = observe(store)
        model, next_op = matched, after
        assert (hard_state.term, hard_state.commit) >= (last_hard_state.term, last_hard_state.commit)
        last_hard_state = hard_state
        assert_newest_batch_whole(seen[4])  # type: ignore[arg-type]
    assert next_op > KILLS  # the workload made progress between kills


# -- a real write failure: the file size limit ----------------------------------------------------
FILL_CHILD = """
import resource, signal, sys
from rsm.consensus.types import Entry, HardState, SnapshotMeta
from crash_workload import open_crash_store
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
store = open_crash_store(sys.argv[1])
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
store.save(HardState(term=1, vote="a"), [])
index = 0
try:
    if sys.argv[3] == "log":
        while True:
            store.save(None, [Entry(i, 1, data=b"%08d" % i * 128) for i in range(index + 1, index + 65)])
            index += 64
            print("ACK", index, flush=True)
    else:
        store.save(HardState(term=1, vote="a", commit=0), [Entry(1, 1, data=b"x")])
        store.save(HardState(term=1, vote="a", commit=1), [])
        store.create_snapshot(SnapshotMeta(1, 1, store.initial_state()[1]), b"small")
        print("ACK snapshot", flush=True)
        store.create_snapshot(SnapshotMeta(1, 1, store.initial_state()[1]), bytes(limit * 2))
except Exception as exc:
    print("FAILED", type(exc).__name__, exc, flush=True)
"""


def run_fill_child(path: Path, limit: int, mode: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", FILL_CHILD, str(path), str(limit), mode],
        capture_output=True, text=True, cwd=HERE, env={**ENV, "PYTHONPATH": f"{REPO}:{HERE}"}, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_file_size_limit_mid_log_write_keeps_every_acknowledged_entry(tmp_path: Path) -> None:
    """REAL failure: RLIMIT_FSIZE makes the kernel refuse LMDB's writes (EFBIG)."""
    lines = run_fill_child(tmp_path / "d", 2 << 20, "log")
    assert lines[-1].startswith("FAILED StorageFull"), lines[-3:]
    assert "file size limit" in lines[-1]
    acked = int(lines[-2].split()[1])
    assert acked > 1000
    with open_crash_store(tmp_path / "d") as store:
        assert store.last_index() == acked
        expected = [Entry(i, 1, data=b"%08d" % i * 128) for i in range(1, acked + 1)]
        assert store.entries(1, acked + 1) == expected
        store.save(None, [Entry(acked + 1, 1, data=b"room again")])  # usable once there is room


def test_file_size_limit_mid_snapshot_keeps_the_previous_snapshot(tmp_path: Path) -> None:
    """REAL failure: the snapshot file cannot grow past RLIMIT_FSIZE."""
    lines = run_fill_child(tmp_path / "d", 1 << 20, "snapshot")
    assert lines[0] == "ACK snapshot"
    assert lines[-1].startswith("FAILED StorageFull"), lines
    with open_crash_store(tmp_path / "d") as store:
        assert store.snapshot_data() == b"small"
        assert store.problems == []
        assert [p.suffix for p in (tmp_path / "d" / "snapshots").iterdir()] == [".snap"]  # no temp file left
