"""Recall of the shortlist (`detector.shortlist`): how many of today's matching regions it keeps.

A *matching region* is, in one sampled frame (--fps), a character's best region under the full
region search with its evidence at the review threshold or above after geometric verification
(`frame_evidence` on all 47 regions, then `verify_frame`): the region the result would cite. The
shortlist keeps it when the region is coarse (always embedded) or shortlisted. Each frame is
embedded once (all regions exactly, plus the cheap feature-map pass), so both rules are judged on
the same frames:

    map      the rule of a backbone with a feature map (EfficientNet, `shortlist.FeatureMap`) or a
             token map (open_clip ViTs, `tokenmap.TokenMap`): approximate scores of the small
             windows >= the backbone's `map_min_score` (`index.tuning`: the same value for every
             backbone today; with real CLIP weights, `--cv` says what to set its row to)
    coarse   the rule of backbones with neither (timm: ViTs, onnx:), run here on the same
             backbone's exact embeddings: small windows inside a coarse region scoring >= `coarse_min_score`

Prints, per set and rule: matching regions, the share kept (recall), the share of matches whose
character still has evidence at review in the kept regions, and crops embedded per frame (of 47).
`--cv K` chooses each rule's threshold by cross-validation split by character (the characters of
every set dealt into K folds by a hash of their name, as `scripts/cv_review.py` does; a match goes
with its character): per fold, the highest grid threshold at which the other folds' recall is at
least --target, then the held-out fold is judged with it.

    python scripts/shortlist_recall.py ../shared/eval/dev=DEV_INDEX ../shared/eval/redrawn=RED_INDEX \
        [--generated DIR] [--cache FILE] [--cv 2] [--target 0.99]

SET=INDEX: a labelled set and an index built from its references and background (what
`evaluate.py SET --keep DIR` leaves in DIR/index). `--generated DIR`: also a set of clips made here
(drawn characters in drawn scenes, `detector.media.synth`) with its own index, built in DIR once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRID = np.round(np.concatenate([np.arange(0.0005, 0.01, 0.0005), np.arange(0.01, 0.301, 0.005)]), 4)


@dataclass
class FrameRecord:
    """What the rules need from one sampled frame."""

    clip: str
    boxes: list[tuple[int, int, int, int]]
    coarse: list[int]
    small: list[int]
    approx: np.ndarray  # peak approximate score per small window (empty without a feature map)
    exact: np.ndarray  # peak exact score per region
    near: set[int]  # regions with a near-copy (PDQ) match
    #: (character, region of its best evidence, whether another region also holds it at review)
    matches: list[tuple[str, int, list[int]]] = field(default_factory=list)


def _save_cache(path: Path, sets: dict[str, list[FrameRecord]]) -> None:
    """The records as JSON (never pickle: a cache file must not be able to run code when read)."""
    def enc(f: FrameRecord) -> dict[str, Any]:
        return {"clip": f.clip, "boxes": f.boxes, "coarse": f.coarse, "small": f.small,
                "approx": f.approx.tolist(), "exact": f.exact.tolist(), "near": sorted(f.near),
                "matches": f.matches}

    path.write_text(json.dumps({k: [enc(f) for f in v] for k, v in sets.items()}))


def _load_cache(path: Path) -> dict[str, list[FrameRecord]]:
    def dec(d: dict[str, Any]) -> FrameRecord:
        return FrameRecord(d["clip"], [tuple(b) for b in d["boxes"]], d["coarse"], d["small"],
                           np.asarray(d["approx"], np.float32), np.asarray(d["exact"], np.float32), set(d["near"]),
                           [(c, r, list(o)) for c, r, o in d["matches"]])

    return {k: [dec(f) for f in v] for k, v in json.loads(path.read_text()).items()}


def record_frame(det: Any, fmap: Any, clip: str, image: Any) -> FrameRecord:
    from detector.match.evidence import frame_evidence, region_matrix
    from detector.match.verify import verify_frame
    from detector.shortlist import coarse_regions, peak_scores
    from index.calibrate import calibrated_score
    from index.nearcopy import region_hashes

    store = det.store
    pixels, boxes = det.embedder.prepare_frame(image)
    hashes = region_hashes(image, boxes) if det.nearcopy else None
    vectors = det.embed_pixels(pixels)
    ev = verify_frame(store, image, frame_evidence(store, 0.0, vectors, boxes, hashes))
    coarse = coarse_regions(boxes)
    small = [i for i in range(len(boxes)) if i not in coarse]
    approx = peak_scores(store, fmap.approximate(image, [boxes[i] for i in small])) if fmap else np.zeros(0)
    near = set()
    if hashes is not None:
        near = {i for i, r in enumerate(store.match_pdq(*hashes)[1]) if r is not None}
    chars, _, _, norm = region_matrix(store, vectors)
    rec = FrameRecord(clip, boxes, coarse, small, approx, peak_scores(store, vectors), near)
    for c, hit in ev.hits.items():
        if hit.score < store.review_score:
            continue
        j = chars.index(c) if c in chars else None
        info = store.characters[c]
        also = [] if j is None else [int(r) for r in np.flatnonzero(
            calibrated_score(norm[:, j], info.flag_sim, info.sigma) >= store.review_score)]
        rec.matches.append((c, boxes.index(hit.box), also))
    return rec


def collect(videos: Path, index: Path, fps: float) -> list[FrameRecord]:
    from detector import Detector
    from detector.embed.tokenmap import TokenMap
    from detector.media.frames import MediaReader
    from detector.shortlist import FeatureMap

    det = Detector.open(index, precision="fp32")
    fmap = FeatureMap.of(det.backbone) or TokenMap.of(det.backbone)
    out = []
    for path in sorted(p for p in videos.iterdir() if p.suffix in (".mp4", ".webm", ".gif", ".mkv")):
        for fr in MediaReader(path, fps=fps, max_frames=det.max_frames, max_pixels=det.max_pixels):
            out.append(record_frame(det, fmap, path.stem, fr.image))
        print(f"  {videos.parent.name}/{path.stem}: {len(out)} frames so far", file=sys.stderr, flush=True)
    return out


def kept(rec: FrameRecord, rule: str, threshold: float) -> set[int]:
    """The regions the rule embeds in this frame at this threshold."""
    from detector.shortlist import window_inside

    out = set(rec.coarse) | rec.near
    if rule == "map":
        return out | {i for i, s in zip(rec.small, rec.approx) if s >= threshold}
    hot = [r for r in rec.coarse if rec.exact[r] >= threshold]
    return out | {i for i in rec.small if any(window_inside(rec.boxes, i, r) for r in hot)}


def judge(frames: list[FrameRecord], rule: str, threshold: float, chars: set[str] | None = None) -> dict[str, float]:
    """Matching regions, recall, recall of 'still at review', crops per frame (matches of `chars` only)."""
    n = hit = still = crops = 0
    for rec in frames:
        keep = kept(rec, rule, threshold)
        crops += len(keep)
        for c, r, also in rec.matches:
            if chars is not None and c not in chars:
                continue
            n += 1
            hit += r in keep
            still += r in keep or bool(keep.intersection(also))
    return {"matches": n, "recall": hit / max(1, n), "still": still / max(1, n), "crops": crops / max(1, len(frames))}


def fold(name: str, k: int) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % k


def cross_validate(sets: dict[str, list[FrameRecord]], rule: str, k: int, target: float) -> None:
    """Per fold: the highest grid threshold with training recall >= target; held-out figures."""
    keys = {f"{s}/{c}" for s, frames in sets.items() for rec in frames for c, _, _ in rec.matches}
    for f in range(k + 1):  # the last round: all characters (the constant to use), judged in-sample
        held = {key for key in keys if fold(key, k) == f} if f < k else keys
        train = keys - held if f < k else keys

        def pooled(chosen: set[str], t: float) -> dict[str, float]:
            rows = [judge(frames, rule, t, {key.split("/", 1)[1] for key in chosen if key.startswith(s + "/")})
                    for s, frames in sets.items()]
            n = sum(r["matches"] for r in rows)
            return {"matches": n, "recall": sum(r["recall"] * r["matches"] for r in rows) / max(1, n)}

        ok = [t for t in GRID if pooled(train, float(t))["recall"] >= target]
        t = float(max(ok)) if ok else float(GRID[0])
        line = ", ".join(f"{s} {_fmt(judge(fr, rule, t, {key.split('/', 1)[1] for key in held if key.startswith(s + '/')}))}"
                         for s, fr in sets.items())
        print(f"  {rule} {f'fold {f}' if f < k else 'pooled (in-sample)'}: threshold {t:g} (train recall {pooled(train, t)['recall']:.3f}); held out: {line}")


def _fmt(r: dict[str, float]) -> str:
    return f"{r['matches']} matches, recall {r['recall']:.3f} (still at review {r['still']:.3f}), {r['crops']:.1f} crops/frame"


def generated_set(root: Path) -> tuple[Path, Path]:
    """Clips made here (once): six drawn characters indexed from two poses each, and 16 clips of
    drawn scenes (640x360, 4 s) in which an indexed character (12 clips: in an indexed pose or a new
    one, alternately) or an unindexed character (4) stands at 45-90% of the frame height. Returns
    (videos folder, index)."""
    from detector.embed.backbones import load_backbone
    from detector.embed.embedding import RegionEmbedder
    from detector.media.synth import composite, draw_character, draw_scene, make_clip
    from index import build_index
    from index.manifest import ReferenceEntry

    videos, index = root / "videos", root / "index"
    if (index / "index.json").exists():
        return videos, index
    entries = []
    for c in range(6):
        for pose in range(2):
            path = root / "refs" / f"gen-{c}" / f"{pose}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            draw_character(f"gen-{c}", 256, pose).save(path)
            entries.append(ReferenceEntry(path, f"gen-{c}"))
    background = root / "background"
    background.mkdir(exist_ok=True)
    for i in range(14):
        scene = draw_scene(f"gen-bg-{i}")
        if i % 2:
            scene = composite(scene, draw_character(f"gen-extra-{i}", 256), height_frac=0.6, x_frac=0.4)[0]
        scene.save(background / f"{i}.png")
    videos.mkdir(exist_ok=True)
    for i in range(16):
        name = f"gen-{i % 6}" if i < 12 else f"gen-other-{i}"
        figure = draw_character(name, 512, pose=i % 2 * 2)  # even: an indexed pose (a copy); odd: a new pose
        make_clip(videos / f"{'pos' if i < 12 else 'neg'}-{i:02d}.mp4", f"gen-scene-{i}", figure, duration=4.0,
                  appear=(0.5, 3.5), height_frac=0.45 + 0.45 * (i % 4) / 3, x_frac=0.2 + 0.6 * ((i * 7) % 5) / 4)
    build_index(entries, index, RegionEmbedder(load_backbone("effnet-lite0-imagenet", precision="fp32")),
                background=background, force=True)
    return videos, index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="*", help="SET_DIR=INDEX_DIR")
    ap.add_argument("--generated", type=Path, help="make (once) and include the generated clips, in this folder")
    ap.add_argument("--cache", type=Path, help="keep the per-frame records here (reused when present)")
    ap.add_argument("--cv", type=int, default=0, metavar="K", help="choose thresholds by K-fold CV split by character")
    ap.add_argument("--target", type=float, default=0.99, help="training recall the CV threshold must reach")
    ap.add_argument("--fps", type=float, default=2.0, help="frames sampled per second (default %(default)s)")
    a = ap.parse_args()
    from index.store import IndexStore
    from index.tuning import tuning_for

    sets = _load_cache(a.cache) if a.cache and a.cache.exists() else {}
    todo = {Path(d).name: (Path(d) / "videos", Path(i)) for d, _, i in (spec.partition("=") for spec in a.sets)}
    if a.generated:
        todo["generated"] = generated_set(a.generated)
    for name, (videos, index) in todo.items():
        if name not in sets:
            sets[name] = collect(videos, index, a.fps)
            if a.cache:  # after each set: a long run can be resumed
                _save_cache(a.cache, sets)
    # each rule at the thresholds of the indexes' backbones (`index.tuning`)
    tunings = {tuning_for(str(IndexStore.open(index).backbone["name"])) for _, index in todo.values()}
    tunings = tunings or {tuning_for("effnet-lite0-imagenet")}  # sets from --cache only
    rules = sorted({("map", t.map_min_score) for t in tunings} | {("coarse", t.coarse_min_score) for t in tunings},
                   key=lambda r: (r[0] != "map", r[1]))
    for rule, t in rules:
        for name, frames in sets.items():
            print(f"{rule:6s} >= {t:g}  {name:10s} {len(frames)} frames: {_fmt(judge(frames, rule, t))}")
        if a.cv:
            cross_validate({k: v for k, v in sets.items() if k != "generated"}, rule, a.cv, a.target)


if __name__ == "__main__":
    main()
