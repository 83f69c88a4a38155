"""`mamori rescan`: score videos already scanned against today's index, from a scan store.

Steps, per stored video (`rescan_entry`):
    1. its sampled frames' region vectors from the store's codes (`index.scancodec`): a new
       frame's unchanged regions are the previous new frame's, a repeated or known flat frame
       reuses an earlier frame's evidence, exactly as the scan had them; each frame's boxes follow
       from its size and the store's scales.
    2. approximate evidence per frame: `detector.evidence.frame_evidence` against the *whole*
       index (a character's normalised similarity subtracts its best other character: every
       character takes part), then only the selected characters are kept (`select_characters`:
       by default those with a reference the index did not hold when the video was scanned).
    3. exact evidence where it can matter: a selected character's EXACT_FRAMES best frames that
       score at least CANDIDATE_SCORE on the approximate vectors are *candidates*. When the video file is still
       at its path with the same sha256 (and `verify` is on), only the candidate frames are
       decoded (the same sampling as the scan; the others are skipped after decoding, never
       converted), the RESCORE_TOP regions that held each selected character's best approximate
       similarity are embedded again exactly (and PDQ-hashed: the near-copy channel), their
       evidence recomputed (the regions of all candidate frames in one forward pass), and the frame
       verified geometrically, as a scan does. Otherwise the
       result says why (`rescan.exact` false, `rescan.reason`): approximate embedding evidence
       only, no verification, no near-copy channel.
    4. the video's result, as a scan computes it (`detector.scoring.aggregate`), marked `rescan`.

Why these constants: product-quantised vectors move a region's cosine to a reference by ~0.02
(mean, effnet-lite0, 64-byte codes; docs/rescan.md), about one calibration sigma, so approximate
scores only choose what to look at again. CANDIDATE_SCORE = VERIFY_MIN_SCORE: the level at which
a scan verifies a frame; EXACT_FRAMES = 2 x SUPPORT_FRAMES; RESCORE_TOP = 3. None of the three
is tuned yet: `scripts/bench_rescan.py` measured 4.5x faster than a fresh scan with 6 of 6 flags
on generated clips (2 of 6 characters new) but 1.3x and 12 of 15 on the dev set (10 of 30 new:
59 of 60 videos had candidates), docs/rescan.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import av
import numpy as np
import torch

from detector.errors import MediaError
from detector.evidence import TOP_K, FrameEvidence, frame_evidence
from detector.frames import Frame, MediaReader, _frame_image
from detector.regions import Box, frame_regions
from detector.results import Result
from detector.scoring import aggregate
from detector.verify import VERIFY_MIN_SCORE, verify_frame
from index.errors import ScanStoreError
from index.nearcopy import PDQ_BYTES, region_hashes
from index.scancodec import KIND_NEW, KIND_REUSE, VideoRecord
from index.scanstore import ScanStore, StoreEntry

if TYPE_CHECKING:
    from detector.api import Detector

__all__ = ["CANDIDATE_SCORE", "EXACT_FRAMES", "RESCORE_TOP", "Selection", "rescan_entry", "select_characters"]

#: approximate frame score of a selected character that makes the frame a candidate (step 3)
CANDIDATE_SCORE = VERIFY_MIN_SCORE
#: regions re-embedded per selected character in a candidate frame
RESCORE_TOP = 3
#: candidate frames per selected character: its best ones by approximate score (a video's score
#: is the mean of its SUPPORT_FRAMES = 2 best frames; twice that leaves room for the approximate
#: ranking to be wrong)
EXACT_FRAMES = 4
#: seconds between two wanted frames below which decoding goes on instead of seeking
SEEK_GAP = 2.0


@dataclass(frozen=True)
class Selection:
    """Which characters a rescan reports: `names` (None: per video, the characters with a
    reference that the index generation the video was scanned with did not hold)."""

    names: frozenset[str] | None

    def for_entry(self, det: Detector, store: ScanStore, entry: StoreEntry) -> frozenset[str]:
        if self.names is not None:
            return self.names
        return new_characters(det, store, entry.generation)


def new_characters(det: Detector, store: ScanStore, generation: str) -> frozenset[str]:
    """Characters with an active reference that index generation `generation` did not hold."""
    known = store.generation_refs(generation)
    if known is None:
        raise ScanStoreError(f"{store.path}: index generation {generation!r} was never recorded in this store")
    return frozenset(r.character for r in det.store.references.values() if r.id not in known and not r.quarantine)


def select_characters(det: Detector, store: ScanStore, *, characters: Sequence[str] = (), since: str | None = None,
                      every: bool = False) -> Selection:
    """`--characters`, `--since GENERATION`, `--all`, or (none given) what is new per video.

    Raises:
        ScanStoreError: an unknown character or a generation the store never saw.
    """
    if every:
        return Selection(frozenset(det.store.characters))
    if characters:
        unknown = sorted(set(characters) - set(det.store.characters))
        if unknown:
            raise ScanStoreError(f"not in the index: {', '.join(unknown)} (see `mamori index info`)")
        return Selection(frozenset(characters))
    if since is not None:
        return Selection(new_characters(det, store, since))
    return Selection(None)


def _vectors(store: ScanStore, rec: VideoRecord) -> Iterator[tuple[int, np.ndarray, list[Box]]]:
    """(frame, its (R, D) vectors, its boxes) of every frame with regions of its own (step 1)."""
    decoded = store.codec.decode(rec.codes)
    starts = np.concatenate([[0], np.cumsum(rec.counts)])
    carried: np.ndarray | None = None
    for f in range(rec.frames):
        if rec.kinds[f] == KIND_REUSE:
            continue
        boxes = frame_regions(int(rec.sizes[f, 0]), int(rec.sizes[f, 1]), store.scales)
        ids = rec.region_id[starts[f]:starts[f + 1]].astype(np.int64)
        if rec.kinds[f] == KIND_NEW and carried is not None and len(carried) == len(boxes):
            vectors = carried.copy()
        else:
            vectors = np.zeros((len(boxes), store.codec.dim), np.float32)
        vectors[ids] = decoded[starts[f]:starts[f + 1]]
        if rec.kinds[f] == KIND_NEW:
            carried = vectors
        yield f, vectors, boxes


def _restrict(ev: FrameEvidence, chars: frozenset[str]) -> FrameEvidence:
    return replace(ev, hits={c: h for c, h in ev.hits.items() if c in chars},
                   suppressed={c: d for c, d in ev.suppressed.items() if c in chars})


def _candidates(own: dict[int, FrameEvidence]) -> dict[int, frozenset[str]]:
    """Step 3's frames: per selected character, its EXACT_FRAMES best frames at CANDIDATE_SCORE
    or above (approximate scores); frame -> the characters it is a candidate for."""
    per_char: dict[str, list[tuple[float, int]]] = {}
    for f, ev in own.items():
        for c, h in ev.hits.items():
            if h.score >= CANDIDATE_SCORE:
                per_char.setdefault(c, []).append((h.score, f))
    out: dict[int, set[str]] = {}
    for c, scored in per_char.items():
        for _, f in sorted(scored, reverse=True)[:EXACT_FRAMES]:
            out.setdefault(f, set()).add(c)
    return {f: frozenset(cs) for f, cs in sorted(out.items())}


def _rescore_regions(det: Detector, vectors: np.ndarray, chars: frozenset[str]) -> np.ndarray:
    """Indices of the RESCORE_TOP regions with the best approximate similarity to each character."""
    sims, refs = det.store.search(vectors, TOP_K)
    best = {c: np.full(len(vectors), -np.inf, np.float32) for c in chars}
    for r, (row_s, row_r) in enumerate(zip(sims, refs, strict=True)):
        for s, ref in zip(row_s, row_r, strict=True):
            if ref.character in best and s > best[ref.character][r]:
                best[ref.character][r] = s
    picked = {int(i) for b in best.values() for i in np.argsort(-b)[:RESCORE_TOP] if np.isfinite(b[i])}
    return np.array(sorted(picked), np.int64)


def _exact(det: Detector, frames: list[tuple[Frame, np.ndarray, list[Box], np.ndarray]],
           chars: frozenset[str]) -> dict[int, FrameEvidence]:
    """Step 3 for the decoded candidate frames: (frame, its approximate vectors, boxes, regions to
    re-embed). The regions of all frames go through the model in one batch."""
    cut = [det.embedder.prepare_regions(fr.image, ids.tolist()) for fr, _, _, ids in frames]
    for (_, _, boxes, _), (_, cut_boxes) in zip(frames, cut, strict=True):
        if cut_boxes != boxes:
            raise ScanStoreError("the decoded frame's regions differ from the stored ones")
    pixels = [p for p, _ in cut]
    fresh = det.embed_pixels(torch.cat(pixels)) if pixels else np.zeros((0, det.backbone.dim), np.float32)
    out, at = {}, 0
    for fr, approx, boxes, ids in frames:
        vectors = approx.copy()
        vectors[ids] = fresh[at:at + len(ids)]
        at += len(ids)
        hashes = None
        if det.nearcopy and len(ids):
            h, q = region_hashes(fr.image, [boxes[i] for i in ids])
            hashes = (np.zeros((len(boxes), PDQ_BYTES), np.uint8), np.zeros(len(boxes), np.int32))
            hashes[0][ids], hashes[1][ids] = h, q
        ev = _restrict(frame_evidence(det.store, fr.time, vectors, boxes, hashes), chars)
        out[fr.index] = verify_frame(det.store, fr.image, ev)
    return out


def _decoded(det: Detector, entry: StoreEntry, rec: VideoRecord, wanted: set[int]) -> Iterator[Frame]:
    """The sampled frames `wanted` of the stored video, as the scan sampled them: a still image
    or a stream whose timestamps the scan had to count is read through `MediaReader` again; a
    video with good timestamps is seeked to the keyframe before each wanted frame (decoding
    forward when the next one is within SEEK_GAP seconds), so a long video costs a few GOPs."""
    reader = MediaReader(entry.path, fps=entry.fps, max_frames=entry.max_frames, max_pixels=det.max_pixels)
    if reader.kind == "image" or not _seekable(reader):
        last = max(wanted)
        for fr in reader:
            if fr.index in wanted:
                _check_time(fr.index, fr.time, rec)
                yield fr
            if fr.index >= last:
                return
        return
    container = reader._open()
    try:
        stream = container.streams.video[0]
        tb = stream.time_base
        assert tb is not None  # (`_seekable`)
        start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        frames = container.decode(stream)
        at = -1.0
        for k in sorted(wanted):
            t = float(rec.times[k])
            if not at <= t < at + SEEK_GAP:
                container.seek(int((t + start) / tb), stream=stream, backward=True, any_frame=False)
                frames = container.decode(stream)
            frame = None
            for frame in frames:
                at = float(frame.time) - start if frame.time is not None else at
                if at >= t - 1e-6:
                    break
            if frame is None:
                raise ScanStoreError(f"the video ends before sampled frame {k} ({t:.3f}s)")
            _check_time(k, at, rec)
            img = _frame_image(frame)
            yield Frame(k, at, img, frame.width / img.width)
    except (av.FFmpegError, ValueError, MemoryError) as exc:
        raise ScanStoreError(f"decoding failed ({type(exc).__name__}: {exc})") from exc
    finally:
        container.close()


def _seekable(reader: MediaReader) -> bool:
    """Whether the video's timestamps are present and increasing at its start (the scan's clock
    then used them); anything else is read sequentially, as the scan read it."""
    container = reader._open()
    try:
        stream = container.streams.video[0]
        if not stream.time_base:
            return False
        times = []
        for frame in container.decode(stream):
            times.append(frame.time)
            if len(times) >= 3:
                break
        return all(t is not None for t in times) and all(b > a for a, b in itertools.pairwise(times))
    except (av.FFmpegError, ValueError):
        return False
    finally:
        container.close()


def _check_time(k: int, t: float, rec: VideoRecord) -> None:
    if abs(t - float(rec.times[k])) > 1e-3:
        raise ScanStoreError(f"sampled frame {k} decoded at {t:.3f}s, stored at {rec.times[k]:.3f}s")


def _pixels_reason(det: Detector, entry: StoreEntry) -> str | None:
    """None when the stored video can be decoded for step 3, else why not."""
    from detector.batch import hash_file

    if not det.verify:
        return "verification is off (--no-verify)"
    try:
        sha, _ = hash_file(entry.path)
    except (OSError, MediaError) as exc:
        return f"the video is not readable at its path ({type(exc).__name__}: {exc})"
    return None if sha == entry.sha256 else "the file at the video's path has changed since it was scanned"


def rescan_entry(det: Detector, store: ScanStore, entry: StoreEntry, selection: Selection) -> Result:
    """One stored video's result against `det`'s index (the module docstring's steps)."""
    rec = store.read(entry)
    chars = selection.for_entry(det, store, entry)
    own: dict[int, FrameEvidence] = {}
    approx: dict[int, tuple[np.ndarray, list[Box]]] = {}
    for f, vecs, boxes in _vectors(store, rec):
        own[f] = _restrict(frame_evidence(det.store, float(rec.times[f]), vecs, boxes), chars)
        approx[f] = (vecs, boxes)
    wanted = _candidates(own)
    reason = _pixels_reason(det, entry) if wanted else None
    exact = 0
    if wanted and reason is None:
        try:
            decoded = [(fr, *approx[fr.index], _rescore_regions(det, approx[fr.index][0], wanted[fr.index]))
                       for fr in _decoded(det, entry, rec, set(wanted))]
            own.update(_exact(det, decoded, chars))
            exact = len(decoded)
        except (MediaError, ScanStoreError) as exc:
            reason = f"the video could not be decoded again ({exc})"
    evidence = []
    for f in range(rec.frames):
        src = int(rec.sources[f]) if rec.kinds[f] == KIND_REUSE else f
        evidence.append(replace(own[src], time=float(rec.times[f])).scaled(float(rec.scales[f])))
    result = aggregate(det.store, entry.path, evidence, kind=entry.kind, duration=entry.duration,
                       warnings=det.warnings)
    info = {"store": str(store.path), "scanned_at": entry.scanned_at, "scanned_generation": entry.generation,
            "characters": sorted(chars), "candidate_frames": len(wanted), "exact_frames": exact,
            "exact": reason is None, "reason": reason}
    return replace(result, sha256=entry.sha256, rescan=info)
