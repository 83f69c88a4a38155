"""Shared fixtures: synthetic reference art, scenes and videos (drawn with PIL, encoded with PyAV),
a tiny open_clip checkpoint, and a real effnet-lite0 index built once per session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import PROTECTED, reference_art, run_cli

from detector.media.synth import composite, draw_character, draw_scene, make_clip


@pytest.fixture(scope="session")
def refs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("refs")
    for name in PROTECTED:
        (root / name).mkdir()
        for pose in range(2):
            reference_art(name, pose).save(root / name / f"{pose}.png")
    return root


@pytest.fixture(scope="session")
def background_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("background")
    for i in range(14):
        draw_scene(f"bg-{i}").save(root / f"scene-{i}.png")
    for i in range(6):
        scene, _ = composite(draw_scene(f"bgx-{i}"), draw_character(f"extra-{i}", 256), height_frac=0.6, x_frac=0.4)
        scene.save(root / f"extra-{i}.png")
    return root


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory, refs_dir: Path, background_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("idx") / "index"
    run_cli("index", "build", refs_dir, "--out", out, "--backbone", "effnet-lite0-imagenet",
            "--background", background_dir, check=True)
    return out


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """positive.mp4: akane's reference art pasted into a scene from 1.0 s to 3.0 s; negative.mp4: none."""
    root = tmp_path_factory.mktemp("clips")
    make_clip(root / "positive.mp4", "clip-pos", reference_art("akane", 0), duration=4.0, appear=(1.0, 3.0),
              height_frac=0.6, x_frac=0.6)
    make_clip(root / "negative.mp4", "clip-neg", None, duration=4.0)
    return {"positive": root / "positive.mp4", "negative": root / "negative.mp4"}


def _tiny_clip(root: Path, arch: str, *, context_length: int, vocab_size: int) -> tuple[Path, dict[str, Any]]:
    """A tiny open_clip ViT (seed 0) registered as `arch`: its config file and state dict, saved
    as `root/<arch>.safetensors`."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": context_length, "vocab_size": vocab_size, "width": 32, "heads": 2,
                        "layers": 1}}
    config = root / f"{arch}.json"
    config.write_text(json.dumps(cfg))
    open_clip.add_model_config(str(config))
    torch.manual_seed(0)
    sd = {k: v.contiguous() for k, v in open_clip.create_model(arch).state_dict().items()}
    save_file(sd, str(root / f"{arch}.safetensors"))
    return config, sd


@pytest.fixture(scope="session")
def tiny_openclip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny open_clip ViT saved as a model config + safetensors + plain state-dict file."""
    import torch

    root = tmp_path_factory.mktemp("tiny")
    config, sd = _tiny_clip(root, "mamori-tiny", context_length=8, vocab_size=64)
    torch.save(sd, root / "tiny.pt")
    return {"config": config, "safetensors": root / "mamori-tiny.safetensors", "pt": root / "tiny.pt", "root": root}


@pytest.fixture(scope="session")
def small_background(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve small drawn scenes: enough background images to calibrate (`index.calibrate.MIN_BACKGROUND`),
    quick to embed."""
    root = tmp_path_factory.mktemp("small-bg")
    for i in range(12):
        draw_scene(f"sbg-{i}", 192, 108).save(root / f"scene-{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_clip_text(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A tiny open_clip model whose text tower takes the bundled CLIP tokenizer (full 49,408-token
    vocabulary, 16-token context): text prompts work with it. {"config", "weights", "name", "root"}."""
    root = tmp_path_factory.mktemp("tiny-text")
    config, _ = _tiny_clip(root, "mamori-tiny-text", context_length=16, vocab_size=49408)
    weights = root / "mamori-tiny-text.safetensors"
    return {"config": config, "weights": weights, "name": f"openclip:{config}:{weights}", "root": root}
