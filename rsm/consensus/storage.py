"""The storage the consensus core reads: the contract every backend keeps.

The core only *reads* storage, through `Storage`. It never writes: every write
(entries, hard state, snapshots, compaction) is handed to the driver in a
`Ready` batch, and the driver applies it with the write half of the contract,
`LogStore`. When the driver calls `Node.advance(ready)`, the core assumes the
writes of that batch are durable and visible through `Storage`.

Index conventions (Raft): the log starts at index 1. A snapshot covering
indexes 1..S sets `first_index() == S + 1` and `term(S)` still answers (from the
snapshot metadata). An empty log with no snapshot has first_index 1, last_index 0
and term(0) == 0.

Two implementations keep this contract: `rsm.storage.memory.MemoryStorage`
(simulator, tests) and the LMDB store (`rsm.storage`); one shared test suite
runs against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rsm.consensus.types import ConfState, Entry, HardState, SnapshotMeta


class Storage(Protocol):
    """Read-only view of durable state that the core consults."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """Hard state and latest membership configuration found on disk."""

    def first_index(self) -> int:
        """Index of the first entry still in the log (snapshot index + 1)."""

    def last_index(self) -> int:
        """Index of the last entry (the snapshot index when the log is empty)."""

    def term(self, index: int) -> int:
        """Term of entry `index`; valid for first_index()-1 .. last_index().

        Raises `LogCompacted` below that range and `LogUnavailable` above it.
        """

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi). With `max_bytes`, stops before exceeding it but
        always returns at least one entry when lo < hi.

        Raises `LogCompacted` if lo < first_index(), `LogUnavailable` if
        hi > last_index() + 1.
        """

    def snapshot_meta(self) -> SnapshotMeta:
        """Metadata of the newest complete snapshot (index 0 when there is none)."""

    def snapshot_chunk(self, index: int, offset: int, max_bytes: int) -> bytes:
        """Up to `max_bytes` of snapshot `index`'s data from `offset`.

        An empty result means `offset` is the end. Raises `SnapshotUnavailable`
        if that snapshot is no longer kept.
        """


class LogStore(Storage, Protocol):
    """The write half, used only by the driver that executes `Ready` batches."""

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Durably write `hard_state` (if given) and `entries` in one transaction.

        If `entries[0].index <= last_index()`, the suffix from that index is
        first discarded (a conflict found by the core). Returns only once the
        data is on stable storage (fsync); raises on failure, which is fatal.
        """

    def write_snapshot_chunk(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        """Write a piece of an incoming snapshot at `offset` (durably).

        A chunk with offset 0 starts a new pending snapshot, discarding any
        other pending one.
        """

    def install_snapshot(self, meta: SnapshotMeta) -> None:
        """Make the pending snapshot `meta` the newest snapshot, durably.

        Entries up to `meta.index` are discarded; if the log holds entry
        `meta.index` with term `meta.term`, the entries after it are kept,
        otherwise the whole log is discarded (Raft §5.6 / figure 13).
        """

    def create_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a snapshot taken locally of the state machine at `meta.index`."""

    def compact(self, index: int) -> None:
        """Discard entries up to and including `index` (<= newest snapshot index)."""


def ensure_commit_durable(store: LogStore, index: int) -> None:
    """Make the durable commit index at least `index` (one synced write, if needed).

    The core saves the commit index only along with entries (a commit-only
    change costs no fsync), so before a driver snapshots its state machine at
    applied index `index` it calls this: a snapshot must cover only entries the
    disk knows are committed, and the stores check it.
    """
    durable, _ = store.initial_state()
    if durable.commit < index:
        store.save(HardState(term=durable.term, vote=durable.vote, commit=index), [])
