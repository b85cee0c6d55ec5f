"""The LMDB log beyond the shared contract: durability across reopen, group
commit, invariants, map growth, write failures and flipped bytes."""

from __future__ import annotations

import errno
from pathlib import Path

import lmdb
import pytest

from rsm.consensus.membership import encode_conf
from rsm.consensus.types import ConfState, Entry, EntryKind, HardState
from rsm.errors import InvariantViolation, LogCompacted
from rsm.storage import (
    CorruptLogEntry,
    CorruptLogMeta,
    DiskStorage,
    StorageClosed,
    StorageFailed,
    StorageFull,
    StorageSettings,
    lmdb_store,
)
from rsm.storage.settings import MAP_SIZE_MIN_BYTES

from .conftest import CONF, ents, fill, meta, open_disk

CONF2 = ConfState(voters=frozenset({"a", "b"}))


def reopen(store: DiskStorage, settings: StorageSettings | None = None) -> DiskStorage:
    store.close()
    return open_disk(store.path, settings)


def state_of(store: DiskStorage) -> tuple[object, ...]:
    first, last = store.first_index(), store.last_index()
    return (
        store.initial_state(), store.snapshot_meta(), first, last,
        store.entries(first, last + 1), [store.term(i) for i in range(first - 1, last + 1)],
    )


# -- durability across reopen -----------------------------------------------------------
def test_everything_survives_reopen(disk: DiskStorage) -> None:
    disk.save(HardState(term=1, vote="a"), [*ents(1, 5, 1), Entry(5, 1, EntryKind.CONFIG, encode_conf(CONF2))])
    disk.save(HardState(term=2, vote="b", commit=6), ents(6, 20, 2, size=50))
    disk.create_snapshot(meta(6, 2, CONF2), b"snapshot six")
    disk.compact(3)
    before = state_of(disk)
    disk = reopen(disk)
    try:
        assert state_of(disk) == before
        assert disk.initial_state() == (HardState(term=2, vote="b", commit=6), CONF2)
        assert disk.snapshot_data() == b"snapshot six"
        with pytest.raises(LogCompacted):
            disk.term(2)
    finally:
        disk.close()


def test_truncated_config_is_forgotten_across_reopen(disk: DiskStorage) -> None:
    disk.save(HardState(term=1, vote="a"), [*ents(1, 3, 1), Entry(3, 1, EntryKind.CONFIG, encode_conf(CONF2))])
    disk.save(HardState(term=2, vote="a"), ents(3, 5, 2))
    disk = reopen(disk)
    try:
        assert disk.initial_state()[1] == CONF
    finally:
        disk.close()


def test_bootstrap_conf_is_kept_and_later_ignored(tmp_path: Path) -> None:
    with open_disk(tmp_path / "d") as store:
        assert store.initial_state()[1] == CONF
    from rsm.storage import open_store

    with open_store(tmp_path / "d", cluster_id="cluster-1", node_id="a", initial_conf=CONF2) as store:
        assert store.initial_state()[1] == CONF


def test_a_save_is_one_transaction(disk: DiskStorage) -> None:
    commits = disk._log.commit_count
    disk.save(HardState(term=1, vote="a"), ents(1, 300, 1))
    disk.save(HardState(term=1, vote="a", commit=100), ents(300, 301, 1))
    assert disk._log.commit_count == commits + 2
    disk.save(None, [])  # nothing to write: no transaction
    assert disk._log.commit_count == commits + 2


# -- invariants: refused before anything is written ----------------------------------------
@pytest.mark.parametrize(
    ("hard_state", "entries", "why"),
    [
        (HardState(term=0, vote=None), [], "term going back"),
        (HardState(term=2, vote="b"), [], "vote changing"),
        (HardState(term=2, vote="a", commit=3), [], "commit going back"),
        (HardState(term=2, vote="a", commit=11), [], "past the last index"),
        (HardState(term=3, vote="a", commit=5), ents(5, 7, 3), "overwriting committed"),
        (HardState(term=2, vote="a", commit=5), [*ents(11, 12, 2), *ents(13, 14, 2)], "spans"),
        (HardState(term=2, vote="a", commit=5), [*ents(11, 12, 2), *ents(12, 13, 1)], "below the previous"),
        (HardState(term=2, vote="a", commit=5), ents(11, 12, 1), "below the previous"),
        (None, ents(11, 12, 3), "above the hard state term"),
        (None, [Entry(11, 2, EntryKind.CONFIG, b"not a conf")], "malformed"),
    ],
)
def test_invariants_refuse_the_whole_batch(
    disk: DiskStorage, hard_state: HardState | None, entries: list[Entry], why: str
) -> None:
    disk.save(HardState(term=2, vote="a", commit=0), ents(1, 11, 2))
    disk.save(HardState(term=2, vote="a", commit=5), [])
    before = state_of(disk)
    with pytest.raises(InvariantViolation, match=why):
        disk.save(hard_state, entries)
    assert state_of(disk) == before
    disk = reopen(disk)
    try:
        assert state_of(disk) == before
    finally:
        disk.close()


