"""`DiskStorage`: the whole `LogStore` contract in one data directory.

Theory of operation. The log, hard state and configuration live in LMDB
(`LMDBLogStore`); snapshots are files (`SnapshotStore`). The two are kept
consistent by one rule: **the LMDB `snapshot` record is the commit point of a
snapshot**. A snapshot file is made durable (fsync, rename, directory fsync)
*before* the LMDB transaction that records it (and, for an installed snapshot,
discards the log it replaces and raises the commit index). So after a crash:

- a complete file newer than the record was never committed: it is removed;
- the recorded snapshot must exist and verify; if it does not (torn, flipped,
  deleted) it is set aside as `.corrupt`, reported (`problems` and the log),
  and the newest older good snapshot the log still covers becomes the newest;
  if there is none, opening fails with `CorruptSnapshot` and the advice to
  rebuild the replica (acknowledged entries must never be silently dropped).

Old snapshots beyond `snapshots_kept` are removed only after the record moved
on. Every write goes through `_guard`: after a failed write the store refuses
all later writes (see `rsm.storage.errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

from rsm.consensus.types import ConfState, Entry, HardState, SnapshotMeta
from rsm.errors import SnapshotUnavailable, invariant
from rsm.storage.datadir import DataDir
from rsm.storage.errors import (
    REBUILD_ADVICE,
    CorruptSnapshot,
    StorageError,
    StorageFailed,
    StorageFull,
)
from rsm.storage.lmdb_store import LMDBLogStore
from rsm.storage.settings import StorageSettings
from rsm.storage.snapshots import (
    SnapshotFile,
    SnapshotReader,
    SnapshotStore,
    SnapshotWriter,
    snapshot_name,
)

log = logging.getLogger("rsm.storage")

_T = TypeVar("_T")


class DiskStorage:
    """Durable `LogStore` (rsm.consensus.storage) in one locked data directory.

    Open it with `open_store` / `DiskStorage.open`; close it (or use `with`) to
    release the directory. Not thread-safe: one thread (the driver) uses it.
    """

    def __init__(self, datadir: DataDir, log_store: LMDBLogStore, snapshots: SnapshotStore, settings: StorageSettings) -> None:
        self.path = datadir.path
        self.settings = settings
        self._datadir = datadir
        self._log = log_store
        self._snaps = snapshots
        #: Problems found and worked around (corrupt snapshots set aside), for
        #: the operator: each is also logged on the "rsm.storage" logger.
        self.problems: list[StorageError] = []

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        cluster_id: str,
        node_id: str,
        initial_conf: ConfState | None = None,
        settings: StorageSettings | None = None,
    ) -> DiskStorage:
        """Open the data directory `path` of node `node_id` in cluster `cluster_id`.

        A missing or empty directory is created; `initial_conf` (the bootstrap
        membership) is recorded then and ignored on later opens. Raises a
        `DataDirError` for another cluster's or node's directory, another
        format, or one held by a live process; `CorruptionError` if the data
        cannot be trusted.
        """
        settings = (settings or StorageSettings()).validate()
        datadir = DataDir.open(path, cluster_id=cluster_id, node_id=node_id)
        try:
            log_store = LMDBLogStore.open(
                datadir.log_path, settings=settings, identity=datadir.identity.encode(),
                initial_conf=initial_conf, create=datadir.created,
            )
        except BaseException:
            datadir.close()
            raise
        try:
            store = cls(datadir, log_store, SnapshotStore.open(datadir.snapshot_path, settings), settings)
            store._reconcile()
            datadir.finish_creation()
        except BaseException:
            log_store.close()
            datadir.close()
            raise
        return store

    def close(self) -> None:
        """Close the log and release the directory lock. Idempotent."""
        self._snaps.close()
        self._log.close()
        self._datadir.close()

    def __enter__(self) -> DiskStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- read side (Storage) -----------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._log.initial_state()

    def first_index(self) -> int:
        return self._log.first_index()

    def last_index(self) -> int:
        return self._log.last_index()

    def term(self, index: int) -> int:
        return self._log.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self._log.entries(lo, hi, max_bytes)

    def snapshot_meta(self) -> SnapshotMeta:
        return self._log.snapshot_meta()

    def snapshot_chunk(self, index: int, offset: int, max_bytes: int) -> bytes:
        """Up to `max_bytes` (at most `snapshot_read_bytes_max`) of snapshot
        `index`'s data from `offset`, verified. Any kept snapshot can be read."""
        if index == 0 == self.snapshot_meta().index:
            return b""  # "no snapshot yet" reads as empty, as in MemoryStorage
        self._find(index)
        return self._read(index, lambda: self._snaps.chunk(index, offset, max_bytes))

    def snapshot_data(self) -> bytes:
        """The newest snapshot's data, all verified (for restoring a state machine)."""
        if self.snapshot_meta().index == 0:
            return b""
        with self.open_snapshot() as reader:
            return reader.read()

    def open_snapshot(self, index: int | None = None) -> SnapshotReader:
        """A streaming reader of snapshot `index` (default: the newest)."""
        index = self.snapshot_meta().index if index is None else index
        if index == 0:
            raise SnapshotUnavailable("there is no snapshot yet")
        self._find(index)
        return self._read(index, lambda: self._snaps.reader(index, lambda exc: self._corrupt(index, exc)))

    def pending_snapshot(self) -> tuple[SnapshotMeta, int] | None:
        """The incoming snapshot being received, and the offset it expects next.

        Chunks are written durably, so this survives a restart.
        """
        return self._snaps.pending()

    # -- write side (LogStore) ---------------------------------------------------
    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Durably write `hard_state` and `entries`: one LMDB transaction, one
        commit with fsync (see `LMDBLogStore.save`). The hot path: the log
        store keeps the failed state itself, so no guard is needed here."""
        self._log.save(hard_state, entries)

    def compact(self, index: int) -> None:
        self._guard(lambda: self._log.compact(index))

    def write_snapshot_chunk(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        self._guard(lambda: self._snaps.write_pending(meta, offset, data))

    def install_snapshot(self, meta: SnapshotMeta) -> None:
        """Make the received snapshot the newest: file renamed into place first,
        then one LMDB transaction trims the log, records it, raises the commit."""
        newest = self.snapshot_meta().index
        invariant(meta.index >= newest, f"installing snapshot {meta.index}, older than {newest}")

        def install() -> None:
            self._snaps.finish_pending(meta)
            self._log.install_snapshot(meta)
            self._prune()

        self._guard(install)

    def create_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a snapshot taken locally at `meta.index` (see `snapshot_writer`)."""
        with self.snapshot_writer(meta) as writer:
            writer.write(data)

    def snapshot_writer(self, meta: SnapshotMeta) -> SnapshotWriter:
        """A writer for a local snapshot too big for one bytes object.

            with store.snapshot_writer(meta) as writer:
                for piece in state_machine_pieces():
                    writer.write(piece)

        Leaving the block normally makes the snapshot durable and the newest;
        leaving it by an exception discards it.
        """
        self._check_writable()
        self._log.check_new_snapshot(meta)
        return self._guard(lambda: self._snaps.writer(meta, on_finish=self._record_local))

    # -- internals ---------------------------------------------------------------------
    def _record_local(self, snap: SnapshotFile) -> None:
        def record() -> None:
            self._log.record_snapshot(snap.meta)  # the commit point; an unrecorded file is removed at open
            self._snaps.add(snap)
            self._prune()

        self._guard(record)

    def _prune(self) -> None:
        self._snaps.prune(self.settings.snapshots_kept, newest=self.snapshot_meta().index)

    def _check_writable(self) -> None:
        self._log.check_writable()

    def _guard(self, action: Callable[[], _T]) -> _T:
        """Run a write; a failed write (of the log or of a snapshot file) fails
        the store for good: the log store remembers it and refuses every write."""
        self._check_writable()
        try:
            return action()
        except (StorageFull, StorageFailed) as exc:
            self._log.mark_failed(exc)
            raise

    def _find(self, index: int) -> SnapshotFile:
        snap = self._snaps.get(index)
        if snap is not None:
            return snap
        if index == self.snapshot_meta().index:
            raise CorruptSnapshot(
                self._snaps.path / snapshot_name(self.snapshot_meta()),
                "the newest snapshot's file is missing or was set aside",
                advice=REBUILD_ADVICE,
            )
        raise SnapshotUnavailable(f"snapshot {index} is not kept (newest is {self.snapshot_meta().index})")

    def _read(self, index: int, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except CorruptSnapshot as exc:
            self._corrupt(index, exc)
            raise

    def _corrupt(self, index: int, error: CorruptSnapshot) -> None:
        """A read found snapshot `index` corrupt: set it aside; fall back if it was the newest."""
        snap = self._snaps.get(index)
        if snap is None:
            return  # already set aside
        self.problems.append(self._snaps.quarantine(snap.path, error))
        if index == self.snapshot_meta().index:
            try:
                self._fall_back(error)
            except StorageError as final:  # no fallback, or the store has failed: reads keep raising
                log.error("%s", final)

    def _reconcile(self) -> None:
        """Make the snapshot files agree with the log's record (see module doc)."""
        self.problems.extend(self._snaps.problems)
        recorded = self.snapshot_meta()
        for index in self._snaps.indexes():
            snap = self._snaps.get(index)
            assert snap is not None
            if index > recorded.index or (index == recorded.index and snap.meta.term != recorded.term):
                self._snaps.remove(index, "written before a crash but never recorded in the log")
        if recorded.index == 0:
            return
        snap = self._snaps.get(recorded.index)
        if snap is None:
            error = self._problem_for(recorded)
            if error is None:
                error = CorruptSnapshot(self._snaps.path / snapshot_name(recorded), "missing")
                self.problems.append(error)
            self._fall_back(error)
        elif self.settings.verify_snapshot_on_open:
            try:
                self._snaps.verify(recorded.index)
            except CorruptSnapshot as exc:
                self.problems.append(self._snaps.quarantine(snap.path, exc))
                self._fall_back(exc)

    def _problem_for(self, meta: SnapshotMeta) -> CorruptSnapshot | None:
        name = snapshot_name(meta)
        for problem in self._snaps.problems:
            if problem.path.name == name:
                return problem
        return None

    def _fall_back(self, error: CorruptSnapshot) -> None:
        """Make the newest good older snapshot that the log still covers the
        newest; raise `CorruptSnapshot` (with advice) if there is none."""
        base = self.first_index() - 1
        newest = self.snapshot_meta().index
        for index in reversed(self._snaps.indexes()):
            if index < base:
                break
            snap = self._snaps.get(index)
            if index >= newest or snap is None or self.term(index) != snap.meta.term:
                continue
            try:
                self._snaps.verify(index)
            except CorruptSnapshot as exc:
                self.problems.append(self._snaps.quarantine(snap.path, exc))
                continue
            self._guard(partial(self._log.fall_back_to_snapshot, snap.meta))
            log.warning("%s; using the previous snapshot %d instead", error, index)
            return
        raise CorruptSnapshot(
            error.path, error.why,
            advice=f"no older good snapshot covers the log (it starts at {base + 1}): {REBUILD_ADVICE}",
        )


def open_store(
    path: Path | str,
    *,
    cluster_id: str,
    node_id: str,
    initial_conf: ConfState | None = None,
    settings: StorageSettings | None = None,
) -> DiskStorage:
    """Open (creating if needed) a replica's data directory; see `DiskStorage.open`."""
    return DiskStorage.open(path, cluster_id=cluster_id, node_id=node_id, initial_conf=initial_conf, settings=settings)
