"""The plug-in backbones `timm:MODEL[:FILE]` and `onnx:PATH.onnx`, with tiny models the tests build
(no network): the embedding contract, identity, clear errors, and an index end to end."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from backbone_zoo import IMAGES, SIDECAR, TinyEmbedder, check_contract, export_onnx, save_timm
from helpers import reference_art

from detector import BackboneError, BackboneUnavailableError, ConfigError, Detector, list_backbones, load_backbone
from detector.embed.embedding import RegionEmbedder
from detector.media.synth import composite, draw_character, draw_scene
from index import IncompatibleIndexError, IndexStore, build_index, read_folder
from index.images import file_sha256


@pytest.fixture(scope="module")
def timm_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """timm's registered tiny `test_*` models, saved as safetensors: one without and one with its head."""
    root = tmp_path_factory.mktemp("timm")
    return {"vit": save_timm(root / "vit.safetensors", "test_vit", num_classes=0),
            "vit_head": save_timm(root / "vit_head.safetensors", "test_vit", num_classes=10),
            "resnet": save_timm(root / "resnet.safetensors", "test_resnet", num_classes=0)}


def test_registry_has_plugin_backbones() -> None:
    assert {"timm:", "onnx:"} <= set(list_backbones())


# --- timm -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "key", "dim", "interp"), [("test_vit", "vit", 64, "bicubic"),
                                                             ("test_resnet", "resnet", 96, "bilinear")])
def test_timm_local_file(timm_files: dict[str, Path], arch: str, key: str, dim: int, interp: str) -> None:
    import timm

    name = f"timm:{arch}:{timm_files[key]}"
    bb = load_backbone(name, precision="fp32")
    emb = check_contract(bb, dim)
    cfg = timm.data.resolve_model_data_config(bb.module)
    assert bb.preprocess.size == cfg["input_size"][1] == 160
    assert (bb.preprocess.mean, bb.preprocess.std, bb.preprocess.interpolation) == (cfg["mean"], cfg["std"], interp)
    assert bb.identity == {"name": name, "dim": dim, "weights_sha256": file_sha256(timm_files[key]),
                           "preprocess": bb.preprocess.to_dict()}
    # the embedding is the model's pooled features, L2-normalised, for mamori's preprocessing
    ref = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    from safetensors.torch import load_file
    ref.load_state_dict(load_file(str(timm_files[key])))
    with torch.inference_mode():
        want = torch.nn.functional.normalize(ref(bb.to_tensor(IMAGES)), dim=-1).numpy()
    np.testing.assert_allclose(emb, want, atol=1e-5)
    np.testing.assert_array_equal(load_backbone(name, precision="fp32").embed(IMAGES), emb)  # a fresh load


def test_timm_file_with_classifier_head(timm_files: dict[str, Path]) -> None:
    """A state dict saved with its classifier loads; the head is dropped (pooled features)."""
    bb = load_backbone(f"timm:test_vit:{timm_files['vit_head']}", precision="fp32")
    assert bb.dim == 64 and bb.embed(IMAGES[:1]).shape == (1, 64)


def test_timm_errors(timm_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="does not fit timm test_resnet.*refusing to run"):
        load_backbone(f"timm:test_resnet:{timm_files['vit']}")
    with pytest.raises(BackboneUnavailableError, match="not found"):
        load_backbone(f"timm:test_vit:{tmp_path / 'missing.safetensors'}")
    with pytest.raises(ConfigError, match="unknown timm model 'no_such_net'"):
        load_backbone("timm:no_such_net")
    with pytest.raises(ConfigError, match="expected timm:MODEL"):
        load_backbone("timm:")
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"must be a \.safetensors file"):
        load_backbone(f"timm:test_vit:{tmp_path / 'w.pt'}")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(BackboneError, match="cannot read"):
        load_backbone(f"timm:test_vit:{tmp_path / 'bad.safetensors'}")
    with pytest.raises(ConfigError, match="no pretrained weights"):
        load_backbone("timm:test_vit4")  # registered, but timm has no weights for it


@pytest.fixture
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_timm_hub_weights_offline_error(empty_hub_cache: Path) -> None:
    import huggingface_hub.constants as hc

    before = hc.HF_HUB_OFFLINE
    t0 = time.monotonic()
    with pytest.raises(BackboneUnavailableError) as err:
        load_backbone("timm:test_vit.r160_in1k")
    assert time.monotonic() - t0 < 30  # no retry loop
    msg = str(err.value)
    assert "cannot be downloaded" in msg and "timm:test_vit.r160_in1k:/path/to/weights.safetensors" in msg
    assert "effnet-lite0-imagenet" in msg
    assert hc.HF_HUB_OFFLINE == before  # restored


