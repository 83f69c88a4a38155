"""Confirmed depictions: an `infringing` decision's matched regions added as references of the character.

Steps (`mamori review apply`, `POST /v1/admin/decisions`; `detector.review.apply` finds the segments,
or makes the one segment of a reviewer's mark):
    1. per segment, the sampled frame nearest its peak is read (`MediaReader`) and the segment's
       box is cut out of it;
    2. each crop is saved as `INDEX/confirmed/<decision id>-<sha256[:16]>.png`, so the reference has
       a file like any other (`index.uploads`: removing the reference deletes it);
    3. after the allow-list commit, all crops are added in one `index.build.add_references` commit,
       with `license` and `extra` naming the decision and reviewer (`extra.source` is `review`;
       a marked decision's `mark_time` and `mark_box` too).
       A crop already in the index (same sha256) is not added again: applying a decision twice adds
       nothing the second time.
A later `not_infringing` decision on the same input and character takes these references out
again (`detector.review.apply`, reversals); `add_confirmed` then deletes their crops.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from detector.match.results import Segment
from detector.media.frames import MediaReader
from detector.media.times import frame_distance
from detector.review.decisions import Applied, Decision
from index.build import Embedder, add_references
from index.manifest import ReferenceEntry
from index.store import IndexStore, index_lock
from index.uploads import CONFIRMED, delete_unused_uploads

if TYPE_CHECKING:
    from detector.api import Detector

__all__ = ["REVIEW_SOURCE", "add_confirmed", "confirmed_entries"]

#: `extra["source"]` of a reference added from a reviewer's infringing decision
REVIEW_SOURCE = "review"


def _crops(det: Detector, d: Decision, segments: Sequence[Segment]) -> list[tuple[float, Image.Image]]:
    """Step 1: (peak time, crop) per segment, from the sampled frame nearest its peak."""
    best: dict[int, tuple[float, float, Image.Image]] = {}  # segment -> (distance, time, crop)
    reader = MediaReader(d.path, fps=det.fps, max_frames=det.max_frames, max_pixels=det.max_pixels)
    last = max(s.peak_time for s in segments) + 1.0 / det.fps
    for frame in reader:
        if frame.time > last:
            break
        for i, s in enumerate(segments):
            dist = frame_distance(frame.time, s.peak_time)
            if i in best and best[i][0] <= dist:
                continue
            x0, y0, x1, y1 = (round(v / frame.scale) for v in s.box)
            box = (max(0, x0), max(0, y0), min(frame.image.width, x1), min(frame.image.height, y1))
            if box[2] - box[0] >= 8 and box[3] - box[1] >= 8:
                best[i] = (dist, frame.time, frame.image.crop(box).convert("RGB"))
    return [(t, crop) for _, t, crop in (best[i] for i in sorted(best))]


def _save(folder: Path, d: Decision, crop: Image.Image) -> Path:
    """Step 2: the crop as a PNG named by the decision and its content (never overwrites other art)."""
    buf = io.BytesIO()
    crop.save(buf, "PNG")
    data = buf.getvalue()
    path = folder / f"{d.id}-{hashlib.sha256(data).hexdigest()[:16]}.png"
    if not path.exists():
        tmp = folder / f".tmp-{uuid.uuid4().hex}.png"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def _mark_extra(d: Decision) -> dict[str, str]:
    """The reviewer's mark in a reference's `extra`: `mark_time` (seconds) and `mark_box`
    ("x0,y0,x1,y1", or "frame"); nothing for a decision without a mark."""
    if d.time is None:
        return {}
    return {"mark_time": f"{d.time:.3f}", "mark_box": ",".join(map(str, d.box)) if d.box else "frame"}


def confirmed_entries(det: Detector, d: Decision, segments: Sequence[Segment],
                      index: str | Path) -> list[ReferenceEntry]:
    """Steps 1-2 for one infringing decision: the reference entries to add (files already saved)."""
    folder = (Path(index) / CONFIRMED).absolute()
    folder.mkdir(exist_ok=True)
    info = det.store.characters[d.character]
    return [
        ReferenceEntry(
            _save(folder, d, crop), d.character, info.franchise, info.rights_holder,
            license=f"confirmed depiction: review decision {d.id} by {d.reviewer or 'an unnamed reviewer'}",
            extra={"source": REVIEW_SOURCE, "decision_id": d.id, "reviewer": d.reviewer, "note": d.note,
                   "video": d.path, "video_sha256": d.sha256, "time": f"{t:.3f}", **_mark_extra(d)},
        )
        for t, crop in _crops(det, d, segments)
    ]


def add_confirmed(index: str | Path, applied: Sequence[Applied], embedder: Embedder) -> list[Applied]:
    """Step 3: add every applied decision's confirmed crops as references in one commit.

    Returns `applied` with each infringing decision's message saying what was added; a crop that
    was not added (already in the index under another file, or unreadable) is deleted again.
    The caller must not hold the index lock (`add_references` takes it). First, the crops of the
    references that not_infringing decisions reversed (`Applied.removed`) are deleted.
    """
    if gone := [r for a in applied for r in a.removed]:
        with index_lock(index):
            delete_unused_uploads(index, gone, IndexStore.open(index).references.values())
    entries = [e for a in applied for e in a.entries]
    if not entries:
        return list(applied)
    report = add_references(index, entries, embedder)
    added = {r.source_path: r for r in report.added}
    dups = dict(report.duplicates)
    for e in entries:
        if str(e.path) not in added and (str(e.path) not in dups or dups[str(e.path)].source_path != str(e.path)):
            e.path.unlink(missing_ok=True)
    quarantined = {r.id for r in report.quarantined}
    out = []
    for a in applied:
        if not a.entries:
            out.append(a)
            continue
        new = [added[str(e.path)] for e in a.entries if str(e.path) in added]
        ids = ", ".join(r.id + (" (quarantined: generic)" if r.id in quarantined else "") for r in new)
        old = [dups[str(e.path)].id for e in a.entries if str(e.path) in dups]
        msg = (f"{len(new)} confirmed region(s) added as references of {a.decision.character}"
               + (f" ({ids})" if new else "") + (f", {len(old)} already in the index ({', '.join(old)})" if old else ""))
        out.append(replace(a, message=msg, regions=len(new)))
    return out
