"""The ViT shortlist pass (`detector.embed.tokenmap`): pooled MaskCLIP-style patch tokens of one forward pass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import reference_art

from detector import Detector
from detector.embed.backbones import Backbone, load_backbone
from detector.embed.embedding import RegionEmbedder
from detector.embed.tokenmap import TokenMap, window_weights
from detector.media.synth import composite, draw_scene
from detector.shortlist import RegionSearch
from index import build_index, read_folder
from index.tuning import tuning_for


@pytest.fixture(scope="module")
def vit(tiny_openclip: dict[str, Path]) -> Backbone:
    return load_backbone(f"openclip:{tiny_openclip['config']}:{tiny_openclip['safetensors']}", precision="fp32")


def test_token_map_is_for_open_clip_vits_only(vit: Backbone) -> None:
    tm = TokenMap.of(vit)
    assert tm is not None and TokenMap.of(vit) is tm
    assert TokenMap.of(load_backbone("effnet-lite0-imagenet", precision="fp32")) is None


def test_dense_tokens_are_the_last_block_attending_each_token_to_itself(vit: Backbone) -> None:
    tm = TokenMap.of(vit)
    assert tm is not None
    x = torch.randn(1, 3, 40, 64)  # another grid than the model's own (positions interpolated)
    v: torch.nn.Module = vit.module
    with torch.inference_mode():
        dense = tm._forward(x)
        t = v.conv1(x)
        b, c, gh, gw = t.shape
        t = torch.cat([v.class_embedding.view(1, 1, c), t.reshape(b, c, -1).permute(0, 2, 1)], dim=1)
        t = v.ln_pre(t + tm._positions(gh, gw))
        blocks = list(v.transformer.resblocks)
        for blk in blocks[:-1]:
            t = blk(t)
        n = t.shape[1]
        self_only = torch.full((n, n), float("-inf")).fill_diagonal_(0.0)
        want = v.ln_post(blocks[-1](t, attn_mask=self_only)) @ v.proj
    assert dense.shape == (1, 1 + gh * gw, vit.dim)
    torch.testing.assert_close(dense, want, atol=1e-5, rtol=1e-4)
    # the ordinary path (dense=False) at the native size is the model's own embedding
    s = vit.preprocess.size
    y = torch.randn(2, 3, s, s)
    with torch.inference_mode():
        torch.testing.assert_close(tm._forward(y, dense=False)[:, 0], v(y), atol=1e-5, rtol=1e-4)


def test_window_weights_cover_the_cells_under_each_box() -> None:
    w = window_weights([(0, 0, 100, 100), (50, 0, 100, 50), (25, 25, 75, 75)], 100, 100, 2, 2)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(w[0], torch.full((4,), 0.25))
    torch.testing.assert_close(w[1], torch.tensor([0.0, 1.0, 0.0, 0.0]))  # cells row-major: (0,0) (0,1) (1,0) (1,1)


def test_approximate_gives_one_unit_vector_per_box(vit: Backbone) -> None:
    tm = TokenMap.of(vit)
    assert tm is not None
    img = draw_scene("tok", 640, 360)
    boxes = [(0, 0, 640, 360), (0, 0, 160, 160), (600, 300, 640, 360)]
    a = tm.approximate(img, boxes)
    assert a.shape == (3, vit.dim)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert tm.approximate(draw_scene("strip", 4000, 2), boxes[:1]).shape == (1, vit.dim)  # extreme aspect ratio


@pytest.fixture(scope="module")
def vit_index(tmp_path_factory: pytest.TempPathFactory, vit: Backbone, refs_dir: Path, small_background: Path) -> Path:
    out = tmp_path_factory.mktemp("vit-idx") / "index"
    build_index(read_folder(refs_dir), out, RegionEmbedder(vit), background=small_background)
    return out


@pytest.mark.parametrize(("threshold", "embedded"), [(-1.0, 47), (2.0, 4)])
def test_the_token_rule_decides_what_a_vit_embeds(vit_index: Path, threshold: float, embedded: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tuning = dataclasses.replace(tuning_for("clip-vit-b32"), map_min_score=threshold)
    monkeypatch.setattr("detector.shortlist.tuning_for", lambda backbone: tuning)
    det = Detector.open(vit_index, precision="fp32")
    search = RegionSearch(det.store, det.backbone, det.embed_pixels)
    assert isinstance(search.fmap, TokenMap) and search.map_min_score == threshold
    shot, _ = composite(draw_scene("vit", 640, 360), reference_art("akane").convert("RGBA"), height_frac=0.5,
                        x_frac=0.7)
    full = Detector.open(vit_index, precision="fp32", shortlist=False).score_image(shot).to_dict()
    sent: list[int] = []
    embed = det.embed_pixels
    det.embed_pixels = lambda px: (sent.append(len(px)), embed(px))[1]  # type: ignore[method-assign]
    got = det.score_image(shot).to_dict()
    assert sum(sent) == embedded
    if embedded == 47:  # a shortlist that keeps everything is the full search
        assert got["verdict"] == full["verdict"] and got["score"] == pytest.approx(full["score"], abs=1e-4)


@pytest.mark.parametrize("size", [(1, 1), (4000, 2), (2, 4000)])
def test_frames_without_small_windows_are_scored(vit_index: Path, size: tuple[int, int]) -> None:
    det = Detector.open(vit_index, precision="fp32")
    assert det.score_image(draw_scene("thin", *size)).verdict in ("pass", "review", "flag")


def test_a_vit_of_another_structure_gets_no_token_map(tiny_openclip: dict[str, Path]) -> None:
    name = f"openclip:{tiny_openclip['config']}:{tiny_openclip['safetensors']}"
    tokens = load_backbone(name, precision="fp32")
    tokens.module.output_tokens = True  # its forward returns (pooled, tokens)
    assert TokenMap.of(tokens) is None
    older = load_backbone(name, precision="fp32")
    del older.module.transformer.batch_first  # open_clip before 2.26 had no such attribute
    assert TokenMap.of(older) is None