def test_timm_hub_weights_from_cache(empty_hub_cache: Path, timm_files: dict[str, Path]) -> None:
    """Hub weights already in the cache load offline; their identity is the state dict's sha256."""
    from detector.embed.backbone_timm import state_dict_sha256

    snap = empty_hub_cache / "models--timm--test_vit.r160_in1k" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(timm_files["vit_head"].read_bytes())
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("0" * 40)
    bb = load_backbone("timm:test_vit.r160_in1k", precision="fp32")
    local = load_backbone(f"timm:test_vit:{timm_files['vit_head']}", precision="fp32")
    np.testing.assert_allclose(bb.embed(IMAGES), local.embed(IMAGES), atol=1e-6)
    assert bb.weights_sha256 == state_dict_sha256(local.module.state_dict()) != local.weights_sha256


# --- ONNX -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    root = tmp_path_factory.mktemp("onnx")
    return {
        "dynamic": export_onnx(root / "dynamic.onnx", TinyEmbedder(two_outputs=True),
                           {**SIDECAR, "output_name": "embedding", "interpolation": "bilinear"}, batch=None),
        "fixed1": export_onnx(root / "fixed1.onnx", TinyEmbedder(), {**SIDECAR, "input_size": [32, 32]}, batch=1),
        "nhwc": export_onnx(root / "nhwc.onnx", TinyEmbedder(nhwc=True), {**SIDECAR, "layout": "NHWC"}, batch=None),
    }


@pytest.mark.parametrize("kind", ["dynamic", "fixed1", "nhwc"])
def test_onnx_contract_and_torch_parity(onnx_files: dict[str, Path], kind: str) -> None:
    path = onnx_files[kind]
    bb = load_backbone(f"onnx:{path}", precision="fp32", device="cpu")
    assert bb.fixed_batch == (1 if kind == "fixed1" else None)  # type: ignore[attr-defined]
    emb = check_contract(bb, 24)
    assert bb.precision == "fp32"
    assert bb.preprocess.size == 32 and bb.preprocess.std == tuple(SIDECAR["std"])  # type: ignore[arg-type]
    assert bb.preprocess.interpolation == ("bilinear" if kind == "dynamic" else "bicubic")
    # same preprocessed input through the torch model: the same embeddings
    net = TinyEmbedder(nhwc=kind == "nhwc").eval()
    x = bb.to_tensor(IMAGES)
    with torch.inference_mode():
        want = torch.nn.functional.normalize(net(x.permute(0, 2, 3, 1) if kind == "nhwc" else x), dim=-1).numpy()
    np.testing.assert_allclose(emb, want, atol=1e-4)
    sidecar_sha = hashlib.sha256(json.dumps(json.loads(path.with_suffix(".json").read_text()), sort_keys=True).encode())
    sha = hashlib.sha256(f"{file_sha256(path)}\n{sidecar_sha.hexdigest()}".encode()).hexdigest()
    assert bb.identity == {"name": f"onnx:{path}", "dim": 24, "weights_sha256": sha,
                           "preprocess": bb.preprocess.to_dict()}


def test_onnx_identity_follows_sidecar(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "m.onnx"
    copy.write_bytes(onnx_files["fixed1"].read_bytes())
    copy.with_suffix(".json").write_text(json.dumps(SIDECAR))
    first = load_backbone(f"onnx:{copy}").weights_sha256
    copy.with_suffix(".json").write_text(json.dumps(SIDECAR, indent=2))  # same content, other spacing
    assert load_backbone(f"onnx:{copy}").weights_sha256 == first
    copy.with_suffix(".json").write_text(json.dumps({**SIDECAR, "layout": "NCHW"}))
    assert load_backbone(f"onnx:{copy}").weights_sha256 != first


def test_onnx_precision_and_device(onnx_files: dict[str, Path]) -> None:
    name = f"onnx:{onnx_files['dynamic']}"
    with pytest.raises(ConfigError, match="precision it was exported in"):
        load_backbone(name, precision="bf16")
    bb = load_backbone(name, precision="auto", device="cpu")
    assert bb.precision == "fp32" and bb.device.type == "cpu"
    assert bb.providers == ["CPUExecutionProvider"]  # type: ignore[attr-defined]


def test_onnx_cuda_provider_choice(onnx_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """--device cuda: the CUDA provider when onnxruntime has it, else the CPU with a warning."""
    import onnxruntime as ort

    from detector.embed import backbone_onnx

    bb = load_backbone(f"onnx:{onnx_files['dynamic']}", device="cpu")
    monkeypatch.setattr(backbone_onnx, "resolve_device", lambda device: torch.device("cuda", 0))
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level("WARNING", logger="mamori"):
        bb.to("auto", "cuda")
    assert bb.device.type == "cpu" and "no CUDA provider" in caplog.text
    made: list[object] = []
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(backbone_onnx.OnnxBackbone, "_session", lambda self, providers: made.append(providers))
    bb.to("auto", "cuda")
    assert bb.device.type == "cuda"
    assert made == [[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_timm_gpu_matches_cpu(timm_files: dict[str, Path]) -> None:
    name = f"timm:test_vit:{timm_files['vit']}"
    cpu = load_backbone(name, precision="fp32", device="cpu").embed(IMAGES)
    gpu = load_backbone(name, precision="auto", device="cuda")
    assert gpu.device.type == "cuda"
    assert (cpu * gpu.embed(IMAGES)).sum(axis=1).min() >= 0.99


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"input_size": 32, "mean": [0.5, 0.5, 0.5]}, ConfigError, r"missing keys \['std'\]"),
    ({**SIDECAR, "outptu_name": "x"}, ConfigError, r"unknown keys \['outptu_name'\]"),
    ({**SIDECAR, "mean": [123.7, 116.3, 103.5]}, ConfigError, "divide 0-255 values by 255"),
    ({**SIDECAR, "std": [0.2, 0.2]}, ConfigError, "three RGB numbers"),
    ({**SIDECAR, "input_size": [32, 48]}, ConfigError, "square"),
    ({**SIDECAR, "input_size": 40, "output_name": "embedding"}, ConfigError, "the graph.s input is"),
    ({**SIDECAR, "layout": "CHWN"}, ConfigError, "layout must be"),
    (SIDECAR, ConfigError, r"output_name, one of \['logits', 'embedding'\]"),
    ({**SIDECAR, "output_name": "emb"}, ConfigError, "not 'emb'"),
    ([1, 2], ConfigError, "must be a JSON object"),
])
def test_onnx_bad_sidecar(onnx_files: dict[str, Path], tmp_path: Path, change: object, error: type[Exception],
                          match: str) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(onnx_files["dynamic"].read_bytes())  # two outputs: logits, embedding
    model.with_suffix(".json").write_text(json.dumps(change))
    with pytest.raises(error, match=match):
        load_backbone(f"onnx:{model}")


