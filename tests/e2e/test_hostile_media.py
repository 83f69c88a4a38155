"""End to end, the real CLI: container swaps and timestamp edits do not evade a scan, and an image
bomb is a limit error whatever its name (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli
from PIL import Image

from detector.media.hostile import remux, retime_flv


def _scan(index_dir: Path, out: Path, *paths: Path) -> dict[str, dict]:
    proc = run_cli("scan", *paths, "--index", index_dir, "--out", out)
    assert proc.returncode in (0, 1), proc.stderr
    return {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}


def test_container_swaps_and_bad_timestamps_still_flag(index_dir: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    """The flagged clip's H.264 bitstream as raw .h264 (no timestamps), as MPEG-TS, and as FLV
    with every timestamp 0: each flags akane with all 8 frames sampled; the timestamp-less ones
    say so in `warnings`. A folder scan finds the .h264 and .ts files."""
    folder = tmp_path / "swapped"
    folder.mkdir()
    raw = remux(clips["positive"], folder / "positive.h264")
    remux(clips["positive"], folder / "positive.ts")
    flv = remux(clips["positive"], tmp_path / "positive.flv")
    constant = folder / "constant.flv"
    constant.write_bytes(retime_flv(flv.read_bytes(), lambda i, ms: 0, zero_cts=True))
    res = _scan(index_dir, tmp_path / "r.jsonl", folder)
    assert set(res) == {"positive.h264", "positive.ts", "constant.flv"}
    for name, r in res.items():
        assert r["verdict"] == "flag" and r["characters"][0]["character"] == "akane", (name, r)
        assert r["frames"] == 8 and abs(r["duration"] - 4.0) < 0.2, (name, r)
        seg = max(r["characters"][0]["segments"], key=lambda s: s["peak_score"])
        assert 0.5 <= seg["start"] <= 1.5 and 2.0 <= seg["end"] <= 3.0, (name, seg)
    assert any("timestamps are missing" in w for w in res["positive.h264"]["warnings"])
    assert any("timestamps are not increasing" in w for w in res["constant.flv"]["warnings"])
    assert res["positive.ts"]["warnings"] == []
    assert raw.stat().st_size > 0


def test_image_bomb_is_a_limit_error_whatever_its_name(index_dir: Path, tmp_path: Path) -> None:
    for name in ("bomb.png", "bomb.mp4", "bomb.bin"):
        Image.new("1", (20000, 20000)).save(tmp_path / name, format="PNG")
    res = _scan(index_dir, tmp_path / "r.jsonl", *(tmp_path / n for n in ("bomb.png", "bomb.mp4", "bomb.bin")))
    for r in res.values():
        assert r["verdict"] == "error" and "MediaLimitError" in r["error"] and "refused" in r["error"], r
        assert "decode video" not in r["error"]
