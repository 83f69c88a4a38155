"""`mamori rescan`: score videos already scanned against today's index, from a scan store.

Steps, per stored video (`rescan_entry`):
    1. its sampled frames' region vectors from the store's codes (`index.scancodec`): a new
       frame's unchanged regions are the previous new frame's, a repeated or known flat frame
       reuses an earlier frame's evidence, exactly as the scan had them; each frame's boxes follow
       from its size and the store's scales.
    2. approximate evidence per frame: `detector.match.evidence.frame_evidence` against the *whole*
       index (a character's normalised similarity subtracts its best other character: every
       character takes part; all of a video's regions in one search, `split_matrix`). The
       selected characters (`select_characters`: by default those with a reference the index did
       not hold when the video was scanned) are the ones the result reports; every character's
       hits stay in the frame until step 4, because one region explains one character.
    3. exact work where it can matter, with pixels instead of a model: a selected character's
       EXACT_FRAMES best frames among those a scan would verify it in (the frame's VERIFY_TOP
       strongest characters of the whole index at CANDIDATE_SCORE or above, approximate scores)
       are *candidates*. When the video file is still at its path with the same sha256 (and
       `verify` is on), only the candidate frames are decoded (the same sampling as the scan,
       seeking from keyframe to keyframe), the HASH_TOP regions with each candidate character's
       best approximate similarity are PDQ-hashed (the near-copy channel), and the frame is
       verified geometrically exactly as a scan does (SIFT + RANSAC against the references, in
       the box the stored vectors matched): the candidate characters and the frame's VERIFY_TOP
       others a scan verifies, so a character not rescored competes for a region with the score
       a scan would give it. The embedding evidence stays the
       stored vectors': no model is loaded or run (a rescan imports no PyTorch). Otherwise the
       result says why (`rescan.exact` false, `rescan.reason`): approximate embedding evidence
       only, no verification, no near-copy channel.
    4. each frame's regions assigned to one character each among *all* the index's characters
       (`detector.match.scoring.exclusive`, as a scan does: a region that explains a character the scan
       already reported is not evidence for a new one), then only the selected characters' hits
       are kept, and the video's result is computed as a scan computes it
       (`detector.match.scoring.aggregate`), marked `rescan`.

Why these constants and no re-embedding: product-quantised vectors move a region's cosine to a
reference by ~0.01-0.02 (mean, effnet-lite0, 128-byte codes; docs/rescan.md), about one
calibration sigma; a flag of a new character is decided by geometric verification (or a
near-copy hash), which needs the frame's pixels, not exact vectors. Measured on the dev set
(`scripts/bench_rescan.py`, 10 of 30 characters new): re-embedding each candidate's best 3
regions (the first design) and scoring the stored vectors found the same 12 of 12 fresh-scan
flags with the same false positive, and the model's load and forward passes were most of a
rescan's time (268 s -> 97 s for the 60 videos on a busy machine; with the scan's verification
rule and only candidate regions hashed, 21 s: docs/rescan.md). CANDIDATE_SCORE =
VERIFY_MIN_SCORE and the VERIFY_TOP rule: where a scan verifies.
EXACT_FRAMES = 2 x SUPPORT_FRAMES: a video's score is the mean of its SUPPORT_FRAMES best frames;
twice that leaves room for the approximate ranking to be wrong (on dev a pose clip's only verified
frames were its character's 3rd and 4th by approximate score).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import numpy as np

from detector.errors import MediaError
from detector.match.evidence import FrameEvidence, Matrix, frame_evidence, region_matrix, split_matrix
from detector.match.results import Result
from detector.match.scoring import SUPPORT_FRAMES, aggregate, exclusive
from detector.match.verify import VERIFY_MIN_SCORE, VERIFY_TOP, verify_frame
from detector.media.frames import Frame, MediaReader, frame_image
from detector.media.regions import GRID, Box, frame_regions
from detector.media.times import frame_distance
from index.errors import ScanStoreError
from index.images import DEFAULT_MAX_PIXELS
from index.nearcopy import PDQ_BYTES, region_hashes
from index.scancodec import KIND_NEW, KIND_REUSE, VideoRecord
from index.scanstore import ScanStore, StoreEntry
from index.store import IndexStore

__all__ = ["CANDIDATE_SCORE", "EXACT_FRAMES", "Rescanner", "Selection", "check_store", "rescan_entry",
           "select_characters"]

#: approximate frame score of a selected character that makes the frame a candidate (step 3)
CANDIDATE_SCORE = VERIFY_MIN_SCORE
#: candidate frames per selected character: its best ones by approximate score (module docstring:
#: twice the frames a video's score averages; 4 today). Checked on dev with effnet-lite0-imagenet
#: (`scripts/bench_rescan.py`, 10 of 30 characters new: 12 of 12 fresh-scan flags found), not tuned
EXACT_FRAMES = 2 * SUPPORT_FRAMES
#: regions of a candidate frame PDQ-hashed per candidate character: its best ones by approximate
#: similarity (a scan hashes every region; a near-copy of a reference is among a character's best).
#: Not tuned: the count of regions the first design re-embedded per candidate (commit 94369b6),
#: kept when hashing replaced re-embedding (commit 412f3f1); `scripts/bench_rescan.py` on dev with
#: effnet-lite0-imagenet found the same 12 of 12 flags with it (docs/rescan.md)
HASH_TOP = 3
#: frames whose regions are searched together (a (regions x characters) matrix per search: bounded
#: for long videos and large indexes). Not measured: chosen by hand (commit b02eb15) to bound memory
SEARCH_FRAMES = 64
#: seconds between two wanted frames below which decoding goes on instead of seeking. Not measured:
#: chosen by hand (commit 94369b6, issue 18; no measurement recorded): a seek lands on the keyframe
#: before the wanted frame and decodes from there, so a short gap gains nothing by seeking
SEEK_GAP = 2.0


class Rescanner:
    """What a rescan needs: the index, whether to verify, the decoding limit. No model: a rescan
    scores the stored vectors and verifies with the frames' pixels.

    Raises (`open`): index.IndexNotFoundError, index.IncompatibleIndexError.
    """

    def __init__(self, store: IndexStore, *, verify: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.store = store
        self.verify = verify
        self.max_pixels = max_pixels
        self.nearcopy = store.has_pdq
        self.warnings: list[str] = []

    @classmethod
    def open(cls, index: str | Path, *, verify: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> Rescanner:
        return cls(IndexStore.open(index), verify=verify, max_pixels=max_pixels)


def check_store(det: Rescanner, store: ScanStore) -> None:
    """Refuse a store whose vectors this rescan cannot read: another backbone than the index's, or
    regions laid out on another grid than `detector.media.regions` cuts today (ScanStoreError)."""
    store.check_backbone(det.store.backbone, f"index {det.store.path}")
    store.check_grid(store.scales, GRID, "this version of mamori")


@dataclass(frozen=True)
class Selection:
    """Which characters a rescan reports: `names` (None: per video, the characters with a
    reference that the index generation the video was scanned with did not hold; remembered per
    generation, since millions of videos share a few)."""

    names: frozenset[str] | None
    _known: dict[tuple[int, str, str], frozenset[str]] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def for_entry(self, det: Rescanner, store: ScanStore, entry: StoreEntry) -> frozenset[str]:
        if self.names is not None:
            return self.names
        key = (id(det.store), str(store.path), entry.generation)
        with self._lock:
            if key not in self._known:
                self._known[key] = new_characters(det, store, entry.generation)
            return self._known[key]


def new_characters(det: Rescanner, store: ScanStore, generation: str) -> frozenset[str]:
    """Characters with an active reference that index generation `generation` did not hold."""
    known = store.generation_refs(generation)
    if known is None:
        raise ScanStoreError(f"{store.path}: index generation {generation!r} was never recorded in this store")
    return frozenset(r.character for r in det.store.references.values() if r.id not in known and not r.quarantine)


def select_characters(det: Rescanner, store: ScanStore, *, characters: Sequence[str] = (), since: str | None = None,
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


def _restrict(ev: FrameEvidence, chars: AbstractSet[str]) -> FrameEvidence:
    return replace(ev, hits={c: h for c, h in ev.hits.items() if c in chars},
                   suppressed={c: d for c, d in ev.suppressed.items() if c in chars})


def _verifiable(det: Rescanner, ev: FrameEvidence) -> dict[str, float]:
    """The characters a scan would verify in this frame (approximate scores): the frame's
    VERIFY_TOP strongest characters of the whole index, at CANDIDATE_SCORE or above, with
    features to match (`detector.match.verify.verify_frame`'s rule); character -> score."""
    ranked = sorted(((c, h.score) for c, h in ev.hits.items()
                     if h.score >= CANDIDATE_SCORE and det.store.local_features(c)), key=lambda cs: (-cs[1], cs[0]))
    return dict(ranked[:VERIFY_TOP])


def _candidates(verifiable: dict[int, dict[str, float]]) -> dict[int, frozenset[str]]:
    """Step 3's frames: per selected character, its EXACT_FRAMES best frames among those a scan
    would verify it in; frame -> the characters it is a candidate for."""
    per_char: dict[str, list[tuple[float, int]]] = {}
    for f, scores in verifiable.items():
        for c, score in scores.items():
            per_char.setdefault(c, []).append((score, f))
    out: dict[int, set[str]] = {}
    for c, scored in per_char.items():
        for _, f in sorted(scored, reverse=True)[:EXACT_FRAMES]:
            out.setdefault(f, set()).add(c)
    return {f: frozenset(cs) for f, cs in sorted(out.items())}


def _hashed_regions(matrix: Matrix, chars: frozenset[str]) -> list[int]:
    """The HASH_TOP regions with the best approximate normalised similarity to each of `chars`."""
    names, _, _, norm = matrix
    picked: set[int] = set()
    for j, c in enumerate(names):
        if c in chars:
            col = norm[:, j]
            picked.update(int(r) for r in np.argsort(-col)[:HASH_TOP] if np.isfinite(col[r]))
    return sorted(picked)


def _exact(det: Rescanner, frame: Frame, vectors: np.ndarray, boxes: list[Box], matrix: Matrix,
           wanted: frozenset[str]) -> FrameEvidence:
    """Step 3 for one decoded candidate frame, for the characters it is a candidate for
    (`wanted`): their best regions PDQ-hashed (the near-copy channel), the evidence of the stored
    vectors with those hashes, and those characters and the others a scan verifies in this frame
    verified geometrically as a scan does (every character's hits are kept: step 4)."""
    hashes = None
    ids = _hashed_regions(matrix, wanted) if det.nearcopy else []
    if ids:
        h, q = region_hashes(frame.image, [boxes[i] for i in ids])
        hashes = (np.zeros((len(boxes), PDQ_BYTES), np.uint8), np.zeros(len(boxes), np.int32))
        hashes[0][ids], hashes[1][ids] = h, q
    ev = frame_evidence(det.store, frame.time, vectors, boxes, hashes, matrix=matrix)
    checked = verify_frame(det.store, frame.image, _restrict(ev, wanted))
    others = verify_frame(det.store, frame.image, _restrict(ev, set(_verifiable(det, ev)) - wanted))
    return replace(ev, hits={**ev.hits, **others.hits, **checked.hits})


def _decoded(det: Rescanner, entry: StoreEntry, rec: VideoRecord, wanted: set[int]) -> Iterator[Frame]:
    """The sampled frames `wanted` of the stored video, as the scan sampled them: a video whose
    first frames have good timestamps is seeked to the keyframe before each wanted frame (decoding
    forward when the next one is within SEEK_GAP seconds), so a long video costs a few GOPs; a
    still image or a stream whose timestamps the scan had to count is read through `MediaReader`
    again, sequentially."""
    reader = MediaReader(entry.path, fps=entry.fps, max_frames=entry.max_frames, max_pixels=det.max_pixels)
    if reader.kind != "image":
        container = reader.open_container()
        try:
            if _seekable(container):
                yield from _seeked(container, rec, wanted)
                return
        except (av.FFmpegError, ValueError, MemoryError) as exc:
            raise ScanStoreError(f"decoding failed ({type(exc).__name__}: {exc})") from exc
        finally:
            container.close()
    last = max(wanted)
    for fr in reader:
        if fr.index in wanted:
            _check_frame(fr, rec)
            yield fr
        if fr.index >= last:
            return


def _seeked(container: av.container.InputContainer, rec: VideoRecord, wanted: set[int]) -> Iterator[Frame]:
    stream = container.streams.video[0]
    tb = stream.time_base
    assert tb is not None  # (`_seekable`)
    start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
    frames = container.decode(stream)
    at = np.inf  # seek before the first wanted frame: `_seekable` has decoded a few already
    for k in sorted(wanted):
        t = float(rec.times[k])
        if not at <= t < at + SEEK_GAP:
            container.seek(int((t + start) / tb), stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
        frame = None
        for frame in frames:  # (times clamped at 0, as the scan's clock does: `detector.media.frames`)
            at = max(0.0, float(frame.time) - start) if frame.time is not None else at
            if frame_distance(at, t, math.inf) == 0.0:  # (the stored time is float32)
                break
        if frame is None:
            raise ScanStoreError(f"the video ends before sampled frame {k} ({t:.3f}s)")
        img = frame_image(frame)
        out = Frame(k, at, img, frame.width / img.width)
        _check_frame(out, rec)
        yield out


def _seekable(container: av.container.InputContainer) -> bool:
    """Whether the video's timestamps are present and increasing at its start (the scan's clock
    then used them); anything else is read sequentially, as the scan read it."""
    stream = container.streams.video[0]
    if not stream.time_base:
        return False
    times = []
    try:
        for frame in container.decode(stream):
            times.append(frame.time)
            if len(times) >= 3:
                break
    except (av.FFmpegError, ValueError):
        return False
    return all(t is not None for t in times) and all(b > a for a, b in itertools.pairwise(times))


def _check_frame(fr: Frame, rec: VideoRecord) -> None:
    """The decoded frame is the one the scan sampled: same time (`frame_distance`: the store keeps
    float32 times) and size (the stored regions' boxes follow from the size)."""
    k, stored = fr.index, float(rec.times[fr.index])
    if frame_distance(fr.time, stored) > 0.0:
        raise ScanStoreError(f"sampled frame {k} decoded at {fr.time:.3f}s, stored at {stored:.3f}s")
    if fr.image.size != (int(rec.sizes[k, 0]), int(rec.sizes[k, 1])):
        raise ScanStoreError(f"sampled frame {k} decoded at {fr.image.width}x{fr.image.height}, stored at "
                             f"{int(rec.sizes[k, 0])}x{int(rec.sizes[k, 1])} (another decoder build?)")


def _pixels_reason(det: Rescanner, entry: StoreEntry) -> str | None:
    """None when the stored video can be decoded for step 3, else why not."""
    from detector.media.files import hash_file

    if not det.verify:
        return "verification is off (--no-verify)"
    try:
        sha, _ = hash_file(entry.path)
    except (OSError, MediaError) as exc:
        return f"the video is not readable at its path ({type(exc).__name__}: {exc})"
    return None if sha == entry.sha256 else "the file at the video's path has changed since it was scanned"


def rescan_entry(det: Rescanner, store: ScanStore, entry: StoreEntry, selection: Selection) -> Result:
    """One stored video's result against `det`'s index (the module docstring's steps)."""
    rec = store.read(entry)
    chars = selection.for_entry(det, store, entry)
    frames = list(_vectors(store, rec))
    parts: list[Matrix] = []
    for at in range(0, len(frames), SEARCH_FRAMES):  # one search per SEARCH_FRAMES frames
        chunk = frames[at:at + SEARCH_FRAMES]
        parts += split_matrix(region_matrix(det.store, np.concatenate([v for _, v, _ in chunk])),
                              [len(v) for _, v, _ in chunk])
    own: dict[int, FrameEvidence] = {}
    approx: dict[int, tuple[np.ndarray, list[Box], Matrix]] = {}
    verifiable: dict[int, dict[str, float]] = {}
    for (f, vecs, boxes), part in zip(frames, parts, strict=True):
        ev = frame_evidence(det.store, float(rec.times[f]), vecs, boxes, matrix=part)
        own[f] = ev
        verifiable[f] = {c: s for c, s in _verifiable(det, ev).items() if c in chars}
        approx[f] = (vecs, boxes, part)
    wanted = _candidates(verifiable)
    reason = _pixels_reason(det, entry) if wanted else None
    exact = 0
    if wanted and reason is None:
        try:
            decoded = {fr.index: _exact(det, fr, *approx[fr.index], wanted[fr.index])
                       for fr in _decoded(det, entry, rec, set(wanted))}
            if len(decoded) < len(wanted):
                raise ScanStoreError(f"the video ends before sampled frame {max(set(wanted) - set(decoded))}")
            own.update(decoded)
            exact = len(decoded)
        except (MediaError, ScanStoreError) as exc:
            reason = f"the video could not be decoded again ({exc})"
    evidence = []
    for f in range(rec.frames):
        src = int(rec.sources[f]) if rec.kinds[f] == KIND_REUSE else f
        ev = _restrict(exclusive(own[src]), chars)  # step 4
        evidence.append(replace(ev, time=float(rec.times[f])).scaled(float(rec.scales[f])))
    result = aggregate(det.store, entry.path, evidence, kind=entry.kind, duration=entry.duration,
                       warnings=det.warnings)
    info = {"store": str(store.path), "scanned_at": entry.scanned_at, "scanned_generation": entry.generation,
            "characters": sorted(chars), "candidate_frames": len(wanted), "exact_frames": exact,
            "exact": reason is None, "reason": reason}
    return replace(result, sha256=entry.sha256, rescan=info)
