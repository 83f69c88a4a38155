"""Batch scans that survive crashes: input lists, durable JSON lines, and resuming.

A scan writes one JSON line per input, flushed and fsynced before the next input starts, so a
crash (SIGKILL included) loses at most the line being written. Each line carries the input's
`sha256`. `--resume` reads the output first: a partial last line (the crash happened while it was
written) is cut off, and every input whose (path, sha256) already has a line is skipped; the rest
are scanned and appended. So any number of kills and resumes end with exactly one line per input.
An input whose content changed since its line was written is scanned again (a second line for
the same path, with the new hash: the old line describes the old content).

Several lines for one (path, sha256): the later line wins, for `--resume` (`completed`), the
spreadsheet and the report (`detector.runs.export.read_results`). `--resume --retry-errors` appends such
a line for each input whose last line is an error not to be blamed on the file (`RETRY_KINDS`: a
worker process that died, an internal failure, a file that changed while it was scanned).

Which file, and which version of it, is `detector.media.files` (stamps and sha256).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from detector.errors import ConfigError
from detector.match.results import RETRY_KINDS, error_kind_of, path_of

__all__ = ["completed", "read_list", "unique"]

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
    ignored, not trusted. Paths are as Python names the files (`detector.match.results.path_of`).
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
