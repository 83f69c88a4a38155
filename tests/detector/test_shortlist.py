"""The coarse-to-fine region search (`detector.shortlist`): what it embeds, and that it decides as the full search."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import reference_art
from PIL import Image

from detector import Detector
from detector.embed.backbones import load_backbone
from detector.media.frames import Frame
from detector.media.regions import frame_regions
from detector.media.synth import composite, draw_scene
from detector.pipeline import PreparedFrame, region_signatures
from detector.shortlist import FeatureMap, KeptRegions, RegionSearch, coarse_regions, window_inside
from index.tuning import tuning_for


def test_coarse_regions_are_the_whole_frame_and_the_largest_windows() -> None:
    boxes = frame_regions(640, 360)
    assert len(boxes) == 47 and coarse_regions(boxes) == [0, 1, 2, 3]
    assert all(boxes[i][3] - boxes[i][1] == 360 for i in (1, 2, 3))
    square = frame_regions(300, 300)
    assert coarse_regions(square) == [0, 1]  # the one full-size window of a square frame
    # a 0.45 window at the left edge lies inside the first large window, not the last
    small = next(i for i, b in enumerate(boxes) if b[2] - b[0] == 162 and b[0] == 0)
    assert window_inside(boxes, small, 1) and window_inside(boxes, small, 0) and not window_inside(boxes, small, 3)


def _frame(kind: str, pixels: torch.Tensor, boxes: list[tuple[int, int, int, int]], sigs: bool = True) -> PreparedFrame:
    image = Image.new("RGB", (64, 64))
    return PreparedFrame(Frame(0, 0.0, image), kind, boxes, pixels, sigs=region_signatures(pixels) if sigs else None)


def test_kept_regions_embed_only_what_changed_since_it_was_embedded() -> None:
    boxes = [(0, 0, 8, 8), (8, 0, 16, 8), (0, 8, 8, 16)]
    batches: list[int] = []

    def embed(pixels: torch.Tensor) -> np.ndarray:
        batches.append(len(pixels))
        return pixels.float().mean(dim=(1, 2, 3)).numpy()[:, None].repeat(2, axis=1).astype(np.float32)

    px = torch.randint(0, 255, (3, 3, 16, 16), dtype=torch.uint8)
    kept = KeptRegions(embed, 2)
    first = kept.vectors(_frame("new", px, boxes), [0, 1])
    again = kept.vectors(_frame("new", px.clone(), boxes), [0, 1, 2])  # region 2 never embedded before
    moved = px.clone()
    moved[1] = 255 - moved[1]
    third = kept.vectors(_frame("new", moved, boxes), [1])
    kept.vectors(_frame("blank", torch.zeros_like(px), boxes), [0, 1, 2])  # neither uses nor changes the kept
    fourth = kept.vectors(_frame("new", moved.clone(), boxes), [0, 1, 2])
    other = kept.vectors(_frame("new", px, [(0, 0, 9, 9), *boxes[1:]]), [0])  # another frame size: afresh
    assert batches == [2, 1, 1, 3, 1]
    assert np.array_equal(again[:2], first) and third[0, 0] != first[1, 0]
    assert np.array_equal(fourth[1], third[0]) and np.array_equal(fourth[0], first[0])
    assert np.array_equal(other[0], first[0])
    nosig = KeptRegions(embed, 2)  # no signatures (`--no-skip`): every chosen region is embedded
    nosig.vectors(_frame("new", px, boxes, sigs=False), [0, 1])
    nosig.vectors(_frame("new", px, boxes, sigs=False), [0, 1])
    assert batches[-2:] == [2, 2]


def test_feature_map_is_used_only_where_the_embedding_averages_it(tiny_openclip: dict[str, Path]) -> None:
    effnet = load_backbone("effnet-lite0-imagenet", precision="fp32")
    fmap = FeatureMap.of(effnet)
    assert fmap is not None and FeatureMap.of(effnet) is fmap
    # pooling the whole map is the model's own embedding of the frame at the feature pass's size
    img = draw_scene("fmap", fmap.side, fmap.side)
    whole = fmap.approximate(img, [(0, 0, fmap.side, fmap.side)])[0]
    x = (torch.from_numpy(np.asarray(img)).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    exact = effnet.embed_tensor(x)[0]
    assert float(whole @ exact) > 0.999
    vit = load_backbone(f"openclip:{tiny_openclip['config']}:{tiny_openclip['safetensors']}", precision="fp32")
    assert FeatureMap.of(vit) is None


def _counting(det: Detector) -> list[int]:
    sent: list[int] = []
    embed = det.embed_pixels

    def counting(pixels: torch.Tensor) -> np.ndarray:
        sent.append(len(pixels))
        return embed(pixels)

    det.embed_pixels = counting  # type: ignore[method-assign]
    return sent


@pytest.mark.parametrize("feature_map", [True, False])
def test_a_frame_with_nothing_near_any_character_embeds_only_the_coarse_regions(
        index_dir: Path, feature_map: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not feature_map:
        monkeypatch.setattr(FeatureMap, "of", classmethod(lambda cls, backbone: None))
    det = Detector.open(index_dir, precision="fp32")
    sent = _counting(det)
    result = det.score_image(draw_scene("empty", 640, 360))
    assert sum(sent) == 4 and result.verdict == "pass"
    # the character in the frame: small windows are shortlisted and it is found as by the full search
    shot, _ = composite(draw_scene("empty", 640, 360), reference_art("akane").convert("RGBA"), height_frac=0.5,
                        x_frac=0.7)
    sent.clear()
    found = det.score_image(shot).to_dict()
    full = Detector.open(index_dir, precision="fp32", shortlist=False).score_image(shot).to_dict()
    assert 4 < sum(sent) < 47
    assert found["verdict"] == full["verdict"] == "flag"
    assert found["characters"][0]["character"] == full["characters"][0]["character"] == "akane"
    assert found["score"] == pytest.approx(full["score"], abs=0.01)


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["verdict"] == b["verdict"] and a["frames"] == b["frames"]
    assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    assert [c["character"] for c in a["characters"]] == [c["character"] for c in b["characters"]]
    for ca, cb in zip(a["characters"], b["characters"]):
        assert ca["score"] == pytest.approx(cb["score"], abs=1e-4)
        assert [(s["start"], s["end"], s["reference"], s["channel"]) for s in ca["segments"]] == \
               [(s["start"], s["end"], s["reference"], s["channel"]) for s in cb["segments"]]


@pytest.mark.parametrize("feature_map", [True, False])
def test_a_shortlist_that_keeps_everything_gives_the_full_search(
        index_dir: Path, clips: dict[str, Path], feature_map: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not feature_map:
        monkeypatch.setattr(FeatureMap, "of", classmethod(lambda cls, backbone: None))
    keep_all = dataclasses.replace(tuning_for("effnet-lite0-imagenet"), map_min_score=-1.0, coarse_min_score=-1.0)
    monkeypatch.setattr("detector.shortlist.tuning_for", lambda backbone: keep_all)
    full = Detector.open(index_dir, precision="fp32", shortlist=False)
    det = Detector.open(index_dir, precision="fp32")
    sent = _counting(det)
    for clip in ("positive", "negative"):
        _same(det.score_video(clips[clip], fps=4).to_dict(), full.score_video(clips[clip], fps=4).to_dict())
    assert sum(sent) > 0


def test_region_search_counts_what_it_embeds(index_dir: Path) -> None:
    det = Detector.open(index_dir, precision="fp32")
    search = RegionSearch(det.store, det.backbone, det.embed_pixels)
    img = draw_scene("count", 640, 360)
    pixels, boxes = det.embedder.prepare_frame(img)
    p = PreparedFrame(Frame(0, 0.0, img), "new", boxes, pixels, sigs=region_signatures(pixels))
    vectors, chosen, hashes = search.regions(p)
    assert chosen == [boxes[i] for i in coarse_regions(boxes)] and hashes is None
    assert vectors.shape == (4, det.backbone.dim) and (search.embedded, search.total) == (4, 47)
    np.testing.assert_allclose(vectors, det.embed_pixels(pixels[:4]), atol=1e-5)
