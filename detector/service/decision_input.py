"""What `POST /v1/admin/decisions` may read: files under `--media-root` only, and result lines
whose segments are checked before any use.

Why: a decision names a file on the server. Unconfined, any admin token (or anyone who got one)
could make the server open, hash and decode any path it can read, and the reply told whether it
existed and its sha256's first characters. So a decision's `path` is taken relative to the media
root (an absolute path must lie inside it), symbolic links are resolved first (one that leads out
is refused), and the refusal is the same whether the path exists or not: it is decided on the
name alone, before anything is opened. A server without `--media-root` refuses decisions over
HTTP (`mamori review apply` on the server's machine applies them offline).

Result lines come from the client: a segment missing a field or holding a wrong type is a 422
naming it (`results[i].characters[j].segments[k]: ...`), never a 500 deep in the apply step.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from detector.review.decisions import Decision
from detector.service.errors import InvalidParameter, PathRefused, UploadTooLarge

__all__ = ["checked_results", "confined"]

_FLOATS = ("start", "end", "peak_time", "peak_score", "similarity")
_STRINGS = ("reference", "reference_id")


def confined(decisions: list[Decision], root: Path | None, max_bytes: int) -> list[Decision]:
    """The decisions with each `path` made the real path of a file under `root`.

    Raises:
        PathRefused: no media root configured, or a path that leads outside it (403).
        UploadTooLarge: a file larger than max_upload_mb (413), as an upload would be.
    """
    if root is None:
        raise PathRefused("this server has no --media-root: decisions over HTTP cannot name files on it "
                          "(start `mamori serve --media-root DIR`, or apply them with `mamori review apply`)")
    root = Path(os.path.realpath(root))  # as `serve --media-root` gives it; a caller's own may not be
    out = []
    for i, d in enumerate(decisions):
        if "\0" in d.path:
            raise PathRefused(f"decisions[{i}]: the path is not under the server's media root")
        real = Path(os.path.realpath(root / d.path))  # an absolute d.path replaces root: checked below
        if not real.is_relative_to(root) or real == root:
            raise PathRefused(f"decisions[{i}]: the path is not under the server's media root")
        try:
            size = real.stat().st_size
        except OSError:
            size = 0  # missing or unreadable: the apply step skips it ("cannot be read")
        if size > max_bytes:
            raise UploadTooLarge(f"decisions[{i}]: the file is {size:,} bytes, over max_upload_mb "
                                 f"({max_bytes / 2**20:g} MiB)")
        out.append(dataclasses.replace(d, path=str(real)))
    return out


def _number(value: object, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidParameter(f"{where}: `{name}` must be a finite number, not {_shown(value)}")
    return float(value)


def _integer(value: object, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidParameter(f"{where}: `{name}` must be a whole number >= 0, not {_shown(value)}")
    return value


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _segment(seg: object, where: str) -> dict[str, Any]:
    """A segment as `detector.match.results.Segment` takes it (keys it does not know are dropped)."""
    if not isinstance(seg, dict):
        raise InvalidParameter(f"{where}: a segment must be an object")
    missing = [k for k in (*_FLOATS, *_STRINGS, "box", "frames") if k not in seg]
    if missing:
        raise InvalidParameter(f"{where}: missing {', '.join(f'`{k}`' for k in missing)}")
    out: dict[str, Any] = {k: _number(seg[k], where, k) for k in _FLOATS}
    for k in _STRINGS:
        if not isinstance(seg[k], str):
            raise InvalidParameter(f"{where}: `{k}` must be a string")
        out[k] = seg[k]
    box = seg["box"]
    if not isinstance(box, list) or len(box) != 4:
        raise InvalidParameter(f"{where}: `box` must be [x0, y0, x1, y1]")
    out["box"] = [_integer(v, where, "box") for v in box]
    out["frames"] = _integer(seg["frames"], where, "frames")
    if not isinstance(seg.get("channel", "embedding"), str):
        raise InvalidParameter(f"{where}: `channel` must be a string")
    out["channel"] = seg.get("channel", "embedding")
    out["inliers"] = None if seg.get("inliers") is None else _integer(seg["inliers"], where, "inliers")
    return out


def _record(rec: object, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
        raise InvalidParameter(f"{where}: a result line must be an object with a string `path`")
    for key in ("sha256", "path_bytes"):
        if rec.get(key) is not None and not isinstance(rec[key], str):
            raise InvalidParameter(f"{where}: `{key}` must be a string")
    chars = rec.get("characters") or []
    if not isinstance(chars, list):
        raise InvalidParameter(f"{where}: `characters` must be a list")
    out = []
    for j, c in enumerate(chars):
        at = f"{where}.characters[{j}]"
        if not isinstance(c, dict) or not isinstance(c.get("character"), str):
            raise InvalidParameter(f"{at}: must be an object with a string `character`")
        segs = c.get("segments") or []
        if not isinstance(segs, list):
            raise InvalidParameter(f"{at}: `segments` must be a list")
        out.append({**c, "segments": [_segment(s, f"{at}.segments[{k}]") for k, s in enumerate(segs)]})
    return {**rec, "characters": out}


def checked_results(results: object) -> list[dict[str, Any]] | None:
    """The body's `results` with every segment checked and normalised (None: not given).

    Raises:
        InvalidParameter: not a list of result lines, or a malformed one (422, naming where).
    """
    if results is None:
        return None
    if not isinstance(results, list):
        raise InvalidParameter("`results` must be a list of result lines (objects with a path)")
    return [_record(r, f"results[{i}]") for i, r in enumerate(results)]
