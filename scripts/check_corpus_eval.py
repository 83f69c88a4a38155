"""Check that no evaluation image is in the identity corpus: PDQ near-duplicates, corpus vs ../shared/eval.

    python scripts/check_corpus_eval.py --corpus CORPUS [--eval ../shared/eval] [--distance 31]

Every reference and background image of every evaluation set, and one frame a second of every
clip, is hashed with PDQ (flattened on grey like the corpus's drawings) and compared with every
drawing of the corpus manifest (its `pdq` column). Prints the closest pairs and exits 1 when any
pair is within `--distance` bits (PDQ's usual match threshold is 31 of 256).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import av
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from identity_corpus import pdq


def eval_hashes(root: Path) -> tuple[list[str], np.ndarray]:
    names, hashes = [], []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".gif"}:
            names.append(str(p.relative_to(root)))
            hashes.append(pdq(Image.open(p).convert("RGBA")))
        elif p.suffix.lower() == ".mp4":
            with av.open(str(p)) as c:
                last = -1.0
                for f in c.decode(video=0):
                    t = float(f.time or 0.0)
                    if t - last >= 1.0:
                        last = t
                        names.append(f"{p.relative_to(root)}@{t:.1f}s")
                        hashes.append(pdq(f.to_image().convert("RGBA")))
    return names, np.array(hashes, dtype=bool).reshape(-1, 256)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--eval", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "eval")
    ap.add_argument("--distance", type=int, default=31)
    args = ap.parse_args(argv)
    with open(args.corpus / "manifest.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    corpus = np.unpackbits(np.array([np.frombuffer(bytes.fromhex(r["pdq"]), np.uint8) for r in rows]), axis=1).astype(bool)
    names, ev = eval_hashes(args.eval)
    # Hamming distances in blocks (corpus x eval x 256 bits would not fit at once)
    best = np.full(len(names), 257)
    arg = np.zeros(len(names), int)
    for i in range(0, len(corpus), 512):
        d = (corpus[i : i + 512, None, :] != ev[None, :, :]).sum(axis=2)
        j = d.argmin(axis=0)
        better = d[j, np.arange(len(names))] < best
        best = np.where(better, d[j, np.arange(len(names))], best)
        arg = np.where(better, j + i, arg)
    order = np.argsort(best)
    print(f"{len(rows)} corpus drawings vs {len(names)} evaluation images and frames")
    for k in order[:5]:
        print(f"  closest: {best[k]:3d} bits  {names[k]}  ~  {rows[arg[k]]['path']}")
    hits = int((best <= args.distance).sum())
    print(f"near-duplicates (<= {args.distance} bits): {hits}")
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())
