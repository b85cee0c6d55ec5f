"""Plain data shared by the consensus core, its storage and its drivers.

Everything here is an immutable value: entries, hard state, configurations,
snapshot metadata and the one `Message` class that travels between nodes.
Nothing here does I/O; the codec (`rsm.codec`) turns these into bytes.
"""

from __future__ import annotations

import enum

import attrs

NodeId = str


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0  # an application command: opaque bytes for the state machine
    NOOP = 1  # appended by every new leader at the start of its term (Raft §6.4 / §3.6.2)
    CONFIG = 2  # a membership change (see rsm.consensus.membership)


@attrs.frozen(slots=True)
class Entry:
    """One slot of the replicated log."""

    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size_bytes(self) -> int:
        """Approximate wire size, used for batching limits."""
        return len(self.data) + 16


@attrs.frozen(slots=True)
class HardState:
    """What a node must persist before it answers anyone (Raft figure 2)."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


@attrs.frozen(slots=True)
class ConfState:
    """A membership configuration: who votes and who only listens."""

    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()

    @property
    def members(self) -> frozenset[NodeId]:
        return self.voters | self.learners

    def quorum(self) -> int:
        """Votes (or acknowledgements) needed for a majority of voters."""
        return len(self.voters) // 2 + 1


@attrs.frozen(slots=True)
class SnapshotMeta:
    """Which prefix of the log a snapshot replaces, and the configuration at its end."""

    index: int = 0
    term: int = 0
    conf: ConfState = ConfState()


@attrs.frozen(slots=True)
class SnapshotChunk:
    """A piece of an incoming snapshot the driver must write at `offset`."""

    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool


@attrs.frozen(slots=True)
class ReadState:
    """A read request that is safe to serve once the local applied index >= `index`."""

    request_id: bytes
    index: int


class MessageType(enum.IntEnum):
    PRE_VOTE = 1
    PRE_VOTE_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    APPEND = 5
    APPEND_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9
    SNAPSHOT_RESP = 10
    READ_INDEX = 11
    READ_INDEX_RESP = 12
    TIMEOUT_NOW = 13


@attrs.frozen(slots=True)
class Message:
    """One message between two nodes. Fields unused by a type keep their defaults.

    - PRE_VOTE / VOTE: `index`/`log_term` describe the candidate's last entry.
      A pre-vote carries the term the candidate *would* use (Raft §9.6).
    - *_RESP to votes: `reject` says whether it was refused.
    - APPEND: `index`/`log_term` are the entry before `entries`; `commit` is the
      leader's commit index.
    - APPEND_RESP: on success `index` is the last index now matching the leader;
      on rejection `index` is the rejected prev index and `hint_index` /
      `hint_term` let the leader skip a whole conflicting term (Raft §5.3).
    - HEARTBEAT / HEARTBEAT_RESP: `commit` and the read `context` being confirmed.
    - SNAPSHOT: one chunk of `snapshot` at `offset`; `done` marks the last one.
    - SNAPSHOT_RESP: `index` is the snapshot index, `offset` the next offset wanted.
    - READ_INDEX: a follower asks the leader for a read index (`context` is the
      request id); READ_INDEX_RESP answers with `index` (or `reject`).
    """

    type: MessageType
    src: NodeId
    dst: NodeId
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0
    context: bytes = b""
    snapshot: SnapshotMeta | None = None
    offset: int = 0
    data: bytes = b""
    done: bool = False


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class ConfChangeKind(enum.Enum):
    ADD_LEARNER = "add-learner"  # a new non-voting member that receives the log
    ADD_VOTER = "add-voter"  # promote a caught-up learner (or add a voter directly)
    REMOVE = "remove"  # remove a voter or a learner


@attrs.frozen(slots=True)
class ConfChange:
    """One single-server membership change (Raft §4.1)."""

    kind: ConfChangeKind
    node_id: NodeId

    def apply_to(self, conf: ConfState) -> ConfState:
        """The configuration after this change (no validation: see Node.propose_conf_change)."""
        voters, learners = set(conf.voters), set(conf.learners)
        voters.discard(self.node_id)
        learners.discard(self.node_id)
        if self.kind == ConfChangeKind.ADD_VOTER:
            voters.add(self.node_id)
        elif self.kind == ConfChangeKind.ADD_LEARNER:
            learners.add(self.node_id)
        return ConfState(voters=frozenset(voters), learners=frozenset(learners))
