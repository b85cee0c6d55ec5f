"""Snapshot files: written under a temporary name, fsynced, renamed; read in
verified records; a torn or corrupt file is detected and never restored.

File format (all integers big-endian; see docs/storage.md):

    header   magic "RSMSNAP\\n" | version u16 | flags u16 (bit 0: complete)
             | index u64 | term u64 | data_len u64 | data_crc32 u32
             | conf_len u32 | conf (encode_conf) | header_crc32 u32
    records  length u32 | crc32 u32 | data            (repeated to the end)

A record's crc32 covers its data offset (u64) and its data, so a record that
is flipped, torn, or found at the wrong place fails its check; `data_crc32`
covers all the data in order, and `data_len` plus the file size catch a
truncated file. Records hold at most `snapshot_record_bytes`; reading verifies
whole records, so no byte is returned before its checksum has been checked.

Names in the snapshot directory:

    snap-<index:020>-<term:020>.snap       a complete snapshot
    snap-<index:020>-<term:020>.snap.tmp   a local snapshot being written
    incoming.pending                       a snapshot being received (one at most)
    <name>.corrupt                         a file found corrupt, kept for inspection

A local snapshot becomes visible by rename, after its data and header are
fsynced, and the directory is fsynced after the rename. A received snapshot is
written chunk by chunk into `incoming.pending` (each chunk fsynced: the contract
asks for durable chunk writes) and renamed into place by `finish_pending`.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import attrs

from rsm.consensus.membership import decode_conf, encode_conf
from rsm.consensus.types import SnapshotMeta
from rsm.errors import invariant
from rsm.storage._fs import fsync_dir, write_failure
from rsm.storage.errors import CorruptSnapshot
from rsm.storage.settings import SNAPSHOT_RECORD_BYTES_LIMIT, StorageSettings

log = logging.getLogger("rsm.storage")

MAGIC = b"RSMSNAP\n"
SNAPSHOT_FORMAT_VERSION = 1
FLAG_COMPLETE = 1
_HEADER = struct.Struct(">8sHHQQQII")  # magic, version, flags, index, term, data_len, data_crc, conf_len
_CRC = struct.Struct(">I")
_RECORD = struct.Struct(">II")  # length, crc32(offset + data)
_OFFSET = struct.Struct(">Q")
#: Largest encoded configuration accepted in a header (a sanity bound for reading).
CONF_BYTES_MAX = 1 << 20

PENDING_NAME = "incoming.pending"
_NAME = re.compile(r"^snap-(\d{20})-(\d{20})\.snap$")


def snapshot_name(meta: SnapshotMeta) -> str:
    return f"snap-{meta.index:020d}-{meta.term:020d}.snap"


def _encode_header(meta: SnapshotMeta, complete: bool, data_len: int, data_crc: int) -> bytes:
    conf = encode_conf(meta.conf)
    fixed = _HEADER.pack(
        MAGIC, SNAPSHOT_FORMAT_VERSION, FLAG_COMPLETE if complete else 0,
        meta.index, meta.term, data_len, data_crc, len(conf),
    )
    body = fixed + conf
    return body + _CRC.pack(zlib.crc32(body))


def _record_crc(offset: int, data: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(data, zlib.crc32(_OFFSET.pack(offset)))


@attrs.frozen
class _Header:
    meta: SnapshotMeta
    complete: bool
    data_len: int
    data_crc: int
    size: int  # header bytes in the file


def _read_header(path: Path, f: BinaryIO) -> _Header:
    fixed = f.read(_HEADER.size)
    if len(fixed) < _HEADER.size:
        raise CorruptSnapshot(path, "truncated header")
    magic, version, flags, index, term, data_len, data_crc, conf_len = _HEADER.unpack(fixed)
    if magic != MAGIC:
        raise CorruptSnapshot(path, "not a snapshot file (bad magic)")
    if version != SNAPSHOT_FORMAT_VERSION:
        raise CorruptSnapshot(path, f"snapshot format {version}, expected {SNAPSHOT_FORMAT_VERSION}")
    if conf_len > CONF_BYTES_MAX:
        raise CorruptSnapshot(path, f"header claims a {conf_len}-byte configuration")
    rest = f.read(conf_len + _CRC.size)
    if len(rest) < conf_len + _CRC.size:
        raise CorruptSnapshot(path, "truncated header")
    conf_bytes, (crc,) = rest[:conf_len], _CRC.unpack(rest[conf_len:])
    if zlib.crc32(fixed + conf_bytes) != crc:
        raise CorruptSnapshot(path, "header checksum mismatch")
    try:
        conf = decode_conf(conf_bytes)
    except ValueError as exc:
        raise CorruptSnapshot(path, f"header configuration undecodable: {exc}") from exc
    meta = SnapshotMeta(index=index, term=term, conf=conf)
    return _Header(meta, bool(flags & FLAG_COMPLETE), data_len, data_crc, _HEADER.size + conf_len + _CRC.size)


@attrs.frozen
class SnapshotFile:
    """A complete snapshot file whose structure has been checked."""

    path: Path
    meta: SnapshotMeta
    data_len: int
    data_crc: int
    #: Data offset at which each record starts, and the file position of its header.
    record_offsets: tuple[int, ...]
    record_positions: tuple[int, ...]


def scan_snapshot(path: Path) -> SnapshotFile:
    """Check a complete snapshot file's structure (header, record lengths, size).

    Reads only headers; `verify_snapshot` checks every byte of data.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header = _read_header(path, f)
            if not header.complete:
                raise CorruptSnapshot(path, "header not marked complete (torn write)")
            offsets, positions, end, length = _scan_records(path, f, header.size, size)
    except OSError as exc:
        raise CorruptSnapshot(path, f"unreadable: {exc}") from exc
    if length != header.data_len or end != size:
        raise CorruptSnapshot(path, f"holds {length} data bytes in {size} file bytes, header says {header.data_len} (truncated?)")
    return SnapshotFile(path, header.meta, header.data_len, header.data_crc, tuple(offsets), tuple(positions))


