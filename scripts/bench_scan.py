"""Scan speed and memory, side by side in one run on the same generated clips.

Measures, each in its own subprocess (so peak memory is per measurement):
    (a) ceiling   the bare backbone forward pass on ready tensors: one frame = its regions
                  (47 crops of a 16:9 frame) as one batch, already resized and normalised
    (b) mamori    `Detector.score_video` end to end: decode, sample, crop, the shortlist's cheap pass
                  (`detector.shortlist`), model, search, scoring
    (b') the same with --no-verify (no geometric verification: what verification costs), and with
                  --no-shortlist (every region embedded: what the shortlist saves)
    (c) naive     a baseline scanner written here: decode and convert *every* frame with PyAV,
                  PIL crop + resize + normalise per region, one forward pass per sampled frame,
                  FAISS search (same regions, same weights, same sampled frames as mamori), with
                  the model as its library builds it (no BatchNorm folding) and the default
                  memory allocator settings
in fp32 and bf16, then (b) and (c) again on a static-camera clip, then mamori on a short and a long
clip of each kind (peak memory must not grow with length), then the fidelity of bf16 embeddings (cosine to fp32,
per region, on the clips' frames).

Index: six drawn characters, two poses each, calibrated on BACKGROUND_IMAGES drawn scenes (as
every real index is, `index build --background`). Clips: 1280x720, 24 fps, H.264. The speed clip is a drawn scene panning under a drawn character, so
no region of any sampled frame repeats (mamori's repeat and unchanged-region skips do not flatter
it: the worst case). The static-camera clip is the common case of generated video, a fixed scene
with the character walking across it: only the windows the character touches change, and mamori
embeds only those (`detector.pipeline`, step 3); the table says what fraction of regions it embedded. `clip-vit-b32` is measured with the
ViT-B-32 architecture in random weights (`openclip:ViT-B-32:<file>`; the real weights cannot be
downloaded here; speed does not depend on weight values, fidelity figures do). Random weights
make the shortlist's choice meaningless, so for clip-vit-b32 it is forced to keep what a real
model's shortlist keeps on the same frames: the bench first scans each clip with
effnet-lite0-imagenet (real weights, its index built the same way) and records the small windows
its shortlist chooses on each sampled frame; the ViT scan replays them frame by frame (`--keep N`
keeps N windows per frame, spread over it, instead). The ViT's own cheap pass
(`detector.embed.tokenmap`, pooled patch tokens) still runs on every frame and is paid for; only its
choice is replaced. Crops embedded per frame are
printed for every mamori row (the feature-map pass of a CNN is not counted: one forward pass of the
frame at 288 px on its shorter side, ~3 crops' worth of pixels for 16:9).

    python scripts/bench_scan.py [--backbone clip-vit-b32|effnet-lite0-imagenet] [--seconds 10]
                                 [--long 60] [--fps 2] [--work DIR] [--memory-only | --speed-only] [--keep N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = (1280, 720)
CLIP_FPS = 24
#: the backbone with real weights whose shortlist choices clip-vit-b32 replays (its own are meaningless)
REAL_BACKBONE = "effnet-lite0-imagenet"
#: drawn scenes (a quarter with an unindexed figure) the bench index is calibrated on, as every
#: real index is (`index build --background`; without one the thresholds are the backbone's
#: defaults and the shortlist's cheap pass keeps most windows of a drawn clip: 36.2 of 47 per frame)
BACKGROUND_IMAGES = 20


# --- set-up: backbone weights, index, clips -----------------------------------------------------

def backbone_name(name: str, work: Path) -> str:
    if name != "clip-vit-b32":
        return name
    path = work / "vit-b-32-random.safetensors"
    if not path.exists():
        import open_clip
        import torch
        from safetensors.torch import save_file

        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return f"openclip:ViT-B-32:{path}"


def make_index(backbone: str, work: Path) -> Path:
    from detector.embed.backbones import load_backbone
    from detector.embed.embedding import RegionEmbedder
    from detector.media.synth import composite, draw_character, draw_scene
    from index import IndexStore, build_index
    from index.errors import IndexStoreError
    from index.manifest import ReferenceEntry

    out = work / ("index-bg" if backbone == REAL_BACKBONE else "index-bg-vit")
    if (out / "index.json").exists():
        try:
            if IndexStore.open(out).backbone["name"] == backbone:
                return out
        except IndexStoreError:  # written by an older mamori: build it again
            pass
    refs = work / "refs"
    entries = []
    for c in range(6):
        for pose in range(2):
            p = refs / f"char-{c}" / f"{pose}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            draw_character(f"bench-{c}", 256, pose).save(p)
            entries.append(ReferenceEntry(p, f"char-{c}"))
    background = work / "background"
    background.mkdir(parents=True, exist_ok=True)
    for i in range(BACKGROUND_IMAGES):
        scene = draw_scene(f"bench-bg-{i}")
        if i % 4 == 0:  # ordinary imagery also has figures that are nobody's protected character
            scene, _ = composite(scene, draw_character(f"extra-{i}", 256), height_frac=0.6, x_frac=0.4)
        scene.save(background / f"bg-{i}.png")
    build_index(entries, out, RegionEmbedder(load_backbone(backbone, precision="fp32")), force=True,
                background=background)
    return out


def make_clip(path: Path, seconds: float, seed: str, pan: bool = True) -> Path:
    """A drawn character crossing a drawn scene; the camera pans 4 px per frame unless `pan` is False."""
    if path.exists():
        return path
    from detector.media.synth import composite, draw_character, draw_scene, write_video

    n = round(seconds * CLIP_FPS)
    step = 4 if pan else 0  # pixels the camera travels per frame
    scene = draw_scene(seed, SIZE[0] + step * n, SIZE[1])
    figure = draw_character(f"bench-{seed}", 512)

    def frames():  # type: ignore[no-untyped-def]
        for i in range(n):
            view = scene.crop((step * i, 0, step * i + SIZE[0], SIZE[1]))
            x = 0.3 + 0.4 * i / n if pan else 0.15 + 0.7 * i / n
            yield composite(view, figure, height_frac=0.55, x_frac=x)[0]

    write_video(path, frames(), fps=CLIP_FPS)
    return path


# --- measurements (each runs in a child process) -------------------------------------------------

def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _RssSampler:
    """Largest resident set size seen while the measured work runs (sampled every 20 ms), so the
    figure is the scan's, not the model loading's."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            with open("/proc/self/statm") as fh:
                self.peak = max(self.peak, int(fh.read().split()[1]) * page / 2**20)
            self._stop.wait(0.02)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure_ceiling(backbone: str, precision: str, frames: int) -> dict[str, float]:
    import torch

    from detector.embed.backbones import load_backbone
    from detector.media.regions import count_windows

    bb = load_backbone(backbone, precision=precision)
    s = bb.preprocess.size
    x = torch.rand(count_windows(*SIZE), 3, s, s)
    bb.embed_tensor(x[:4])
    with _RssSampler() as rss:
        t = time.perf_counter()
        for _ in range(frames):
            bb.embed_tensor(x)
        dt = time.perf_counter() - t
    return {"frames": frames, "seconds": dt, "precision": bb.precision, "scan_mb": rss.peak}


