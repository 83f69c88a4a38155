"""The scan pipeline for one input: sampled frames → prepared region batches → evidence.

Steps (the first two run in a background thread, so decoding and cropping overlap the model):
    1. frames come from `MediaReader` (decoded at reduced size, unsampled frames never converted)
    2. `prepare`: each frame gets a tiny signature (64x64 RGB thumbnail). A *blank* frame (one
       flat colour: in each channel, every thumbnail value within BLANK_RANGE levels) is embedded
       once per (size, colour rounded to BLANK_STEP levels) and later ones with the same key reuse
       that evidence (at most BLANK_KEYS keys are remembered per input); a frame that repeats the
       last embedded one (mean absolute thumbnail difference <= REPEAT_MEAN and largest <=
       REPEAT_MAX grey levels) reuses its evidence; any other frame has its regions cropped and
       resized in one batch (and PDQ-hashed for the near-copy channel)
    3. the caller's thread runs the model and the index search on each prepared frame
Why these skips are safe: a repeat differs from the frame whose evidence it reuses by less than
video compression noise (a static shot, a held title card), and so does a flat frame from the flat
frame of the same key. Blank frames keep their (weak) evidence rather than none, because a video's
score averages a character's best frames (`detector.scoring`): dropping them would change the
score of a clip with a single strong frame. `tests/detector/test_pipeline.py` checks that results
match a scan without skips.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from detector.embedding import RegionEmbedder
from detector.frames import Frame
from detector.regions import Box
from index.nearcopy import region_hashes

__all__ = ["BLANK_KEYS", "BLANK_RANGE", "BLANK_STEP", "REPEAT_MAX", "REPEAT_MEAN", "PreparedFrame", "prefetch",
           "prepare_frames", "signature"]

BLANK_RANGE = 6
BLANK_STEP = 4
BLANK_KEYS = 32
REPEAT_MEAN = 1.0
REPEAT_MAX = 12
_THUMB = 64

T = TypeVar("T")


@dataclass(frozen=True)
class PreparedFrame:
    """A sampled frame ready for the model. `kind`: "new" (pixels set), "repeat" (reuse the last
    new frame's evidence) or "blank" (a flat frame, `key` set: pixels are set the first time a key
    is seen, and when the key could not be remembered; otherwise reuse that key's evidence)."""

    frame: Frame
    kind: str
    boxes: list[Box]
    pixels: torch.Tensor | None = None
    hashes: tuple[np.ndarray, np.ndarray] | None = None
    key: tuple[int, ...] | None = None


def signature(img: Image.Image) -> np.ndarray:
    """A 64x64 RGB thumbnail as int16, for the blank and repeat tests."""
    return np.asarray(img.convert("RGB").resize((_THUMB, _THUMB), Image.BOX), dtype=np.int16)


def prepare_frames(frames: Iterator[Frame], embedder: RegionEmbedder, *, nearcopy: bool,
                   skip: bool = True) -> Iterator[PreparedFrame]:
    """Step 2 of the module docstring for each frame; `skip=False` embeds every frame."""
    last: np.ndarray | None = None
    blanks: set[tuple[int, ...]] = set()

    def embedded(fr: Frame, kind: str, key: tuple[int, ...] | None = None) -> PreparedFrame:
        pixels, boxes = embedder.prepare_frame(fr.image)
        return PreparedFrame(fr, kind, boxes, pixels, region_hashes(fr.image, boxes) if nearcopy else None, key)

    for fr in frames:
        if skip:
            sig = signature(fr.image)
            flat = sig.reshape(-1, 3)
            if int(np.ptp(flat, axis=0).max()) <= BLANK_RANGE:
                key = (*fr.image.size, *(int(c) // BLANK_STEP for c in flat.mean(axis=0).round()))
                if key in blanks:
                    yield PreparedFrame(fr, "blank", [], key=key)
                    continue
                if len(blanks) < BLANK_KEYS:
                    blanks.add(key)
                yield embedded(fr, "blank", key)
                continue
            if last is not None:
                diff = np.abs(sig - last)
                if diff.mean() <= REPEAT_MEAN and diff.max() <= REPEAT_MAX:
                    yield PreparedFrame(fr, "repeat", [])
                    continue
            last = sig
        yield embedded(fr, "new")


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
        except BaseException as exc:  # handed to the consumer, which re-raises it
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

