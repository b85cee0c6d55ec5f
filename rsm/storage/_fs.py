"""Small file-system helpers: directory fsync, atomic file creation, and the
translation of a failed write into `StorageFull` or `StorageFailed`."""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path

import lmdb

from rsm.storage.errors import StorageError, StorageFailed, StorageFull

#: errno values that mean "no room" rather than "the device failed".
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: Free bytes under which an EIO from a write is reported as a full disk: LMDB
#: turns a short write (what a filling disk produces) into EIO.
NEARLY_FULL_BYTES = 4 << 20


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes) -> None:
    """Create `path` holding `data`, atomically and durably; never replaces a file.

    Written to `<name>.tmp`, fsynced, then linked into place (link fails if the
    target exists, unlike rename), then the directory is fsynced.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)


def error_code(exc: BaseException) -> int | None:
    """The errno behind an `OSError` or an `lmdb.Error`, if any."""
    if isinstance(exc, OSError):
        return exc.errno
    if isinstance(exc, lmdb.DiskError):
        return errno.ENOSPC
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) and code > 0 else None


def write_failure(exc: BaseException, what: str, file: Path) -> StorageError:
    """The named error for a write to `file` that failed with `exc`."""
    code = error_code(exc)
    detail = f"{what} failed writing {file}: {exc}"
    if code in NO_SPACE_ERRNOS:
        return StorageFull(f"{detail}; no space left. {_AFTER_FULL}")
    if code == errno.EIO:
        why = _space_exhausted(file)
        if why:
            return StorageFull(f"{detail}; {why}, which LMDB reports as an I/O error. {_AFTER_FULL}")
    return StorageFailed(f"{detail}. {_AFTER_FAILED}")


_AFTER_FULL = (
    "Nothing was written; what was durable before is intact. "
    "Free space (or raise the limit) and restart this replica."
)
_AFTER_FAILED = (
    "What was durable before is intact, but the outcome of this write is unknown "
    "to this process: check the device, then restart this replica."
)


def _space_exhausted(file: Path) -> str:
    """Why a short write probably ran out of room, or "" if it does not look so."""
    try:
        stat = os.statvfs(file.parent)
        if stat.f_bavail * stat.f_frsize < NEARLY_FULL_BYTES:
            return "the file system is (nearly) full"
        soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY and file.exists() and file.stat().st_size + NEARLY_FULL_BYTES >= soft:
            return f"the file size limit (RLIMIT_FSIZE = {soft} bytes) was reached"
    except OSError:
        return ""
    return ""
