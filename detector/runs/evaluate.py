"""`mamori evaluate`: measure an index on the user's own labelled videos and suggest thresholds.

Labels file (the format of the shipped evaluation sets), JSON object keyed by video id, the file
name without its suffix:

    {"clip-001": {"positive": true, "character": "akane", "segment": [1.0, 3.5], "track": "nearcopy"},
     "clip-002": {"positive": false, "character": null, "segment": null, "track": "negative"}}

`track` is optional (it groups the table). Metrics, all over the labelled videos:

- AP: average precision of the video `score` ranking (ties broken against the positives).
- recall / FPR: share of positives / negatives with verdict `flag` at the index's thresholds.
- character accuracy: of the flagged positives, the share whose top character is the labelled one.
- segment IoU: for those, the overlap (intersection over union, in seconds) of the labelled
  character's best segment with the labelled segment; a segment is "right" at IoU >= 0.5.
  A sampled segment spans first to last supporting frame, widened by half a sampling step each side.
- suggested thresholds: the lowest calibrated score whose false-positive rate on these negatives
  is at most the target (flag) and at most the review target (review), with the recall there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.errors import ConfigError

__all__ = ["Label", "Report", "average_precision", "evaluate", "read_labels", "threshold_for_fpr"]


@dataclass(frozen=True)
class Label:
    positive: bool
    character: str | None = None
    segment: tuple[float, float] | None = None
    track: str = ""


def read_labels(path: str | Path) -> dict[str, Label]:
    """Read and check a labels file; raises ConfigError naming the bad entry."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such labels file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable JSON labels file ({exc})") from exc
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a non-empty JSON object of video id -> label")
    out = {}
    for vid, lab in raw.items():
        if not isinstance(lab, dict) or not isinstance(lab.get("positive"), bool):
            raise ConfigError(f"{path}: label of {vid!r} needs a boolean 'positive'")
        char = lab.get("character")
        if lab["positive"] and not isinstance(char, str):
            raise ConfigError(f"{path}: positive label {vid!r} needs a 'character'")
        seg = lab.get("segment")
        if seg is not None:
            if not (isinstance(seg, list) and len(seg) == 2 and all(isinstance(x, (int, float)) for x in seg)
                    and seg[0] <= seg[1]):
                raise ConfigError(f"{path}: segment of {vid!r} must be [start, end] in seconds")
            seg = (float(seg[0]), float(seg[1]))
        track = lab.get("track") or ("positive" if lab["positive"] else "negative")
        out[str(vid)] = Label(lab["positive"], char, seg, str(track))
    return out


def average_precision(scored: Iterable[tuple[float, bool]]) -> float:
    """AP of a ranking by score; ties are broken against the positives (pessimistic).

    >>> average_precision([(0.9, True), (0.8, False), (0.7, True)])
    0.8333333333333333
    """
    ranked = sorted(scored, key=lambda t: (-t[0], t[1]))
    n_pos = sum(p for _, p in ranked)
    if not n_pos:
        return float("nan")
    hits, ap = 0, 0.0
    for k, (_, p) in enumerate(ranked, 1):
        if p:
            hits += 1
            ap += hits / k
    return ap / n_pos


def threshold_for_fpr(negative_scores: list[float], target: float) -> float:
    """Lowest threshold t (flag when score >= t) with FPR <= target on these negatives.

    t sits just above the highest negative score that must not be flagged.

    >>> threshold_for_fpr([0.1, 0.2, 0.9, 0.3], 0.25)   # one of four may pass
    0.3001
    """
    if not negative_scores:
        return 0.0
    allowed = math.floor(target * len(negative_scores) + 1e-9)
    ranked = sorted(negative_scores, reverse=True)
    if allowed >= len(ranked):
        return 0.0
    return min(1.0, round(ranked[allowed] + 1e-4, 4))


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else float(a == b)


