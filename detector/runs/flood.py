"""Flood alerts: references that match an unusual share of the scanned videos.

A reference that suddenly matches far too much (a generic pose, a logo, a blank-ish image that
slipped past the build's generic check) floods the review queue; Meta's HMA watches for the same
and stops such a signal. `FloodCounter` counts, per reference, the videos it matched:

- a video *matches* a reference when one of its character results (all of them are flag or
  review: `detector.match.scoring` lists no weaker character) has a segment whose `reference_id` is it;
  each video counts once per reference, however many segments name it. Error results match
  nothing but count as videos (they are scanned inputs).
- a reference *floods* when, out of at least `min_total` videos, it matched more than `share` of them.

`mamori scan` counts over the batch (with `--resume`, over the whole results file) and prints the
flooding references at the end; `mamori serve` counts over a sliding window of the last scored
requests (`window`) and reports, alerts on or quarantines them (`detector.service.flood`).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FLOOD_MIN", "FLOOD_SHARE", "FloodCounter", "FloodReference", "flood_lines", "matched_references"]

#: a reference floods when it matches more than this share of the videos...
#: Not measured: chosen by hand (issue 17, commit 22af2e6; no batch with a real flood to measure):
#: a generic reference shows up in far more inputs than one character's infringement wave
FLOOD_SHARE = 0.05
#: ...out of at least this many. Not measured: chosen by hand (commit 22af2e6): fewer inputs make
#: a share too noisy to alert on (the service's --flood-window 1000 is its counterpart)
FLOOD_MIN = 50


@dataclass(frozen=True)
class FloodReference:
    """A reference's matches: `count` of `total` videos (`share` = count / total)."""

    reference_id: str
    character: str
    source_path: str
    count: int
    total: int

    @property
    def share(self) -> float:
        return self.count / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"reference_id": self.reference_id, "character": self.character, "source_path": self.source_path,
                "count": self.count, "share": round(self.share, 4)}


def matched_references(result: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """reference_id -> (character, source path) of each reference a result dict matched."""
    out: dict[str, tuple[str, str]] = {}
    for c in result.get("characters") or ():
        for s in c.get("segments") or ():
            ref = s.get("reference_id")
            if ref:
                out.setdefault(str(ref), (str(c.get("character", "")), str(s.get("reference", ""))))
    return out


class FloodCounter:
    """Per-reference match counts over the videos added, or over the last `window` of them.

    Thread-safe (the service adds from its event loop and reads from admin threads).

    >>> fc = FloodCounter()
    >>> fc.add({"characters": [{"character": "akane", "segments": [{"reference_id": "r1"}]}]})
    {'r1'}
    >>> fc.add({"characters": []})
    set()
    >>> [(f.reference_id, f.count, f.share) for f in fc.flooding(share=0.4, min_total=2)]
    [('r1', 1, 0.5)]
    """

    def __init__(self, window: int | None = None):
        self.window = window
        self._recent: deque[frozenset[str]] = deque()
        self._counts: Counter[str] = Counter()
        self._names: dict[str, tuple[str, str]] = {}
        self._total = 0
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        """Videos counted (at most `window`)."""
        return self._total

    def add(self, result: Mapping[str, Any]) -> set[str]:
        """Count one video's result dict; returns the ids of the references it matched."""
        refs = matched_references(result)
        with self._lock:
            self._names.update(refs)
            self._counts.update(refs.keys())
            self._total += 1
            if self.window is not None:
                self._recent.append(frozenset(refs))
                while len(self._recent) > self.window:
                    self._counts.subtract(self._recent.popleft())
                    self._total -= 1
                self._counts += Counter()  # drop counts that fell to zero
        return set(refs)

    def forget(self, reference_id: str) -> None:
        """Drop a reference's matches (an admin re-enabled it: its old matches no longer count)."""
        with self._lock:
            self._counts.pop(reference_id, None)
            self._recent = deque(frozenset(r - {reference_id}) for r in self._recent)

    def top(self, k: int | None = None) -> list[FloodReference]:
        """The `k` references matched most (all when None), most first, ties by id."""
        with self._lock:
            ranked = sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
            return [FloodReference(r, *self._names.get(r, ("", "")), n, self._total) for r, n in ranked]

    def flooding(self, *, share: float = FLOOD_SHARE, min_total: int = FLOOD_MIN) -> list[FloodReference]:
        """References over `share` of the videos, once at least `min_total` are counted."""
        if self.total < min_total:
            return []
        return [f for f in self.top() if f.share > share]


def flood_lines(flooding: Iterable[FloodReference], *, index: str | None = None) -> list[str]:
    """Human-readable alert lines (one per reference, then a hint) for `mamori scan`'s stderr."""
    lines = [f"flood: reference {f.reference_id} ({f.character}, {f.source_path}) matched {f.count} of "
             f"{f.total} inputs ({f.share:.1%})" for f in flooding]
    if lines:
        where = index or "INDEX"
        lines.append(f"flood: check these references; if generic, `mamori index quarantine {where} ID` "
                     f"(undo: `mamori index enable {where} ID`) or `mamori index remove {where} --reference ID`")
    return lines
