"""Hostile batches through the real `mamori` CLI: non-UTF-8 file names, inputs that are not
regular files, errors scanned again with --retry-errors, Ctrl-C with worker threads, and the exit
status of an unexpected fatal error."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import MAMORI, reference_art, run_cli

from detector.match.results import path_of
from detector.media.synth import composite, draw_scene, make_clip

RAW = b"clip\xff odd.mp4"  # not UTF-8: Python names it with a surrogate escape


def _lines(path: Path) -> list[dict[str, object]]:
    text = path.read_bytes().decode("utf-8")  # strict: the results are valid UTF-8
    return [json.loads(line) for line in text.splitlines()]


def _report_rows(html: Path) -> list[dict[str, object]]:
    page = html.read_bytes().decode("utf-8")
    data = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.DOTALL)
    assert data is not None
    return json.loads(data.group(1))["rows"]  # type: ignore[no-any-return]


def test_non_utf8_file_names_round_trip(index_dir: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    name = os.fsdecode(RAW)
    shutil.copy(clips["positive"], folder / name)
    shutil.copy(clips["negative"], folder / "plain.mp4")
    out, sheet, report = tmp_path / "r.jsonl", tmp_path / "r.csv", tmp_path / "report.html"
    proc = run_cli("scan", folder, "--index", index_dir, "--out", out, "--csv", sheet, "--report", report)
    assert proc.returncode == 1, proc.stderr  # the odd-named copy of the positive clip is flagged
    lines = _lines(out)
    (rec,) = [r for r in lines if r["path_bytes"]]
    assert rec["path"] == str(folder / "clip\\xff odd.mp4") and rec["verdict"] == "flag"
    assert base64.b64decode(str(rec["path_bytes"])) == os.fsencode(folder / name)
    assert path_of(rec) == str(folder / name) and Path(path_of(rec)).is_file()
    assert len(lines) == 2

    rows = list(csv.DictReader(sheet.open(encoding="utf-8")))  # strict UTF-8
    row = next(r for r in rows if r["path_bytes"])
    assert row["path"] == rec["path"] and base64.b64decode(row["path_bytes"]) == os.fsencode(folder / name)

    (shown,) = _report_rows(report)
    assert shown["p"] == rec["path"] and str(shown["h"]).endswith("videos/clip%FF%20odd.mp4")
    frame_thumb = shown["c"][0][2][0][6]  # type: ignore[index]
    assert frame_thumb and (tmp_path / "report_files" / str(frame_thumb)).is_file()  # the video was read back

    again = run_cli("scan", folder, "--index", index_dir, "--out", out, "--resume")
    assert "2 already in" in again.stderr and len(_lines(out)) == 2  # --resume recognised the odd name


def test_only_regular_files_are_read(index_dir: Path, tmp_path: Path) -> None:
    fifo, sock, folder = tmp_path / "pipe.mp4", tmp_path / "s.mp4", tmp_path / "folder.mp4"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: it must not be opened
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    folder.mkdir()
    still = tmp_path / "still.png"
    draw_scene("regular").save(still)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(map(str, [fifo, "/dev/zero", sock, folder, still])) + "\n")
    out = tmp_path / "r.jsonl"
    try:
        proc = run_cli("scan", fifo, "--from-list", listing, "--index", index_dir, "--out", out, timeout=300)
        resumed = run_cli("scan", "--from-list", listing, "--index", index_dir, "--out", out, "--resume", timeout=300)
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    first = {r["path"]: r for r in _lines(out)[:5]}
    assert first[str(still)]["verdict"] != "error"  # the batch went on
    for path, what in [(fifo, "a FIFO"), ("/dev/zero", "a character device"), (sock, "a socket"),
                       (folder, "a folder")]:
        r = first[str(path)]
        assert r["verdict"] == "error" and r["error_kind"] == "media" and r["sha256"] is None
        assert f"{what}, not a regular file" in str(r["error"]), r
    # --resume hashes inputs to find those already done: it checks the type first, so no hang either
    assert resumed.returncode == 0 and "1 already in" in resumed.stderr
    assert len(_lines(out)) == 9  # the four unhashable inputs are tried again (and fail at once)


def test_retry_errors_scans_again_worker_and_internal_errors(index_dir: Path, tmp_path: Path) -> None:
    good, broken = tmp_path / "good.png", tmp_path / "broken.mp4"
    scene, _ = composite(draw_scene("retry"), reference_art("chiyo").convert("RGBA"), height_frac=0.6, x_frac=0.4)
    scene.save(good)
    broken.write_bytes(os.urandom(2000))
    out = tmp_path / "r.jsonl"
    assert run_cli("scan", good, broken, "--index", index_dir, "--out", out).returncode == 1
    real = {r["path"]: r for r in _lines(out)}
    assert real[str(broken)]["error_kind"] == "media"
    # as a Ray scan whose worker died on `good` twice would have recorded it
    died = {**real[str(good)], "verdict": "error", "score": 0.0, "characters": [], "error_kind": "worker",
            "error": "ActorDiedError: the Ray worker scoring it died, on two workers"}
    out.write_text(json.dumps(died) + "\n" + json.dumps(real[str(broken)]) + "\n")

    plain = run_cli("scan", good, broken, "--index", index_dir, "--out", out, "--resume")
    assert plain.returncode == 0 and "2 already in" in plain.stderr  # --resume alone keeps error lines
    sheet = tmp_path / "r.csv"
    retried = run_cli("scan", good, broken, "--index", index_dir, "--out", out, "--resume", "--retry-errors",
                      "--csv", sheet)
    assert retried.returncode == 1, retried.stderr  # `good` is flagged now
    lines = _lines(out)
    assert len(lines) == 3 and lines[-1]["path"] == str(good) and lines[-1]["verdict"] == "flag"  # appended
    rows = {r["path"]: r for r in csv.DictReader(sheet.open(encoding="utf-8"))}
    assert len(rows) == 2 and rows[str(good)]["verdict"] == "flag"  # the later line wins
    assert rows[str(broken)]["error_kind"] == "media"
    again = run_cli("scan", good, broken, "--index", index_dir, "--out", out, "--resume", "--retry-errors")
    assert "2 already in" in again.stderr and len(_lines(out)) == 3  # unreadable media is not retried
    assert run_cli("scan", good, "--index", index_dir, "--retry-errors").returncode == 2


def test_ctrl_c_with_workers_stops_promptly_and_resume_finishes(index_dir: Path, tmp_path: Path) -> None:
    inputs = [tmp_path / f"clip-{i}.mp4" for i in range(6)]
    for i, clip in enumerate(inputs):
        make_clip(clip, f"sigint-{i}", reference_art("akane", 0) if i % 3 == 0 else None, duration=6.0,
                  appear=(1.0, 4.0))
    out = tmp_path / "r.jsonl"
    args = ["scan", *map(str, inputs), "--index", str(index_dir), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen([*MAMORI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 300
    while not (out.exists() and out.read_bytes().endswith(b"\n")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - t0 < 10, err  # not after every running input
    assert "interrupted" in err
    written = _lines(out)  # complete JSON lines only
    assert 1 <= len(written) < len(inputs)
    final = run_cli(*args, "--resume")
    assert final.returncode == 1, final.stderr
    lines = _lines(out)
    assert sorted(r["path"] for r in lines) == sorted(map(str, inputs))  # one line per input
    assert all(r["verdict"] != "error" for r in lines)


def test_fatal_unexpected_error_exits_2_not_1(index_dir: Path, tmp_path: Path) -> None:
    """An exception outside one input's scoring (here: a bug in the CSV writer) is exit 2 with one
    line on stderr; before, it escaped main() and Python exited 1, which reads as "flagged"."""
    scene, _ = composite(draw_scene("fatal"), reference_art("akane").convert("RGBA"), height_frac=0.6, x_frac=0.4)
    scene.save(tmp_path / "flagged.png")
    code = ("import sys, detector.runs.export as e\n"
            "def boom(*a, **k): raise KeyError('column')\n"
            "e.write_csv = boom\n"
            "from detector.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code, "scan", str(tmp_path / "flagged.png"), "--index",
                           str(index_dir), "--out", str(tmp_path / "r.jsonl"), "--csv", str(tmp_path / "r.csv")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == "KeyError: 'column'" and "Traceback" not in proc.stderr
    assert _lines(tmp_path / "r.jsonl")[0]["verdict"] == "flag"  # the results were written before
