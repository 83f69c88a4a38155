"""Index building, add/remove, duplicates and crash safety, with a fake in-memory embedder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import COLOURS
from PIL import Image

from index import (
    IncompatibleIndexError,
    IndexNotFoundError,
    IndexStore,
    IndexStoreError,
    add_references,
    build_index,
    read_folder,
    remove_references,
)
from index.errors import IndexLockedError
from index.store import index_lock


class FakeEmbedder:
    """Embeds an image as its normalised mean colour plus a constant: deterministic and instant."""

    def __init__(self, name: str = "fake", dim: int = 4):
        self.name, self.dim = name, dim

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "weights_sha256": "0" * 64, "preprocess": {"size": 1}}

    def _vec(self, im: Image.Image) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        v[:3] = np.asarray(im, np.float32).reshape(-1, 3).mean(0) / 255
        v[3] = 0.1
        return v / np.linalg.norm(v)

    def embed_references(self, images):  # type: ignore[no-untyped-def]
        return [(self._vec(im)[None], ["full"]) for im in images]

    def embed_queries(self, images):  # type: ignore[no-untyped-def]
        return [self._vec(im)[None] for im in images]





def test_build_open_search(tmp_path: Path, refs: Path) -> None:
    report = build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder())
    assert len(report.added) == 4 and report.characters == 3 and not report.skipped
    store = IndexStore.open(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert manifest["counts"]["references"] == 4 and manifest["backbone"]["name"] == "fake"
    sims, hits = store.search(FakeEmbedder()._vec(Image.new("RGB", (2, 2), (0, 250, 0)))[None], k=2)
    assert hits[0][0].character == "green" and sims[0][0] > 0.99
    assert set(store.characters) == set(COLOURS)
    assert all(c.source == "default" for c in store.characters.values())  # no background given


def test_duplicates_stored_once(tmp_path: Path, refs: Path) -> None:
    (refs / "blue" / "copy.png").write_bytes((refs / "blue" / "a.png").read_bytes())
    report = build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder())
    assert len(report.added) == 4
    assert any("duplicate of reference" in why for _, why in report.skipped)


def test_bad_reference_skipped_not_fatal(tmp_path: Path, refs: Path) -> None:
    (refs / "blue" / "broken.png").write_bytes(b"not a png")
    report = build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder())
    assert len(report.added) == 4 and "broken.png" in report.skipped[0][0]


def test_refuses_to_overwrite_without_force(tmp_path: Path, refs: Path) -> None:
    build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder())
    with pytest.raises(IndexStoreError, match="already exists"):
        build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder())
    build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder(), force=True)


def test_add_remove(tmp_path: Path, refs: Path) -> None:
    idx = tmp_path / "idx"
    build_index(read_folder(refs), idx, FakeEmbedder())
    more = tmp_path / "more" / "yellow"
    more.mkdir(parents=True)
    Image.new("RGB", (8, 8), (255, 255, 0)).save(more / "y.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(more / "dup.png")  # same pixels as blue/a.png, same bytes? no: new file
    report = add_references(idx, read_folder(more.parent), FakeEmbedder())
    store = IndexStore.open(idx)
    assert "yellow" in store.characters and len(store.references) == 4 + len(report.added)
    ref_id = next(r.id for r in store.references.values() if r.character == "green")
    gone = remove_references(idx, reference=ref_id)
    assert [r.character for r in gone] == ["green"]
    assert "green" not in IndexStore.open(idx).characters
    gone = remove_references(idx, character="red")
    assert len(gone) == 2 and "red" not in IndexStore.open(idx).characters
    with pytest.raises(IndexStoreError, match="no character"):
        remove_references(idx, character="nobody")


def test_add_with_other_backbone_refused(tmp_path: Path, refs: Path) -> None:
    build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder())
    with pytest.raises(IncompatibleIndexError, match="built with backbone 'fake'"):
        add_references(tmp_path / "idx", read_folder(refs), FakeEmbedder(name="other"))


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError):
        IndexStore.open(tmp_path / "nothing")


def test_second_writer_is_refused(tmp_path: Path, refs: Path) -> None:
    build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder())
    with index_lock(tmp_path / "idx"), pytest.raises(IndexLockedError):
        remove_references(tmp_path / "idx", character="red")


_CRASH = """
import os, sys
sys.path[:0] = {paths!r}
from index import store
real = store.write_generation
def dying(gen, data):
    real(gen, data)
    os._exit(9)          # killed after the new generation is written, before the commit