def _scan_records(path: Path, f: BinaryIO, start: int, size: int) -> tuple[list[int], list[int], int, int]:
    """Walk the record headers from `start`; return offsets, positions, end, data length."""
    offsets: list[int] = []
    positions: list[int] = []
    position, length = start, 0
    while position < size:
        f.seek(position)
        head = f.read(_RECORD.size)
        if len(head) < _RECORD.size:
            raise CorruptSnapshot(path, f"truncated record header at byte {position}")
        record_len = _RECORD.unpack(head)[0]
        if not 0 < record_len <= SNAPSHOT_RECORD_BYTES_LIMIT or position + _RECORD.size + record_len > size:
            raise CorruptSnapshot(path, f"bad record length {record_len} at byte {position} (truncated?)")
        offsets.append(length)
        positions.append(position)
        length += record_len
        position += _RECORD.size + record_len
    return offsets, positions, position, length


def _read_record(snap: SnapshotFile, f: BinaryIO, i: int) -> bytes:
    """Record `i`'s data, after checking its crc32."""
    try:
        f.seek(snap.record_positions[i])
        head = f.read(_RECORD.size)
        length, crc = _RECORD.unpack(head) if len(head) == _RECORD.size else (-1, 0)
        data = f.read(length) if length >= 0 else b""
    except OSError as exc:
        raise CorruptSnapshot(snap.path, f"record {i} unreadable: {exc}") from exc
    if length < 0 or len(data) != length:
        raise CorruptSnapshot(snap.path, f"record {i} truncated")
    if _record_crc(snap.record_offsets[i], data) != crc:
        raise CorruptSnapshot(snap.path, f"record {i} (data bytes {snap.record_offsets[i]}..) checksum mismatch")
    return data


