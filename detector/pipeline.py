"""The scan pipeline for one input: sampled frames → prepared region batches → evidence.

Steps (1-3 run in a background thread, so decoding and cropping overlap the model):
    1. frames come from `MediaReader` (converted at reduced size; unsampled frames never converted)
    2. `prepare`: each frame gets a tiny signature (64x64 RGB thumbnail). A *blank* frame (one
       flat colour: in each channel, every thumbnail value within BLANK_RANGE levels) is embedded
       once per (size, colour rounded to BLANK_STEP levels) and later ones with the same key reuse
       that evidence (at most BLANK_KEYS keys are remembered per input); a frame that repeats the
       last embedded one (mean absolute thumbnail difference <= REPEAT_MEAN and largest <=
       REPEAT_MAX grey levels) reuses its evidence; any other frame has its regions cropped and
       resized in one batch (and PDQ-hashed for the near-copy channel)
    3. *unchanged regions*: within a new frame, each region (as resized for the model) gets its own
       32x32 signature; a region whose signature passes the same repeat test against the last
       *embedded* version of that region (same frame size, so the same box) keeps that version's
       vector and PDQ hash, and only the changed regions go to the model (`PreparedFrame.fresh`).
       A static camera with a moving character re-embeds only the windows the character touches.
    4. the caller's thread runs the model on the fresh regions, merges in the kept vectors
       (`RegionCache`) and searches the index for every region; `EvidenceReuse` hands repeats and
       known flat frames the evidence step 2 decided they reuse (the one place that follows it)
Why these skips are safe: a repeat differs from the frame whose evidence it reuses by less than
video compression noise (a static shot, a held title card), and so does a flat frame from the flat
frame of the same key, and a kept region from the pixels its vector was computed on (compared with
the embedded version, not the previous frame, so slow changes cannot accumulate unseen). A region's
signature cell is 1/32 of its side: for a 16:9 frame, 1/71 of the frame's height for the smallest
windows, 1/32 of its width for the whole frame (the frame-level test's cells: 1/64 of each). Blank
frames keep their (weak) evidence rather than none, because a video's score averages a character's
best frames (`detector.match.scoring`): dropping them would change the score of a clip with a single
strong frame.
`tests/detector/test_pipeline.py` checks that results match a scan without skips.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import torch
from PIL import Image

from detector.embed.embedding import RegionEmbedder
from detector.match.evidence import FrameEvidence
from detector.match.results import Result
from detector.media.frames import Frame
from detector.media.regions import Box
from index.nearcopy import region_hashes

__all__ = ["BLANK_KEYS", "BLANK_RANGE", "BLANK_STEP", "REPEAT_MAX", "REPEAT_MEAN", "EvidenceReuse", "FrameObserver",
           "PreparedFrame", "RegionCache", "prefetch", "prepare_frames", "region_signatures", "signature"]

#: The skip tests' thresholds (grey levels of the thumbnails; module docstring). None measured as
#: values: chosen by hand (commit 57006d0, issue 6) to sit within video compression noise;
#: tests/detector/test_pipeline.py checks that results equal a scan without skips, and on dev
#: (effnet-lite0-imagenet) the verdicts and metrics were unchanged (docs/measurements.md). Pixel
#: levels, not backbone-dependent.
BLANK_RANGE = 6
BLANK_STEP = 4
#: a memory bound (flat colours remembered per input), not tuned
BLANK_KEYS = 32
REPEAT_MEAN = 1.0
REPEAT_MAX = 12
_THUMB = 64
_REGION_THUMB = 32

T = TypeVar("T")


@dataclass(frozen=True)
class PreparedFrame:
    """A sampled frame ready for the model. `kind`: "new" (pixels set), "repeat" (reuse the last
    new frame's evidence) or "blank" (a flat frame, `key` set: pixels are set the first time a key
    is seen, and when the key could not be remembered; otherwise reuse that key's evidence).

    `fresh` (new frames only): None when every region is in `pixels`; otherwise a bool mask over
    `boxes`, `pixels` holds only the True regions (in order), and the others keep the vectors of
    the last new frame (`RegionCache.vectors_for`). `hashes` always covers every region.
    `remember` (blank frames with pixels): later frames of this key will reuse its evidence.
    `sigs` (new frames of `prepare_frames(..., all_regions=True)`): every region's signature, for
    the model thread's own unchanged-region test (`detector.shortlist`)."""

    frame: Frame
    kind: str
    boxes: list[Box]
    pixels: torch.Tensor | None = None
    hashes: tuple[np.ndarray, np.ndarray] | None = None
    key: tuple[int, ...] | None = None
    fresh: np.ndarray | None = None
    remember: bool = False
    sigs: np.ndarray | None = None


class FrameObserver(Protocol):
    """Sees every sampled frame of one input as `Detector` scores it, once per frame, in order,
    then the input's result (`detector.recording.FrameRecorder` keeps the region vectors for a
    scan store). Scoring does not depend on what an observer does with them.

    Why every region: an observer is handed the vectors of every region of a frame with pixels, so
    a detector given one embeds every region (its shortlist is off, `detector.shortlist`).
    """

    def embedded(self, p: PreparedFrame, vectors: np.ndarray) -> None:
        """A frame with pixels: `vectors` are all its regions' (R, D) vectors."""

    def reused(self, p: PreparedFrame) -> None:
        """A repeat or a known flat frame (no pixels): it reuses an earlier frame's evidence."""

    def finished(self, result: Result) -> None:
        """The input's `Result`, once scoring ended without raising."""


def signature(img: Image.Image) -> np.ndarray:
    """A 64x64 RGB thumbnail as int16, for the blank and repeat tests."""
    return np.asarray(img.convert("RGB").resize((_THUMB, _THUMB), Image.Resampling.BOX), dtype=np.int16)


def region_signatures(pixels: torch.Tensor) -> np.ndarray:
    """Per region of a uint8 (R, 3, S, S) batch, its 32x32 RGB mean-pooled thumbnail: (R, 3072) int16."""
    pooled = torch.nn.functional.adaptive_avg_pool2d(pixels.float(), _REGION_THUMB)
    return pooled.round_().reshape(len(pixels), -1).numpy().astype(np.int16)


def changed(sig: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The repeat test, per row: True where `sig` differs from `ref` by more than compression noise."""
    diff = np.abs(sig - ref)
    out: np.ndarray = (diff.mean(axis=-1) > REPEAT_MEAN) | (diff.max(axis=-1) > REPEAT_MAX)
    return out


class RegionCache:
    """The model thread's half of step 3: the vectors of the last new frame, per region."""

    def __init__(self, embed: Callable[[torch.Tensor], np.ndarray], dim: int) -> None:
        self.embed = embed
        self.dim = dim
        self.vectors: np.ndarray | None = None

    def vectors_for(self, p: PreparedFrame) -> np.ndarray:
        """(R, D) vectors of every region of `p` (pixels set): its fresh regions embedded, the
        others kept from the last new frame. Blank frames neither use nor change what is kept."""
        assert p.pixels is not None
        fresh = self.embed(p.pixels) if len(p.pixels) else np.zeros((0, self.dim), np.float32)
        if p.kind != "new":
            return fresh
        if p.fresh is None:
            vectors = fresh
        else:
            assert self.vectors is not None and len(self.vectors) == len(p.fresh)
            vectors = self.vectors.copy()
            vectors[p.fresh] = fresh
        self.vectors = vectors
        return vectors


class EvidenceReuse:
    """The model thread's half of step 2: evidence of the last new frame and of each remembered
    flat frame's key, handed to the frames `prepare_frames` marked as reusing it."""

    def __init__(self) -> None:
        self.last: FrameEvidence | None = None
        self.blanks: dict[tuple[int, ...], FrameEvidence] = {}

    def evidence_for(self, p: PreparedFrame, compute: Callable[[PreparedFrame], FrameEvidence]) -> FrameEvidence:
        """`compute(p)` for a frame with pixels (kept for reuse as step 2 says), else the reused
        evidence at this frame's time."""
        if p.pixels is not None:
            ev = compute(p)
            if p.kind == "new":
                self.last = ev
            elif p.remember:
                assert p.key is not None
                self.blanks[p.key] = ev
            return ev
        source = self.last if p.kind == "repeat" else self.blanks[p.key] if p.key is not None else None
        assert source is not None, f"{p.kind} frame with nothing to reuse"
        return FrameEvidence(p.frame.time, source.hits, source.suppressed)


def prepare_frames(frames: Iterator[Frame], embedder: RegionEmbedder, *, nearcopy: bool,
                   skip: bool = True, all_regions: bool = False) -> Iterator[PreparedFrame]:
    """Steps 2-3 of the module docstring for each frame; `skip=False` embeds every region of every
    frame; `all_regions`: a new frame carries every region's pixels and signature (`sigs`) instead
    of a `fresh` mask (the shortlist, `detector.shortlist`, chooses what is embedded)."""
    last: np.ndarray | None = None
    blanks: set[tuple[int, ...]] = set()
    # step 3: the last embedded version of each region of the last new frame
    kept_boxes: list[Box] | None = None
    kept_sigs = np.zeros((0, 0), np.int16)
    kept_hashes: tuple[np.ndarray, np.ndarray] | None = None

    def embedded(fr: Frame, kind: str, key: tuple[int, ...] | None = None, remember: bool = False) -> PreparedFrame:
        pixels, boxes = embedder.prepare_frame(fr.image)
        hashes = region_hashes(fr.image, boxes) if nearcopy else None
        return PreparedFrame(fr, kind, boxes, pixels, hashes, key, remember=remember)

    def new(fr: Frame) -> PreparedFrame:
        nonlocal kept_boxes, kept_sigs, kept_hashes
        if not skip:
            return embedded(fr, "new")
        pixels, boxes = embedder.prepare_frame(fr.image)
        sigs = region_signatures(pixels)
        if boxes != kept_boxes:
            kept_boxes, kept_sigs = boxes, sigs.copy()  # (the frame keeps `sigs`)
            kept_hashes = region_hashes(fr.image, boxes) if nearcopy else None
            return PreparedFrame(fr, "new", boxes, pixels, kept_hashes, sigs=sigs if all_regions else None)
        fresh = changed(sigs, kept_sigs)
        kept_sigs[fresh] = sigs[fresh]
        if kept_hashes is not None and fresh.any():  # copied: earlier frames hold the old arrays
            idx = np.flatnonzero(fresh)
            hashes, quality = region_hashes(fr.image, [boxes[i] for i in idx])
            kept_hashes = (kept_hashes[0].copy(), kept_hashes[1].copy())
            kept_hashes[0][idx], kept_hashes[1][idx] = hashes, quality
        if all_regions:
            return PreparedFrame(fr, "new", boxes, pixels, kept_hashes, sigs=sigs)
        return PreparedFrame(fr, "new", boxes, pixels[torch.from_numpy(fresh)], kept_hashes, fresh=fresh)

    for fr in frames:
        if skip:
            sig = signature(fr.image)
            flat = sig.reshape(-1, 3)
            if int(np.ptp(flat, axis=0).max()) <= BLANK_RANGE:
                key = (*fr.image.size, *(int(c) // BLANK_STEP for c in flat.mean(axis=0).round()))
                if key in blanks:
                    yield PreparedFrame(fr, "blank", [], key=key)
                    continue
                remember = len(blanks) < BLANK_KEYS
                if remember:
                    blanks.add(key)
                yield embedded(fr, "blank", key, remember)
                continue
            if last is not None:
                diff = np.abs(sig - last)
                if diff.mean() <= REPEAT_MEAN and diff.max() <= REPEAT_MAX:
                    yield PreparedFrame(fr, "repeat", [])
                    continue
            last = sig
        yield new(fr)


class _Done:
    pass


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(make: Callable[[], Iterator[T]], depth: int = 2) -> Generator[T, None, None]:
    """Run the iterator `make()` in a background thread, at most `depth` items ahead.

    Exceptions raised by the iterator are re-raised here, in order; closing this generator early
    (the consumer failed or stopped) stops the producer at its next item and joins it.
    """
    q: queue.Queue[T | _Done | _Failed] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: T | _Done | _Failed) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        items = make()
        try:
            for item in items:
                if not put(item):
                    return
            put(_Done())
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer, which re-raises it)
            put(_Failed(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # e.g. a generator's `finally` closes its video container

    worker = threading.Thread(target=produce, name="mamori-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join()

