"""Ablation of the scoring rules on labelled sets (issue 15, items 2 and 6): does each rule help on
copies *and* on redraws?

Each clip is decoded and embedded once; every sampled frame keeps its evidence before and after
geometric verification (`detector.match.evidence.frame_evidence`, `detector.match.verify.verify_frame`), and the
video result is then re-aggregated (`detector.match.scoring.aggregate`) under each variant:

    full                 today's rules
    no-verify            embedding (and near-copy) evidence only
    no-penalty           verification kept, but a checked and never verified character is not
                         moved down (UNVERIFIED_PENALTY = 0)
    support-1            a video's score from its single best frame (SUPPORT_FRAMES = 1)
    per-char-threshold   each character's own background maximum + margin as its threshold, instead
                         of the highest over all characters (the shared max-based threshold)

    python scripts/ablate_rules.py ../shared/eval/dev=DEV_INDEX ../shared/eval/redrawn=RED_INDEX

SET=INDEX: a labelled set and an index built from its references and background (the one
`evaluate.py SET --keep DIR` leaves in DIR/index). Prints AP, flag recall, flag FPR, character
accuracy and negatives at review or above, per set and variant (in-sample: no constant is fitted
here; the variants are the rules' on/off states).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

VARIANTS = ("full", "no-verify", "no-penalty", "support-1", "per-char-threshold")


def evidence(set_dir: Path, index: Path, limit: int | None = None) -> tuple[Any, dict[str, tuple[list[Any], list[Any], float | None]]]:
    """Per clip: (evidence before verification, after, duration), sampled at 2 fps."""
    from detector import Detector
    from detector.match.evidence import frame_evidence
    from detector.match.verify import verify_frame
    from detector.media.frames import MediaReader
    from index.nearcopy import region_hashes

    det = Detector.open(index)
    out = {}
    for path in sorted((set_dir / "videos").iterdir())[:limit]:
        raw, verified = [], []
        reader = MediaReader(path, fps=det.fps, max_frames=det.max_frames, max_pixels=det.max_pixels)
        for fr in reader:
            pixels, boxes = det.embedder.prepare_frame(fr.image)
            hashes = region_hashes(fr.image, boxes) if det.nearcopy else None
            ev = frame_evidence(det.store, fr.time, det.embed_pixels(pixels), boxes, hashes)
            raw.append(ev)
            verified.append(verify_frame(det.store, fr.image, ev))
        out[path.stem] = (raw, verified, reader.duration)
        print(f"  {path.stem}: {len(raw)} frames", flush=True)
    return det.store, out


@contextlib.contextmanager
def variant(name: str, store: Any) -> Iterator[None]:
    """Patch the rule `name` turns off, and restore it."""
    from detector.match import scoring
    from index.tuning import tuning_for

    saved = (scoring.UNVERIFIED_PENALTY, scoring.SUPPORT_FRAMES, dict(store.data.characters))
    if name == "no-penalty":
        scoring.UNVERIFIED_PENALTY = 0.0
    elif name == "support-1":
        scoring.SUPPORT_FRAMES = 1
    elif name == "per-char-threshold":
        # a character without background statistics (defaults) keeps the shared threshold
        margin = tuning_for(str(store.backbone["name"])).margin
        store.data.characters = {c: i if i.bg_max is None else dataclasses.replace(i, flag_sim=i.bg_max + margin)
                                 for c, i in store.data.characters.items()}
    try:
        yield
    finally:
        scoring.UNVERIFIED_PENALTY, scoring.SUPPORT_FRAMES, store.data.characters = saved


def main() -> None:
    from detector.match.scoring import aggregate
    from detector.runs.evaluate import evaluate, read_labels
    from index.calibrate import SCORE_REVIEW

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", help="SET_DIR=INDEX_DIR")
    ap.add_argument("--review", type=float, default=None,
                    help="review threshold for the verdicts (in memory; default: today's SCORE_REVIEW, whatever "
                         "the index stored when it was built)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N clips of each set (a smoke run)")
    args = ap.parse_args()
    rows = []
    for spec in args.sets:
        set_dir, index = (Path(p) for p in spec.split("=", 1))
        print(f"{set_dir.name}: embedding every clip once", flush=True)
        store, clips = evidence(set_dir, index, args.limit)
        store.data.thresholds["score_review"] = SCORE_REVIEW if args.review is None else args.review
        labels = {v: lab for v, lab in read_labels(set_dir / "labels.json").items() if v in clips}
        for name in VARIANTS:
            with variant(name, store):
                results = {vid: aggregate(store, vid, raw if name == "no-verify" else ver, kind="video",
                                          duration=dur).to_dict() for vid, (raw, ver, dur) in clips.items()}
            r = evaluate(results, labels, flag_score=store.flag_score, review_score=store.review_score)
            review = sum(results[v]["verdict"] in ("flag", "review") for v, lab in labels.items() if not lab.positive)
            rows.append(f"| {set_dir.name} | {name} | {r.ap:.3f} | {r.recall:.3f} | {r.fpr:.3f} | {r.char_acc:.3f} | "
                        f"{review}/{r.n_negative} |")
            print(rows[-1], flush=True)
    print("| set | variant | AP | flag recall | flag FPR | char acc | negatives at review+ |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