store.write_generation = dying
from test_store_build import FakeEmbedder
from index import add_references, read_folder
add_references({idx!r}, read_folder({more!r}), FakeEmbedder())
"""


def test_crash_mid_add_leaves_old_index(tmp_path: Path, refs: Path) -> None:
    idx = tmp_path / "idx"
    build_index(read_folder(refs), idx, FakeEmbedder())
    before = (idx / "index.json").read_text()
    more = tmp_path / "more" / "cyan"
    more.mkdir(parents=True)
    Image.new("RGB", (8, 8), (0, 255, 255)).save(more / "c.png")
    code = _CRASH.format(paths=[str(Path(__file__).parent), *sys.path], idx=str(idx), more=str(more.parent))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                          check=False)
    assert proc.returncode == 9, proc.stderr
    assert (idx / "index.json").read_text() == before
    store = IndexStore.open(idx)
    assert "cyan" not in store.characters and len(store.references) == 4
    add_references(idx, read_folder(more.parent), FakeEmbedder())  # the next writer sweeps the debris
    assert "cyan" in IndexStore.open(idx).characters
    assert not [p for p in idx.iterdir() if p.name.startswith(".tmp-")]


def test_interrupted_first_build_does_not_open(tmp_path: Path) -> None:
    (tmp_path / "idx" / ".tmp-abc").mkdir(parents=True)
    with pytest.raises(IndexNotFoundError, match="interrupted"):
        IndexStore.open(tmp_path / "idx")


def test_generic_reference_is_quarantined_listed_and_never_matched(tmp_path: Path, refs: Path) -> None:
    rng = np.random.default_rng(0)
    bg = tmp_path / "bg"
    bg.mkdir()
    for i in range(14):  # most ordinary images share one look (here: a colour), with variation
        base = np.array([200, 180, 40]) if i < 10 else rng.integers(0, 255, 3)
        rgb = tuple(int(x) for x in np.clip(base + rng.normal(0, 12, 3), 0, 255))
        Image.new("RGB", (8, 8), rgb).save(bg / f"{i}.png")
    (refs / "plain").mkdir()
    Image.new("RGB", (8, 8), (200, 180, 40)).save(refs / "plain" / "a.png")  # exactly the common look
    report = build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder(), background=bg)
    assert [r.character for r in report.quarantined] == ["plain"]
    store = IndexStore.open(tmp_path / "idx")
    info = store.summary()
    assert [q["character"] for q in info["quarantined"]] == ["plain"] and "generic" in info["quarantined"][0]["reason"]
    _, hits = store.search(FakeEmbedder()._vec(Image.new("RGB", (2, 2), (200, 180, 40)))[None], k=10)
    assert all(h.character != "plain" for h in hits[0])
    assert store.active_characters == 3  # red, green, blue: "plain" has no matchable reference
    # kept on request
    report = build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder(), background=bg, force=True,
                         keep_generic=True)
    assert report.quarantined == [] and IndexStore.open(tmp_path / "idx").summary()["quarantined"] == []


def test_pdq_hashes_stored_and_removed_with_their_reference(tmp_path: Path, refs: Path) -> None:
    build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder())
    data = IndexStore.open(tmp_path / "idx").data
    assert data.pdq_hashes.shape == (4 * 8, 32) and len(data.pdq_refs) == 32  # 8 dihedral hashes per reference
    remove_references(tmp_path / "idx", character="red")
    data = IndexStore.open(tmp_path / "idx").data
    assert data.pdq_hashes.shape == (2 * 8, 32)
    assert {data.references[r].character for r in data.pdq_refs} == {"green", "blue"}
    # SIFT features (geometric verification) follow their references too
    assert set(data.local) == set(data.local_check) == set(data.references)
    add_references(tmp_path / "idx", read_folder(refs), FakeEmbedder())
    data = IndexStore.open(tmp_path / "idx").data
    assert set(data.local) == set(data.references) and len(data.references) == 4
    assert all(set(views) == {"full", "mirror"} for views in data.local.values())


def test_thresholds_set_and_kept_across_changes(tmp_path: Path, refs: Path) -> None:
    from index import set_thresholds

    build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder())
    set_thresholds(tmp_path / "idx", flag=0.7, review=0.3)
    store = IndexStore.open(tmp_path / "idx")
    assert (store.flag_score, store.review_score) == (0.7, 0.3)
    remove_references(tmp_path / "idx", character="red")
    assert IndexStore.open(tmp_path / "idx").flag_score == 0.7
    with pytest.raises(IndexStoreError, match="review <= flag"):
        set_thresholds(tmp_path / "idx", review=0.9)


@pytest.mark.parametrize("name", ["local.npz", "background.npz"])
@pytest.mark.parametrize("damage", ["garbled", "empty", "truncated"])
def test_damaged_feature_file_is_a_corrupt_index_error(tmp_path: Path, refs: Path, name: str, damage: str) -> None:
    from index.errors import CorruptIndexError

    build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder())
    gen = tmp_path / "idx" / json.loads((tmp_path / "idx" / "index.json").read_text())["generation"]
    raw = bytearray((gen / name).read_bytes())
    if damage == "garbled":
        raw[30:90] = b"x" * 60  # inside the archive's first entry
    else:
        raw = raw[: 0 if damage == "empty" else len(raw) // 2]
    (gen / name).write_bytes(bytes(raw))
    with pytest.raises(CorruptIndexError, match="unreadable"):
        IndexStore.open(tmp_path / "idx")


def test_quarantine_by_hand_and_enable_again(tmp_path: Path, refs: Path) -> None:
    from index.errors import ReferenceNotFoundError
    from index.quarantine import enable_reference, quarantine_references

    build_index(read_folder(refs), tmp_path / "idx", FakeEmbedder())
    store = IndexStore.open(tmp_path / "idx")
    green = next(r for r in store.references.values() if r.character == "green")
    gen = store.manifest["generation"]
    assert [r.id for r in quarantine_references(tmp_path / "idx", [green.id, "no-such-id"], "flood: test")] == [green.id]
    store = IndexStore.open(tmp_path / "idx")
    assert store.manifest["generation"] != gen and store.active_characters == 2
    assert [(q["id"], q["reason"]) for q in store.summary()["quarantined"]] == [(green.id, "flood: test")]
    _, hits = store.search(FakeEmbedder()._vec(Image.new("RGB", (2, 2), COLOURS["green"]))[None], k=10)
    assert all(h.character != "green" for h in hits[0])
    gen = store.manifest["generation"]
    assert quarantine_references(tmp_path / "idx", [green.id], "again") == []  # already: nothing written
    assert IndexStore.open(tmp_path / "idx").manifest["generation"] == gen
    ref, was = enable_reference(tmp_path / "idx", green.source_path)  # by source path, like `remove`
    assert (ref.id, ref.quarantine, was) == (green.id, "", "flood: test")
    store = IndexStore.open(tmp_path / "idx")
    assert store.summary()["quarantined"] == [] and store.active_characters == 3
    assert enable_reference(tmp_path / "idx", green.id)[1] == ""  # not quarantined: unchanged
    with pytest.raises(ReferenceNotFoundError):
        enable_reference(tmp_path / "idx", "nope")
