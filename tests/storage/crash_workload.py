"""A deterministic workload for the crash tests.

A child process (crash_child.py) runs it against the LMDB store and is killed;
the test replays it against `MemoryStorage` (the model). Operation `n` is drawn
from `random.Random(f"{seed}:{n}")` and the store's observable state, so equal
states give equal operations in the child and in the model. Each operation is
one durable step (one save, one snapshot, one compaction, or one install
preceded by its chunks), so after a crash the store must look exactly like the
model after the acknowledged operations, or after one more.

Every NORMAL entry's data starts with `op<n>:<j>/<k>|`: entry j of the k
entries appended by operation n, so batch boundaries can be read back.
"""

from __future__ import annotations

import random
from pathlib import Path

from rsm.consensus.membership import encode_conf
from rsm.consensus.types import ConfState, Entry, EntryKind, HardState, SnapshotMeta
from rsm.storage import DiskStorage, MemoryStorage, StorageSettings, open_store

NODES = ["a", "b", "c"]
CONFS = [
    ConfState(voters=frozenset(NODES)),
    ConfState(voters=frozenset({"a", "b"})),
    ConfState(voters=frozenset(NODES), learners=frozenset({"d"})),
]
SETTINGS = StorageSettings(snapshot_record_bytes=4096, map_size_initial_bytes=256 << 10)
BATCH_MAX = 24

Store = MemoryStorage | DiskStorage
Observed = tuple[object, ...]


def open_crash_store(path: Path | str) -> DiskStorage:
    return open_store(path, cluster_id="crash", node_id="a", initial_conf=CONFS[0], settings=SETTINGS)


def new_model() -> MemoryStorage:
    return MemoryStorage(CONFS[0])


def tag(n: int, j: int, k: int) -> bytes:
    return f"op{n}:{j}/{k}|".encode()


def observe(store: Store) -> Observed:
    """Everything the contract's read side exposes."""
    first, last = store.first_index(), store.last_index()
    return (
        store.initial_state(), store.snapshot_meta(), first, last,
        tuple(store.entries(first, last + 1)), store.snapshot_data(),
    )


def apply(store: Store, seed: int, n: int) -> str:
    """Run operation `n` on `store`; return its name."""
    rng = random.Random(f"{seed}:{n}")
    roll = rng.random()
    if roll < 0.70 or (roll >= 0.95 and not _can_install(store)):
        _append(store, rng, n)
        return "append"
    if roll < 0.80:
        _hard_state(store, rng)
        return "hard_state"
    if roll < 0.88:
        _snapshot(store, rng)
        return "snapshot"
    if roll < 0.95:
        _compact(store)
        return "compact"
    _install(store, rng)
    return "install"


def _append(store: Store, rng: random.Random, n: int) -> None:
    hard_state, _ = store.initial_state()
    first, last = store.first_index(), store.last_index()
    count = rng.randint(1, BATCH_MAX)
    if last > hard_state.commit and last >= first and rng.random() < 0.25:
        start, term = rng.randint(max(hard_state.commit + 1, first), last), hard_state.term + 1
    else:
        start, term = last + 1, max(hard_state.term, 1)
    entries = []
    for j in range(count):
        if rng.random() < 0.05:
            data, kind = encode_conf(rng.choice(CONFS)), EntryKind.CONFIG
        else:
            data, kind = tag(n, j, count) + rng.randbytes(rng.randint(0, 120)), EntryKind.NORMAL
        entries.append(Entry(index=start + j, term=term, kind=kind, data=data))
    keep_vote = term == hard_state.term and hard_state.vote is not None
    vote = hard_state.vote if keep_vote else rng.choice(NODES)
    commit = rng.randint(hard_state.commit, start + count - 1)
    store.save(HardState(term=term, vote=vote, commit=commit), entries)


def _hard_state(store: Store, rng: random.Random) -> None:
    hard_state, _ = store.initial_state()
    if rng.random() < 0.5:
        new = HardState(term=hard_state.term + 1, vote=rng.choice(NODES), commit=hard_state.commit)
    else:
        commit = rng.randint(hard_state.commit, store.last_index())
        new = HardState(term=hard_state.term, vote=hard_state.vote, commit=commit)
    store.save(new, [])


def _snapshot(store: Store, rng: random.Random) -> None:
    commit = store.initial_state()[0].commit
    if commit <= store.snapshot_meta().index:
        return
    meta = SnapshotMeta(index=commit, term=store.term(commit), conf=rng.choice(CONFS))
    store.create_snapshot(meta, rng.randbytes(rng.randint(0, 20_000)))


def _compact(store: Store) -> None:
    """Compact up to a few entries before the newest snapshot: the log keeps
    covering it, so a corrupt newest snapshot would leave a usable fallback."""
    index = store.snapshot_meta().index - 3
    if index >= store.first_index():
        store.compact(index)


def _can_install(store: Store) -> bool:
    term = store.initial_state()[0].term
    return term >= 1 and term >= store.term(store.last_index())


def _install(store: Store, rng: random.Random) -> None:
    """A snapshot from the leader of the current term, beyond the log's end."""
    hard_state, _ = store.initial_state()
    meta = SnapshotMeta(index=store.last_index() + rng.randint(1, 5), term=hard_state.term, conf=rng.choice(CONFS))
    data = rng.randbytes(rng.randint(0, 20_000))
    chunk = rng.randint(500, 5000)
    offset = 0
    while True:
        store.write_snapshot_chunk(meta, offset, data[offset : offset + chunk])
        offset += chunk
        if offset >= len(data):
            break
    store.install_snapshot(meta)
