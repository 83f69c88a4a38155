"""Synthetic, licence-free test and demo data: drawn characters, cluttered scenes, and videos.

Everything is drawn with Pillow from a seed, so the demo and the tests need no downloads and no
third-party art. A character is a stylised figure whose palette, hair, outfit pattern and
accessory follow from its name; `pose` moves the arms and tilts the figure.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["composite", "draw_character", "draw_scene", "make_clip", "write_video"]


def _rng(*key: object) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "big"))


def _colour(r: random.Random) -> tuple[int, int, int]:
    h, s, v = r.random(), 0.5 + 0.5 * r.random(), 0.55 + 0.45 * r.random()
    i, f = int(h * 6), h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return tuple(int(255 * c) for c in rgb)  # type: ignore[return-value]


def draw_character(name: str, size: int = 256, pose: int = 0) -> Image.Image:
    """An RGBA figure on a transparent background, recognisably the same for the same name."""
    r = _rng("character", name)
    skin, hair, outfit, accent, trim = (_colour(r) for _ in range(5))
    hair_style, pattern, accessory, body = r.randrange(3), r.randrange(3), r.randrange(3), r.randrange(3)
    S = 4 * size  # draw large, downsample for smooth edges
    im = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    cx, u = S // 2, S / 16
    _draw_body(d, cx, u, body, pattern, outfit, accent, trim)
    _draw_limbs(d, cx, u, pose, outfit, skin, trim)
    _draw_head(d, cx, u, hair_style, skin, hair, accent)
    _draw_accessory(d, cx, u, accessory, accent, trim)
    im = im.rotate((pose % 3 - 1) * 6, resample=Image.Resampling.BICUBIC, center=(cx, 8 * u))
    return im.resize((size, size), Image.Resampling.LANCZOS)


Colour = tuple[int, int, int]


def _draw_body(d: ImageDraw.ImageDraw, cx: int, u: float, body: int, pattern: int, outfit: Colour, accent: Colour,
               trim: Colour) -> None:
    if body == 0:  # dress
        d.polygon([(cx - 3 * u, 7 * u), (cx + 3 * u, 7 * u), (cx + 4.5 * u, 14 * u), (cx - 4.5 * u, 14 * u)], fill=outfit)
    elif body == 1:  # broad armour
        d.polygon([(cx - 5 * u, 7 * u), (cx + 5 * u, 7 * u), (cx + 3 * u, 14 * u), (cx - 3 * u, 14 * u)], fill=outfit)
        d.ellipse([cx - 6 * u, 6.5 * u, cx - 3.5 * u, 9 * u], fill=trim)
        d.ellipse([cx + 3.5 * u, 6.5 * u, cx + 6 * u, 9 * u], fill=trim)
    else:  # round robe
        d.ellipse([cx - 4.5 * u, 6.8 * u, cx + 4.5 * u, 14.5 * u], fill=outfit)
    for k in range(6):
        y = 8 * u + k * u
        if pattern == 0:
            d.line([(cx - 3.5 * u, y), (cx + 3.5 * u, y)], fill=accent, width=int(u / 3))
        elif pattern == 1:
            for j in range(-2, 3):
                d.ellipse([cx + j * 1.4 * u - u / 4, y - u / 4, cx + j * 1.4 * u + u / 4, y + u / 4], fill=accent)
        elif k % 2 == 0:
            for j in range(-2, 2, 2):
                d.rectangle([cx + j * u, y, cx + (j + 1) * u, y + u], fill=accent)
    d.rectangle([cx - 3 * u, 10.5 * u, cx + 3 * u, 11.2 * u], fill=trim)


def _draw_limbs(d: ImageDraw.ImageDraw, cx: int, u: float, pose: int, outfit: Colour, skin: Colour,
                trim: Colour) -> None:
    """Arms (the pose moves them) and legs."""
    for side in (-1, 1):
        ang = math.radians(20 + 35 * ((pose + (side > 0)) % 3))
        sx, sy = cx + side * 3 * u, 7.6 * u
        ex, ey = sx + side * 4 * u * math.sin(ang), sy + 4 * u * math.cos(ang)
        d.line([(sx, sy), (ex, ey)], fill=outfit, width=int(1.2 * u))
        d.ellipse([ex - 0.7 * u, ey - 0.7 * u, ex + 0.7 * u, ey + 0.7 * u], fill=skin)
        d.rectangle([cx + side * 1.2 * u - 0.8 * u, 14 * u, cx + side * 1.2 * u + 0.8 * u, 15.6 * u], fill=trim)


def _draw_head(d: ImageDraw.ImageDraw, cx: int, u: float, hair_style: int, skin: Colour, hair: Colour,
               accent: Colour) -> None:
    """Head, hair, face."""
    d.ellipse([cx - 2.6 * u, 1.6 * u, cx + 2.6 * u, 7 * u], fill=skin)
    if hair_style == 0:  # spikes
        pts = [(cx - 3 * u, 3.5 * u)] + [(cx - 3 * u + k * u, (0.2 if k % 2 else 2.2) * u) for k in range(7)] + [(cx + 3 * u, 3.5 * u)]
        d.polygon(pts, fill=hair)
    elif hair_style == 1:  # long
        d.rectangle([cx - 3 * u, 2 * u, cx + 3 * u, 9 * u], fill=hair)
        d.ellipse([cx - 3 * u, 0.8 * u, cx + 3 * u, 5 * u], fill=hair)
        d.ellipse([cx - 2.2 * u, 2.8 * u, cx + 2.2 * u, 7 * u], fill=skin)
    else:  # bob with fringe
        d.chord([cx - 3 * u, 1 * u, cx + 3 * u, 7.5 * u], 180, 360, fill=hair)
        d.rectangle([cx - 3 * u, 4 * u, cx - 2 * u, 6.5 * u], fill=hair)
        d.rectangle([cx + 2 * u, 4 * u, cx + 3 * u, 6.5 * u], fill=hair)
    for side in (-1, 1):
        ex = cx + side * 1.1 * u
        d.ellipse([ex - 0.6 * u, 4.2 * u, ex + 0.6 * u, 5.4 * u], fill=(255, 255, 255))
        d.ellipse([ex - 0.3 * u, 4.5 * u, ex + 0.3 * u, 5.2 * u], fill=accent)
    d.arc([cx - u, 5 * u, cx + u, 6.3 * u], 20, 160, fill=(90, 30, 30), width=int(u / 4))


def _draw_accessory(d: ImageDraw.ImageDraw, cx: int, u: float, accessory: int, accent: Colour, trim: Colour) -> None:
    if accessory == 0:  # star
        pts = [(cx + 5 * u + 1.5 * u * math.cos(a) * (1 if k % 2 == 0 else 0.45),
                3 * u + 1.5 * u * math.sin(a) * (1 if k % 2 == 0 else 0.45))
               for k, a in enumerate(np.linspace(-math.pi / 2, 1.5 * math.pi, 10, endpoint=False))]
        d.polygon(pts, fill=trim)
    elif accessory == 1:  # staff
        d.line([(cx - 6.5 * u, 3 * u), (cx - 6.5 * u, 15 * u)], fill=trim, width=int(0.6 * u))
        d.ellipse([cx - 7.5 * u, 1.5 * u, cx - 5.5 * u, 3.5 * u], fill=accent)
    else:  # hat
        d.polygon([(cx - 3.2 * u, 2.2 * u), (cx + 3.2 * u, 2.2 * u), (cx, -0.5 * u)], fill=trim)


def draw_scene(seed: int | str, width: int = 640, height: int = 360) -> Image.Image:
    """A cluttered RGB landscape: sky gradient, hills, houses, trees, sun and random shapes."""
    r = _rng("scene", seed)
    top, bottom = np.array(_colour(r)), np.array(_colour(r))
    t = np.linspace(0, 1, height)[:, None, None]
    sky = (top * (1 - t) + bottom * t).astype(np.uint8).repeat(width, axis=1)
    im = Image.fromarray(sky, "RGB")
    d = ImageDraw.Draw(im)
    sx, sy, sr = r.uniform(0, width), r.uniform(0, height / 3), r.uniform(15, 40)
    d.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=_colour(r))
    ground = int(height * r.uniform(0.55, 0.75))
    pts = [(0, height)] + [(x, ground - r.uniform(0, height / 5)) for x in np.linspace(0, width, 8)] + [(width, height)]
    d.polygon(pts, fill=_colour(r))
    for _ in range(r.randint(6, 12)):
        kind, x, y = r.randrange(4), r.uniform(0, width), r.uniform(height / 4, height)
        s = r.uniform(15, 60)
        if kind == 0:  # house
            d.rectangle([x, y - s, x + s, y], fill=_colour(r))
            d.polygon([(x - s / 5, y - s), (x + 1.2 * s, y - s), (x + s / 2, y - 1.6 * s)], fill=_colour(r))
        elif kind == 1:  # tree
            d.rectangle([x - s / 10, y - s, x + s / 10, y], fill=(100, 70, 40))
            d.ellipse([x - s / 2, y - 1.8 * s, x + s / 2, y - 0.8 * s], fill=_colour(r))
        elif kind == 2:
            d.ellipse([x, y, x + s, y + s * r.uniform(0.4, 1.2)], fill=_colour(r))
        else:
            d.polygon([(x, y), (x + s, y + s / 3), (x + s / 3, y - s)], fill=_colour(r))
    return im.filter(ImageFilter.GaussianBlur(0.6))


def composite(scene: Image.Image, figure: Image.Image, *, height_frac: float, x_frac: float, y_frac: float = 0.5) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Paste an RGBA figure (resized to `height_frac` of the scene height) centred at (x_frac, y_frac).

    Returns the new scene and the pasted box (x0, y0, x1, y1).
    """
    h = max(1, round(scene.height * height_frac))
    w = max(1, round(figure.width * h / figure.height))
    fig = figure.resize((w, h), Image.Resampling.LANCZOS)
    x0 = min(max(0, round(x_frac * scene.width - w / 2)), scene.width - w)
    y0 = min(max(0, round(y_frac * scene.height - h / 2)), scene.height - h)
    out = scene.copy()
    out.paste(fig, (x0, y0), fig if fig.mode == "RGBA" else None)
    return out, (x0, y0, x0 + w, y0 + h)


