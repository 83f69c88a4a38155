"""Region embedding: turns frames and reference images into vectors with a `Backbone`.

`RegionEmbedder` implements `index.Embedder` (what index building needs) and `embed_frames`
(what scanning needs). All regions of all images in a call go through one batched forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from detector.backbones import Backbone
from detector.regions import DEFAULT_SCALES, Box, pad_square, square_windows

__all__ = ["RegionEmbedder"]


class RegionEmbedder:
    """Embeds each image as a set of square regions (queries) or as a padded whole (references)."""

    def __init__(self, backbone: Backbone, *, scales: Sequence[float] = DEFAULT_SCALES, batch_size: int = 32):
        self.backbone = backbone
        self.scales = tuple(scales)
        self.batch_size = batch_size

    @property
    def identity(self) -> dict[str, Any]:
        return self.backbone.identity

    def _embed_many(self, crops: list[Image.Image]) -> np.ndarray:
        parts = [self.backbone.embed(crops[i : i + self.batch_size]) for i in range(0, len(crops), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.backbone.dim), np.float32)

    def embed_references(self, images: Sequence[Image.Image]) -> list[tuple[np.ndarray, list[str]]]:
        vecs = self._embed_many([pad_square(im) for im in images])
        return [(vecs[i : i + 1], ["full"]) for i in range(len(images))]

    def embed_frames(self, images: Sequence[Image.Image]) -> list[tuple[np.ndarray, list[Box]]]:
        """Per image: (R, D) region vectors and each region's box in the image's pixels."""
        boxes = [square_windows(im.width, im.height, self.scales) for im in images]
        crops = [im.crop(b) for im, bs in zip(images, boxes) for b in bs]
        vecs = self._embed_many(crops)
        out, at = [], 0
        for bs in boxes:
            out.append((vecs[at : at + len(bs)], bs))
            at += len(bs)
        return out

    def embed_queries(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        return [v for v, _ in self.embed_frames(images)]
