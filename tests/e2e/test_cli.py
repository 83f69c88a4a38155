"""End to end: the real `mamori` CLI in subprocesses, on drawn art and PyAV-encoded clips."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from helpers import reference_art, run_cli

STEP = 0.5  # sampling step at the default 2 fps


def results(path: Path) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in map(json.loads, path.read_text().splitlines())}


def test_index_info(index_dir: Path) -> None:
    proc = run_cli("index", "info", index_dir, check=True)
    assert "effnet-lite0-imagenet" in proc.stdout and "akane" in proc.stdout
    info = json.loads(run_cli("index", "info", index_dir, "--json", check=True).stdout)
    # two views (as given, mirrored) per reference; nothing generic in drawn characters
    assert info["counts"] == {"references": 6, "vectors": 12, "characters": 3, "background_images": 20}
    assert info["quarantined"] == [] and "quarantined 0 reference(s)" in proc.stdout
    assert all(c["source"] == "background" for c in info["characters"].values())


def test_scan_flags_pasted_reference_with_segment(index_dir: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    proc = run_cli("scan", clips["positive"], clips["negative"], "--index", index_dir, "--out", out)
    assert proc.returncode == 1, proc.stderr  # something flagged
    assert "[2/2]" in proc.stderr and "results in" in proc.stderr
    res = results(out)
    pos, neg = res["positive.mp4"], res["negative.mp4"]
    assert pos["verdict"] == "flag" and pos["error"] is None
    top = pos["characters"][0]
    assert top["character"] == "akane" and top["score"] == pos["score"]
    seg = max(top["segments"], key=lambda s: s["peak_score"])
    assert abs(seg["start"] - 1.0) <= STEP and abs(seg["end"] - 2.5) <= STEP  # on screen 1.0 s to 3.0 s
    assert 1.0 <= seg["peak_time"] <= 3.0 and seg["reference"].endswith((".png",)) and seg["channel"] == "embedding"
    assert neg["verdict"] == "pass" and neg["characters"] == [] and neg["score"] < 0.5
    assert pos["frames"] == neg["frames"] == 8 and pos["duration"] == pytest.approx(4.0, abs=0.1)


def test_score_single_file(index_dir: Path, clips: dict[str, Path]) -> None:
    proc = run_cli("score", clips["negative"], "--index", index_dir)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["verdict"] == "pass"


def _bomb(path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 9000, 9000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 99)) + chunk(b"IEND", b""))


def test_bad_inputs_are_results_and_batch_goes_on(index_dir: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    d = tmp_path / "batch"
    d.mkdir()
    shutil.copy(clips["positive"], d / "a-good.mp4")
    (d / "b-zero.mp4").write_bytes(b"")
    (d / "c-text.mp4").write_text("not a video at all\n" * 20)
    data = clips["negative"].read_bytes()
    (d / "d-corrupt.mp4").write_bytes(data[:64] + bytes(range(256)) * 20)
    _bomb(d / "e-bomb.png")
    (d / "f odd name (1) ünï.mp4").write_bytes(clips["negative"].read_bytes())
    out = tmp_path / "r.jsonl"
    proc = run_cli("scan", d, tmp_path / "missing.mp4", "--index", index_dir, "--out", out)
    assert proc.returncode == 1, proc.stderr
    res = results(out)
    assert len(res) == 7
    assert res["a-good.mp4"]["verdict"] == "flag"
    assert res["f odd name (1) ünï.mp4"]["verdict"] == "pass"
    for name, why in [("b-zero.mp4", "empty file"), ("c-text.mp4", "not a readable video"),
                      ("d-corrupt.mp4", ""), ("e-bomb.png", "decompression"), ("missing.mp4", "no such file")]:
        assert res[name]["verdict"] == "error", name
        assert why in res[name]["error"], res[name]["error"]
        assert res[name]["error"].split(":")[0] in ("UnreadableMediaError", "MediaLimitError")


def test_missing_index_is_a_clear_error(tmp_path: Path, clips: dict[str, Path]) -> None:
    proc = run_cli("scan", clips["negative"], "--index", tmp_path / "nope")
    assert proc.returncode == 2
    assert proc.stderr.startswith("IndexNotFoundError:") and "Traceback" not in proc.stderr


def test_index_of_another_backbone_is_refused(index_dir: Path, clips: dict[str, Path]) -> None:
    proc = run_cli("scan", clips["negative"], "--index", index_dir, "--backbone", "clip-vit-b32")
    assert proc.returncode == 2 and proc.stderr.startswith("IncompatibleIndexError:")


def test_index_built_with_other_weights_is_refused(index_dir: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "idx"
    shutil.copytree(index_dir, copy)
    manifest = json.loads((copy / "index.json").read_text())
    manifest["backbone"]["weights_sha256"] = "f" * 64
    (copy / "index.json").write_text(json.dumps(manifest))
    proc = run_cli("score", clips["negative"], "--index", copy)
    assert proc.returncode == 2 and "IncompatibleIndexError" in proc.stderr and "weights_sha256" in proc.stderr


def test_add_and_remove_via_cli(index_dir: Path, refs_dir: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    shutil.copytree(index_dir, idx)
    new = tmp_path / "new" / "daichi"
    new.mkdir(parents=True)
    shutil.copy(refs_dir / "akane" / "0.png", new / "dup.png")  # same bytes as an indexed reference
    reference_art("daichi").save(new / "0.png")
    proc = run_cli("index", "add", idx, new.parent, check=True)
    assert "added 1 reference" in proc.stderr and "duplicate of reference" in proc.stderr
    assert "daichi" in json.loads(run_cli("index", "info", idx, "--json").stdout)["characters"]
    run_cli("index", "remove", idx, "--character", "daichi", check=True)
    assert "daichi" not in json.loads(run_cli("index", "info", idx, "--json").stdout)["characters"]
    proc = run_cli("index", "remove", idx, "--character", "nobody")
    assert proc.returncode == 2 and "ReferenceNotFoundError" in proc.stderr


def test_usage_errors_and_help() -> None:
    assert run_cli("scan").returncode == 2
    for args in (["--help"], ["index", "build", "--help"], ["scan", "--help"], ["score", "--help"], ["demo", "--help"],
                 ["index", "add", "--help"], ["index", "remove", "--help"], ["index", "info", "--help"]):
        proc = run_cli(*args)
        assert proc.returncode == 0 and "usage: mamori" in proc.stdout
    assert "--max-frames" in run_cli("scan", "--help").stdout


def test_demo_runs_offline(tmp_path: Path) -> None:
    proc = run_cli("demo", "--out", tmp_path / "demo", "--backbone", "effnet-lite0-imagenet", check=True)
    res = results(tmp_path / "demo" / "results.jsonl")
    assert res["kitsune-in-park.mp4"]["verdict"] == "flag"
    assert res["kitsune-in-park.mp4"]["characters"][0]["character"] == "kitsune-ko"
    assert res["empty-landscape.mp4"]["verdict"] == "pass"
    assert "results written to" in proc.stderr


def test_small_character_in_cluttered_scene_is_flagged_with_its_box(index_dir: Path, tmp_path: Path) -> None:
    """A reference pasted at 30% of the frame height into a busy drawn scene: flagged, with its box."""
    from detector.media.synth import make_clip

    clip = tmp_path / "small.mp4"
    boxes = make_clip(clip, "clutter-scene", reference_art("benkei", 0), duration=3.0, appear=(0.5, 2.5),
                      height_frac=0.3, x_frac=0.7)
    proc = run_cli("score", clip, "--index", index_dir)
    res = json.loads(proc.stdout)
    assert res["verdict"] == "flag", res
    top = res["characters"][0]
    assert top["character"] == "benkei"
    seg = max(top["segments"], key=lambda s: s["peak_score"])
    assert 0.5 <= seg["start"] and seg["end"] <= 2.5
    x0, y0, x1, y1 = seg["box"]
    fx0, fy0, fx1, fy1 = boxes[len(boxes) // 2]  # the figure drifts a few pixels; its middle position
    cx, cy = (fx0 + fx1) / 2, (fy0 + fy1) / 2
    assert x0 <= cx <= x1 and y0 <= cy <= y1  # the matched region contains the character
    assert (x1 - x0) <= 216  # a window at most 0.6 of the frame height, not the whole frame


def test_evaluate_command(index_dir: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({
        "positive": {"positive": True, "character": "akane", "segment": [1.0, 3.0], "track": "nearcopy"},
        "negative": {"positive": False, "character": None, "segment": None, "track": "negative"},
    }))
    out = tmp_path / "eval.jsonl"
    proc = run_cli("evaluate", clips["positive"].parent, "--index", index_dir, "--labels", labels, "--out", out,
                   "--json", check=True)
    rep = json.loads(proc.stdout)
    assert (rep["n_positive"], rep["n_negative"]) == (1, 1)
    assert rep["ap"] == 1.0 and rep["recall"] == 1.0 and rep["fpr"] == 0.0 and rep["char_acc"] == 1.0
    assert rep["segment_acc"] == 1.0 and rep["missing"] == [] and len(out.read_text().splitlines()) == 2
    # from saved results, without scanning again; the table and the suggestion
    proc = run_cli("evaluate", "--index", index_dir, "--labels", labels, "--results", out, check=True)
    assert "AP=1.000" in proc.stdout and "suggested for FPR <= 0.05" in proc.stdout
    assert "mamori index thresholds" in proc.stdout


def test_index_thresholds_command(index_dir: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    shutil.copytree(index_dir, idx)
    proc = run_cli("index", "thresholds", idx, "--flag", "0.8", "--review", "0.3", check=True)
    assert "flag >= 0.8000, review >= 0.3000" in proc.stdout
    bad = run_cli("index", "thresholds", idx, "--review", "0.9")
    assert bad.returncode == 2 and "review <= flag" in bad.stderr
    assert run_cli("index", "thresholds", idx, "--flag", "1.5").returncode == 2  # argparse range check
