"""`LMDBStateMachine`: a replicated state machine whose state lives in LMDB.

Theory of operation
-------------------
The machine owns one LMDB environment (a directory the replica chooses). User
state lives in named tables (LMDB named databases): ``"default"`` plus any
listed in the class attribute `lmdb_tables`. Beside them the framework keeps
``rsm.meta`` (format stamp; applied index, applied term and clock) and
``rsm.sessions`` (one record per client session).

Applying a batch of entries opens one write transaction. Each command runs in
a *nested* transaction (``env.begin(write=True, parent=batch)``), committed if
the command returns and aborted if it raises, so a failed command leaves no
trace in the state while it still occupies its log slot. At the end of the
batch the applied index, the clock and the sessions that changed are written
in the *same* transaction as the state, and the transaction is committed with
an fsync. So after a crash the machine reopens at a consistent applied index,
with exactly-once intact, and the replica resumes from the next entry: there
is nothing to replay and no way for the index and the state to disagree.

Nested transactions need ``writemap=False`` (the default here). When the map
fills, LMDB poisons the whole batch transaction, so the host aborts the batch,
reloads the durable state, doubles the map (up to a limit) and applies the
batch again; apply is deterministic, so the results are the same.

A snapshot is a read transaction streamed out (taken while apply goes on, in
another thread if the replica likes): the header carries the applied index
and the session table read in that transaction, and the body every key/value
pair of every user table, in table-name and key order. A restore empties the
tables and loads the pairs, committing every `lmdb_restore_txn_bytes`; a
``restoring`` marker written first and removed in the last transaction makes
an interrupted restore reopen as an empty machine at index 0 (the replica then
installs the snapshot again) instead of a half-restored one.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, ClassVar, Final

import lmdb
import msgpack

from rsm.errors import RsmError, invariant
from rsm.sessions import SessionTable, decode_session, encode_session
from rsm.statemachine import (
    _FATAL,
    SNAPSHOT_KIND_LMDB,
    ApplyContext,
    ContextUnavailable,
    MachineHost,
    MachineSettings,
    QueryMutatedState,
    SnapshotFormatError,
    StateMachine,
    _Backend,
    _Codec,
    _ContainerHeader,
    _decode_sessions,
    _MapFull,
    _read_container,
    _rebound,
    _write_container,
)

__all__ = [
    "DEFAULT_TABLE",
    "LMDBStateMachine",
    "MachineStorageError",
    "MachineStorageFull",
    "Table",
]

#: The table every LMDB machine has.
DEFAULT_TABLE: Final = "default"
#: On-disk format of the machine's environment (meta and session records).
LMDB_FORMAT_VERSION: Final = 1
#: LMDB's key size limit with its default build (`Environment.max_key_size`).
KEY_BYTES_MAX: Final = 511

_META_DB: Final = b"rsm.meta"
_SESSIONS_DB: Final = b"rsm.sessions"
_KEY_FORMAT: Final = b"format"
_KEY_STATE: Final = b"state"
_KEY_RESTORING: Final = b"restoring"
_FORMAT = struct.Struct(">H")
_STATE = struct.Struct(">QQQ")  # applied_index, applied_term, clock_ms
_SESSION_ID = struct.Struct(">Q")
_PAIR_LENGTHS = struct.Struct(">II")
#: Largest record a restore buffers: a batch of pairs, or one big value.
_RESTORE_RECORD_BYTES_MAX: Final = 256 << 20


class MachineStorageError(RsmError):
    """The machine's LMDB environment cannot be used (wrong format, no path)."""


class MachineStorageFull(MachineStorageError):
    """The map reached `lmdb_map_size_max_bytes`; the replica must stop."""


def _table_db_name(name: str) -> bytes:
    return f"user.{name}".encode()


