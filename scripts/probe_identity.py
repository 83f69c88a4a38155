"""Offline probe of identity evidence on a labelled set (issue 15): which features and normalisations
carry a character across a redraw, before anything is built into mamori.

Two steps, so that ideas are tried in seconds on cached features instead of minutes of scanning:

    python scripts/probe_identity.py extract ../shared/eval/redrawn /tmp/probe-redrawn
    python scripts/probe_identity.py report  ../shared/eval/redrawn /tmp/probe-redrawn

`extract` runs effnet-lite0-imagenet (fp32) over the references (both views, as the index does),
the background images and every clip's sampled frames (2 fps, the scanner's regions), and saves per
region four L2-normalised descriptors from one forward pass: `avg` (the pooled 1280-d features the
scanner uses), `gem` (GeM p=3 of the last feature map), `mid` (pooled stages 3-6, each normalised,
concatenated), `col` (a 4x4x4 RGB histogram, Hellinger). It also embeds AUG generic augmentations of
each reference (crop, mirror, rotation, low resolution upscaled, colour, hue, blur, composited on a
background window) for fitting adapters.

`extract` also embeds 2 x AUG "medium" edits per reference (`medium`: pixelized, paint-like,
posterized; session 12) for the contrastive adapter.

`report` scores each clip the way mamori does (background-centred cosines; n = s - b(q) - 0.5 o_c(q);
per frame the best region; per video the mean of the 2 best frames) for each descriptor, with and
without a WCCN adapter (within-reference covariance of the augmentations, shrunk, inverse square
root) and with a contrastive linear projection (`contrastive`: supervised contrastive loss on the
generic and/or medium augmentations against background regions, 3 seeds), and prints AP, character accuracy on positives, recall of the right character at a threshold
that flags at most 5% of negatives (in-sample: optimistic), and, per clip direction when the labels
have one (`direction` "A->B": references in medium A, the clip shows medium B), the mean rank of
the true character among the characters whose references are in the same medium as its own (so the
medium alone cannot decide), out of how many.
These are rough, in-sample figures for choosing what to build; `evaluate.py` measures what is built.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

HEADS = ("avg", "gem", "mid", "col")


class Extractor:
    """effnet-lite0 with hooks on its stages: four descriptors per region from one forward pass."""

    def __init__(self) -> None:
        from detector.embed.backbones import load_backbone
        from detector.embed.embedding import RegionEmbedder

        self.bb = load_backbone("effnet-lite0-imagenet", precision="fp32")
        self.embedder = RegionEmbedder(self.bb)
        self.maps: dict[str, torch.Tensor] = {}
        module: Any = self.bb.module
        for i, block in enumerate(module.blocks):
            block.register_forward_hook(self._keep(f"s{i}"))
        module.conv_head.register_forward_hook(self._keep("head"))

    def _keep(self, name: str) -> Callable[..., None]:
        def hook(_mod: Any, _inp: Any, out: torch.Tensor) -> None:
            self.maps[name] = out
        return hook

    def heads(self, pixels: torch.Tensor) -> dict[str, np.ndarray]:
        """uint8 (N, 3, S, S) -> {head: (N, d) float32, L2-normalised}."""
        out: dict[str, list[torch.Tensor]] = {k: [] for k in HEADS}
        mean, std = self.bb.preprocess.mean, self.bb.preprocess.std
        for i in range(0, len(pixels), 32):
            px = pixels[i : i + 32]
            x = (px.float().div(255.0) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
            with torch.inference_mode():
                pooled = self.bb.module(x.contiguous(memory_format=torch.channels_last))
                head = self.maps["head"].clamp(min=1e-6)
                out["avg"].append(pooled.float())
                out["gem"].append(head.pow(3).mean((2, 3)).pow(1 / 3))
                mids = [torch.nn.functional.normalize(self.maps[f"s{j}"].mean((2, 3)), dim=-1) for j in (3, 4, 5, 6)]
                out["mid"].append(torch.cat(mids, -1))
            q = (px // 64).long()
            idx = (q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2]).flatten(1)
            hist = torch.zeros(len(px), 64).scatter_add_(1, idx, torch.ones(idx.shape))
            out["col"].append((hist / hist.sum(1, keepdim=True)).sqrt())
        return {k: torch.nn.functional.normalize(torch.cat(v), dim=-1).numpy().astype(np.float32)
                for k, v in out.items()}

    def images(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        """Whole images (already square views) -> descriptors."""
        from detector.embed.backbones import image_tensor

        return self.heads(self.bb.resize([image_tensor(im) for im in images]))

    def regions(self, images: list[Image.Image]) -> dict[str, Any]:
        """The scanner's regions of each image -> descriptors, plus each region's image number and box."""
        parts, owner, boxes = [], [], []
        for k, im in enumerate(images):
            px, bx = self.embedder.prepare_frame(im)
            parts.append(self.heads(px))
            owner += [k] * len(bx)
            boxes += bx
        feats = {h: np.concatenate([p[h] for p in parts]) for h in HEADS}
        return {**feats, "owner": np.array(owner), "boxes": np.array(boxes)}


def _on_background(rgb: Image.Image, alpha: Image.Image, backgrounds: list[Image.Image], r: random.Random) -> Image.Image:
    """The edited art (with its alpha) composited onto a random window of a background image."""
    im = rgb.convert("RGBA")
    im.putalpha(alpha)
    bg = r.choice(backgrounds)
    side = int(max(im.size) / r.uniform(0.5, 0.95))
    x0, y0 = r.randint(0, max(0, bg.width - side)), r.randint(0, max(0, bg.height - side))
    window = bg.crop((x0, y0, x0 + side, y0 + side)).convert("RGBA")
    window.alpha_composite(im, (r.randint(0, side - im.width), r.randint(0, side - im.height)))
    return window.convert("RGB")


def augment(img: Image.Image, backgrounds: list[Image.Image], r: random.Random) -> Image.Image:
    """One generic edit of a reference, composited onto a background window (no source-specific rule)."""
    im = img.convert("RGBA")
    if r.random() < 0.7:
        cw, ch = int(im.width * r.uniform(0.7, 1.0)), int(im.height * r.uniform(0.7, 1.0))
        x, y = r.randint(0, im.width - cw), r.randint(0, im.height - ch)
        im = im.crop((x, y, x + cw, y + ch))
    if r.random() < 0.5:
        im = ImageOps.mirror(im)
    if r.random() < 0.5:
        im = im.rotate(r.uniform(-15, 15), resample=Image.Resampling.BICUBIC, expand=True)
    if r.random() < 0.4:  # low resolution, upscaled (as a generator's upscaler does)
        s = r.uniform(24, 96) / max(im.size)
        small = im.resize((max(1, int(im.width * s)), max(1, int(im.height * s))), Image.Resampling.BOX)
        im = small.resize(im.size, r.choice([Image.Resampling.NEAREST, Image.Resampling.BICUBIC]))
    rgb, alpha = im.convert("RGB"), im.getchannel("A")
    if r.random() < 0.7:
        for enhance in (ImageEnhance.Color, ImageEnhance.Brightness, ImageEnhance.Contrast):
            rgb = enhance(rgb).enhance(r.uniform(0.6, 1.4))
    if r.random() < 0.3:
        hsv = np.asarray(rgb.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(int) + r.randint(-25, 25)) % 256
        rgb = Image.fromarray(hsv, "HSV").convert("RGB")
    if r.random() < 0.4:
        rgb = rgb.filter(ImageFilter.GaussianBlur(r.uniform(0.5, 2.0)))
    return _on_background(rgb, alpha, backgrounds, r)


def medium(img: Image.Image, backgrounds: list[Image.Image], r: random.Random) -> Image.Image:
    """A generic "another medium" edit (session 12): pixelized (downscaled, 8-32 colours, nearest
    upscale), paint-like (downscaled, bicubic upscale, blurred) or posterized; a part or most of the
    art; composited like `augment`. No rule about any art source: the same edits for every reference."""
    im = img.convert("RGBA")
    if r.random() < 0.6:  # a part or most of it
        f = r.uniform(0.45, 1.0)
        cw, ch = max(8, int(im.width * r.uniform(f, 1.0))), max(8, int(im.height * f))
        x, y = r.randint(0, im.width - cw), r.randint(0, im.height - ch)
        im = im.crop((x, y, x + cw, y + ch))
    if r.random() < 0.5:
        im = ImageOps.mirror(im)
    alpha = im.getchannel("A")
    rgb = im.convert("RGB")
    kind = r.choice(["pixel", "paint", "poster"])
    if kind == "pixel":
        s = r.uniform(20, 72) / max(rgb.size)
        small = rgb.resize((max(1, int(rgb.width * s)), max(1, int(rgb.height * s))), Image.Resampling.BOX)
        small = small.quantize(colors=r.choice([8, 16, 32]), method=Image.Quantize.MEDIANCUT).convert("RGB")
        a_small = alpha.resize(small.size, Image.Resampling.BOX).point(lambda v: 255 if v > 127 else 0)
        rgb, alpha = small.resize(rgb.size, Image.Resampling.NEAREST), a_small.resize(rgb.size, Image.Resampling.NEAREST)
    elif kind == "paint":
        s = r.uniform(0.08, 0.3)
        small = rgb.resize((max(1, int(rgb.width * s)), max(1, int(rgb.height * s))), Image.Resampling.BOX)
        rgb = small.resize(rgb.size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(r.uniform(1, 3)))
        alpha = alpha.filter(ImageFilter.GaussianBlur(2))
    else:
        rgb = ImageOps.posterize(rgb.filter(ImageFilter.MedianFilter(5)), r.choice([2, 3]))
    return _on_background(rgb, alpha, backgrounds, r)


def extract(set_dir: Path, out: Path, n_aug: int, limit: int | None) -> None:
    from detector.media.frames import MediaReader
    from detector.media.regions import pad_square, reference_views
    from index.images import IMAGE_SUFFIXES, open_image

    out.mkdir(parents=True, exist_ok=True)
    ex = Extractor()
    with open(set_dir / "manifest.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    views, chars = [], []
    for row in rows:
        for view in reference_views(open_image(set_dir / row["path"])).values():
            views.append(view)
            chars.append(row["character"])
    np.savez(out / "refs.npz", chars=np.array(chars), **ex.images(views))
    bg_files = sorted(p for p in (set_dir / "background").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    backgrounds = [open_image(p).convert("RGB") for p in bg_files]
    np.savez(out / "bg.npz", **ex.regions(backgrounds))
    r = random.Random(0)
    augs, owner = [], []
    for i, row in enumerate(rows):
        with Image.open(set_dir / row["path"]) as img:
            img.load()
            augs += [pad_square(augment(img, backgrounds, r)) for _ in range(n_aug)]
        owner += [i] * n_aug
    np.savez(out / "aug.npz", owner=np.array(owner), **ex.images(augs))
    r = random.Random(1)
    augs = []
    for row in rows:
        with Image.open(set_dir / row["path"]) as img:
            img.load()
            augs += [pad_square(medium(img, backgrounds, r)) for _ in range(2 * n_aug)]
    np.savez(out / "aug2.npz", owner=np.repeat(np.arange(len(rows)), 2 * n_aug), **ex.images(augs))
    labels = json.loads((set_dir / "labels.json").read_text())
    for vid in sorted(labels)[:limit]:
        frames = list(MediaReader(set_dir / "videos" / f"{vid}.mp4", fps=2.0))
        np.savez(out / f"v-{vid}.npz", **ex.regions([f.image for f in frames]))
        print(f"{vid}: {len(frames)} frames", flush=True)


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def wccn(aug: np.ndarray, owner: np.ndarray, centre: np.ndarray, shrink: float) -> np.ndarray:
    """Inverse square root of the shrunk within-reference covariance of the augmentations."""
    x = _unit(aug - centre)
    d = x.shape[1]
    cov = np.zeros((d, d))
    for o in np.unique(owner):
        y = x[owner == o] - x[owner == o].mean(0)
        cov += y.T @ y
    cov = (1 - shrink) * cov / len(x) + shrink * np.trace(cov / len(x)) / d * np.eye(d)
    vals, vecs = np.linalg.eigh(cov)
    out: np.ndarray = vecs @ np.diag(vals**-0.5) @ vecs.T
    return out


def contrastive(x: np.ndarray, y: np.ndarray, bg: np.ndarray, centre: np.ndarray, dim: int = 128, steps: int = 400,
                tau: float = 0.1, seed: int = 0) -> np.ndarray:
    """A linear projection (D -> dim) trained with a supervised contrastive loss (session 12): views
    of one character (augmentations and the references) together, apart from other characters and
    from background regions (negatives only). Returns the (D, dim) matrix."""
    torch.manual_seed(seed)
    xs = torch.from_numpy(_unit(x - centre)).float()
    bs = torch.from_numpy(_unit(bg - centre)).float()
    ys = torch.from_numpy(y)
    w = torch.nn.Parameter(torch.eye(xs.shape[1])[:, :dim] + 0.01 * torch.randn(xs.shape[1], dim))
    opt = torch.optim.Adam([w], lr=1e-3)
    for _ in range(steps):
        idx, bidx = torch.randint(0, len(xs), (256,)), torch.randint(0, len(bs), (512,))
        z = torch.nn.functional.normalize(xs[idx] @ w, dim=-1)
        zb = torch.nn.functional.normalize(bs[bidx] @ w, dim=-1)
        eye = torch.eye(len(idx))
        logits = torch.cat([z @ z.T / tau - 1e9 * eye, z @ zb.T / tau], 1)
        logp = logits - torch.logsumexp(logits, 1, keepdim=True)
        pos = torch.cat([(ys[idx][:, None] == ys[idx][None, :]).float() - eye, torch.zeros(len(idx), len(bidx))], 1)
        loss = (-(logp * pos).sum(1) / pos.sum(1).clamp(min=1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    out: np.ndarray = w.detach().numpy()
    return out


def video_scores(data: dict[str, Any], head: str, transform: Callable[[np.ndarray], np.ndarray] | None
                 ) -> tuple[list[str], dict[str, np.ndarray]]:
    """Per clip, per character: mamori's rule on one descriptor (see the module docstring)."""
    refs, bg = data["refs"], data["bg"]
    tf = transform or (lambda x: x)
    centre = tf(bg[head]).mean(0)
    ref_v, bg_v = _unit(tf(refs[head]) - centre), _unit(tf(bg[head]) - centre)
    chars = sorted(set(refs["chars"].tolist()))
    col = np.array([chars.index(c) for c in refs["chars"]])
    out = {}
    for vid, v in data["videos"].items():
        q = _unit(tf(v[head]) - centre)
        s = q @ ref_v.T
        per = np.stack([s[:, col == j].max(1) for j in range(len(chars))], 1)
        sb = q @ bg_v.T
        b = -np.partition(-sb, 9, axis=1)[:, :10].mean(1)
        order = np.sort(per, 1)
        other = np.where(per >= order[:, -1:], order[:, -2:-1], order[:, -1:])
        n = per - b[:, None] - 0.5 * other
        frames = v["owner"]
        best = np.stack([n[frames == f].max(0) for f in np.unique(frames)])
        out[vid] = np.sort(best, 0)[-min(2, len(best)):].mean(0)
    return chars, out


