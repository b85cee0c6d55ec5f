"""Membership configurations: their encoding in CONFIG entries, and which one is in effect.

rsm changes membership one server at a time (Raft §4.1), not with joint
consensus. Any majority of a configuration and any majority of a configuration
that differs from it by one server intersect, so if at most one change is ever
uncommitted, no two leaders can be elected in one term with disjoint quorums.
Two rules make that hold (both enforced in `Node.propose_conf_change`):

1. at most one uncommitted configuration entry in the leader's log;
2. a new leader commits an entry of its own term (its no-op) before it starts
   a change: otherwise an uncommitted change of a previous leader, invisible to
   the new one, plus the new one's change could differ by two servers
   (the bug in the original single-server algorithm, Ongaro's raft-dev post of 2015).

We chose single-server changes because they need no intermediate joint state,
so every component that counts votes or acknowledgements (elections,
commitment, check-quorum, ReadIndex) reads one configuration, and growing,
shrinking or replacing a node are sequences of the same simple step.

A configuration takes effect on a node as soon as its entry is in the node's
log, committed or not (§4.1); if the entry is removed by a conflict, the
previous configuration is in effect again. `ConfTracker` keeps exactly that.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgpack

from rsm.consensus.types import ConfState, Entry, EntryKind


def encode_conf(conf: ConfState) -> bytes:
    """Deterministic bytes for a configuration (sorted member lists)."""
    return bytes(msgpack.packb({"v": sorted(conf.voters), "l": sorted(conf.learners)}))


def decode_conf(data: bytes) -> ConfState:
    """Decode a CONFIG entry; raises ValueError on anything malformed."""
    try:
        raw = msgpack.unpackb(data, raw=False, max_str_len=1024, max_array_len=1024, max_map_len=2, max_bin_len=0)
    except Exception as exc:
        raise ValueError(f"malformed configuration entry: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("v"), list) or not isinstance(raw.get("l"), list):
        raise ValueError("malformed configuration entry")
    voters = raw["v"]
    learners = raw["l"]
    if not all(isinstance(x, str) and x for x in voters + learners):
        raise ValueError("malformed configuration entry: member ids must be non-empty strings")
    if set(voters) & set(learners):
        raise ValueError("malformed configuration entry: a member is both voter and learner")
    return ConfState(voters=frozenset(voters), learners=frozenset(learners))


class ConfTracker:
    """The configuration in effect: the newest CONFIG entry in the log.

    `committed` is the newest configuration at or below the commit index;
    `pending` holds the (index, configuration) of CONFIG entries above it.
    """

    def __init__(self, committed: ConfState, pending: Iterable[tuple[int, ConfState]] = ()) -> None:
        self.committed = committed
        self.pending: list[tuple[int, ConfState]] = list(pending)

    @property
    def current(self) -> ConfState:
        return self.pending[-1][1] if self.pending else self.committed

    def has_pending(self) -> bool:
        return bool(self.pending)

    def on_append(self, entries: list[Entry]) -> None:
        """Entries were written at their indexes, replacing any suffix from the first."""
        if not entries:
            return
        first = entries[0].index
        self.pending = [(i, c) for i, c in self.pending if i < first]
        for entry in entries:
            if entry.kind == EntryKind.CONFIG:
                self.pending.append((entry.index, decode_conf(entry.data)))

    def on_commit(self, commit_index: int) -> bool:
        """Fold configurations at or below the commit index; True if one was committed."""
        changed = False
        while self.pending and self.pending[0][0] <= commit_index:
            self.committed = self.pending.pop(0)[1]
            changed = True
        return changed

    def restore(self, conf: ConfState) -> None:
        """An installed snapshot replaces the log and its configurations."""
        self.committed = conf
        self.pending = []