def test_onnx_file_errors(onnx_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(onnx_files["fixed1"].read_bytes())
    with pytest.raises(ConfigError, match=r"sidecar .*m\.json not found"):
        load_backbone(f"onnx:{model}")
    model.with_suffix(".json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_backbone(f"onnx:{model}")
    with pytest.raises(BackboneUnavailableError, match="not found"):
        load_backbone(f"onnx:{tmp_path / 'missing.onnx'}")
    with pytest.raises(ConfigError, match="expected onnx:PATH.onnx"):
        load_backbone(f"onnx:{tmp_path / 'm.json'}")
    garbage = tmp_path / "g.onnx"
    garbage.write_bytes(b"\x00garbage" * 10)
    garbage.with_suffix(".json").write_text(json.dumps(SIDECAR))
    with pytest.raises(BackboneError, match="onnxruntime cannot load"):
        load_backbone(f"onnx:{garbage}")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(BackboneUnavailableError, match=r"pip install 'mamori\[onnx\]'"):
        load_backbone(f"onnx:{onnx_files['fixed1']}")


# --- end to end: an index built with a plug-in backbone ---------------------------------------


@pytest.mark.parametrize("kind", ["timm", "onnx"])
def test_index_end_to_end(kind: str, timm_files: dict[str, Path], tmp_path: Path,
                          request: pytest.FixtureRequest) -> None:
    if kind == "timm":
        name, other = f"timm:test_vit:{timm_files['vit']}", f"timm:test_vit:{timm_files['vit_head']}"
    else:
        onnx_files = request.getfixturevalue("onnx_files")
        name, other = f"onnx:{onnx_files['dynamic']}", f"onnx:{onnx_files['nhwc']}"
    refs, bg = tmp_path / "refs", tmp_path / "bg"
    for character in ("akane", "benkei"):
        (refs / character).mkdir(parents=True)
        reference_art(character, 0).save(refs / character / "0.png")
    bg.mkdir()
    for i in range(4):
        draw_scene(f"e2e-bg-{i}", 160, 120).save(bg / f"{i}.png")
    bb = load_backbone(name, precision="fp32")
    build_index(read_folder(refs), tmp_path / "idx", RegionEmbedder(bb), background=bg)
    assert IndexStore.open(tmp_path / "idx").backbone == bb.identity  # name, sha256, dim, preprocess

    det = Detector.open(tmp_path / "idx", precision="fp32")
    assert det.backbone.identity == bb.identity
    result = det.score_image(reference_art("benkei", 0)).to_dict()  # the reference art itself
    assert result["characters"][0]["character"] == "benkei" and result["verdict"] != "error"
    scene, _ = composite(draw_scene("e2e-q", 320, 180), draw_character("akane", 256), height_frac=0.7, x_frac=0.5)
    assert 0.0 <= det.score_image(scene).score <= 1.0

    with pytest.raises(IncompatibleIndexError, match="not"):
        Detector.open(tmp_path / "idx", backbone=other)
    with pytest.raises(IncompatibleIndexError, match="built with backbone"):
        Detector(IndexStore.open(tmp_path / "idx"), load_backbone(other, precision="fp32"))
