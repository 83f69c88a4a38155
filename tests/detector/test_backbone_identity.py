"""`mamori-identity-lite0`: the shipped weights load offline, fit the size budget, and keep the
properties the scan relies on (the contract itself: tests/detector/test_backbone_contract.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import reference_art

from detector import BackboneError, BackboneUnavailableError, load_backbone
from detector.embed.backbone_identity import IDENTITY_DIM, IDENTITY_WEIGHTS, identity_net, load_identity
from detector.shortlist import FeatureMap
from index.images import file_sha256

#: the issue's budget for weights kept in the repository
MAX_WEIGHTS_BYTES = 25_000_000


def test_weights_ship_in_the_package_within_budget() -> None:
    assert IDENTITY_WEIGHTS.is_file(), "the trained weights must be committed with the package"
    assert IDENTITY_WEIGHTS.stat().st_size <= MAX_WEIGHTS_BYTES
    card = (IDENTITY_WEIGHTS.parent / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert file_sha256(IDENTITY_WEIGHTS) in card  # the card names the file it describes


def test_loads_offline_unit_norm_and_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bb = load_backbone("mamori-identity-lite0", precision="fp32", device="cpu")
    images = [reference_art(name, 0) for name in ("akane", "benkei", "chiyo")]
    emb = bb.embed(images)
    assert emb.shape == (3, IDENTITY_DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(bb.embed(images), emb, atol=1e-6)
    assert bb.weights_sha256 == file_sha256(IDENTITY_WEIGHTS)
    assert FeatureMap.of(bb) is not None  # the one-pass shortlist works: embedding = mean of the feature map


def test_trained_weights_differ_from_the_imagenet_start() -> None:
    from detector.embed.backbone_effnet import effnet_imagenet

    trained = load_identity(IDENTITY_WEIGHTS).trunk.state_dict()
    start = effnet_imagenet()[0].state_dict()
    assert torch.equal(trained["conv_stem.weight"], start["conv_stem.weight"])  # frozen stages kept
    assert not torch.equal(trained["conv_head.weight"], start["conv_head.weight"])  # the head was trained


def test_missing_or_wrong_weights_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BackboneUnavailableError, match="missing"):
        load_identity(tmp_path / "none.safetensors")
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"proj.weight": torch.zeros(3, 3)}, str(wrong))
    with pytest.raises(BackboneError):
        load_identity(wrong)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(BackboneError):
        load_identity(junk)
    assert identity_net().num_features == IDENTITY_DIM
