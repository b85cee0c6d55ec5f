"""Durable storage for rsm replicas: the Raft log and hard state in LMDB,
snapshots as files, one locked data directory per replica.

Start with `open_store(path, cluster_id=..., node_id=...)`, which returns a
`DiskStorage` keeping the `LogStore` contract of `rsm.consensus.storage`;
`MemoryStorage` keeps the same contract in memory (simulator, tests).
The on-disk layout, the errors and the settings are described in
docs/storage.md.
"""

from rsm.storage.datadir import FORMAT_VERSION, DataDir, Identity
from rsm.storage.disk import DiskStorage, open_store
from rsm.storage.errors import (
    CorruptionError,
    CorruptLogEntry,
    CorruptLogMeta,
    CorruptSnapshot,
    DataDirDamaged,
    DataDirError,
    DataDirLocked,
    FormatMismatch,
    FormatTooNew,
    FormatTooOld,
    NotADataDir,
    StorageClosed,
    StorageError,
    StorageFailed,
    StorageFull,
    WrongCluster,
    WrongNode,
)
from rsm.storage.lmdb_store import LMDBLogStore
from rsm.storage.memory import MemoryStorage
from rsm.storage.settings import StorageSettings
from rsm.storage.snapshots import SnapshotReader, SnapshotStore, SnapshotWriter

__all__ = [
    "FORMAT_VERSION",
    "CorruptLogEntry",
    "CorruptLogMeta",
    "CorruptSnapshot",
    "CorruptionError",
    "DataDir",
    "DataDirDamaged",
    "DataDirError",
    "DataDirLocked",
    "DiskStorage",
    "FormatMismatch",
    "FormatTooNew",
    "FormatTooOld",
    "Identity",
    "LMDBLogStore",
    "MemoryStorage",
    "NotADataDir",
    "SnapshotReader",
    "SnapshotStore",
    "SnapshotWriter",
    "StorageClosed",
    "StorageError",
    "StorageFailed",
    "StorageFull",
    "StorageSettings",
    "WrongCluster",
    "WrongNode",
    "open_store",
]
