"""The core's view of the log: durable entries in `Storage` plus an unstable tail.

Theory of operation. Entries the core has accepted but the driver has not yet
reported durable live in `unstable` (starting at `unstable_offset`); everything
below that offset is read from storage. An incoming snapshot that is not yet
installed is the `unstable_snapshot`. `Node.advance()` moves entries from
unstable to stable once the driver has persisted them.

Committed entries are handed out for applying only once they are durable here,
so "applied" always implies "persisted locally" (a success means persisted).

Entries that just became durable stay in memory too (`recent`, at most
`Config.log_cache_entries_max`): a leader replicates them right after writing
them, and reading them back from LMDB (and decoding them) cost more than
anything else on that path.
"""

from __future__ import annotations

from rsm.consensus.storage import Storage
from rsm.consensus.types import Entry, SnapshotMeta
from rsm.errors import LogCompacted, LogUnavailable, invariant


class RaftLog:
    """Stable entries (in storage) plus an unstable suffix (in memory)."""

    def __init__(self, storage: Storage, applied: int = 0, cache_entries_max: int = 8192) -> None:
        self.storage = storage
        self.cache_entries_max = cache_entries_max
        hard_state, _ = storage.initial_state()
        self.unstable: list[Entry] = []
        self.unstable_offset = storage.last_index() + 1
        self.unstable_snapshot: SnapshotMeta | None = None
        # Durable entries [recent_offset, unstable_offset) also held in memory.
        self.recent: list[Entry] = []
        self.recent_offset = self.unstable_offset
        snapshot_index = storage.snapshot_meta().index
        # Entries up to `applied` have been handed to the driver for applying.
        self.applied = max(applied, snapshot_index)
        # The durable commit index may lag (it is saved only along with entries):
        # whatever the machine applied was committed.
        self.committed = max(hard_state.commit, self.applied)
        invariant(self.applied <= storage.last_index(),
                  f"the state machine applied {self.applied}, past the last log index {storage.last_index()}")

    # -- indexes and terms --------------------------------------------------
    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.unstable[-1].index
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index
        return self.storage.last_index()

    def stable_last_index(self) -> int:
        """Last index known durable (what may be counted toward commit and applied)."""
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index
        return self.unstable_offset - 1

    def term(self, index: int) -> int:
        """Term of `index`; raises LogCompacted / LogUnavailable outside the log."""
        if self.unstable and index >= self.unstable_offset:
            if index > self.unstable[-1].index:
                raise LogUnavailable(f"index {index} past the last index {self.unstable[-1].index}")
            return self.unstable[index - self.unstable_offset].term
        snap = self.unstable_snapshot
        if snap is not None:
            if index == snap.index:
                return snap.term
            if index < snap.index:
                raise LogCompacted(f"index {index} is covered by the incoming snapshot")
            raise LogUnavailable(f"index {index} past the incoming snapshot {snap.index}")
        if self.recent_offset <= index < self.unstable_offset:
            return self.recent[index - self.recent_offset].term
        return self.storage.term(index)

    def maybe_term(self, index: int) -> int | None:
        try:
            return self.term(index)
        except (LogCompacted, LogUnavailable):
            return None

    def last_term(self) -> int:
        return self.term(self.last_index())

    def matches(self, index: int, term: int) -> bool:
        return self.maybe_term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up to date as ours?"""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    # -- reading entries ----------------------------------------------------
    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi) from storage and the unstable tail, bounded by bytes."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise LogCompacted(f"index {lo} is compacted")
        invariant(hi <= self.last_index() + 1, f"entries up to {hi - 1} past the last index")
        out: list[Entry] = []
        if self.recent_offset <= lo < self.unstable_offset:
            out.extend(self.recent[lo - self.recent_offset : min(hi, self.unstable_offset) - self.recent_offset])
            if max_bytes is not None:
                out = _trim(out, max_bytes)
                if len(out) < min(hi, self.unstable_offset) - lo:
                    return out
        elif lo < self.unstable_offset:
            stored = self.storage.entries(lo, min(hi, self.unstable_offset), max_bytes)
            out.extend(stored)
            if len(stored) < min(hi, self.unstable_offset) - lo:
                return out  # the byte limit stopped the read
        if hi > self.unstable_offset:
            start = max(lo, self.unstable_offset) - self.unstable_offset
            tail = self.unstable[start : hi - self.unstable_offset]
            if max_bytes is None:
                out.extend(tail)
            else:
                used = sum(e.size_bytes() for e in out)
                for entry in tail:
                    used += entry.size_bytes()
                    if used > max_bytes and out:
                        break
                    out.append(entry)
        return out

    # -- changing the log ---------------------------------------------------
    def append(self, entries: list[Entry]) -> None:
        """Put `entries` at their indexes, replacing any (uncommitted) suffix."""
        if not entries:
            return
        first = entries[0].index
        invariant(first > self.committed, f"overwriting committed index {first} (commit {self.committed})")
        invariant(first <= self.last_index() + 1, f"gap: appending {first} after {self.last_index()}")
        if first >= self.unstable_offset and first <= self.unstable_offset + len(self.unstable):
            del self.unstable[first - self.unstable_offset :]
            self.unstable.extend(entries)
        else:
            # The conflict lies in stable entries: the driver truncates storage
            # when it saves a batch starting at or below its last index.
            self.unstable = list(entries)
            self.unstable_offset = first
            if first <= self.recent_offset:
                self.recent, self.recent_offset = [], first
            else:
                del self.recent[first - self.recent_offset :]

    def find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """Index of the first entry that is new or conflicts with ours; 0 if none."""
        for entry in entries:
            if not self.matches(entry.index, entry.term):
                return entry.index
        return 0

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            invariant(index <= self.last_index(), f"commit {index} past the last index {self.last_index()}")
            self.committed = index
            return True
        return False

    def restore(self, snapshot: SnapshotMeta) -> None:
        """Replace the log by an incoming snapshot (Raft §5.6)."""
        self.unstable_snapshot = snapshot
        self.unstable = []
        self.unstable_offset = snapshot.index + 1
        self.recent, self.recent_offset = [], self.unstable_offset
        self.committed = snapshot.index
        # The driver restores the state machine from the snapshot in the same batch.
        self.applied = snapshot.index

    # -- durability and applying -------------------------------------------
    def next_committed(self, max_bytes: int | None) -> list[Entry]:
        """Committed, durable entries not yet handed out for applying."""
        hi = min(self.committed, self.stable_last_index())
        if hi <= self.applied:
            return []
        return self.entries(self.applied + 1, hi + 1, max_bytes)

    def stable_to(self, index: int, term: int) -> None:
        """The driver has persisted entries up to `index` (last entry's term `term`)."""
        if not self.unstable or index < self.unstable_offset:
            return
        if self.maybe_term(index) != term:
            return  # replaced (or cut short) by a newer append since; that one is still unstable
        done = index + 1 - self.unstable_offset
        if self.recent_offset + len(self.recent) == self.unstable_offset:
            self.recent.extend(self.unstable[:done])
        else:
            self.recent, self.recent_offset = list(self.unstable[:done]), self.unstable_offset
        del self.unstable[:done]
        self.unstable_offset = index + 1
        excess = len(self.recent) - self.cache_entries_max
        if excess > 0:
            del self.recent[:excess]
            self.recent_offset += excess

    def stable_snapshot_to(self, index: int) -> None:
        if self.unstable_snapshot is not None and self.unstable_snapshot.index == index:
            self.unstable_snapshot = None

    def applied_to(self, index: int) -> None:
        invariant(index <= self.committed, f"applied {index} beyond commit {self.committed}")
        self.applied = max(self.applied, index)


def _trim(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix within `max_bytes` (at least one entry)."""
    used = 0
    for n, entry in enumerate(entries):
        used += entry.size_bytes()
        if used > max_bytes and n > 0:
            return entries[:n]
    return entries
