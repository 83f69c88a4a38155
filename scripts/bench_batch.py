"""Batch throughput: videos/s for 1 worker, N worker threads, and Ray (local, N actors), side by
side in one run on the same generated 10-second 720p clips.

Each engine scores the same clips through `detector.runs.engines` (what `mamori scan --workers N
[--engine ray]` runs). Reported per engine: the scan's wall time and videos/s, and its start-up
(model load; for Ray also starting Ray and the actors) measured separately, so the steady rate
and what a short batch pays are both visible.

    python scripts/bench_batch.py [--clips 6] [--seconds 10] [--workers 2] [--fps 2]
                                  [--backbone effnet-lite0-imagenet] [--work DIR] [--no-ray]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_scan import backbone_name, make_clip, make_index

import detector  # noqa: F401  (first: its allocator setting must precede numpy's threads)


class _ReadyTime(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if "ready in" in record.getMessage():
            self.seconds = float(record.args[1])  # type: ignore[index]


def run_local(index: Path, clips: list[Path], workers: int, fps: float) -> dict[str, float]:
    from detector.api import Detector
    from detector.runs.engines import scan_threads

    t0 = time.monotonic()
    det = Detector.open(index, fps=fps, precision="auto")
    start = time.monotonic() - t0
    t0 = time.monotonic()
    results = list(scan_threads(det, [(c, None) for c in clips], workers))
    wall = time.monotonic() - t0
    return {"start": start, "wall": wall, "ok": sum(r["verdict"] != "error" for r in results)}


def run_ray(index: Path, clips: list[Path], workers: int, fps: float) -> dict[str, float]:
    from detector.runs.engines import scan_ray

    ready = _ReadyTime()
    log = logging.getLogger("mamori.engines")
    log.addHandler(ready)
    log.setLevel(logging.INFO)
    t0 = time.monotonic()
    results = list(scan_ray(index, {"fps": fps, "precision": "auto"}, [(c, None) for c in clips], workers))
    total = time.monotonic() - t0
    log.removeHandler(ready)
    assert ready.seconds is not None
    return {"start": ready.seconds, "wall": total - ready.seconds, "ok": sum(r["verdict"] != "error" for r in results)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--backbone", default="effnet-lite0-imagenet")
    ap.add_argument("--work", default="/tmp/mamori-bench-batch")
    ap.add_argument("--no-ray", action="store_true")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    index = make_index(backbone_name(a.backbone, work), work)
    clips = [make_clip(work / f"clip-{a.seconds:g}s-{i}.mp4", a.seconds, f"batch-{i}") for i in range(a.clips)]
    print(f"{a.clips} clips of {a.seconds:g} s, 1280x720, sampled at {a.fps:g} fps; backbone {a.backbone}; "
          f"{os.cpu_count()} CPUs", flush=True)
    rows = [("1 worker", run_local(index, clips, 1, a.fps)),
            (f"{a.workers} worker threads", run_local(index, clips, a.workers, a.fps))]
    if not a.no_ray:
        rows.append((f"Ray local, {a.workers} actors", run_ray(index, clips, a.workers, a.fps)))
    base = rows[0][1]["wall"]
    print(f"{'engine':<26}{'start-up s':>11}{'scan s':>9}{'videos/s':>10}{'vs 1 worker':>13}{'incl. start-up':>16}")
    for name, r in rows:
        assert r["ok"] == len(clips), f"{name}: {len(clips) - r['ok']} clip(s) failed"
        print(f"{name:<26}{r['start']:>11.1f}{r['wall']:>9.1f}{len(clips) / r['wall']:>10.3f}"
              f"{base / r['wall']:>12.2f}x{len(clips) / (r['wall'] + r['start']):>13.3f}/s", flush=True)


if __name__ == "__main__":
    main()
