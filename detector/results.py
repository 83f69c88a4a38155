"""Result objects: what a scan, `score`, the HTTP reply and the Python API return.

`Result.to_dict()` is the result schema of DESIGN.md, extended (never renamed) with `kind`,
`warnings`, `sha256` (of the input, in batch scans), `timeline` (score over time), per character
`inliers`, and per segment `reference_id`, `similarity`, `box`, `frames`, `channel` and `inliers`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["VERDICTS", "CharacterResult", "Result", "Segment"]

VERDICTS = ("flag", "review", "pass", "error")


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
class CharacterResult:
    character: str
    franchise: str
    rights_holder: str
    score: float
    segments: tuple[Segment, ...]
    #: best geometric-verification inlier count over the video (None: never checked); a match
    #: is verified at >= `detector.scoring.MIN_INLIERS`
    inliers: int | None = None


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
    #: (time, best calibrated frame score) per sampled frame, at most TIMELINE_POINTS (`detector.scoring.timeline`)
    timeline: tuple[tuple[float, float], ...] = ()

    @classmethod
    def failed(cls, path: str, exc: BaseException) -> Result:
        """The result of an input that could not be read: verdict `error`, the reason in `error`."""
        return cls(path=path, verdict="error", score=0.0, frames=0, duration=None,
                   error=f"{type(exc).__name__}: {exc}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["score"] = round(self.score, 4)
        for c in d["characters"]:
            c["score"] = round(c["score"], 4)
            for s in c["segments"]:
                for k in ("start", "end", "peak_time", "peak_score", "similarity"):
                    s[k] = round(s[k], 4)
                s["box"] = list(s["box"])
        d["warnings"] = list(self.warnings)
        d["timeline"] = [[round(t, 3), round(v, 3)] for t, v in self.timeline]
        if self.duration is not None:
            d["duration"] = round(self.duration, 3)
        return d
