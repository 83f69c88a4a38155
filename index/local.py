"""Geometric verification: SIFT local features of references, matched into a frame region with RANSAC.

The embedding channel says "this region looks like character c"; in the same drawing style many
characters look alike to a generic backbone (same palette, same pose conventions). Copy-detection
systems confirm such candidates with local features: if a reference and a region share many
keypoints that one similarity transform (shift, rotation, uniform scale) maps onto each other, the
region shows that reference's artwork, not just something in its style.

Steps (OpenCV, `opencv-python-headless`):
    1. `describe`: the image is resized so its longer side is SIDE pixels (small regions are
       upscaled, so a character far from the camera still gives keypoints), converted to grey and
       described with SIFT, keeping the MAX_FEATURES strongest keypoints. References are described
       as given and mirrored (SIFT is not mirror-invariant; generators flip characters freely).
    2. `count_inliers`: each reference keypoint's two nearest region descriptors (L2); Lowe's ratio
       test (RATIO) keeps unambiguous matches; `cv2.estimateAffinePartial2D` with RANSAC
       (RANSAC_PX reprojection error on the SIDE-pixel scale) fits one similarity transform; the
       count of matches that agree with it, as distinct places in both images (SIFT puts one
       keypoint per dominant orientation, so one corner can give several), is the evidence. A
       transform that shrinks or grows the reference by more than MAX_SCALE counts 0.
    3. `self_check`, at index time: the reference shrunk to a third of its size and JPEG-compressed
       (a character at ~40% of a 360p frame) is matched back to the reference. Art that keeps at
       least VERIFIABLE inliers is detailed enough that a genuine appearance is expected to verify;
       flat, simple art (few corners) is not, and a failed check on it means nothing. Measured:
       the dev set's painted portraits and sprites keep 62-221, flat synthetic test figures 29-47.
    4. At query time `detector.match.verify` checks the strongest embedding candidates of each frame,
       in the region the embedding matched (enlarged by its PAD on each side, so a box that cuts the
       character still holds it), and turns the best inlier count of a character into evidence.

Cost (one thread, this 2-core machine): SIFT on a region resized to 320 pixels 10-35 ms, one
match 1-3 ms per reference view; `scripts/bench_scan.py` measures the whole (`--no-verify` row).
References keep at most MAX_FEATURES keypoints: (MAX_FEATURES x 128) uint8 + coordinates, about
70 KB per view.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

__all__ = ["MAX_FEATURES", "QUIET_BLAS_ENV", "RATIO", "SIDE", "VERIFIABLE", "LocalFeatures", "count_inliers", "describe",
           "quiet_blas", "reference_features", "self_check", "two_nearest"]

#: SIFT settings, none measured as values: chosen by hand with geometric verification (commit
#: e8e521e, issue 3; the whole stage was measured on dev, docs/measurements.md). Pixels and counts,
#: not backbone-dependent. Side (pixels) a region or reference is resized to before SIFT
SIDE = 320
#: strongest keypoints kept per reference view (~70 KB a view on disk)
MAX_FEATURES = 500
#: Lowe's ratio test, his paper's usual 0.8
RATIO = 0.8
#: RANSAC reprojection tolerance (pixels at SIDE)
RANSAC_PX = 6.0
#: the similarity transform's scale must stay within 1/MAX_SCALE .. MAX_SCALE
MAX_SCALE = 6.0
_MIN_MATCHES = 4
#: self-check inliers that make a reference verifiable (step 3): 4x the scorer's MIN_INLIERS
#: (`detector.match.verify`; by hand, commit e8e521e)
VERIFIABLE = 60
_SAME_PLACE = 2.0  # pixels (SIDE scale): keypoints closer than this are one place

cv2.setNumThreads(1)  # the model owns the cores; one SIFT call is small
_local = threading.local()
#: an environment variable: "1" asks for `quiet_blas` in any process, "0" refuses it
QUIET_BLAS_ENV = "MAMORI_QUIET_BLAS"
_quiet: dict[str, Any] = {"wanted": False, "limiter": None}
_quiet_lock = threading.Lock()


def quiet_blas() -> None:
    """Ask that numpy's and OpenCV's OpenBLAS (pthreads builds: one thread pool per process) run on
    one thread for the rest of this process, from the matcher's next use on. Called where it was
    measured to help: `mamori scan` and `mamori rescan` (and their Ray workers); not by `index
    build|add` (calibration's large products), `serve` or the other commands, whose BLAS keeps its
    threads. QUIET_BLAS_ENV=0 refuses it (`MAMORI_QUIET_BLAS=0 mamori scan ...` keeps your
    OpenBLAS settings); QUIET_BLAS_ENV=1 asks for it in any process.

    Why: `count_inliers` does one ~1 ms matrix product per reference view; a multi-threaded
    OpenBLAS spins its idle threads after each one and so takes a core from the other work (SIFT,
    decoding, another worker): `mamori rescan` of the dev set with a third of the characters new,
    one worker, 28.3 -> 21.1 s, and 12-13 s with two workers; a fresh scan of 12 dev clips 44.9 ->
    42.6 s (docs/rescan.md). FAISS's own OpenBLAS (an OpenMP build) is left alone. Applied once,
    lazily (`_quiet_now`): the libraries must be loaded to be found, and a per-call limit is not
    thread-safe (threadpoolctl restores the counts each context saw on entry, so overlapping
    contexts of two threads leave them wrong)."""
    if os.environ.get(QUIET_BLAS_ENV) != "0":
        _quiet["wanted"] = True


def _quiet_now() -> None:
    if _quiet["limiter"] is not None or not (_quiet["wanted"] or os.environ.get(QUIET_BLAS_ENV) == "1"):
        return
    with _quiet_lock:
        if _quiet["limiter"] is None:
            import warnings

            from threadpoolctl import ThreadpoolController

            with warnings.catch_warnings():  # (its notes on OpenMP runtimes loaded together are not ours)
                warnings.simplefilter("ignore")
                libs = ThreadpoolController().select(internal_api="openblas", threading_layer="pthreads")
                _quiet["limiter"] = libs.limit(limits=1)


def _detector() -> Any:
    """One SIFT object per thread (scan workers and the HTTP service call this concurrently)."""
    sift = getattr(_local, "sift", None)
    if sift is None:
        sift = _local.sift = cv2.SIFT_create(nfeatures=MAX_FEATURES)  # type: ignore[attr-defined]
    return sift


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoint coordinates (N, 2) float32 on the SIDE scale and SIFT descriptors (N, 128) uint8."""

    points: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def empty(cls) -> LocalFeatures:
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))


