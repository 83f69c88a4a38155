"""`index.tuning`: the constants on a backbone's embedding scale, looked up through the index's backbone."""

from __future__ import annotations

import pytest

from index.tuning import EFFNET, TUNING, tuning_for


@pytest.mark.parametrize("name", ["effnet-lite0-imagenet", "clip-vit-b32", "openclip:ViT-B-16:x.safetensors",
                                  "mamori-identity-lite0", "timm:vit_small_patch16_224", "onnx:/m/e.onnx", "other"])
def test_every_backbone_has_todays_values(name: str) -> None:
    t = tuning_for(name)
    assert (t.allow_sim, t.margin, t.sigma_floor, t.text_default) == (0.92, 0.02, 0.02, (0.25, 0.05))
    assert (t.map_min_score, t.coarse_min_score) == (0.095, 0.015)
    assert t.default_threshold == ((0.25, 0.05) if name == "effnet-lite0-imagenet" else (0.25, 0.07))
    assert t.measured  # each row says what chose it


def test_families_and_unmeasured_rows() -> None:
    assert tuning_for("effnet-lite0-imagenet") is EFFNET
    assert tuning_for("openclip:ViT-B-16:x") is TUNING["openclip"]
    assert tuning_for("clip-vit-b32").measured.startswith("not measured")
