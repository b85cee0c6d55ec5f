"""Snapshot files: format, limits, streaming, crash leftovers and corruption."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rsm.consensus.types import HardState
from rsm.errors import ConfigError, InvariantViolation, SnapshotUnavailable
from rsm.storage import CorruptSnapshot, DiskStorage, StorageSettings
from rsm.storage.settings import SNAPSHOT_RECORD_BYTES_LIMIT
from rsm.storage.snapshots import PENDING_NAME, scan_snapshot, snapshot_name

from .conftest import CONF, fill, meta, open_disk

DATA = os.urandom(10_000)


def snapshot_dir(store: DiskStorage) -> Path:
    return store.path / "snapshots"


def files(store: DiskStorage) -> list[str]:
    return sorted(os.listdir(snapshot_dir(store)))


def reopen(store: DiskStorage, settings: StorageSettings | None = None) -> DiskStorage:
    store.close()
    return open_disk(store.path, settings or StorageSettings(snapshot_record_bytes=1000))


# -- format and limits ------------------------------------------------------------------
def test_file_is_named_and_split_into_records(disk: DiskStorage) -> None:
    fill(disk, 10, commit=8)
    disk.create_snapshot(meta(8, 1), DATA)
    assert files(disk) == [snapshot_name(meta(8, 1))]
    snap = scan_snapshot(snapshot_dir(disk) / snapshot_name(meta(8, 1)))
    assert snap.meta == meta(8, 1)
    assert snap.data_len == len(DATA)
    assert snap.record_offsets == tuple(range(0, 10_000, 1000))  # snapshot_record_bytes=1000


def test_read_is_capped_by_snapshot_read_bytes_max(tmp_path: Path) -> None:
    settings = StorageSettings(snapshot_record_bytes=1000, snapshot_read_bytes_max=2500)
    with open_disk(tmp_path / "d", settings) as store:
        fill(store, 5, commit=5)
        store.create_snapshot(meta(5, 1), DATA)
        assert store.snapshot_chunk(5, 100, 2500) == DATA[100:2600]  # at the limit
        assert store.snapshot_chunk(5, 100, 2501) == DATA[100:2600]  # one past: capped
        assert store.snapshot_chunk(5, 100, 10**9) == DATA[100:2600]


@pytest.mark.parametrize("kept", [1, 2, 3])
def test_only_the_newest_snapshots_are_kept(tmp_path: Path, kept: int) -> None:
    settings = StorageSettings(snapshots_kept=kept)
    with open_disk(tmp_path / "d", settings) as store:
        fill(store, 10, commit=10)
        for index in range(2, 10, 2):
            store.create_snapshot(meta(index, 1), b"state %d" % index)
        newest = list(range(2, 10, 2))[-kept:]
        assert files(store) == [snapshot_name(meta(i, 1)) for i in newest]
        for index in newest:  # every kept snapshot can still be sent
            assert store.snapshot_chunk(index, 0, 100) == b"state %d" % index
        with pytest.raises(SnapshotUnavailable):
            store.snapshot_chunk(newest[0] - 2, 0, 100)


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [
        ("snapshots_kept", 1, 0),
        ("snapshot_record_bytes", SNAPSHOT_RECORD_BYTES_LIMIT, SNAPSHOT_RECORD_BYTES_LIMIT + 1),
        ("snapshot_record_bytes", 1, 0),
        ("snapshot_read_bytes_max", 1, 0),
    ],
)
def test_snapshot_settings_at_their_limits(field: str, good: int, bad: int) -> None:
    StorageSettings(**{field: good}).validate()
    with pytest.raises(ConfigError, match=field):
        StorageSettings(**{field: bad}).validate()


def test_one_byte_records(tmp_path: Path) -> None:
    with open_disk(tmp_path / "d", StorageSettings(snapshot_record_bytes=1)) as store:
        fill(store, 3, commit=3)
        store.create_snapshot(meta(3, 1), b"tiny")
        assert store.snapshot_chunk(3, 1, 2) == b"in"
        assert store.snapshot_data() == b"tiny"


# -- streaming -------------------------------------------------------------------------------
def test_streaming_writer_and_reader(disk: DiskStorage) -> None:
    fill(disk, 10, commit=9)
    pieces = [DATA[:1], bytearray(DATA[1:1500]), memoryview(DATA)[1500:7000], DATA[7000:]]
    with disk.snapshot_writer(meta(9, 1)) as writer:
        for piece in pieces:
            writer.write(piece)
    assert disk.snapshot_meta() == meta(9, 1)
    with disk.open_snapshot() as reader:
        assert (reader.meta, reader.size) == (meta(9, 1), len(DATA))
        assert reader.read(10) == DATA[:10]
        assert b"".join(reader.records()) == DATA[10:]
        assert reader.read() == b""
    with disk.open_snapshot(9) as reader:
        assert reader.read(999_999) == DATA


def test_a_failed_snapshot_writer_leaves_nothing(disk: DiskStorage) -> None:
    fill(disk, 10, commit=9)
    disk.create_snapshot(meta(4, 1), b"four")
    with pytest.raises(RuntimeError), disk.snapshot_writer(meta(9, 1)) as writer:
        writer.write(DATA)
        raise RuntimeError("the state machine failed while streaming")
    assert disk.snapshot_meta() == meta(4, 1)
    assert files(disk) == [snapshot_name(meta(4, 1))]


def test_no_snapshot_yet(disk: DiskStorage) -> None:
    assert disk.snapshot_data() == b""
    assert disk.snapshot_chunk(0, 0, 10) == b""
    with pytest.raises(SnapshotUnavailable):
        disk.open_snapshot()


# -- received snapshots across a restart -------------------------------------------------------
def test_pending_snapshot_survives_a_restart(disk: DiskStorage) -> None:
    incoming = meta(50, 3)
    disk.save(HardState(term=3, vote="b"), [])
    disk.write_snapshot_chunk(incoming, 0, DATA[:3000])
    disk.write_snapshot_chunk(incoming, 3000, DATA[3000:4500])
    disk = reopen(disk)
    try:
        assert disk.pending_snapshot() == (incoming, 4500)
        disk.write_snapshot_chunk(incoming, 4500, DATA[4500:])
        disk.install_snapshot(incoming)
        assert disk.snapshot_data() == DATA
        assert disk.pending_snapshot() is None
        assert PENDING_NAME not in files(disk)
    finally:
        disk.close()


def test_torn_pending_tail_is_cut_off(disk: DiskStorage) -> None:
    incoming = meta(50, 3)
    disk.save(HardState(term=3, vote="b"), [])
    disk.write_snapshot_chunk(incoming, 0, DATA[:2500])
    pending = snapshot_dir(disk) / PENDING_NAME
    disk.close()
    with open(pending, "ab") as f:  # a record whose write the crash cut short
        f.write(b"\x00\x00\x03\xe8\x12\x34\x56\x78partial")
    disk = open_disk(disk.path)
    try:
        assert disk.pending_snapshot() == (incoming, 2500)
        with pytest.raises(InvariantViolation):
            disk.write_snapshot_chunk(incoming, 2507, b"x")
        disk.write_snapshot_chunk(incoming, 2500, DATA[2500:])
        disk.install_snapshot(incoming)
        assert disk.snapshot_data() == DATA
    finally:
        disk.close()


# -- crash leftovers ------------------------------------------------------------------------------
def test_unrecorded_newer_snapshot_is_removed_at_open(disk: DiskStorage) -> None:
    """A crash after the rename but before the LMDB record: never committed."""
    fill(disk, 10, commit=9)
    disk.create_snapshot(meta(4, 1), b"four")
    disk._snaps.writer(meta(9, 1)).finish()  # the file alone, as a crash would leave it
    disk = reopen(disk)
    try:
        assert disk.snapshot_meta() == meta(4, 1)
        assert files(disk) == [snapshot_name(meta(4, 1))]
    finally:
        disk.close()


def test_unfinished_local_snapshot_is_removed_at_open(disk: DiskStorage) -> None:
    fill(disk, 10, commit=9)
    writer = disk.snapshot_writer(meta(9, 1))
    writer.write(DATA)  # the process dies here
    disk = reopen(disk)
    try:
        assert files(disk) == []
        assert disk.snapshot_meta().index == 0
    finally:
        disk.close()
        writer.close()


# -- corruption -------------------------------------------------------------------------------------
def two_snapshots(store: DiskStorage) -> tuple[Path, Path]:
    """Snapshots at 4 and 8; the log still covers 4 (compacted to 3)."""
    fill(store, 10, commit=9)
    store.create_snapshot(meta(4, 1), b"four" * 1000)
    store.create_snapshot(meta(8, 1), DATA)
    store.compact(3)
    return (snapshot_dir(store) / snapshot_name(meta(4, 1)), snapshot_dir(store) / snapshot_name(meta(8, 1)))


def flip(file: Path, position: int) -> None:
    raw = bytearray(file.read_bytes())
    raw[position] ^= 0x40
    file.write_bytes(bytes(raw))


def truncate(file: Path, size: int) -> None:
    with open(file, "r+b") as f:
        f.truncate(size)


DAMAGE = {
    "flipped data byte": lambda f: flip(f, f.stat().st_size - 5000),
    "flipped header byte": lambda f: flip(f, 20),
    "flipped magic": lambda f: flip(f, 0),
    "truncated in a record": lambda f: truncate(f, f.stat().st_size - 10),
    "truncated at a record boundary": lambda f: truncate(f, f.stat().st_size - 1008),
    "truncated in the header": lambda f: truncate(f, 30),
    "emptied": lambda f: truncate(f, 0),
    "deleted": lambda f: f.unlink(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_corrupt_newest_falls_back_to_the_previous_at_open(disk: DiskStorage, damage: str) -> None:
    _, newest = two_snapshots(disk)
    disk.close()
    DAMAGE[damage](newest)
    disk = open_disk(disk.path)
    try:
        assert disk.snapshot_meta() == meta(4, 1)
        assert disk.snapshot_data() == b"four" * 1000
        assert [type(p) for p in disk.problems] == [CorruptSnapshot]
        assert disk.problems[0].path == newest
        assert newest.name + ".corrupt" in files(disk) or damage == "deleted"
        assert (disk.first_index(), disk.last_index()) == (4, 10)  # the log replays 5..10
    finally:
        disk.close()
    disk = open_disk(disk.path)  # the fallback is recorded: a second open is clean
    try:
        assert disk.snapshot_meta() == meta(4, 1)
        assert disk.problems == []
    finally:
        disk.close()


def test_corrupt_newest_without_a_usable_fallback_fails_the_open(disk: DiskStorage) -> None:
    _, newest = two_snapshots(disk)
    disk.compact(8)  # the log no longer covers the snapshot at 4
    disk.close()
    flip(newest, newest.stat().st_size - 5000)
    with pytest.raises(CorruptSnapshot, match="no older good snapshot") as caught:
        open_disk(disk.path)
    assert caught.value.path == newest


def test_corruption_found_while_sending(tmp_path: Path) -> None:
    settings = StorageSettings(snapshot_record_bytes=1000, verify_snapshot_on_open=False)
    store = open_disk(tmp_path / "d", settings)
    _, newest = two_snapshots(store)
    store.close()
    flip(newest, newest.stat().st_size - 5000)  # inside record 5 (data 5000..5999)
    store = open_disk(tmp_path / "d", settings)
    try:
        assert store.snapshot_meta() == meta(8, 1)  # not read yet: not known yet
        assert store.snapshot_chunk(8, 0, 4000) == DATA[:4000]  # good records are served
        with pytest.raises(CorruptSnapshot, match="record 5") as caught:
            store.snapshot_chunk(8, 4000, 4000)
        assert caught.value.path == newest
        assert store.snapshot_meta() == meta(4, 1)  # fell back, never to read 8 again
        with pytest.raises(SnapshotUnavailable):
            store.snapshot_chunk(8, 0, 10)
        assert store.snapshot_data() == b"four" * 1000
    finally:
        store.close()


def test_corruption_found_while_restoring(tmp_path: Path) -> None:
    settings = StorageSettings(snapshot_record_bytes=1000, verify_snapshot_on_open=False)
    store = open_disk(tmp_path / "d", settings)
    _, newest = two_snapshots(store)
    store.close()
    flip(newest, newest.stat().st_size - 10)
    store = open_disk(tmp_path / "d", settings)
    try:
        with pytest.raises(CorruptSnapshot):
            store.snapshot_data()
        assert store.snapshot_meta() == meta(4, 1)
    finally:
        store.close()


def test_corrupt_older_snapshot_is_set_aside_at_open(disk: DiskStorage) -> None:
    older, _ = two_snapshots(disk)
    disk.close()
    flip(older, 25)
    disk = open_disk(disk.path)
    try:
        assert disk.snapshot_meta() == meta(8, 1)
        assert [p.path for p in disk.problems] == [older]
        with pytest.raises(SnapshotUnavailable):
            disk.snapshot_chunk(4, 0, 10)
    finally:
        disk.close()


def test_renamed_snapshot_file_is_not_trusted(disk: DiskStorage) -> None:
    fill(disk, 10, commit=9)
    disk.create_snapshot(meta(4, 1), b"four")
    disk.close()
    path = snapshot_dir(disk) / snapshot_name(meta(4, 1))
    path.rename(path.with_name(snapshot_name(meta(3, 1))))  # a header that contradicts the name
    with pytest.raises(CorruptSnapshot):
        open_disk(disk.path)


def test_bootstrap_conf_in_snapshot_header(disk: DiskStorage) -> None:
    fill(disk, 5, commit=5)
    disk.create_snapshot(meta(5, 1), b"x")
    assert scan_snapshot(snapshot_dir(disk) / snapshot_name(meta(5, 1))).meta.conf == CONF
