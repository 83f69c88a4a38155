"""Per-character thresholds and the calibrated score, from a background set of non-protected images.

The rule (documented in the README, stored in `index.json`):

1. Each background image is embedded exactly as a video frame is (same regions, same backbone).
   For character c, its similarity to c is the best cosine over its regions and c's references.
2. Over the background images: mu_c = mean, sigma_c = max(std, SIGMA_FLOOR), bg_max_c = max.
3. Flag threshold on raw similarity: flag_sim_c = bg_max_c + MARGIN, just above the most similar
   background image: no background image is flagged, the expected false-positive rate on new
   unrelated images is about 1 / (n_background + 1), and a character that looks generic (close
   to many background images) automatically gets a higher bar.
4. Calibrated score of a raw similarity s:  score = 1 / (1 + exp(-SLOPE * (s - flag_sim_c) / sigma_c)).
   It is 0.5 exactly at the flag threshold, monotone in s, and in units of each character's own
   background spread, so scores of different characters are comparable and one global ranking of
   videos is meaningful.
5. Verdict thresholds on the calibrated score are global: flag >= SCORE_FLAG, review >= SCORE_REVIEW.

With fewer than MIN_BACKGROUND background images, each character gets its backbone's documented
default (mu, sigma) from `DEFAULTS`, flag_sim = mu + Z_FLAG * sigma, and `source` says "default".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULTS",
    "MIN_BACKGROUND",
    "SCORE_FLAG",
    "SCORE_REVIEW",
    "Calibration",
    "background_similarities",
    "calibrate",
    "calibrated_score",
    "rule",
]

Z_FLAG = 4.0
MARGIN = 0.02
SLOPE = 1.5
SIGMA_FLOOR = 0.02
SCORE_FLAG = 0.5
SCORE_REVIEW = 0.2
MIN_BACKGROUND = 10

#: (mu, sigma) of a character's similarity to unrelated images, per backbone, used without a
#: background set. effnet-lite0-imagenet: measured on drawn scenes and characters by
#: `scripts/measure_defaults.py`; CLIP values: a typical ViT-B/32 image-image cosine between
#: unrelated images, not measured here (no weights offline). Prefer --background.
DEFAULTS: dict[str, tuple[float, float]] = {
    "effnet-lite0-imagenet": (0.52, 0.05),
    "clip-vit-b32": (0.50, 0.07),
    "openclip": (0.50, 0.07),
}


@dataclass(frozen=True)
class Calibration:
    """One character's background statistics; thresholds follow from them by the rule."""

    mu: float
    sigma: float
    bg_max: float
    n_background: int
    source: str  # "background" or "default"

    @property
    def flag_sim(self) -> float:
        if self.source == "default":
            return self.mu + Z_FLAG * self.sigma
        return self.bg_max + MARGIN

    @property
    def review_sim(self) -> float:
        """Raw similarity at which the calibrated score reaches SCORE_REVIEW."""
        return self.flag_sim + self.sigma * math.log(SCORE_REVIEW / (1 - SCORE_REVIEW)) / SLOPE


def default_for(backbone: str) -> tuple[float, float]:
    """The backbone's default (mu, sigma); `openclip:*` names share one entry."""
    key = backbone if backbone in DEFAULTS else backbone.split(":", 1)[0]
    return DEFAULTS.get(key, DEFAULTS["openclip"])


def background_similarities(
    ref_vectors: np.ndarray,
    ref_characters: Sequence[str],
    background: np.ndarray,
    groups: np.ndarray,
) -> dict[str, np.ndarray]:
    """For each character, the best similarity of each background image to it.

    Args:
        ref_vectors: (N, D) reference vectors; `ref_characters[i]` owns row i.
        background: (M, D) query-region embeddings of the background images.
        groups: (M,) background image number of each row.

    Returns:
        character -> (n_images,) array of max cosine over that image's regions and the
        character's vectors.
    """
    if len(background) == 0 or len(ref_vectors) == 0:
        return {c: np.zeros(0, np.float32) for c in set(ref_characters)}
    sims = background @ ref_vectors.T  # (M, N)
    images, inverse = np.unique(groups, return_inverse=True)
    chars = np.asarray(ref_characters)
    out = {}
    for c in np.unique(chars):
        per_row = sims[:, chars == c].max(axis=1)  # (M,)
        per_image = np.full(len(images), -np.inf, np.float32)
        np.maximum.at(per_image, inverse, per_row)
        out[str(c)] = per_image
    return out


def calibrate(per_character: Mapping[str, np.ndarray], backbone: str) -> dict[str, Calibration]:
    """Apply the rule in the module docstring to each character's background similarities."""
    mu0, sigma0 = default_for(backbone)
    out = {}
    for c, s in per_character.items():
        if len(s) >= MIN_BACKGROUND:
            out[c] = Calibration(float(s.mean()), max(float(s.std()), SIGMA_FLOOR), float(s.max()), len(s), "background")
        else:
            out[c] = Calibration(mu0, sigma0, mu0, len(s), "default")
    return out


def calibrated_score(sim: np.ndarray | float, flag_sim: float, sigma: float) -> np.ndarray:
    """Map raw cosine similarity to the calibrated score in [0, 1] (0.5 at the flag threshold)."""
    z = SLOPE * (np.asarray(sim, dtype=np.float64) - flag_sim) / sigma
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def rule() -> dict[str, Any]:
    """The constants of the rule, as stored in `index.json` under `thresholds`."""
    return {
        "rule": "flag_sim = bg_max + margin (background) or mu + z_flag*sigma (defaults); "
        "score = sigmoid(slope*(sim - flag_sim)/sigma)",
        "z_flag": Z_FLAG,
        "margin": MARGIN,
        "slope": SLOPE,
        "sigma_floor": SIGMA_FLOOR,
        "score_flag": SCORE_FLAG,
        "score_review": SCORE_REVIEW,
        "min_background": MIN_BACKGROUND,
    }
