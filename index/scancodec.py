"""What a scan store keeps of one video, and how its region embeddings are compressed.

A scan embeds every region of every sampled frame once (`detector.pipeline`); a scan store
(`index.scanstore`) keeps those embeddings so that characters added to the index later can be
matched against videos already scanned without decoding them again (`mamori rescan`).

`VideoRecord`: per sampled frame its time, size (the regions' boxes follow from it:
`detector.media.regions.frame_regions` with the store's scales), source scale, and how its regions are
stored, mirroring the scan's own skips so nothing is stored twice:
    kind 0 (new frame): its *fresh* regions are stored; the others are those of the previous
           kind-0 frame (a static camera re-embeds only the windows that changed)
    kind 1 (a flat frame embedded in full): every region stored, nothing carried
    kind 2 (a repeat, or a flat frame seen before): reuses frame `source`'s evidence
plus, per frame, how many regions are stored, and per stored region its position among the
frame's boxes and its code. PDQ hashes are not stored (33 more bytes per region): a rescan that
can read the video computes them for its candidate regions (`detector.runs.rescan`).

`StoreCodec`: product quantisation of the region vectors (FAISS `IndexPQ`, M sub-vectors of 8
bits: M bytes per region), after subtracting a centre (the mean of the training vectors): raw
backbone vectors share a large common component, and coding what is left is what keeps the
cosines between regions and references. Trained once when a store is created, on the index's
background regions and reference vectors (available before the first video, and the same
imagery the calibration uses). Measured in `scripts/bench_rescan.py` (docs/rescan.md): the choice
of M and of the training vectors.

Records serialise as an uncompressed `.npz` (arrays only, read with `allow_pickle=False`).
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, fields
from typing import Any

import faiss
import numpy as np

__all__ = ["CODE_BYTES", "KIND_NEW", "KIND_OWN", "KIND_REUSE", "StoreCodec", "VideoRecord", "checksum"]

#: bytes per stored region (PQ sub-vectors of 8 bits). 128, not 64: what matters is how well a
#: *new* character's regions survive coding, and the codec never saw them. Dev set, effnet, codec
#: trained without the held-out characters, projected cosine of a reference vector to its own
#: round trip: held-out characters 0.82 at 64 bytes, 0.91 at 128 (background regions 0.92 / 0.96);
#: a store at 128 bytes is still under 0.5 MB per video-minute at 2 fps where most regions stay
#: unchanged (dev 0.36 MB); a panning camera, every region new, 0.71 MB at 16:9 (docs/rescan.md,
#: "Choosing the codec"; sizes: `scripts/bench_rescan.py`, `scripts/bench_store_size.py`). A size,
#: recorded by each store, so not in `index.tuning`; its fidelity was measured on effnet-lite0 only
CODE_BYTES = 128
KIND_NEW, KIND_OWN, KIND_REUSE = 0, 1, 2
#: fewest training vectors per centroid below which k-means is fed repeated jittered copies
_MIN_PER_CENTROID = 8


def checksum(blob: bytes) -> int:
    return zlib.crc32(blob) & 0xFFFFFFFF


class StoreCodec:
    """Centre + product quantiser for one backbone's region vectors."""

    def __init__(self, centre: np.ndarray, pq: Any):
        self.centre = np.ascontiguousarray(centre, np.float32)
        self.pq = pq
        self.dim = int(pq.d)
        self.code_bytes = int(pq.sa_code_size())

    @classmethod
    def train(cls, vectors: np.ndarray, code_bytes: int = CODE_BYTES, seed: int = 0) -> StoreCodec:
        """Fit on (N, D) raw region vectors. `code_bytes` must divide D. Few vectors (an index
        with a small background set) are padded with jittered copies, so k-means always has
        enough points; FAISS's own warning about it is expected then."""
        x = np.ascontiguousarray(vectors, np.float32)
        n, d = x.shape
        if n == 0:
            raise ValueError("a store codec needs training vectors (the index has none)")
        m = code_bytes
        while d % m:
            m -= 1
        centre = x.mean(axis=0)
        y = x - centre
        need = 256 * _MIN_PER_CENTROID
        if n < need:  # (pads small training sets; k-means needs >= 256 points)
            rng = np.random.default_rng(seed)
            scale = float(np.std(y)) * 0.05
            reps = [y] + [y + rng.normal(0, scale, y.shape).astype(np.float32) for _ in range(need // n)]
            y = np.concatenate(reps)
        pq = faiss.IndexPQ(d, m, 8)
        pq.pq.cp.seed = seed
        pq.pq.cp.niter = 20
        pq.pq.cp.min_points_per_centroid = _MIN_PER_CENTROID  # (FAISS warns per sub-vector below its default 39)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # measured: 4.5 s on one thread, minutes when OpenMP threads
        try:                          # contend with other work for the cores (busy-waiting)
            pq.train(np.ascontiguousarray(y))
        finally:
            faiss.omp_set_num_threads(threads)
        return cls(centre, pq)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) raw vectors -> (N, code_bytes) uint8 codes."""
        if len(vectors) == 0:
            return np.zeros((0, self.code_bytes), np.uint8)
        codes: np.ndarray = self.pq.sa_encode(np.ascontiguousarray(vectors - self.centre, np.float32))
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(N, code_bytes) codes -> (N, D) float32 vectors, L2-normalised like the backbone's output."""
        if len(codes) == 0:
            return np.zeros((0, self.dim), np.float32)
        out: np.ndarray = self.pq.sa_decode(np.ascontiguousarray(codes, np.uint8)) + self.centre
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, centre=self.centre, pq=faiss.serialize_index(self.pq))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> StoreCodec:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            return cls(z["centre"], faiss.deserialize_index(z["pq"]))


@dataclass
class VideoRecord:
    """One video's sampled frames and stored regions (the module docstring says what each holds)."""

    times: np.ndarray  # (F,) float32 seconds
    sizes: np.ndarray  # (F, 2) int32 sampled frame width, height
    scales: np.ndarray  # (F,) float32 source pixels per sampled pixel
    kinds: np.ndarray  # (F,) uint8 KIND_*
    sources: np.ndarray  # (F,) int32 frame reused by a KIND_REUSE frame, else -1
    counts: np.ndarray  # (F,) int32 regions stored per frame (rows of `region_id`/`codes`, in frame order)
    region_id: np.ndarray  # (N,) int16 position among the frame's boxes
    codes: np.ndarray  # (N, code_bytes) uint8

    @property
    def frames(self) -> int:
        return len(self.times)

    @property
    def region_frame(self) -> np.ndarray:
        """(N,) the frame of each stored region."""
        out: np.ndarray = np.repeat(np.arange(self.frames), self.counts)
        return out

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **{f.name: getattr(self, f.name) for f in fields(self)})
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> VideoRecord:
        """Raises ValueError (or a zip/npz error) on a damaged record."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            rec = cls(**{f.name: z[f.name] for f in fields(cls)})
        f, n = rec.frames, len(rec.codes)
        if not (len(rec.sizes) == len(rec.scales) == len(rec.kinds) == len(rec.sources) == len(rec.counts) == f
                and len(rec.region_id) == n and int(rec.counts.sum()) == n and (rec.counts >= 0).all()):
            raise ValueError("inconsistent record arrays")
        bad = (rec.kinds == KIND_REUSE) & ((rec.sources < 0) | (rec.sources >= np.arange(f)))
        if bad.any():
            raise ValueError("a reused frame points at a later frame")
        return rec
