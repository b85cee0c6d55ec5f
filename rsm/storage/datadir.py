"""The data directory of one replica: its identity stamp, its lock, its layout.

Layout (see docs/storage.md):

    <datadir>/
      STAMP        identity: format version, cluster id, node id (JSON, one line)
      LOCK         flock()ed for the life of the process that opened the store
      log/         the LMDB environment (entries, hard state, configuration)
      snapshots/   snapshot files

Theory of operation. `DataDir.open` takes the lock first, so two stores never
race on one directory, then checks the stamp: another cluster, another node or
another format fails at once, before anything is written. A directory without
a stamp is adopted only if it is empty, or holds nothing but the pieces an
interrupted creation leaves behind; the stamp is written last, once the log
and the snapshot directory exist, so a directory with a stamp is complete.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import attrs

from rsm.errors import ConfigError
from rsm.storage._fs import fsync_dir, write_new_file
from rsm.storage.errors import (
    DataDirDamaged,
    DataDirLocked,
    FormatTooNew,
    FormatTooOld,
    NotADataDir,
    WrongCluster,
    WrongNode,
)

#: On-disk format written and read by this rsm. Bump it on any incompatible
#: change to the files described in docs/storage.md.
FORMAT_VERSION = 1

STAMP_FILE = "STAMP"
LOCK_FILE = "LOCK"
LOG_DIR = "log"
SNAPSHOT_DIR = "snapshots"
#: Files LMDB creates in `log/`.
LMDB_FILES = frozenset({"data.mdb", "lock.mdb"})
#: Longest cluster or node id accepted (ids appear in file contents and messages).
ID_CHARS_MAX = 256


@attrs.frozen(kw_only=True)
class Identity:
    """Who a data directory belongs to, and in which format it is written."""

    cluster_id: str
    node_id: str
    format_version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        record = {
            "format_version": self.format_version,
            "cluster_id": self.cluster_id,
            "node_id": self.node_id,
        }
        return (json.dumps(record, sort_keys=True) + "\n").encode()

    @classmethod
    def decode(cls, raw: bytes) -> Identity:
        """Parse a stamp; raises ValueError if it is not one."""
        record = json.loads(raw.decode())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        version, cluster_id, node_id = (
            record.get("format_version"), record.get("cluster_id"), record.get("node_id")
        )
        if not isinstance(version, int) or not isinstance(cluster_id, str) or not isinstance(node_id, str):
            raise ValueError("format_version, cluster_id or node_id missing or mistyped")
        return cls(cluster_id=cluster_id, node_id=node_id, format_version=version)

    def check(self, path: Path, expected: Identity) -> None:
        """Raise the named error if this (found) identity is not `expected`.

        The format is compared first: in another format the other fields may
        not mean the same thing.
        """
        if self.format_version < expected.format_version:
            raise FormatTooOld(path, self.format_version, expected.format_version)
        if self.format_version > expected.format_version:
            raise FormatTooNew(path, self.format_version, expected.format_version)
        if self.cluster_id != expected.cluster_id:
            raise WrongCluster(path, self.cluster_id, expected.cluster_id)
        if self.node_id != expected.node_id:
            raise WrongNode(path, self.node_id, expected.node_id)


def check_id(name: str, value: object) -> str:
    """Validate a cluster or node id: a non-empty printable string, bounded."""
    if not isinstance(value, str) or not value or len(value) > ID_CHARS_MAX or not value.isprintable():
        raise ConfigError(f"{name} must be a printable string of 1..{ID_CHARS_MAX} characters, got {value!r}")
    return value


class DataDir:
    """A locked, identity-checked data directory. Close it to release the lock."""

    def __init__(self, path: Path, identity: Identity, lock_fd: int, created: bool) -> None:
        self.path = path
        self.identity = identity
        #: True when this open found no stamp: the directory is being created and
        #: `finish_creation()` must be called once the log and snapshots exist.
        self.created = created
        self._lock_fd: int | None = lock_fd

    @property
    def log_path(self) -> Path:
        return self.path / LOG_DIR

    @property
    def snapshot_path(self) -> Path:
        return self.path / SNAPSHOT_DIR

    @classmethod
    def open(cls, path: Path | str, *, cluster_id: str, node_id: str) -> DataDir:
        """Lock and check `path` (created if missing) for this cluster and node."""
        path = Path(path)
        expected = Identity(cluster_id=check_id("cluster_id", cluster_id), node_id=check_id("node_id", node_id))
        _ensure_directory(path)
        if not (path / STAMP_FILE).exists():
            _check_adoptable(path)  # before creating the lock file in a foreign directory
        lock_fd = _lock(path)
        try:
            created = _inspect(path, expected)
        except BaseException:
            _unlock(lock_fd)
            raise
        return cls(path, expected, lock_fd, created)

    def finish_creation(self) -> None:
        """Write the stamp: from now on the directory is a complete data directory."""
        if self.created:
            write_new_file(self.path / STAMP_FILE, self.identity.encode())
            self.created = False

    def close(self) -> None:
        """Release the lock. Idempotent."""
        if self._lock_fd is not None:
            _unlock(self._lock_fd)
            self._lock_fd = None


def _ensure_directory(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise NotADataDir(path, "it is not a directory")
    if not path.exists():
        path.mkdir(parents=True)
        fsync_dir(path.parent)


def _lock(path: Path) -> int:
    """Take the directory's lock without waiting; record our pid in the lock file.

    flock() locks belong to the open file description, so a second open of
    the same directory conflicts even inside one process, and the lock goes
    away with the process however it dies.
    """
    lock_path = path / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise DataDirLocked(path, holder) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _lock_holder(fd: int) -> str:
    recorded = os.pread(fd, 64, 0).decode(errors="replace").strip()
    if not recorded.isdigit():
        return "holder unknown"
    if int(recorded) == os.getpid():
        return f"pid {recorded}, this very process: the store is already open here"
    return f"pid {recorded}, per {LOCK_FILE}"


def _unlock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _inspect(path: Path, expected: Identity) -> bool:
    """Check an existing directory against `expected`; return True if it is new."""
    stamp = path / STAMP_FILE
    if stamp.exists():
        _read_stamp(path, stamp).check(path, expected)
        if not (path / LOG_DIR / "data.mdb").is_file():
            raise DataDirDamaged(path, f"it has a {STAMP_FILE} but its log ({LOG_DIR}/data.mdb) is missing")
        if not (path / SNAPSHOT_DIR).is_dir():
            raise DataDirDamaged(path, f"its snapshot directory ({SNAPSHOT_DIR}/) is missing")
        return False
    _check_adoptable(path)
    for sub in (LOG_DIR, SNAPSHOT_DIR):
        (path / sub).mkdir(exist_ok=True)
    fsync_dir(path)
    return True


def _read_stamp(path: Path, stamp: Path) -> Identity:
    try:
        return Identity.decode(stamp.read_bytes())
    except (OSError, ValueError) as exc:
        raise DataDirDamaged(path, f"its {STAMP_FILE} is unreadable: {exc}") from exc


def _check_adoptable(path: Path) -> None:
    """A directory without a stamp is adopted only if nothing in it could be data.

    What an interrupted creation leaves (the lock, a stamp temp file, an empty
    snapshot directory, a log directory with only LMDB's files) is allowed; the
    log store then refuses a log that holds anything.
    """
    names = set(os.listdir(path)) - {LOCK_FILE, STAMP_FILE + ".tmp"}
    foreign = sorted(names - {LOG_DIR, SNAPSHOT_DIR})
    if foreign:
        raise NotADataDir(path, f"it holds {', '.join(foreign[:5])} but no {STAMP_FILE} file")
    snapshots = path / SNAPSHOT_DIR
    if snapshots.exists() and (not snapshots.is_dir() or os.listdir(snapshots)):
        raise NotADataDir(path, f"{SNAPSHOT_DIR}/ is not empty but there is no {STAMP_FILE} file")
    log = path / LOG_DIR
    if log.exists() and (not log.is_dir() or set(os.listdir(log)) - LMDB_FILES):
        raise NotADataDir(path, f"{LOG_DIR}/ holds unexpected files and there is no {STAMP_FILE} file")
