"""An in-memory `LogStore`: the simulator's disk and the reference for tests.

It keeps the same contract as the LMDB store (see `rsm.consensus.storage`);
every call is "durable" the moment it returns, so the simulator models a crash
by withholding calls, not by losing data inside this class.
"""

from __future__ import annotations

from collections.abc import Sequence

from rsm.consensus.types import ConfState, Entry, EntryKind, HardState, SnapshotMeta
from rsm.errors import LogCompacted, LogUnavailable, SnapshotUnavailable, invariant


class MemoryStorage:
    """Log, hard state and snapshots held in Python objects."""

    def __init__(self, conf: ConfState | None = None) -> None:
        self._hard_state = HardState()
        # _entries[0] is a dummy standing for the snapshot point (index, term).
        self._entries: list[Entry] = [Entry(index=0, term=0, kind=EntryKind.NOOP)]
        self._snapshot = SnapshotMeta(conf=conf or ConfState())
        self._snapshot_data = b""
        self._pending_meta: SnapshotMeta | None = None
        self._pending = bytearray()
        self._conf = conf or ConfState()
        self.fsync_count = 0

    # -- read side (Storage) -------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._latest_conf()

    def _latest_conf(self) -> ConfState:
        # The newest configuration entry in the log wins; else the snapshot's.
        from rsm.consensus.membership import decode_conf  # local: avoid a cycle

        for entry in reversed(self._entries[1:]):
            if entry.kind == EntryKind.CONFIG:
                return decode_conf(entry.data)
        return self._snapshot.conf

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise LogCompacted(f"index {index} is compacted (first is {offset + 1})")
        if index > self.last_index():
            raise LogUnavailable(f"index {index} is past the last index {self.last_index()}")
        return self._entries[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise LogCompacted(f"index {lo} is compacted (first is {offset + 1})")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"index {hi - 1} is past the last index {self.last_index()}")
        out = self._entries[lo - offset : hi - offset]
        if max_bytes is not None and out:
            total = 0
            for n, entry in enumerate(out):
                total += entry.size_bytes()
                if total > max_bytes and n > 0:
                    return out[:n]
        return list(out)

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot

    def snapshot_chunk(self, index: int, offset: int, max_bytes: int) -> bytes:
        if index != self._snapshot.index:
            raise SnapshotUnavailable(f"snapshot {index} is not kept (newest is {self._snapshot.index})")
        return self._snapshot_data[offset : offset + max_bytes]

    def snapshot_data(self) -> bytes:
        """The newest snapshot's bytes (for restoring a state machine)."""
        return self._snapshot_data

    # -- write side (LogStore) -----------------------------------------------
    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        if entries:
            first = entries[0].index
            offset = self._entries[0].index
            invariant(first > offset, f"append at {first} below the snapshot point {offset}")
            invariant(first <= self.last_index() + 1, f"gap: append at {first} after {self.last_index()}")
            # Check the whole batch before changing anything: a refused save
            # must leave the store as it was (one transaction, as on disk).
            for expected, entry in enumerate(entries, start=first):
                invariant(entry.index == expected, "entries in a batch must be contiguous")
            del self._entries[first - offset :]
            self._entries.extend(entries)
        if hard_state is not None:
            self._check_hard_state(hard_state)
            self._hard_state = hard_state
        self.fsync_count += 1

    def _check_hard_state(self, hs: HardState) -> None:
        """The same Raft invariants the LMDB store enforces, so the simulator
        catches a driver that would break them."""
        old = self._hard_state
        invariant(hs.term >= old.term, f"term going back from {old.term} to {hs.term}")
        invariant(hs.term > old.term or old.vote is None or hs.vote == old.vote,
                  f"vote changing within term {hs.term}: {old.vote} -> {hs.vote}")
        invariant(hs.commit >= old.commit, f"commit going back from {old.commit} to {hs.commit}")
        invariant(hs.commit <= self.last_index(), f"commit {hs.commit} past the last index {self.last_index()}")

    def write_snapshot_chunk(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        if offset == 0:
            self._pending_meta = meta
            self._pending = bytearray()
        invariant(self._pending_meta == meta, "snapshot chunk for a snapshot not begun")
        invariant(offset == len(self._pending), f"snapshot chunk at {offset}, expected {len(self._pending)}")
        self._pending += data

    def install_snapshot(self, meta: SnapshotMeta) -> None:
        invariant(self._pending_meta == meta, "installing a snapshot that was not written")
        self._snapshot_data = bytes(self._pending)
        self._pending_meta = None
        self._pending = bytearray()
        self._install_meta(meta)

    def create_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        invariant(meta.index <= self.last_index(), "snapshot past the end of the log")
        invariant(meta.index >= self._snapshot.index, "snapshot older than the newest one")
        invariant(meta.index <= self._hard_state.commit,
                  f"snapshot {meta.index} of uncommitted entries (durable commit {self._hard_state.commit})")
        self._snapshot = meta
        self._snapshot_data = data

    def _install_meta(self, meta: SnapshotMeta) -> None:
        keep: list[Entry] = []
        if self._entries[0].index <= meta.index <= self.last_index() and self.term(meta.index) == meta.term:
            keep = self._entries[meta.index - self._entries[0].index + 1 :]
        self._entries = [Entry(index=meta.index, term=meta.term, kind=EntryKind.NOOP), *keep]
        self._snapshot = meta
        if self._hard_state.commit < meta.index:
            self._hard_state = attrs_evolve_commit(self._hard_state, meta.index)

    def compact(self, index: int) -> None:
        offset = self._entries[0].index
        if index <= offset:
            return
        invariant(index <= self._snapshot.index, "compacting past the newest snapshot")
        invariant(index <= self.last_index(), "compacting past the end of the log")
        term = self.term(index)
        self._entries = [Entry(index=index, term=term, kind=EntryKind.NOOP), *self._entries[index - offset + 1 :]]


def attrs_evolve_commit(hard_state: HardState, commit: int) -> HardState:
    return HardState(term=hard_state.term, vote=hard_state.vote, commit=commit)
