"""The shortlist's cheap pass for open_clip vision transformers: pooled patch tokens (scoring step 0).

A ViT's embedding is its class token, not an average of a feature map, so `detector.shortlist`'s
R-MAC pass (`FeatureMap`) does not apply. `TokenMap` gives a ViT the same kind of pass: one
forward pass of the whole frame, its shorter side resized to TOKEN_SIDE (rounded to whole
patches; the positional embeddings interpolated to that grid, bicubic), and per patch token an
embedding in the model's output space. A window's approximate embedding is the area-weighted
mean of the tokens it covers, L2-normalised, scored against the index like the CNN's pass.

Dense tokens, MaskCLIP-style (Zhou et al., "Extract Free Dense Labels from CLIP", ECCV 2022):
CLIP's last attention block mixes every patch with the class token's query, so its output tokens
say little about their own place. In the last block each token attends only to itself (the
attention's value path: value projection, then output projection; the residual and MLP kept),
then the final LayerNorm and projection are applied to every token. The blocks before it run as
trained. `TokenMap.of` checks the re-implemented forward on a probe input (the class token of
the ordinary forward at the native size reproduces the model's embedding, cosine >= 0.999), so a
model of another structure falls back to the coarse rule instead of giving wrong maps.

What is measured and what is not: the cost (`scripts/bench_scan.py --backbone clip-vit-b32`: one
pass at 288 px on a 16:9 frame is 144 patch tokens: 188 ms fp32 on this CPU, 3.7 crops' worth); the
quality of the shortlist it gives cannot be measured on this offline machine (no CLIP weights:
random weights' tokens mean nothing). Pooled patch tokens are known to be much weaker than crop
embeddings (CLIPSelf, RegionCLIP), which is why they only shortlist and the exact crop
embeddings decide; their threshold (`map_min_score` of the index's backbone, `index.tuning`:
not measured for CLIP, set to the EfficientNet feature map's cross-validated choice, whose
approximations were as rough, cosine 0.72-0.80 to the exact crop embeddings, as pooled CLIP tokens
are reported to be) is therefore far below the review level. Choose it for your weights with
`scripts/shortlist_recall.py --cv 2` on labelled clips (README, docs/speed.md) and set it in that
backbone's row of `index.tuning.TUNING`.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from detector.embed.backbones import Backbone, image_tensor
from detector.media.regions import Box

__all__ = ["TOKEN_SIDE", "TokenMap", "window_weights"]

#: shorter side (pixels) of the frame's token pass (rounded down to whole patches). Not measured
#: for quality (no CLIP weights): the feature map's FEATURE_SIDE (`detector.shortlist`), whose cost
#: was measured here: 144 tokens, 188 ms fp32, 3.7 crops' worth (module docstring)
TOKEN_SIDE = 288
#: ... and its longer side at most this (an extreme aspect ratio must not make thousands of tokens)
TOKEN_MAX_SIDE = 4 * TOKEN_SIDE


def window_weights(boxes: Sequence[Box], width: int, height: int, gw: int, gh: int) -> torch.Tensor:
    """(B, gh * gw): the share of each grid cell that each box (in `width` x `height` pixels)
    covers, normalised to sum to 1 per box (a box covering no cell keeps zeros)."""
    if not boxes:
        return torch.zeros((0, gh * gw))
    b = torch.tensor(boxes, dtype=torch.float32)
    wx = _cover(b[:, 0] / width * gw, b[:, 2] / width * gw, gw)
    wy = _cover(b[:, 1] / height * gh, b[:, 3] / height * gh, gh)
    w = (wy[:, :, None] * wx[:, None, :]).reshape(len(boxes), gh * gw)
    return w / w.sum(dim=1, keepdim=True).clamp(min=1e-9)


def _cover(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n): how much of each of n unit cells the interval [lo, hi) covers."""
    cells = torch.arange(n, dtype=torch.float32)
    return (torch.minimum(cells + 1, hi[:, None]) - torch.maximum(cells, lo[:, None])).clamp_(min=0)


