"""Crash-safe file operations shared by every on-disk index.

The rule: nothing a reader can see is ever written in place. Files and folders are
written under a temporary name in the same directory, flushed, then renamed (``rename``
is atomic on POSIX), so a process killed at any point leaves either the old state or the
new one, plus stray temporaries that the next writer's garbage collection removes
(see :mod:`retrievo.index.lifecycle`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import CorruptIndexError, DiskFullError, IndexLockedError

TMP_MARK = ".retrievo-tmp"


def tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}-{uuid.uuid4().hex[:12]}")


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's message for a short write


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free
    return None


@contextlib.contextmanager
def disk_full_named(path: Path) -> Iterator[None]:
    """Turn an out-of-space failure while writing ``path`` into :class:`DiskFullError`
    naming the file and saying the disk is full (the raw errors name neither: numpy
    reports only "N requested and M written")."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) or (exc.errno is None and _SHORT_WRITE.search(str(exc))):
            free = _free_bytes(Path(path).parent)
            left = f"{free:,} bytes left" if free is not None else "free space unknown"
            raise DiskFullError(f"cannot write {path}: the disk is full ({left}); free some space and retry "
                                "(the index keeps its last committed state)", path) from exc
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = tmp_sibling(path)
    try:
        with disk_full_named(path), open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # never leave a temporary behind (the next GC would, too)
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8"))


class HashingWriter:
    """A write-only file object that feeds a sha256 and, optionally, a real file.

    Content hashes are taken from the exact bytes written, while they are written, so an
    index never has to read its files back to know what it holds, and an in-memory index
    (no file) hashes to the same value as the same content saved to disk.
    """

    def __init__(self, fh=None):
        self.fh, self.sha = fh, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        if self.fh is not None:
            self.fh.write(data)
        return len(data)


def _npy_bytes_into(sink: HashingWriter, array: np.ndarray) -> None:
    np.save(sink, np.ascontiguousarray(array), allow_pickle=False)


def hash_array(array: np.ndarray) -> str:
    """sha256 of the .npy file :func:`save_array` would write for ``array``."""
    sink = HashingWriter()
    _npy_bytes_into(sink, array)
    return sink.sha.hexdigest()


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_array(path: Path, array: np.ndarray) -> str:
    """Write one .npy file (inside a folder that is itself renamed into place); returns
    the sha256 of the bytes written."""
    with disk_full_named(path), open(path, "wb") as fh:
        sink = HashingWriter(fh)
        _npy_bytes_into(sink, array)
        fh.flush()
        os.fsync(fh.fileno())
    return sink.sha.hexdigest()


def save_bytes(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` (inside a folder renamed into place); returns its sha256."""
    with disk_full_named(path), open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return hash_bytes(data)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success rename it to ``final`` (which must not exist)."""
    tmp = tmp_sibling(final)
    tmp.mkdir(parents=True)
    try:
        with disk_full_named(final):
            yield tmp
            fsync_dir(tmp)
        from retrievo.index.lifecycle import fault_point  # lifecycle imports this module

        fault_point("atomic_dir.before_rename")
        os.rename(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_HELD: set[str] = set()


@contextlib.contextmanager
def write_lock(folder: Path) -> Iterator[None]:
    """Exclusive, non-blocking writer lock; readers never take it.

    A POSIX record lock (``lockf``): the kernel drops it when the process dies, and unlike
    ``flock`` it is not shared with forked children (indexing workers), so a killed writer
    never leaves the index locked. ``_HELD`` makes it exclusive within one process too.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _HELD:
        raise IndexLockedError(f"{folder} is already being written by this process")
    fh = open(folder / "LOCK", "a+")
    try:
        try:
            fcntl.lockf(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise IndexLockedError(
                f"{folder} is being written by another process; wait for it to finish "
                "(the lock is released automatically when that process exits)"
            ) from None
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            with contextlib.suppress(OSError):
                fcntl.lockf(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()


def check_file_sizes(folder: Path, sizes: dict[str, int]) -> None:
    """Raise :class:`CorruptIndexError` unless every file of ``sizes`` (name → bytes, as
    recorded when the folder was written) still has its recorded size: a cheap check that
    catches truncated copies before a memory map reads past their end."""
    for fname, size in sizes.items():
        actual = (folder / fname).stat().st_size
        if actual != size:
            raise CorruptIndexError(f"{folder / fname} has {actual} bytes, expected {size}: "
                                    "the index is damaged; rebuild it")