def describe(img: Image.Image) -> LocalFeatures:
    """SIFT features of an image resized to a longer side of SIDE pixels (see step 1)."""
    w, h = img.size
    if min(w, h) < 1:
        return LocalFeatures.empty()
    s = SIDE / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    grey = np.asarray(img.convert("L").resize(size, Image.Resampling.BICUBIC if s > 1 else Image.Resampling.BOX), dtype=np.uint8)
    kps, desc = _detector().detectAndCompute(np.ascontiguousarray(grey), None)
    if desc is None or not kps:
        return LocalFeatures.empty()
    pts = np.array([k.pt for k in kps], np.float32)
    # SIFT descriptors are saturated to 0..255 integers by OpenCV: uint8 is lossless
    return LocalFeatures(pts, np.clip(np.rint(desc), 0, 255).astype(np.uint8))


def reference_features(img: Image.Image) -> dict[str, LocalFeatures]:
    """Local features of a reference image's two views, by name (`full`, `mirror`)."""
    return {"full": describe(img), "mirror": describe(ImageOps.mirror(img))}


def self_check(img: Image.Image, features: LocalFeatures) -> int:
    """Inliers of a third-size, JPEG-compressed copy of a reference against its own features (step 3)."""
    w, h = img.size
    small = img.convert("RGB").resize((max(1, w // 3), max(1, h // 3)), Image.Resampling.BOX)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=75)
    buf.seek(0)
    with Image.open(buf) as copy:
        return count_inliers(describe(copy), features)


def two_nearest(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a (Q, N >= 2) distance matrix: the nearest column, its distance and the
    second-smallest distance. Argmin, then the minimum with the nearest masked: 20x faster than
    np.argpartition on 500 x 500. `dist` is overwritten."""
    rows = np.arange(len(dist))
    best = dist.argmin(axis=1)
    first = dist[rows, best]
    dist[rows, best] = np.inf
    return best, first, dist.min(axis=1)


def count_inliers(region: LocalFeatures, reference: LocalFeatures) -> int:
    """Matches between a reference and a region that one similarity transform explains (step 2)."""
    if len(region) < 2 or len(reference) < _MIN_MATCHES:
        return 0
    q = reference.descriptors.astype(np.float32)
    d = region.descriptors.astype(np.float32)
    # squared L2 via the dot product (exact: uint8 descriptors give integer distances below 2^24;
    # faster than cv2.BFMatcher's knn or cv2.batchDistance), on one BLAS thread where asked (`quiet_blas`)
    _quiet_now()
    dist = (q * q).sum(1)[:, None] - 2.0 * (q @ d.T) + (d * d).sum(1)[None, :]
    best, first, second = two_nearest(dist)
    good = first < (RATIO * RATIO) * np.maximum(second, 1e-6)
    if int(good.sum()) < _MIN_MATCHES:
        return 0
    src = reference.points[good]
    dst = region.points[best[good]]
    m, inl = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX,
                                         maxIters=2000, confidence=0.99)
    if m is None or inl is None:
        return 0
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    if not (1.0 / MAX_SCALE <= scale <= MAX_SCALE):
        return 0
    keep = inl.ravel().astype(bool)
    # SIFT puts several keypoints (one per dominant orientation) at one place: count places, on
    # both sides, so a few corners cannot add up to a match
    places = min(len(np.unique(np.round(src[keep] / _SAME_PLACE), axis=0)),
                 len(np.unique(np.round(dst[keep] / _SAME_PLACE), axis=0)))
    return int(places)
