"""Scan store size per video-minute: the usual case and the worst case (issue 27, "Claims").

A store keeps a new frame's *fresh* regions only (`detector.recording`): a static camera stores
little after its first frame. The worst case is a clip where every region of every sampled frame
is new: a camera that pans all the time. This script draws such clips, scans each into its own
store (`mamori scan --store`, 2 fps) and prints `store info`'s bytes per video-minute beside a
static-camera clip, and the bound that follows from the regions per frame (every region stored:
frames per minute x regions x (code bytes + 2 bytes of region id)).

    python scripts/bench_store_size.py [--work DIR] [--backbone effnet-lite0-imagenet]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MAMORI = [sys.executable, "-m", "detector.cli"]
FPS, SECONDS, SAMPLING = 24, 10, 2.0
#: clips: name -> (frame width, height, pan speed in frame widths per second; 0: static camera)
CLIPS = {"static camera, 1280x720": (1280, 720, 0.0), "panning, 1280x720": (1280, 720, 0.25),
         "panning, 1920x490 (the widest grid)": (1920, 490, 0.25)}


def mamori(*args: object) -> str:
    proc = subprocess.run([*MAMORI, *map(str, args)], capture_output=True, text=True, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    if proc.returncode not in (0, 1):
        sys.exit(f"mamori {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def _frames(width: int, height: int, speed: float) -> Iterator[Image.Image]:
    from detector.media.synth import composite, draw_character, draw_scene

    span = width + round(speed * width * SECONDS) + 1
    pano = draw_scene("pan", span, height)
    for i in range(4):  # characters along the way
        pano, _ = composite(pano, draw_character(f"walker-{i}", 256), height_frac=0.6, x_frac=(i + 0.5) / 4)
    for k in range(FPS * SECONDS):
        x = round(speed * width * k / FPS)
        yield pano.crop((x, 0, x + width, height))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--backbone", default="effnet-lite0-imagenet")
    args = p.parse_args()
    from detector.media.frames import MAX_SIDE
    from detector.media.regions import count_windows
    from detector.media.synth import draw_character, draw_scene, write_video
    from index.scancodec import CODE_BYTES

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-store-size-"))
    refs, bg = work / "refs", work / "background"
    for name in ("akane", "benkei", "chiyo"):
        (refs / name).mkdir(parents=True, exist_ok=True)
        draw_character(name, 256).save(refs / name / "0.png")
    bg.mkdir(exist_ok=True)
    for i in range(12):
        draw_scene(f"bg-{i}").save(bg / f"{i}.png")
    index = work / "index"
    if not index.exists():
        mamori("index", "build", refs, "--out", index, "--backbone", args.backbone, "--background", bg, "-q")
    print(f"| clip ({SECONDS} s, {FPS} fps, sampled at {SAMPLING:g} fps) | regions per frame | stored, MB per "
          "video-minute | bound, every region stored |\n|---|---|---|---|")
    for name, (w, h, speed) in CLIPS.items():
        clip, store = work / f"{w}x{h}-{speed}.mp4", work / f"{w}x{h}-{speed}.store"
        if not clip.exists():
            write_video(clip, _frames(w, h, speed), fps=FPS)
        if not store.exists():
            mamori("scan", clip, "--index", index, "--store", store, "--fps", SAMPLING, "-q")
        info = json.loads(mamori("store", "info", store))
        scale = min(1.0, MAX_SIDE / max(w, h))
        regions = count_windows(max(1, round(w * scale)), max(1, round(h * scale)))
        bound = 60 * SAMPLING * regions * (CODE_BYTES + 2) / 1e6
        print(f"| {name} | {regions} | {info['bytes_per_video_minute'] / 1e6:.3f} | {bound:.3f} |", flush=True)


if __name__ == "__main__":
    main()
