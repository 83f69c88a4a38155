"""Coarse-to-fine region search: embed only the windows that can hold a match (scoring step 0).

A frame's 47 regions (`detector.media.regions`) cost 47 forward passes; most frames hold no character
in most windows. `RegionSearch.regions` decides, per frame, which regions are embedded exactly:
    1. *coarse* regions are always embedded: the whole frame and the windows of the largest scale
       (4 of 47 on a 16:9 frame)
    2. the other (small) windows are *shortlisted* by one cheap pass over the frame:
       - backbones with a usable feature map (a CNN whose embedding is the average of its last
         feature map: EfficientNet; `FeatureMap.of` checks this numerically): one forward pass of
         the whole frame, its shorter side resized to FEATURE_SIDE, is pooled over each window's
         area (R-MAC style) into an approximate window embedding, scored against the index like
         real evidence (`peak_scores`: the best calibrated score over characters); a window
         whose approximate score reaches `map_min_score` is shortlisted
       - open_clip vision transformers of the usual structure (clip-vit-b32 and most openclip:
         ViTs; `TokenMap.of` checks): the same with pooled patch tokens of one forward pass of
         the frame (`detector.embed.tokenmap.TokenMap`, MaskCLIP-style dense tokens), the same
         threshold `map_min_score` (for CLIP not measured: no CLIP weights on the development
         machine; see that module)
       - any other backbone (timm: ViTs, onnx:, open_clip models that fail that check): the
         coarse regions' exact evidence; a small window is shortlisted when at least half of it
         lies inside a coarse region whose score (image or text channel) reaches `coarse_min_score`
       - a window whose PDQ hash matches a reference hash (the near-copy channel) is always shortlisted
    3. the shortlisted windows are embedded exactly (a window unchanged since its last embedded
       version keeps that vector: the model thread's copy of `detector.pipeline` step 3), and
       `frame_evidence` decides on the exact embeddings of the embedded regions only, as the full
       search does: the shortlist never scores, it only chooses what is embedded.
A frame whose cheap pass shows nothing near any character embeds only the coarse regions.
Geometric verification, the allow-list and text prompts work on the embedded regions.

Why the thresholds are far below the review score (`index.calibrate.SCORE_REVIEW` 0.3): the
approximate embeddings are rough (cosine to the exact crop embedding, effnet on dev frames: mean
0.80 for 0.6 windows, 0.72 for 0.45 windows; FEATURE_SIDE 224 / 360 / 448 gave 0.75-0.80 and
0.68-0.74), so the cut keeps a margin. Both thresholds were chosen by cross-validation split by
character on dev + redrawn (`scripts/shortlist_recall.py --cv 2`, effnet-lite0-imagenet, frames
sampled at 0.5 fps: 180 dev + 120 redrawn frames, 441 *matching regions*: a character's best
region in a frame at the review threshold or above under the full search, after verification):
for each fold, the highest threshold that keeps >= 99% of the *other* fold's matching regions,
judged on the fold; the constant is the same choice made over all characters.
Both are on the scale of the backbone's approximation, so they are the index's backbone's
(`index.tuning.tuning_for`: effnet-lite0-imagenet's values below, and the same for every other
backbone until measured on it):
    map_min_score     fold choices 0.115 / 0.045, pooled 0.095. Out of fold: 436 of 441 matching
                      regions kept (dev 213/215, redrawn 223/226: 0.989); at 0.095, 15.8 (dev) and
                      24.4 (redrawn) regions embedded per frame of 47, coarse ones included.
    coarse_min_score  fold choices 0.02 / 0.015, pooled 0.015. Out of fold 437/441 (0.991), but
                      it keeps 40.7 (dev) / 45.6 (redrawn) regions per frame: a large window's exact
                      evidence says little about which of its small windows holds a character, so
                      without a feature or token map the shortlist saves little (timm: ViTs, onnx:).
The near-copy channel keeps hashing every region (in the prefetch thread, ~0.5 ms a region):
its matches are what force near-copies into the shortlist, whatever the cheap pass says.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from detector.embed.backbones import Backbone, image_tensor
from detector.embed.text import text_hits
from detector.embed.tokenmap import TokenMap, window_weights
from detector.match.evidence import region_matrix
from detector.media.regions import Box
from detector.pipeline import PreparedFrame, changed
from index.calibrate import calibrated_score
from index.store import IndexStore
from index.tuning import tuning_for

__all__ = ["FEATURE_MAX_SIDE", "FEATURE_SIDE", "FeatureMap", "KeptRegions", "RegionSearch", "coarse_regions",
           "peak_scores", "window_inside"]

#: shorter side (pixels) of the frame's feature-map pass. Measured with effnet-lite0-imagenet on
#: dev frames (issue 20, commit a1dde06; module docstring): approximation cosine 0.72-0.80 at 288,
#: 224 / 360 / 448 no better (0.68-0.80), and one pass at 288 costs a few crops
FEATURE_SIDE = 288
#: ... and its longer side at most this (an extreme aspect ratio, a 1x4000 strip, must not make a
#: feature map of millions of pixels: found by the fuzzer, 21 GB); frames up to 4:1 are unaffected
FEATURE_MAX_SIDE = 4 * FEATURE_SIDE
#: share of a small window's area that must lie inside a coarse region with evidence. Not
#: measured: chosen by hand (issue 20, commit a1dde06: "at least half of it")
INSIDE = 0.5

Hashes = tuple[np.ndarray, np.ndarray]


def coarse_regions(boxes: Sequence[Box]) -> list[int]:
    """Indexes of the regions always embedded: region 0 (the whole frame) and the largest windows."""
    sides = [x1 - x0 for x0, _, x1, _ in boxes[1:]]
    top = max(sides, default=0)
    return [0, *(i + 1 for i, s in enumerate(sides) if s == top)]


def window_inside(boxes: Sequence[Box], window: int, region: int) -> bool:
    """Whether at least INSIDE of box `window`'s area lies inside box `region`."""
    ax0, ay0, ax1, ay1 = boxes[window]
    bx0, by0, bx1, by1 = boxes[region]
    w, h = min(ax1, bx1) - max(ax0, bx0), min(ay1, by1) - max(ay0, by0)
    return w > 0 and h > 0 and w * h >= INSIDE * (ax1 - ax0) * (ay1 - ay0)