def _ap(scores: list[float], positive: list[bool]) -> float:
    order = np.argsort(-np.asarray(scores))
    hit = np.asarray(positive, float)[order]
    precision = np.cumsum(hit) / np.arange(1, len(hit) + 1)
    return float((precision * hit).sum() / max(hit.sum(), 1))


def summarise(chars: list[str], scores: dict[str, np.ndarray], labels: dict[str, Any]) -> str:
    vids = sorted(scores)
    top = {v: float(scores[v].max()) for v in vids}
    guess = {v: chars[int(scores[v].argmax())] for v in vids}
    pos = [v for v in vids if labels[v]["positive"]]
    neg = sorted(top[v] for v in vids if not labels[v]["positive"])
    thr = neg[int(np.ceil(0.95 * len(neg))) - 1] if neg else -np.inf
    line = (f"AP={_ap([top[v] for v in vids], [labels[v]['positive'] for v in vids]):.3f} "
            f"char_acc={np.mean([guess[v] == labels[v]['character'] for v in pos]):.2f} "
            f"recall@fpr0.05={np.mean([top[v] > thr and guess[v] == labels[v]['character'] for v in pos]):.2f}")
    # a character's reference medium: the part before "->" of its clips' direction (redrawn set)
    medium = {labels[v]["character"]: labels[v]["direction"].split("->")[0] for v in pos
              if "->" in (labels[v].get("direction") or "")}
    ranks: dict[str, list[int]] = {}
    for v in pos:
        c = labels[v]["character"]
        if c not in medium:
            continue
        same = [k for k, m in medium.items() if m == medium[c] and k in chars]
        s, t = scores[v], scores[v][chars.index(c)]
        ranks.setdefault(labels[v]["direction"], []).append(1 + sum(s[chars.index(k)] > t for k in same))
        ranks.setdefault(labels[v]["direction"] + " of", []).append(len(same))
    for d in sorted(k for k in ranks if not k.endswith(" of")):
        line += f" rank[{d}]={np.mean(ranks[d]):.1f}/{np.mean(ranks[d + ' of']):.0f}"
    return line


