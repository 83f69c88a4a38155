"""Reviewer decisions as given: a JSON-lines file, one decision per line.

    {"path": "clip.mp4", "sha256": "<64 hex>", "character": "akane",
     "decision": "not_infringing", "note": "fan-made original design", "reviewer": "kim"}

`path`, `sha256`, `character` and `decision` (`infringing` or `not_infringing`) are required;
`note` and `reviewer` are optional strings. Blank lines are skipped; any other line that is not
such an object is an error naming the file and line. `detector.review` applies them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from detector.errors import ConfigError

__all__ = ["DECISIONS", "Decision", "DecisionFileError", "decisions_from", "read_decisions"]

DECISIONS = ("infringing", "not_infringing")
_REQUIRED = ("path", "sha256", "character", "decision")
_FIELDS = (*_REQUIRED, "note", "reviewer")
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

    @property
    def id(self) -> str:
        """Stable id: the same input, character and reviewer give the same id (applying a decision
        again replaces what it stored)."""
        key = json.dumps([self.sha256, self.character, self.reviewer])
        return "d-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _decision(obj: object, where: str) -> Decision:
    if not isinstance(obj, dict):
        raise DecisionFileError(f"{where}: a decision must be a JSON object")
    if missing := [k for k in _REQUIRED if not obj.get(k)]:
        raise DecisionFileError(f"{where}: missing {', '.join(missing)}")
    if unknown := sorted(set(obj) - set(_FIELDS)):
        raise DecisionFileError(f"{where}: unknown field(s) {', '.join(unknown)}")
    if bad := [k for k in _FIELDS if k in obj and not isinstance(obj[k], str)]:
        raise DecisionFileError(f"{where}: {', '.join(bad)} must be text")
    if obj["decision"] not in DECISIONS:
        raise DecisionFileError(f"{where}: decision must be one of {', '.join(DECISIONS)}, not {obj['decision']!r}")
    if not _SHA256.fullmatch(obj["sha256"].lower()):
        raise DecisionFileError(f"{where}: sha256 must be 64 hex digits")
    return Decision(obj["path"], obj["sha256"].lower(), obj["character"], obj["decision"],
                    obj.get("note") or "", obj.get("reviewer") or "", where)


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
