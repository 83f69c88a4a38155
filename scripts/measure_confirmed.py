"""Confirmed depictions (issue 17, item 3): does one confirmed redraw help find the next?

On a labelled set (`../shared/eval/redrawn` by default), through the `mamori` command line as a
user runs it:
    1. `index build --manifest SET/manifest.csv --background SET/background` (as
       `../shared/eval/evaluate.py` builds it) and `scan SET/videos` (the "before" results);
    2. per round, a copy of the index; for every indexed character with a positive clip, the
       "reviewer" confirms one of its clips with an `infringing` decision that marks where the
       character is (decisions file, docs/cli.md): when the clip's result lists a segment (of any
       character) whose peak lies inside the labelled segment, the box of the strongest such segment
       at its peak time (what the review report shows the reviewer); otherwise the middle of the
       labelled segment and the whole frame (no box). With `--marks drawn`, a box round the
       character instead, as a reviewer would draw it (simulated: `drawn`);
    3. `review apply` the decisions, then `scan` again the clips that were NOT confirmed (the
       remaining positives and every negative), and compare them before and after.

Round 1 confirms each character's first positive clip (by name); round 2 the second one for
characters with two or more (characters with one clip confirm that clip again, so both rounds add
a reference for every character). Only clips of characters with 2+ positives remain as positives to
judge; the set's negatives are judged in both rounds.

Figures per round, before and after, on the judged clips: flag recall (flagged, and flagged with
the labelled character on top), flag FPR (negatives flagged), review-or-flag recall and FPR, AP over
the video scores (evaluate.py's definition: ties broken against the positives) and character
accuracy (flagged positives with the right character on top). Prints a summary and, last, one JSON line.

    python scripts/measure_confirmed.py [../shared/eval/redrawn] [--work DIR [--reuse]] [--marks drawn]
        [--backbone effnet-lite0-imagenet]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from detector.runs.evaluate import average_precision  # the definition of ../shared/eval/evaluate.py

_SCRIPT = Path(sys.executable).with_name("mamori")
MAMORI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "detector.cli"]
METRICS = ("ap", "flag_recall", "flag_recall_right", "flag_fpr", "review_recall", "review_recall_right",
           "review_fpr", "char_acc")


def run(*args: object) -> subprocess.CompletedProcess[str]:
    """`mamori ARGS` (exit 1, "something flagged" or "a decision skipped", is fine)."""
    proc = subprocess.run([*MAMORI, *map(str, args)], check=False, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode not in (0, 1):
        sys.exit(f"mamori {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def results(path: Path) -> dict[str, dict[str, Any]]:
    """The scan's result lines by clip name (stem)."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {Path(r["path"]).stem: r for r in lines}


def _top(rec: dict[str, Any]) -> str | None:
    chars = rec.get("characters") or []
    return max(chars, key=lambda c: c.get("score", 0.0))["character"] if chars else None


def figures(recs: dict[str, dict[str, Any]], labels: dict[str, dict[str, Any]], clips: list[str]) -> dict[str, Any]:
    """The figures of the module docstring over `clips`, plus the counts behind them."""
    pos = [c for c in clips if labels[c]["positive"]]
    neg = [c for c in clips if not labels[c]["positive"]]
    verdict = {c: recs[c].get("verdict") for c in clips}
    right = {c: _top(recs[c]) == labels[c]["character"] for c in pos}
    flagged = [c for c in pos if verdict[c] == "flag"]
    seen = [c for c in pos if verdict[c] in ("flag", "review")]
    n_pos, n_neg = max(1, len(pos)), max(1, len(neg))
    out = {
        "ap": average_precision([(float(recs[c].get("score") or 0.0), c in pos) for c in clips]),
        "flag_recall": len(flagged) / n_pos,
        "flag_recall_right": sum(right[c] for c in flagged) / n_pos,
        "flag_fpr": sum(verdict[c] == "flag" for c in neg) / n_neg,
        "review_recall": len(seen) / n_pos,
        "review_recall_right": sum(right[c] for c in seen) / n_pos,
        "review_fpr": sum(verdict[c] in ("flag", "review") for c in neg) / n_neg,
        "char_acc": sum(right[c] for c in flagged) / len(flagged) if flagged else float("nan"),
    }
    out["counts"] = {"positives": len(pos), "negatives": len(neg), "flagged": len(flagged),
                     "flagged_right": sum(right[c] for c in flagged), "seen": len(seen),
                     "seen_right": sum(right[c] for c in seen),
                     "negatives_flagged": sum(verdict[c] == "flag" for c in neg),
                     "negatives_seen": sum(verdict[c] in ("flag", "review") for c in neg)}
    out["per_clip"] = {c: [verdict[c], round(float(recs[c].get("score") or 0.0), 3), _top(recs[c])] for c in clips}
    return out


