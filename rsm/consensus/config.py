"""Settings of the consensus core. Every limit is named here, with its reason.

Time is counted in ticks; the driver decides how long a tick is (the replica
uses `tick_ms`, the simulator a virtual clock).
"""

from __future__ import annotations

import attrs

from rsm.errors import ConfigError


@attrs.frozen(kw_only=True)
class Config:
    #: Ticks between heartbeats from a leader. Must be well below the election timeout.
    heartbeat_interval_ticks: int = 1
    #: A follower that hears no leader for a random time in
    #: [election_timeout_ticks, 2 * election_timeout_ticks) starts a (pre-)election.
    election_timeout_ticks: int = 10
    #: Pre-vote (Raft §9.6): a node asks whether it could win before raising its
    #: term, so a partitioned node rejoining does not depose a healthy leader.
    pre_vote: bool = True
    #: Check-quorum (Raft §6.2): a leader that has not heard from a majority for an
    #: election timeout steps down; followers ignore votes while a leader is live.
    check_quorum: bool = True
    #: Most entries in one AppendEntries message.
    append_entries_max: int = 256
    #: Most payload bytes in one AppendEntries message (always at least one entry).
    append_bytes_max: int = 1 << 20
    #: Most AppendEntries messages in flight, unacknowledged, to one follower.
    inflight_messages_max: int = 64
    #: Bytes of snapshot data in one InstallSnapshot chunk.
    snapshot_chunk_bytes: int = 1 << 20
    #: Most snapshot chunks in flight to one follower (flow control).
    snapshot_inflight_chunks_max: int = 4
    #: Most proposals the leader holds uncommitted before refusing new ones
    #: (back-pressure instead of unbounded memory).
    uncommitted_entries_max: int = 100_000
    #: Most bytes of one proposed command.
    entry_bytes_max: int = 8 << 20
    #: Most read requests waiting for a leadership confirmation.
    pending_reads_max: int = 10_000
    #: A learner is promoted to voter (and a member counts as healthy for a
    #: membership change) only if it is at most this many entries behind the leader.
    promote_lag_entries_max: int = 1_000
    #: Durable entries also kept in memory, so that replicating them does not
    #: read them back from storage (0 disables the cache).
    log_cache_entries_max: int = 8192

    def validate(self) -> Config:
        """Raise `ConfigError` on a bad value or a bad relation between values."""
        positive = [
            "heartbeat_interval_ticks",
            "election_timeout_ticks",
            "append_entries_max",
            "append_bytes_max",
            "inflight_messages_max",
            "snapshot_chunk_bytes",
            "snapshot_inflight_chunks_max",
            "uncommitted_entries_max",
            "entry_bytes_max",
            "pending_reads_max",
            "promote_lag_entries_max",
        ]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.log_cache_entries_max, int) or self.log_cache_entries_max < 0:
            raise ConfigError(f"log_cache_entries_max must be an integer >= 0, got {self.log_cache_entries_max!r}")
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks:
            raise ConfigError(
                "election_timeout_ticks must exceed heartbeat_interval_ticks "
                f"({self.election_timeout_ticks} <= {self.heartbeat_interval_ticks})"
            )
        return self
