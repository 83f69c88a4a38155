"""Decoding cost of sampling, side by side in one run on the same generated clips.

1. H.264 (the bench's 1280x720, 24 fps panning clip, B-frames as libx264 makes them), sampled at
   `--fps`: (i) every frame decoded, sampled frames converted (a plain PyAV loop), against
   (ii) mamori's `MediaReader`, whose decoder drops unsampled non-reference frames undecoded.
   Prints CPU and wall seconds, frames decoded, and whether the sampled frames are bit-identical.
2. Decoding at reduced resolution, which mamori does not use: a 1920x1080 MPEG-4 Part 2 panning
   clip (one keyframe per `--gop` frames) decoded with FFmpeg's `lowres=1` (960x540 straight from
   the decoder) against full-size decoding shrunk to 960x540 while converting (what mamori does):
   time, and the mean absolute difference of the sampled frames over the clip (motion
   compensation at reduced size drifts until the next keyframe).

    python scripts/bench_decode.py [--seconds 60] [--fps 2] [--gop 250] [--work DIR]
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_scan import make_clip

from detector.media.frames import MediaReader, frame_image
from detector.media.synth import composite, draw_character, draw_scene


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _every_frame(path: Path, fps: float, lowres: int = 0) -> tuple[list[np.ndarray], int]:
    """Decode every frame, convert the sampled ones (MediaReader's sampling rule)."""
    out, decoded, next_t = [], 0, -1.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if lowres:
            stream.codec_context.options = {"lowres": str(lowres)}
        for frame in container.decode(stream):
            decoded += 1
            if frame.time >= next_t - 1e-6:
                out.append(np.asarray(frame_image(frame)))
                next_t = (math.floor(frame.time * fps + 1e-6) + 1) / fps
    return out, decoded


def _timed(fn, repeats: int = 3):  # type: ignore[no-untyped-def]
    """Best of `repeats` (CPU seconds, wall seconds) and the last result."""
    best = (math.inf, math.inf)
    for _ in range(repeats):
        c, t = _cpu(), time.perf_counter()
        result = fn()
        best = min(best, (_cpu() - c, time.perf_counter() - t))
    return best, result


def h264(work: Path, seconds: float, fps: float) -> None:
    path = make_clip(work / f"clip-{seconds:g}s.mp4", seconds, "long")
    (c0, w0), (plain, n0) = _timed(lambda: _every_frame(path, fps))

    def reader() -> tuple[list[np.ndarray], int]:
        r = MediaReader(path, fps=fps, max_frames=10**6)
        return [np.asarray(f.image) for f in r], r.decoded

    (c1, w1), (mine, n1) = _timed(reader)
    same = len(plain) == len(mine) and all(np.array_equal(a, b) for a, b in zip(plain, mine))
    print(f"H.264 1280x720, {seconds:g} s at 24 fps, sampled at {fps:g} fps ({len(mine)} frames; best of 3):")
    print(f"  every frame decoded      CPU {c0:5.2f} s  wall {w0:5.2f} s  {n0} frames decoded")
    print(f"  mamori MediaReader       CPU {c1:5.2f} s  wall {w1:5.2f} s  {n1} frames decoded  "
          f"(CPU {c1 / c0:.2f}x; sampled frames bit-identical: {same})")


def lowres(work: Path, fps: float, gop: int) -> None:
    path = work / f"mpeg4-1080p-gop{gop}.mp4"
    n = 240
    if not path.exists():
        scene, figure = draw_scene("lowres", 1920 + 4 * n, 1080), draw_character("lowres", 700)
        with av.open(str(path), "w") as out:
            stream = out.add_stream("mpeg4", rate=24)
            stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
            stream.gop_size, stream.bit_rate = gop, 8_000_000
            for i in range(n):
                view = scene.crop((4 * i, 0, 4 * i + 1920, 1080))
                img = composite(view, figure, height_frac=0.6, x_frac=0.3 + 0.4 * i / n)[0]
                out.mux(stream.encode(av.VideoFrame.from_image(img)))
            out.mux(stream.encode(None))
    (c0, w0), (full, _) = _timed(lambda: _every_frame(path, fps))
    (c1, w1), (small, _) = _timed(lambda: _every_frame(path, fps, lowres=1))
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in zip(full, small)]
    print(f"\nMPEG-4 Part 2 1920x1080, {n / 24:g} s, keyframe every {gop} frames, sampled at {fps:g} fps:")
    print(f"  full-size decode, shrunk while converting  CPU {c0:5.2f} s  wall {w0:5.2f} s")
    print(f"  lowres=1 (decoded at 960x540)             CPU {c1:5.2f} s  wall {w1:5.2f} s")
    print("  mean |difference| per sampled frame (grey levels): " + " ".join(f"{d:.1f}" for d in diffs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the H.264 clip")
    ap.add_argument("--fps", type=float, default=2.0, help="sampling rate")
    ap.add_argument("--gop", type=int, default=250, help="keyframe interval of the MPEG-4 clip")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench", help="clips are cached here")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    h264(a.work, a.seconds, a.fps)
    lowres(a.work, a.fps, a.gop)


if __name__ == "__main__":
    main()