def peak_scores(store: IndexStore, vectors: np.ndarray) -> np.ndarray:
    """(R,) per region, the best calibrated score over characters (embedding channel, no allow-list)."""
    chars, _, _, norm = region_matrix(store, vectors)
    if not chars:
        return np.zeros(len(vectors))
    infos = [store.characters[c] for c in chars]
    out: np.ndarray = np.stack([calibrated_score(norm[:, j], i.flag_sim, i.sigma) for j, i in enumerate(infos)],
                               axis=1).max(axis=1)
    return out


class FeatureMap:
    """Approximate window embeddings from one forward pass of the whole frame (R-MAC style pooling)."""

    def __init__(self, backbone: Backbone, side: int = FEATURE_SIDE):
        self.backbone = backbone
        self.features = cast("Callable[[torch.Tensor], torch.Tensor]", backbone.module.forward_features)
        self.side = side
        self.mean = torch.tensor(backbone.preprocess.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(backbone.preprocess.std).view(1, 3, 1, 1)

    @classmethod
    def of(cls, backbone: Backbone) -> FeatureMap | None:
        """The backbone's feature map, or None when its embedding is not the plain average of a 4-D
        feature map (checked once per backbone on a probe input: cosine >= 0.999)."""
        if backbone not in _FEATURE_MAPS:
            _FEATURE_MAPS[backbone] = cls(backbone) if cls._averages(backbone) else None
        return _FEATURE_MAPS[backbone]

    @staticmethod
    def _averages(backbone: Backbone) -> bool:
        features = getattr(backbone.module, "forward_features", None)
        if not callable(features):
            return False
        s = backbone.preprocess.size
        x = torch.linspace(-1, 1, 3 * s * s).view(1, 3, s, s).to(backbone.device, backbone.dtype)
        with torch.inference_mode():
            fmap, pooled = features(x), backbone.module(x)
        if not isinstance(fmap, torch.Tensor) or fmap.ndim != 4 or fmap.shape[1] != backbone.dim:
            return False
        cos = F.cosine_similarity(fmap.float().mean(dim=(2, 3)), pooled.float().reshape(1, -1))
        return bool(cos.item() >= 0.999)

    def approximate(self, image: Image.Image, boxes: Sequence[Box]) -> np.ndarray:
        """(len(boxes), D) L2-normalised approximate embeddings of `boxes` (in `image`'s pixels)."""
        bb = self.backbone
        w, h = image.size
        scale = min(self.side / min(w, h), FEATURE_MAX_SIDE / max(w, h))
        x = image_tensor(image)[None].float()
        x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))),
                          mode=bb.preprocess.interpolation, antialias=True, align_corners=False)
        x = ((x.clamp_(0, 255).round_() / 255.0 - self.mean) / self.std).to(bb.device, bb.dtype)
        if bb.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            fmap = self.features(x)[0].float().cpu()
        c, fh, fw = fmap.shape
        pooled = window_weights(boxes, w, h, fw, fh) @ fmap.reshape(c, fh * fw).T
        return F.normalize(pooled, dim=-1).numpy()


_FEATURE_MAPS: weakref.WeakKeyDictionary[Backbone, FeatureMap | None] = weakref.WeakKeyDictionary()


