"""Reviewer decisions as given: a JSON-lines file, one decision per line.

    {"path": "clip.mp4", "sha256": "<64 hex>", "character": "akane",
     "decision": "not_infringing", "note": "fan-made original design", "reviewer": "kim"}

`path`, `sha256`, `character` and `decision` (`infringing` or `not_infringing`) are required;
`note` and `reviewer` are optional strings. Optionally the reviewer marks where the character is:
`time` (seconds, a number >= 0) and `box` (`[x0, y0, x1, y1]`, integers >= 0 in the video's own
pixels, x0 < x1 and y0 < y1; only with `time`). A marked decision's region is the mark, not a
match in the results, so it also works for a character the scan did not find. Blank lines are
skipped; any other line that is not such an object is an error naming the file and line.
`detector.review.apply` applies them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from detector.errors import ConfigError

if TYPE_CHECKING:
    from index.manifest import ReferenceEntry
    from index.records import Reference

__all__ = ["DECISIONS", "Applied", "Decision", "DecisionFileError", "decisions_from", "read_decisions"]

DECISIONS = ("infringing", "not_infringing")
_REQUIRED = ("path", "sha256", "character", "decision")
_TEXT = (*_REQUIRED, "note", "reviewer")
_FIELDS = (*_TEXT, "time", "box")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class DecisionFileError(ConfigError):
    """A decisions file that cannot be read, or a line that is not a valid decision."""


@dataclass(frozen=True)
class Decision:
    """One reviewer decision; `where` is its file:line."""

    path: str
    sha256: str
    character: str
    decision: str
    note: str = ""
    reviewer: str = ""
    where: str = ""
    #: the reviewer's mark: seconds into the input (None: no mark, the region comes from the results)
    time: float | None = None
    #: the mark's box (x0, y0, x1, y1) in the input's pixels (None: the whole frame); only with `time`
    box: tuple[int, int, int, int] | None = None

    @property
    def id(self) -> str:
        """Stable id: the same input, character, reviewer, decision (and mark, when there is one) give
        the same id (applying a decision again replaces what it stored); two marks of one input are
        two decisions, and so are `infringing` and `not_infringing` by one reviewer (a reversal,
        `detector.review.apply`). A `not_infringing` id leaves the decision out of the hash, so the
        allow-list entries stored before the decision was hashed keep their ids."""
        key: list[object] = [self.sha256, self.character, self.reviewer]
        if self.time is not None:
            key += [self.time, list(self.box) if self.box else None]
        if self.decision != "not_infringing":
            key.append(self.decision)
        return "d-" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Applied:
    """What became of one decision (`detector.review.apply`): `status` applied, recorded (infringing, not added) or skipped.

    `entries`: an infringing decision's confirmed regions, to add as references (`detector.review.confirmed`);
    `removed`: the references a not_infringing decision reversed, whose files to delete after the commit."""

    decision: Decision
    status: str
    message: str
    regions: int = 0
    frames: int = 0
    entries: tuple[ReferenceEntry, ...] = ()
    removed: tuple[Reference, ...] = ()


def _shown(value: object) -> str:
    """A bad value as an error message quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _seconds(value: object) -> float | None:
    """A JSON number >= 0 and finite as seconds, else None (true/false are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return seconds if 0 <= seconds < math.inf else None


def _mark(obj: dict[str, object], where: str) -> tuple[float | None, tuple[int, int, int, int] | None]:
    """The decision's `time` and `box`, validated."""
    if "time" not in obj:
        if "box" in obj:
            raise DecisionFileError(f"{where}: box needs a time (the second it marks)")
        return None, None
    time, box = _seconds(obj["time"]), obj.get("box")
    if time is None:
        raise DecisionFileError(f"{where}: time must be a number of seconds >= 0, not {_shown(obj['time'])}")
    if "box" not in obj:
        return time, None
    if (not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in box)):
        raise DecisionFileError(f"{where}: box must be [x0, y0, x1, y1], four integers >= 0, not {_shown(box)}")
    if not (box[0] < box[2] and box[1] < box[3]):
        raise DecisionFileError(f"{where}: box must have x0 < x1 and y0 < y1, not {_shown(box)}")
    return time, (box[0], box[1], box[2], box[3])


def _decision(obj: object, where: str) -> Decision:
    if not isinstance(obj, dict):
        raise DecisionFileError(f"{where}: a decision must be a JSON object")
    if missing := [k for k in _REQUIRED if not obj.get(k)]:
        raise DecisionFileError(f"{where}: missing {', '.join(missing)}")
    if unknown := sorted(set(obj) - set(_FIELDS)):
        raise DecisionFileError(f"{where}: unknown field(s) {', '.join(unknown)}")
    if bad := [k for k in _TEXT if k in obj and not isinstance(obj[k], str)]:
        raise DecisionFileError(f"{where}: {', '.join(bad)} must be text")
    if obj["decision"] not in DECISIONS:
        raise DecisionFileError(f"{where}: decision must be one of {', '.join(DECISIONS)}, not {obj['decision']!r}")
    if not _SHA256.fullmatch(obj["sha256"].lower()):
        raise DecisionFileError(f"{where}: sha256 must be 64 hex digits")
    time, box = _mark(obj, where)
    return Decision(obj["path"], obj["sha256"].lower(), obj["character"], obj["decision"],
                    obj.get("note") or "", obj.get("reviewer") or "", where, time, box)


def decisions_from(objs: object, source: str) -> list[Decision]:
    """Decisions given as a JSON list of objects (the HTTP service's body); `source[i]` names a bad one.

    Raises:
        DecisionFileError: not a non-empty list, or an item that is not a valid decision.
    """
    if not isinstance(objs, list) or not objs:
        raise DecisionFileError(f"{source}: a non-empty list of decisions is required")
    return [_decision(obj, f"{source}[{i}]") for i, obj in enumerate(objs)]


def read_decisions(path: str | Path) -> list[Decision]:
    """Parse a decisions file (see the module docstring).

    Raises:
        DecisionFileError: unreadable file, a bad line (named file:line), or no decision at all.

    >>> read_decisions("decisions.jsonl")[0].decision     # doctest: +SKIP
    'not_infringing'
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DecisionFileError(f"{path}: cannot read decisions ({exc})") from exc
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DecisionFileError(f"{path}:{n}: not JSON ({exc.msg})") from exc
        out.append(_decision(obj, f"{path}:{n}"))
    if not out:
        raise DecisionFileError(f"{path}: no decisions in this file")
    return out
