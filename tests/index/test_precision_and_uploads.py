"""Index paths with any characters, the recorded precision and its drift check, and uploaded art
kept while used and deleted with the last reference that used it (fake in-memory embedder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from index import IndexStore, add_references, build_index, read_folder, remove_references
from index.build import add_upload
from index.manifest import ReferenceEntry
from index.precision import PrecisionCheck, check_precision, probe_image
from index.uploads import UPLOADS

WEIRD = "we?ird #%20 index ü"


class Fake:
    """Mean colour + a constant, like tests/index/test_store_build.py's fake; `wobble` moves every
    query vector a fixed way, standing in for another precision's rounding."""

    def __init__(self, precision: str | None = "fp32", wobble: float = 0.0):
        if precision is not None:
            self.precision = precision
        self.wobble = wobble

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": "fake", "dim": 4, "weights_sha256": "0" * 64, "preprocess": {"size": 1}}

    def _vec(self, im: Image.Image) -> np.ndarray:
        v = np.zeros(4, np.float32)
        v[:3] = np.asarray(im.convert("RGB"), np.float32).reshape(-1, 3).mean(0) / 255
        v[3] = 0.1
        v[0] += self.wobble
        return v / np.linalg.norm(v)

    def embed_references(self, images):  # type: ignore[no-untyped-def]
        return [(self._vec(im)[None], ["full"]) for im in images]

    def embed_queries(self, images):  # type: ignore[no-untyped-def]
        return [self._vec(im)[None] for im in images]


@pytest.fixture
def refs(tmp_path: Path) -> Path:
    root = tmp_path / "refs"
    for name, rgb in {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}.items():
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), rgb).save(root / name / "a.png")
    return root


def _png(path: Path, rgb: tuple[int, int, int]) -> Path:
    Image.new("RGB", (8, 8), rgb).save(path)
    return path


def test_index_in_a_folder_named_with_uri_characters(tmp_path: Path, refs: Path) -> None:
    idx = tmp_path / WEIRD / "idx #2?"
    build_index(read_folder(refs), idx, Fake())
    store = IndexStore.open(idx)
    assert set(store.characters) == {"red", "green", "blue"} and store.path == idx
    add_references(idx, [ReferenceEntry(_png(tmp_path / "p.png", (200, 0, 200)), "purple")], Fake())
    remove_references(idx, character="red")
    assert set(IndexStore.open(idx).characters) == {"green", "blue", "purple"}
    assert not (tmp_path / "we").exists()  # the old URI cut the path at `?` and made an empty database there


def test_precision_recorded_shown_and_kept_across_changes(tmp_path: Path, refs: Path) -> None:
    idx = tmp_path / "idx"
    build_index(read_folder(refs), idx, Fake("bf16"))
    manifest = json.loads((idx / "index.json").read_text())
    assert manifest["precision"] == "bf16" and manifest["format_version"] == 3
    store = IndexStore.open(idx)
    assert store.precision == "bf16" and store.summary()["precision"] == "bf16"
    assert store.data.probe is not None and store.data.probe.shape == (1, 4)
    add_references(idx, [ReferenceEntry(_png(tmp_path / "p.png", (200, 0, 200)), "purple")], Fake("bf16"))
    remove_references(idx, character="red")
    again = IndexStore.open(idx)
    assert again.precision == "bf16" and np.array_equal(again.data.probe, store.data.probe)


def test_probe_image_is_fixed() -> None:
    a, b = probe_image(), probe_image()
    assert a.tobytes() == b.tobytes() and a.size == (192, 192) and len(a.getcolors(1000) or []) >= 6