class SnapshotReader:
    """Streams a snapshot's data, every record verified; the data checksum is
    checked when the end is reached. Use as a context manager.

    `on_corrupt` is told of a `CorruptSnapshot` before it propagates (the
    store uses it to set the file aside).
    """

    def __init__(self, snap: SnapshotFile, on_corrupt: Callable[[CorruptSnapshot], None] | None = None) -> None:
        self.meta = snap.meta
        self.size = snap.data_len
        self._snap = snap
        self._on_corrupt = on_corrupt
        self._file: BinaryIO = open(snap.path, "rb")
        self._next = 0
        self._crc = 0
        self._at_end = False
        self._buffer = b""

    def records(self) -> Iterator[bytes]:
        """The (remaining) data, one verified record at a time."""
        if self._buffer:
            yield self._buffer
            self._buffer = b""
        while (record := self._next_record()) is not None:
            yield record

    def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (all remaining if n < 0); b"" at the end."""
        parts = [self._buffer]
        have = len(self._buffer)
        while n < 0 or have < n:
            record = self._next_record()
            if record is None:
                break
            parts.append(record)
            have += len(record)
        data = b"".join(parts)
        if n < 0:
            self._buffer = b""
            return data
        self._buffer = data[n:]
        return data[:n]

    def _next_record(self) -> bytes | None:
        try:
            return self._advance()
        except CorruptSnapshot as exc:
            if self._on_corrupt is not None:
                self._on_corrupt(exc)
            raise

    def _advance(self) -> bytes | None:
        snap = self._snap
        if self._at_end:
            return None
        if self._next == len(snap.record_offsets):
            self._at_end = True
            if self._crc != snap.data_crc:
                raise CorruptSnapshot(snap.path, "data checksum mismatch")
            return None
        record = _read_record(snap, self._file, self._next)
        self._crc = zlib.crc32(record, self._crc)
        self._next += 1
        return record

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verify_snapshot(snap: SnapshotFile) -> None:
    """Read every record and check every checksum; raise `CorruptSnapshot`."""
    try:
        reader = SnapshotReader(snap)
    except OSError as exc:
        raise CorruptSnapshot(snap.path, f"unreadable: {exc}") from exc
    with reader:
        for _ in reader.records():
            pass


class SnapshotWriter:
    """Writes one snapshot file in checksummed records, under a temporary name.

    `finish()` completes the header, fsyncs the file, renames it to its final
    name and fsyncs the directory; `abort()` (or leaving a `with` block by an
    exception) removes the temporary file. `on_finish` runs after the rename
    (the store records the snapshot there).
    """

    def __init__(
        self, tmp_path: Path, final_path: Path, meta: SnapshotMeta, record_bytes: int,
        on_finish: Callable[[SnapshotFile], None] | None = None, *, _resume: bool = False,
    ) -> None:
        self.meta = meta
        self.tmp_path = tmp_path
        self.final_path = final_path
        self._record_bytes = record_bytes
        self._on_finish = on_finish
        self._buffer = bytearray()
        self.length = 0
        self._crc = 0
        self._offsets: list[int] = []
        self._positions: list[int] = []
        self._done = False
        self._file: BinaryIO
        if not _resume:
            self._io("create", self._create)

    def _create(self) -> None:
        self._file = open(self.tmp_path, "wb")
        self._file.write(_encode_header(self.meta, False, 0, 0))

    @classmethod
    def resume(cls, path: Path, final_dir: Path, record_bytes: int) -> SnapshotWriter:
        """Reopen a pending file, keeping its longest valid prefix of records.

        A torn last record (the process died while writing it) is cut off.
        """
        f: BinaryIO = open(path, "r+b")
        try:
            header = _read_header(path, f)
            writer = cls(path, final_dir / snapshot_name(header.meta), header.meta, record_bytes, _resume=True)
            writer._file = f
            writer._load_records(f, header.size)
        except BaseException:
            f.close()
            raise
        return writer

    def _load_records(self, f: BinaryIO, position: int) -> None:
        while True:
            f.seek(position)
            head = f.read(_RECORD.size)
            if len(head) < _RECORD.size:
                break
            length, crc = _RECORD.unpack(head)
            data = f.read(length) if 0 < length <= SNAPSHOT_RECORD_BYTES_LIMIT else b""
            if len(data) != length or not data or _record_crc(self.length, data) != crc:
                break
            self._offsets.append(self.length)
            self._positions.append(position)
            self._crc = zlib.crc32(data, self._crc)
            self.length += length
            position += _RECORD.size + length
        f.truncate(position)
        f.seek(position)
        os.fsync(f.fileno())

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data`; full records go to the file, the rest waits in memory."""
        invariant(not self._done, "writing to a finished snapshot")
        view = memoryview(data).cast("B")
        size = self._record_bytes
        if self._buffer:
            take = min(len(view), size - len(self._buffer))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == size:
                self._io("write", self._emit, self._buffer)
                self._buffer = bytearray()
        while len(view) >= size:
            self._io("write", self._emit, view[:size])
            view = view[size:]
        self._buffer += view

    def write_durably(self, data: bytes) -> None:
        """Append `data` and make everything written so far durable."""
        self.write(data)
        if self._buffer:
            self._io("write", self._emit, self._buffer)
            self._buffer = bytearray()
        self._io("fsync", self._sync)

    def finish(self) -> SnapshotFile:
        """Make the snapshot complete and durable under its final name."""
        invariant(not self._done, "finishing a finished snapshot")
        if self._buffer:
            self._io("write", self._emit, self._buffer)
            self._buffer = bytearray()
        self._io("finish", self._complete)
        self._done = True
        snap = SnapshotFile(
            self.final_path, self.meta, self.length, self._crc, tuple(self._offsets), tuple(self._positions)
        )
        if self._on_finish is not None:
            self._on_finish(snap)
        return snap

    def close(self) -> None:
        """Close the file without finishing or removing it (a pending snapshot
        kept for the next open)."""
        if not self._done:
            self._done = True
            self._file.close()

    def abort(self) -> None:
        """Drop the file being written. Idempotent."""
        if self._done:
            return
        self._done = True
        self._file.close()
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    # -- internals ---------------------------------------------------------------
    def _emit(self, piece: bytes | bytearray | memoryview) -> None:
        position = self._file.tell()
        self._file.write(_RECORD.pack(len(piece), _record_crc(self.length, piece)))
        self._file.write(piece)
        self._offsets.append(self.length)
        self._positions.append(position)
        self._crc = zlib.crc32(piece, self._crc)
        self.length += len(piece)

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def _complete(self) -> None:
        self._file.flush()
        self._file.seek(0)
        self._file.write(_encode_header(self.meta, True, self.length, self._crc))
        self._sync()
        self._file.close()
        os.rename(self.tmp_path, self.final_path)
        fsync_dir(self.final_path.parent)

    def _io(self, what: str, action: Callable[..., None], *args: object) -> None:
        """Run a file operation; a failure drops the temporary file and raises
        `StorageFull` or `StorageFailed`."""
        try:
            action(*args)
        except OSError as exc:
            self._done = True
            try:
                self._file.close()
            except (OSError, AttributeError):
                pass
            self.tmp_path.unlink(missing_ok=True)
            raise write_failure(exc, f"snapshot {what}", self.tmp_path) from exc


