"""Fuzz the scanner with hostile media: N inputs made from clips and images this script draws,
each mutated (truncations, bit flips, header edits, container swaps, timestamp edits, odd sizes,
bombs, wrong types), scanned by the real `mamori scan` CLI as a user runs it.

A scan runs over all inputs with `--out`; when no new result line appears within the per-input
timeout the input being scanned is a *hang*, and when the process dies with anything but exit
status 0/1 (a signal, a traceback) the input is a *crash*. Either way the scanner is stopped,
the input recorded and left out, and the scan resumed (`--resume`), so one bad input cannot hide
the others. Printed: inputs, result lines (one per input expected), verdicts, crashes, hangs, and
the scanner's peak RSS (VmHWM). Exit status 0 when every input got exactly one line and there
were no crashes or hangs.

    python scripts/fuzz_media.py [--n 300] [--seed 0] [--timeout 60] [--index INDEX] [--work DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.media.hostile import mutations, remux, retime_flv
from detector.media.synth import draw_character, draw_scene, make_clip, write_video

MAMORI = [str(Path(sys.executable).with_name("mamori"))]
if not Path(MAMORI[0]).exists():
    MAMORI = [sys.executable, "-m", "detector.cli"]


def sources(work: Path) -> list[Path]:
    """Clean clips and images to mutate: H.264/VP9/MPEG-4 clips, an animated GIF, stills."""
    work.mkdir(parents=True, exist_ok=True)
    fig = draw_character("fuzz-a", 256)
    out = []
    for name, codec in (("h264.mp4", "libx264"), ("vp9.webm", "libvpx-vp9"), ("mpeg4.avi", "mpeg4")):
        scene = draw_scene(f"fuzz-{name}", 320, 180)
        frames = []
        for i in range(18):
            s = scene.copy()
            s.paste(fig.resize((96, 96)), (40 + 6 * i, 60), fig.resize((96, 96)))
            frames.append(s)
        write_video(work / name, frames, fps=12, codec=codec)
        out.append(work / name)
    make_clip(work / "clip.mkv", "fuzz-mkv", fig, duration=1.5, size=(320, 180), appear=(0.0, 1.5))
    out.append(work / "clip.mkv")
    gif = [draw_scene(f"fuzz-gif-{i}", 160, 90) for i in range(4)]
    gif[0].save(work / "anim.gif", save_all=True, append_images=gif[1:], duration=200, loop=0)
    draw_scene("fuzz-png", 320, 180).save(work / "still.png")
    draw_scene("fuzz-jpg", 320, 180).save(work / "still.jpg", quality=80)
    draw_scene("fuzz-webp", 320, 180).save(work / "still.webp")
    return [*out, work / "anim.gif", work / "still.png", work / "still.jpg", work / "still.webp"]


def structural(src: list[Path], work: Path) -> Iterator[tuple[str, Path]]:
    """Container swaps, timestamp edits, odd sizes, bombs and wrong types."""
    mp4 = src[0]
    for suffix in (".h264", ".ts", ".flv", ".mkv", ".nut", ".3gp", ".m2ts"):
        yield f"swap{suffix}", remux(mp4, work / f"swap{suffix}")
    remux(src[1], work / "vp9.mkv")
    yield "swap-vp9.mkv", work / "vp9.mkv"
    flv = (work / "swap.flv").read_bytes()
    edits = {"constant": lambda i, ms: 0, "backwards": lambda i, ms: max(0, 2000 - ms),
             "huge-jump": lambda i, ms: ms + (10**9 if i > 5 else 0), "random": lambda i, ms: (ms * 7919) % 1500,
             "max": lambda i, ms: 0xFFFFFFFF - i}
    for name, fn in edits.items():
        p = work / f"ts-{name}.flv"
        p.write_bytes(retime_flv(flv, fn, zero_cts=name != "huge-jump"))
        yield f"timestamps-{name}", p
    for w, h in ((1, 1), (1, 4000), (4000, 1), (3, 2)):
        p = work / f"odd-{w}x{h}.png"
        Image.new("RGB", (w, h), (200, 30, 30)).save(p)
        yield f"odd-size-{w}x{h}", p
    write_video(work / "tiny.mp4", [draw_scene("t", 16, 16)] * 6, fps=12)
    yield "odd-size-16x16-video", work / "tiny.mp4"
    for name, size in (("bomb.png", (20000, 20000)), ("bomb.mp4", (30000, 30000))):
        Image.new("1", size).save(work / name, format="PNG")
        yield f"bomb-{name}", work / name
    (work / "empty.mp4").write_bytes(b"")
    (work / "text.mp4").write_text("not a video\n" * 100)
    (work / "mp4-as.png").write_bytes(mp4.read_bytes())
    yield from (("empty", work / "empty.mp4"), ("text-as-mp4", work / "text.mp4"), ("mp4-as-png", work / "mp4-as.png"))


def make_inputs(n: int, seed: int, work: Path) -> list[tuple[str, Path]]:
    """`n` inputs, alternating between the structural cases and byte mutations of every source
    (clean ones and container swaps) in turn, so a small `n` has some of each."""
    rng = random.Random(seed)
    src = sources(work / "src")
    out_dir = work / "inputs"
    out_dir.mkdir(parents=True, exist_ok=True)
    structured = list(structural(src, out_dir))
    variants = [*src, *(p for _, p in structured if p.suffix in (".h264", ".ts", ".flv"))]

    def mutated() -> Iterator[tuple[str, Path]]:
        for round_ in range(10**6):
            for base in variants:
                for name, data in mutations(base.read_bytes(), rng):
                    p = out_dir / f"m{round_}-{base.stem}-{name}{base.suffix}"
                    p.write_bytes(data)
                    yield f"{name} of {base.name}", p

    inputs: list[tuple[str, Path]] = []
    more = mutated()
    for i in range(n):
        inputs.append(structured[i // 2] if i % 2 == 0 and i // 2 < len(structured) else next(more))
    return inputs


def make_index(work: Path) -> Path:
    refs = work / "refs"
    for c in range(3):
        (refs / f"char-{c}").mkdir(parents=True, exist_ok=True)
        draw_character(f"fuzz-{'abc'[c]}", 256).save(refs / f"char-{c}" / "0.png")
    out = work / "index"
    subprocess.run([*MAMORI, "index", "build", str(refs), "--out", str(out), "--backbone", "effnet-lite0-imagenet",
                    "--force", "-q"], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return out


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _lines(out: Path) -> list[dict]:
    if not out.exists():
        return []
    rows = []
    for line in out.read_bytes().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def run_scan(index: Path, inputs: list[Path], out: Path, timeout: float) -> dict:
    """Scan `inputs` with the real CLI, restarting past crashes and hangs (see the module doc)."""
    crashes: list[tuple[str, str]] = []
    hangs: list[str] = []
    peak = 0.0
    todo = list(inputs)
    resume = False
    while todo:
        listed = out.with_suffix(".list")
        listed.write_text("".join(f"{p}\n" for p in todo))
        cmd = [*MAMORI, "scan", "--from-list", str(listed), "--index", str(index), "--out", str(out), "-q"]
        proc = subprocess.Popen([*cmd, *(["--resume"] if resume else [])], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        done, last_change, status = len(_lines(out)), time.monotonic(), None
        while status is None:
            time.sleep(0.2)
            peak = max(peak, _peak_rss_mb(proc.pid))
            status = proc.poll()
            n = len(_lines(out))
            if n != done:
                done, last_change = n, time.monotonic()
            elif status is None and time.monotonic() - last_change > timeout:
                proc.kill()
                proc.wait()
                status = "hang"
        written = {r.get("path") for r in _lines(out)}
        left = [p for p in todo if str(p) not in written]
        err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
        if status in (0, 1) and not left:
            break
        culprit = left[0] if left else None
        if status == "hang" and culprit is not None:
            hangs.append(str(culprit))
        elif culprit is not None:
            crashes.append((str(culprit), f"exit {status}: {err[-1] if err else ''}"))
        else:
            crashes.append(("(after the last input)", f"exit {status}: {err[-1] if err else ''}"))
        todo = left[1:]
        resume = True
    return {"crashes": crashes, "hangs": hangs, "peak_rss_mb": round(peak, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="inputs to make and scan (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one input may take (default %(default)s)")
    ap.add_argument("--index", type=Path, help="index to scan against (default: build a small effnet one)")
    ap.add_argument("--work", type=Path, help="folder for inputs and results (default: a temporary one)")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    a = ap.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="mamori-fuzz-"))
    inputs = make_inputs(a.n, a.seed, work)
    index = a.index or make_index(work)
    t0 = time.monotonic()
    out = work / "results.jsonl"
    out.unlink(missing_ok=True)
    summary = run_scan(index, [p for _, p in inputs], out, a.timeout)
    rows = _lines(out)
    per_path = Counter(r.get("path") for r in rows)
    summary.update(
        inputs=len(inputs), result_lines=len(rows), seconds=round(time.monotonic() - t0, 1),
        inputs_without_one_line=sum(per_path.get(str(p), 0) != 1 for _, p in inputs),
        verdicts=dict(Counter(r.get("verdict") for r in rows)),
        limits=sum("MediaLimitError" in (r.get("error") or "") for r in rows), work=str(work))
    if a.json:
        print(json.dumps(summary))
    else:
        kinds = Counter(name.split(" of ")[0] for name, _ in inputs)
        print(f"inputs {len(inputs)} ({len(kinds)} kinds), result lines {len(rows)}, "
              f"inputs without exactly one line {summary['inputs_without_one_line']}")
        print(f"verdicts {summary['verdicts']} (limit refusals {summary['limits']})")
        print(f"crashes {len(summary['crashes'])}, hangs {len(summary['hangs'])} (timeout {a.timeout:g}s per input), "
              f"peak RSS {summary['peak_rss_mb']} MB, {summary['seconds']} s; files in {work}")
        for path, why in summary["crashes"]:
            print(f"  crash: {path}: {why}")
        for path in summary["hangs"]:
            print(f"  hang: {path}")
    ok = not summary["crashes"] and not summary["hangs"] and not summary["inputs_without_one_line"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
