"""Retroactive matching: store size, rescan vs full re-scan time, and agreement with a fresh scan.

For each set, through the `mamori` command line exactly as a user runs it, in one run:
    1. build an index WITHOUT some characters (every third character by name, `--held-every`: "held out")
    2. `scan VIDEOS --store STORE` (the day the videos were uploaded)
    3. copy the index and `index add` the held-out characters (they are registered later)
    4. `rescan STORE --index FULL` (default selection: the characters new since the scan)   timed
    5. `scan VIDEOS --index FULL` (the fresh full re-scan it replaces)                         timed
and compares, for the held-out characters: the fresh scan's flags found by the rescan (all of
them, and those with the clip's own character), and false positives of each (a flag of a negative clip or of another character than the clip's label;
for generated clips the label is the character pasted in).

Sets: `generated` (clips this script draws: 1280x720, 24 fps, 10 s, 2 fps sampling; a character
pasted into a scene, static camera, or none) and `dev` (`../shared/eval/dev`, when present).
Store size is reported as bytes per video-minute (`mamori store info`).

    python scripts/bench_rescan.py [--sets generated dev] [--work DIR] [--backbone effnet-lite0-imagenet]
                                   [--held-every N]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEV = ROOT.parent / "shared" / "eval" / "dev"
MAMORI = [sys.executable, "-m", "detector.cli"]


def run(*args: object) -> tuple[float, float]:
    """Run `mamori ARGS`; its wall time and CPU time (user + system) in seconds (exit 1 = flagged
    is fine). CPU time is reported beside wall time because this shared 2-core machine may be
    busy with other work: wall time then swells with it, CPU time much less."""
    t0, r0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([*MAMORI, *map(str, args), "-q"], check=False, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode not in (0, 1):
        sys.exit(f"mamori {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.monotonic() - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def generated_set(work: Path) -> tuple[Path, Path, Path, dict[str, str | None]]:
    """(manifest, background folder, videos folder, label per clip stem) of drawn clips."""
    from detector.media.synth import composite, draw_character, draw_scene, make_clip

    root = work / "generated"
    refs, bg, videos = root / "refs", root / "background", root / "videos"
    for d in (refs, bg, videos):
        d.mkdir(parents=True, exist_ok=True)
    names = [f"char-{i}" for i in range(6)]
    rows = []
    for name in names:
        art = draw_character(name, 384)
        art.save(refs / f"{name}.png")
        rows.append({"path": str(refs / f"{name}.png"), "character": name, "franchise": "bench",
                     "rights_holder": "bench", "license": "test"})
    for i in range(20):
        scene = draw_scene(f"bench-bg-{i}")
        if i % 4 == 0:
            scene, _ = composite(scene, draw_character(f"extra-{i}", 256), height_frac=0.6, x_frac=0.4)
        scene.save(bg / f"bg-{i}.png")
    labels: dict[str, str | None] = {}
    for i in range(18):
        if (videos / f"clip-{i:02d}.mp4").exists():  # drawn by an earlier run
            labels[f"clip-{i:02d}"] = names[i % 6] if i < 12 else None
            continue
        name = names[i % 6] if i < 12 else None
        figure = draw_character(name, 384) if name else None
        make_clip(videos / f"clip-{i:02d}.mp4", f"bench-scene-{i}", figure, duration=10.0, fps=24,
                  appear=(2.0, 7.0), size=(1280, 720), height_frac=0.55, x_frac=0.3 + 0.03 * (i % 12))
        labels[f"clip-{i:02d}"] = name
    manifest = root / "manifest.csv"
    _write_manifest(manifest, rows)
    return manifest, bg, videos, labels


def dev_set() -> tuple[Path, Path, Path, dict[str, str | None]]:
    labels = json.loads((DEV / "labels.json").read_text())
    return DEV / "manifest.csv", DEV / "background", DEV / "videos", {
        k: (v["character"] if v["positive"] else None) for k, v in labels.items()}


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _split(manifest: Path, work: Path, every: int) -> tuple[Path, Path, set[str]]:
    """Manifests of the characters kept and of those held out (every `every`-th by name)."""
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["path"] = str((manifest.parent / r["path"]).resolve())
    chars = sorted({r["character"] for r in rows})
    held = set(chars[1::every])
    kept_csv, held_csv = work / "kept.csv", work / "held.csv"
    _write_manifest(kept_csv, [r for r in rows if r["character"] not in held])
    _write_manifest(held_csv, [r for r in rows if r["character"] in held])
    return kept_csv, held_csv, held


def _flags(path: Path, held: set[str], flag: float) -> dict[str, str]:
    """clip stem -> the held-out character flagged in it (its own verdict: its score at the
    index's flag threshold, or its match policy's verdict; a video flagged for another character
    that also lists a held-out one below the threshold does not count)."""
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        top = [c["character"] for c in r["characters"] if c["character"] in held
               and ((c.get("policy") or {}).get("verdict") or ("flag" if c["score"] >= flag else "")) == "flag"]
        if top:
            out[Path(r["path"]).stem] = top[0]
    return out


def _listed(path: Path, held: set[str]) -> set[tuple[str, str]]:
    """(clip stem, held-out character) pairs a result lists (review level or above)."""
    out = set()
    for line in path.read_text().splitlines():
        r = json.loads(line)
        out |= {(Path(r["path"]).stem, c["character"]) for c in r["characters"] if c["character"] in held}
    return out


def bench(name: str, manifest: Path, bg: Path, videos: Path, labels: dict[str, str | None], work: Path,
          backbone: str, every: int = 3) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    kept_csv, held_csv, held = _split(manifest, work, every)
    partial, full, store = work / "idx-partial", work / "idx-full", work / "scans.store"
    for p in (partial, full, store):
        shutil.rmtree(p, ignore_errors=True)
    run("index", "build", "--manifest", kept_csv, "--background", bg, "--out", partial, "--backbone", backbone)
    t_store, _ = run("scan", videos, "--index", partial, "--store", store, "--out", work / "scan.jsonl")
    shutil.copytree(partial, full)
    run("index", "add", full, "--manifest", held_csv)
    t_rescan, cpu_rescan = run("rescan", store, "--index", full, "--out", work / "rescan.jsonl")
    t_fresh, cpu_fresh = run("scan", videos, "--index", full, "--out", work / "fresh.jsonl")
    info = json.loads(subprocess.run([*MAMORI, "store", "info", str(store)], capture_output=True, text=True,
                                     check=True).stdout)
    from index.store import IndexStore

    flag = IndexStore.open(full).flag_score
    fresh, again = _flags(work / "fresh.jsonl", held, flag), _flags(work / "rescan.jsonl", held, flag)

    def false_pos(flags: dict[str, str]) -> int:
        return sum(labels.get(stem) != char for stem, char in flags.items())

    correct = {stem for stem, char in fresh.items() if labels.get(stem) == char}

    lines = [json.loads(x) for x in (work / "rescan.jsonl").read_text().splitlines()]
    listed_fresh, listed_again = _listed(work / "fresh.jsonl", held), _listed(work / "rescan.jsonl", held)
    return {"set": name, "videos": info["videos"], "held_out": len(held),
            "bytes_per_video_minute": info["bytes_per_video_minute"], "store_bytes": info["bytes"],
            "scan_with_store_s": round(t_store, 1), "rescan_s": round(t_rescan, 1), "fresh_scan_s": round(t_fresh, 1),
            "speedup": round(t_fresh / t_rescan, 1), "rescan_cpu_s": round(cpu_rescan, 1),
            "fresh_scan_cpu_s": round(cpu_fresh, 1), "cpu_speedup": round(cpu_fresh / cpu_rescan, 1), "fresh_flags": len(fresh), "found": sum(again.get(s) == c for s, c in fresh.items()),
            "fresh_correct_flags": len(correct), "correct_found": sum(again.get(s) == fresh[s] for s in correct),
            "rescan_flags": len(again), "fresh_fp": false_pos(fresh), "rescan_fp": false_pos(again),
            "candidate_frames": sum(r.get("rescan", {}).get("candidate_frames", 0) for r in lines),
            "frames": sum(r["frames"] for r in lines),
            "exact_frames": sum(r.get("rescan", {}).get("exact_frames", 0) for r in lines),
            "fresh_listed": len(listed_fresh), "listed_found": len(listed_fresh & listed_again),
            "rescan_listed": len(listed_again)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["generated", "dev"], choices=("generated", "dev"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/mamori-bench-rescan"))
    ap.add_argument("--backbone", default="effnet-lite0-imagenet")
    ap.add_argument("--held-every", type=int, default=3, metavar="N",
                    help="hold out every N-th character by name (default 3: a third of the index is new)")
    a = ap.parse_args()
    rows = []
    for name in a.sets:
        if name == "dev" and not DEV.exists():
            print(f"dev: {DEV} not found, skipped", file=sys.stderr)
            continue
        data = generated_set(a.work) if name == "generated" else dev_set()
        rows.append(bench(name, *data, a.work / name / "run", a.backbone, a.held_every))
        print(json.dumps(rows[-1]), flush=True)
    for r in rows:
        print(f"{r['set']}: store {r['bytes_per_video_minute'] / 1e6:.3f} MB per video-minute; rescan "
              f"{r['rescan_s']}s vs fresh scan {r['fresh_scan_s']}s ({r['speedup']}x; CPU time {r['rescan_cpu_s']}s vs "
              f"{r['fresh_scan_cpu_s']}s, {r['cpu_speedup']}x); fresh flags found "
              f"{r['found']}/{r['fresh_flags']} (its correct ones {r['correct_found']}/{r['fresh_correct_flags']}); false positives rescan {r['rescan_fp']} vs fresh {r['fresh_fp']}; "
              f"candidate frames {r['candidate_frames']}/{r['frames']}; held-out characters listed (review or flag) by "
              f"the fresh scan and found by the rescan {r['listed_found']}/{r['fresh_listed']} "
              f"(rescan lists {r['rescan_listed']})")


if __name__ == "__main__":
    main()