def measure_mamori(index: str, precision: str, clips: list[str], fps: float, verify: bool = True,
                   shortlist: bool = True, keep: float | list[list[int]] | None = None) -> dict[str, float]:
    from PIL import Image

    from detector import Detector

    det = Detector.open(index, precision=precision, fps=fps, verify=verify, shortlist=shortlist)
    det.score_image(Image.new("RGB", (64, 36), "white").resize((1280, 720)))  # warm-up, like a running scanner
    if keep is not None:  # (after the warm-up: a replayed choice starts at the clip's first frame)
        force_shortlist(keep)
    crops = 0
    embed = det.embed_pixels

    def counting(pixels):  # type: ignore[no-untyped-def]
        nonlocal crops
        crops += len(pixels)
        return embed(pixels)

    det.embed_pixels = counting
    with _RssSampler() as rss:
        t = time.perf_counter()
        frames = sum(det.score_video(c).frames for c in clips)
        dt = time.perf_counter() - t
    return {"frames": frames, "seconds": dt, "precision": det.backbone.precision, "scan_mb": rss.peak,
            "crops": crops}


def measure_shortlisted(index: str, clips: list[str], fps: float) -> dict[str, Any]:
    """The small windows the shortlist chooses, frame by frame (real weights): what clip-vit-b32 replays."""
    from detector import Detector, shortlist

    chosen: list[list[int]] = []
    rule = shortlist.RegionSearch.shortlisted

    def recording(self: shortlist.RegionSearch, p: Any, coarse: list[int], small: list[int], first: Any) -> set[int]:
        out = rule(self, p, coarse, small, first)
        chosen.append(sorted(out))
        return out

    shortlist.RegionSearch.shortlisted = recording  # type: ignore[method-assign]
    det = Detector.open(index, precision="fp32", fps=fps)
    for c in clips:
        det.score_video(c)
    return {"frames": len(chosen), "chosen": chosen, "small_per_frame": sum(map(len, chosen)) / max(1, len(chosen))}


