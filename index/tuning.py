"""Per-backbone tuning: the constants that live on a backbone's embedding scale, one row per backbone.

    tuning_for(store.backbone["name"]).allow_sim      # looked up through the index's backbone

Which constants are backbone-dependent (the decision, issue 29 point 6): a constant lives here when
its value is a cosine similarity, a distance on the normalised-similarity scale (`index.calibrate`
step 2), or a threshold on the score of an *approximation* of the embedding (the shortlist's cheap
passes, whose error depends on the model): another model spreads its cosines differently, so the
number means something else there. The other tuned constants stay global, beside the code that uses
them, because they are backbone-independent by construction: counts (frames, regions, candidates,
inliers), geometry (IoU, pixels, SIFT and RANSAC settings), PDQ bits, times, and thresholds on the
*calibrated* score (`SCORE_FLAG`, `SCORE_REVIEW`, `VERIFY_MIN_SCORE`, `UNVERIFIED_PENALTY`, `SLOPE`),
which the calibration maps onto the same units for every index whatever its backbone.
docs/constants.md lists every tuned constant, with what chose it.

Only effnet-lite0-imagenet has been measured (`EFFNET`, with what chose each value in its field
comment). Every other backbone gets the same values explicitly, until measured: `UNMEASURED` rows
say so. The defaults without a background set (`default_threshold`) are the one field that already
differed per backbone (`index.calibrate`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["EFFNET", "TUNING", "BackboneTuning", "tuning_for"]


@dataclass(frozen=True)
class BackboneTuning:
    """One backbone's constants on its embedding scale (module docstring: which ones, and why)."""

    #: cosine (projected space) at or above which a region is a near-duplicate of an allowed region
    #: (`index.allowlist`)
    allow_sim: float
    #: added to the highest background frame-level n to make the flag threshold T (`index.calibrate`
    #: step 3); also the precision drift that `index.precision` warns past
    margin: float
    #: least sigma of the calibrated score (`index.calibrate` step 4), on the normalised scale
    sigma_floor: float
    #: (T, sigma) on the normalised scale without a background set (`index.calibrate`)
    default_threshold: tuple[float, float]
    #: (T, sigma) of the text channel without a background set (`index.text`)
    text_default: tuple[float, float]
    #: a small window is shortlisted when its approximate score (a CNN's pooled feature map,
    #: `detector.shortlist.FeatureMap`, or an open_clip ViT's pooled tokens, `detector.embed.tokenmap`)
    #: reaches this
    map_min_score: float
    #: without a feature or token map: small windows inside a coarse region whose exact score
    #: reaches this are shortlisted (`detector.shortlist`)
    coarse_min_score: float
    #: what chose these values (backbone, set, script), or that nothing did
    measured: str


#: effnet-lite0-imagenet, the one backbone measured here (2-core CPU, dev = ../shared/eval/dev,
#: redrawn = ../shared/eval/redrawn; docs/measurements.md):
EFFNET = BackboneTuning(
    # measured on the e2e fixtures, not a labelled set (tests/e2e/test_review.py, issue 17, commit
    # ca2baf7): allowed regions re-encoded (H.264 CRF 23) 0.96-0.99, different content <= 0.874;
    # 0.92 splits the gap (`index.allowlist` docstring)
    allow_sim=0.92,
    # not measured: chosen by hand with the first calibration rule (core commit 81051fd): a small
    # gap so that no background image reaches the threshold; indexes store it in `thresholds`
    margin=0.02,
    # not measured: chosen by hand (core commit 81051fd): a floor so that a background set of
    # near-identical frames (sigma ~ 0) cannot make every small difference a certain flag
    sigma_floor=0.02,
    # scripts/measure_defaults.py: drawn scenes vs drawn characters (detector.media.synth), max over the
    # scenes plus margin (docs/how-it-works.md, Calibration)
    default_threshold=(0.25, 0.05),
    # not measured: a guess from CLIP's usual text-to-image cosines (a match about 0.3, unrelated
    # 0.1-0.2); no CLIP weights could be downloaded where it was written (`index.text`)
    text_default=(0.25, 0.05),
    # scripts/shortlist_recall.py --cv 2 on dev + redrawn, split by character: fold choices 0.115 /
    # 0.045, pooled 0.095; out of fold it keeps 98.9% of the matching regions (`detector.shortlist`)
    map_min_score=0.095,
    # scripts/shortlist_recall.py --cv 2 (coarse rule run on effnet's exact embeddings), dev +
    # redrawn: fold choices 0.02 / 0.015, pooled 0.015 (`detector.shortlist`)
    coarse_min_score=0.015,
    measured="effnet-lite0-imagenet; dev + redrawn; field comments of index.tuning.EFFNET",
)

#: what a backbone not measured gets: effnet-lite0-imagenet's values, with the CLIP guess for the
#: defaults without background (as `index.calibrate` gave every backbone but effnet before)
UNMEASURED = replace(EFFNET, default_threshold=(0.25, 0.07),
                     measured="not measured: effnet-lite0-imagenet's values, until measured on this backbone")

#: backbone name (or the prefix before ":" of a family: `openclip:ARCH:WEIGHTS`, `timm:`, `onnx:`)
#: -> its tuning. Names not listed get `UNMEASURED`.
TUNING: dict[str, BackboneTuning] = {
    "effnet-lite0-imagenet": EFFNET,
    # CLIP default (T, sigma): a guess, no weights offline; shortlist threshold (token map): set to
    # effnet's feature-map choice, whose approximations were as rough (`detector.embed.tokenmap`)
    "clip-vit-b32": UNMEASURED,
    "openclip": UNMEASURED,
    # the identity model (issue 28) was measured end to end on dev with these values (docs/identity.md),
    # not tuned for them
    "mamori-identity-lite0": UNMEASURED,
    "timm": UNMEASURED,
    "onnx": UNMEASURED,
}


def tuning_for(backbone: str) -> BackboneTuning:
    """The tuning of the backbone named `backbone` (an index's `backbone["name"]`): its own row,
    else its family's (`openclip:*`, `timm:*`, `onnx:*`), else `UNMEASURED`."""
    return TUNING.get(backbone) or TUNING.get(backbone.split(":", 1)[0]) or UNMEASURED