def pick(labels: dict[str, dict[str, Any]], indexed: set[str], round_: int) -> dict[str, str]:
    """The clip confirmed per character: its first positive clip (round 1), its second (round 2;
    the only one for a character with one)."""
    by_char: dict[str, list[str]] = {}
    for clip in sorted(labels):
        lab = labels[clip]
        if lab["positive"] and lab["character"] in indexed:
            by_char.setdefault(lab["character"], []).append(clip)
    return {char: clips[min(round_ - 1, len(clips) - 1)] for char, clips in sorted(by_char.items())}


def mark(rec: dict[str, Any], segment: list[float]) -> dict[str, Any]:
    """Where the reviewer marks the character: the strongest listed segment whose peak lies in the
    labelled `segment` (its peak time and box), else the middle of `segment`, whole frame."""
    start, end = segment
    inside = [s for c in rec.get("characters") or [] for s in c.get("segments") or []
              if start <= s["peak_time"] <= end]
    if not inside:
        return {"time": round((start + end) / 2, 3)}
    best = max(inside, key=lambda s: s["peak_score"])
    return {"time": best["peak_time"], "box": [int(v) for v in best["box"]]}


def drawn(path: Path, segment: list[float]) -> dict[str, Any]:
    """`--marks drawn`: the box a reviewer would draw round the character, simulated: the pixels
    that differ (> 40 of 255) between the frame nearest the middle of the labelled `segment` and the
    nearest frame without the character (the set's scenes are still), their 0.5-99.5 percentile
    extent; the whole frame when that finds nothing."""
    import numpy as np

    from detector.media.frames import MediaReader

    start, end = segment
    frames = {f.time: f for f in MediaReader(path, fps=4.0)}
    mid = min(frames, key=lambda t: abs(t - (start + end) / 2))
    outside = [t for t in frames if t < start - 0.25 or t > end + 0.25]
    if not outside:
        return {"time": round(mid, 3)}
    empty = frames[min(outside, key=lambda t: abs(t - mid))]
    a, b = (np.asarray(f.image.convert("RGB"), np.int16) for f in (frames[mid], empty))
    ys, xs = np.nonzero(np.abs(a - b).max(axis=2) > 40)
    if len(xs) < 0.001 * a.shape[0] * a.shape[1]:
        return {"time": round(mid, 3)}
    x0, x1 = np.percentile(xs, [0.5, 99.5])
    y0, y1 = np.percentile(ys, [0.5, 99.5])
    scale = frames[mid].scale
    return {"time": round(mid, 3), "box": [int(x0 * scale), int(y0 * scale), int(x1 * scale) + 1, int(y1 * scale) + 1]}


def confirm(set_dir: Path, before: dict[str, dict[str, Any]], chosen: dict[str, str], index: Path,
            work: Path, marks: str) -> dict[str, Any]:
    """Step 2-3's first half: write the decisions and `review apply` them to `index`."""
    labels = json.loads((set_dir / "labels.json").read_text())
    lines, kinds = [], {"box": 0, "frame": 0}
    for char, clip in chosen.items():
        path = set_dir / "videos" / f"{clip}.mp4"
        segment = labels[clip]["segment"]
        where = drawn(path, segment) if marks == "drawn" else mark(before[clip], segment)
        kinds["box" if "box" in where else "frame"] += 1
        lines.append({"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                      "character": char, "decision": "infringing", "reviewer": "measure_confirmed",
                      "note": f"confirmed {clip}", **where})
    decisions = work / "decisions.jsonl"
    decisions.write_text("".join(json.dumps(d) + "\n" for d in lines))
    proc = run("review", "apply", decisions, "--index", index)
    summary = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    info = json.loads(run("index", "info", index, "--json").stdout)
    confirmed_dir = str((index / "confirmed").absolute())
    quarantined = sum(q.get("source_path", "").startswith(confirmed_dir) for q in info.get("quarantined") or [])
    added = sum(int(c.get("from_review") or 0) for c in info["characters"].values())
    return {"marks": kinds, "apply": summary, "references_added": added, "quarantined": quarantined,
            "skipped": [ln for ln in proc.stderr.splitlines() if ln.startswith("skipped")]}


