"""`Ready`: one batch of work the core hands to its driver.

The ordering contract, carried out by exactly one driver loop per node
(`rsm.replica` in production, `rsm.sim` in simulation):

1. `messages_now` may be sent at once, before or while the batch is persisted.
   They are a leader's AppendEntries, heartbeats and snapshot chunks: a leader
   may replicate in parallel with its own disk write because it counts itself
   toward commit only after `advance()` (Raft §10.2.1).
2. Persist, in this order: every `snapshot_chunks` piece
   (`LogStore.write_snapshot_chunk`); then `snapshot` if set
   (`LogStore.install_snapshot`); then `hard_state` and `entries` in ONE durable
   transaction (`LogStore.save`, which discards any stored suffix from
   `entries[0].index` on). A failed write is fatal: stop, never retry.
3. Only then send `messages`: vote grants and append acknowledgements promise
   that what they acknowledge is on disk.
4. If `snapshot` is set, restore the state machine from it; then apply
   `committed_entries` in order. They are always already durable locally.
5. Answer `read_states` once the local applied index reaches each one's index;
   fail `dropped_reads` (leadership was lost before they were confirmed).
6. Call `Node.advance(ready)`. Do not call `Node.ready()` again before that.
"""

from __future__ import annotations

import attrs

from rsm.consensus.types import (
    Entry,
    HardState,
    Message,
    NodeId,
    ReadState,
    Role,
    SnapshotChunk,
    SnapshotMeta,
)


@attrs.define
class Ready:
    hard_state: HardState | None = None
    entries: list[Entry] = attrs.Factory(list)
    snapshot: SnapshotMeta | None = None
    snapshot_chunks: list[SnapshotChunk] = attrs.Factory(list)
    committed_entries: list[Entry] = attrs.Factory(list)
    messages_now: list[Message] = attrs.Factory(list)
    messages: list[Message] = attrs.Factory(list)
    read_states: list[ReadState] = attrs.Factory(list)
    dropped_reads: list[bytes] = attrs.Factory(list)
    #: Observation only: the node's role, term and known leader after this batch.
    role: Role = Role.FOLLOWER
    term: int = 0
    leader_id: NodeId | None = None

    def must_persist(self) -> bool:
        return bool(self.hard_state or self.entries or self.snapshot or self.snapshot_chunks)
