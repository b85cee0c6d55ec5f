"""A sans-IO Raft node (Ongaro's dissertation), driven by events, answering in batches.

Theory of operation
-------------------
Inputs are method calls: `tick()` (one unit of logical time), `step(message)`
(a message from a peer), `propose(data)`, `read_index(request_id)`, and
`advance(ready)` (the driver finished a batch). Outputs accumulate and are
collected with `ready()`; `rsm.consensus.ready` states the ordering contract.
The node never touches a socket, a clock, a disk or a global random source:
the only randomness is the `random.Random` it is handed (election timeouts).

Roles change only in `_become_follower`, `_become_pre_candidate`,
`_become_candidate` and `_become_leader`. Each role has its own step function.

Implemented: leader election with randomized timeouts, pre-vote (§9.6) and
check-quorum (§6.2), pipelined log replication with per-follower flow control
(progress.py), batching limits, fast backtracking with conflict hints (§5.3),
the current-term commit rule (§3.6.2) with a no-op entry at each term start,
ReadIndex reads (§6.4) batched into heartbeat rounds and forwardable from
followers, and chunked InstallSnapshot (§5) for followers behind the
compacted prefix.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from rsm.consensus.config import Config
from rsm.consensus.log import RaftLog
from rsm.consensus.membership import ConfTracker, decode_conf, encode_conf
from rsm.consensus.progress import Progress, ProgressState
from rsm.consensus.ready import Ready
from rsm.consensus.storage import Storage
from rsm.consensus.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Role,
    SnapshotChunk,
    SnapshotMeta,
)
from rsm.errors import (
    ConfChangeRefused,
    LogCompacted,
    NotLeader,
    ProposalDropped,
    SnapshotUnavailable,
    invariant,
)

#: Known bugs the simulator must catch; switched on only by tests (see tests/test_bugs.py).
KNOWN_BUGS = frozenset(
    {
        "commit_previous_term",  # count entries of earlier terms toward commit (Raft §5.4.2)
        "vote_before_durable",  # answer a vote before the vote is on disk
        "accept_stale_append",  # accept AppendEntries from a leader of an older term
        "vote_shorter_log",  # grant a vote to a candidate whose log is behind ours
        "two_pending_conf_changes",  # allow a second membership change before the first commits
        "learner_counts_for_commit",  # count a learner's acknowledgement toward commit
    }
)

#: Context of vote requests sent on a leadership transfer: they bypass the lease (Raft §3.10).
TRANSFER_CONTEXT = b"transfer"

_M = MessageType


class Rng(Protocol):
    """The one source of randomness the core uses (a seeded `random.Random` fits)."""

    def randrange(self, stop: int, /) -> int: ...


def _round_bytes(round_id: int) -> bytes:
    return round_id.to_bytes(8, "big")


class Node:
    """One Raft participant. Not thread-safe: one driver owns it."""

    def __init__(
        self,
        node_id: NodeId,
        config: Config,
        storage: Storage,
        rng: Rng,
        *,
        applied: int = 0,
        bugs: frozenset[str] = frozenset(),
    ) -> None:
        invariant(bugs <= KNOWN_BUGS, f"unknown bugs {sorted(bugs - KNOWN_BUGS)}")
        self.id = node_id
        self.config = config.validate()
        self.rng = rng
        self._bugs = bugs
        hard_state, conf = storage.initial_state()
        self.log = RaftLog(storage, applied, self.config.log_cache_entries_max)
        self.term = hard_state.term
        self.vote: NodeId | None = hard_state.vote
        self._confs = self._load_confs(conf)
        self.role = Role.FOLLOWER
        self.leader_id: NodeId | None = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self._persisted_hard_state = hard_state
        self._outstanding: Ready | None = None
        self._reset_output()
        # ReadIndex bookkeeping (leader): reads wait for a quorum to confirm a
        # heartbeat round started after they arrived (Raft §6.4).
        self._read_round = 0
        self._read_round_wanted = False
        self._round_acks: dict[NodeId, int] = {}
        self._pending_reads: list[tuple[int, bytes, NodeId, int]] = []  # (round, ctx, origin, index)
        self._reads_before_commit: list[tuple[bytes, NodeId]] = []
        # Incoming snapshot (follower).
        self._incoming_snapshot: SnapshotMeta | None = None
        self._incoming_offset = 0
        # Leadership transfer (leader): the target and ticks since it began.
        self.transfer_target: NodeId | None = None
        self._transfer_elapsed = 0
        self._become_follower(self.term, None)

    # ------------------------------------------------------------- membership
    @property
    def conf(self) -> ConfState:
        """The configuration in effect: the newest one in the log (Raft §4.1)."""
        return self._confs.current

    @property
    def committed_conf(self) -> ConfState:
        return self._confs.committed

    def _load_confs(self, latest: ConfState) -> ConfTracker:
        """Rebuild which configurations are committed and which are pending."""
        committed = self.log.committed
        last = self.log.last_index()
        lo = max(committed + 1, self.log.first_index())
        pending = []
        if lo <= last:
            for entry in self.log.entries(lo, last + 1):
                if entry.kind == EntryKind.CONFIG:
                    pending.append((entry.index, decode_conf(entry.data)))
        if not pending:
            return ConfTracker(latest)
        return ConfTracker(self._conf_at(committed), pending)

    def _conf_at(self, index: int) -> ConfState:
        """The newest configuration at or below `index` (scans back; rare)."""
        first = self.log.first_index()
        hi = index
        while hi >= first:
            lo = max(first, hi - 255)
            for entry in reversed(self.log.entries(lo, hi + 1)):
                if entry.kind == EntryKind.CONFIG:
                    return decode_conf(entry.data)
            hi = lo - 1
        return self.log.storage.snapshot_meta().conf

    def _append(self, entries: list[Entry]) -> None:
        """Every change to the log goes through here, so the configuration follows it."""
        self.log.append(entries)
        self._confs.on_append(entries)
        if self.role == Role.LEADER and any(e.kind == EntryKind.CONFIG for e in entries):
            self._sync_progress()

    def _commit_to(self, index: int) -> None:
        if self.log.commit_to(index) and self._confs.on_commit(self.log.committed):
            if self.role == Role.LEADER:
                self._sync_progress()
                if self.id not in self.conf.voters:
                    # Raft §4.2.2: a leader removed from the configuration steps
                    # down once the change is committed.
                    self._become_follower(self.term, None)

    def _sync_progress(self) -> None:
        """Track every member of the configuration in effect, and, until a
        removal commits, the removed member too (so it learns of its removal)."""
        tracked = self.conf.members | self._confs.committed.members
        last = self.log.last_index()
        for member in sorted(tracked):
            if member not in self.progress:
                self.progress[member] = Progress(next=last + 1)
        for member in list(self.progress):
            if member not in tracked and member != self.id:
                del self.progress[member]
        for member, pr in self.progress.items():
            pr.is_learner = member not in self.conf.voters

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a single-server membership change; returns its log index.

        Raises `NotLeader`, `ProposalDropped` (retry later: a change is
        already pending, or this leader has not yet committed an entry of its
        term) or `ConfChangeRefused` (the change itself is invalid or would
        leave the group without a reachable quorum).
        """
        if self.role != Role.LEADER:
            raise NotLeader(self.leader_id)
        if self.transfer_target is not None:
            raise ProposalDropped(f"leadership transfer to {self.transfer_target} in progress")
        if not self._committed_in_term():
            raise ProposalDropped("a new leader must commit an entry of its term before a membership change; retry")
        if self._confs.has_pending() and "two_pending_conf_changes" not in self._bugs:
            raise ProposalDropped("a membership change is already in progress; retry when it commits")
        new = self._validate_conf_change(change)
        index = self.log.last_index() + 1
        self._append([Entry(index=index, term=self.term, kind=EntryKind.CONFIG, data=encode_conf(new))])
        self._need_broadcast = True
        return index

    def _validate_conf_change(self, change: ConfChange) -> ConfState:
        conf = self.conf
        node = change.node_id
        if change.kind == ConfChangeKind.ADD_LEARNER and node in conf.members:
            raise ConfChangeRefused(f"{node} is already a member")
        if change.kind == ConfChangeKind.ADD_VOTER and node in conf.voters:
            raise ConfChangeRefused(f"{node} is already a voter")
        if change.kind == ConfChangeKind.REMOVE and node not in conf.members:
            raise ConfChangeRefused(f"{node} is not a member")
        if change.kind == ConfChangeKind.ADD_VOTER and node in conf.learners:
            pr = self.progress.get(node)
            lag = self.log.last_index() - (pr.match if pr else 0)
            if lag > self.config.promote_lag_entries_max:
                raise ConfChangeRefused(
                    f"learner {node} is {lag} entries behind (promote_lag_entries_max="
                    f"{self.config.promote_lag_entries_max}); wait until it has caught up"
                )
        new = change.apply_to(conf)
        if not new.voters:
            raise ConfChangeRefused("the change would leave no voters")
        healthy = sorted(v for v in new.voters if self._is_healthy(v))
        if len(healthy) < new.quorum():
            raise ConfChangeRefused(
                f"the change would leave the group without a quorum: {len(new.voters)} voters need "
                f"{new.quorum()}, but only {len(healthy)} are reachable and caught up ({', '.join(healthy)})"
            )
        return new

    def _is_healthy(self, member: NodeId) -> bool:
        if member == self.id:
            return True
        pr = self.progress.get(member)
        return (
            pr is not None
            and pr.inactive_ticks < self.config.election_timeout_ticks
            and self.log.last_index() - pr.match <= self.config.promote_lag_entries_max
        )

    # --------------------------------------------------------------- transfer
    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to `target` (Raft §3.10): stop taking proposals, bring
        it up to date, tell it to campaign at once. Gives up after an election timeout."""
        if self.role != Role.LEADER:
            raise NotLeader(self.leader_id)
        if target == self.id:
            return
        if target not in self.conf.voters:
            raise ConfChangeRefused(f"cannot transfer leadership to {target}: not a voter")
        self.transfer_target = target
        self._transfer_elapsed = 0
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target, pr, allow_empty=True)

    def _send_timeout_now(self, target: NodeId) -> None:
        self._send_now(Message(type=_M.TIMEOUT_NOW, src=self.id, dst=target, term=self.term))

    # ------------------------------------------------------------------ output
    def _reset_output(self) -> None:
        self._msgs: list[Message] = []
        self._msgs_now: list[Message] = []
        self._read_states: list[ReadState] = []
        self._dropped_reads: list[bytes] = []
        self._snapshot_chunks: list[SnapshotChunk] = []
        self._ready_snapshot: SnapshotMeta | None = None

    def _send(self, msg: Message) -> None:
        """Queue a message that must wait until the batch is durable."""
        self._msgs.append(msg)

    def _send_now(self, msg: Message) -> None:
        """Queue a leader message that may go out before the batch is durable."""
        self._msgs_now.append(msg)

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def _hard_state_to_save(self, hs: HardState, with_entries: bool = False) -> HardState | None:
        """Term and vote must be durable before anyone hears of them; the commit
        index need not be (it is re-learned from the leader, and the applied
        index of an on-disk machine bounds it from below after a restart). So a
        change of commit alone rides along with the next entries instead of
        costing an fsync of its own."""
        persisted = self._persisted_hard_state
        if (hs.term, hs.vote) != (persisted.term, persisted.vote):
            return hs
        if with_entries and hs.commit != persisted.commit:
            return hs
        return None

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        return bool(
            self._msgs
            or self._msgs_now
            or self._read_states
            or self._dropped_reads
            or self._snapshot_chunks
            or self._ready_snapshot
            or self.log.unstable
            or self._need_broadcast
            or self._commit_advanced
            or self._read_round_wanted
            or self._hard_state_to_save(self.hard_state()) is not None
            or min(self.log.committed, self.log.stable_last_index()) > self.log.applied
        )

    def ready(self) -> Ready:
        """Collect everything to persist, send and apply (see rsm.consensus.ready)."""
        invariant(self._outstanding is None, "ready() called again before advance()")
        if self.role == Role.LEADER:
            self._flush_leader()
        rd = Ready(
            hard_state=self._hard_state_to_save(self.hard_state(), with_entries=bool(self.log.unstable)),
            entries=list(self.log.unstable),
            snapshot=self._ready_snapshot,
            snapshot_chunks=self._snapshot_chunks,
            committed_entries=self.log.next_committed(None),
            messages_now=self._msgs_now,
            messages=self._msgs,
            read_states=self._read_states,
            dropped_reads=self._dropped_reads,
            role=self.role,
            term=self.term,
            leader_id=self.leader_id,
        )
        if "vote_before_durable" in self._bugs:
            early = [m for m in rd.messages if m.type == _M.VOTE_RESP]
            rd.messages = [m for m in rd.messages if m.type != _M.VOTE_RESP]
            rd.messages_now = rd.messages_now + early
        self._reset_output()
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has carried out `rd`: it is durable and its entries applied."""
        invariant(rd is self._outstanding, "advance() with a batch that is not outstanding")
        self._outstanding = None
        if rd.snapshot is not None:
            self.log.stable_snapshot_to(rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.hard_state is not None:
            self._persisted_hard_state = rd.hard_state
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)
        if self.role == Role.LEADER:
            own = self.progress[self.id]
            own.maybe_update(self.log.stable_last_index())
            self._maybe_commit()

    # ------------------------------------------------------------------ inputs
    def tick(self) -> None:
        """One unit of logical time has passed."""
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now, as if the election timeout had passed."""
        if self.role != Role.LEADER and self.id in self.conf.voters:
            self._campaign(pre=self.config.pre_vote)

    def propose(self, data: bytes) -> int:
        """Append a command to the log; returns its index. Leader only."""
        return self.propose_batch([data])

    def propose_batch(self, commands: list[bytes]) -> int:
        """Append several commands at once; returns the index of the last one."""
        if self.role != Role.LEADER:
            raise NotLeader(self.leader_id)
        if self.transfer_target is not None:
            raise ProposalDropped(f"leadership transfer to {self.transfer_target} in progress; retry")
        for data in commands:
            if len(data) > self.config.entry_bytes_max:
                raise ProposalDropped(
                    f"command of {len(data)} bytes exceeds entry_bytes_max={self.config.entry_bytes_max}"
                )
        uncommitted = self.log.last_index() - self.log.committed
        if uncommitted + len(commands) > self.config.uncommitted_entries_max:
            raise ProposalDropped(
                f"{uncommitted} entries await commit (uncommitted_entries_max="
                f"{self.config.uncommitted_entries_max}); retry later"
            )
        first = self.log.last_index() + 1
        term, normal = self.term, EntryKind.NORMAL
        # Straight to the log, not through _append: ordinary entries added at
        # the end replace nothing and carry no configuration.
        self.log.append([Entry(first + n, term, normal, d) for n, d in enumerate(commands)])
        self._need_broadcast = True
        return first + len(commands) - 1

    def read_index(self, request_id: bytes) -> None:
        """Ask for a linearizable read point; answered by a ReadState in a later batch."""
        if self.role == Role.LEADER:
            self._leader_read(request_id, self.id)
        elif self.role == Role.FOLLOWER and self.leader_id is not None:
            self._send(Message(type=_M.READ_INDEX, src=self.id, dst=self.leader_id, term=self.term, context=request_id))
        else:
            raise NotLeader(self.leader_id)

    def step(self, m: Message) -> None:
        """Handle a message from a peer."""
        if m.dst != self.id:
            return
        if m.type in (_M.PRE_VOTE, _M.VOTE) and self._ignore_non_member(m):
            return
        if m.term > self.term:
            lease = self._in_leader_lease() and m.context != TRANSFER_CONTEXT
            if m.type in (_M.PRE_VOTE, _M.VOTE) and lease:
                return  # Raft §4.2.3: a live leader is not disrupted
            granted_pre = m.type == _M.PRE_VOTE_RESP and not m.reject
            if m.type != _M.PRE_VOTE and not granted_pre:
                leader = m.src if m.type in (_M.APPEND, _M.HEARTBEAT, _M.SNAPSHOT) else None
                self._become_follower(m.term, leader)
        elif m.term < self.term:
            stale_append = m.type == _M.APPEND and "accept_stale_append" in self._bugs
            if not stale_append:
                self._reply_to_stale(m)
                return
        if m.type in (_M.PRE_VOTE, _M.VOTE):
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    # ------------------------------------------------------------- role changes
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader_id = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        timeout = self.config.election_timeout_ticks
        self.randomized_election_timeout = timeout + self.rng.randrange(timeout)
        self.votes = {}
        self.transfer_target = None
        self._transfer_elapsed = 0
        self._need_broadcast = False
        self._commit_advanced = False
        self._read_round_wanted = False
        self._drop_pending_reads()

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader

    def _become_pre_candidate(self) -> None:
        invariant(self.role != Role.LEADER, "leader cannot become pre-candidate")
        # Pre-vote changes neither term nor vote (Raft §9.6).
        self._reset(self.term)
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        invariant(self.role != Role.LEADER, "leader cannot become candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        invariant(self.role == Role.CANDIDATE, f"{self.role} cannot become leader")
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        last = self.log.last_index()
        self.progress = {}
        self._sync_progress()
        own = self.progress.setdefault(self.id, Progress(next=last + 1))
        own.become_replicate()
        own.maybe_update(self.log.stable_last_index())
        own.recent_active = True
        self._round_acks = {}
        # A no-op of the new term lets the leader commit, and so learn the commit
        # index, without waiting for a client (Raft §6.4, §3.6.2).
        self._append([Entry(index=last + 1, term=self.term, kind=EntryKind.NOOP)])
        self._need_broadcast = True

    # ---------------------------------------------------------------- elections
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout and self.id in self.conf.voters:
            self._campaign(pre=self.config.pre_vote)

    def _ignore_non_member(self, m: Message) -> bool:
        """A removed node must not disrupt the group (Raft §4.2.3): ignore its
        vote requests, so it raises no term. A candidate we do not know whose
        log is ahead of ours may have been added by a configuration we have not
        seen yet, so it is heard (ignoring it could leave the group without
        the votes it needs)."""
        if m.src in self.conf.members:
            return False
        our_term = self.log.last_term()
        ahead = m.log_term > our_term or (m.log_term == our_term and m.index > self.log.last_index())
        return not ahead

    def _in_leader_lease(self) -> bool:
        return (
            self.config.check_quorum
            and self.leader_id is not None
            and self.election_elapsed < self.config.election_timeout_ticks
        )

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            self._become_pre_candidate()
            term, kind = self.term + 1, _M.PRE_VOTE
        else:
            self._become_candidate()
            term, kind = self.term, _M.VOTE
        self.votes = {self.id: True}
        if self._vote_result() is True:
            self._on_election_won(pre)
            return
        last = self.log.last_index()
        last_term = self.log.last_term()
        for voter in sorted(self.conf.voters - {self.id}):
            self._send(
                Message(
                    type=kind, src=self.id, dst=voter, term=term, index=last, log_term=last_term,
                    context=TRANSFER_CONTEXT if transfer else b"",
                )
            )

    def _on_election_won(self, pre: bool) -> None:
        if pre:
            self._campaign(pre=False)
        else:
            self._become_leader()

    def _vote_result(self) -> bool | None:
        """True once a quorum granted, False once a quorum refused, else None."""
        granted = sum(1 for v, ok in self.votes.items() if ok and v in self.conf.voters)
        refused = sum(1 for v, ok in self.votes.items() if not ok and v in self.conf.voters)
        quorum = self.conf.quorum()
        if granted >= quorum:
            return True
        if refused > len(self.conf.voters) - quorum:
            return False
        return None

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type == _M.PRE_VOTE
        can_vote = (
            self.vote == m.src
            or (self.vote is None and self.leader_id is None)
            or (pre and m.term > self.term)
        )
        up_to_date = self.log.is_up_to_date(m.index, m.log_term) or "vote_shorter_log" in self._bugs
        resp_type = _M.PRE_VOTE_RESP if pre else _M.VOTE_RESP
        if can_vote and up_to_date:
            if not pre:
                self.election_elapsed = 0
                self.vote = m.src
            # A granted pre-vote carries the future term so the candidate counts it.
            self._send(Message(type=resp_type, src=self.id, dst=m.src, term=m.term))
        else:
            self._send(Message(type=resp_type, src=self.id, dst=m.src, term=self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        if m.type in (_M.APPEND, _M.HEARTBEAT, _M.SNAPSHOT):
            # Someone won this term: follow it (Raft §5.2).
            self._become_follower(m.term, m.src)
            self._step_follower(m)
            return
        expected = _M.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else _M.VOTE_RESP
        if m.type != expected:
            return
        self.votes.setdefault(m.src, not m.reject)
        result = self._vote_result()
        if result is True:
            self._on_election_won(self.role == Role.PRE_CANDIDATE)
        elif result is False:
            self._become_follower(self.term, None)

    def _reply_to_stale(self, m: Message) -> None:
        """A message from an older term. Tell a stale leader or pre-candidate our term.

        With check-quorum and pre-vote, a node partitioned away may never see a
        higher term otherwise, and keep rejecting (etcd raft, "stale leader").
        """
        if m.type in (_M.APPEND, _M.HEARTBEAT, _M.SNAPSHOT):
            self._send(Message(type=_M.APPEND_RESP, src=self.id, dst=m.src, term=self.term, reject=True))
        elif m.type == _M.PRE_VOTE:
            self._send(Message(type=_M.PRE_VOTE_RESP, src=self.id, dst=m.src, term=self.term, reject=True))

    # ----------------------------------------------------------------- follower
    def _step_follower(self, m: Message) -> None:
        if m.type == _M.APPEND:
            self.election_elapsed = 0
            self.leader_id = m.src
            self._handle_append(m)
        elif m.type == _M.HEARTBEAT:
            self.election_elapsed = 0
            self.leader_id = m.src
            # The leader sends min(match, commit), so this prefix matches its log.
            self._commit_to(min(m.commit, self.log.last_index()))
            self._send(
                Message(
                    type=_M.HEARTBEAT_RESP, src=self.id, dst=m.src, term=self.term,
                    context=m.context, index=self.log.last_index(),
                )
            )
        elif m.type == _M.SNAPSHOT:
            self.election_elapsed = 0
            self.leader_id = m.src
            self._handle_snapshot(m)
        elif m.type == _M.TIMEOUT_NOW:
            if self.id in self.conf.voters:
                # Raft §3.10: campaign at once, skipping pre-vote; the old leader
                # asked for it, so the lease does not apply.
                self._campaign(pre=False, transfer=True)
        elif m.type == _M.READ_INDEX_RESP:
            if not m.reject:
                self._read_states.append(ReadState(request_id=m.context, index=m.index))
            else:
                self._dropped_reads.append(m.context)

    def _handle_append(self, m: Message) -> None:
        resp = Message(type=_M.APPEND_RESP, src=self.id, dst=m.src, term=self.term)
        if m.index < self.log.committed:
            # Everything up to our commit matches the leader (Leader Completeness).
            self._send(_evolve(resp, index=self.log.committed))
            return
        if self.log.matches(m.index, m.log_term):
            last_new = m.index + len(m.entries)
            conflict = self.log.find_conflict(m.entries)
            if conflict:
                invariant(conflict > self.log.committed, f"conflict at committed index {conflict}")
                self._append(list(m.entries[conflict - m.index - 1 :]))
            self._commit_to(min(m.commit, last_new))
            self._send(_evolve(resp, index=last_new))
            return
        hint_index, hint_term = self._conflict_hint(m.index)
        self._send(_evolve(resp, index=m.index, reject=True, hint_index=hint_index, hint_term=hint_term))

    def _conflict_hint(self, prev_index: int) -> tuple[int, int]:
        """Where our log may diverge from the leader's: the first index of our
        term at `prev_index` (Raft §5.3, "accelerated log backtracking")."""
        last = self.log.last_index()
        if prev_index > last:
            return last + 1, 0
        term = self.log.term(prev_index)
        index = prev_index
        floor = max(self.log.first_index(), self.log.committed + 1)
        while index - 1 >= floor and self.log.term(index - 1) == term:
            index -= 1
        return index, term

    def _handle_snapshot(self, m: Message) -> None:
        meta = m.snapshot
        invariant(meta is not None, "SNAPSHOT message without metadata")
        assert meta is not None
        resp = Message(type=_M.SNAPSHOT_RESP, src=self.id, dst=m.src, term=self.term, index=meta.index)
        if self._ready_snapshot is not None:
            # One snapshot install per batch: its chunks must not be mixed with
            # another snapshot's. The leader resends after a heartbeat.
            return
        if meta.index <= self.log.committed:
            # Nothing to learn: we already have everything it covers.
            self._send(_evolve(resp, index=self.log.committed, done=True))
            return
        if m.offset == 0:
            self._incoming_snapshot = meta
            self._incoming_offset = 0
        if self._incoming_snapshot != meta or m.offset != self._incoming_offset:
            wanted = self._incoming_offset if self._incoming_snapshot == meta else 0
            self._send(_evolve(resp, offset=wanted, reject=True))
            return
        self._snapshot_chunks.append(SnapshotChunk(meta=meta, offset=m.offset, data=m.data, done=m.done))
        self._incoming_offset += len(m.data)
        if not m.done:
            self._send(_evolve(resp, offset=self._incoming_offset))
            return
        self._incoming_snapshot = None
        if self.log.matches(meta.index, meta.term):
            # Our log already holds the snapshot's last entry: keep what follows
            # it and just advance the commit index (Raft figure 13, step 6).
            self._commit_to(meta.index)
        else:
            self.log.restore(meta)
            self._confs.restore(meta.conf)
            self._ready_snapshot = meta
        self._send(_evolve(resp, offset=self._incoming_offset, done=True))

    # ------------------------------------------------------------------- leader
    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        for member, pr in self.progress.items():
            if member != self.id:
                pr.inactive_ticks += 1
        if self.transfer_target is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.config.election_timeout_ticks:
                self.transfer_target = None  # the target did not take over in time: give up
        if self.election_elapsed >= self.config.election_timeout_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                self._become_follower(self.term, None)  # Raft §6.2
                return
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = 0
        for member, pr in self.progress.items():
            if member == self.id:
                pr.recent_active = True
            if pr.recent_active and member in self.conf.voters:
                active += 1
            if member != self.id:
                pr.recent_active = False
        return active >= self.conf.quorum()

    def _broadcast_heartbeat(self) -> None:
        context = _round_bytes(self._read_round)
        for member, pr in self.progress.items():
            if member == self.id:
                continue
            self._detect_stall(member, pr)
            self._send_now(
                Message(
                    type=_M.HEARTBEAT, src=self.id, dst=member, term=self.term,
                    commit=min(pr.match, self.log.committed), context=context,
                )
            )

    def _detect_stall(self, member: NodeId, pr: Progress) -> None:
        """Resend what seems lost: nothing was acknowledged for a whole heartbeat interval."""
        if not pr.acked_since_heartbeat:
            if pr.state == ProgressState.REPLICATE and pr.inflight:
                pr.become_probe()
            elif pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_next_offset = pr.snapshot_acked_offset
                pr.snapshot_done_sent = False
                self._send_snapshot_chunks(member, pr)
        pr.acked_since_heartbeat = False

    def _step_leader(self, m: Message) -> None:
        if m.type == _M.READ_INDEX:
            self._leader_read(m.context, m.src)
            return
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.inactive_ticks = 0
        if m.type == _M.APPEND_RESP:
            pr.recent_active = True
            pr.acked_since_heartbeat = True
            if m.reject:
                self._handle_append_reject(m, pr)
            else:
                self._handle_append_success(m, pr)
        elif m.type == _M.HEARTBEAT_RESP:
            pr.recent_active = True
            self._ack_read_round(m.src, int.from_bytes(m.context, "big") if m.context else 0)
            if pr.match < self.log.last_index():
                probing = pr.state == ProgressState.PROBE
                if probing:
                    pr.probe_sent = False
                self._send_append(m.src, pr, allow_empty=probing)
        elif m.type == _M.SNAPSHOT_RESP:
            pr.recent_active = True
            pr.acked_since_heartbeat = True
            self._handle_snapshot_resp(m, pr)

    def _handle_append_success(self, m: Message, pr: Progress) -> None:
        if m.src == self.transfer_target and m.index >= self.log.last_index():
            self._send_timeout_now(m.src)
        if pr.maybe_update(m.index):
            if pr.state == ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state == ProgressState.SNAPSHOT and pr.snapshot and pr.match >= pr.snapshot.index:
                pr.become_probe()
            self._maybe_commit()
            if self.role != Role.LEADER:
                return  # the commit removed this leader from the configuration
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = False
        self._send_append(m.src, pr, allow_empty=False)

    def _handle_append_reject(self, m: Message, pr: Progress) -> None:
        if m.index <= pr.match:
            return  # stale: that prefix is already known to match
        if pr.state == ProgressState.PROBE and m.index != pr.next - 1:
            return  # answer to an older probe
        if pr.state == ProgressState.SNAPSHOT:
            return
        pr.become_probe()
        pr.next = max(pr.match + 1, min(self._next_from_hint(m), m.index))
        self._send_append(m.src, pr, allow_empty=True)

    def _next_from_hint(self, m: Message) -> int:
        if m.hint_term == 0:
            return m.hint_index
        index = min(m.index, self.log.last_index())
        while index > 0:
            term = self.log.maybe_term(index)
            if term is None or term <= m.hint_term:
                if term == m.hint_term:
                    return index + 1
                break
            index -= 1
        return m.hint_index

    def _maybe_commit(self) -> None:
        counted = self.conf.voters
        if "learner_counts_for_commit" in self._bugs:
            counted = counted | self.conf.learners
        matches = sorted((self.progress[v].match for v in counted if v in self.progress), reverse=True)
        quorum = self.conf.quorum()
        if len(matches) < quorum:
            return
        candidate = matches[quorum - 1]
        if candidate <= self.log.committed:
            return
        # Only entries of the current term are committed by counting (Raft §5.4.2).
        if self.log.term(candidate) != self.term and "commit_previous_term" not in self._bugs:
            return
        self._commit_to(candidate)
        if self.role != Role.LEADER:
            return  # the commit removed this leader from the configuration
        self._commit_advanced = True
        if self._reads_before_commit and self._committed_in_term():
            waiting, self._reads_before_commit = self._reads_before_commit, []
            for ctx, origin in waiting:
                self._leader_read(ctx, origin)

    def _committed_in_term(self) -> bool:
        return self.log.maybe_term(self.log.committed) == self.term

    # -------------------------------------------------------- replication sends
    def _flush_leader(self) -> None:
        if self._need_broadcast:
            self._need_broadcast = False
            self._commit_advanced = False
            for member, pr in self.progress.items():
                if member != self.id:
                    self._send_append(member, pr, allow_empty=True)
        elif self._commit_advanced:
            # Tell followers the new commit index, but only those with nothing
            # in flight: a busy follower learns it from the append that its
            # next acknowledgement triggers (or the next heartbeat), which
            # saves a message and an answer per commit under load.
            self._commit_advanced = False
            for member, pr in self.progress.items():
                if member != self.id and not pr.inflight:
                    self._send_append(member, pr, allow_empty=True)
        if self._read_round_wanted:
            self._read_round_wanted = False
            self._read_round += 1
            self._ack_read_round(self.id, self._read_round)
            if len(self.conf.voters) > 1:
                self._broadcast_heartbeat()

    def _send_append(self, to: NodeId, pr: Progress, allow_empty: bool) -> None:
        """Send what `to` lacks, as many messages as flow control allows."""
        while not pr.is_paused(self.config.inflight_messages_max):
            prev = pr.next - 1
            prev_term = self.log.maybe_term(prev)
            if prev_term is None or pr.next < self.log.first_index():
                self._start_snapshot(to, pr)
                return
            last = self.log.last_index()
            hi = min(last + 1, pr.next + self.config.append_entries_max)
            try:
                entries = self.log.entries(pr.next, hi, self.config.append_bytes_max)
            except LogCompacted:
                self._start_snapshot(to, pr)
                return
            if not entries and not allow_empty:
                return
            self._send_now(
                Message(
                    type=_M.APPEND, src=self.id, dst=to, term=self.term, index=prev, log_term=prev_term,
                    entries=tuple(entries), commit=self.log.committed,
                )
            )
            pr.sent_entries(entries[-1].index if entries else prev)
            if not entries or pr.next > last:
                return
            allow_empty = False

    def _start_snapshot(self, to: NodeId, pr: Progress) -> None:
        meta = self.log.storage.snapshot_meta()
        invariant(meta.index > 0, f"follower {to} needs a snapshot but none exists")
        pr.become_snapshot(meta)
        self._send_snapshot_chunks(to, pr)

    def _send_snapshot_chunks(self, to: NodeId, pr: Progress) -> None:
        chunk = self.config.snapshot_chunk_bytes
        window = chunk * self.config.snapshot_inflight_chunks_max
        meta = pr.snapshot
        invariant(meta is not None, "sending snapshot chunks without a snapshot")
        assert meta is not None
        while not pr.snapshot_done_sent and pr.snapshot_next_offset - pr.snapshot_acked_offset < window:
            offset = pr.snapshot_next_offset
            try:
                data = self.log.storage.snapshot_chunk(meta.index, offset, chunk)
                done = len(data) < chunk or not self.log.storage.snapshot_chunk(meta.index, offset + len(data), 1)
            except SnapshotUnavailable:
                if self.log.storage.snapshot_meta() != meta:
                    # A newer snapshot replaced it while we were sending: start over.
                    self._start_snapshot(to, pr)
                else:
                    # The newest snapshot cannot be read now: probe again later
                    # instead of looping here.
                    pr.become_probe()
                    pr.probe_sent = True
                return
            self._send_now(
                Message(
                    type=_M.SNAPSHOT, src=self.id, dst=to, term=self.term, snapshot=meta,
                    offset=offset, data=data, done=done,
                )
            )
            pr.snapshot_next_offset = offset + len(data)
            pr.snapshot_done_sent = done

    def _handle_snapshot_resp(self, m: Message, pr: Progress) -> None:
        if m.done:
            pr.maybe_update(m.index)
            if pr.state == ProgressState.SNAPSHOT:
                pr.become_probe()
            self._send_append(m.src, pr, allow_empty=True)
            return
        if pr.state != ProgressState.SNAPSHOT or pr.snapshot is None or m.index != pr.snapshot.index:
            return
        if m.reject:
            pr.snapshot_next_offset = pr.snapshot_acked_offset = m.offset
            pr.snapshot_done_sent = False
        else:
            pr.snapshot_acked_offset = max(pr.snapshot_acked_offset, m.offset)
        self._send_snapshot_chunks(m.src, pr)

    # -------------------------------------------------------------------- reads
    def _leader_read(self, ctx: bytes, origin: NodeId) -> None:
        if not self._committed_in_term():
            # Until its no-op commits, a new leader does not know the commit index (§6.4).
            if len(self._reads_before_commit) >= self.config.pending_reads_max:
                self._reject_read(ctx, origin)
                return
            self._reads_before_commit.append((ctx, origin))
            return
        if len(self._pending_reads) >= self.config.pending_reads_max:
            self._reject_read(ctx, origin)
            return
        self._pending_reads.append((self._read_round + 1, ctx, origin, self.log.committed))
        self._read_round_wanted = True

    def _reject_read(self, ctx: bytes, origin: NodeId) -> None:
        if origin == self.id:
            self._dropped_reads.append(ctx)
        else:
            self._send(Message(type=_M.READ_INDEX_RESP, src=self.id, dst=origin, term=self.term, context=ctx, reject=True))

    def _ack_read_round(self, member: NodeId, round_id: int) -> None:
        if member not in self.conf.voters:
            return
        if round_id > self._round_acks.get(member, 0):
            self._round_acks[member] = round_id
        if not self._pending_reads:
            return
        # Only the current voters confirm leadership: acks of removed members do not count.
        acks = sorted((r for m, r in self._round_acks.items() if m in self.conf.voters), reverse=True)
        quorum = self.conf.quorum()
        if len(acks) < quorum:
            return
        confirmed = acks[quorum - 1]
        keep = []
        for round_id_, ctx, origin, index in self._pending_reads:
            if round_id_ > confirmed:
                keep.append((round_id_, ctx, origin, index))
            elif origin == self.id:
                self._read_states.append(ReadState(request_id=ctx, index=index))
            else:
                self._send(Message(type=_M.READ_INDEX_RESP, src=self.id, dst=origin, term=self.term, context=ctx, index=index))
        self._pending_reads = keep

    def _drop_pending_reads(self) -> None:
        for ctx, origin in [(c, o) for _, c, o, _ in self._pending_reads] + self._reads_before_commit:
            if origin == self.id:
                self._dropped_reads.append(ctx)
        self._pending_reads = []
        self._reads_before_commit = []

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, object]:
        """A snapshot of the node's state for observation and tests."""
        return {
            "id": self.id,
            "role": self.role.value,
            "term": self.term,
            "leader": self.leader_id,
            "commit": self.log.committed,
            "applied": self.log.applied,
            "last_index": self.log.last_index(),
            "voters": sorted(self.conf.voters),
        }


def _evolve(msg: Message, **changes: Any) -> Message:
    return attrs.evolve(msg, **changes)


__all__ = ["KNOWN_BUGS", "ConfState", "Node"]
