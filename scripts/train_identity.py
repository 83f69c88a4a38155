"""Train `mamori-identity-lite0`: character identity by metric learning on the identity corpus.

    python scripts/identity_corpus.py --out CORPUS            # once: the drawings (see its docstring)
    python scripts/train_identity.py --corpus CORPUS --work WORK [--steps 1500] [--seed 0]
        [--export detector/weights/mamori-identity-lite0.safetensors]

What it does, in order:
1. views: every drawing of the corpus is composited onto a scene (the corpus's game backgrounds, or
   a flat colour) as a square crop would show it in a generated frame: the character at 35-95% of
   the crop's height, anywhere in it, with one to three of: nearest-neighbour upscaling (pixel art
   blown up), mirror, colour change, greyscale, blur, JPEG, a rectangular panel behind it;
   `--views` views per drawing, fixed by the seed;
2. frozen stages: the stem and the first six of the seven stages of the ImageNet EfficientNet-Lite0
   are kept as they are (generic edges, textures, parts) and run once per view; their outputs
   (192 x 7 x 7) are cached in `WORK/cache.pt`;
3. training: the last stage, the 1280-d head and a 1x1 projection to 256-d are trained with a
   supervised contrastive loss (SupCon, temperature 0.1). A batch holds P identities x K views, the
   K views of an identity from K *different drawings* (another pose, direction, tileset or deck:
   never only two edits of one image), and the P identities from one source, so that every
   negative is a same-source look-alike (same style, same palette);
4. checkpoints: `WORK/checkpoint.pt` (model + optimiser, tensors only, read with weights_only=True)
   every 100 steps; running the same command again resumes from it; step s draws its batch from a
   generator seeded with (seed, s), so a resumed run takes the same batches;
5. evaluation: pair F1 (CCIP's metric: every pair of drawings, "same character" when the cosine
   exceeds a threshold) on drawings composited on plain grey, for the validation identities (2-fold by
   identity: the threshold is chosen on one half, F1 read on the other) and for the held-out source at
   the threshold chosen on all validation identities; also for the untrained ImageNet model;
6. export: every tensor of the model as safetensors (fp32), plus `WORK/metrics.json`.

Why SupCon and not ArcFace or proxy-anchor: most identities have 4-24 drawings and many sources have
few identities, so class proxies would be estimated from few drawings and would learn each source's
palette; SupCon compares drawings with drawings inside one source, which is the question the
detector asks (this character, or another of the same game?). Why freeze the early stages: on this
2-core machine a step that trains from stage 5 on took 6.7 s (64 views, measured under load), from
stage 7 on 1.0 s; the cached stages are what makes a 2-hour budget hold. The price is capacity:
what the ImageNet stages do not see, the trained head cannot recover.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from detector.embed.backbone_effnet import effnet_imagenet
from detector.embed.backbone_identity import IDENTITY_DIM, IdentityNet

SIZE = 224
FROZEN_STAGES = 6  # stem + blocks[0:6] frozen and cached


# --- views -------------------------------------------------------------------------------------


def compose(drawing: Image.Image, scene: Image.Image | None, rng: random.Random, *, clean: bool = False) -> Image.Image:
    """One square view of `drawing` (RGBA) as a generated frame's crop would show it."""
    if clean:
        canvas = Image.new("RGB", (SIZE, SIZE), (128, 128, 128))
        frac, edits = 0.8, []
    else:
        if scene is None:
            canvas = Image.new("RGB", (SIZE, SIZE), tuple(rng.randrange(256) for _ in range(3)))
        else:
            s = rng.randint(min(scene.size) // 3, min(scene.size))
            x, y = rng.randint(0, scene.width - s), rng.randint(0, scene.height - s)
            canvas = scene.crop((x, y, x + s, y + s)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        frac = rng.uniform(0.35, 0.95)
        edits = rng.sample(["mirror", "colour", "grey", "blur", "jpeg", "panel", "pixel"], rng.randint(1, 3))
    d = drawing
    if "mirror" in edits:
        d = ImageOps.mirror(d)
    scale = frac * SIZE / max(d.size)
    size = (max(1, round(d.width * scale)), max(1, round(d.height * scale)))
    pixel = "pixel" in edits or max(drawing.size) < 64
    d = d.resize(size, Image.Resampling.NEAREST if pixel else Image.Resampling.LANCZOS)
    x, y = (SIZE - d.width) // 2, (SIZE - d.height) // 2
    if not clean:
        x, y = rng.randint(0, SIZE - d.width), rng.randint(0, SIZE - d.height)
    if "panel" in edits:
        pad = rng.randint(2, 12)
        canvas.paste(tuple(rng.randrange(256) for _ in range(3)), (max(0, x - pad), max(0, y - pad),
                                                                   min(SIZE, x + d.width + pad), min(SIZE, y + d.height + pad)))
    canvas.paste(d, (x, y), d.getchannel("A"))
    if "colour" in edits:
        canvas = ImageEnhance.Color(canvas).enhance(rng.uniform(0.4, 1.6))
        canvas = ImageEnhance.Brightness(canvas).enhance(rng.uniform(0.7, 1.3))
    if "grey" in edits:
        canvas = ImageOps.grayscale(canvas).convert("RGB")
    if "blur" in edits:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.8)))
    if "jpeg" in edits:
        buf = io.BytesIO()
        canvas.save(buf, "JPEG", quality=rng.randint(30, 80))
        canvas = Image.open(buf).convert("RGB")
    return canvas


