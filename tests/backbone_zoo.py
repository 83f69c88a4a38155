"""Tiny backbones the tests build themselves (no network), and the embedding contract every
backbone must keep: used by the per-backbone tests and the registry-wide contract test."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from helpers import reference_art
from PIL import Image

from detector.embed.backbones import Backbone
from detector.media.synth import draw_scene

IMAGES = [Image.effect_noise((64, 64), s).convert("RGB") for s in (20, 60)] + [
    Image.new("RGB", (50, 70), "red"), draw_scene("tb-0", 120, 90), reference_art("tb", 1)]


def save_timm(path: Path, arch: str, **kwargs: int) -> Path:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **kwargs)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def check_contract(bb: Backbone, dim: int) -> np.ndarray:
    """Shape, unit norm, determinism, and the same vector for a crop alone as inside any batch."""
    emb = bb.embed(IMAGES)
    assert emb.shape == (len(IMAGES), dim) and emb.dtype == np.float32 and bb.dim == dim
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(bb.embed(IMAGES), emb)
    alone = np.concatenate([bb.embed([im]) for im in IMAGES])
    np.testing.assert_allclose(alone, emb, atol=1e-5)
    bb.max_batch = 2  # chunks of 2, 2, 1
    np.testing.assert_allclose(bb.embed(IMAGES), emb, atol=1e-5)
    assert np.abs(emb @ emb.T - np.eye(len(IMAGES))).max() > 1e-3  # not a constant vector
    return emb


class TinyEmbedder(torch.nn.Module):
    """A few convolutions, a global pool and a linear layer: the shape of a real image embedder."""

    def __init__(self, *, nhwc: bool = False, two_outputs: bool = False):
        super().__init__()
        torch.manual_seed(1)
        self.nhwc, self.two_outputs = nhwc, two_outputs
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 24))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        emb = self.body(x.permute(0, 3, 1, 2) if self.nhwc else x)
        return (emb[:, :5], emb) if self.two_outputs else emb


def export_onnx(path: Path, net: TinyEmbedder, sidecar: dict[str, object], *, batch: int | None) -> Path:
    shape = (batch or 2, 32, 32, 3) if net.nhwc else (batch or 2, 3, 32, 32)
    outs = ["logits", "embedding"] if net.two_outputs else ["embedding"]
    axes = None if batch else {"pixels": {0: "n"}, **{o: {0: "n"} for o in outs}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its own deprecation
        torch.onnx.export(net.eval(), (torch.rand(shape),), str(path), dynamo=False, input_names=["pixels"],
                          output_names=outs, dynamic_axes=axes)
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


SIDECAR = {"input_size": 32, "mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}