def force_shortlist(keep: float | list[list[int]]) -> None:
    """Make the shortlist keep what `keep` says whatever the scores (random weights: their scores
    mean nothing, and a shortlist that keeps nothing would flatter the speed). The shortlist's own
    cheap pass still runs (its cost is part of the scan); then frame by frame, instead of its
    choice: a list replays the windows another backbone's shortlist chose on the same frames (in
    order: the same clip, the same sampling); a number keeps floor or ceil of that many windows
    (so the average is `keep`), spread over the frame (`--keep`)."""
    from detector import shortlist

    seen = [0]
    rule = shortlist.RegionSearch.shortlisted

    def forced(self: shortlist.RegionSearch, p: Any, coarse: list[int], small: list[int], first: Any) -> set[int]:
        rule(self, p, coarse, small, first)  # paid for, then replaced
        seen[0] += 1
        if isinstance(keep, list):
            return set(keep[(seen[0] - 1) % len(keep)]) & set(small) if keep else set()
        n = min(len(small), math.floor(keep * seen[0]) - math.floor(keep * (seen[0] - 1)))
        return {small[round(i * len(small) / max(1, n)) % len(small)] for i in range(n)}

    shortlist.RegionSearch.shortlisted = forced  # type: ignore[method-assign,assignment]


def measure_naive(index: str, precision: str, clips: list[str], fps: float) -> dict[str, float]:
    import av
    import torch
    from PIL import Image

    from detector.embed import backbone_base, backbone_effnet, inference
    from detector.embed.backbones import load_backbone
    from detector.media.regions import frame_regions
    from index import IndexStore

    # the model as timm / open_clip build it, the allocator as Python leaves it (run_child sets
    # MAMORI_SYSTEM_ALLOCATOR for this child, so `import detector` leaves malloc alone)
    backbone_effnet.fold_batchnorm = lambda model, size: model  # type: ignore[assignment]
    inference.keep_freed_memory = lambda: False  # type: ignore[assignment]
    backbone_base.keep_freed_memory = inference.keep_freed_memory  # type: ignore[assignment]
    store = IndexStore.open(index)
    bb = load_backbone(store.backbone["name"], precision=precision)
    s = bb.preprocess.size
    mean, std = np.array(bb.preprocess.mean, np.float32), np.array(bb.preprocess.std, np.float32)
    bb.embed_tensor(torch.rand(4, 3, s, s))
    rss = _RssSampler().__enter__()
    t = time.perf_counter()
    frames = 0
    for clip in clips:
        with av.open(clip) as container:
            next_t = 0.0
            for frame in container.decode(video=0):
                img = frame.to_image()  # every frame decoded and converted
                if frame.time + 1e-6 < next_t:
                    continue
                next_t = (math.floor(frame.time * fps + 1e-6) + 1) / fps
                crops = []
                for i, box in enumerate(frame_regions(img.width, img.height)):
                    crop = img.crop(box)
                    if i == 0:
                        side = max(img.size)
                        sq = Image.new("RGB", (side, side), (128, 128, 128))
                        sq.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
                        crop = sq
                    arr = np.asarray(crop.resize((s, s), Image.BICUBIC), np.float32) / 255.0
                    crops.append(torch.from_numpy(((arr - mean) / std).transpose(2, 0, 1).copy()))
                vecs = bb.embed_tensor(torch.stack(crops))
                store.search(vecs, 32)
                frames += 1
    dt = time.perf_counter() - t
    rss.__exit__()
    return {"frames": frames, "seconds": dt, "precision": bb.precision, "scan_mb": rss.peak}


