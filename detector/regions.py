"""Which parts of a frame are embedded: square windows that together cover the whole frame.

Why windows and not the whole frame: CLIP-style models take a square input; squashing a 16:9
frame distorts the character and a centre crop drops the sides, where a character may stand.
Square windows at scale 1.0 (side = the frame's shorter side, 50% overlap) cover every pixel
undistorted: 3 windows for a 16:9 frame, 1 for a square image. The 0.6 scale (15 windows on a
16:9 frame, 18 in all) finds a character that fills only part of the frame; `count_windows`
gives the per-frame cost for any size.

Reference images are embedded whole, padded to a square with a neutral matte (`pad_square`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image

__all__ = ["DEFAULT_SCALES", "Box", "count_windows", "pad_square", "square_windows"]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive

#: Window sides as fractions of the frame's shorter side.
DEFAULT_SCALES: tuple[float, ...] = (1.0, 0.6)
OVERLAP = 0.5
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
    for s in sorted(scales, reverse=True):
        side = max(1, round(s * short))
        for y in _starts(height, side, overlap):
            for x in _starts(width, side, overlap):
                boxes.append((x, y, min(x + side, width), min(y + side, height)))
    return boxes


def count_windows(width: int, height: int, scales: Sequence[float] = DEFAULT_SCALES) -> int:
    """How many crops one frame of this size costs (the per-frame forward-pass batch)."""
    return len(square_windows(width, height, scales))


def pad_square(img: Image.Image) -> Image.Image:
    """Centre the image on a square matte of its longer side (no crop, no distortion)."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new("RGB", (side, side), _MATTE)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out