class Table:
    """One named table of an `LMDBStateMachine`, bound to whatever transaction
    is current: the command's (read-write) or the query's (read-only).

    Keys and values are bytes; keys are 1 to 511 bytes and sort bytewise.
    Using a table outside a command or query raises `ContextUnavailable`;
    writing from a query raises `QueryMutatedState`.
    """

    __slots__ = ("_db", "_machine", "name")

    def __init__(self, machine: LMDBStateMachine, name: str, db: Any) -> None:
        self._machine = machine
        self._db = db
        self.name = name

    @property
    def handle(self) -> Any:
        """The LMDB database handle, for use with `machine.txn` directly."""
        return self._db

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        """The value of `key`, or `default`."""
        value: bytes | None = self._machine.txn.get(key, default, db=self._db)
        return value

    def put(self, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        """Store `value` under `key`; with ``overwrite=False`` keep an existing
        value. Returns whether it was written."""
        _check_key(key)
        txn = self._machine._rsm_write_txn()
        try:
            return bool(txn.put(key, value, overwrite=overwrite, db=self._db))
        except lmdb.MapFullError:
            self._machine._rsm_map_full = True
            raise

    def delete(self, key: bytes) -> bool:
        """Remove `key`; return whether it existed."""
        txn = self._machine._rsm_write_txn()
        try:
            return bool(txn.delete(key, db=self._db))
        except lmdb.MapFullError:
            self._machine._rsm_map_full = True
            raise

    def scan(self, start: bytes = b"", end: bytes | None = None, *, limit: int | None = None,
             reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``start <= key < end`` (no upper bound if `end` is None),
        in key order (descending if `reverse`), at most `limit` of them.
        Consume the iterator before the command or query returns."""
        cursor = self._machine.txn.cursor(db=self._db)
        pairs = _scan_reverse(cursor, start, end) if reverse else _scan_forward(cursor, start, end)
        if limit is None:
            return pairs
        return (pair for _, pair in zip(range(limit), pairs, strict=False))

    def __len__(self) -> int:
        return int(self._machine.txn.stat(self._db)["entries"])


def _check_key(key: bytes) -> None:
    if not 0 < len(key) <= KEY_BYTES_MAX:
        raise ValueError(f"LMDB keys must be 1 to {KEY_BYTES_MAX} bytes, got {len(key)}")


def _scan_forward(cursor: Any, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    if not cursor.set_range(start):
        return
    for key, value in cursor.iternext():
        if end is not None and key >= end:
            return
        yield key, value


def _scan_reverse(cursor: Any, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    if end is None:
        positioned = cursor.last()
    elif cursor.set_range(end):
        positioned = cursor.prev()  # the first key >= end is excluded
    else:
        positioned = cursor.last()  # every key is < end
    if not positioned:
        return
    for key, value in cursor.iterprev():
        if key < start:
            return
        yield key, value


class LMDBStateMachine(StateMachine):
    """Base class of machines whose state lives in LMDB.

    Subclass it, list extra tables in `lmdb_tables`, and inside commands and
    queries use `self.db` (the default `Table`), `self.table(name)`, or the
    raw transaction `self.txn`. Keep no state in Python attributes: it would
    be neither persisted nor snapshotted. Snapshot, restore and digest are
    provided; the host opens the environment at the path the replica gives.
    """

    __slots__ = ("_rsm_backend", "_rsm_map_full", "_rsm_tables", "_rsm_txn", "_rsm_writable")
    _rsm_backend: _LMDBBackend | None
    _rsm_map_full: bool
    _rsm_tables: dict[str, Table] | None
    _rsm_txn: Any
    _rsm_writable: bool

    #: Extra named tables (besides "default"). Part of the on-disk format:
    #: a snapshot can only be restored into a machine with the same tables.
    lmdb_tables: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = cls.lmdb_tables
        if not (isinstance(names, tuple) and all(isinstance(n, str) and n for n in names)):
            raise TypeError(f"{cls.__qualname__}.lmdb_tables must be a tuple of non-empty str")
        if len(set(names)) != len(names) or DEFAULT_TABLE in names:
            raise TypeError(f"{cls.__qualname__}.lmdb_tables has duplicates or {DEFAULT_TABLE!r}")

    @classmethod
    def table_names(cls) -> tuple[str, ...]:
        """All user tables, sorted (the order of snapshots and digests)."""
        return tuple(sorted((DEFAULT_TABLE, *cls.lmdb_tables)))

    # -- what commands and queries use ------------------------------------

    @property
    def txn(self) -> Any:
        """The current `lmdb.Transaction`: the command's nested write
        transaction, or the query's read-only one."""
        txn = getattr(self, "_rsm_txn", None)
        if txn is None:
            raise ContextUnavailable("LMDB state is only reachable while a command or query runs")
        return txn

    @property
    def db(self) -> Table:
        """The default table."""
        return self.table(DEFAULT_TABLE)

    def table(self, name: str) -> Table:
        """The table called `name` (declared in `lmdb_tables`)."""
        tables = getattr(self, "_rsm_tables", None)
        if tables is None:
            raise ContextUnavailable("the machine is not open: give it to a MachineHost with a path")
        try:
            return tables[name]  # type: ignore[no-any-return]
        except KeyError:
            raise KeyError(f"no table {name!r}; declare it in lmdb_tables") from None

    def _rsm_write_txn(self) -> Any:
        txn = self.txn
        if not self._rsm_writable:
            raise QueryMutatedState("a query tried to write to LMDB; queries are read-only")
        return txn

    # -- provided by the framework ----------------------------------------

    def snapshot(self, out: BinaryIO) -> None:
        raise TypeError("LMDBStateMachine snapshots are taken by MachineHost.snapshot")

    def restore(self, inp: BinaryIO) -> None:
        raise TypeError("LMDBStateMachine snapshots are restored by MachineHost.restore")

    def digest(self) -> str:
        """A hash over every key/value pair of every table, in order."""
        backend = getattr(self, "_rsm_backend", None)
        if backend is None:
            raise ContextUnavailable("the machine is not open: give it to a MachineHost with a path")
        return str(backend.user_digest())

    def _rsm_open_backend(self, path: str | os.PathLike[str] | None, settings: MachineSettings,
                          codec: _Codec) -> _Backend:
        if path is None:
            raise MachineStorageError(f"{type(self).__qualname__} is an LMDB machine: MachineHost needs a path")
        if getattr(self, "_rsm_backend", None) is not None:
            raise MachineStorageError("this machine instance is already open in a host")
        return _LMDBBackend(self, os.fspath(path), settings, codec)


class _LMDBBackend(_Backend):
    """Runs an `LMDBStateMachine` on its environment. See the module docstring."""

    machine: LMDBStateMachine
    durable = True

    def __init__(self, machine: LMDBStateMachine, path: str, settings: MachineSettings, codec: _Codec) -> None:
        self.machine = machine
        self.settings = settings
        self.codec = codec
        self.path = path
        names = type(machine).table_names()
        self.env = lmdb.open(path, subdir=True, map_size=settings.lmdb_map_size_initial_bytes,
                             max_dbs=len(names) + 2, writemap=False, sync=True, metasync=True, lock=True)
        self._batch: Any = None
        # Snapshot readers in other threads; growing the map waits for them
        # (LMDB forbids set_mapsize while any transaction is open).
        self._readers = 0
        self._readers_cv = threading.Condition()
        with self.env.begin(write=True) as txn:
            self.meta = self.env.open_db(_META_DB, txn=txn)
            self.sessions_db = self.env.open_db(_SESSIONS_DB, txn=txn)
            self.dbs = {name: self.env.open_db(_table_db_name(name), txn=txn) for name in names}
            self._check_format(txn)
        machine._rsm_tables = {name: Table(machine, name, db) for name, db in self.dbs.items()}
        machine._rsm_txn = None
        machine._rsm_writable = False
        machine._rsm_map_full = False
        machine._rsm_backend = self

    def _check_format(self, txn: Any) -> None:
        stamp = txn.get(_KEY_FORMAT, db=self.meta)
        if stamp is None:
            txn.put(_KEY_FORMAT, _FORMAT.pack(LMDB_FORMAT_VERSION), db=self.meta)
        elif stamp != _FORMAT.pack(LMDB_FORMAT_VERSION):
            raise MachineStorageError(f"{self.path}: machine format {stamp.hex()} is not {LMDB_FORMAT_VERSION}")

    # -- durable state ----------------------------------------------------

    def load(self) -> tuple[int, int, SessionTable]:
        with self.env.begin() as txn:
            restoring = txn.get(_KEY_RESTORING, db=self.meta) is not None
        if restoring:
            # An interrupted restore: start empty at index 0 rather than from
            # a half-loaded state; the replica installs a snapshot again.
            self._write(self._clear_all)
        with self.env.begin() as txn:
            applied_index, applied_term, table = self._read_durable(txn)
        return applied_index, applied_term, table

    def _read_durable(self, txn: Any) -> tuple[int, int, SessionTable]:
        state = txn.get(_KEY_STATE, db=self.meta)
        applied_index, applied_term, clock_ms = _STATE.unpack(state) if state else (0, 0, 0)
        pairs = []
        for key, value in txn.cursor(db=self.sessions_db):
            (session_id,) = _SESSION_ID.unpack(key)
            pairs.append((session_id, decode_session(value)))
        table = SessionTable.from_sessions(self.settings.sessions, clock_ms, pairs, track_changes=True)
        return applied_index, applied_term, table

    def _clear_all(self, txn: Any) -> None:
        for db in (*self.dbs.values(), self.sessions_db):
            txn.drop(db, delete=False)
        txn.delete(_KEY_STATE, db=self.meta)
        txn.delete(_KEY_RESTORING, db=self.meta)

    def _write(self, action: Callable[[Any], None]) -> None:
        """Run `action` in its own write transaction, growing the map if full."""
        while True:
            txn = self.env.begin(write=True)
            try:
                action(txn)
                txn.commit()
                return
            except lmdb.MapFullError:
                txn.abort()
                self.grow()
            except BaseException:
                txn.abort()
                raise

    def grow(self) -> None:
        size = self.env.info()["map_size"]
        limit = self.settings.lmdb_map_size_max_bytes
        if size >= limit:
            raise MachineStorageFull(f"{self.path}: LMDB map is full at lmdb_map_size_max_bytes={limit}")
        with self._readers_cv:
            self._readers_cv.wait_for(lambda: self._readers == 0)
            self.env.set_mapsize(min(size * 2, limit))

    # -- batches ------------------------------------------------------------

    def begin_batch(self) -> None:
        invariant(self._batch is None, "a batch is already open")
        self._batch = self.env.begin(write=True)

    def commit_batch(self, applied_index: int, applied_term: int, sessions: SessionTable) -> None:
        txn = self._batch
        changed, removed = sessions.pop_changes()
        try:
            txn.put(_KEY_STATE, _STATE.pack(applied_index, applied_term, sessions.clock_ms), db=self.meta)
            for session_id, record in changed.items():
                txn.put(_SESSION_ID.pack(session_id), record, db=self.sessions_db)
            for session_id in removed:
                txn.delete(_SESSION_ID.pack(session_id), db=self.sessions_db)
            txn.commit()  # env opened with sync=True: this fsyncs
        except lmdb.MapFullError:
            raise _MapFull() from None
        finally:
            self._batch = None

    def abort_batch(self) -> None:
        if self._batch is not None:
            self._batch.abort()
            self._batch = None

    def run_command(self, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
                    context: ApplyContext) -> bytes:
        machine = self.machine
        child = self.env.begin(write=True, parent=self._batch)
        machine._rsm_txn, machine._rsm_writable, machine._rsm_context = child, True, context
        try:
            result = self.codec.ok(func(machine, *args, **kwargs))
        except _FATAL:
            child.abort()
            raise
        except Exception as exc:
            child.abort()
            self._raise_if_map_full(exc)
            return self.codec.exception(exc)
        else:
            self._commit_child(child)
            return result
        finally:
            machine._rsm_txn, machine._rsm_writable, machine._rsm_context = None, False, None

    def _raise_if_map_full(self, exc: BaseException | None) -> None:
        # The map filling is a property of this replica's disk, not of the
        # command: it must never become a (non-deterministic) result. The flag
        # catches it even if the command swallowed the exception.
        if self.machine._rsm_map_full or isinstance(exc, lmdb.MapFullError):
            self.machine._rsm_map_full = False
            raise _MapFull()

    def _commit_child(self, child: Any) -> None:
        try:
            child.commit()
        except lmdb.Error as exc:
            self._raise_if_map_full(exc)
            # The command swallowed an LMDB error that broke its transaction;
            # we cannot tell whether it is deterministic, so stop.
            raise MachineStorageError(f"a command left its LMDB transaction broken: {exc}") from exc
        self._raise_if_map_full(None)

    def run_query(self, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
                  context: ApplyContext) -> bytes:
        invariant(self._batch is None, "query during a batch")
        machine = self.machine
        state = getattr(machine, "__dict__", None)
        before = dict(state) if state is not None and self.settings.query_mutation_check != "off" else None
        txn = self.env.begin(write=False)
        machine._rsm_txn, machine._rsm_writable, machine._rsm_context = txn, False, context
        try:
            result = self.codec.ok(func(machine, *args, **kwargs))
        except _FATAL:
            raise
        except Exception as exc:
            result = self.codec.exception(exc)
        finally:
            machine._rsm_txn, machine._rsm_context = None, None
            txn.abort()
        if before is not None and state is not None and _rebound(before, state):
            state.clear()
            state.update(before)
            return self.codec.exception(QueryMutatedState(f"query {func.__name__} rebound machine attributes"))
        return result

    # -- snapshots ------------------------------------------------------------

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        with self._readers_cv:
            self._readers += 1
        try:
            with self.env.begin(write=False) as txn:
                yield txn
        finally:
            with self._readers_cv:
                self._readers -= 1
                self._readers_cv.notify_all()

    def snapshot(self, out: BinaryIO, host: MachineHost) -> None:
        # Everything comes from one read transaction, not from the host's
        # memory, so this may run in another thread while batches commit.
        with self._reader() as txn:
            invariant(txn.get(_KEY_RESTORING, db=self.meta) is None, "snapshot during a restore")
            applied_index, applied_term, sessions = self._read_durable(txn)
            header = _ContainerHeader(SNAPSHOT_KIND_LMDB, applied_index, applied_term, sessions.encode())
            _write_container(out, header, self.settings.snapshot_chunk_bytes,
                             lambda stream: self._write_pairs(txn, stream))

    def _write_pairs(self, txn: Any, stream: BinaryIO) -> None:
        # Records are [table, [k1, v1, k2, v2, ...]], about a chunk each.
        limit = self.settings.snapshot_chunk_bytes
        for name in sorted(self.dbs):
            flat: list[bytes] = []
            size = 0
            for key, value in txn.cursor(db=self.dbs[name]):
                flat += (key, value)
                size += len(key) + len(value)
                if size >= limit:
                    stream.write(msgpack.packb([name, flat], use_bin_type=True))
                    flat, size = [], 0
            if flat:
                stream.write(msgpack.packb([name, flat], use_bin_type=True))

    def restore(self, inp: BinaryIO) -> tuple[int, int, SessionTable]:
        invariant(self._batch is None, "restore during a batch")
        header, reader = _read_container(inp, SNAPSHOT_KIND_LMDB)
        sessions = _decode_sessions(header.sessions, self.settings)

        def begin(txn: Any) -> None:
            self._clear_all(txn)
            txn.put(_KEY_RESTORING, b"1", db=self.meta)

        self._write(begin)
        unpacker = msgpack.Unpacker(io.BufferedReader(reader), raw=False, max_buffer_size=_RESTORE_RECORD_BYTES_MAX,
                                    max_map_len=0, max_ext_len=0)
        pending: list[tuple[Any, list[bytes]]] = []
        pending_bytes = 0
        for record in unpacker:
            db, flat = self._check_record(record)
            pending.append((db, flat))
            pending_bytes += sum(map(len, flat))
            if pending_bytes >= self.settings.lmdb_restore_txn_bytes:
                self._write(functools.partial(_put_pairs, batch=pending))
                pending, pending_bytes = [], 0
        reader.drain()
        self._write(lambda txn: self._finish_restore(txn, pending, header, sessions))
        with self.env.begin() as txn:
            return self._read_durable(txn)

    def _check_record(self, record: object) -> tuple[Any, list[bytes]]:
        if not (type(record) is list and len(record) == 2 and record[0] in self.dbs
                and type(record[1]) is list and len(record[1]) % 2 == 0
                and all(type(x) is bytes for x in record[1])):
            raise SnapshotFormatError(f"bad LMDB snapshot record (or unknown table): {record!r:.80}")
        return self.dbs[record[0]], record[1]

    def _finish_restore(self, txn: Any, pending: list[tuple[Any, list[bytes]]],
                        header: _ContainerHeader, sessions: SessionTable) -> None:
        _put_pairs(txn, pending)
        for session_id, session in sessions:
            txn.put(_SESSION_ID.pack(session_id), encode_session(session), db=self.sessions_db)
        state = _STATE.pack(header.applied_index, header.applied_term, sessions.clock_ms)
        txn.put(_KEY_STATE, state, db=self.meta)
        txn.delete(_KEY_RESTORING, db=self.meta)

    # -- digest and close -----------------------------------------------------

    def user_digest(self) -> str:
        h = hashlib.blake2b(digest_size=16, person=b"rsm.lmdb.state")
        with self._reader() as txn:
            for name in sorted(self.dbs):
                h.update(_PAIR_LENGTHS.pack(len(name), 0) + name.encode())
                for key, value in txn.cursor(db=self.dbs[name]):
                    h.update(_PAIR_LENGTHS.pack(len(key), len(value)))
                    h.update(key)
                    h.update(value)
        return h.hexdigest()

    def close(self) -> None:
        self.abort_batch()
        self.env.close()
        self.machine._rsm_backend = None
        self.machine._rsm_tables = None


def _put_pairs(txn: Any, batch: list[tuple[Any, list[bytes]]]) -> None:
    for db, flat in batch:
        for i in range(0, len(flat), 2):
            txn.put(flat[i], flat[i + 1], db=db)