def report(set_dir: Path, feats: Path, shrinks: list[float]) -> None:
    labels = json.loads((set_dir / "labels.json").read_text())
    data = {"refs": dict(np.load(feats / "refs.npz")), "bg": dict(np.load(feats / "bg.npz")),
            "videos": {p.stem[2:]: dict(np.load(p)) for p in sorted(feats.glob("v-*.npz"))}}
    labels = {v: labels[v] for v in data["videos"]}
    aug = dict(np.load(feats / "aug.npz"))
    for head in HEADS:
        chars, scores = video_scores(data, head, None)
        print(f"{head:4} plain      {summarise(chars, scores, labels)}")
        for shrink in shrinks:
            centre = data["bg"][head].mean(0)
            t = wccn(aug[head], aug["owner"], centre, shrink)
            chars, scores = video_scores(data, head, lambda x, t=t, c=centre: _unit(x - c) @ t)
            print(f"{head:4} wccn {shrink:<5} {summarise(chars, scores, labels)}")
        if head == "col" or not (feats / "aug2.npz").exists():
            continue
        with open(set_dir / "manifest.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        names = sorted({r["character"] for r in rows})
        medium_aug = dict(np.load(feats / "aug2.npz"))
        for kind, parts in (("generic", [aug]), ("medium", [medium_aug]), ("both", [aug, medium_aug])):
            x = np.concatenate([p[head] for p in parts] + [data["refs"][head]])
            y = np.array([names.index(rows[o]["character"]) for p in parts for o in p["owner"]]
                         + [names.index(c) for c in data["refs"]["chars"]])
            centre = data["bg"][head].mean(0)
            for seed in (0, 1, 2):
                w = contrastive(x, y, data["bg"][head], centre, seed=seed)
                chars, scores = video_scores(data, head, lambda v, w=w, c=centre: _unit(v - c) @ w)
                print(f"{head:4} contrastive {kind:7} seed {seed} {summarise(chars, scores, labels)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract", help="embed a labelled set's references, background and clips")
    e.add_argument("set", type=Path)
    e.add_argument("out", type=Path)
    e.add_argument("--aug", type=int, default=24, help="augmentations per reference image")
    e.add_argument("--limit", type=int, default=None, help="only the first N clips (a smoke run)")
    r = sub.add_parser("report", help="score the cached features every way and print the figures")
    r.add_argument("set", type=Path)
    r.add_argument("features", type=Path)
    r.add_argument("--shrink", type=float, nargs="*", default=[0.1, 0.5], help="WCCN shrinkage values")
    args = ap.parse_args()
    if args.cmd == "extract":
        extract(args.set, args.out, args.aug, args.limit)
    else:
        report(args.set, args.features, args.shrink)


if __name__ == "__main__":
    main()