def measure_fidelity(backbone: str, clips: list[str], fps: float) -> dict[str, float]:
    from detector.embed.backbones import load_backbone
    from detector.embed.embedding import RegionEmbedder
    from detector.media.frames import MediaReader

    b32, b16 = load_backbone(backbone, precision="fp32"), load_backbone(backbone, precision="bf16")
    emb = RegionEmbedder(b32)
    cos, whole = [], []
    for clip in clips:
        for fr in MediaReader(clip, fps=fps, max_frames=6):
            px, _ = emb.prepare_frame(fr.image)
            c = (b32.embed_pixels(px) * b16.embed_pixels(px)).sum(1)
            cos.append(c)
            whole.append(c[0])
    allc = np.concatenate(cos)
    return {"regions": len(allc), "min": float(allc.min()), "p01": float(np.percentile(allc, 1)),
            "mean": float(allc.mean()), "whole_min": float(min(whole))}


def child(argv: list[str]) -> None:
    kind, payload = argv[0], json.loads(argv[1])
    fn = {"ceiling": measure_ceiling, "mamori": measure_mamori, "naive": measure_naive,
          "fidelity": measure_fidelity, "shortlisted": measure_shortlisted}[kind]
    out = fn(**payload)
    out["peak_mb"] = _peak_mb()
    print("RESULT " + json.dumps(out))


def run_child(kind: str, **payload: object) -> dict[str, float]:
    env = {**os.environ, **({"MAMORI_SYSTEM_ALLOCATOR": "1"} if kind == "naive" else {})}
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(payload)],
                          capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def forced_keep(a: argparse.Namespace, clip: str) -> float | list[list[int]] | None:
    """What the ViT's shortlist is forced to keep on `clip` (None: its own choice): --keep, or the
    windows REAL_BACKBONE's shortlist chooses there, frame by frame."""
    if a.keep is not None:
        return float(a.keep)
    if a.backbone != "clip-vit-b32":
        return None
    if clip not in a.real_keep:
        index = str(make_index(REAL_BACKBONE, a.work))
        r = run_child("shortlisted", index=index, clips=[clip], fps=a.fps)
        a.real_keep[clip] = r["chosen"]
        print(f"  {REAL_BACKBONE} (real weights) shortlists {r['small_per_frame']:.2f} small windows per frame of "
              f"{Path(clip).name}: clip-vit-b32 replays its choice frame by frame", flush=True)
    chosen: list[list[int]] = a.real_keep[clip]
    return chosen


def _mean_kept(keep: float | list[list[int]] | None) -> float | None:
    if keep is None or isinstance(keep, float):
        return keep
    return sum(map(len, keep)) / max(1, len(keep))


