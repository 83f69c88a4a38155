"""Safe reading of still images (reference art, background images, uploaded stills).

Every image mamori reads from disk or from a request goes through `open_image`, which checks the
header's pixel count *before* decoding, so a decompression bomb (a tiny PNG that claims 50,000 x
50,000 pixels) costs nothing, and maps Pillow's many error types to one `ReferenceImageError`.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

from PIL import Image, ImageFile, UnidentifiedImageError

from index.errors import ImageTooLargeError, ReferenceImageError

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "file_sha256", "open_image", "to_rgb"]

#: Largest image accepted, in pixels (width x height). 40 MP covers 8K frames and print-size art.
DEFAULT_MAX_PIXELS = 40_000_000

#: File suffixes treated as still images when walking folders.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})

#: Grey that transparent pixels are composited onto: neutral against any scene.
_MATTE = (128, 128, 128)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def open_image(
    source: str | Path | bytes | Image.Image, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open an image, refuse bombs and broken files, and return it decoded as RGB.

    Args:
        source: a path, the file's bytes, or an already-open PIL image.
        max_pixels: refuse images whose header claims more pixels than this.

    Raises:
        ReferenceImageError: empty, truncated, corrupt, not an image, or too many pixels.
    """
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, "image")
        return to_rgb(source)
    name = "image bytes" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            if not source:
                raise ReferenceImageError("empty image data")
            fp: io.BytesIO | Path = io.BytesIO(source)
        else:
            fp = Path(source)
            if fp.stat().st_size == 0:
                raise ReferenceImageError(f"{name}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            _check_pixels(img.size, max_pixels, name)
            img.load()
    except ReferenceImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{name}: refused as a decompression bomb ({exc})") from exc
    except FileNotFoundError as exc:
        raise ReferenceImageError(f"{name}: no such file") from exc
    except UnidentifiedImageError as exc:
        raise ReferenceImageError(f"{name}: not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated / corrupt data
        raise ReferenceImageError(f"{name}: corrupt or truncated image ({exc})") from exc
    return to_rgb(img)


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ReferenceImageError(f"{name}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
            "(decompression-bomb guard)"
        )


def to_rgb(img: Image.Image) -> Image.Image:
    """Return an RGB copy, compositing any transparency onto a neutral grey matte."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, _MATTE)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")


# Pillow refuses truncated files by default; keep it that way explicitly.
ImageFile.LOAD_TRUNCATED_IMAGES = False
