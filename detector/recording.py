"""`scan --store`: recording a video's region embeddings while it is scanned (`index.scanstore`).

`FrameRecorder` follows the scan pipeline's own decisions (`detector.pipeline`), so a store holds
each embedding once: a new frame's *fresh* regions (unchanged ones are those of the previous new
frame), a flat frame embedded in full, and for a repeated or known flat frame only which frame's
evidence it reused. The codes are computed as frames go (a minute of 2 fps video is a few hundred
kilobytes of codes; raw vectors are never held for the whole video).

A recorder is a `detector.pipeline.FrameObserver`: scoring hands it each frame and knows nothing
of stores. `StoreRecorder` (what `Detector.score_video(store=...)` builds) also writes the video
into a scan store once it is scored. `open_store` opens a store for an index or creates one
(training its codec on the index's background regions and reference vectors: `index.scancodec`);
`add_to_store` appends one scanned video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from detector.match.results import Result
from detector.media.files import FileChangedError, hash_file, stamp
from detector.media.regions import GRID
from detector.pipeline import PreparedFrame
from index.errors import ScanStoreError
from index.scancodec import KIND_NEW, KIND_OWN, KIND_REUSE, StoreCodec, VideoRecord
from index.scanstore import ScanStore, StoreWriter
from index.store import IndexStore

__all__ = ["FrameRecorder", "StoreRecorder", "add_to_store", "open_store", "training_vectors"]


class FrameRecorder:
    """Collects one video's `VideoRecord` as `Detector._evidence` goes through its frames (a
    `detector.pipeline.FrameObserver`; the caller takes `record()`, as batch scans do)."""

    def __init__(self, codec: StoreCodec):
        self.codec = codec
        self._frames: list[tuple[float, int, int, float, int, int]] = []  # time, w, h, scale, kind, source
        self._ids: list[np.ndarray] = []
        self._codes: list[np.ndarray] = []
        self._counts: list[int] = []
        self._last_new = -1
        self._blanks: dict[tuple[int, ...], int] = {}

    def embedded(self, p: PreparedFrame, vectors: np.ndarray) -> None:
        """A frame with pixels: `vectors` are all its regions' (R, D) vectors."""
        i = len(self._frames)
        if p.kind == "new":
            ids = np.flatnonzero(p.fresh) if p.fresh is not None else np.arange(len(p.boxes))
            kind = KIND_NEW
            self._last_new = i
        else:
            ids = np.arange(len(p.boxes))
            kind = KIND_OWN
            if p.remember and p.key is not None:
                self._blanks[p.key] = i
        self._add(p, kind, -1, ids, vectors[ids])

    def reused(self, p: PreparedFrame) -> None:
        """A repeat or a known flat frame: it reuses an earlier frame's evidence."""
        source = self._last_new if p.kind == "repeat" else self._blanks.get(p.key or (), -1)
        if source < 0:
            raise ScanStoreError(f"recording: {p.kind} frame at {p.frame.time:.2f}s reuses no recorded frame")
        self._add(p, KIND_REUSE, source, np.zeros(0, np.int64), np.zeros((0, self.codec.dim), np.float32))

    def finished(self, result: Result) -> None:
        """Nothing to do: the caller takes `record()`."""

    def _add(self, p: PreparedFrame, kind: int, source: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        fr = p.frame
        self._frames.append((fr.time, fr.image.width, fr.image.height, fr.scale, kind, source))
        self._ids.append(ids.astype(np.int16))
        self._codes.append(self.codec.encode(vectors))
        self._counts.append(len(ids))

    def record(self) -> VideoRecord:
        f = self._frames
        return VideoRecord(
            times=np.array([x[0] for x in f], np.float32),
            sizes=np.array([(x[1], x[2]) for x in f], np.int32).reshape(-1, 2),
            scales=np.array([x[3] for x in f], np.float32),
            kinds=np.array([x[4] for x in f], np.uint8),
            sources=np.array([x[5] for x in f], np.int32),
            counts=np.array(self._counts, np.int32),
            region_id=np.concatenate(self._ids) if self._ids else np.zeros(0, np.int16),
            codes=np.concatenate(self._codes) if self._codes else np.zeros((0, self.codec.code_bytes), np.uint8),
        )


class StoreRecorder(FrameRecorder):
    """`Detector.score_video(store=...)`: records one input and, once it is scored, appends it to
    the scan store `writer` (as `index` scored it). The bytes stored are the bytes scored: the
    file is hashed (and stamped) when the recorder is made, before scoring, and stamped again when
    the result comes; FileChangedError, and nothing stored, if it changed meanwhile."""

    def __init__(self, writer: StoreWriter, index: IndexStore, path: str | Path, fps: float, max_frames: int):
        super().__init__(writer.store.codec)
        self.writer, self.index, self.path, self.fps, self.max_frames = writer, index, path, fps, max_frames
        self.sha256, self.before = hash_file(path)

    def finished(self, result: Result) -> None:
        if stamp(self.path) != self.before:
            raise FileChangedError(f"{self.path}: changed while it was scored; nothing was stored (score it again)")
        row = {**result.to_dict(), "sha256": self.sha256}
        add_to_store(self.writer, self.index, str(self.path), row, self.record(), self.fps, self.max_frames)


#: at most this many training vectors for a store codec (half background, half references when both
#: are many). Not tuned: 256 x 256, what FAISS's k-means samples for 256 centroids anyway (commit b02eb15)
MAX_TRAINING = 65536


def training_vectors(index: IndexStore) -> np.ndarray:
    """Raw region vectors to train a store codec on: the index's background regions and its
    reference vectors (stored centred: the centre is added back, an approximation of their raw
    direction good enough to place centroids). The references are what a match looks like:
    with them, a reference's own round trip keeps a projected cosine of 0.95 instead of 0.89 on the
    dev set at 128 bytes, and a character the codec never saw 0.91 instead of 0.90."""
    data = index.data
    vecs = [np.asarray(data.background, np.float32)] if len(data.background) else []
    if len(data.vectors):
        vecs.append(np.asarray(data.vectors, np.float32) + data.centre)
    if sum(map(len, vecs)) > MAX_TRAINING:  # a large index: a seeded sample (k-means uses ~65k points anyway)
        rng = np.random.default_rng(0)
        vecs = [v[np.sort(rng.choice(len(v), min(len(v), MAX_TRAINING // len(vecs)), replace=False))] for v in vecs]
    x = np.concatenate(vecs) if vecs else np.zeros((0, int(index.backbone["dim"])), np.float32)
    if len(x) < 256:
        raise ScanStoreError(f"{index.path}: the index has too few vectors ({len(x)}) to train a scan store's "
                             "codec; build it with background images (--background)")
    return x


def open_store(path: str | Path, index: IndexStore, scales: tuple[float, ...]) -> ScanStore:
    """The store at `path`, created (codec trained on the index) if there is none yet.

    Raises:
        ScanStoreError: damaged, or made with another backbone or other region scales or grid.
    """
    path = Path(path)
    if (path / "store.json").exists():
        store = ScanStore.open(path)
        store.check_backbone(index.backbone, f"index {index.path}")
        store.check_grid(scales, GRID, "this scan")
        return store
    return ScanStore.create(path, index.backbone, StoreCodec.train(training_vectors(index)), scales, GRID)


def add_to_store(writer: StoreWriter, index: IndexStore, path: str, result: dict[str, Any], record: VideoRecord,
                 fps: float, max_frames: int) -> None:
    """Append one scanned input (`result`: its result line, with `sha256`) scored against `index`."""
    manifest = index.manifest
    generation = str(manifest.get("generation", ""))
    writer.add_generation(generation, str(manifest.get("updated", "")), list(index.references))
    writer.append(path, str(result["sha256"]), record, duration=result.get("duration"),
                  kind=str(result.get("kind") or "video"), fps=fps, max_frames=max_frames, generation=generation)
