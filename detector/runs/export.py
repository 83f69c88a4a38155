"""Spreadsheet export of scan results: one CSV row per input (`scan --csv`, `mamori report --csv`).

Columns: the input, its verdict and score, and the evidence a reviewer filters on first: the top
character with its franchise and rights holder, that character's strongest segment (start, end,
peak time and score, reference, channel, box), its geometric-verification inliers, the other
characters found, the error, the input's sha256, then the error's kind and the exact bytes of a
non-UTF-8 path (`path_bytes`, base64; `path` shows such bytes as `\\xNN`, see `detector.match.results`),
and `source`: `scan`, or `rescan` for a `mamori rescan` line (scored from a scan store).
Written with the csv module (quoting, UTF-8), via a temporary file renamed into place, so a crash
never leaves half a spreadsheet.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from detector.errors import ConfigError
from detector.match.results import path_of

__all__ = ["CSV_COLUMNS", "read_results", "write_csv"]

CSV_COLUMNS = ("path", "verdict", "score", "frames", "duration", "character", "franchise", "rights_holder",
               "start", "end", "peak_time", "peak_score", "reference", "channel", "inliers", "box", "other_characters",
               "error", "sha256", "error_kind", "path_bytes", "source")


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Result dicts from a scan's JSON lines (a partial last line, from a crash, is ignored), one
    per input and source: of several lines for the same (path, sha256), e.g. an error scanned
    again by `--resume --retry-errors`, the last one, at the place of the first. A `mamori rescan`
    line (it has `rescan`) is kept beside the scan line of the same file, not in its place.

    Raises:
        ConfigError: the file cannot be read, or a complete line is not a mamori result.
    """
    out: dict[tuple[str, Any, bool], dict[str, Any]] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read results {path}: {exc}") from exc
    for n, line in enumerate(lines[:-1], 1):  # the text after the last newline is not a complete line
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{path}:{n}: not a JSON line ({exc})") from exc
        if not isinstance(rec, dict) or "path" not in rec or "verdict" not in rec:
            raise ConfigError(f"{path}:{n}: not a mamori result (no path/verdict)")
        out[path_of(rec), rec.get("sha256"), bool(rec.get("rescan"))] = rec
    return list(out.values())


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    chars = rec.get("characters") or []
    top = chars[0] if chars else {}
    seg = max(top.get("segments") or [{}], key=lambda s: s.get("peak_score", 0.0))
    return {
        "path": rec.get("path"), "verdict": rec.get("verdict"), "score": rec.get("score"),
        "frames": rec.get("frames"), "duration": rec.get("duration"),
        "character": top.get("character", ""), "franchise": top.get("franchise", ""),
        "rights_holder": top.get("rights_holder", ""),
        **{k: seg.get(k, "") for k in ("start", "end", "peak_time", "peak_score", "reference", "channel")},
        "inliers": "" if top.get("inliers") is None else top["inliers"],
        "box": " ".join(map(str, seg.get("box") or [])),
        "other_characters": "; ".join(f"{c['character']} ({c['score']:.2f})" for c in chars[1:]),
        "error": rec.get("error") or "", "sha256": rec.get("sha256") or "",
        "error_kind": rec.get("error_kind") or "", "path_bytes": rec.get("path_bytes") or "",
        "source": "rescan" if rec.get("rescan") else "scan",
    }


def write_csv(results: Iterable[dict[str, Any]], out: str | Path) -> int:
    """Write one row per result to `out` (atomically); returns the number of rows."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for rec in results:
            w.writerow(_row(rec))
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    return n