def speed_table(backbone: str, index: str, short: str, static: str, a: argparse.Namespace) -> None:
    rows: dict[tuple[str, str], dict[str, float]] = {}
    keep, keep_static = forced_keep(a, short), forced_keep(a, static)
    n_frames = math.ceil(a.seconds * a.fps)
    for prec in ("fp32", "bf16"):
        rows["ceiling", prec] = run_child("ceiling", backbone=backbone, precision=prec, frames=n_frames)
        rows["mamori", prec] = run_child("mamori", index=index, precision=prec, clips=[short], fps=a.fps, keep=keep)
        rows["naive", prec] = run_child("naive", index=index, precision=prec, clips=[short], fps=a.fps)
        rows["noverify", prec] = run_child("mamori", index=index, precision=prec, clips=[short], fps=a.fps,
                                           verify=False, keep=keep)
        rows["full", prec] = run_child("mamori", index=index, precision=prec, clips=[short], fps=a.fps,
                                       shortlist=False)
        for k in ("ceiling", "mamori", "naive", "noverify", "full"):
            r = rows[k, prec]
            print(f"  {k:8s} {prec}: {r['frames']} frames in {r['seconds']:.1f}s", flush=True)
    for prec in ("fp32", "bf16"):
        rows["static-mamori", prec] = run_child("mamori", index=index, precision=prec, clips=[static], fps=a.fps,
                                                keep=keep_static)
        rows["static-naive", prec] = run_child("naive", index=index, precision=prec, clips=[static], fps=a.fps)
        for k in ("static-mamori", "static-naive"):
            r = rows[k, prec]
            print(f"  {k:8s} {prec}: {r['frames']} frames in {r['seconds']:.1f}s", flush=True)
    fps_of = {k: r["frames"] / r["seconds"] for k, r in rows.items()}
    from detector.media.regions import count_windows

    embedded = {k: r["crops"] / (r["frames"] * count_windows(*SIZE)) for k, r in rows.items() if "crops" in r}
    per_frame = {k: r["crops"] / r["frames"] for k, r in rows.items() if "crops" in r}

    print(f"\n{'':28s}{'fp32':>10s}{'bf16':>10s}   frames/s (peak RSS while scanning, MB: fp32 / bf16)")
    names = {"ceiling": "(a) backbone on tensors", "mamori": "(b) mamori scan", "naive": "(c) naive scanner",
             "noverify": "    mamori scan --no-verify", "full": "    mamori scan --no-shortlist"}
    for k, label in names.items():
        cells = "".join(f"{fps_of[k, p]:>10.2f}" for p in ("fp32", "bf16"))
        mem = " / ".join(f"{rows[k, p]['scan_mb']:.0f}" for p in ("fp32", "bf16"))
        print(f"{label:28s}{cells}   ({mem})")
    for p in ("fp32", "bf16"):
        print(f"{p}: (b)/(a) = {fps_of['mamori', p] / fps_of['ceiling', p]:.2f}   "
              f"(b)/(c) = {fps_of['mamori', p] / fps_of['naive', p]:.2f}")
    print(f"bf16 mamori / fp32 mamori = {fps_of['mamori', 'bf16'] / fps_of['mamori', 'fp32']:.2f}; "
          f"bf16 mamori / fp32 naive = {fps_of['mamori', 'bf16'] / fps_of['naive', 'fp32']:.2f}; "
          f"regions embedded {embedded['mamori', 'fp32']:.0%}")
    print(f"crops embedded per frame (of {count_windows(*SIZE)}): mamori {per_frame['mamori', 'fp32']:.1f} fp32 / "
          f"{per_frame['mamori', 'bf16']:.1f} bf16; --no-shortlist {per_frame['full', 'fp32']:.1f}; "
          f"shortlist / --no-shortlist speed {fps_of['mamori', 'fp32'] / fps_of['full', 'fp32']:.2f} fp32, "
          f"{fps_of['mamori', 'bf16'] / fps_of['full', 'bf16']:.2f} bf16{forced_note(a, keep, keep_static)}")
    print("\nstatic camera, character walking (same length):")
    for k, label in {"static-mamori": "(b) mamori scan", "static-naive": "(c) naive scanner"}.items():
        cells = "".join(f"{fps_of[k, p]:>10.2f}" for p in ("fp32", "bf16"))
        mem = " / ".join(f"{rows[k, p]['scan_mb']:.0f}" for p in ("fp32", "bf16"))
        print(f"{label:28s}{cells}   ({mem})")
    for p in ("fp32", "bf16"):
        print(f"{p}: (b)/(c) = {fps_of['static-mamori', p] / fps_of['static-naive', p]:.2f}   "
              f"(b)/(a) = {fps_of['static-mamori', p] / fps_of['ceiling', p]:.2f}   "
              f"regions embedded {embedded['static-mamori', p]:.0%} ({per_frame['static-mamori', p]:.1f} crops per frame)")
    print(f"bf16 mamori / fp32 naive = {fps_of['static-mamori', 'bf16'] / fps_of['static-naive', 'fp32']:.2f}")


