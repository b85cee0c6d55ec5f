"""Errors of the durable store, each saying what happened and what to do.

Three families, by who must act:

- `DataDirError`: the data directory cannot be opened as asked (another
  cluster's, another node's, another format, held by a live process, not a
  data directory at all, or damaged). It is raised by `open` before anything
  is written; the directory is left exactly as it was.
- `CorruptionError`: bytes on disk fail their checksum or structure check.
  Wrong data is never returned: the read raises instead, naming the file and
  the log index or snapshot.
- `StorageFull` / `StorageFailed`: a write did not reach the disk. The store
  refuses every later write (a failed write or fsync is never retried: the
  page cache may have dropped the data, so a later fsync that "succeeds" would
  lie). What was durable before the failure is intact; restart the process.

`StorageClosed` is a programming error: the store was used after `close()`.
"""

from __future__ import annotations

from pathlib import Path

from rsm.errors import RsmError

__all__ = [
    "CorruptLogEntry",
    "CorruptLogMeta",
    "CorruptSnapshot",
    "CorruptionError",
    "DataDirDamaged",
    "DataDirError",
    "DataDirLocked",
    "FormatMismatch",
    "FormatTooNew",
    "FormatTooOld",
    "NotADataDir",
    "StorageClosed",
    "StorageError",
    "StorageFailed",
    "StorageFull",
    "WrongCluster",
    "WrongNode",
]

#: What an operator does about a replica whose durable data cannot be trusted.
REBUILD_ADVICE = (
    "stop this replica, move its data directory aside (keep it for inspection), "
    "and add the node back so that it receives a fresh copy from the leader"
)


class StorageError(RsmError):
    """Base of every error raised by `rsm.storage`."""


# -- opening the data directory ------------------------------------------------
class DataDirError(StorageError):
    """The data directory cannot be used as asked; nothing in it was changed."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class WrongCluster(DataDirError):
    """The directory belongs to another cluster."""

    def __init__(self, path: Path, found: str, expected: str) -> None:
        super().__init__(
            path,
            f"belongs to cluster {found!r}, not {expected!r}; "
            "pass the right data directory or cluster id (this directory is left untouched)",
        )
        self.found = found
        self.expected = expected


class WrongNode(DataDirError):
    """The directory belongs to another node of the same cluster."""

    def __init__(self, path: Path, found: str, expected: str) -> None:
        super().__init__(
            path,
            f"belongs to node {found!r}, not {expected!r}; each replica needs its own "
            "data directory: pass this node's directory or the right node id",
        )
        self.found = found
        self.expected = expected


class FormatMismatch(DataDirError):
    """The directory was written in an on-disk format this rsm does not read."""

    def __init__(self, path: Path, found: int, expected: int, advice: str) -> None:
        super().__init__(path, f"is in on-disk format {found}, this rsm reads format {expected}; {advice}")
        self.found = found
        self.expected = expected


class FormatTooOld(FormatMismatch):
    """Written by an older rsm, in a format this one no longer reads."""

    def __init__(self, path: Path, found: int, expected: int) -> None:
        super().__init__(
            path, found, expected,
            "it was written by an older rsm: run that version, or rebuild this replica "
            "from the cluster (" + REBUILD_ADVICE + ")",
        )


class FormatTooNew(FormatMismatch):
    """Written by a newer rsm than this one."""

    def __init__(self, path: Path, found: int, expected: int) -> None:
        super().__init__(
            path, found, expected, "it was written by a newer rsm: upgrade rsm on this host"
        )


class DataDirLocked(DataDirError):
    """Another live process (or another open store in this one) holds the directory."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(
            path,
            f"is in use by another process ({holder}); stop that replica first, "
            "or give this one its own data directory",
        )
        self.holder = holder


class NotADataDir(DataDirError):
    """The path exists and holds something other than an rsm data directory."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(
            path,
            f"is not an rsm data directory ({why}); it is left untouched: "
            "pass an empty or new directory",
        )


class DataDirDamaged(DataDirError):
    """The directory is an rsm data directory, but a part of it is missing or unreadable."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(path, f"is damaged ({why}); {REBUILD_ADVICE}")


# -- corruption ----------------------------------------------------------------
class CorruptionError(StorageError):
    """Bytes on disk failed their checksum or structure check; nothing wrong was returned."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class CorruptLogEntry(CorruptionError):
    """A log entry failed its checksum, or the log has a hole."""

    def __init__(self, path: Path, index: int, why: str) -> None:
        super().__init__(path, f"log entry {index} is corrupt ({why}); {REBUILD_ADVICE}")
        self.index = index


class CorruptLogMeta(CorruptionError):
    """A record beside the log (hard state, snapshot point, identity) failed its check."""

    def __init__(self, path: Path, key: str, why: str) -> None:
        super().__init__(path, f"log record {key!r} is corrupt ({why}); {REBUILD_ADVICE}")
        self.key = key


class CorruptSnapshot(CorruptionError):
    """A snapshot file is torn, truncated, missing or fails a checksum.

    The file is renamed to `<name>.corrupt` (kept for inspection, never read
    again) and the previous good snapshot is used when the log still covers it.
    """

    def __init__(self, path: Path, why: str, advice: str = "") -> None:
        tail = f"; {advice}" if advice else ""
        super().__init__(path, f"snapshot is corrupt ({why}){tail}")
        self.why = why


# -- writes that did not reach the disk ---------------------------------------
class StorageFull(StorageError):
    """No room: the disk (ENOSPC), a quota, a file size limit, or `map_size_max_bytes`.

    The write was not done and what was durable before is intact. The store
    refuses later writes: free space (or raise the setting) and restart.
    """


class StorageFailed(StorageError):
    """A write or fsync failed with an I/O error; the store refuses later writes.

    What was durable before the failure is intact (LMDB writes its new root
    only after the data is synced), but this process cannot know what the OS
    kept of the failed write: restart it.
    """


class StorageClosed(StorageError):
    """The store was used after `close()`."""