class KeptRegions:
    """Per region, the vector of its last embedded version and that version's signature: a region
    chosen again and unchanged since (`detector.pipeline.changed`) is not embedded again."""

    def __init__(self, embed: Callable[[torch.Tensor], np.ndarray], dim: int) -> None:
        self.embed = embed
        self.dim = dim
        self.boxes: list[Box] | None = None
        self.kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def vectors(self, p: PreparedFrame, idx: list[int]) -> np.ndarray:
        """(len(idx), D) vectors of regions `idx` of `p` (every region's pixels set): embedded now,
        or kept. Only new frames with signatures use and update what is kept (blank frames neither
        use nor change it); a frame of another size starts afresh."""
        assert p.pixels is not None and len(p.pixels) == len(p.boxes)
        track = p.kind == "new" and p.sigs is not None
        if track and p.boxes != self.boxes:
            self.boxes, self.kept = p.boxes, {}
        need = list(idx)
        old = [i for i in idx if i in self.kept] if track else []
        if old:
            assert p.sigs is not None
            moved = changed(p.sigs[old], np.stack([self.kept[i][0] for i in old]))
            same = {i for i, m in zip(old, moved) if not m}
            need = [i for i in idx if i not in same]
        fresh = self.embed(p.pixels[need]) if need else np.zeros((0, self.dim), np.float32)
        got = dict(zip(need, fresh))
        if track:
            assert p.sigs is not None
            self.kept.update({i: (p.sigs[i], v) for i, v in got.items()})
        return np.stack([got[i] if i in got else self.kept[i][1] for i in idx]) if idx else fresh


class RegionSearch:
    """The model thread's region choice for one input (module docstring)."""

    def __init__(self, store: IndexStore, backbone: Backbone, embed: Callable[[torch.Tensor], np.ndarray]):
        self.store = store
        self.fmap: FeatureMap | TokenMap | None = FeatureMap.of(backbone) or TokenMap.of(backbone)
        tuning = tuning_for(str(store.backbone["name"]))  # the index's backbone's thresholds
        self.map_min_score = tuning.map_min_score
        self.coarse_min_score = tuning.coarse_min_score
        self.kept = KeptRegions(embed, backbone.dim)
        #: regions embedded (fresh or kept) and regions in all, over the frames seen: the shortlist's cost
        self.embedded = 0
        self.total = 0

    def regions(self, p: PreparedFrame) -> tuple[np.ndarray, list[Box], Hashes | None]:
        """The vectors, boxes and PDQ hashes of the regions of `p` (every region's pixels set)
        that are embedded, in region order."""
        boxes = p.boxes
        coarse = coarse_regions(boxes)
        small = [i for i in range(len(boxes)) if i not in set(coarse)]
        first = None if self.fmap is not None else self.kept.vectors(p, coarse)  # the map rule batches them
        extra = sorted((self.shortlisted(p, coarse, small, first) | self._nearcopy(p)) - set(coarse))
        if first is None:
            chosen = sorted([*coarse, *extra])
            vectors = self.kept.vectors(p, chosen)
        else:
            order = np.argsort([*coarse, *extra], kind="stable")
            chosen = [[*coarse, *extra][k] for k in order]
            vectors = np.concatenate([first, self.kept.vectors(p, extra)])[order]
        self.embedded += len(chosen)
        self.total += len(boxes)
        hashes = None if p.hashes is None else (p.hashes[0][chosen], p.hashes[1][chosen])
        return vectors, [boxes[i] for i in chosen], hashes

    def shortlisted(self, p: PreparedFrame, coarse: list[int], small: list[int], first: np.ndarray | None) -> set[int]:
        """Step 2: the small windows worth embedding, from the feature map (`first` None) or from
        the coarse regions' exact vectors `first`."""
        if not small:  # (a frame too small or too thin for windows below the largest)
            return set()
        if first is None:
            assert self.fmap is not None
            scores = peak_scores(self.store, self.fmap.approximate(p.frame.image, [p.boxes[i] for i in small]))
            return {i for i, s in zip(small, scores) if s >= self.map_min_score}
        hot = self._hot(coarse, first)
        return {i for i in small if any(window_inside(p.boxes, i, r) for r in hot)}

    def _hot(self, coarse: list[int], vectors: np.ndarray) -> list[int]:
        """The coarse regions whose exact evidence (image or text channel) reaches coarse_min_score."""
        scores = peak_scores(self.store, vectors)
        hot = {coarse[k] for k, s in enumerate(scores) if s >= self.coarse_min_score}
        hot |= {coarse[t.region] for t in text_hits(self.store, vectors).values() if t.score >= self.coarse_min_score}
        return sorted(hot)

    def _nearcopy(self, p: PreparedFrame) -> set[int]:
        """Regions whose PDQ hash matches a reference hash (the near-copy channel needs no embedding)."""
        if p.hashes is None or not len(p.hashes[0]):
            return set()
        _, refs = self.store.match_pdq(*p.hashes)
        return {i for i, ref in enumerate(refs) if ref is not None}