class SnapshotStore:
    """The snapshot files of one data directory.

    It knows which complete files exist and reads and writes them; which one is
    the newest snapshot *of record* is decided by the log store (its `snapshot`
    record), which `rsm.storage.DiskStorage` keeps consistent with the files.
    """

    def __init__(self, path: Path, settings: StorageSettings) -> None:
        self.path = path
        self._settings = settings
        self._files: dict[int, SnapshotFile] = {}
        self._pending: SnapshotWriter | None = None
        self._cache: tuple[Path, int, bytes] | None = None  # the last record read
        #: Corrupt files found while scanning at open (already set aside).
        self.problems: list[CorruptSnapshot] = []

    @classmethod
    def open(cls, path: Path, settings: StorageSettings) -> SnapshotStore:
        """Scan the directory: drop temporary files, index complete snapshots
        (setting corrupt ones aside), and reopen a pending incoming snapshot."""
        store = cls(path, settings)
        path.mkdir(exist_ok=True)
        for name in sorted(os.listdir(path)):
            store._adopt(path / name)
        return store

    def _adopt(self, file: Path) -> None:
        name = file.name
        if name.endswith(".snap.tmp"):
            log.info("%s: removing a snapshot left unfinished by a crash", file)
            file.unlink()
        elif name == PENDING_NAME:
            try:
                self._pending = SnapshotWriter.resume(file, self.path, self._settings.snapshot_record_bytes)
            except CorruptSnapshot as exc:
                log.warning("%s; discarding this unfinished incoming snapshot", exc)
                file.unlink()
        elif _NAME.match(name):
            try:
                snap = scan_snapshot(file)
                if snapshot_name(snap.meta) != name:
                    raise CorruptSnapshot(file, f"its header says index {snap.meta.index} term {snap.meta.term}")
                self._files[snap.meta.index] = snap
            except CorruptSnapshot as exc:
                self.problems.append(self.quarantine(file, exc))
        elif not name.endswith(".corrupt"):
            log.warning("%s: unexpected file in the snapshot directory, left alone", file)

    # -- which files exist -----------------------------------------------------------
    def get(self, index: int) -> SnapshotFile | None:
        return self._files.get(index)

    def indexes(self) -> list[int]:
        """Indexes of the complete snapshots, oldest first."""
        return sorted(self._files)

    def add(self, snap: SnapshotFile) -> None:
        self._files[snap.meta.index] = snap

    def remove(self, index: int, why: str) -> None:
        """Delete snapshot `index` (durably)."""
        snap = self._files.pop(index)
        log.info("%s: removing snapshot (%s)", snap.path, why)
        snap.path.unlink(missing_ok=True)
        fsync_dir(self.path)

    def quarantine(self, file: Path, error: CorruptSnapshot) -> CorruptSnapshot:
        """Set a corrupt file aside as `<name>.corrupt`; return the error to report."""
        for index, snap in list(self._files.items()):
            if snap.path == file:
                del self._files[index]
        if file.exists():
            file.rename(file.with_name(file.name + ".corrupt"))
            fsync_dir(self.path)
        log.error("%s (set aside as %s.corrupt)", error, file.name)
        return error

    def prune(self, keep: int, newest: int) -> None:
        """Keep the `keep` newest snapshots up to `newest`; delete the others."""
        indexes = [i for i in self.indexes() if i <= newest]
        for index in indexes[:-keep]:
            self.remove(index, f"more than {keep} snapshots kept")

    # -- reading ---------------------------------------------------------------------
    def verify(self, index: int) -> None:
        verify_snapshot(self._files[index])

    def chunk(self, index: int, offset: int, max_bytes: int) -> bytes:
        """Up to `max_bytes` (capped by `snapshot_read_bytes_max`) of data from `offset`."""
        snap = self._files[index]
        max_bytes = min(max_bytes, self._settings.snapshot_read_bytes_max)
        if offset >= snap.data_len or max_bytes <= 0:
            return b""
        i = bisect.bisect_right(snap.record_offsets, offset) - 1
        out = bytearray()
        try:
            f = open(snap.path, "rb")
        except OSError as exc:
            raise CorruptSnapshot(snap.path, f"unreadable: {exc}") from exc
        with f:
            while i < len(snap.record_offsets) and len(out) < max_bytes:
                record = self._record(snap, f, i)
                start = offset + len(out) - snap.record_offsets[i]
                out += record[start : start + max_bytes - len(out)]
                i += 1
        return bytes(out)

    def _record(self, snap: SnapshotFile, f: BinaryIO, i: int) -> bytes:
        cached = self._cache
        if cached is not None and cached[0] == snap.path and cached[1] == i:
            return cached[2]
        record = _read_record(snap, f, i)
        self._cache = (snap.path, i, record)
        return record

    def reader(self, index: int, on_corrupt: Callable[[CorruptSnapshot], None] | None = None) -> SnapshotReader:
        snap = self._files[index]
        try:
            return SnapshotReader(snap, on_corrupt)
        except OSError as exc:
            raise CorruptSnapshot(snap.path, f"unreadable: {exc}") from exc

    # -- writing ---------------------------------------------------------------------
    def writer(self, meta: SnapshotMeta, on_finish: Callable[[SnapshotFile], None] | None = None) -> SnapshotWriter:
        """A writer for a local snapshot (see `SnapshotWriter`)."""
        final = self.path / snapshot_name(meta)
        tmp = final.with_name(final.name + ".tmp")
        return SnapshotWriter(tmp, final, meta, self._settings.snapshot_record_bytes, on_finish)

    def pending(self) -> tuple[SnapshotMeta, int] | None:
        """The snapshot being received and the next offset it expects, if any."""
        if self._pending is None:
            return None
        return self._pending.meta, self._pending.length

    def write_pending(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        """Write a chunk of an incoming snapshot durably; offset 0 starts a new one."""
        if offset == 0:
            self.drop_pending()
            final = self.path / snapshot_name(meta)
            self._pending = SnapshotWriter(
                self.path / PENDING_NAME, final, meta, self._settings.snapshot_record_bytes
            )
            fsync_dir(self.path)
        pending = self._pending
        invariant(pending is not None and pending.meta == meta, "snapshot chunk for a snapshot not begun")
        assert pending is not None
        invariant(offset == pending.length, f"snapshot chunk at {offset}, expected {pending.length}")
        try:
            pending.write_durably(data)
        except BaseException:
            self._pending = None
            raise

    def finish_pending(self, meta: SnapshotMeta) -> SnapshotFile:
        """Make the received snapshot `meta` complete, durable and listed."""
        pending = self._pending
        invariant(pending is not None and pending.meta == meta, "installing a snapshot that was not written")
        assert pending is not None
        self._pending = None
        snap = pending.finish()
        self.add(snap)
        return snap

    def close(self) -> None:
        """Close the pending file, keeping it on disk (it resumes at the next open)."""
        if self._pending is not None:
            self._pending.close()
            self._pending = None

    def drop_pending(self) -> None:
        if self._pending is not None:
            self._pending.abort()
            self._pending = None
