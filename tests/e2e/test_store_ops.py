"""Scan store operations through the real CLI (issue 27, points 6, 7, 8, 10): a `store compact`
racing a rescan, a damaged record at compaction, a Ray rescan worker that dies twice on a shard,
a store cut on another region grid, and rescan lines kept beside the scan lines of the same files."""

from __future__ import annotations

import csv
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
from index.scanstore import ScanStore

VIDEOS = 16


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def stored(index_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """VIDEOS short clips (every other one shows benkei) scanned with `--store` once."""
    root = tmp_path_factory.mktemp("store-ops")
    videos = root / "videos"
    videos.mkdir()
    for i in range(VIDEOS):
        make_clip(videos / f"clip-{i:02d}.mp4", f"ops-{i}", reference_art("benkei", 0) if i % 2 else None,
                  duration=2.0, appear=(0.0, 2.0), height_frac=0.6, x_frac=0.5)
    store = root / "base.store"
    run_cli("scan", videos, "--index", index_dir, "--store", store, "--out", root / "scan.jsonl", "-q")
    assert json.loads(run_cli("store", "info", store, check=True).stdout)["videos"] == VIDEOS
    return {"videos": videos, "store": store, "scan": root / "scan.jsonl"}


def _copy(stored: dict[str, Path], tmp_path: Path) -> Path:
    store = tmp_path / "s.store"
    shutil.copytree(stored["store"], store)
    return store


def test_compact_during_a_rescan_is_refused_and_every_video_gets_its_line(index_dir: Path, stored: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    store, out = _copy(stored, tmp_path), tmp_path / "rescan.jsonl"
    proc = subprocess.Popen([*MAMORI, "rescan", str(store), "--index", str(index_dir), "--all", "--workers", "1",
                             "--out", str(out), "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and (
                not out.exists() or not out.read_text().strip()):
            time.sleep(0.05)
        assert proc.poll() is None, "the rescan ended before the compaction could race it"
        compact = run_cli("store", "compact", store)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert compact.returncode == 2 and "a rescan is reading it" in compact.stderr, compact.stderr
    assert proc.returncode == 1, err[-3000:]
    lines = _lines(out)
    assert sorted(Path(r["path"]).name for r in lines) == sorted(p.name for p in stored["videos"].iterdir())
    assert all(r["verdict"] != "error" for r in lines), [r["error"] for r in lines if r["error"]]
    # once the rescan is done the store compacts, and a rescan still reads every video
    run_cli("store", "compact", store, check=True)
    again = run_cli("rescan", store, "--index", index_dir, "--all", "-q", "--no-verify")
    assert sum(json.loads(x)["verdict"] != "error" for x in again.stdout.splitlines()) == VIDEOS


def test_compaction_skips_and_reports_a_damaged_record(index_dir: Path, stored: dict[str, Path],
                                                       tmp_path: Path) -> None:
    store = _copy(stored, tmp_path)
    entries = ScanStore.open(store).entries()
    bad = entries[len(entries) // 2]
    shard = store / "shards" / bad.shard
    data = bytearray(shard.read_bytes())
    data[bad.offset + bad.length // 2] ^= 0x10  # one bit flip inside one record
    shard.write_bytes(bytes(data))

    proc = run_cli("store", "compact", store)
    assert proc.returncode == 0, proc.stderr
    assert "1 damaged record(s) skipped" in proc.stderr and bad.sha256 in proc.stderr and bad.path in proc.stderr
    info = json.loads(run_cli("store", "info", store, check=True).stdout)
    assert info["videos"] == VIDEOS - 1 and info["garbage_bytes"] == 0
    rescan = run_cli("rescan", store, "--index", index_dir, "--all", "--no-verify", "-q")
    lines = [json.loads(x) for x in rescan.stdout.splitlines()]
    assert len(lines) == VIDEOS - 1 and all(r["verdict"] != "error" for r in lines)
    assert bad.path not in {r["path"] for r in lines}


def _rescan_workers(root: int, method: str) -> list[int]:
    """pids of the Ray rescan actors started by process `root` running `method` (see test_engines)."""
    parents, titles = {}, {}
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text()
            titles[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        parents[int(d.name)] = int(stat[stat.rfind(")") + 2:].split()[1])

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == root:
                return True
        return False
    return [pid for pid, t in titles.items() if t.startswith(f"ray::_RescanWorker.{method}") and descends(pid)]


def test_a_ray_shard_whose_worker_dies_twice_gives_each_video_an_error_line(index_dir: Path, stored: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'mamori[ray]')")
    store, out, log = _copy(stored, tmp_path), tmp_path / "r.jsonl", tmp_path / "stderr.txt"
    (tmp_path / "cwd").mkdir()
    with log.open("w") as err:
        proc = subprocess.Popen([*MAMORI, "rescan", str(store), "--index", str(index_dir), "--all", "--engine", "ray",
                                 "--workers", "1", "--out", str(out)], stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path / "cwd")
        try:
            for _ in range(2):  # the shard's first worker, then the one it is retried on
                deadline, busy = time.monotonic() + 240, []
                while not busy and time.monotonic() < deadline and proc.poll() is None:
                    busy = _rescan_workers(proc.pid, "score")
                    time.sleep(0.02)
                assert busy, "no Ray actor was seen rescanning"
                os.kill(busy[0], signal.SIGKILL)
                while busy[0] in _rescan_workers(proc.pid, "score"):
                    time.sleep(0.02)
            proc.wait(timeout=300)
        finally:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]  # nothing flagged: every line is an error
    lines = _lines(out)
    entries = {(e.path, e.sha256) for e in ScanStore.open(store).entries()}
    assert {(r["path"], r["sha256"]) for r in lines} == entries and len(lines) == VIDEOS  # one line per video
    assert all(r["verdict"] == "error" and r["error_kind"] == "worker" and r["rescan"] for r in lines)
    assert all("died, on two workers" in r["error"] for r in lines)


def test_a_store_cut_on_another_region_grid_is_refused(index_dir: Path, stored: dict[str, Path],
                                                       tmp_path: Path) -> None:
    store = _copy(stored, tmp_path)
    header = json.loads((store / "store.json").read_text())
    original = header.get("grid")
    header["grid"] = {"overlap": 0.25, "max_steps": 8}
    (store / "store.json").write_text(json.dumps(header))
    proc = run_cli("rescan", store, "--index", index_dir, "--all")
    assert proc.returncode == 2 and "grid" in proc.stderr and not proc.stdout, proc.stderr
    scan = run_cli("scan", stored["videos"] / "clip-01.mp4", "--index", index_dir, "--store", store)
    assert scan.returncode == 2 and "grid" in scan.stderr
    assert original == {"overlap": 0.5, "max_steps": 8}  # what a new store records


def test_rescan_lines_stay_beside_the_scan_lines_of_the_same_files(index_dir: Path, stored: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    store, both = _copy(stored, tmp_path), tmp_path / "both.jsonl"
    rescan = run_cli("rescan", store, "--index", index_dir, "--all", "--no-verify", "-q")
    both.write_text(stored["scan"].read_text() + rescan.stdout)
    run_cli("report", both, "-o", tmp_path / "report.html", "--csv", tmp_path / "rows.csv", "--no-thumbnails",
            check=True)
    with open(tmp_path / "rows.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * VIDEOS
    assert sorted(r["source"] for r in rows) == ["rescan"] * VIDEOS + ["scan"] * VIDEOS
    assert {r["path"] for r in rows if r["source"] == "scan"} == {r["path"] for r in rows if r["source"] == "rescan"}
    assert "rescan (stored vectors only) of the scan of" in (tmp_path / "report.html").read_text()
