"""`mamori-identity-lite0`: mamori's own character-identity backbone, shipped in this package.

EfficientNet-Lite0 (timm `tf_efficientnet_lite0`, started from the ImageNet weights of
`effnet-lite0-imagenet`) trained by metric learning on many drawings of each character from
Debian's game-art packages (`scripts/identity_corpus.py`, `scripts/train_identity.py`; sources,
licences, training command and figures in the model card, `detector/weights/MODEL_CARD.md`).

Why the projection is a 1x1 convolution on the feature map and not a linear layer after pooling:
the two are the same map (averaging commutes with a linear map), and in this form the embedding is
still the plain average of a 4-D feature map, so the scan's one-pass shortlist
(`detector.shortlist.FeatureMap`) works for this backbone as for the ImageNet one.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch

from detector.embed.backbone_base import Backbone, register
from detector.embed.backbone_effnet import effnet_backbone
from detector.errors import BackboneError, BackboneUnavailableError
from index.images import file_sha256

__all__ = ["IDENTITY_DIM", "IDENTITY_WEIGHTS", "IdentityNet", "identity_net", "load_identity"]

IDENTITY_WEIGHTS = Path(__file__).parents[1] / "weights" / "mamori-identity-lite0.safetensors"
#: embedding size: the projection of the 1280-d EfficientNet features
IDENTITY_DIM = 256


class IdentityNet(torch.nn.Module):
    """EfficientNet-Lite0 trunk + a 1x1 projection: `forward_features` (N, D, h, w), `forward` its mean."""

    def __init__(self, trunk: torch.nn.Module, dim: int = IDENTITY_DIM):
        super().__init__()
        self.trunk = trunk
        self.proj = torch.nn.Conv2d(cast("int", trunk.num_features), dim, kernel_size=1)
        self.num_features = dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        features = cast("torch.Tensor", self.trunk.forward_features(x))  # type: ignore[operator]  # timm's untyped API
        return cast("torch.Tensor", self.proj(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))


def identity_net(dim: int = IDENTITY_DIM) -> IdentityNet:
    """The architecture with no trained weights (random projection, random trunk)."""
    import timm

    return IdentityNet(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0), dim)


def load_identity(path: Path, dim: int = IDENTITY_DIM) -> IdentityNet:
    """The identity model with the weights in `path` (safetensors, every tensor of the model)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise BackboneUnavailableError(
            f"mamori-identity-lite0 weights are missing ({path}); reinstall mamori or train them with "
            "scripts/train_identity.py"
        )
    model = identity_net(dim)
    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise BackboneError(f"cannot load mamori-identity-lite0 weights from {path}: {exc}") from exc
    return model.eval()


@register("mamori-identity-lite0")
def _load_identity(name: str) -> Backbone:
    return effnet_backbone(name, load_identity(IDENTITY_WEIGHTS), IDENTITY_DIM, file_sha256(IDENTITY_WEIGHTS))
