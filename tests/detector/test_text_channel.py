"""The text channel with a real (tiny) open_clip model: the text tower, refusals, and a text hit
in a frame's evidence, result, CSV row and review report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector import cli
from detector.embed.backbones import load_backbone
from detector.embed.embedding import RegionEmbedder
from detector.embed.text import N_FLOOR
from detector.errors import BackboneError, ConfigError
from detector.match.evidence import frame_evidence
from detector.match.scoring import MISSING_N, aggregate
from detector.media.synth import draw_scene
from detector.runs.export import _row
from detector.runs.report import report_data
from index import IndexStore, build_index, read_folder
from index.calibrate import calibrated_score
from index.prompts import PromptEntry

PROMPTS = [PromptEntry("akane", "a girl with a red scarf"), PromptEntry("akane", "akane from the poster"),
           PromptEntry("benkei", "a monk with a halberd")]


@pytest.fixture(scope="module")
def text_index(tiny_clip_text: dict[str, Any], refs_dir: Path, small_background: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("text-idx") / "index"
    embedder = RegionEmbedder(load_backbone(tiny_clip_text["name"], precision="fp32", text=True))
    build_index(read_folder(refs_dir), out, embedder, background=small_background, prompts=PROMPTS)
    return out


def test_text_tower_is_open_clips_encode_text(tiny_clip_text: dict[str, Any]) -> None:
    import open_clip
    import torch

    texts = ["a girl with a red scarf", "a monk"]
    got = RegionEmbedder(load_backbone(tiny_clip_text["name"], precision="fp32", text=True)).embed_texts(texts)
    model = open_clip.create_model(tiny_clip_text["config"].stem, pretrained=str(tiny_clip_text["weights"]))
    tokens = open_clip.get_tokenizer(tiny_clip_text["config"].stem)(texts)
    with torch.inference_mode():
        want = model.eval().encode_text(tokens, normalize=True).numpy()
    assert got.shape == (2, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_text_tower_is_kept_only_when_asked_and_must_fit_its_tokenizer(tiny_clip_text: dict[str, Any],
                                                                       tiny_openclip: dict[str, Path]) -> None:
    bb = load_backbone(tiny_clip_text["name"], precision="fp32")
    assert bb.text is None  # scanning never holds the text tower
    with pytest.raises(ConfigError, match="has no text tower"):
        RegionEmbedder(bb).embed_texts(["x"])
    small_vocab = load_backbone(f"openclip:{tiny_openclip['config']}:{tiny_openclip['safetensors']}", text=True)
    with pytest.raises(BackboneError, match="vocabulary"):
        RegionEmbedder(small_vocab).embed_texts(["a girl with a red scarf"])


def test_effnet_refuses_prompts_like_other_config_errors(refs_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("character,prompt\nakane,a girl with a red scarf\n")
    code = cli.main(["index", "build", str(refs_dir), "--out", str(tmp_path / "idx"), "--backbone",
                     "effnet-lite0-imagenet", "--prompts", str(prompts), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("ConfigError: backbone 'effnet-lite0-imagenet' has no text tower"), err
    assert not (tmp_path / "idx" / "index.json").exists()


def test_region_close_to_a_prompt_is_a_text_hit(text_index: Path, tiny_clip_text: dict[str, Any],
                                                tmp_path: Path) -> None:
    store = IndexStore.open(text_index)
    assert store.text is not None and store.data.text is not None
    assert {c.source for c in store.data.text.calibration.values()} == {"background"}
    embedder = RegionEmbedder(load_backbone(tiny_clip_text["name"], precision="fp32"))
    vectors, boxes = embedder.embed_frames([draw_scene("text-frame", 192, 108)])[0]
    plain = frame_evidence(store, 0.0, vectors, boxes).hits["akane"]

    # region 5 made to sit on the second akane prompt once centred (`index.records.project`)
    vectors = vectors.copy()
    vectors[5] = store.data.centre + 0.5 * store.data.text.vectors[1]
    hit = frame_evidence(store, 0.0, vectors, boxes).hits["akane"]
    assert (hit.channel, hit.reference.id, hit.reference.source_path) == ("text", "text:akane:2", PROMPTS[1].prompt)
    assert hit.box == boxes[5] and hit.similarity == pytest.approx(1.0, abs=1e-4) and hit.score > max(0.9, plain.score)
    info = store.characters["akane"]  # its n is on the image channel's scale: the same calibrated score
    assert float(calibrated_score(hit.normalised, info.flag_sim, info.sigma)) == pytest.approx(hit.score, abs=1e-4)

    ev = frame_evidence(store, 0.0, vectors, boxes)
    record = aggregate(store, "still.png", [ev], kind="image", duration=0.0).to_dict()
    top = record["characters"][0]
    seg = top["segments"][0]
    assert record["verdict"] == "flag" and top["character"] == "akane"
    assert (seg["channel"], seg["reference_id"], seg["reference"]) == ("text", "text:akane:2", PROMPTS[1].prompt)
    row = _row(record)  # the CSV export
    assert (row["channel"], row["reference"]) == ("text", PROMPTS[1].prompt)
    page = report_data([record], tmp_path, tmp_path)
    assert page["references"][0] == [PROMPTS[1].prompt, "", "a text prompt (no reference image)"]


def test_text_floor_is_scorings_missing_n() -> None:
    assert N_FLOOR == MISSING_N
