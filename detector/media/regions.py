"""Which parts of a frame are embedded: square windows that together cover the whole frame.

Each frame is embedded as the whole frame (padded to a square with a neutral matte, so nothing is
cropped or distorted) plus square windows at three scales of the frame's shorter side, 50% overlap:
1.0 (3 windows on a 16:9 frame), 0.6 (15) and 0.45 (28): 47 crops per 16:9 frame, embedded in batched
forward passes; `count_windows` gives the cost for any size. Why windows: in generated video
the character stands in a scene, among other things, at 45-95% of the frame height; a window about
its size sees the character instead of the scene. Measured on the dev set (AP of video scores,
same scoring): whole frame + 1.0 + 0.6 windows 0.93; adding 0.45 windows 0.96; adding 0.8 as well
changed nothing; more scales cost linearly (the forward pass is ~95% of scan time).

Reference images are embedded in two views (`reference_views`): as given and mirrored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_SCALES", "GRID", "Box", "count_windows", "frame_regions", "pad_square", "pad_square_tensor",
           "reference_views", "square_windows"]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive

#: Window sides as fractions of the frame's shorter side. Measured on dev with effnet-lite0-imagenet
#: (video AP: whole + 1.0 + 0.6 windows 0.93, adding 0.45 windows 0.96; a 0.8 scale added nothing;
#: docs/how-it-works.md, step 2)
DEFAULT_SCALES: tuple[float, ...] = (1.0, 0.6, 0.45)
#: overlap of neighbouring windows. Not measured: chosen by hand (core commit 81051fd)
OVERLAP = 0.5
#: windows along the longer side are at least its length / MAX_STEPS (bounds the crops per frame).
#: Not measured: chosen by hand (commit 2195f7d, issue 16: an extreme aspect ratio must not make
#: thousands of crops); a 16:9 frame is unaffected
MAX_STEPS = 8
#: the layout above, as a scan store's header records it (`index.scanstore`: a rescan refuses another)
GRID = {"overlap": OVERLAP, "max_steps": MAX_STEPS}
_MATTE = (128, 128, 128)


def _starts(length: int, side: int, overlap: float) -> list[int]:
    if side >= length:
        return [0]
    n = math.ceil((length - side) / (side * (1 - overlap))) + 1
    return [round(i * (length - side) / (n - 1)) for i in range(n)]


def square_windows(width: int, height: int, scales: Sequence[float] = DEFAULT_SCALES,
                   overlap: float = OVERLAP) -> list[Box]:
    """Square boxes covering a width x height frame at each scale, largest scale first.

    >>> square_windows(640, 360, scales=(1.0,))
    [(0, 0, 360, 360), (140, 0, 500, 360), (280, 0, 640, 360)]
    """
    boxes: list[Box] = []
    short = min(width, height)
    # an extreme aspect ratio (a 4000x1 strip, a banner) would need thousands of tiny windows:
    # no window is narrower than 1/MAX_STEPS of the longer side (frames up to ~3.6:1 unaffected)
    least = math.ceil(max(width, height) / MAX_STEPS)
    for s in sorted(scales, reverse=True):
        side = max(1, round(s * short), least)
        for y in _starts(height, side, overlap):
            for x in _starts(width, side, overlap):
                boxes.append((x, y, min(x + side, width), min(y + side, height)))
    return boxes


def frame_regions(width: int, height: int, scales: Sequence[float] = DEFAULT_SCALES) -> list[Box]:
    """The regions embedded for one frame: the whole frame (padded to a square), then the windows."""
    return [(0, 0, width, height), *square_windows(width, height, scales)]


def count_windows(width: int, height: int, scales: Sequence[float] = DEFAULT_SCALES) -> int:
    """How many crops one frame of this size costs (the per-frame forward-pass batch).

    >>> count_windows(640, 360)
    47
    """
    return len(frame_regions(width, height, scales))


def pad_square(img: Image.Image) -> Image.Image:
    """Centre the image on a square matte of its longer side (no crop, no distortion)."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new("RGB", (side, side), _MATTE)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def pad_square_tensor(pixels: torch.Tensor) -> torch.Tensor:
    """`pad_square` for a uint8 (3, H, W) tensor."""
    import torch  # here: `mamori rescan` uses this module and runs no model

    _, h, w = pixels.shape
    if w == h:
        return pixels
    side = max(w, h)
    out = torch.empty((3, side, side), dtype=pixels.dtype)
    out[:] = torch.tensor(_MATTE, dtype=pixels.dtype).view(3, 1, 1)
    y, x = (side - h) // 2, (side - w) // 2
    out[:, y : y + h, x : x + w] = pixels
    return out


def reference_views(img: Image.Image) -> dict[str, Image.Image]:
    """The views of one reference image embedded at index time, by name.

    ``full`` (the image padded to a square) and ``mirror`` (generators flip characters freely).
    Measured on the dev set: the mirror view helps; crops of the art to its bounding box and
    cut-outs on a grey matte did not (they made references more generic), so they are not used.
    """
    return {"full": pad_square(img), "mirror": pad_square(ImageOps.mirror(img))}
