from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detector import BackboneError, BackboneUnavailableError, ConfigError, list_backbones, load_backbone
from detector.backbones import register
from index.images import file_sha256

IMAGES = [Image.effect_noise((64, 64), s).convert("RGB") for s in (20, 60)] + [Image.new("RGB", (50, 70), "red")]


def test_registry_names() -> None:
    assert {"clip-vit-b32", "effnet-lite0-imagenet", "openclip:"} <= set(list_backbones())
    with pytest.raises(ValueError, match="twice"):
        register("clip-vit-b32")(lambda name: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="unknown backbone"):
        load_backbone("resnet-9000")


@pytest.mark.parametrize("kind", ["safetensors", "pt"])
def test_tiny_openclip_checkpoint(tiny_openclip: dict[str, Path], kind: str) -> None:
    name = f"openclip:{tiny_openclip['config']}:{tiny_openclip[kind]}"
    bb = load_backbone(name)
    emb = bb.embed(IMAGES)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert bb.weights_sha256 == file_sha256(tiny_openclip[kind])
    assert bb.preprocess.size == 32
    np.testing.assert_allclose(load_backbone(name).embed(IMAGES), emb, atol=1e-6)  # same weights, same vectors


def test_openclip_checkpoint_must_be_weights_only(tiny_openclip: dict[str, Path], tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": torch.load(tiny_openclip["pt"], weights_only=True), "x": Path("/")}, evil)
    with pytest.raises(BackboneError):
        load_backbone(f"openclip:{tiny_openclip['config']}:{evil}")


def test_openclip_errors(tiny_openclip: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BackboneUnavailableError, match="not found"):
        load_backbone(f"openclip:{tiny_openclip['config']}:{tmp_path / 'missing.safetensors'}")
    with pytest.raises(ConfigError, match="unknown open_clip architecture"):
        load_backbone("openclip:NoSuchArch:openai")
    with pytest.raises(ConfigError, match="no pretrained tag"):
        load_backbone("openclip:ViT-B-32:no-such-tag")
    wrong = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file
    save_file({"visual.proj": torch.zeros(3, 3)}, str(wrong))
    with pytest.raises(BackboneError):
        load_backbone(f"openclip:{tiny_openclip['config']}:{wrong}")


def test_clip_offline_error_is_fast_and_names_alternatives(tmp_path: Path) -> None:
    code = "from detector import load_backbone; load_backbone('clip-vit-b32')"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    assert "BackboneUnavailableError" in proc.stderr
    assert "effnet-lite0-imagenet" in proc.stderr and "openclip:ARCH" in proc.stderr
    assert time.monotonic() - t0 < 60  # no minute-long retry loop


def test_effnet_offline_backbone() -> None:
    bb = load_backbone("effnet-lite0-imagenet")
    emb = bb.embed(IMAGES)
    assert emb.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # a trained model: an image is closer to a slightly blurred copy of itself than to other images
    sims = emb @ bb.embed([IMAGES[0].resize((60, 60)), IMAGES[2]]).T
    assert sims[0, 0] > sims[1, 0] and sims[2, 1] > 0.99


def test_effnet_refuses_partial_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.load

    def fewer(*a, **kw):  # type: ignore[no-untyped-def]
        sd = real(*a, **kw)
        sd.popitem(last=False)
        return sd

    monkeypatch.setattr(torch, "load", fewer)
    with pytest.raises(BackboneError, match="refusing to run"):
        load_backbone("effnet-lite0-imagenet")
