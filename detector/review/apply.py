"""Applying reviewer decisions (`detector.review.decisions`) to an index: `mamori review apply`.

Steps for each `not_infringing` decision:
    1. the input must still be the file that was reviewed (its sha256 is checked);
    2. its segments for the character: from the given scan results (the line of that path/sha256),
       or else from scoring the file again (`Detector.score_video`);
    3. only the sampled frames inside a segment (and the one nearest its peak) are converted
       (`MediaReader`); each is cut into regions as the scanner does and embedded;
    4. the regions that make the character's evidence are allowed: first the region of the
       segment's box (at its peak frame), then, while the frame still has a hit for the character
       at its review threshold (`detector.match.evidence.review_level`, the match policy's where a rule
       sets one; `frame_evidence`, with verification, and with what is allowed so
       far suppressed), that hit's region. So a frame where the character filled several
       overlapping windows does not keep flagging through the next window.
    5. all decisions are committed as one new generation under the index lock (`index.allowlist`).

A decision with the reviewer's mark (`time`, optionally `box`) takes its one segment from the mark
instead (step 2: the sampled frame nearest `time`, the box clipped to it or the whole frame;
neither results nor a new score are needed, so it works for a character the scan did not find).

Each `infringing` decision goes through steps 1-2 too; its segments' regions become references of
the character (`detector.review.confirmed`), added after that commit, or, without a `confirmed` folder
(`--no-add-confirmed`), it is only recorded.

Reversals: the later decision on an input (sha256) and character wins, whoever the reviewer and
whatever the mark (the allow-list is per character: an allowed region left in force would keep
suppressing what a reviewer now calls infringing, in every frame that looks like it).
    - an `infringing` decision revokes the active allow-list entries of its input and character
      (`index.allowlist.revoke_allowed`: they keep `added_at` and get `revoked_at`, `revoked_by` =
      its id), whether or not its regions are added (`--no-add-confirmed`) and without reading
      the file (the video may be gone by then);
    - an applied `not_infringing` decision removes the references that `infringing` decisions of
      its input and character added (`extra.source` review): they leave the index in the same
      commit, their crops are deleted after it (`detector.review.confirmed.add_confirmed`), and its
      allow-list entry's `reverses` names each reversed decision, when its references were
      added and which; an earlier `infringing` line of the same batch adds nothing.
Decisions apply in the order given, so within one file the last line on an input and character wins.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from detector.api import Detector
from detector.errors import MediaError
from detector.match.evidence import frame_evidence, review_level
from detector.match.results import Segment, path_of
from detector.match.scoring import iou
from detector.match.verify import verify_frame
from detector.media.files import input_sha
from detector.media.frames import Frame, MediaReader
from detector.media.regions import Box
from detector.media.times import frame_distance
from detector.review.confirmed import REVIEW_SOURCE, confirmed_entries
from detector.review.decisions import Applied, Decision
from index.allowlist import AllowEntryNotFoundError, AllowMatcher, active_entries, allow_regions, revoke_allowed
from index.build import drop_references
from index.clock import now
from index.nearcopy import region_hashes
from index.store import IndexStore, Reference, index_lock, write_index

__all__ = ["MAX_REGIONS_PER_FRAME", "Applied", "apply_decisions", "read_results", "revoke_entries"]

#: at most this many regions allowed per frame of a segment (a 16:9 frame has 47). Not tuned: a
#: bound against a runaway decision (commit ca2baf7)
MAX_REGIONS_PER_FRAME = 64


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The result lines of a scan's JSONL output (a damaged line is skipped, as `--resume` does)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "path" in rec:
            out.append(rec)
    return out


def _segments_from(records: list[dict[str, Any]], d: Decision) -> list[Segment] | str:
    """The character's segments in the result line of the decision's input, or why there are none."""
    rec = next((r for r in reversed(records) if r.get("sha256") == d.sha256), None)
    if rec is None:
        rec = next((r for r in reversed(records) if path_of(r) == d.path and not r.get("sha256")), None)
    if rec is None:
        return f"no result for {d.path} with sha256 {d.sha256[:12]}... in --results"
    char = next((c for c in rec.get("characters") or [] if c.get("character") == d.character), None)
    if char is None:
        return f"the result for {d.path} has no match of {d.character!r}"
    return [Segment(**{**s, "box": tuple(s["box"])}) for s in char["segments"]]


def _at_peak(s: Segment, frame: Frame, step: float) -> bool:
    """Whether a sampled frame is the one nearest the segment's peak: strictly within half a step
    of it. A nearest-frame rule, not a time match, so no tolerance is added (`frame_distance`'s
    would make both frames a half step either side of the peak count)."""
    return abs(frame.time - s.peak_time) < step / 2


def _wanted(segments: list[Segment], frame: Frame, step: float) -> list[Segment]:
    """The segments a sampled frame belongs to (inside it, or the one nearest its peak)."""
    return [s for s in segments if frame_distance(frame.time, s.start, s.end) == 0.0 or _at_peak(s, frame, step)]


def _frame_regions(det: Detector, d: Decision, frame: Frame, seeds: list[Box], allowed: np.ndarray,
                   update: Callable[[np.ndarray], None]) -> np.ndarray:
    """Step 4 for one frame: the raw vectors of the regions to allow (`allowed` are this
    decision's vectors so far; `update` stores a new set so that `det.store` suppresses it)."""
    pixels, boxes = det.embedder.prepare_frame(frame.image)
    vectors = det.embed_pixels(pixels)
    hashes = region_hashes(frame.image, boxes) if det.nearcopy else None
    def shrunk(box: Box) -> Box:  # source pixels -> the sampled frame's
        x0, y0, x1, y1 = (round(v / frame.scale) for v in box)
        return x0, y0, x1, y1

    chosen = {max(range(len(boxes)), key=lambda i: iou(boxes[i], shrunk(box))) for box in seeds}
    for _ in range(MAX_REGIONS_PER_FRAME):
        update(np.concatenate([allowed, vectors[sorted(chosen)]]))
        ev = frame_evidence(det.store, frame.time, vectors, boxes, hashes)
        if det.verify:
            ev = verify_frame(det.store, frame.image, ev)
        hit = ev.hits.get(d.character)
        if hit is None or hit.score < review_level(det.store, d.character) or boxes.index(hit.box) in chosen:
            break
        chosen.add(boxes.index(hit.box))
    out: np.ndarray = vectors[sorted(chosen)]
    return out


def _allow(det: Detector, d: Decision, segments: list[Segment]) -> Applied:
    """Steps 3-4: embed and allow the decision's regions in `det.store.data` (not yet written)."""
    data = det.store.data
    info = {"character": d.character, "path": d.path, "sha256": d.sha256, "reviewer": d.reviewer,
            "note": d.note, "added_at": now()}

    def update(vectors: np.ndarray) -> None:
        allow_regions(data, d.id, info, vectors)
        det.store.allow = AllowMatcher.for_index(data)

    allowed = np.zeros((0, int(data.backbone["dim"])), np.float32)
    frames = 0
    reader = MediaReader(d.path, fps=det.fps, max_frames=det.max_frames, max_pixels=det.max_pixels)
    last = max(s.end for s in segments) + 1.0 / det.fps
    for frame in reader:
        if frame.time > last:
            break
        wanted = _wanted(segments, frame, 1.0 / det.fps)
        if not wanted:
            continue
        seeds = [s.box for s in wanted if _at_peak(s, frame, 1.0 / det.fps)]
        allowed = np.concatenate([allowed, _frame_regions(det, d, frame, seeds, allowed, update)])
        frames += 1
    update(allowed)
    return Applied(d, "applied", f"{len(allowed)} region(s) of {frames} frame(s) allowed for {d.character}",
                   len(allowed), frames)


def _segments(det: Detector, d: Decision, records: list[dict[str, Any]] | None) -> list[Segment] | str:
    """Step 2: the decision's segments, or why there are none."""
    if records is not None:
        return _segments_from(records, d)
    result = det.score_video(d.path)
    char = next((c for c in result.characters if c.character == d.character), None)
    return list(char.segments) if char else f"{d.path} no longer matches {d.character!r}"


def _marked(det: Detector, d: Decision, time: float) -> list[Segment] | str:
    """Step 2 for a decision with the reviewer's mark (`time` is `d.time`): one segment, the sampled
    frame nearest `time`, its box `d.box` clipped to the frame (or the whole frame), or why there is none."""
    near: Frame | None = None
    step = 1.0 / det.fps
    for frame in MediaReader(d.path, fps=det.fps, max_frames=det.max_frames, max_pixels=det.max_pixels):
        if near is None or frame_distance(frame.time, time) < frame_distance(near.time, time):
            near = frame
        if frame.time > time + step:
            break
    if near is None or time > near.time + step:  # more than a step past the last sampled frame
        last = "no frame" if near is None else f"the last sampled frame is at {near.time:.3f} s"
        return f"the mark's time {time:.3f} s is past the end of {d.path} ({last})"
    width, height = round(near.image.width * near.scale), round(near.image.height * near.scale)
    x0, y0, x1, y1 = d.box or (0, 0, width, height)
    box = (min(x0, width), min(y0, height), min(x1, width), min(y1, height))
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"the mark's box {list(d.box or ())} is outside the {width}x{height} frame of {d.path}"
    return [Segment(near.time, near.time, near.time, 0.0, "", "", 0.0, box, 1)]


def _revoke(det: Detector, d: Decision) -> str:
    """An infringing decision's reversal: revoke the allow-list entries of its input and character;
    what its message adds ("" when there were none)."""
    data = det.store.data
    ids = revoke_allowed(data, set(active_entries(data.allow, d.sha256, d.character)), by=d.id, at=now())
    if not ids:
        return ""
    det.store.allow = AllowMatcher.for_index(data)
    return f"; revoked allow-list entr{'y' if len(ids) == 1 else 'ies'} {', '.join(ids)} (the later decision wins)"


def _reverse_confirmed(det: Detector, a: Applied, records: list[dict[str, Any]] | None) -> Applied:
    """An applied not_infringing decision's reversal: the references infringing decisions of its
    input and character added leave `det.store.data`; its allow-list entry records them.

    The regions to allow were chosen against the index that still held those references (a region
    stops being added once the character's evidence falls below the review level): they are chosen
    again against the index without them, or a frame that only the removed references out-scored
    would flag the input the reviewer cleared."""
    d, data = a.decision, det.store.data
    gone = [r for r in data.references.values() if r.character == d.character
            and r.extra.get("source") == REVIEW_SOURCE and r.extra.get("video_sha256") == d.sha256]
    if not gone:
        return a
    drop_references(data, {r.id for r in gone})
    det.store = det.store.rebuilt()
    again = _applied(det, d, records, None)
    a = again if again.status == "applied" else a
    by: dict[str, list[Reference]] = {}
    for r in gone:
        by.setdefault(r.extra.get("decision_id", ""), []).append(r)
    reverses = [{"decision": k, "added_at": min(r.added_at for r in refs), "references": sorted(r.id for r in refs)}
                for k, refs in sorted(by.items())]
    info = data.allow.info[d.id]
    info["reverses"] = json.dumps(json.loads(info.get("reverses") or "[]") + reverses)
    return replace(a, removed=tuple(gone), message=f"{a.message}; removed {len(gone)} confirmed reference(s) of "
                   f"infringing decision(s) {', '.join(by)} (the later decision wins)")


def _apply_one(det: Detector, d: Decision, records: list[dict[str, Any]] | None, confirmed: Path | None) -> Applied:
    revoked = _revoke(det, d) if d.decision == "infringing" else ""
    a = _applied(det, d, records, confirmed)
    if d.decision == "not_infringing" and a.status == "applied":
        return _reverse_confirmed(det, a, records)
    return replace(a, message=a.message + revoked)


def _applied(det: Detector, d: Decision, records: list[dict[str, Any]] | None, confirmed: Path | None) -> Applied:
    if d.decision == "infringing" and confirmed is None:
        return Applied(d, "recorded", "infringing: recorded, not added as references (--no-add-confirmed)")
    if d.character not in det.store.characters:
        return Applied(d, "skipped", f"character {d.character!r} is not in this index")
    sha = input_sha(d.path)
    if sha != d.sha256:
        why = "cannot be read" if sha is None else f"has sha256 {sha[:12]}..., not {d.sha256[:12]}..."
        return Applied(d, "skipped", f"{d.path} {why}")
    try:
        segments = _marked(det, d, d.time) if d.time is not None else _segments(det, d, records)
        if isinstance(segments, str):
            return Applied(d, "skipped", segments)
        if confirmed is None or d.decision == "not_infringing":
            return _allow(det, d, segments)
        entries = tuple(confirmed_entries(det, d, segments, confirmed))
        if not entries:
            return Applied(d, "skipped", f"no region of {d.character!r} could be cut from {d.path}")
        return Applied(d, "applied", f"{len(entries)} confirmed region(s) to add", frames=len(entries), entries=entries)
    except MediaError as exc:
        return Applied(d, "skipped", f"{type(exc).__name__}: {exc}")


def apply_decisions(det: Detector, decisions: Iterable[Decision], *, records: list[dict[str, Any]] | None = None,
                    commit: Callable[[], None], confirmed: str | Path | None = None) -> list[Applied]:
    """Apply each decision to `det.store.data` (steps 1-4), then `commit()` it if the allow-list changed.

    The caller holds the index lock and opened `det.store` under it; `commit` writes the new
    generation (`index.store.write_index`). With `confirmed` (the index folder), infringing
    decisions' crops are saved there and returned as `Applied.entries`: the caller adds them with
    `detector.review.confirmed.add_confirmed` after releasing the lock.
    """
    folder = Path(confirmed) if confirmed is not None else None
    data = det.store.data
    allow, references = data.allow, data.references
    out: list[Applied] = []
    for d in decisions:
        a = _apply_one(det, d, records, folder)
        if a.status == "applied" and d.decision == "not_infringing":
            out = [_cancelled(p, a) for p in out]
        out.append(a)
    if data.allow is not allow or data.references is not references:  # allowed, revoked or reversed
        commit()
    return out


def _cancelled(earlier: Applied, later: Applied) -> Applied:
    """An earlier infringing decision of the same batch, input and character that `later` (an
    applied not_infringing one) reverses: its crops are deleted and nothing is added."""
    d, e = earlier.decision, later.decision
    if not earlier.entries or (d.sha256, d.character) != (e.sha256, e.character):
        return earlier
    for entry in earlier.entries:
        entry.path.unlink(missing_ok=True)
    return replace(earlier, status="recorded", entries=(),
                   message=f"reversed by the later decision {e.id} ({e.where}): no reference added")


def revoke_entries(index: str | Path, ids: Sequence[str], by: str) -> tuple[list[str], list[str]]:
    """Revoke allow-list entries by id, by hand (`mamori index allow revoke`, `DELETE /v1/admin/allow/{id}`),
    in one commit: (revoked now, revoked before and left as they were).

    Raises:
        AllowEntryNotFoundError: an id that names no entry (the index is left unchanged).
    """
    with index_lock(index):
        store = IndexStore.open(index)
        info = store.data.allow.info
        if unknown := [k for k in ids if k not in info]:
            raise AllowEntryNotFoundError(f"{index}: no allow-list entry {', '.join(map(repr, unknown))}; "
                                          "see `mamori index allow list`")
        done = revoke_allowed(store.data, set(ids), by=by, at=now())
        if done:
            write_index(index, store.data)
    return done, sorted(set(ids) - set(done))
