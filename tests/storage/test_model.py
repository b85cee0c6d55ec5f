"""Random sequences of valid operations on the LMDB store, compared after every
step with `MemoryStorage` (the reference), with reopens in between."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsm.consensus.membership import encode_conf
from rsm.consensus.types import ConfState, Entry, EntryKind, HardState, SnapshotMeta
from rsm.storage import DiskStorage, MemoryStorage, StorageSettings

from .conftest import CONF, open_disk

CONFS = [CONF, ConfState(voters=frozenset({"a", "b"})), ConfState(voters=frozenset({"a"}), learners=frozenset({"z"}))]
NODES = ["a", "b", "c"]
SETTINGS = StorageSettings(snapshot_record_bytes=64, snapshots_kept=2)


def assert_same(model: MemoryStorage, disk: DiskStorage) -> None:
    """Everything the read side of the contract exposes is equal."""
    assert disk.initial_state() == model.initial_state()
    assert disk.snapshot_meta() == model.snapshot_meta()
    first, last = model.first_index(), model.last_index()
    assert (disk.first_index(), disk.last_index()) == (first, last)
    assert [disk.term(i) for i in range(first - 1, last + 1)] == [model.term(i) for i in range(first - 1, last + 1)]
    assert disk.entries(first, last + 1) == model.entries(first, last + 1)
    assert disk.snapshot_data() == model.snapshot_data()


class Driver:
    """Draws operations that a correct Raft core could ask for, given the state."""

    def __init__(self, data: st.DataObject, model: MemoryStorage) -> None:
        self.draw = data.draw
        self.model = model

    def hard_state(self) -> HardState:
        return self.model.initial_state()[0]

    def append(self) -> tuple[HardState, list[Entry]]:
        hs, last = self.hard_state(), self.model.last_index()
        low = max(hs.commit, self.model.first_index() - 1) + 1
        start = self.draw(st.integers(min(low, last + 1), last + 1), "start")
        term = hs.term + 1 if start <= last or self.draw(st.booleans(), "new term") else max(hs.term, 1)
        count = self.draw(st.integers(1, 12), "count")
        entries = []
        for index in range(start, start + count):
            if self.draw(st.integers(0, 9), "kind") == 0:
                conf = self.draw(st.sampled_from(CONFS), "conf")
                entries.append(Entry(index=index, term=term, kind=EntryKind.CONFIG, data=encode_conf(conf)))
            else:
                payload = self.draw(st.binary(max_size=40), "payload")
                entries.append(Entry(index=index, term=term, data=payload))
        vote = hs.vote if term == hs.term else self.draw(st.sampled_from(NODES), "vote")
        commit = self.draw(st.integers(hs.commit, start + count - 1), "commit")
        return HardState(term=term, vote=vote, commit=commit), entries

    def snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        hs, newest = self.hard_state(), self.model.snapshot_meta().index
        low = max(newest, self.model.first_index() - 1, 1)
        if hs.commit < low:
            return None
        index = self.draw(st.integers(low, hs.commit), "snapshot index")
        conf = self.draw(st.sampled_from(CONFS), "snapshot conf")
        return SnapshotMeta(index=index, term=self.model.term(index), conf=conf), self.draw(st.binary(max_size=300))

    def install(self) -> tuple[SnapshotMeta, bytes, int]:
        """A snapshot from a leader whose term the node has already adopted."""
        hs, last = self.hard_state(), self.model.last_index()
        index = self.draw(st.integers(hs.commit + 1, last + 3), "install index")
        if index <= last and self.draw(st.booleans(), "matching"):
            term = self.model.term(index)
        else:
            term = max(hs.term, 1)
        conf = self.draw(st.sampled_from(CONFS), "install conf")
        return SnapshotMeta(index=index, term=term, conf=conf), self.draw(st.binary(max_size=300)), self.draw(st.integers(1, 100))


def step(driver: Driver, model: MemoryStorage, disk: DiskStorage, op: str) -> DiskStorage:
    if op == "append":
        hs, entries = driver.append()
        for store in (model, disk):
            store.save(hs, entries)
    elif op == "hard_state":
        hs = driver.hard_state()
        commit = driver.draw(st.integers(hs.commit, model.last_index()), "commit only")
        for store in (model, disk):
            store.save(HardState(term=hs.term, vote=hs.vote, commit=commit), [])
    elif op == "snapshot" and (drawn := driver.snapshot()) is not None:
        for store in (model, disk):
            store.create_snapshot(*drawn)
    elif op == "compact":
        low, high = model.first_index(), model.snapshot_meta().index
        if high >= low:
            index = driver.draw(st.integers(low, high), "compact to")
            for store in (model, disk):
                store.compact(index)
    elif op == "install":
        m, data, chunk = driver.install()
        hs = driver.hard_state()
        for store in (model, disk):
            if hs.term < m.term:
                store.save(HardState(term=m.term, vote=None, commit=hs.commit), [])
            for offset in range(0, max(len(data), 1), chunk):
                store.write_snapshot_chunk(m, offset, data[offset : offset + chunk])
            store.install_snapshot(m)
    elif op == "reopen":
        path = disk.path
        disk.close()
        disk = open_disk(path, SETTINGS)
    return disk


OPS = st.sampled_from(["append"] * 5 + ["hard_state", "snapshot", "compact", "install", "reopen"])


#: More examples for a soak run: RSM_MODEL_EXAMPLES=5000 pytest tests/storage/test_model.py
EXAMPLES = int(os.environ.get("RSM_MODEL_EXAMPLES", "120"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), ops=st.lists(OPS, min_size=1, max_size=25))
def test_lmdb_store_behaves_like_the_reference(data: st.DataObject, ops: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = MemoryStorage(CONF)
        disk = open_disk(Path(tmp) / "data", SETTINGS)
        driver = Driver(data, model)
        try:
            for op in ops:
                disk = step(driver, model, disk, op)
                assert_same(model, disk)
            path = disk.path
            disk.close()
            disk = open_disk(path, SETTINGS)
            assert_same(model, disk)
            assert disk.problems == []
        finally:
            disk.close()
