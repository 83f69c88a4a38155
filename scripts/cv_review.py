"""Choose the review threshold by cross-validation split by character, and report out-of-fold figures.

Why: a clean video should rarely need a person (issue 15, item 5: at most 15% of negatives at
`review`), but every positive pushed below `review` passes unseen. The threshold is a global
constant on the calibrated score (`index.calibrate.SCORE_REVIEW`); choosing it on the same clips it
is judged on overstates how well it carries to new data, so it is chosen on half the characters
and judged on the other half.

Input: one or more labelled sets, each as SET_DIR=RESULTS.jsonl (the results of
`evaluate.py SET --keep DIR`, in DIR/results.jsonl). Folds: the characters of each set are dealt
into K folds by a hash of their name; a positive clip goes with its character, a negative clip with
the character it scores highest for (the one it would be confused with; by a hash of its name when
it matches none). For each fold the threshold is the lowest grid value at which at most TARGET of
the *other* folds' negatives reach it, and the held-out fold is scored with it.

    python scripts/cv_review.py ../shared/eval/dev=/tmp/dev/results.jsonl \
        ../shared/eval/redrawn=/tmp/red/results.jsonl --target 0.15

Prints, per set and pooled: negatives at review or above (in-fold threshold), positives at review or
above, and positives lost (at review or above with `--current`, below with the chosen one), and how
many of those showed the right character first (the ones a reviewer could have confirmed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

GRID = np.round(np.arange(0.20, 0.501, 0.01), 2)


def _fold(name: str, k: int) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % k


def load(set_dir: Path, results: Path) -> list[dict[str, Any]]:
    """One row per labelled clip: set, id, positive, score, top character, fold key."""
    labels = json.loads((set_dir / "labels.json").read_text())
    by_id = {}
    for line in results.read_text().splitlines():
        rec = json.loads(line)
        by_id[Path(rec["path"]).stem] = rec
    rows = []
    for vid, lab in sorted(labels.items()):
        rec = by_id.get(vid, {})
        chars = rec.get("characters") or []
        top = chars[0]["character"] if chars else None
        key = lab["character"] if lab["positive"] else (top or vid)
        rows.append({"set": set_dir.name, "id": vid, "positive": bool(lab["positive"]),
                     "score": float(rec.get("score") or 0.0), "key": f"{set_dir.name}/{key}",
                     "right": bool(lab["positive"]) and top == lab["character"]})
    return rows


def choose(negatives: np.ndarray, target: float) -> float:
    """The lowest grid threshold at which at most `target` of `negatives` reach it."""
    for t in GRID:
        if np.mean(negatives >= t) <= target:
            return float(t)
    return float(GRID[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", help="SET_DIR=RESULTS.jsonl")
    ap.add_argument("--target", type=float, default=0.15, help="largest share of negatives at review")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--current", type=float, default=0.2, help="the review threshold the results were made with")
    args = ap.parse_args()
    rows = [r for spec in args.sets for r in load(Path(spec.split("=")[0]), Path(spec.split("=", 1)[1]))]
    for r in rows:
        r["fold"] = _fold(r["key"], args.folds)
    chosen = {}
    for f in range(args.folds):
        train = np.array([r["score"] for r in rows if r["fold"] != f and not r["positive"]])
        chosen[f] = choose(train, args.target)
        for r in rows:
            if r["fold"] == f:
                r["threshold"] = chosen[f]
    print("threshold per held-out fold:", {f: chosen[f] for f in sorted(chosen)},
          "| in-sample on all:", choose(np.array([r["score"] for r in rows if not r["positive"]]), args.target))
    for name in [*sorted({r["set"] for r in rows}), "all"]:
        sel = [r for r in rows if name in ("all", r["set"])]
        neg = [r for r in sel if not r["positive"]]
        pos = [r for r in sel if r["positive"]]
        neg_now = sum(r["score"] >= args.current for r in neg)
        neg_oof = sum(r["score"] >= r["threshold"] for r in neg)
        pos_now = sum(r["score"] >= args.current for r in pos)
        pos_oof = sum(r["score"] >= r["threshold"] for r in pos)
        right = [r for r in pos if r["right"]]
        right_now = sum(r["score"] >= args.current for r in right)
        right_oof = sum(r["score"] >= r["threshold"] for r in right)
        print(f"{name:10} negatives at review+: {neg_now}/{len(neg)} at {args.current} -> {neg_oof}/{len(neg)} "
              f"out-of-fold ({neg_oof / max(len(neg), 1):.2f}); positives at review+: {pos_now} -> {pos_oof} "
              f"of {len(pos)} (lost {pos_now - pos_oof}, of them with the right character on top: "
              f"{right_now - right_oof})")


if __name__ == "__main__":
    main()
