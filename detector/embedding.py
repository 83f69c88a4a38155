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
from detector.regions import DEFAULT_SCALES, Box, frame_regions, pad_square, reference_views

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
        views = [reference_views(im) for im in images]
        vecs = self._embed_many([v for vs in views for v in vs.values()])
        out, at = [], 0
        for vs in views:
            out.append((vecs[at : at + len(vs)], list(vs)))
            at += len(vs)
        return out

    def regions(self, image: Image.Image) -> list[Box]:
        return frame_regions(image.width, image.height, self.scales)

    def embed_frames(self, images: Sequence[Image.Image]) -> list[tuple[np.ndarray, list[Box]]]:
        """Per image: (R, D) region vectors and each region's box in the image's pixels.

        Region 0 is the whole image (padded to a square), then the square windows.
        """
        boxes = [self.regions(im) for im in images]
        crops = [pad_square(im) if i == 0 else im.crop(b) for im, bs in zip(images, boxes) for i, b in enumerate(bs)]
        vecs = self._embed_many(crops)
        out, at = [], 0
        for bs in boxes:
            out.append((vecs[at : at + len(bs)], bs))
            at += len(bs)
        return out

    def embed_queries(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        return [v for v, _ in self.embed_frames(images)]
