"""Choose the scoring constants of issue 27 (points 4 and 5) by cross-validation split by character.

The constants: `detector.match.scoring.REGION_IOU` (one region explains one character: a character's
frame hit is dropped where its region overlaps, at this IoU or more, the region of a stronger
character) and `detector.match.verify.LOW_INLIERS` (below MIN_INLIERS the verification boost fades
linearly to the unverified penalty at this many inliers, so the score is continuous in the
inlier count).

    python scripts/cv_scoring.py extract ../shared/eval/dev=DEV_INDEX --cache /tmp/dev.pkl
    python scripts/cv_scoring.py report ../shared/eval/dev=/tmp/dev.pkl ../shared/eval/redrawn=/tmp/red.pkl

`extract` scores every clip of a set exactly as `mamori scan` does (`Detector.score_video`, default
options) and keeps each clip's per-frame evidence (after geometric verification), so `report`
re-aggregates it under each setting without embedding again. `report` prints, per set, the figures
of a grid of settings (in-sample), then the out-of-fold figures: characters dealt into K folds by
a hash of their name (`scripts/cv_review.py`'s folds: a negative goes with the character it scores
highest for); each fold is scored with the setting that is best on the other folds (highest flag
recall minus flag FPR, then character accuracy, then fewer negatives at review, then fewer wrong
characters listed, then higher AP; ties go to the setting listed first).
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cv_review import _fold

#: the grid: REGION_IOU (point 4 is not optional: the old rule, every hit kept, is the `as
#: extracted` row when extracted with the old code), LOW_INLIERS (the count where the
#: verification boost has faded to the unverified penalty), VERIFY_FRAMES (the frames whose
#: inlier counts are averaged: 1 lets one strongly verified frame decide)
IOUS = (0.7, 0.5, 0.3)
LOWS = (0.0, 5.0, 7.5, 10.0, 12.5)
FRAMES = (2, 1)


def extract(set_dir: Path, index: Path, cache: Path) -> None:
    from detector import Detector, api
    from detector.match import verify

    det = Detector.open(index)
    # frame scores as the old rule left them (no boost below MIN_INLIERS): `results` applies the
    # frame-level ramp of each setting to the recorded inlier counts
    verify.LOW_INLIERS = verify.MIN_INLIERS
    seen: dict[str, Any] = {}
    real = api.aggregate

    before: dict[str, Any] = {}

    def keep(store: Any, path: str, evidence: Any, **kw: Any) -> Any:
        seen[Path(path).stem] = (list(evidence), kw["kind"], kw["duration"])
        result = real(store, path, evidence, **kw)
        before[Path(path).stem] = result.to_dict()
        return result

    api.aggregate = keep  # type: ignore[assignment]
    try:
        for path in sorted((set_dir / "videos").iterdir()):
            det.score_file(path)
            print(f"  {path.stem}", flush=True)
    finally:
        api.aggregate = real  # type: ignore[assignment]
    # `results`: what the code that ran (e.g. PYTHONPATH=main) gave, as `mamori scan` writes it
    cache.write_bytes(pickle.dumps({"index": str(index), "clips": seen, "results": before}))


@contextlib.contextmanager
def setting(iou: float, low: float, frames: int) -> Iterator[None]:
    from detector.match import scoring, verify

    saved = scoring.REGION_IOU, verify.LOW_INLIERS, scoring.VERIFY_FRAMES
    scoring.REGION_IOU, verify.LOW_INLIERS, scoring.VERIFY_FRAMES = iou, low, frames
    try:
        yield
    finally:
        scoring.REGION_IOU, verify.LOW_INLIERS, scoring.VERIFY_FRAMES = saved


def ramped(ev: Any) -> Any:
    """A frame's evidence as `verify_frame` gives it under the current LOW_INLIERS (`extract` kept
    checked hits below MIN_INLIERS at their unverified score)."""
    from dataclasses import replace

    from detector.match.verify import MIN_INLIERS, verified_score

    return replace(ev, hits={c: h if h.inliers is None or h.inliers >= MIN_INLIERS
                             else replace(h, score=verified_score(h.score, h.inliers)) for c, h in ev.hits.items()})


def results(store: Any, clips: dict[str, Any], iou: float, low: float, frames: int) -> dict[str, dict[str, Any]]:
    from detector.match.scoring import aggregate

    with setting(iou, low, frames):
        return {vid: aggregate(store, vid, [ramped(e) for e in ev], kind=kind, duration=dur).to_dict()
                for vid, (ev, kind, dur) in clips.items()}


def figures(res: dict[str, dict[str, Any]], labels: dict[str, Any], flag: float, review: float) -> dict[str, float]:
    from detector.runs.evaluate import average_precision

    pos = [v for v in res if labels[v].positive]
    neg = [v for v in res if not labels[v].positive]
    flagged = [v for v in pos if res[v]["verdict"] == "flag"]
    right = sum(bool(res[v]["characters"]) and res[v]["characters"][0]["character"] == labels[v].character
                for v in flagged)
    return {"AP": average_precision([(res[v]["score"], labels[v].positive) for v in res]),
            "recall": len(flagged) / max(1, len(pos)),
            "fpr": sum(res[v]["verdict"] == "flag" for v in neg) / max(1, len(neg)),
            "char_acc": right / max(1, len(flagged)), "n_flagged_pos": len(flagged), "right": right,
            "review_load": sum(res[v]["score"] >= review for v in neg) / max(1, len(neg)),
            "n_review": sum(res[v]["score"] >= review for v in neg), "n_neg": len(neg), "n_pos": len(pos),
            "n_fp": sum(res[v]["verdict"] == "flag" for v in neg),
            "shared": sum(shared_box(res[v]) for v in res), "names": sum(len(res[v]["characters"]) for v in res),
            "wrong": sum(c["character"] != labels[v].character for v in res for c in res[v]["characters"])}


def shared_box(rec: dict[str, Any]) -> bool:
    """Whether the result draws one box (a segment's peak region) for two characters."""
    owner: dict[tuple[int, ...], str] = {}
    for c in rec["characters"]:
        for s in c["segments"]:
            if owner.setdefault(tuple(s["box"]), c["character"]) != c["character"]:
                return True
    return False


def row(name: str, f: dict[str, float]) -> str:
    return (f"| {name} | {f['AP']:.3f} | {f['recall']:.3f} ({f['n_flagged_pos']}/{f['n_pos']}) | "
            f"{f['fpr']:.3f} ({f['n_fp']}/{f['n_neg']}) | {f['char_acc']:.3f} ({f['right']}/{f['n_flagged_pos']}) | "
            f"{f['review_load']:.3f} ({f['n_review']}/{f['n_neg']}) | {f['shared']} | {f['wrong']}/{f['names']} |")


def objective(f: dict[str, float]) -> tuple[float, ...]:
    return (f["recall"] - f["fpr"], f["char_acc"], -f["review_load"], -f["wrong"], f["AP"])


def changes(name: str, old: dict[str, Any], new: dict[str, Any], labels: dict[str, Any]) -> None:
    """Print the clips whose verdict or top character changed."""
    for vid in sorted(labels):
        o, n = old[vid], new[vid]
        top = [r["characters"][0]["character"] if r["characters"] else None for r in (o, n)]
        if (o["verdict"], top[0]) != (n["verdict"], top[1]):
            truth = labels[vid].character if labels[vid].positive else "negative"
            print(f"  {name}/{vid} ({truth}): {o['verdict']} {o['score']:.3f} {top[0]} -> "
                  f"{n['verdict']} {n['score']:.3f} {top[1]}")


def report(specs: list[str], folds: int) -> None:
    from detector.runs.evaluate import read_labels
    from index.store import IndexStore

    grid = [(i, lo, fr) for fr in FRAMES for i in IOUS for lo in LOWS]
    sets = []
    print("| set | REGION_IOU, LOW_INLIERS, VERIFY_FRAMES | AP | flag recall | flag FPR | char acc | review load | "
          "results drawing one box for two names | wrong / all characters listed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in specs:
        set_dir, cache = (Path(p) for p in spec.split("=", 1))
        data = pickle.loads(cache.read_bytes())
        store = IndexStore.open(data["index"])
        labels = read_labels(set_dir / "labels.json")
        per = {g: results(store, data["clips"], *g) for g in grid}
        sets.append((set_dir.name, store, labels, per, data["results"]))
        print(row(f"{set_dir.name} | as extracted", figures(data["results"], labels, store.flag_score,
                                                           store.review_score)))
        for g, res in per.items():
            print(row(f"{set_dir.name} | {g[0]}, {g[1]}, {g[2]}", figures(res, labels, store.flag_score,
                                                                          store.review_score)))
    # out of fold: folds by character over all sets pooled, keyed as scripts/cv_review.py keys them
    keys: dict[tuple[str, str], int] = {}
    for name, _, labels, _, old in sets:
        for vid, lab in labels.items():
            chars = old[vid]["characters"]
            key = lab.character if lab.positive else (chars[0]["character"] if chars else vid)
            keys[name, vid] = _fold(f"{name}/{key}", folds)
    chosen = {}
    for f in [*range(folds), -1]:  # -1: no fold held out (the default to ship)
        def train(g: tuple[float, float, int], f: int = f) -> tuple[float, ...]:
            res = {(n, v): r for n, _, _, per, _ in sets for v, r in per[g].items() if keys[n, v] != f}
            lab = {(n, v): labs[v] for n, _, labs, _, _ in sets for v in labs if keys[n, v] != f}
            st = sets[0][1]
            return objective(figures(res, lab, st.flag_score, st.review_score))
        chosen[f] = max(grid, key=lambda g: (train(g), -grid.index(g)))
    everything = chosen.pop(-1)
    print("\nsetting chosen per held-out fold (on the other folds):", chosen, "| on all clips:", everything)
    for name, store, labels, per, old in sets:
        oof = {v: per[chosen[keys[name, v]]][v] for v in labels}
        print(row(f"{name} | out of fold", figures(oof, labels, store.flag_score, store.review_score)))
        print(row(f"{name} | {everything} (in-sample)", figures(per[everything], labels, store.flag_score,
                                                                 store.review_score)))
        print("verdicts changed (as extracted -> out of fold):")
        changes(name, old, oof, labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("extract")
    ex.add_argument("set", help="SET_DIR=INDEX_DIR")
    ex.add_argument("--cache", type=Path, required=True)
    rp = sub.add_parser("report")
    rp.add_argument("sets", nargs="+", help="SET_DIR=CACHE")
    rp.add_argument("--folds", type=int, default=2)
    a = ap.parse_args()
    if a.cmd == "extract":
        set_dir, index = (Path(p) for p in a.set.split("=", 1))
        extract(set_dir, index, a.cache)
    else:
        report(a.sets, a.folds)


if __name__ == "__main__":
    main()