def to_input(images: list[Image.Image]) -> torch.Tensor:
    """PIL RGB squares -> the model's input, scaled to [-1, 1] (the backbone's preprocessing)."""
    x = torch.from_numpy(np.stack([np.asarray(im, np.uint8) for im in images])).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


# --- model -------------------------------------------------------------------------------------


def build_model() -> IdentityNet:
    trunk, _ = effnet_imagenet()
    return IdentityNet(trunk, IDENTITY_DIM)


def frozen_part(model: IdentityNet, x: torch.Tensor) -> torch.Tensor:
    t = model.trunk
    x = t.bn1(t.conv_stem(x))
    for b in t.blocks[:FROZEN_STAGES]:
        x = b(x)
    return x


def trained_part(model: IdentityNet, x: torch.Tensor) -> torch.Tensor:
    t = model.trunk
    for b in t.blocks[FROZEN_STAGES:]:
        x = b(x)
    return model.proj(t.bn2(t.conv_head(x))).mean(dim=(2, 3))


def trainable(model: IdentityNet) -> list[torch.nn.Parameter]:
    t = model.trunk
    mods = [*t.blocks[FROZEN_STAGES:], t.conv_head, t.bn2, model.proj]
    return [p for m in mods for p in m.parameters()]


def supcon(z: torch.Tensor, labels: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) of L2-normalised rows `z`."""
    sim = z @ z.T / tau
    n = len(z)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, -1e9)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    has = pos.any(dim=1)
    return -((logp * pos).sum(1)[has] / pos.sum(1)[has]).mean()


# --- data --------------------------------------------------------------------------------------


def load_corpus(corpus: Path) -> tuple[list[dict[str, str]], list[Image.Image]]:
    with open(corpus / "manifest.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    scenes = [Image.open(p).convert("RGB") for p in sorted((corpus / "scenes").glob("*.jpg"))]
    return rows, scenes


def subset(identities: list[str], max_identities: int | None, seed: int) -> set[str]:
    """The training identities a run uses: all, or a seeded sample (the corpus-size study)."""
    if not max_identities or max_identities >= len(identities):
        return set(identities)
    return set(random.Random(seed).sample(sorted(identities), max_identities))


def render_views(corpus: Path, rows: list[dict[str, str]], scenes: list[Image.Image], views: int,
                 seed: int) -> tuple[list[Image.Image], list[int]]:
    out, owner = [], []
    for i, r in enumerate(rows):
        d = Image.open(corpus / r["path"]).convert("RGBA")
        for v in range(views):
            rng = random.Random(f"{seed}/{r['path']}/{v}")
            scene = rng.choice(scenes) if scenes and rng.random() < 0.85 else None
            out.append(compose(d, scene, rng))
            owner.append(i)
    return out, owner


def cache_features(model: IdentityNet, images: list[Image.Image], device: torch.device, batch: int = 64) -> torch.Tensor:
    parts = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            parts.append(frozen_part(model, to_input(images[i : i + batch]).to(device)).half().cpu())
            print(f"\rcache {min(i + batch, len(images))}/{len(images)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return torch.cat(parts)


# --- evaluation --------------------------------------------------------------------------------


def embed_clean(model: IdentityNet, corpus: Path, rows: list[dict[str, str]], device: torch.device) -> np.ndarray:
    images = [compose(Image.open(corpus / r["path"]).convert("RGBA"), None, random.Random(0), clean=True) for r in rows]
    out = []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(images), 64):
            out.append(F.normalize(model(to_input(images[i : i + 64]).to(device)), dim=-1).cpu().numpy())
    return np.concatenate(out)


def pair_scores(z: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    iu = np.triu_indices(len(z), k=1)
    lab = np.asarray(labels)
    return (z @ z.T)[iu], (lab[:, None] == lab[None, :])[iu]


def f1_at(sims: np.ndarray, same: np.ndarray, t: float) -> float:
    pred = sims > t
    tp = float(np.sum(pred & same))
    return 2 * tp / max(1.0, float(pred.sum() + same.sum()))


def best_threshold(sims: np.ndarray, same: np.ndarray) -> float:
    grid = np.linspace(-0.2, 0.99, 240)
    return float(grid[int(np.argmax([f1_at(sims, same, t) for t in grid]))])


def pair_f1(model: IdentityNet, corpus: Path, rows: list[dict[str, str]], device: torch.device) -> dict[str, float]:
    val = [r for r in rows if r["split"] == "val"]
    held = [r for r in rows if r["split"] == "heldout"]
    zv = embed_clean(model, corpus, val, device)
    ids = sorted({r["identity"] for r in val})
    half = {i: k % 2 for k, i in enumerate(random.Random(0).sample(ids, len(ids)))}
    folds = [np.array([half[r["identity"]] == f for r in val]) for f in (0, 1)]
    oof = []
    for f in (0, 1):
        a, b = folds[f], folds[1 - f]
        t = best_threshold(*pair_scores(zv[a], [r["identity"] for r, m in zip(val, a) if m]))
        sims, same = pair_scores(zv[b], [r["identity"] for r, m in zip(val, b) if m])
        oof.append(f1_at(sims, same, t))
    t_all = best_threshold(*pair_scores(zv, [r["identity"] for r in val]))
    out = {"val_pair_f1_oof": float(np.mean(oof)), "threshold": t_all}
    if held:
        zh = embed_clean(model, corpus, held, device)
        sims, same = pair_scores(zh, [r["identity"] for r in held])
        out["heldout_pair_f1"] = f1_at(sims, same, t_all)
        out["heldout_pair_f1_best_threshold"] = f1_at(sims, same, best_threshold(sims, same))
    return out


# --- main --------------------------------------------------------------------------------------


def batch_for(step: int, seed: int, by_source: dict[str, list[str]], by_id: dict[str, list[int]],
              owner_views: dict[int, list[int]], p: int, k: int) -> tuple[list[int], list[int]]:
    rng = random.Random(f"{seed}/step/{step}")
    sources = sorted(by_source)
    weights = [len(by_source[s]) ** 0.5 for s in sources]
    source = rng.choices(sources, weights)[0]
    ids = by_source[source]
    chosen = rng.sample(ids, min(p, len(ids)))
    if len(chosen) < p:  # a small source: fill with identities of the others
        others = [i for s in sources if s != source for i in by_source[s]]
        chosen += rng.sample(others, p - len(chosen))
    views, labels = [], []
    for lab, ident in enumerate(chosen):
        drawings = by_id[ident]
        picks = rng.sample(drawings, min(k, len(drawings)))
        for d in picks:
            views.append(rng.choice(owner_views[d]))
            labels.append(lab)
    return views, labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="cache, checkpoints and metrics")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--views", type=int, default=4, help="cached views per drawing")
    ap.add_argument("--p", type=int, default=16, help="identities per batch")
    ap.add_argument("--k", type=int, default=4, help="drawings per identity in a batch")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-identities", type=int, default=None,
                    help="train on a seeded subset of the identities (corpus-size study; same cached views)")
    ap.add_argument("--skip-imagenet", action="store_true", help="do not measure the untrained model first")
    ap.add_argument("--cache", type=Path, default=None, help="cached views (default WORK/cache.pt; runs may share one)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--export", type=Path, default=None, help="write the trained weights here (safetensors)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(True)  # mamori's load_backbone turns autograd off process-wide
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    args.work.mkdir(parents=True, exist_ok=True)
    rows, scenes = load_corpus(args.corpus)
    train = [r for r in rows if r["split"] == "train"]
    model = build_model().to(device)
    metrics: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}}
    if not (args.work / "checkpoint.pt").exists() and not args.skip_imagenet:
        metrics["imagenet"] = pair_f1(model, args.corpus, rows, device)
        print("imagenet:", metrics["imagenet"], file=sys.stderr)

    cache = args.cache or args.work / "cache.pt"
    key = f"{args.seed}/{args.views}/{len(train)}"
    blob = torch.load(cache, weights_only=True) if cache.exists() else None
    if blob is None or blob.get("key") != key:
        t0 = time.time()
        images, owner = render_views(args.corpus, train, scenes, args.views, args.seed)
        blob = {"key": key, "feats": cache_features(model, images, device), "owner": torch.tensor(owner)}
        torch.save(blob, cache)
        print(f"cached {len(images)} views in {time.time() - t0:.0f} s", file=sys.stderr)
    feats, owner = blob["feats"], blob["owner"].tolist()
    owner_views: dict[int, list[int]] = defaultdict(list)
    for v, d in enumerate(owner):
        owner_views[d].append(v)
    by_id: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(train):
        by_id[r["identity"]].append(i)
    by_source: dict[str, list[str]] = defaultdict(list)
    used = subset([i for i in by_id if len(by_id[i]) >= 2], args.max_identities, args.seed)
    for ident in sorted(by_id):
        if ident in used:
            by_source[train[by_id[ident][0]]["source"]].append(ident)

    params = trainable(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    start = 0
    ckpt = args.work / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = int(state["step"])
        print(f"resumed at step {start}", file=sys.stderr)
    t0, losses = time.time(), []
    for step in range(start, args.steps):
        model.train()
        for m in [model.trunk.conv_stem, model.trunk.bn1, *model.trunk.blocks[:FROZEN_STAGES]]:
            m.eval()
        views, labels = batch_for(step, args.seed, by_source, by_id, owner_views, args.p, args.k)
        x = feats[views].float().to(device)
        z = F.normalize(trained_part(model, x), dim=-1)
        loss = supcon(z, torch.tensor(labels, device=device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 10 == 0:
            rate = (step + 1 - start) / (time.time() - t0)
            print(f"\rstep {step + 1}/{args.steps} loss {np.mean(losses[-50:]):.3f} "
                  f"({rate:.2f} steps/s, {(args.steps - step - 1) / rate / 60:.0f} min left)", end="", file=sys.stderr)
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "step": torch.tensor(step + 1)}, ckpt)
    print(file=sys.stderr)
    model.eval()
    metrics["trained"] = pair_f1(model, args.corpus, rows, device)
    metrics["final_loss"] = float(np.mean(losses[-100:])) if losses else None
    print("trained:", metrics["trained"], file=sys.stderr)
    old = json.loads((args.work / "metrics.json").read_text()) if (args.work / "metrics.json").exists() else {}
    (args.work / "metrics.json").write_text(json.dumps({**old, **metrics}, indent=1))
    if args.export:
        from safetensors.torch import save_file

        args.export.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}, str(args.export))
        print(f"exported {args.export}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