@dataclass
class Report:
    n_positive: int
    n_negative: int
    ap: float
    recall: float
    fpr: float
    char_acc: float
    segment_iou: float
    segment_acc: float
    flag_score: float
    review_score: float
    target_fpr: float
    suggested_flag: float
    recall_at_suggested: float
    fpr_at_suggested: float
    suggested_review: float
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tracks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: floats rounded, undefined metrics (no positives, nothing flagged) as None."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else round(v, 4) if isinstance(v, float) else v)
                for k, v in self.__dict__.items()}

    def lines(self) -> list[str]:
        out = [f"{'track':12} {'videos':>6} {'flagged':>7} {'review':>6} {'median score':>12}"]
        for name, t in sorted(self.tracks.items()):
            out.append(f"{name:12} {t['n']:6d} {t['flag']:7d} {t['review']:6d} {t['median_score']:12.3f}")
        out += [
            (f"videos: {self.n_positive} positive, {self.n_negative} negative; "
             f"{len(self.missing)} without a result, {len(self.errors)} unreadable"),
            f"at the index's thresholds (flag >= {self.flag_score:.3f}, review >= {self.review_score:.3f}):",
            (f"  AP={self.ap:.3f} recall={self.recall:.3f} FPR={self.fpr:.3f} "
             f"character_accuracy={self.char_acc:.3f} segment_IoU={self.segment_iou:.3f} "
             f"segment_accuracy={self.segment_acc:.3f}"),
            (f"suggested for FPR <= {self.target_fpr:g}: flag >= {self.suggested_flag:.4f} "
             f"(recall {self.recall_at_suggested:.3f}, FPR {self.fpr_at_suggested:.3f}), "
             f"review >= {self.suggested_review:.4f}"),
        ]
        return out


def _check_flag(rec: Mapping[str, Any], lab: Label, sample_step: float) -> tuple[bool, float | None]:
    """A flagged positive: is its top character the labelled one, and if so (and the label has a
    segment) the best IoU of that character's segments with it, each widened by half a step."""
    chars = rec.get("characters") or []
    top = max(chars, key=lambda c: c.get("score", 0.0)) if chars else {}
    if top.get("character") != lab.character:
        return False, None
    if lab.segment is None:
        return True, None
    best = 0.0
    for s in top.get("segments", []):
        pred = (max(0.0, s["start"] - sample_step / 2), s["end"] + sample_step / 2)
        best = max(best, _iou(pred, lab.segment))
    return True, best


def evaluate(results: Mapping[str, Mapping[str, Any]], labels: Mapping[str, Label], *, flag_score: float,
             review_score: float, target_fpr: float = 0.05, review_fpr: float = 0.2,
             sample_step: float = 0.5) -> Report:
    """Score result dicts (keyed by video id, as `Result.to_dict()`) against labels."""
    if not 0 <= target_fpr < 1 or not 0 <= review_fpr < 1:
        raise ConfigError("target false-positive rates must be in [0, 1)")
    scored: list[tuple[float, bool]] = []
    tracks: dict[str, dict[str, Any]] = {}
    pos_scores: list[float] = []
    neg_scores: list[float] = []
    flagged_pos = flagged_neg = char_ok = seg_n = seg_ok = 0
    ious: list[float] = []
    missing, errors = [], []
    for vid, lab in sorted(labels.items()):
        rec = results.get(vid)
        if rec is None:
            missing.append(vid)
            rec = {}
        elif rec.get("verdict") == "error":
            errors.append(vid)
        score = float(rec.get("score") or 0.0)
        verdict = rec.get("verdict", "pass")
        scored.append((score, lab.positive))
        (pos_scores if lab.positive else neg_scores).append(score)
        t = tracks.setdefault(lab.track, {"n": 0, "flag": 0, "review": 0, "scores": []})
        t["n"] += 1
        t["flag"] += verdict == "flag"
        t["review"] += verdict == "review"
        t["scores"].append(score)
        if verdict != "flag":
            continue
        if not lab.positive:
            flagged_neg += 1
            continue
        flagged_pos += 1
        right, iou = _check_flag(rec, lab, sample_step)
        char_ok += right
        if iou is not None:
            seg_n += 1
            ious.append(iou)
            seg_ok += iou >= 0.5
    for t in tracks.values():
        s = sorted(t.pop("scores"))
        t["median_score"] = s[len(s) // 2] if s else 0.0
    n_pos, n_neg = len(pos_scores), len(neg_scores)
    suggested = threshold_for_fpr(neg_scores, target_fpr)
    return Report(
        n_positive=n_pos, n_negative=n_neg, ap=average_precision(scored),
        recall=flagged_pos / n_pos if n_pos else float("nan"),
        fpr=flagged_neg / n_neg if n_neg else float("nan"),
        char_acc=char_ok / flagged_pos if flagged_pos else float("nan"),
        segment_iou=sum(ious) / len(ious) if ious else float("nan"),
        segment_acc=seg_ok / seg_n if seg_n else float("nan"),
        flag_score=flag_score, review_score=review_score, target_fpr=target_fpr,
        suggested_flag=suggested,
        recall_at_suggested=sum(s >= suggested for s in pos_scores) / n_pos if n_pos else float("nan"),
        fpr_at_suggested=sum(s >= suggested for s in neg_scores) / n_neg if n_neg else float("nan"),
        suggested_review=min(suggested, threshold_for_fpr(neg_scores, review_fpr)),
        missing=missing, errors=errors, tracks=tracks,
    )
