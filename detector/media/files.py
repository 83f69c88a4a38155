"""Which file, and which version of it: stamps and sha256 of the inputs that are scored.

Only regular files are read: `stamp` checks the file type with `stat` before anything opens the
file, so a FIFO, a device (/dev/zero), a socket or a folder is an `error` result at once instead
of a read that blocks or never ends (`hash_file` also opens with O_NONBLOCK and checks the opened
file, in case the path was swapped in between).

The recorded sha256 is of the bytes that were scored: the file's stamp (device, inode, size,
mtime_ns, ctime_ns) is taken before hashing and again after scoring (`detector.runs.engines.score_one`).
If it differs, the file was replaced or written to meanwhile, and the input is hashed and scored
again; if it changes again, its result is an `error` of kind `changed` (retried by
`--retry-errors`). Why stamps, not one file descriptor for hashing and decoding: the decoders
(PyAV, Pillow) open the path themselves, and an open descriptor would still see writes made in
place. The gap: a write that leaves the size and both times unchanged, within the file system's
timestamp resolution, goes unseen (only hashing again after scoring would see it, reading every
file twice).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from detector.errors import UnreadableMediaError

__all__ = ["FileChangedError", "Stamp", "hash_file", "input_sha", "stamp"]

#: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns): which file, and which version of it
Stamp = tuple[int, int, int, int, int]

_TYPES = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class FileChangedError(UnreadableMediaError):
    """The file was replaced or written to between its stamp and the end of its scoring."""


def _stamp(st: os.stat_result) -> Stamp:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _check_regular(path: str | Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        what = next((name for test, name in _TYPES if test(st.st_mode)), "not a regular file")
        raise UnreadableMediaError(f"{path}: {what}, not a regular file; only regular files are read")


def stamp(path: str | Path) -> Stamp:
    """The stamp of a regular file, from `stat` (nothing is opened).

    Raises:
        UnreadableMediaError: no such file, cannot stat it, or not a regular file.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise UnreadableMediaError(f"{path}: no such file") from exc
    except OSError as exc:
        raise UnreadableMediaError(f"{path}: cannot read ({exc.strerror})") from exc
    _check_regular(path, st)
    return _stamp(st)


def hash_file(path: str | Path, chunk: int = 1 << 20) -> tuple[str, Stamp]:
    """(sha256, stamp) of a regular file, the stamp taken before hashing.

    Raises:
        UnreadableMediaError: missing, unreadable, or not a regular file.
        FileChangedError: the path names another file than the one stamped (swapped meanwhile).
    """
    before = stamp(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise UnreadableMediaError(f"{path}: cannot read ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        _check_regular(path, st)
        if _stamp(st) != before:
            raise FileChangedError(f"{path}: changed while it was being opened")
        h = hashlib.sha256()
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest(), before


def input_sha(path: str | Path) -> str | None:
    """The sha256 of a regular file, or None when it cannot be hashed (its scan says why)."""
    try:
        return hash_file(path)[0]
    except UnreadableMediaError:
        return None
