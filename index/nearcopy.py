"""The near-copy channel: Meta's PDQ perceptual hash of references and of frame regions.

PDQ (`pdqhash`, the Python binding of Meta's reference implementation) turns an image into 256
bits that survive re-encoding, resizing, mild blur and colour changes; two images are the same
picture when their hashes differ in at most PDQ_THRESHOLD = 31 bits, Meta's recommended match
threshold, and a hash is only trusted at quality >= PDQ_MIN_QUALITY = 50 (a flat or featureless
image gets a low quality and matches everything). It is model-independent: it catches copies of a
reference even when the embedding backbone is weak, and it is cheap (~0.5 ms per region).

What it cannot do: a redrawn pose, a character cut out of its panel onto a new background, or a
region that does not line up with the reference (PDQ is global over the hashed image). That is
the embedding channel's job; this one confirms exact copies with model-free evidence.

Each reference is hashed in its 8 dihedral variants (rotations and mirrors, `compute_dihedral`),
so a mirrored or rotated copy matches too. Search uses FAISS's exact binary index (Hamming).
"""

from __future__ import annotations

import faiss
import numpy as np
import pdqhash
from PIL import Image

__all__ = ["PDQ_BYTES", "PDQ_MIN_QUALITY", "PDQ_THRESHOLD", "PdqMatcher", "nearcopy_score", "pdq_dihedral",
           "pdq_hash", "region_hashes"]

PDQ_BYTES = 32
#: Hamming distance (bits of 256) of a near-copy: Meta's published PDQ match threshold, not
#: measured here (commit 82bb8fd); model-independent
PDQ_THRESHOLD = 31
#: hashes of lower PDQ quality (flat images) are not matched: Meta's recommended quality floor,
#: not measured here (commit 82bb8fd)
PDQ_MIN_QUALITY = 50


def _rgb(img: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img.convert("RGB")))


def pdq_hash(img: Image.Image) -> tuple[np.ndarray, int]:
    """(32,) uint8 packed hash and its quality (0-100)."""
    bits, quality = pdqhash.compute(_rgb(img))
    return np.packbits(bits.astype(np.uint8)), int(quality)


def region_hashes(img: Image.Image, boxes: list[tuple[int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """PDQ hashes of regions of one image: (R, 32) uint8 and (R,) qualities."""
    out = [pdq_hash(img.crop(b)) for b in boxes]
    return (np.stack([h for h, _ in out]) if out else np.zeros((0, PDQ_BYTES), np.uint8),
            np.array([q for _, q in out], np.int32))


def pdq_dihedral(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(8, 32) uint8 packed hashes of the image's 8 rotations/mirrors and their (8,) qualities."""
    hashes, quality = pdqhash.compute_dihedral(_rgb(img))  # one quality for all eight
    packed = np.stack([np.packbits(np.asarray(h, np.uint8)) for h in hashes])
    return packed, np.full(len(packed), int(quality), np.int32)


def nearcopy_score(distance: np.ndarray | float) -> np.ndarray:
    """Map a Hamming distance to a score on the calibrated scale: 0.5 at PDQ_THRESHOLD, 1 at 0.

    Like the embedding channel's score, 0.5 is the channel's own match threshold, so one global
    verdict threshold serves both. Distances above the threshold score below 0.5 and are not
    reported as near-copy evidence.
    """
    d = np.asarray(distance, np.float64)
    return np.clip(1.0 - d / (2.0 * (PDQ_THRESHOLD + 1)), 0.0, 1.0)


class PdqMatcher:
    """Exact Hamming search over reference hashes (FAISS IndexBinaryFlat).

    Rows of `hashes` line up with the caller's row metadata; only hashes of quality >=
    PDQ_MIN_QUALITY are searchable (rows below it never match).
    """

    def __init__(self, hashes: np.ndarray, qualities: np.ndarray):
        hashes = np.ascontiguousarray(hashes, np.uint8).reshape(-1, PDQ_BYTES)
        self.rows = np.flatnonzero(np.asarray(qualities) >= PDQ_MIN_QUALITY)
        self._index = faiss.IndexBinaryFlat(PDQ_BYTES * 8)
        if len(self.rows):
            self._index.add(hashes[self.rows])

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def match(self, hashes: np.ndarray, qualities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest reference hash of each query: (N,) distances and (N,) caller rows (-1 = no match).

        A query matches when its quality is >= PDQ_MIN_QUALITY and its nearest reference hash is
        within PDQ_THRESHOLD bits; only those queries are searched (the others' distance is
        reported as PDQ_BYTES * 8 + 1).
        """
        n = len(hashes)
        dist = np.full(n, PDQ_BYTES * 8 + 1, np.int32)
        rows = np.full(n, -1, np.int64)
        query = np.flatnonzero(np.asarray(qualities) >= PDQ_MIN_QUALITY)
        if len(query) == 0 or len(self) == 0:
            return dist, rows
        flat = np.ascontiguousarray(hashes, np.uint8).reshape(n, PDQ_BYTES)
        d, i = self._index.search(np.ascontiguousarray(flat[query]), 1)
        dist[query] = d[:, 0]
        ok = d[:, 0] <= PDQ_THRESHOLD
        rows[query[ok]] = self.rows[i[ok, 0]]
        return dist, rows
