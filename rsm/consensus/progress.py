"""What a leader knows about each follower's log, and how it paces sending to it.

A follower's progress is in one of three states (as in etcd's tracker):
- PROBE: the leader does not know where the logs diverge; it sends one
  AppendEntries and waits for the answer (or a heartbeat response) before the next.
- REPLICATE: the logs match up to `match`; the leader pipelines AppendEntries
  optimistically from `next`, bounded by `inflight_messages_max` in flight.
- SNAPSHOT: the follower needs entries the leader has compacted; the leader
  streams a snapshot in chunks, at most `snapshot_inflight_chunks_max` in flight.
"""

from __future__ import annotations

import collections
import enum

import attrs

from rsm.consensus.types import SnapshotMeta


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@attrs.define
class Progress:
    match: int = 0
    next: int = 1
    state: ProgressState = ProgressState.PROBE
    #: PROBE: an append is outstanding; wait for a response before sending more.
    probe_sent: bool = False
    #: REPLICATE: last index of each unacknowledged AppendEntries, oldest first.
    inflight: collections.deque[int] = attrs.Factory(collections.deque)
    #: Heard from this follower since the last check-quorum round.
    recent_active: bool = False
    #: An acknowledgement arrived since the last heartbeat round (stall detection).
    acked_since_heartbeat: bool = False
    #: SNAPSHOT: the snapshot being sent, the next offset to send, the offset acked.
    snapshot: SnapshotMeta | None = None
    snapshot_next_offset: int = 0
    snapshot_acked_offset: int = 0
    snapshot_done_sent: bool = False
    is_learner: bool = False
    #: Leader ticks since this follower last answered (health for membership checks).
    inactive_ticks: int = 0

    def become_probe(self) -> None:
        # After a snapshot, resume right after it; otherwise after the match.
        if self.state == ProgressState.SNAPSHOT and self.snapshot is not None:
            self.next = max(self.match + 1, self.snapshot.index + 1)
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self.next = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, snapshot: SnapshotMeta) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.snapshot = snapshot

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot = None
        self.snapshot_next_offset = 0
        self.snapshot_acked_offset = 0
        self.snapshot_done_sent = False

    def maybe_update(self, index: int) -> bool:
        """A follower acknowledged entries up to `index`; returns whether match moved."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def is_paused(self, inflight_max: int) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= inflight_max
        return True  # SNAPSHOT: entries wait until the snapshot is installed

    def sent_entries(self, last_index: int) -> None:
        """Record an AppendEntries that carries entries up to `last_index`."""
        if self.state == ProgressState.REPLICATE:
            if last_index >= self.next:
                self.next = last_index + 1
                self.inflight.append(last_index)
        else:
            self.probe_sent = True
