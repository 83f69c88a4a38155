"""Whether an index fits a backbone running at another precision: measured on a drawn probe.

At build, an index records the precision its vectors were embedded in (`index.json`
"precision": fp32, bf16 or fp16) and the raw embeddings of `probe_image()` made at that
precision (`probe` in the generation's `background.npz`). A scan, score or serve that runs the
backbone at another precision embeds the same probe again and compares (`check_precision`).
The same precision is not checked, nor is an index from before this check (no recorded
precision: unknown).

Why this measure and this margin: verdicts compare a query's similarity to the references with
calibrated thresholds, so what matters is how far that similarity moves. The drift is the largest
change, over the probe's views and the index's reference vectors, of the cosine after the
index's projection (`index.store.project`): max |(p' - p) . r|. Calibration puts the flag
threshold `margin` (`index.tuning`, 0.02, stored in `thresholds`) above the best score
of any background image; a drift above the margin can by itself lift ordinary imagery over the
threshold, one within it cannot. Past the margin mamori warns (a log line, and a `warnings` entry
in every result) rather than refusing: bf16 on a GPU is the usual way to serve, and a user may
accept the drift. Running at the index's precision, or rebuilding the index at the running one,
removes the warning.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from index.store import IndexData, IndexStore, project
from index.tuning import tuning_for

if TYPE_CHECKING:
    from index.embedder import Embedder

__all__ = ["PrecisionCheck", "check_precision", "embed_probe", "embedder_precision", "measure_drift", "probe_image"]

log = logging.getLogger("mamori")
PROBE_SIDE = 192
#: (centre x, centre y, radius, colour) of the probe's discs, in pixels of a PROBE_SIDE square
_DISCS = ((60, 70, 34, (214, 60, 52)), (132, 64, 26, (246, 196, 64)), (96, 128, 44, (58, 142, 96)),
          (150, 150, 22, (90, 70, 160)), (40, 150, 16, (20, 20, 24)))


@dataclass(frozen=True)
class PrecisionCheck:
    """The probe's drift between the index's precision and the running one (module docstring)."""

    index: str  # precision the index was built with
    running: str  # precision the backbone runs in now
    drift: float  # largest change of a projected cosine to a reference vector
    cosine: float  # lowest cosine between a probe view's two raw embeddings
    margin: float  # the calibration margin the drift is held to

    @property
    def ok(self) -> bool:
        return self.drift <= self.margin

    @property
    def warning(self) -> str:
        return (f"precision drift: the index was built in {self.index}, the model runs in {self.running}; "
                f"similarities move by up to {self.drift:.3f}, more than the calibration margin {self.margin:.3f} "
                f"(run with --precision {self.index}, or rebuild the index in {self.running})")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def probe_image() -> Image.Image:
    """A small drawn test card made from integers only (no randomness, fonts or anti-aliasing),
    so it is the same picture on every machine and library version: a warm panel, stripes, a
    checkerboard and flat discs, like drawn art."""
    s = PROBE_SIDE
    y, x = np.mgrid[0:s, 0:s]
    img = np.empty((s, s, 3), np.uint8)
    img[...] = (236, 228, 210)
    img[(((x + 2 * y) // 12) % 2 == 0) & (y > 2 * s // 3)] = (70, 90, 160)
    img[(((x // 16) + (y // 16)) % 2 == 0) & (x < s // 3) & (y < s // 4)] = (30, 30, 30)
    for cx, cy, r, rgb in _DISCS:
        img[(x - cx) ** 2 + (y - cy) ** 2 <= r * r] = rgb
    return Image.fromarray(img, "RGB")


def embed_probe(embedder: Embedder) -> np.ndarray:
    """(V, D) raw embeddings of `probe_image()`'s reference views (whole and mirrored).

    Why the reference views and not a frame's regions: the check runs at every open, and a frame
    is ~27 crops where the views are 2 (on a CPU that emulates bf16 a crop takes seconds); the
    drift is a property of the model's arithmetic, which both paths share.
    """
    return np.asarray(embedder.embed_references([probe_image()])[0][0], np.float32)


def embedder_precision(embedder: Embedder) -> str:
    """The precision an embedder runs in (its optional `precision` attribute), or "" if unknown."""
    return str(getattr(embedder, "precision", "") or "")


def measure_drift(data: IndexData, fresh: np.ndarray, running: str) -> PrecisionCheck | None:
    """Compare `fresh` probe embeddings with the index's stored ones (None when not comparable)."""
    if data.probe is None or data.probe.shape != fresh.shape:
        return None
    then, now = project(data.probe, data.centre), project(fresh, data.centre)
    d = now - then
    refs = np.asarray(data.vectors, np.float32)
    drift = float(np.abs(d @ refs.T).max()) if len(refs) else float(np.linalg.norm(d, axis=1).max())
    cosine = float(np.sum(data.probe * fresh, axis=1).min())
    margin = float(data.thresholds.get("margin", tuning_for(str(data.backbone["name"])).margin))
    return PrecisionCheck(data.precision, running, drift, cosine, margin)


def check_precision(store: IndexStore, embedder: Embedder) -> PrecisionCheck | None:
    """Measure the probe's drift when `embedder` runs at another precision than the index was
    built in; None when the precisions match or either is unknown. A drift past the margin is
    logged here; the caller decides what else to do (`detector.Detector` adds a result warning).
    """
    built, running = store.precision, embedder_precision(embedder)
    if not built or not running or built == running or store.data.probe is None:
        return None
    check = measure_drift(store.data, embed_probe(embedder), running)
    if check is None:
        log.info("%s: the index's precision probe does not fit this backbone's views; not checked", store.path)
    elif not check.ok:
        log.warning("%s: %s", store.path, check.warning)
    else:
        log.info("%s: built in %s, running in %s: drift %.4f within the margin %.3f", store.path, built, running,
                 check.drift, check.margin)
    return check
