"""The scan store's format: codec fidelity, record round trip, crash safety, damage, backbone checks."""

from __future__ import annotations

import numpy as np
import pytest

from index.errors import ScanStoreError
from index.scancodec import KIND_NEW, KIND_REUSE, StoreCodec, VideoRecord
from index.scanstore import ScanStore

BACKBONE = {"name": "test", "dim": 64, "weights_sha256": "ab" * 32}


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 64)).astype(np.float32) + 2.0  # a shared component, as real features have
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _record(codec: StoreCodec, frames: int = 3) -> VideoRecord:
    vecs = _vectors(frames * 4, seed=frames)
    return VideoRecord(times=np.arange(frames, dtype=np.float32) / 2, sizes=np.tile([[64, 36]], (frames, 1)).astype(np.int32),
                       scales=np.ones(frames, np.float32), kinds=np.array([KIND_NEW] * (frames - 1) + [KIND_REUSE], np.uint8),
                       sources=np.array([-1] * (frames - 1) + [frames - 2], np.int32),
                       counts=np.array([4] * (frames - 1) + [0], np.int32),
                       region_id=np.tile(np.arange(4, dtype=np.int16), frames - 1),
                       codes=codec.encode(vecs[: (frames - 1) * 4]))


@pytest.fixture(scope="module")
def codec() -> StoreCodec:
    return StoreCodec.train(_vectors(600), code_bytes=16)


def test_codec_keeps_cosines_close(codec: StoreCodec) -> None:
    x, ref = _vectors(200, seed=1), _vectors(20, seed=2)
    y = codec.decode(codec.encode(x))
    assert y.shape == x.shape and codec.encode(x).shape == (200, 16)
    centred = lambda v: (v - codec.centre) / np.linalg.norm(v - codec.centre, axis=1, keepdims=True)
    err = np.abs(centred(y) @ centred(ref).T - centred(x) @ centred(ref).T)
    assert err.mean() < 0.15  # random 64-d vectors at 16 bytes; real features are far more compressible
    assert StoreCodec.from_bytes(codec.to_bytes()).encode(x).tobytes() == codec.encode(x).tobytes()


def test_store_round_trip_replace_and_compact(tmp_path, codec: StoreCodec) -> None:  # type: ignore[no-untyped-def]
    store = ScanStore.create(tmp_path / "s", BACKBONE, codec, (1.0, 0.6))
    rec = _record(codec)
    with store.writer() as w:
        w.add_generation("gen-1", "2026-01-01T00:00:00Z", ["r1", "r2"])
        w.append("a.mp4", "aa", rec, duration=1.5, kind="video", fps=2.0, max_frames=10, generation="gen-1")
        w.append("b\udcff.mp4", "bb", rec, duration=1.5, kind="video", fps=2.0, max_frames=10, generation="gen-1")
        w.append("a.mp4", "aa", _record(codec, 4), duration=2.0, kind="video", fps=2.0, max_frames=10,
                 generation="gen-1")  # the same video scanned again replaces its row
    store = ScanStore.open(tmp_path / "s")
    entries = {e.path: e for e in store.entries()}
    assert set(entries) == {"a.mp4", "b\udcff.mp4"}  # a non-UTF-8 file name survives
    assert store.read(entries["a.mp4"]).frames == 4
    back = store.read(entries["b\udcff.mp4"])
    assert back.codes.tobytes() == rec.codes.tobytes() and back.sources.tolist() == rec.sources.tolist()
    assert store.generation_refs("gen-1") == {"r1", "r2"} and store.generation_refs("gen-x") is None
    info = store.info()
    assert info["videos"] == 2 and info["garbage_bytes"] > 0
    done = store.compact()
    assert done.after < done.before and not done.damaged and store.info()["garbage_bytes"] == 0
    assert store.read(store.entries()[0]).frames in (3, 4)


def test_partial_tail_and_damage(tmp_path, codec: StoreCodec) -> None:  # type: ignore[no-untyped-def]
    store = ScanStore.create(tmp_path / "s", BACKBONE, codec, (1.0,))
    with store.writer() as w:
        w.append("a.mp4", "aa", _record(codec), duration=1.5, kind="video", fps=2.0, max_frames=10, generation="g")
    (entry,) = store.entries()
    shard = tmp_path / "s" / "shards" / entry.shard
    with open(shard, "ab") as f:  # a killed writer's half record: never referenced, never read
        f.write(b"PK\x03\x04 half a record")
    assert store.read(entry).frames == 3
    data = bytearray(shard.read_bytes())
    data[entry.offset + 100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ScanStoreError, match="damaged"):
        store.read(entry)


def test_refusals(tmp_path, codec: StoreCodec) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScanStoreError, match="no scan store"):
        ScanStore.open(tmp_path / "missing")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ScanStoreError, match="not an empty folder"):
        ScanStore.create(tmp_path / "full", BACKBONE, codec, (1.0,))
    store = ScanStore.create(tmp_path / "s", BACKBONE, codec, (1.0,))
    store.check_backbone(dict(BACKBONE), "index x")
    with pytest.raises(ScanStoreError, match="rescan needs the same backbone"):
        store.check_backbone({**BACKBONE, "weights_sha256": "cd" * 32}, "index x")
    with store.writer(), pytest.raises(ScanStoreError, match="a scan is writing it"):
        store.compact()
    with store.reading(), pytest.raises(ScanStoreError, match="a rescan is reading it"):
        store.compact()
    (tmp_path / "s" / "store.json").write_text("{not json")
    with pytest.raises(ScanStoreError, match="unreadable"):
        ScanStore.open(tmp_path / "s")
