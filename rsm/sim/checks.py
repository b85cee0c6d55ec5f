"""Safety checks run by the simulator after every step.

Each check is incremental, so it can run after every event without the cost
growing with the length of the run:

- election safety: at most one leader per term (Raft §5.2);
- log matching: two logs holding an entry with the same index and term hold
  the same entry there and agree on the term before it, hence (by induction)
  on the whole prefix (Raft §5.3);
- leader completeness: a leader of term T holds every entry committed in a term
  before T (§5.4);
- commit agreement: no two nodes ever consider different entries committed
  at the same index;
- state machine safety: no two nodes apply different commands at one index,
  and each node applies indexes in order without gaps;
- durability: every acknowledged proposal is in every later leader's log, and a
  node's durable term never goes back, nor its durable vote change within a term.

A broken check records a `Violation`; the simulator stops the seed there.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from rsm.consensus.log import RaftLog
from rsm.consensus.storage import Storage
from rsm.consensus.types import Entry, EntryKind, HardState, Message, MessageType, NodeId


@attrs.frozen
class Violation:
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.detail}"


class Checker:
    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.leaders: dict[int, NodeId] = {}
        self._logged: dict[tuple[int, int], tuple[EntryKind, bytes, int]] = {}
        self.committed: dict[int, tuple[int, EntryKind, bytes]] = {}
        #: The term in which each committed index was first seen committed: a
        #: leader of that term or an earlier one, elected late (a vote delayed in
        #: the network), may lack the entry; leaders of later terms may not.
        self.commit_term: dict[int, int] = {}
        self.applied: dict[int, tuple[int, bytes]] = {}
        self.results: dict[int, bytes | None] = {}
        self.applied_index: dict[NodeId, int] = {}
        self.acked: list[tuple[int, int]] = []
        self._durable: dict[NodeId, HardState] = {}
        self._leader_checked: set[tuple[NodeId, int]] = set()

    def fail(self, check: str, detail: str) -> None:
        self.violations.append(Violation(check, detail))

    @property
    def ok(self) -> bool:
        return not self.violations

    # -- persistence ----------------------------------------------------------
    def on_save(self, node: NodeId, hard_state: HardState | None, entries: Sequence[Entry], prev_term: int) -> None:
        """A batch became durable on `node`; `prev_term` is the term before entries[0]."""
        if hard_state is not None:
            self._check_hard_state(node, hard_state)
        for entry in entries:
            key = (entry.index, entry.term)
            seen = self._logged.get(key)
            value = (entry.kind, entry.data, prev_term)
            if seen is None:
                self._logged[key] = value
            elif seen != value:
                self.fail(
                    "log matching",
                    f"{node} holds a different entry at index {entry.index} term {entry.term} "
                    f"(or a different term before it: {prev_term} vs {seen[2]})",
                )
            prev_term = entry.term

    def _check_hard_state(self, node: NodeId, hs: HardState) -> None:
        before = self._durable.get(node)
        self._durable[node] = hs
        if before is None:
            return
        if hs.term < before.term:
            self.fail("durable term", f"{node} term went back from {before.term} to {hs.term}")
        elif hs.term == before.term and before.vote is not None and hs.vote != before.vote:
            self.fail("durable vote", f"{node} changed its vote in term {hs.term}: {before.vote} -> {hs.vote}")

    # -- roles and commits ----------------------------------------------------
    def on_leader(self, node: NodeId, term: int, log: RaftLog) -> None:
        holder = self.leaders.setdefault(term, node)
        if holder != node:
            self.fail("election safety", f"two leaders in term {term}: {holder} and {node}")
        if (node, term) in self._leader_checked:
            return
        self._leader_checked.add((node, term))
        first = log.first_index()
        for index, (entry_term, _, _) in self.committed.items():
            if index < first or self.commit_term[index] >= term:
                continue  # covered by this node's snapshot, or committed in this term or later
            if log.maybe_term(index) != entry_term:
                self.fail(
                    "leader completeness",
                    f"{node}, leader of term {term}, lacks committed entry {index} (term {entry_term})",
                )
                return
        for index, ack_term in self.acked:
            if index >= first and self.commit_term[index] < term and log.maybe_term(index) != ack_term:
                self.fail("acknowledged write lost", f"leader {node} of term {term} lacks acked entry {index}")
                return

    def on_commit(self, node: NodeId, log: RaftLog, old: int, new: int, term: int) -> None:
        lo = max(old + 1, log.first_index())
        for entry in log.entries(lo, new + 1) if lo <= new else []:
            value = (entry.term, entry.kind, entry.data)
            seen = self.committed.setdefault(entry.index, value)
            self.commit_term.setdefault(entry.index, term)
            if seen != value:
                self.fail(
                    "commit agreement",
                    f"{node} committed term {entry.term} at index {entry.index}, another node term {seen[0]}",
                )

    # -- applying -------------------------------------------------------------
    def on_restore(self, node: NodeId, index: int) -> None:
        self.applied_index[node] = index

    def on_apply(self, node: NodeId, entry: Entry, result: bytes | None = None) -> None:
        last = self.applied_index.get(node, 0)
        if entry.index != last + 1:
            self.fail("apply order", f"{node} applied index {entry.index} after {last}")
        self.applied_index[node] = entry.index
        value = (entry.term, entry.data)
        seen = self.applied.setdefault(entry.index, value)
        if seen != value:
            self.fail(
                "state machine safety",
                f"{node} applied term {entry.term} at index {entry.index}; another node applied term {seen[0]}",
            )
            return
        # The same command on the same state must give the same result everywhere.
        first = self.results.setdefault(entry.index, result)
        if first != result:
            self.fail(
                "determinism",
                f"{node} got a different result for index {entry.index}: {result!r} vs {first!r} "
                "(apply depends on something other than the command and the state)",
            )

    def on_send(self, msg: Message, storage: Storage) -> None:
        """A node's promises must already be durable when they leave it:
        a granted vote is on disk, and so is every entry an append
        acknowledgement covers (a replica never answers from memory alone)."""
        if msg.type == MessageType.VOTE_RESP and not msg.reject:
            hard_state, _ = storage.initial_state()
            if (hard_state.term, hard_state.vote) != (msg.term, msg.dst):
                self.fail(
                    "vote durability",
                    f"{msg.src} granted its term-{msg.term} vote to {msg.dst} but its disk says "
                    f"term {hard_state.term} vote {hard_state.vote}",
                )
        elif msg.type == MessageType.APPEND_RESP and not msg.reject and msg.index > storage.last_index():
            self.fail(
                "append durability",
                f"{msg.src} acknowledged entries up to {msg.index} but holds only {storage.last_index()} on disk",
            )

    def on_ack(self, index: int, term: int) -> None:
        self.acked.append((index, term))
