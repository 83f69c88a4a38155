"""Retroactive matching end to end: `scan --store`, a character added to the index, `mamori rescan`
(with the videos gone, and with them present), a scan killed while it stores, `store info|compact`."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import MAMORI, reference_art, run_cli

from detector.media.synth import make_clip


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def without_akane(tmp_path_factory: pytest.TempPathFactory, refs_dir: Path, background_dir: Path) -> Path:
    """An index of benkei and chiyo (akane is registered later)."""
    root = tmp_path_factory.mktemp("rescan")
    refs = root / "refs"
    for name in ("benkei", "chiyo"):
        shutil.copytree(refs_dir / name, refs / name)
    index = root / "index"
    run_cli("index", "build", refs, "--out", index, "--backbone", "effnet-lite0-imagenet",
            "--background", background_dir, check=True)
    return index


def test_rescan_finds_a_character_added_after_the_scan(without_akane: Path, refs_dir: Path, clips: dict[str, Path],
                                                        tmp_path: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(without_akane, index)
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("positive", "negative"):
        shutil.copy(clips[name], videos / f"{name}.mp4")
    store = tmp_path / "scans.store"
    first = run_cli("scan", videos, "--index", index, "--store", store, "--out", tmp_path / "scan.jsonl", "-q")
    assert first.returncode == 0, first.stderr  # akane is not protected yet: nothing flagged
    info = json.loads(run_cli("store", "info", store, check=True).stdout)
    assert info["videos"] == 2 and info["bytes_per_video_minute"] < 500_000
    assert [g["videos"] for g in info["generations"]] == [2]

    add_dir = tmp_path / "new"
    shutil.copytree(refs_dir / "akane", add_dir / "akane")
    run_cli("index", "add", index, add_dir, check=True)

    # with the videos where they were: the candidate frames are decoded and checked exactly
    present = run_cli("rescan", store, "--index", index, "--out", tmp_path / "present.jsonl")
    assert present.returncode == 1, present.stderr
    by_name = {Path(str(r["path"])).name: r for r in _lines(tmp_path / "present.jsonl")}
    pos, neg = by_name["positive.mp4"], by_name["negative.mp4"]
    assert pos["verdict"] == "flag" and pos["characters"][0]["character"] == "akane"
    assert pos["rescan"]["exact"] and pos["rescan"]["characters"] == ["akane"] and pos["rescan"]["exact_frames"] >= 1
    seg = pos["characters"][0]["segments"][0]
    assert 0.5 <= seg["start"] <= 1.5 and 2.0 <= seg["end"] <= 3.5  # akane is on screen from 1.0 s to 3.0 s
    assert neg["verdict"] == "pass" and not neg["characters"]
    if importlib.util.find_spec("ray") is not None:  # one shard per Ray task, the same results
        ray = run_cli("rescan", store, "--index", index, "--engine", "ray", "--workers", "1", "-q")
        assert ray.returncode == 1, ray.stderr
        lines = {Path(str(r["path"])).name: r for r in map(json.loads, ray.stdout.splitlines())}
        def names(rs: dict[str, dict[str, Any]]) -> dict[str, tuple[object, list[object]]]:
            return {k: (r["verdict"], [c["character"] for c in r["characters"]]) for k, r in rs.items()}

        assert names(lines) == names(by_name)  # (scores may differ in the last digits: 1 thread vs 2)

    # the videos moved away: scored from the store alone, and the result says so
    shutil.move(videos, tmp_path / "elsewhere")
    gone = run_cli("rescan", store, "--index", index, "--out", tmp_path / "gone.jsonl")
    assert gone.returncode in (0, 1), gone.stderr
    by_name = {Path(str(r["path"])).name: r for r in _lines(tmp_path / "gone.jsonl")}
    pos, neg = by_name["positive.mp4"], by_name["negative.mp4"]
    assert pos["verdict"] in ("flag", "review") and pos["characters"][0]["character"] == "akane"
    assert not pos["rescan"]["exact"] and "not readable" in pos["rescan"]["reason"]
    seg = pos["characters"][0]["segments"][0]
    assert 0.5 <= seg["start"] <= 1.5 and 2.0 <= seg["end"] <= 3.5
    assert neg["verdict"] == "pass"

    # an explicit selection, and a character the index does not have
    only = run_cli("rescan", store, "--index", index, "--characters", "benkei", "-q")
    assert all(r["verdict"] == "pass" for r in map(json.loads, only.stdout.splitlines()))
    bad = run_cli("rescan", store, "--index", index, "--characters", "nobody")
    assert bad.returncode == 2 and "not in the index: nobody" in bad.stderr


def test_scan_killed_while_storing_leaves_a_working_store(without_akane: Path, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(5):
        make_clip(videos / f"clip-{i}.mp4", f"kill-{i}", reference_art("benkei", 0) if i % 2 else None,
                  duration=3.0, appear=(0.5, 2.5), height_frac=0.6, x_frac=0.5)
    store, out = tmp_path / "s.store", tmp_path / "out.jsonl"
    args = [*MAMORI, "scan", str(videos), "--index", str(without_akane), "--store", str(store), "--out", str(out), "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(out.read_text().splitlines())
    assert 2 <= written < 5  # killed mid-batch (a record is committed before its line is written)
    info = json.loads(run_cli("store", "info", store, check=True).stdout)
    assert written <= info["videos"] <= written + 1  # whole videos only

    rescanned = run_cli("rescan", store, "--index", without_akane, "--all", "-q")
    assert rescanned.returncode == 1, rescanned.stderr  # benkei's clips flag from the store
    assert len(rescanned.stdout.splitlines()) == info["videos"]

    # resume completes the batch into the same store; scanning again replaces rows, compact reclaims
    run_cli(*args[len(MAMORI):], "--resume", check=False)
    run_cli("scan", videos / "clip-1.mp4", "--index", without_akane, "--store", store, "-q")
    info = json.loads(run_cli("store", "info", store, check=True).stdout)
    assert info["videos"] == 5 and info["garbage_bytes"] > 0
    run_cli("store", "compact", store, check=True)
    after = json.loads(run_cli("store", "info", store, check=True).stdout)
    assert after["videos"] == 5 and after["garbage_bytes"] == 0 and after["bytes"] < info["bytes"]
    final = run_cli("rescan", store, "--index", without_akane, "--all", "-q")
    assert [json.loads(x)["verdict"] for x in final.stdout.splitlines()].count("flag") >= 2


def test_rescan_resumed_into_the_scan_results_rescans_every_video(without_akane: Path, clips: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    """`rescan --resume --out F` where F holds the scan's own lines: scan lines are not rescan
    lines, so every stored video is rescanned once, and a second resume adds nothing."""
    store, out = tmp_path / "scans.store", tmp_path / "results.jsonl"
    run_cli("scan", clips["negative"], "--index", without_akane, "--store", store, "--out", out, "-q", check=True)
    args = ("rescan", store, "--index", without_akane, "--all", "--out", out, "--resume")
    first = run_cli(*args)
    assert first.returncode == 0 and "rescanned 1 stored video(s)" in first.stderr, first.stderr
    assert [bool(r.get("rescan")) for r in _lines(out)] == [False, True]
    second = run_cli(*args)
    assert second.returncode == 0 and "rescanned 0 stored video(s)" in second.stderr, second.stderr
    assert len(_lines(out)) == 2