def test_snapshot_invariants(disk: DiskStorage) -> None:
    fill(disk, 10, term=1, commit=5)
    with pytest.raises(InvariantViolation, match="uncommitted"):
        disk.create_snapshot(meta(6, 1), b"x")
    with pytest.raises(InvariantViolation, match="term"):
        disk.create_snapshot(meta(5, 2), b"x")
    disk.create_snapshot(meta(5, 1), b"x")
    disk.write_snapshot_chunk(meta(4, 1), 0, b"old")
    with pytest.raises(InvariantViolation, match="older"):
        disk.install_snapshot(meta(4, 1))
    assert disk.snapshot_meta() == meta(5, 1)


def test_closed_store_refuses_use(disk: DiskStorage) -> None:
    fill(disk, 3)
    disk.close()
    with pytest.raises(StorageClosed):
        disk.entries(1, 3)
    with pytest.raises(StorageClosed):
        disk.save(None, ents(4, 5, 1))


# -- map growth -----------------------------------------------------------------------------------
def test_map_grows_from_the_smallest_size(tmp_path: Path) -> None:
    settings = StorageSettings(map_size_initial_bytes=MAP_SIZE_MIN_BYTES, map_growth_factor=1.5)
    store = open_disk(tmp_path / "d", settings)
    try:
        assert store._log._env.info()["map_size"] == MAP_SIZE_MIN_BYTES
        store.save(HardState(term=1, vote="a"), [])
        for start in range(1, 2001, 100):  # 2000 entries of 1 KiB: ~2 MiB, 32 times the map
            store.save(None, ents(start, start + 100, 1, size=1024))
        assert store._log._env.info()["map_size"] > 2 << 20
        assert store.entries(1, 2001) == ents(1, 2001, 1, size=1024)
        store = reopen(store, settings)
        assert store.entries(1, 2001) == ents(1, 2001, 1, size=1024)
    finally:
        store.close()


def test_one_batch_bigger_than_the_map(tmp_path: Path) -> None:
    settings = StorageSettings(map_size_initial_bytes=MAP_SIZE_MIN_BYTES)
    with open_disk(tmp_path / "d", settings) as store:
        store.save(HardState(term=1, vote="a"), ents(1, 101, 1, size=10_000))  # 1 MB in one transaction
        assert store.entries(1, 101) == ents(1, 101, 1, size=10_000)


def test_map_ceiling_is_storage_full_and_keeps_the_data(tmp_path: Path) -> None:
    settings = StorageSettings(map_size_initial_bytes=MAP_SIZE_MIN_BYTES, map_size_max_bytes=4 * MAP_SIZE_MIN_BYTES)
    store = open_disk(tmp_path / "d", settings)
    acked = 0
    try:
        store.save(HardState(term=1, vote="a"), [])
        with pytest.raises(StorageFull, match="map_size_max_bytes"):
            while True:
                store.save(None, ents(acked + 1, acked + 11, 1, size=1000))
                acked += 10
        assert acked > 0
        with pytest.raises(StorageFailed, match="earlier failure"):
            store.save(None, ents(acked + 1, acked + 2, 1))
        assert store.last_index() == acked
        store = reopen(store, StorageSettings())  # with room to grow
        assert store.entries(1, acked + 1) == ents(1, acked + 1, 1, size=1000)
        store.save(None, ents(acked + 1, acked + 2, 1))
    finally:
        store.close()


# -- write failures (simulated: the commit is made to fail as the OS would) ------------------------
def failing_commit(error: lmdb.Error) -> object:
    def commit(txn: lmdb.Transaction) -> None:
        txn.abort()  # what LMDB does when its write or fsync fails
        raise error

    return commit