def forced_note(a: argparse.Namespace, keep: float | list[list[int]] | None,
                keep_static: float | list[list[int]] | None) -> str:
    mean, mean_static = _mean_kept(keep), _mean_kept(keep_static)
    if mean is None or mean_static is None:
        return ""
    how = "--keep" if a.keep is not None else f"the windows {REAL_BACKBONE}'s shortlist chose on the same frames"
    return (f" (shortlist forced to keep {mean:.2f} small windows per frame, {mean_static:.2f} on the static clip: "
            f"{how})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="clip-vit-b32", help="clip-vit-b32 (random weights) or effnet-lite0-imagenet")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the speed clip")
    ap.add_argument("--long", type=float, default=60.0, help="length of the long clip (memory)")
    ap.add_argument("--fps", type=float, default=2.0, help="sampling rate of the scans")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench", help="clips, weights and index are cached here")
    ap.add_argument("--memory-only", action="store_true", help="only the short-vs-long clip memory comparison")
    ap.add_argument("--speed-only", action="store_true", help="only the speed tables (no memory, no fidelity)")
    ap.add_argument("--keep", type=float, help="force the shortlist to keep this many small windows per frame "
                    f"(default for clip-vit-b32, random weights: as many as {REAL_BACKBONE}'s shortlist keeps on the clip)")
    a = ap.parse_args()
    a.real_keep = {}
    a.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    backbone = backbone_name(a.backbone, a.work)
    index = str(make_index(backbone, a.work))
    short = str(make_clip(a.work / f"clip-{a.seconds:g}s.mp4", a.seconds, "short"))
    long = str(make_clip(a.work / f"clip-{a.long:g}s.mp4", a.long, "long"))
    static = str(make_clip(a.work / f"static-{a.seconds:g}s.mp4", a.seconds, "static", pan=False))
    print(f"backbone {a.backbone} ({backbone}); clips {SIZE[0]}x{SIZE[1]} {CLIP_FPS} fps; sampling {a.fps} fps; "
          f"{os.cpu_count()} CPUs; set-up {time.perf_counter() - t0:.0f}s", flush=True)

    if not a.memory_only:
        speed_table(backbone, index, short, static, a)
    if a.speed_only:
        return
    static_long = str(make_clip(a.work / f"static-{a.long:g}s.mp4", a.long, "static-long", pan=False))
    print()
    for kind, s_clip, l_clip in (("panning", short, long), ("static camera", static, static_long)):
        long_row = run_child("mamori", index=index, precision="auto", clips=[l_clip], fps=a.fps)
        short_row = run_child("mamori", index=index, precision="auto", clips=[s_clip], fps=a.fps)
        print(f"peak RSS while scanning, mamori ({long_row['precision']}, {kind}): {a.seconds:g}s clip "
              f"{short_row['scan_mb']:.0f} MB ({short_row['frames']} frames), {a.long:g}s clip {long_row['scan_mb']:.0f} MB "
              f"({long_row['frames']} frames); process peak incl. model loading {short_row['peak_mb']:.0f} / "
              f"{long_row['peak_mb']:.0f} MB", flush=True)

    fid = run_child("fidelity", backbone=backbone, clips=[short, long], fps=a.fps)
    print(f"bf16 fidelity (cosine to fp32) over {fid['regions']} regions: mean {fid['mean']:.4f}, "
          f"1st percentile {fid['p01']:.4f}, min {fid['min']:.4f}; whole frames min {fid['whole_min']:.4f}")
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
