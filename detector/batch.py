"""Batch scans that survive crashes: input lists, durable JSON lines, and resuming.

A scan writes one JSON line per input, flushed and fsynced before the next input starts, so a
crash (SIGKILL included) loses at most the line being written. Each line carries the input's
`sha256`. `--resume` reads the output first: a partial last line (the crash happened while it was
written) is cut off, and every input whose (path, sha256) already has a line is skipped; the rest
are scanned and appended. So any number of kills and resumes end with exactly one line per input.
An input whose content changed since its line was written is scanned again (a second line for
the same path, with the new hash: the old line describes the old content).

Several lines for one (path, sha256): the later line wins, for `--resume` (`completed`), the
spreadsheet and the report (`detector.export.read_results`). `--resume --retry-errors` appends such
a line for each input whose last line is an error not to be blamed on the file (`RETRY_KINDS`: a
worker process that died, an internal failure, a file that changed while it was scanned).

Only regular files are read: `stamp` checks the file type with `stat` before anything opens the
file, so a FIFO, a device (/dev/zero), a socket or a folder is an `error` result at once instead
of a read that blocks or never ends (`hash_file` also opens with O_NONBLOCK and checks the opened
file, in case the path was swapped in between).

The recorded sha256 is of the bytes that were scored: the file's stamp (device, inode, size,
mtime_ns, ctime_ns) is taken before hashing and again after scoring (`detector.engines.score_one`).
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
import json
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from detector.errors import ConfigError, UnreadableMediaError
from detector.results import RETRY_KINDS, error_kind_of, path_of

__all__ = ["FileChangedError", "Stamp", "completed", "hash_file", "input_sha", "read_list", "stamp", "unique"]

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


def read_list(path: str | Path) -> list[Path]:
    """Paths from a list file: one local path per line (UTF-8; other bytes of a file name are kept
    as they are, so such names can be listed); blank lines and `#` comments ignored. Paths are
    taken as listed: a folder here is not searched (its result is an error).

    Raises:
        ConfigError: the file cannot be read.
    """
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            lines = [ln.strip() for ln in fh]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read input list {path}: {exc}") from exc
    return [Path(ln) for ln in lines if ln and not ln.startswith("#")]


def unique(paths: Iterable[Path]) -> Iterator[Path]:
    """Each path once, in first-seen order (an input listed twice is scanned once)."""
    seen: set[str] = set()
    for p in paths:
        if str(p) not in seen:
            seen.add(str(p))
            yield p


def completed(out: str | Path, retry_errors: bool = False, *, rescan: bool = False) -> dict[tuple[str, str], str]:
    """(path, sha256) -> verdict of the last complete result line of each input in `out`, after
    cutting off a partial last line; with `retry_errors`, inputs whose last line is an error of a
    kind in RETRY_KINDS are left out (to be scanned again).

    Only the lines of one kind count: scan lines, or with `rescan` the lines `mamori rescan`
    wrote (they carry `rescan`), so a rescan resumed into the file that holds the scan's lines
    still rescans every video, and a scan resumed there is not fooled by rescan lines.

    A missing file means nothing is done yet. Lines that are not mamori results (no `path`) are
    ignored, not trusted. Paths are as Python names the files (`detector.results.path_of`).
    """
    p = Path(out)
    if not p.exists():
        return {}
    with open(p, "rb+") as fh:
        data = fh.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # the last line was cut short by a crash
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
    done: dict[tuple[str, str], str] = {}
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "path" in rec and rec.get("sha256") and bool(rec.get("rescan")) == rescan:
            key = path_of(rec), str(rec["sha256"])
            done[key] = str(rec.get("verdict"))
            if retry_errors and error_kind_of(rec) in RETRY_KINDS:
                del done[key]
    return done
