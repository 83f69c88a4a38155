"""Result objects: what a scan, `score`, the HTTP reply and the Python API return.

`Result.to_dict()` is the result schema of DESIGN.md, extended (never renamed) with `kind`,
`warnings`, `sha256` (of the input, in batch scans), `timeline` (score over time), `error_kind`,
`path_bytes`, per character `inliers`, and per segment `reference_id`, `similarity`, `box`,
`frames`, `channel` and `inliers`, per character `policy` (the match-policy rule that decided
it, written only when one did), `suppressed` (matches a reviewer's allow-list removed;
written only when there are any, so results without an allow-list are unchanged), and `rescan`
(only in `mamori rescan` results: they come from a scan store, not from the video).

File names that are not UTF-8 (bytes on Linux; Python holds them as surrogate escapes) cannot be
written as JSON text that every reader accepts. So `to_dict()` writes every string as valid
Unicode, each undecodable byte shown as the four characters `\\xNN`, and, when that changed the
path, the path's exact bytes in `path_bytes` (base64; null otherwise). `path_of(record)` gives
back the path as Python names the file.
"""

from __future__ import annotations

import base64
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from detector.errors import MediaError, MediaLimitError

__all__ = ["ERROR_KINDS", "RETRY_KINDS", "VERDICTS", "CharacterResult", "PolicyMatch", "Result", "Segment",
           "Suppression", "error_kind_of", "path_of"]

VERDICTS = ("flag", "review", "pass", "error")
#: why an input's verdict is `error`: media (unreadable, or not a regular file), limit (over a
#: limit), changed (the file changed while it was scanned), worker (the process scoring it died),
#: internal (any other failure, e.g. a bug)
ERROR_KINDS = ("media", "limit", "changed", "worker", "internal")
#: error kinds that `scan --resume --retry-errors` scans again: the file itself is not to blame
RETRY_KINDS = ("changed", "worker", "internal")


@dataclass(frozen=True)
class Segment:
    """A run of consecutive sampled frames that support one character.

    `box` is the matched region (x0, y0, x1, y1) in the sampled frame at `peak_time`, in the
    video's own pixel coordinates.
    """

    start: float
    end: float
    peak_time: float
    peak_score: float
    reference: str
    reference_id: str
    similarity: float
    box: tuple[int, int, int, int]
    frames: int
    channel: str = "embedding"
    #: best geometric-verification inlier count in the segment (None: never checked)
    inliers: int | None = None


@dataclass(frozen=True)
class PolicyMatch:
    """What a match-policy rule did to a character (`index.policy`, `detector.match.policy`): the rule
    (its name, else its 1-based position), its `action` label, the character's verdict after the
    policy, and its seconds on screen (None for a still image)."""

    rule: str | int
    action: str | None
    verdict: str
    on_screen: float | None


@dataclass(frozen=True)
class CharacterResult:
    character: str
    franchise: str
    rights_holder: str
    score: float
    segments: tuple[Segment, ...]
    #: best geometric-verification inlier count over the video (None: never checked); a match
    #: is verified at >= `detector.match.verify.MIN_INLIERS`
    inliers: int | None = None
    #: the index's match-policy rule that decided this character (`detector.match.policy`); None: no
    #: rule matched (then `to_dict` leaves `policy` out, so results without a policy are unchanged)
    policy: PolicyMatch | None = None


@dataclass(frozen=True)
class Suppression:
    """Matches of `character` that a reviewer's not-infringing decision (`decision_id`, by
    `reviewer`) removed, in `frames` sampled frames (`index.allowlist`)."""

    character: str
    decision_id: str
    reviewer: str
    frames: int


@dataclass(frozen=True)
class Result:
    """One input's verdict with its evidence; `characters` sorted by score, highest first."""

    path: str
    verdict: str
    score: float
    frames: int
    duration: float | None
    characters: tuple[CharacterResult, ...] = ()
    error: str | None = None
    kind: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)
    sha256: str | None = None  # of the input file (batch scans record it for --resume)
    #: (time, best calibrated frame score) per sampled frame, at most TIMELINE_POINTS (`detector.match.scoring.timeline`)
    timeline: tuple[tuple[float, float], ...] = ()

    #: one of ERROR_KINDS when `verdict` is `error`, else None
    error_kind: str | None = None
    #: matches removed by the index's allow-list, per (character, decision); () when none
    suppressed: tuple[Suppression, ...] = ()
    #: set on results of `mamori rescan` (`detector.runs.rescan`): the store, when and against which
    #: index generation the video was scanned, the characters rescored, and whether the
    #: candidate frames were re-embedded from the video's pixels (`exact`, else `reason`)
    rescan: dict[str, Any] | None = None

    @classmethod
    def failed(cls, path: str, exc: BaseException, kind: str | None = None) -> Result:
        """The result of an input that could not be scored: verdict `error`, the reason in `error`,
        `error_kind` as given or else from the exception (MediaLimitError: limit, MediaError:
        media, anything else: internal)."""
        if kind is None:
            kind = "internal"
            if isinstance(exc, MediaError):
                kind = "limit" if isinstance(exc, MediaLimitError) else "media"
        return cls(path=path, verdict="error", score=0.0, frames=0, duration=None,
                   error=f"{type(exc).__name__}: {exc}", error_kind=kind)

    def to_dict(self) -> dict[str, Any]:
        d = _valid_text(asdict(self))
        d["score"] = round(self.score, 4)
        for c in d["characters"]:
            c["score"] = round(c["score"], 4)
            if c["policy"] is None:
                del c["policy"]
            for s in c["segments"]:
                for k in ("start", "end", "peak_time", "peak_score", "similarity"):
                    s[k] = round(s[k], 4)
                s["box"] = list(s["box"])
        d["warnings"] = list(d["warnings"])
        d["timeline"] = [[round(t, 3), round(v, 3)] for t, v in self.timeline]
        if self.duration is not None:
            d["duration"] = round(self.duration, 3)
        d["path_bytes"] = _path_bytes(self.path) if d["path"] != self.path else None
        if self.rescan is None:
            del d["rescan"]
        if not self.suppressed:
            del d["suppressed"]
        else:
            d["suppressed"] = list(d["suppressed"])
        out: dict[str, Any] = d
        return out


def _text(s: str) -> str:
    """`s` as valid Unicode: a non-UTF-8 byte of a file name (a surrogate escape) becomes `\\xNN`."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _valid_text(x: Any) -> Any:
    if isinstance(x, str):
        return _text(x)
    if isinstance(x, dict):
        return {k: _valid_text(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(map(_valid_text, x))
    return x


def _path_bytes(path: str) -> str | None:
    try:
        return base64.b64encode(os.fsencode(path)).decode("ascii")
    except UnicodeEncodeError:
        return None


def path_of(record: dict[str, Any]) -> str:
    """The input's path as Python names the file (surrogate escapes for non-UTF-8 bytes), from a
    result line: `path_bytes` when set, else `path`."""
    raw = record.get("path_bytes")
    if isinstance(raw, str) and raw:
        try:
            return os.fsdecode(base64.b64decode(raw, validate=True))
        except ValueError:  # binascii.Error: a damaged line; its `path` is the best we have
            pass
    return str(record["path"])


def error_kind_of(record: dict[str, Any]) -> str | None:
    """A result line's error kind; for lines written before `error_kind` existed, read from `error`."""
    if record.get("verdict") != "error":
        return None
    if record.get("error_kind"):
        return str(record["error_kind"])
    error = str(record.get("error") or "")
    if error.startswith("MediaLimitError"):
        return "limit"
    return "media" if error.startswith(("UnreadableMediaError", "MediaError")) else "internal"
