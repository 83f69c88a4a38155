"""Scan engines give the same results: one worker, N worker threads, and Ray actors on a local Ray
instance (`--engine ray` without `--ray-address` starts a private one bound to 127.0.0.1 and stops
it at the end; Ray rewrites a 127.0.0.1 *address* to the machine's own IP, so a cluster started
separately with `ray start` would not be loopback-only)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import MAMORI, reference_art, run_cli

from detector.media.synth import composite, draw_scene


@pytest.fixture(scope="module")
def inputs(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("engines")
    for i in range(4):
        scene = draw_scene(f"engine-{i}")
        if i % 2 == 0:
            scene, _ = composite(scene, reference_art("chiyo").convert("RGBA"), height_frac=0.5, x_frac=0.3 + 0.1 * i)
        scene.save(root / f"still-{i}.png")
    shutil.copy(clips["positive"], root / "positive.mp4")
    shutil.copy(clips["negative"], root / "negative.mp4")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return root


def _scan(index: Path, inputs: Path, out: Path, *args: str) -> dict[str, dict[str, object]]:
    proc = run_cli("scan", inputs, "--index", index, "--out", out, "--fps", "2", *args)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the positives are flagged
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 7
    return {str(r["path"]): r for r in lines}


def _same(a: dict[str, dict[str, object]], b: dict[str, dict[str, object]]) -> None:
    """Same content, order aside (scores within float noise of a different thread count)."""
    assert a.keys() == b.keys()
    for path, ra in a.items():
        rb = b[path]
        for key in ("verdict", "frames", "sha256", "error", "kind"):
            assert ra[key] == rb[key], (path, key)
        assert ra["score"] == pytest.approx(rb["score"], abs=0.01), path
        assert [c["character"] for c in ra["characters"]] == [c["character"] for c in rb["characters"]], path  # type: ignore[union-attr]


def test_worker_threads_and_ray_give_the_same_results(index_dir: Path, inputs: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'mamori[ray]')")
    one = _scan(index_dir, inputs, tmp_path / "one.jsonl")
    threads = _scan(index_dir, inputs, tmp_path / "threads.jsonl", "--workers", "2")
    ray = _scan(index_dir, inputs, tmp_path / "ray.jsonl", "--engine", "ray", "--workers", "2")
    assert one[str(inputs / "broken.mp4")]["verdict"] == "error"
    assert one[str(inputs / "positive.mp4")]["verdict"] == "flag"
    _same(one, threads)
    _same(one, ray)
    assert threads == ray  # both score with one PyTorch thread per worker: identical lines


def test_ray_engine_errors_are_clear(index_dir: Path, inputs: Path, tmp_path: Path) -> None:
    proc = run_cli("scan", inputs, "--index", index_dir, "--ray-address", "127.0.0.1:1")
    assert proc.returncode == 2 and "--ray-address needs --engine ray" in proc.stderr
    proc = run_cli("scan", inputs, "--index", tmp_path / "missing", "--engine", "ray", "--out", tmp_path / "r.jsonl")
    assert proc.returncode == 2 and "no mamori index here" in proc.stderr


def _scan_workers(root: int) -> dict[int, str]:
    """pid -> process title of the Ray scan actors started by process `root` (Ray names an actor's
    process `ray::CLASS.METHOD` while it runs METHOD); other Ray sessions on the machine are not
    descendants of `root`."""
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
    return {pid: t for pid, t in titles.items() if t.startswith("ray::_ScanWorker") and descends(pid)}


def test_ray_replaces_a_killed_worker_and_retries_its_input(index_dir: Path, clips: dict[str, Path],
                                                             tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'mamori[ray]')")
    inputs = [tmp_path / name for name in ("positive-0.mp4", "negative-0.mp4", "positive-1.mp4")]
    for p in inputs:
        shutil.copy(clips[p.stem.split("-")[0]], p)
    out, log = tmp_path / "r.jsonl", tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen([*MAMORI, "scan", *map(str, inputs), "--index", str(index_dir), "--out", str(out),
                                 "--engine", "ray", "--workers", "2"], stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
        try:
            deadline, busy = time.monotonic() + 240, []
            while not busy and time.monotonic() < deadline and proc.poll() is None:
                busy = [pid for pid, t in _scan_workers(proc.pid).items() if t.startswith("ray::_ScanWorker.score")]
                time.sleep(0.05)
            assert busy, "no Ray actor was seen scoring"
            os.kill(busy[0], signal.SIGKILL)  # the actor's process dies mid-input
            proc.wait(timeout=300)
        finally:
            proc.kill()
    assert proc.returncode == 1, log.read_text()[-3000:]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["path"] for r in lines) == sorted(map(str, inputs))  # one line per input
    assert all(r["verdict"] != "error" and r["error_kind"] is None for r in lines), lines  # retried, not lost
    assert "a Ray worker died scoring" in log.read_text()
