"""Sans-IO Raft: a pure, deterministic consensus core (see node.py and ready.py)."""

from rsm.consensus.config import Config
from rsm.consensus.node import KNOWN_BUGS, Node
from rsm.consensus.ready import Ready
from rsm.consensus.storage import LogStore, Storage
from rsm.consensus.types import (
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

__all__ = [
    "KNOWN_BUGS",
    "ConfState",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "LogStore",
    "Message",
    "MessageType",
    "Node",
    "NodeId",
    "ReadState",
    "Ready",
    "Role",
    "SnapshotChunk",
    "SnapshotMeta",
    "Storage",
]
