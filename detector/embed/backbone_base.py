"""What every backbone is, and the table of their loaders: the bottom of the backbone modules.

`Backbone` (a loaded image-embedding model), its `Preprocess`, and `register`: the loaders of
every backbone kind register themselves here on import. Layers, each importing only the ones
below it (no import circle):

    backbone_base      Backbone, Preprocess, image_tensor, register / registered / find_loader
    backbone_effnet    effnet-lite0-imagenet                      (plug-ins: each registers its
    backbone_identity  mamori-identity-lite0                       loaders when imported)
    backbone_timm      timm:MODEL[:FILE]
    backbone_onnx      onnx:PATH.onnx
    backbones          clip-vit-b32, openclip:...; `load_backbone`, `list_backbones`: imports
                       every plug-in module above, so their names are known once it is imported

A new kind of backbone is one more plug-in module that imports this one and `register`s its loader;
`backbones` imports it. `detector.embed.backbones` re-exports `Backbone`, `Preprocess`, `image_tensor`
and `register`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from detector.embed.inference import choose_dtype, dtype_name, keep_freed_memory, probe_images, resolve_device

if TYPE_CHECKING:
    from detector.embed.text import TextTower

__all__ = ["Backbone", "Loader", "Preprocess", "find_loader", "image_tensor", "register", "registered"]


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input tensor: square resize to `size`, then normalise."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Backbone:
    """A loaded image-embedding model.

    `embed` takes PIL images (callers crop regions first) and returns an (N, D) float32 array,
    L2-normalised, one row per image, computed under `torch.inference_mode()`. Scanning uses the
    two halves separately: `resize` (uint8 pixels, batched tensor ops, runs beside the model) and
    `embed_pixels` (normalise, forward). `to` picks device and precision (`detector.embed.inference`).

    Why resizing with torch: bicubic antialiased resizing of uint8 tensors matches Pillow's
    (largest difference 1 grey level, measured) at a quarter of the cost, and crops of one size
    resize in one call.
    """

    #: Images per forward pass. Fixed-size passes keep activation memory bounded and let the
    #: allocator reuse the same blocks: with unchanged regions skipped (`detector.pipeline`) each
    #: frame sends a different number of crops, and one pass per frame (up to 64) grew resident
    #: memory with video length (effnet fp32: 1.95 GB after 10 s, 2.3-2.5 GB after 60 s). At 24
    #: (a 47-crop frame = 24 + 23): 1.52 / 1.61 GB panning, 1.46 / 1.46 GB static camera; at 16:
    #: 1.3 / 1.4 GB (1.4 GB after 180 s) but ViT-B-32 bf16 scans ran ~7% slower. Forward speed per
    #: crop at 24 vs 48: ViT-B-32 99-100%, EfficientNet 99-108%.
    max_batch = 24

    def __init__(self, name: str, module: torch.nn.Module, dim: int, preprocess: Preprocess,
                 weights_sha256: str, *, channels_last: bool = False):
        self.name = name
        self.module = module.eval()
        self.dim = dim
        self.preprocess = preprocess
        self.weights_sha256 = weights_sha256
        self.channels_last = channels_last
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
        #: CLIP's text tower (text prompts, `detector.embed.text`), kept by `load_backbone(..., text=True)`
        self.text: TextTower | None = None

    @property
    def identity(self) -> dict[str, Any]:
        """What an index records to refuse queries embedded by another model or preprocessing."""
        return {"name": self.name, "dim": self.dim, "weights_sha256": self.weights_sha256,
                "preprocess": self.preprocess.to_dict()}

    @property
    def precision(self) -> str:
        return dtype_name(self.dtype)

    def to(self, precision: str = "auto", device: str | None = None) -> Backbone:
        """Move to a device and precision (rules in `detector.embed.inference`); returns self."""
        dev = resolve_device(device)
        keep_freed_memory()
        probe = self.to_tensor(probe_images(self.preprocess.size)) if precision == "auto" and dev.type == "cpu" else None
        dtype = choose_dtype(self.module, probe, precision, dev, channels_last=self.channels_last)
        self.module = self.module.to(device=dev, dtype=dtype)
        self.device, self.dtype = dev, dtype
        self._mean, self._std = self._mean.to(dev), self._std.to(dev)
        return self

    def resize(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 (3, h, w) crops → one uint8 (N, 3, S, S) batch, each resized to the input size."""
        s = self.preprocess.size
        out = torch.empty((len(crops), 3, s, s), dtype=torch.uint8)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, c in enumerate(crops):
            groups.setdefault((c.shape[1], c.shape[2]), []).append(i)
        for (h, w), idx in groups.items():
            batch = torch.stack([crops[i] for i in idx])
            if (h, w) != (s, s):
                batch = F.interpolate(batch, size=(s, s), mode=self.preprocess.interpolation, antialias=True,
                                      align_corners=False)
            out[idx] = batch
        return out

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a uint8 (N, 3, S, S) batch from `resize`: (N, D) float32, L2-normalised."""
        parts = []
        for i in range(0, len(pixels), self.max_batch):
            x = pixels[i : i + self.max_batch].to(self.device).float().div_(255.0)
            parts.append(self.embed_tensor((x - self._mean) / self._std))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)

    def to_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resize and normalise PIL images: an (N, 3, S, S) float32 tensor (the model's input)."""
        x = self.resize([image_tensor(im) for im in images]).float().div_(255.0)
        return (x - self._mean.cpu()) / self._std.cpu()

    def embed_tensor(self, x: torch.Tensor) -> np.ndarray:
        """Embed a normalised batch: (N, D) float32, L2-normalised."""
        x = x.to(device=self.device, dtype=self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            feats = torch.nn.functional.normalize(self.module(x).float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_pixels(self.resize([image_tensor(im) for im in images]))


def image_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image as a uint8 (3, H, W) RGB tensor (a copy: PIL buffers are read-only)."""
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)


#: builds the named backbone (its full name, e.g. "timm:resnet50")
Loader = Callable[[str], Backbone]
_LOADERS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Register a backbone loader under `name` (a name ending in ':' matches as a prefix)."""

    def deco(fn: Loader) -> Loader:
        if name in _LOADERS:
            raise ValueError(f"backbone {name!r} is registered twice")
        _LOADERS[name] = fn
        return fn

    return deco


def registered() -> list[str]:
    """Every registered name (prefixes end in ':'), sorted."""
    return sorted(_LOADERS)


def find_loader(name: str) -> Loader | None:
    """The loader registered under `name`, else under a prefix of it ending in ':'; None if none."""
    return _LOADERS.get(name) or next(
        (fn for key, fn in _LOADERS.items() if key.endswith(":") and name.startswith(key)), None
    )