def one_round(set_dir: Path, labels: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]],
              index: Path, work: Path, round_: int, marks: str) -> dict[str, Any]:
    """Steps 2-3 for one round, in `work/round-N`: its figures before and after."""
    indexed = set(json.loads(run("index", "info", index, "--json").stdout)["characters"])
    chosen = pick(labels, indexed, round_)
    rdir = work / f"{marks}-round-{round_}"
    shutil.rmtree(rdir, ignore_errors=True)
    rdir.mkdir(parents=True)
    shutil.copytree(index, rdir / "index")
    applied = confirm(set_dir, before, chosen, rdir / "index", rdir, marks)
    judged = sorted(c for c in labels if c not in set(chosen.values()))
    after = rdir / "after.jsonl"
    run("scan", *(set_dir / "videos" / f"{c}.mp4" for c in judged), "--index", rdir / "index", "--out", after)
    return {"confirmed": chosen, **applied, "judged": len(judged),
            "before": figures(before, labels, judged), "after": figures(results(after), labels, judged)}


def _row(name: str, fig: dict[str, Any]) -> str:
    return f"  {name:7} " + " ".join(f"{k}={fig[k]:.3f}" for k in METRICS)


def summary(rounds: list[dict[str, Any]], mean: dict[str, dict[str, float]]) -> str:
    """The human-readable report."""
    out = []
    for i, r in enumerate(rounds, 1):
        cb, ca = r["before"]["counts"], r["after"]["counts"]
        head = (f"round {i}: {len(r['confirmed'])} clips confirmed ({r['marks']['box']} marks with a box, "
                f"{r['marks']['frame']} whole frame); {r['references_added']} reference(s) added, "
                f"{r['quarantined']} quarantined; judged {r['judged']} clips "
                f"({cb['positives']} positives, {cb['negatives']} negatives)")
        counts = (f"  flagged positives (right character) {cb['flagged']} ({cb['flagged_right']}) -> "
                  f"{ca['flagged']} ({ca['flagged_right']}); negatives flagged {cb['negatives_flagged']} -> "
                  f"{ca['negatives_flagged']}, at review or flag {cb['negatives_seen']} -> {ca['negatives_seen']}")
        out += [head, _row("before", r["before"]), _row("after", r["after"]), counts]
        out += [f"  {c}: {r['before']['per_clip'][c]} -> {r['after']['per_clip'][c]}" for c in r["before"]["per_clip"]
                if r["before"]["per_clip"][c][::2] != r["after"]["per_clip"][c][::2]]
        out += [f"  {s}" for s in r["skipped"]]
    out += ["mean of the rounds:", _row("before", mean["before"]), _row("after", mean["after"])]
    return "\n".join(out)


def _no_nan(obj: Any) -> Any:
    """`obj` with every NaN (a figure of no clip: char_acc with nothing flagged) as null, valid JSON."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return None if isinstance(obj, float) and math.isnan(obj) else obj


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("set", type=Path, nargs="?", default=ROOT.parent / "shared" / "eval" / "redrawn")
    ap.add_argument("--work", type=Path, help="keep the indexes, decisions and results here (default: a temp folder)")
    ap.add_argument("--backbone", default="effnet-lite0-imagenet")
    ap.add_argument("--marks", choices=("result", "drawn"), default="result",
                    help="where the reviewer marks the character: the result's box or the whole frame (default), "
                    "or a box drawn round it (simulated from the still scene)")
    ap.add_argument("--reuse", action="store_true", help="reuse --work's index and before.jsonl of an earlier run")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="mamori-confirmed-"))
    work.mkdir(parents=True, exist_ok=True)
    labels = json.loads((a.set / "labels.json").read_text())
    index, before = work / "index", work / "before.jsonl"
    if not (a.reuse and index.exists() and before.exists()):
        shutil.rmtree(index, ignore_errors=True)
        before.unlink(missing_ok=True)
        run("index", "build", "--manifest", a.set / "manifest.csv", "--background", a.set / "background",
            "--out", index, "--backbone", a.backbone)
        run("scan", a.set / "videos", "--index", index, "--out", before)
    recs = results(before)
    rounds = [one_round(a.set, labels, recs, index, work, r, a.marks) for r in (1, 2)]
    mean = {when: {k: sum(r[when][k] for r in rounds) / len(rounds) for k in METRICS} for when in ("before", "after")}
    print(summary(rounds, mean))
    per_char: dict[str, int] = {}
    for lab in labels.values():
        if lab["positive"]:
            per_char[lab["character"]] = per_char.get(lab["character"], 0) + 1
    two = sum(n >= 2 for n in per_char.values())
    print(f"{two} characters have 2+ positive clips ({sum(n for n in per_char.values() if n >= 2)} clips): only "
          f"their unconfirmed clips ({rounds[0]['before']['counts']['positives']} per round) can show a recall change")
    out = {"set": a.set.name, "backbone": a.backbone, "marks": a.marks, "characters_with_2plus_positives": two,
           "rounds": [{k: v for k, v in r.items() if k != "skipped"} for r in rounds], "mean": mean}
    print(json.dumps(_no_nan(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