def test_drift_measured_only_at_another_precision(tmp_path: Path, refs: Path) -> None:
    idx = tmp_path / "idx"
    build_index(read_folder(refs), idx, Fake("fp32"))
    store = IndexStore.open(idx)
    assert check_precision(store, Fake("fp32", wobble=0.5)) is None  # same precision: not checked
    assert check_precision(store, Fake(None)) is None  # running precision unknown
    same = check_precision(store, Fake("bf16"))
    assert isinstance(same, PrecisionCheck) and same.ok and same.drift < 1e-6 and same.cosine > 0.9999
    assert same.index == "fp32" and same.running == "bf16" and same.margin == pytest.approx(0.02)
    far = check_precision(store, Fake("bf16", wobble=0.3))
    assert far is not None and not far.ok and far.drift > far.margin
    assert "fp32" in far.warning and "--precision fp32" in far.warning
    assert far.to_dict()["ok"] is False


def test_index_without_recorded_precision_opens_unchecked(tmp_path: Path, refs: Path) -> None:
    idx = tmp_path / "idx"
    build_index(read_folder(refs), idx, Fake(None))  # an embedder that does not say: unknown
    assert "precision" not in json.loads((idx / "index.json").read_text())
    manifest = json.loads((idx / "index.json").read_text())
    gen = idx / manifest["generation"]
    with np.load(gen / "background.npz") as z:  # as an index written before the probe existed
        old = {k: z[k] for k in z.files if k != "probe"}
    with open(gen / "background.npz", "wb") as f:
        np.savez(f, **old)
    store = IndexStore.open(idx)
    assert store.precision == "" and store.data.probe is None and store.summary()["precision"] is None
    assert check_precision(store, Fake("bf16", wobble=0.3)) is None
    remove_references(idx, character="red")  # and it can still be changed
    assert IndexStore.open(idx).precision == ""


def test_duplicate_upload_keeps_the_stored_art(tmp_path: Path, refs: Path) -> None:
    idx = tmp_path / "idx"
    build_index(read_folder(refs), idx, Fake())
    entry = ReferenceEntry(Path("upload.PNG"), "purple")
    first = add_upload(idx, _png(tmp_path / "one.png", (200, 0, 200)), entry, Fake())
    kept = Path(first.added[0].source_path)
    assert kept.parent == (idx / UPLOADS).absolute() and kept.suffix == ".png" and kept.is_file()
    again = add_upload(idx, _png(tmp_path / "two.png", (200, 0, 200)), entry, Fake())
    assert not again.added and again.duplicates[0][1].id == first.added[0].id
    assert kept.is_file() and (tmp_path / "two.png").is_file()  # nothing moved, nothing deleted
    other = add_upload(idx, _png(tmp_path / "three.png", (0, 0, 255)), ReferenceEntry(Path("x.jpg"), "blue2"),
                       Fake())  # the same image as the build's blue reference: no file is kept for it
    assert other.duplicates and not list((idx / UPLOADS).glob("*.jpg"))
    assert len(IndexStore.open(idx).references) == 4


def test_takedown_deletes_unused_uploaded_art_only(tmp_path: Path, refs: Path) -> None:
    idx = tmp_path / "idx"
    build_index(read_folder(refs), idx, Fake())
    a = add_upload(idx, _png(tmp_path / "a.png", (200, 0, 200)), ReferenceEntry(Path("a.png"), "purple"), Fake())
    b = add_upload(idx, _png(tmp_path / "b.png", (90, 90, 0)), ReferenceEntry(Path("b.png"), "olive"), Fake())
    a_file, b_file = Path(a.added[0].source_path), Path(b.added[0].source_path)
    # a second reference that uses the same stored file (its content changed after the first was added)
    _png(a_file, (201, 1, 201))
    add_references(idx, [ReferenceEntry(a_file, "purple-alt")], Fake())
    gone = remove_references(idx, character="purple")
    assert [r.character for r in gone] == ["purple"] and gone.deleted_files == [] and a_file.is_file()
    gone = remove_references(idx, character="purple-alt")
    assert gone.deleted_files == [a_file] and not a_file.exists()
    gone = remove_references(idx, reference=b.added[0].id)
    assert gone.deleted_files == [b_file] and not b_file.exists()
    gone = remove_references(idx, character="red")  # art outside INDEX/uploads/ is the user's
    assert gone.deleted_files == [] and (refs / "red" / "a.png").is_file()
    with pytest.raises(Exception, match="not empty"):
        remove_references(idx, reference="")