def write_video(path: str | Path, frames: Iterable[Image.Image], fps: int = 12, codec: str = "libx264") -> None:
    """Encode RGB frames to a video file with PyAV (H.264 in yuv420p by default)."""
    with av.open(str(path), mode="w") as out:
        stream: av.video.stream.VideoStream | None = None
        for img in frames:
            if stream is None:
                stream = cast("av.video.stream.VideoStream", out.add_stream(codec, rate=fps))
                stream.width, stream.height = img.width - img.width % 2, img.height - img.height % 2
                stream.pix_fmt = "yuv420p"
            frame = av.VideoFrame.from_image(img.convert("RGB").crop((0, 0, stream.width, stream.height)))  # type: ignore[no-untyped-call]
            out.mux(stream.encode(frame))
        if stream is not None:
            out.mux(stream.encode(None))


def make_clip(path: str | Path, scene_seed: int | str, figure: Image.Image | None, *, duration: float = 4.0,
              fps: int = 12, appear: tuple[float, float] = (1.0, 3.0), height_frac: float = 0.6,
              x_frac: float = 0.5, size: tuple[int, int] = (640, 360), drift: float = 0.05) -> list[tuple[int, int, int, int]]:
    """Write a clip of a scene in which `figure` (if any) is visible during `appear` seconds.

    The figure drifts horizontally by `drift` of the width across its appearance. Returns the
    figure's box in each frame where it is visible.
    """
    scene = draw_scene(scene_seed, *size)
    boxes: list[tuple[int, int, int, int]] = []

    def frames() -> Iterable[Image.Image]:
        n = round(duration * fps)
        for i in range(n):
            t = i / fps
            if figure is not None and appear[0] <= t < appear[1]:
                p = (t - appear[0]) / max(1e-6, appear[1] - appear[0])
                img, box = composite(scene, figure, height_frac=height_frac, x_frac=x_frac + drift * (p - 0.5))
                boxes.append(box)
                yield img
            else:
                yield scene

    write_video(path, frames(), fps=fps)
    return boxes

