"""The Raft log, hard state and configuration on LMDB.

Theory of operation. One LMDB environment holds three named databases:

- `entries`: key = big-endian 8-byte index, value = crc32 | term | kind | data.
  The crc32 covers the index, term, kind and data, so a flipped byte anywhere,
  or a value stored under the wrong key, fails the check on read.
- `meta`: the hard state, the log base (the index and term just before the
  first entry: the compaction point), the newest snapshot's metadata, and the
  directory identity; each value carries its own crc32.
- `confs`: the indexes of the CONFIG entries in the log, so the latest
  configuration is found with one cursor step, never a scan of the log.

Every mutation is ONE write transaction committed with `sync=True` (LMDB
fsyncs the data, then writes and syncs its meta page): a batch is either
wholly durable or not there at all. The store answers first/last index, last
term, hard state and configuration from memory (`_State`), refreshed from the
database at open and replaced only after a transaction commits, so a failed
write leaves it exactly as the disk is.

When the map fills, the transaction is aborted, the map grown by
`map_growth_factor` and the transaction run again: `lmdb.MapFullError` never
escapes. A failed write (disk full, I/O error) raises `StorageFull` or
`StorageFailed`, and the store refuses every later write.

The store is not thread-safe: one thread (the driver) uses it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn, TypeAlias

import attrs
import lmdb

from rsm.consensus.membership import decode_conf, encode_conf
from rsm.consensus.types import ConfState, Entry, EntryKind, HardState, SnapshotMeta
from rsm.errors import InvariantViolation, LogCompacted, LogUnavailable, invariant
from rsm.storage._fs import write_failure
from rsm.storage.errors import (
    REBUILD_ADVICE,
    CorruptionError,
    CorruptLogEntry,
    CorruptLogMeta,
    DataDirDamaged,
    NotADataDir,
    StorageClosed,
    StorageError,
    StorageFailed,
    StorageFull,
)
from rsm.storage.settings import StorageSettings

log = logging.getLogger("rsm.storage")

DB_ENTRIES = b"entries"
DB_META = b"meta"
DB_CONFS = b"confs"
#: Named databases the environment may hold: the three above and one spare.
MAX_DBS = 4

K_IDENTITY = b"identity"
K_HARD_STATE = b"hard_state"
K_BASE = b"base"
K_SNAPSHOT = b"snapshot"

_KEY = struct.Struct(">Q")
#: Entry value: crc32 (4 bytes) | varint(term << KIND_BITS | kind) | data.
#: The crc32 covers the varint, then the 8-byte key, then the data. The varint
#: keeps the header at 5-6 bytes for any realistic term: LMDB's commit cost
#: grows with the pages written, so bytes per entry matter.
_CRC = struct.Struct(">I")
KIND_BITS = 3
ENTRY_HEADER_BYTES_MIN = _CRC.size + 1
_SEAL = _CRC
#: Hard state: term, commit, has_vote; the vote (utf-8) follows.
_HARD_STATE = struct.Struct(">QQB")
#: A log point (index, term); the snapshot record appends encode_conf(conf).
_POINT = struct.Struct(">QQ")
_KINDS = {kind.value: kind for kind in EntryKind}
_CONFIG = int(EntryKind.CONFIG)


# -- value formats ---------------------------------------------------------------
def encode_entries(entries: Sequence[Entry]) -> tuple[list[tuple[bytes, bytes]], list[Entry]]:
    """The (key, value) pairs of `entries`, and the entries that start a new
    (term, kind) run (the first one included).

    This is the hot path of `save`: the term/kind varint and its crc32 are
    computed once per run; each entry costs one key pack, two crc32 calls, one
    crc pack and a concatenation. `decode_entry` checks the same checksum.
    """
    pack_key, pack_crc, crc32 = _KEY.pack, _CRC.pack, zlib.crc32
    head = entries[0]
    term, kind = head.term, head.kind
    tag, seed = _tag(term, kind)
    runs = [head]
    items: list[tuple[bytes, bytes]] = []
    append = items.append
    for entry in entries:
        if entry.term != term or entry.kind != kind:
            term, kind = entry.term, entry.kind
            tag, seed = _tag(term, kind)
            runs.append(entry)
        key = pack_key(entry.index)
        data = entry.data
        append((key, pack_crc(crc32(data, crc32(key, seed))) + tag + data))
    return items, runs


def _tag(term: int, kind: int) -> tuple[bytes, int]:
    """The varint of (term, kind) and its crc32 (the entry checksum's seed), cached:
    a log holds few distinct terms, and each batch needs them again."""
    cached = _TAGS.get((term, kind))
    if cached is not None:
        return cached
    invariant(0 <= kind < 1 << KIND_BITS and 0 <= term < 1 << 64, f"bad entry term {term} or kind {kind}")
    tag = _varint(term << KIND_BITS | kind)
    if len(_TAGS) >= TAG_CACHE_MAX:
        _TAGS.clear()
    _TAGS[(term, kind)] = (tag, zlib.crc32(tag))
    return _TAGS[(term, kind)]


#: Most (term, kind) tags cached; the cache is emptied when full.
TAG_CACHE_MAX = 1024
_TAGS: dict[tuple[int, int], tuple[bytes, int]] = {}


def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low bits first, high bit = more follows."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(value: bytes, pos: int) -> tuple[int, int]:
    """Decode a varint at `pos`; return (number, position after it); (-1, pos) if malformed."""
    result = shift = 0
    for i in range(pos, min(len(value), pos + 10)):
        byte = value[i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i + 1
        shift += 7
    return -1, pos


def decode_entry(path: Path, index: int, value: bytes) -> Entry:
    """The entry stored at `index`, after checking its crc32 (paired with `encode_entries`)."""
    tag, start = (value[4], 5) if len(value) > 4 and value[4] < 0x80 else _read_varint(value, 4)
    if tag < 0:
        raise CorruptLogEntry(path, index, f"malformed header in a value of {len(value)} bytes")
    data = value[start:]
    if zlib.crc32(data, zlib.crc32(_KEY.pack(index), zlib.crc32(value[4:start]))) != _CRC.unpack_from(value)[0]:
        raise CorruptLogEntry(path, index, "checksum mismatch")
    term, kind = tag >> KIND_BITS, tag & ((1 << KIND_BITS) - 1)
    entry_kind = _KINDS.get(kind)
    if entry_kind is None:
        raise CorruptLogEntry(path, index, f"unknown entry kind {kind}")
    return Entry(index=index, term=term, kind=entry_kind, data=data)


def _seal(key: bytes, payload: bytes) -> bytes:
    return _SEAL.pack(zlib.crc32(payload, zlib.crc32(key))) + payload


def _unseal(path: Path, key: bytes, value: bytes | None) -> bytes:
    if value is None:
        raise CorruptLogMeta(path, key.decode(), "missing")
    if len(value) < _SEAL.size:
        raise CorruptLogMeta(path, key.decode(), "too short")
    payload = value[_SEAL.size :]
    if zlib.crc32(payload, zlib.crc32(key)) != _SEAL.unpack_from(value)[0]:
        raise CorruptLogMeta(path, key.decode(), "checksum mismatch")
    return payload


def _encode_hard_state(hard_state: HardState) -> bytes:
    vote = b"" if hard_state.vote is None else hard_state.vote.encode()
    head = _HARD_STATE.pack(hard_state.term, hard_state.commit, hard_state.vote is not None)
    return _seal(K_HARD_STATE, head + vote)


def _decode_hard_state(path: Path, value: bytes | None) -> HardState:
    payload = _unseal(path, K_HARD_STATE, value)
    term, commit, has_vote = _HARD_STATE.unpack_from(payload)
    vote = payload[_HARD_STATE.size :].decode() if has_vote else None
    return HardState(term=term, vote=vote, commit=commit)


def _encode_snapshot(meta: SnapshotMeta) -> bytes:
    return _seal(K_SNAPSHOT, _POINT.pack(meta.index, meta.term) + encode_conf(meta.conf))


def _decode_snapshot(path: Path, value: bytes | None) -> SnapshotMeta:
    payload = _unseal(path, K_SNAPSHOT, value)
    index, term = _POINT.unpack_from(payload)
    try:
        conf = decode_conf(payload[_POINT.size :])
    except ValueError as exc:
        raise CorruptLogMeta(path, K_SNAPSHOT.decode(), str(exc)) from exc
    return SnapshotMeta(index=index, term=term, conf=conf)


def _decode_base(path: Path, value: bytes | None) -> tuple[int, int]:
    index, term = _POINT.unpack(_unseal(path, K_BASE, value))
    return index, term


def _commit(txn: _Txn) -> None:
    """Commit (and, with sync=True, fsync). A module function so that tests can
    inject a disk failure here without patching LMDB itself."""
    txn.commit()


# -- the store -----------------------------------------------------------------
@attrs.frozen
class _State:
    """What the store answers from memory. Replaced whole after each commit."""

    base_index: int  # the index just before the first entry (snapshot / compaction point)
    base_term: int
    last_index: int
    last_term: int
    hard_state: HardState
    snapshot: SnapshotMeta  # the newest snapshot recorded
    conf: ConfState  # latest configuration: newest CONFIG entry, else the snapshot's
    conf_index: int  # index of that CONFIG entry; 0 when it is the snapshot's


_Txn: TypeAlias = "lmdb.Transaction[bytes]"
_Body: TypeAlias = Callable[[_Txn], _State]
_Dbs: TypeAlias = "tuple[lmdb._Database, lmdb._Database, lmdb._Database]"


class LMDBLogStore:
    """Log entries, hard state and configuration in one LMDB environment.

    Use `LMDBLogStore.open`. This is the log half of the `LogStore` contract;
    `rsm.storage.DiskStorage` adds the snapshot files.
    """

    def __init__(self, env: lmdb.Environment, dbs: _Dbs, path: Path, settings: StorageSettings) -> None:
        self._env: lmdb.Environment | None = env
        self.path = path
        self._data_file = path / "data.mdb"
        self._settings = settings
        self._entries, self._meta, self._confs = dbs
        self._state: _State
        self._failed: StorageError | None = None
        #: Write transactions committed (each one durable: LMDB's data + meta sync).
        self.commit_count = 0

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        settings: StorageSettings | None = None,
        identity: bytes = b"",
        initial_conf: ConfState | None = None,
        create: bool = True,
    ) -> LMDBLogStore:
        """Open (or, if `create`, initialise) the log in directory `path`.

        `identity` is recorded at creation and must match on every later open.
        `initial_conf` is the bootstrap configuration (the conf of "snapshot 0"),
        used only when the log is created.
        """
        path = Path(path)
        settings = (settings or StorageSettings()).validate()
        path.mkdir(parents=True, exist_ok=True)
        env, dbs = _open_env(path, settings)
        try:
            store = cls(env, dbs, path, settings)
            store._load(identity, initial_conf or ConfState(), create)
        except BaseException:
            env.close()
            raise
        return store

    def close(self) -> None:
        """Close the environment. Idempotent; the store is unusable afterwards."""
        if self._env is not None:
            self._env.close()
            self._env = None

    # -- read side (Storage) -------------------------------------------------
    def hard_state(self) -> HardState:
        return self._state.hard_state

    def latest_conf(self) -> ConfState:
        return self._state.conf

    def initial_state(self) -> tuple[HardState, ConfState]:
        state = self._state
        return state.hard_state, state.conf

    def first_index(self) -> int:
        return self._state.base_index + 1

    def last_index(self) -> int:
        return self._state.last_index

    def snapshot_meta(self) -> SnapshotMeta:
        """The newest snapshot recorded (its file lives in the snapshot store)."""
        return self._state.snapshot

    def term(self, index: int) -> int:
        state = self._state
        if index == state.last_index:
            return state.last_term
        if index == state.base_index:
            return state.base_term
        if index < state.base_index:
            raise LogCompacted(f"index {index} is compacted (first is {state.base_index + 1})")
        if index > state.last_index:
            raise LogUnavailable(f"index {index} is past the last index {state.last_index}")
        with self._reader() as txn:
            return self._get_entry(txn, index).term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        state = self._state
        if lo <= state.base_index:
            raise LogCompacted(f"index {lo} is compacted (first is {state.base_index + 1})")
        if hi > state.last_index + 1:
            raise LogUnavailable(f"index {hi - 1} is past the last index {state.last_index}")
        if lo >= hi:
            return []
        with self._reader() as txn:
            return self._read_range(txn, lo, hi, max_bytes)

    # -- write side ----------------------------------------------------------
    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Write `hard_state` and `entries` in one durable transaction.

        A batch starting at or below the last index first discards the stored
        suffix from there (a conflict the core found). An empty call is a no-op.
        """
        state = self._state
        if hard_state is None and not entries:
            return
        items: list[tuple[bytes, bytes]] = []
        conf_indexes: list[int] = []
        last_index, last_term = state.last_index, state.last_term
        if entries:
            items, conf_indexes = self._encode_batch(state, entries)
            last_index, last_term = entries[-1].index, entries[-1].term
        new_conf = self._check_conf(entries, conf_indexes) if conf_indexes else None
        if hard_state is not None:
            _check_hard_state(state.hard_state, hard_state, last_index)
        # Hot path: invariants are tested first and their messages built only on failure.
        if last_term > (hard_state or state.hard_state).term:
            raise InvariantViolation(f"entry term {last_term} above the hard state term {(hard_state or state.hard_state).term}")
        hard_state_value = None if hard_state is None else _encode_hard_state(hard_state)

        def body(txn: _Txn) -> _State:
            conf, conf_index = state.conf, state.conf_index
            if entries and entries[0].index <= state.last_index:
                conf, conf_index = self._truncate(txn, state, entries[0].index)
            if items:
                added = txn.cursor(db=self._entries).putmulti(items, append=True)[1]
                if added != len(items):
                    raise InvariantViolation(f"appended {added} of {len(items)} entries: indexes not increasing")
            for index in conf_indexes:
                txn.put(_KEY.pack(index), b"", db=self._confs)
            if new_conf is not None:
                conf, conf_index = new_conf, conf_indexes[-1]
            if hard_state_value is not None:
                txn.put(K_HARD_STATE, hard_state_value, db=self._meta)
            return _State(
                state.base_index, state.base_term, last_index, last_term,
                hard_state or state.hard_state, state.snapshot, conf, conf_index,
            )

        self._write("save", body)

    def compact(self, index: int) -> None:
        """Discard entries up to and including `index` (<= the newest snapshot)."""
        state = self._state
        if index <= state.base_index:
            return
        invariant(index <= state.snapshot.index, f"compacting to {index}, past the newest snapshot {state.snapshot.index}")
        invariant(index <= state.last_index, f"compacting to {index}, past the last index {state.last_index}")
        term = self.term(index)

        def body(txn: _Txn) -> _State:
            self._delete_entries(txn, state.base_index + 1, index)
            self._delete_confs(txn, 1, index)
            txn.put(K_BASE, _seal(K_BASE, _POINT.pack(index, term)), db=self._meta)
            conf, conf_index = state.conf, state.conf_index
            if conf_index <= index:  # the newest CONFIG entry went: the snapshot's conf rules
                conf, conf_index = state.snapshot.conf, 0
            return attrs.evolve(state, base_index=index, base_term=term, conf=conf, conf_index=conf_index)

        self._write("compact", body)

    def check_new_snapshot(self, meta: SnapshotMeta) -> None:
        """Invariants of a snapshot taken locally at `meta.index` (checked before
        its file is written): committed, in the log, not older than the newest."""
        state = self._state
        invariant(meta.index <= state.last_index, f"snapshot {meta.index} past the last index {state.last_index}")
        invariant(meta.index >= state.snapshot.index, f"snapshot {meta.index} older than the newest {state.snapshot.index}")
        invariant(meta.index <= state.hard_state.commit, f"snapshot {meta.index} of uncommitted entries (commit {state.hard_state.commit})")
        invariant(self.term(meta.index) == meta.term, f"snapshot {meta.index} has term {meta.term}, the log says {self.term(meta.index)}")

    def record_snapshot(self, meta: SnapshotMeta) -> None:
        """Record `meta` as the newest snapshot (its file is already durable)."""
        self.check_new_snapshot(meta)
        self._set_snapshot(meta)

    def fall_back_to_snapshot(self, meta: SnapshotMeta) -> None:
        """Record an older snapshot as the newest because the newest is corrupt.

        Only possible while the log still holds every entry after `meta.index`.
        """
        state = self._state
        invariant(state.base_index <= meta.index <= state.snapshot.index, f"cannot fall back to snapshot {meta.index}")
        invariant(self.term(meta.index) == meta.term, f"fallback snapshot {meta.index} does not match the log")
        self._set_snapshot(meta)

    def install_snapshot(self, meta: SnapshotMeta) -> None:
        """The log side of installing a received snapshot (Raft §5.6, figure 13).

        If the log holds entry `meta.index` with `meta.term`, the entries after
        it are kept; otherwise the whole log is discarded. The commit index is
        raised to at least `meta.index`. One transaction.
        """
        state = self._state
        invariant(meta.index >= state.snapshot.index, f"installing snapshot {meta.index}, older than {state.snapshot.index}")
        keep = state.base_index <= meta.index <= state.last_index and self.term(meta.index) == meta.term
        old = state.hard_state
        hard_state = HardState(term=old.term, vote=old.vote, commit=max(old.commit, meta.index))

        def body(txn: _Txn) -> _State:
            if keep:
                self._delete_entries(txn, state.base_index + 1, meta.index)
                self._delete_confs(txn, 1, meta.index)
                last_index, last_term = state.last_index, state.last_term
                conf, conf_index = state.conf, state.conf_index
                if conf_index <= meta.index:
                    conf, conf_index = meta.conf, 0
            else:
                txn.drop(self._entries, delete=False)
                txn.drop(self._confs, delete=False)
                last_index, last_term, conf, conf_index = meta.index, meta.term, meta.conf, 0
            txn.put(K_BASE, _seal(K_BASE, _POINT.pack(meta.index, meta.term)), db=self._meta)
            txn.put(K_SNAPSHOT, _encode_snapshot(meta), db=self._meta)
            txn.put(K_HARD_STATE, _encode_hard_state(hard_state), db=self._meta)
            return _State(
                base_index=meta.index, base_term=meta.term, last_index=last_index, last_term=last_term,
                hard_state=hard_state, snapshot=meta, conf=conf, conf_index=conf_index,
            )

        self._write("install_snapshot", body)

    # -- internals: batches ----------------------------------------------------
    def _encode_batch(self, state: _State, entries: Sequence[Entry]) -> tuple[list[tuple[bytes, bytes]], list[int]]:
        """Check a batch against the log and encode it (checksums computed here,
        before the write; `decode_entry` checks them after every read).

        Contiguity is checked in O(1): first and last index span exactly the
        batch, and `putmulti(append=True)` refuses keys that do not increase.
        """
        first, last = entries[0].index, entries[-1].index
        if not (state.base_index < first <= state.last_index + 1 and last - first == len(entries) - 1):
            invariant(first > state.base_index, f"append at {first}, at or below the compaction point {state.base_index}")
            invariant(first <= state.last_index + 1, f"gap: append at {first} after the last index {state.last_index}")
            invariant(False, f"batch of {len(entries)} entries spans {first}..{last}")
        if state.hard_state.commit >= first <= state.last_index:
            raise InvariantViolation(f"overwriting committed entry {first} (commit {state.hard_state.commit})")
        items, runs = encode_entries(entries)
        previous_term = state.last_term if first == state.last_index + 1 else self.term(first - 1)
        if len(runs) == 1 and runs[0].kind != _CONFIG and runs[0].term >= previous_term:
            return items, []  # the common batch: one term, no configuration change
        conf_indexes: list[int] = []
        for run, end in zip(runs, [*(run.index for run in runs[1:]), last + 1], strict=True):
            invariant(run.term >= previous_term, f"entry {run.index} has term {run.term}, below the previous {previous_term}")
            previous_term = run.term
            if run.kind == _CONFIG:
                conf_indexes.extend(range(run.index, end))
        return items, conf_indexes

    @staticmethod
    def _check_conf(entries: Sequence[Entry], conf_indexes: list[int]) -> ConfState | None:
        """The configuration the batch's newest CONFIG entry carries, if any."""
        if not conf_indexes:
            return None
        entry = entries[conf_indexes[-1] - entries[0].index]
        invariant(entry.index == conf_indexes[-1], "batch not contiguous")
        try:
            return decode_conf(entry.data)
        except ValueError as exc:
            raise InvariantViolation(f"CONFIG entry {entry.index} is malformed: {exc}") from exc

    def _truncate(self, txn: _Txn, state: _State, first: int) -> tuple[ConfState, int]:
        """Discard entries `first`..last and their conf records; return the latest
        configuration that remains."""
        self._delete_entries(txn, first, state.last_index)
        self._delete_confs(txn, first, state.last_index)
        if state.conf_index < first:
            return state.conf, state.conf_index
        return self._newest_conf(txn, state.snapshot.conf)

    def _set_snapshot(self, meta: SnapshotMeta) -> None:
        state = self._state

        def body(txn: _Txn) -> _State:
            txn.put(K_SNAPSHOT, _encode_snapshot(meta), db=self._meta)
            conf = state.conf if state.conf_index else meta.conf
            return attrs.evolve(state, snapshot=meta, conf=conf)

        self._write("record_snapshot", body)

    # -- internals: LMDB access --------------------------------------------------
    @contextlib.contextmanager
    def _reader(self) -> Iterator[_Txn]:
        """A read transaction; an LMDB error while reading means the file is damaged."""
        if self._env is None:
            raise StorageClosed(f"{self.path}: the log store is closed")
        try:
            with self._env.begin() as txn:
                yield txn
        except lmdb.Error as exc:
            raise CorruptionError(self._data_file, f"LMDB failed reading it: {exc}; {REBUILD_ADVICE}") from exc

    def _get_entry(self, txn: _Txn, index: int) -> Entry:
        value = txn.get(_KEY.pack(index), db=self._entries)
        if value is None:
            raise CorruptLogEntry(self._data_file, index, "missing: the log has a hole")
        return decode_entry(self._data_file, index, value)

    def _read_range(self, txn: _Txn, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
        cursor = txn.cursor(db=self._entries)
        if not cursor.set_key(_KEY.pack(lo)):
            raise CorruptLogEntry(self._data_file, lo, "missing: the log has a hole")
        out: list[Entry] = []
        total = 0
        index = lo
        path, pack_key = self._data_file, _KEY.pack
        for key, value in cursor.iternext():
            if key != pack_key(index):
                raise CorruptLogEntry(path, index, "missing: the log has a hole")
            entry = decode_entry(path, index, value)
            if max_bytes is not None:
                total += entry.size_bytes()
                if total > max_bytes and out:
                    return out
            out.append(entry)
            index += 1
            if index == hi:
                return out
        raise CorruptLogEntry(path, index, "missing: the log ends early")

    def _delete_entries(self, txn: _Txn, lo: int, hi: int) -> None:
        """Delete entries lo..hi (inclusive), each of which must exist."""
        if hi < lo:
            return
        cursor = txn.cursor(db=self._entries)
        if not cursor.set_key(_KEY.pack(lo)):
            raise CorruptLogEntry(self._data_file, lo, "missing: the log has a hole")
        for index in range(lo, hi + 1):
            if cursor.key() != _KEY.pack(index):
                raise CorruptLogEntry(self._data_file, index, "missing: the log has a hole")
            cursor.delete()

    def _delete_confs(self, txn: _Txn, lo: int, hi: int) -> None:
        """Delete the conf records of indexes lo..hi (inclusive)."""
        cursor = txn.cursor(db=self._confs)
        if not cursor.set_range(_KEY.pack(lo)):
            return
        while (key := cursor.key()) and _KEY.unpack(key)[0] <= hi:
            cursor.delete()

    def _newest_conf(self, txn: _Txn, fallback: ConfState) -> tuple[ConfState, int]:
        """The newest CONFIG entry's configuration and index, else (`fallback`, 0)."""
        cursor = txn.cursor(db=self._confs)
        if not cursor.last():
            return fallback, 0
        (index,) = _KEY.unpack(cursor.key())
        entry = self._get_entry(txn, index)
        if entry.kind != EntryKind.CONFIG:
            raise CorruptLogEntry(self._data_file, index, "recorded as a CONFIG entry but it is not one")
        try:
            return decode_conf(entry.data), index
        except ValueError as exc:
            raise CorruptLogEntry(self._data_file, index, f"CONFIG entry undecodable: {exc}") from exc

    def _write(self, what: str, body: _Body) -> None:
        """Run `body` in one write transaction and commit it durably.

        On a full map: abort, grow the map, run `body` again (it only reads the
        old `_State`, which an aborted transaction leaves unchanged). On any other
        LMDB error: the store is failed for good and a named error is raised.
        """
        self.check_writable()
        assert self._env is not None
        while True:
            txn = self._env.begin(write=True)
            try:
                state = body(txn)
                _commit(txn)
            except lmdb.MapFullError:
                txn.abort()
                self._grow_map(what)
                continue
            except lmdb.Error as exc:
                txn.abort()
                self._fail(write_failure(exc, what, self._data_file))
            except BaseException:
                txn.abort()
                raise
            self._state = state
            self.commit_count += 1
            return

    def _grow_map(self, what: str) -> None:
        assert self._env is not None
        current = self._env.info()["map_size"]
        ceiling = self._settings.map_size_max_bytes
        if current >= ceiling:
            self._fail(StorageFull(
                f"{self.path}: {what} needs more than map_size_max_bytes={ceiling}; nothing was "
                "written. Compact the log (take a snapshot) or raise the setting, then restart."
            ))
        page = self._env.stat()["psize"]
        wanted = math.ceil(current * self._settings.map_growth_factor / page) * page
        new = min(ceiling, max(wanted, current + page))
        log.info("%s: LMDB map full during %s, growing it from %d to %d bytes", self.path, what, current, new)
        self._env.set_mapsize(new)

    def _fail(self, error: StorageError) -> NoReturn:
        self.mark_failed(error)
        raise error

    def mark_failed(self, error: StorageError) -> None:
        """Refuse every later write: `error` (here or in a snapshot file) was not retried."""
        if self._failed is None:
            self._failed = error

    def check_writable(self) -> None:
        """Raise unless a write may be attempted (open, and no earlier failure)."""
        if self._failed is not None:
            raise StorageFailed(f"{self.path}: refusing to write after an earlier failure: {self._failed}")
        if self._env is None:
            raise StorageClosed(f"{self.path}: the log store is closed")

    # -- internals: opening ------------------------------------------------------
    def _load(self, identity: bytes, initial_conf: ConfState, create: bool) -> None:
        with self._reader() as txn:
            found = txn.get(K_IDENTITY, db=self._meta)
            fresh = found is None
            if fresh:
                self._check_empty(txn)
        if fresh:
            if not create:
                raise DataDirDamaged(self.path, "the log was never initialised")
            self._initialise(identity, initial_conf)
        with self._reader() as txn:
            recorded = _unseal(self._data_file, K_IDENTITY, txn.get(K_IDENTITY, db=self._meta))
            if recorded != identity:
                raise DataDirDamaged(self.path, f"the log belongs to {recorded!r}, not {identity!r}")
            self._state = self._read_state(txn)
        if create and not fresh:
            self._check_unused()

    def _check_empty(self, txn: _Txn) -> None:
        for db, name in ((self._entries, "entries"), (self._meta, "meta"), (self._confs, "confs")):
            if txn.stat(db)["entries"]:
                raise NotADataDir(self.path, f"its LMDB {name!r} database holds data but no identity record")

    def _check_unused(self) -> None:
        """Creating over a log left by an interrupted creation: it must be untouched."""
        state = self._state
        if state.last_index or state.hard_state != HardState() or state.snapshot.index:
            raise NotADataDir(self.path, "the log holds data but the directory has no STAMP file")

    def _initialise(self, identity: bytes, conf: ConfState) -> None:
        def body(txn: _Txn) -> _State:
            txn.put(K_IDENTITY, _seal(K_IDENTITY, identity), db=self._meta)
            txn.put(K_HARD_STATE, _encode_hard_state(HardState()), db=self._meta)
            txn.put(K_BASE, _seal(K_BASE, _POINT.pack(0, 0)), db=self._meta)
            txn.put(K_SNAPSHOT, _encode_snapshot(SnapshotMeta(conf=conf)), db=self._meta)
            return _State(0, 0, 0, 0, HardState(), SnapshotMeta(conf=conf), conf, 0)

        self._write("initialise", body)

    def _read_state(self, txn: _Txn) -> _State:
        path = self._data_file
        hard_state = _decode_hard_state(path, txn.get(K_HARD_STATE, db=self._meta))
        base_index, base_term = _decode_base(path, txn.get(K_BASE, db=self._meta))
        snapshot = _decode_snapshot(path, txn.get(K_SNAPSHOT, db=self._meta))
        last_index, last_term = base_index, base_term
        cursor = txn.cursor(db=self._entries)
        if cursor.last():
            (last_index,) = _KEY.unpack(cursor.key())
            last_term = decode_entry(path, last_index, cursor.value()).term
            cursor.first()
            (first,) = _KEY.unpack(cursor.key())
            if first != base_index + 1:
                raise CorruptLogEntry(path, base_index + 1, f"the log starts at {first}, not after its base")
        count = txn.stat(self._entries)["entries"]
        if count != last_index - base_index:
            raise CorruptLogEntry(path, base_index + 1, f"{count} entries stored for indexes {base_index + 1}..{last_index}")
        conf, conf_index = self._newest_conf(txn, snapshot.conf)
        return _State(base_index, base_term, last_index, last_term, hard_state, snapshot, conf, conf_index)


def _check_hard_state(old: HardState, new: HardState, last_index: int) -> None:
    """What Raft's hard state may never do, whoever asks (Raft figure 2)."""
    if (new.term > old.term or new.vote == old.vote or old.vote is None) and old.commit <= new.commit <= last_index:
        if new.term >= old.term:
            return
    invariant(new.term >= old.term, f"term going back from {old.term} to {new.term}")
    invariant(
        new.term > old.term or old.vote is None or new.vote == old.vote,
        f"vote changing from {old.vote!r} to {new.vote!r} within term {new.term}",
    )
    invariant(new.commit >= old.commit, f"commit going back from {old.commit} to {new.commit}")
    invariant(new.commit <= last_index, f"commit {new.commit} past the last index {last_index}")


def _open_env(path: Path, settings: StorageSettings) -> tuple[lmdb.Environment, _Dbs]:
    """Open the LMDB environment with real durability, and its named databases.

    `sync` and `metasync` make every commit fsync; `writemap=False` keeps the
    map read-only so a stray write through a pointer cannot corrupt the file.
    """
    try:
        env = lmdb.open(
            str(path), map_size=settings.map_size_initial_bytes, max_dbs=MAX_DBS,
            sync=True, metasync=True, writemap=False, subdir=True, lock=True,
        )
    except lmdb.Error as exc:
        raise DataDirDamaged(path, f"LMDB cannot open it: {exc}") from exc
    try:
        return env, _create_dbs(env, path, settings)
    except BaseException:
        env.close()
        raise


def _create_dbs(env: lmdb.Environment, path: Path, settings: StorageSettings) -> _Dbs:
    """Open (creating) the named databases, growing a tiny map if it cannot hold them."""
    while True:
        try:
            return env.open_db(DB_ENTRIES), env.open_db(DB_META), env.open_db(DB_CONFS)
        except lmdb.MapFullError:
            current = env.info()["map_size"]
            if current >= settings.map_size_max_bytes:
                raise StorageFull(f"{path}: map_size_max_bytes={current} cannot hold the log's databases") from None
            env.set_mapsize(min(settings.map_size_max_bytes, int(current * settings.map_growth_factor)))
