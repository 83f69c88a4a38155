"""Text prompts in the index (`index.prompts`, `index.text`): reading, storing (format 4), the text
channel's calibration, add / remove, with a fake embedder that has a "text tower"."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import COLOURS
from PIL import Image

from index import (
    CorruptIndexError,
    IncompatibleIndexError,
    IndexStore,
    ManifestError,
    add_references,
    build_index,
    read_folder,
    read_manifest,
    remove_references,
)
from index.calibrate import OTHER_WEIGHT
from index.generation import FORMAT_VERSION
from index.prompts import PromptEntry, collect_prompts, read_prompts
from index.records import project
from index.text import text_normalised
from index.tuning import tuning_for


class TextFake:
    """An image is its normalised mean colour plus a constant; a text naming a colour is that
    colour's vector pulled towards a fixed "text" direction (like CLIP's gap between towers)."""

    dim = 5

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": "fake-clip", "dim": self.dim, "weights_sha256": "0" * 64, "preprocess": {"size": 1}}

    def _unit(self, v: np.ndarray) -> np.ndarray:
        out: np.ndarray = (v / np.linalg.norm(v)).astype(np.float32)
        return out

    def _vec(self, im: Image.Image) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        v[:3] = np.asarray(im.convert("RGB"), np.float32).reshape(-1, 3).mean(0) / 255
        v[3] = 0.1
        return self._unit(v)

    def embed_references(self, images):  # type: ignore[no-untyped-def]
        return [(self._vec(im)[None], ["full"]) for im in images]

    def embed_queries(self, images):  # type: ignore[no-untyped-def]
        return [self._vec(im)[None] for im in images]

    def embed_texts(self, texts):  # type: ignore[no-untyped-def]
        out = []
        for t in texts:
            v = np.zeros(self.dim, np.float32)
            for word, rgb in COLOURS.items():
                if word in t:
                    v[:3] += np.asarray(rgb, np.float32) / 255
            v[4] = 0.8
            out.append(self._unit(v))
        return np.stack(out)


class NoTextFake(TextFake):
    embed_texts = None  # type: ignore[assignment]



@pytest.fixture
def background(tmp_path: Path) -> Path:
    root = tmp_path / "bg"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.new("RGB", (8, 8), tuple(int(x) for x in rng.integers(0, 256, 3))).save(root / f"{i}.png")
    return root


PROMPTS = [PromptEntry("red", "a red thing"), PromptEntry("red", "crimson red"), PromptEntry("blue", "blue")]


def test_build_stores_and_calibrates_prompts(tmp_path: Path, refs: Path, background: Path) -> None:
    out = tmp_path / "idx"
    build_index(read_folder(refs), out, TextFake(), background=background, prompts=PROMPTS)
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["format_version"] == 4 and manifest["counts"]["prompts"] == 3
    data = IndexStore.open(out).data
    assert data.text is not None
    assert data.text.characters == ["red", "red", "blue"] and data.text.prompts == ["a red thing", "crimson red", "blue"]
    np.testing.assert_allclose(data.text.vectors, TextFake().embed_texts([p.prompt for p in PROMPTS]), atol=1e-6)

    # the rule by hand: cosine to the projected region, minus half the best other character; per
    # background image its best region; threshold = max over images + margin, shared
    bg = project(data.background, data.centre)
    sims = bg @ data.text.vectors.T
    red, blue = sims[:, :2].max(axis=1), sims[:, 2]
    n = np.stack([red - OTHER_WEIGHT * blue, blue - OTHER_WEIGHT * red], axis=1)
    per_image = np.stack([n[data.background_groups == g].max(axis=0) for g in np.unique(data.background_groups)])
    cal = data.text.calibration
    tuning = tuning_for(data.backbone["name"])
    assert set(cal) == {"red", "blue"} and {c.source for c in cal.values()} == {"background"}
    assert cal["red"].flag_sim == pytest.approx(float(per_image.max()) + tuning.margin, abs=1e-5)
    assert cal["blue"].flag_sim == cal["red"].flag_sim  # one threshold for every character
    assert cal["red"].sigma == pytest.approx(max(float(per_image.std()), tuning.sigma_floor), abs=1e-5)
    assert cal["blue"].bg_max == pytest.approx(float(per_image[:, 1].max()), abs=1e-5)

    info = IndexStore.open(out).summary()
    assert info["characters"]["red"]["prompts"] == [{"id": "text:red:1", "prompt": "a red thing"},
                                                    {"id": "text:red:2", "prompt": "crimson red"}]
    assert info["characters"]["green"]["prompts"] == []
    assert info["text"]["prompts"] == 3 and info["text"]["source"] == "background"
    json.dumps(info)  # `index info --json` prints it


def test_text_normalised_table() -> None:
    cases = [  # (region x prompt cosines, owner of each prompt, characters) -> n
        ([[0.3, 0.1]], [0, 0], 1, [[0.3]]),  # one character: no other-character term
        ([[0.3, 0.1, 0.2]], [0, 0, 1], 2, [[0.2, 0.05]]),
        ([[0.1, 0.4], [0.0, -0.2]], [0, 1], 2, [[-0.1, 0.35], [0.1, -0.2]]),
    ]
    for sims, owner, chars, want in cases:
        got = text_normalised(np.array(sims), np.array(owner), chars)
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_without_background_the_text_channel_uses_its_defaults(tmp_path: Path, refs: Path) -> None:
    build_index(read_folder(refs), tmp_path / "idx", TextFake(), prompts=PROMPTS[:1])
    data = IndexStore.open(tmp_path / "idx").data
    cal = data.text.calibration["red"]  # type: ignore[union-attr]
    assert (cal.source, cal.flag_sim, cal.sigma) == ("default", *tuning_for(data.backbone["name"]).text_default)


def test_index_without_prompts_is_format_3_and_older_formats_are_refused(tmp_path: Path, refs: Path) -> None:
    out = tmp_path / "idx"
    build_index(read_folder(refs), out, TextFake())
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["format_version"] == 3 and "prompts" not in manifest["counts"]  # what mamori 3 wrote
    store = IndexStore.open(out)
    assert store.data.text is None and store.text is None and store.summary()["text"] is None
    with sqlite3.connect(out / manifest["generation"] / "meta.sqlite") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "prompts" not in tables
    for version in (2, FORMAT_VERSION + 1):
        (out / "index.json").write_text(json.dumps({**manifest, "format_version": version}))
        with pytest.raises(IncompatibleIndexError):
            IndexStore.open(out)


@pytest.mark.parametrize("damage", ["DELETE FROM text_calibration WHERE name = 'blue'",
                                    "UPDATE prompts SET vector = x'00' WHERE row = 1"])
def test_damaged_prompt_tables_are_a_corrupt_index(tmp_path: Path, refs: Path, damage: str) -> None:
    out = tmp_path / "idx"
    build_index(read_folder(refs), out, TextFake(), prompts=PROMPTS)
    gen = json.loads((out / "index.json").read_text())["generation"]
    with sqlite3.connect(out / gen / "meta.sqlite") as db:
        db.execute(damage)
    with pytest.raises(CorruptIndexError):
        IndexStore.open(out)


def test_remove_drops_prompts_with_the_characters_last_reference(tmp_path: Path, refs: Path) -> None:
    out = tmp_path / "idx"
    build_index(read_folder(refs), out, TextFake(), prompts=PROMPTS)
    remove_references(out, reference=str((refs / "red" / "a.png").resolve()))
    assert IndexStore.open(out).data.text.prompts == ["a red thing", "crimson red", "blue"]  # type: ignore[union-attr]
    remove_references(out, character="blue")
    text = IndexStore.open(out).data.text
    assert text is not None and text.characters == ["red", "red"] and set(text.calibration) == {"red"}
    remove_references(out, reference=str((refs / "red" / "b.png").resolve()))
    assert IndexStore.open(out).data.text is None
    assert json.loads((out / "index.json").read_text())["format_version"] == 3


def test_add_prompts_alone_keeps_each_pair_once_and_numbering(tmp_path: Path, refs: Path) -> None:
    out = tmp_path / "idx"
    build_index(read_folder(refs), out, TextFake())
    add_references(out, [], TextFake(), prompts=[PromptEntry("red", "red one")])
    report = add_references(out, [], TextFake(), prompts=[PromptEntry("red", "red one"), PromptEntry("red", "red two")])
    assert not report.added
    info = IndexStore.open(out).summary()
    assert [p["id"] for p in info["characters"]["red"]["prompts"]] == ["text:red:1", "text:red:2"]
    with pytest.raises(ManifestError, match="'purple'"):
        add_references(out, [], TextFake(), prompts=[PromptEntry("purple", "a purple thing")])
    # a manifest's `prompt` column adds prompts with the images
    (tmp_path / "m.csv").write_text("path,character,franchise,rights_holder,license,prompt,note\n"
                                    f"{refs / 'green' / 'a.png'},green,,,,a green thing,x\n")
    entries = read_manifest(tmp_path / "m.csv")
    assert entries[0].prompt == "a green thing" and entries[0].extra == {"note": "x"}
    add_references(out, entries, TextFake())
    assert IndexStore.open(out).summary()["characters"]["green"]["prompts"][0]["prompt"] == "a green thing"


def test_prompts_need_an_embedder_with_a_text_tower(tmp_path: Path, refs: Path) -> None:
    with pytest.raises(ManifestError, match="text tower"):
        build_index(read_folder(refs), tmp_path / "idx", NoTextFake(), prompts=PROMPTS)
    assert not (tmp_path / "idx" / "index.json").exists()


def test_read_prompts(tmp_path: Path) -> None:
    good = tmp_path / "p.csv"
    good.write_text("\ufeffprompt,character\n  a red   thing ,red\ncrimson,red\n\"blue, deep\",blue\n", encoding="utf-8")
    assert read_prompts(good) == [PromptEntry("red", "a red thing"), PromptEntry("red", "crimson"),
                                  PromptEntry("blue", "blue, deep")]
    bad = {
        "character,prompt,extra\nred,x,y\n": "columns must be",
        "character\nred\n": "columns must be",
        "character,prompt\nred,\n": "must not be empty",
        "character,prompt\n": "no rows",
        "character,prompt\nred," + "x" * 1001 + "\n": "longer than",
    }
    for text, match in bad.items():
        good.write_text(text)
        with pytest.raises(ManifestError, match=match):
            read_prompts(good)
    good.write_bytes(b"character,prompt\nred,\xff\xfe\n")
    with pytest.raises(ManifestError, match="UTF-8"):
        read_prompts(good)
    with pytest.raises(ManifestError, match="no such prompt file"):
        read_prompts(tmp_path / "missing.csv")
    with pytest.raises(ManifestError, match="no reference"):
        collect_prompts([], [PromptEntry("red", "x")], known={"blue"})
