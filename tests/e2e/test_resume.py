"""Batch scans survive SIGKILL at random moments and resume to exactly one result per input."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from helpers import MAMORI, reference_art, run_cli

from detector.media.synth import composite, draw_scene
from detector.runs.batch import completed, read_list, unique


def _inputs(root: Path, clips: dict[str, Path]) -> list[Path]:
    paths = []
    for i in range(6):
        scene = draw_scene(f"resume-{i}")
        if i % 2 == 0:
            scene, _ = composite(scene, reference_art("benkei").convert("RGBA"), height_frac=0.6, x_frac=0.3 + 0.1 * i)
        p = root / f"still-{i}.png"
        scene.save(p)
        paths.append(p)
    (root / "broken.mp4").write_bytes(os.urandom(3000))  # an error result is a result too
    return [*paths, root / "broken.mp4", clips["positive"], clips["negative"]]


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scan_survives_sigkill_and_resumes_exactly_once(index_dir: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, clips)
    listing = tmp_path / "inputs.txt"
    listing.write_text("# today's batch\n" + "\n".join(map(str, inputs[4:])) + "\n\n")
    args = ["scan", *map(str, inputs[:4]), "--from-list", str(listing), "--index", str(index_dir), "-q"]

    reference = tmp_path / "reference.jsonl"
    run_cli(*args, "--out", reference)
    out = tmp_path / "resumed.jsonl"
    rng = random.Random(7)
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen([*MAMORI, *args, "--out", str(out), "--resume"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        time.sleep(rng.uniform(2.0, 9.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2
    before = len(_records(out)) if out.exists() else 0
    assert before < len(inputs) or kills < 4  # the kills really interrupted the batch
    sheet = tmp_path / "resumed.csv"
    final = run_cli(*args, "--out", out, "--resume", "--csv", sheet)
    assert final.returncode == 1, final.stderr  # the positive clip and the composited stills flag

    got, want = _records(out), _records(reference)
    assert len(got) == len(inputs) == len(want)  # exactly one line per input, none lost or duplicated
    assert sorted(r["path"] for r in got) == sorted(map(str, inputs))
    assert {r["path"]: r for r in got} == {r["path"]: r for r in want}  # identical to an uninterrupted run
    assert all(r["sha256"] for r in got)
    again = run_cli(*args, "--out", out, "--resume")  # nothing left to do
    assert "9 already in" in again.stderr and len(_records(out)) == len(inputs)
    assert again.returncode == 1  # flags from earlier runs still count

    # the spreadsheet covers every input of every run (one row each), from scan --csv and from report
    rows = list(csv.DictReader(sheet.open(encoding="utf-8")))
    assert sorted(r["path"] for r in rows) == sorted(map(str, inputs))
    by_path = {r["path"]: r for r in rows}
    assert by_path[str(clips["positive"])]["character"] == "akane"
    assert float(by_path[str(clips["positive"])]["end"]) > float(by_path[str(clips["positive"])]["start"])
    assert by_path[str(tmp_path / "broken.mp4")]["verdict"] == "error"
    assert by_path[str(tmp_path / "broken.mp4")]["error"].startswith("UnreadableMediaError")
    again_sheet = tmp_path / "again.csv"
    run_cli("report", out, "--csv", again_sheet, check=True)
    assert again_sheet.read_text(encoding="utf-8") == sheet.read_text(encoding="utf-8")


def test_partial_last_line_is_cut_and_lists_are_read(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    good = {"path": "a.mp4", "sha256": "ab" * 32, "verdict": "flag"}
    out.write_text(json.dumps(good) + "\n" + '{"path": "b.mp4", "sha2')
    assert completed(out) == {("a.mp4", "ab" * 32): "flag"}
    assert out.read_text() == json.dumps(good) + "\n"
    assert completed(tmp_path / "missing.jsonl") == {}
    again = {**good, "verdict": "pass", "rescan": {"store": "s.store"}}
    out.write_text(json.dumps(good) + "\n" + json.dumps(again) + "\n")  # a scan line, then a rescan line
    assert completed(out) == {("a.mp4", "ab" * 32): "flag"}
    assert completed(out, rescan=True) == {("a.mp4", "ab" * 32): "pass"}
    lst = tmp_path / "l.txt"
    lst.write_text("# c\nx.mp4\n\n  y.png  \nx.mp4\n")
    assert list(unique(read_list(lst))) == [Path("x.mp4"), Path("y.png")]