class TokenMap:
    """Approximate window embeddings of an open_clip ViT from one forward pass of the frame."""

    def __init__(self, backbone: Backbone, side: int = TOKEN_SIDE) -> None:
        self.backbone = backbone
        visual: Any = backbone.module
        self.visual = visual
        self.patch = int(visual.patch_size[0])
        self.side = max(self.patch, side - side % self.patch)
        self.mean = torch.tensor(backbone.preprocess.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(backbone.preprocess.std).view(1, 3, 1, 1)
        self._pos: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def of(cls, backbone: Backbone) -> TokenMap | None:
        """The backbone's token map, or None when it is not an open_clip ViT of the usual structure
        (class-token pooling, learnable positions, standard residual attention blocks), checked
        once per backbone on a probe input (module docstring)."""
        if backbone not in _TOKEN_MAPS:
            tm = cls(backbone) if cls._usual(backbone) else None
            _TOKEN_MAPS[backbone] = tm if tm is not None and tm._reproduces() else None
        return _TOKEN_MAPS[backbone]

    @staticmethod
    def _usual(backbone: Backbone) -> bool:
        if "open_clip" not in sys.modules:  # (an open_clip model has imported it)
            return False
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

        v = backbone.module
        if not isinstance(v, VisionTransformer) or getattr(v, "pool_type", None) != "tok":
            return False
        if getattr(v, "attn_pool", None) is not None or getattr(v, "final_ln_after_pool", True):
            return False
        if getattr(v, "proj", None) is None or not isinstance(v.patch_dropout, torch.nn.Identity):
            return False
        if getattr(v, "output_tokens", False) or not getattr(v.transformer, "batch_first", False):
            return False
        gh, gw = v.grid_size
        blocks = list(v.transformer.resblocks)
        if v.positional_embedding.shape[0] != gh * gw + 1 or not blocks:
            return False
        return all(type(b) is ResidualAttentionBlock and isinstance(b.attn, torch.nn.MultiheadAttention)
                   and b.attn._qkv_same_embed_dim and not hasattr(b, "ln_1_kv") for b in blocks)

    def _reproduces(self) -> bool:
        """Whether this forward (ordinary last block) gives the model's own embedding of a probe."""
        bb = self.backbone
        s = bb.preprocess.size
        x = torch.linspace(-1, 1, 3 * s * s).view(1, 3, s, s).to(bb.device, bb.dtype)
        try:
            with torch.inference_mode():
                mine, theirs = self._forward(x, dense=False)[:, 0], self.visual(x)
            cos = F.cosine_similarity(mine.float(), theirs.float().reshape(1, -1))
        except (RuntimeError, ValueError, TypeError, AttributeError):  # a structure this code does not know
            return False
        return bool(cos.item() >= 0.999)

    def _positions(self, gh: int, gw: int) -> torch.Tensor:
        """(1 + gh * gw, width) positional embeddings for a gh x gw grid (interpolated, cached)."""
        if (gh, gw) not in self._pos:
            v = self.visual
            pos = v.positional_embedding.detach()
            g0, g1 = v.grid_size
            grid = pos[1:].float().reshape(1, g0, g1, -1).permute(0, 3, 1, 2)
            if (gh, gw) != (g0, g1):
                grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
            grid = grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)
            self._pos[(gh, gw)] = torch.cat([pos[:1].float(), grid]).to(pos.dtype)
        return self._pos[(gh, gw)]

    def _forward(self, x: torch.Tensor, *, dense: bool = True) -> torch.Tensor:
        """(B, 1 + tokens, D) output-space tokens of a normalised batch; `dense`: the last block's
        attention replaced by each token's own value path (module docstring)."""
        v = self.visual
        t = v.conv1(x)
        b, c, gh, gw = t.shape
        t = t.reshape(b, c, gh * gw).permute(0, 2, 1)
        cls = v.class_embedding.to(t.dtype).view(1, 1, c).expand(b, 1, c)
        t = torch.cat([cls, t], dim=1) + self._positions(gh, gw).to(t.device, t.dtype)
        t = v.ln_pre(t)
        blocks = list(v.transformer.resblocks)
        for blk in blocks[:-1] if dense else blocks:
            t = blk(t)
        if dense:
            last = blocks[-1]
            attn = last.attn
            width = attn.embed_dim
            y = last.ln_1(t)
            value = F.linear(y, attn.in_proj_weight[2 * width:], None if attn.in_proj_bias is None
                             else attn.in_proj_bias[2 * width:])
            t = t + last.ls_1(attn.out_proj(value))
            t = t + last.ls_2(last.mlp(last.ln_2(t)))
        out: torch.Tensor = v.ln_post(t) @ v.proj
        return out

    def approximate(self, image: Image.Image, boxes: Sequence[Box]) -> np.ndarray:
        """(len(boxes), D) L2-normalised approximate embeddings of `boxes` (in `image`'s pixels)."""
        bb = self.backbone
        w, h = image.size
        scale = min(self.side / min(w, h), TOKEN_MAX_SIDE / max(w, h))
        th = max(self.patch, round(h * scale) // self.patch * self.patch)
        tw = max(self.patch, round(w * scale) // self.patch * self.patch)
        x = image_tensor(image)[None].float()
        x = F.interpolate(x, size=(th, tw), mode=bb.preprocess.interpolation, antialias=True, align_corners=False)
        x = ((x.clamp_(0, 255).round_() / 255.0 - self.mean) / self.std).to(bb.device, bb.dtype)
        with torch.inference_mode():
            tokens = self._forward(x)[0, 1:].float().cpu()
        weights = window_weights(boxes, w, h, tw // self.patch, th // self.patch)
        return F.normalize(weights @ tokens, dim=-1).numpy()


_TOKEN_MAPS: weakref.WeakKeyDictionary[Backbone, TokenMap | None] = weakref.WeakKeyDictionary()
