"""Region embedding: turns frames and reference images into vectors with a `Backbone`.

`RegionEmbedder` implements `index.Embedder` (what index building needs, with `embed_texts` for
text prompts) and `embed_frames` (what scanning needs). All regions of a frame are cropped from
one tensor, resized together and go through one batched forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from detector.embed.backbones import Backbone, image_tensor
from detector.media.regions import DEFAULT_SCALES, Box, frame_regions, pad_square_tensor, reference_views

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

    @property
    def precision(self) -> str:
        """The backbone's precision (fp32, bf16, fp16): recorded by a build (`index.precision`)."""
        return self.backbone.precision

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

    def prepare_frame(self, image: Image.Image) -> tuple[torch.Tensor, list[Box]]:
        """The first half of `embed_frames` (no model): a frame's regions as one uint8 (R, 3, S, S)
        batch ready for `Backbone.embed_pixels`, and the regions' boxes."""
        return self.prepare_regions(image, None)

    def prepare_regions(self, image: Image.Image, ids: Sequence[int] | None) -> tuple[torch.Tensor, list[Box]]:
        """`prepare_frame` for only the regions `ids` (None: all), the same pixels as there
        (`mamori rescan` re-embeds a few regions of a frame); the boxes are all the frame's."""
        boxes = self.regions(image)
        pixels = image_tensor(image)
        crops = [pad_square_tensor(pixels) if i == 0 else pixels[:, boxes[i][1]:boxes[i][3], boxes[i][0]:boxes[i][2]]
                 for i in (range(len(boxes)) if ids is None else ids)]
        return self.backbone.resize(crops), boxes

    def embed_frames(self, images: Sequence[Image.Image]) -> list[tuple[np.ndarray, list[Box]]]:
        """Per image: (R, D) region vectors and each region's box in the image's pixels.

        Region 0 is the whole image (padded to a square), then the square windows.
        """
        out = []
        for im in images:
            pixels, boxes = self.prepare_frame(im)
            out.append((self.backbone.embed_pixels(pixels), boxes))
        return out

    def embed_queries(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        return [v for v, _ in self.embed_frames(images)]

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text prompts through the backbone's text tower (`detector.embed.text`): (N, D) float32, L2-normalised.

        Raises:
            ConfigError: the backbone has no text tower (effnet, timm:, onnx:), or was loaded without it.
        """
        if self.backbone.text is None:
            from detector.embed.text import no_text_tower

            raise no_text_tower(self.backbone.name)
        return self.backbone.text.embed(texts)
