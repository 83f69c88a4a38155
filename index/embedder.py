"""`Embedder`: what building an index needs from a backbone (the backbone itself lives in
`detector`; `detector.embed.embedding.RegionEmbedder` implements it).

Its own module, below `index.build` and `index.precision`, which both take one: the build embeds
references with it, the precision probe embeds its probe image with it (no import circle).
`index.build` re-exports it (`from index.build import Embedder` keeps working).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

__all__ = ["Embedder"]


class Embedder(Protocol):
    """What index building needs from a backbone (implemented by `detector.embed.embedding`).

    An embedder may also have a `precision` attribute (fp32, bf16, fp16): a build records it
    (`index.precision`); without it the index's precision is unknown and never checked.
    """

    @property
    def identity(self) -> dict[str, Any]:
        """name, weights_sha256, dim and preprocess of the backbone: stored in `index.json`."""
        ...

    def embed_references(self, images: Sequence[Image.Image]) -> list[tuple[np.ndarray, list[str]]]:
        """Per image: (V, D) float32 L2-normalised vectors and the name of each view."""
        ...

    def embed_queries(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Per image: (R, D) float32 L2-normalised vectors, embedded as a video frame is."""
        ...