@pytest.mark.parametrize(
    ("error", "named"),
    [
        (lmdb.DiskError("mdb_txn_commit: No space left on device"), StorageFull),
        (lmdb.Error("mdb_txn_commit: Input/output error"), StorageFailed),
    ],
)
def test_failed_commit_is_named_and_final(
    disk: DiskStorage, monkeypatch: pytest.MonkeyPatch, error: lmdb.Error, named: type[Exception]
) -> None:
    """SIMULATED: ENOSPC / EIO are injected at the commit; test_crash.py has a real one."""
    fill(disk, 5, commit=2)
    before = state_of(disk)
    monkeypatch.setattr(lmdb_store, "_commit", failing_commit(error))
    with pytest.raises(named, match="intact"):
        disk.save(HardState(term=1, vote="a", commit=3), ents(6, 8, 1))
    monkeypatch.undo()
    assert state_of(disk) == before  # memory matches disk: nothing half-applied
    with pytest.raises(StorageFailed, match="earlier failure"):
        disk.save(None, ents(6, 7, 1))
    with pytest.raises(StorageFailed):
        disk.compact(1)
    disk = reopen(disk)
    try:
        assert state_of(disk) == before
    finally:
        disk.close()


def test_eio_on_a_full_file_system_is_storage_full(disk: DiskStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIMULATED: LMDB reports a short write as EIO; a nearly full disk explains it."""
    from rsm.storage import _fs

    error = lmdb.Error("mdb_txn_commit: Input/output error")
    monkeypatch.setattr(error, "code", errno.EIO, raising=False)
    monkeypatch.setattr(_fs, "NEARLY_FULL_BYTES", 1 << 62)
    monkeypatch.setattr(lmdb_store, "_commit", failing_commit(error))
    with pytest.raises(StorageFull, match="nearly"):
        disk.save(HardState(term=1, vote="a"), ents(1, 2, 1))


# -- flipped bytes ------------------------------------------------------------------------------------
def flip_everywhere(file: Path, needle: bytes) -> int:
    """Flip one bit of `needle` wherever it occurs in `file` (LMDB keeps old page
    copies, so every copy is flipped to be sure the live one is)."""
    raw = bytearray(file.read_bytes())
    count, at = 0, raw.find(needle)
    while at >= 0:
        raw[at + len(needle) - 1] ^= 0x01
        count += 1
        at = raw.find(needle, at + 1)
    file.write_bytes(bytes(raw))
    return count


def payload(i: int) -> bytes:
    return b"payload-%06d-end" % i


def test_flipped_entry_is_reported_with_file_and_index(tmp_path: Path) -> None:
    with open_disk(tmp_path / "d") as store:
        store.save(HardState(term=1, vote="a"), [Entry(i, 1, data=payload(i)) for i in range(1, 101)])
    data_file = tmp_path / "d" / "log" / "data.mdb"
    assert flip_everywhere(data_file, payload(42)) >= 1
    with open_disk(tmp_path / "d") as store:
        assert store.entries(1, 42) == [Entry(i, 1, data=payload(i)) for i in range(1, 42)]
        with pytest.raises(CorruptLogEntry, match="log entry 42") as caught:
            store.entries(40, 50)
        assert caught.value.index == 42
        assert caught.value.path == data_file
        with pytest.raises(CorruptLogEntry):
            store.term(42)
        assert store.term(43) == 1


def test_flipped_last_entry_fails_the_open(tmp_path: Path) -> None:
    with open_disk(tmp_path / "d") as store:
        store.save(HardState(term=1, vote="a"), [Entry(i, 1, data=payload(i)) for i in range(1, 11)])
    flip_everywhere(tmp_path / "d" / "log" / "data.mdb", payload(10))
    with pytest.raises(CorruptLogEntry, match="log entry 10"):
        open_disk(tmp_path / "d")


def test_flipped_hard_state_fails_the_open(tmp_path: Path) -> None:
    with open_disk(tmp_path / "d") as store:
        store.save(HardState(term=7, vote="voter-with-a-long-name"), [])
    flip_everywhere(tmp_path / "d" / "log" / "data.mdb", b"voter-with-a-long-name")
    with pytest.raises(CorruptLogMeta, match="hard_state"):
        open_disk(tmp_path / "d")


def test_entry_codec_round_trip_and_single_bit_flips() -> None:
    """Every single-bit flip of a stored value is caught (crc32 detects them all)."""
    entries = [Entry(7, 300, EntryKind.CONFIG, b"abc"), Entry(8, 2**40, EntryKind.NOOP, b"")]
    items, _ = lmdb_store.encode_entries(entries)
    for (_key, value), entry in zip(items, entries, strict=True):
        assert lmdb_store.decode_entry(Path("f"), entry.index, value) == entry
        for bit in range(len(value) * 8):
            flipped = bytearray(value)
            flipped[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(CorruptLogEntry):
                lmdb_store.decode_entry(Path("f"), entry.index, bytes(flipped))
        with pytest.raises(CorruptLogEntry):  # the right value under the wrong key
            lmdb_store.decode_entry(Path("f"), entry.index + 1, value)
