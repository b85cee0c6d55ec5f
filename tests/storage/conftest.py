"""Fixtures shared by the storage tests: one store factory for both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rsm.consensus.types import ConfState, Entry, EntryKind, HardState, SnapshotMeta
from rsm.storage import DiskStorage, MemoryStorage, StorageSettings, open_store

CLUSTER = "cluster-1"
NODE = "a"
CONF = ConfState(voters=frozenset({"a", "b", "c"}))

Store = MemoryStorage | DiskStorage


def ents(lo: int, hi: int, term: int, kind: EntryKind = EntryKind.NORMAL, size: int = 8) -> list[Entry]:
    """Entries lo..hi-1 of `term`, each with recognisable data of about `size` bytes."""
    return [Entry(index=i, term=term, kind=kind, data=f"{i}/{term}:".encode().ljust(size, b".")) for i in range(lo, hi)]


def meta(index: int, term: int, conf: ConfState = CONF) -> SnapshotMeta:
    return SnapshotMeta(index=index, term=term, conf=conf)


def open_disk(path: Path, settings: StorageSettings | None = None) -> DiskStorage:
    return open_store(path, cluster_id=CLUSTER, node_id=NODE, initial_conf=CONF, settings=settings)


@pytest.fixture(params=["memory", "disk"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same contract, kept by the in-memory reference and by the LMDB store."""
    if request.param == "memory":
        yield MemoryStorage(CONF)
        return
    disk = open_disk(tmp_path / "data", StorageSettings(snapshot_record_bytes=1000))
    yield disk
    disk.close()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[DiskStorage]:
    store = open_disk(tmp_path / "data", StorageSettings(snapshot_record_bytes=1000))
    yield store
    store.close()


def fill(store: Store, hi: int, term: int = 1, commit: int = 0) -> None:
    """Log 1..hi of `term`, hard state (term, vote a, commit)."""
    store.save(HardState(term=term, vote="a", commit=0), ents(1, hi + 1, term))
    if commit:
        store.save(HardState(term=term, vote="a", commit=commit), [])
