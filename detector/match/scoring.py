"""Scoring: region matches of each sampled frame → per-character evidence → segments → verdict.

Steps:
    1. `detector.match.evidence.frame_evidence`: per frame, each character's best hit over the regions
       (embedding and near-copy channels; see that module).
    1b. `detector.match.verify.verify_frame`: geometric verification of each frame's strongest hits
       (SIFT + RANSAC; a verified frame scores at least 0.5; see that module).
    1c. `exclusive`, one region explains one character: in each frame the hits are taken strongest
       first (verified by geometry or near-copy first, then by frame score) and a hit whose region
       overlaps an already kept hit's region with IoU >= REGION_IOU is dropped, so one window
       that looks like two characters (similarities 0.80 and 0.78) is evidence for the stronger
       one only, and no two names share one box; characters seen in different places of the frame
       keep their own hits.
    2. `aggregate`, temporal evidence: a character's video score is the calibrated score of the
       mean of its SUPPORT_FRAMES best frame-level normalised similarities (one frame for a still
       image), so one frame of embedding similarity is averaged with the next best frame (or
       with MISSING_N); a near-copy hit counts on its own (a PDQ match is near-exact evidence).
       Measured on the dev set: at the calibrated threshold, the false-positive rate fell from
       0.31 (best frame) to 0.19 for the same recall.
       Verification then moves that score: V is the mean inlier count of the character's
       VERIFY_FRAMES best frames (frames not checked count 0), and the score is
       `verified_score(e, V, UNVERIFIED_PENALTY)`, continuous in V: V >= MIN_INLIERS:
       sigmoid(max(logit(e), 0) + log(V / MIN_INLIERS)) (flagged at the default thresholds,
       ranked by how much artwork the frames share with a reference); V <= LOW_INLIERS:
       sigmoid(logit(e) - UNVERIFIED_PENALTY), so embedding evidence alone still flags, but only
       when strong (e >= 0.82 at the defaults); between, linear from the one score to the other
       (one inlier moves it by at most 1 / (MIN_INLIERS - LOW_INLIERS)). Never checked: e unchanged.
       What one frame proves: VERIFY_FRAMES = 1, so a single frame verified with MIN_INLIERS
       inliers flags the video on its own. Decided on evidence (docs/measurements.md): shared
       artwork is not luck; on the dev and redrawn sets no negative clip's candidate reached 7
       inliers in any frame, while copies shown briefly are verified in one frame only (a dev pose
       clip: 107 inliers in one frame, <= 6 in the others; another: 34 in its one checked frame,
       whose character only the best frame names right); cross-validated by character it chose 1
       over 2 (two frames: one frame needed 2 x MIN_INLIERS and named that clip's character wrong).
       Embedding similarity alone keeps its two-frame support (SUPPORT_FRAMES). Why verification
       at all: a generic backbone finds many characters of the same drawing style alike; shared
       artwork is what tells one character from another. Measured on the dev set (effnet,
       `evaluate.py`): AP 0.960 -> 0.984, false-positive rate 0.31 -> 0.00, character accuracy
       0.91 -> 0.97, recall 0.94 -> 0.91; steps 1c and the continuous rule: docs/measurements.md.
    3. A *segment* is a run of sampled frames whose frame score is at least the review threshold,
       allowing GAP_FRAMES unsupported frames inside it; it reports start, end, the peak frame and
       its reference, region box and channel. Verdict: `flag` if the video score >= the index's
       flag threshold, `review` if >= its review threshold, else `pass`. With a match policy
       (`detector.match.policy`), each character is judged by its rule's thresholds and `min_seconds`
       and the video's verdict is the strongest character verdict (the same without a policy).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from detector.match.evidence import TOP_K, CharacterHit, FrameEvidence, frame_evidence, suppressions
from detector.match.policy import decide, levels_for, sampling_step, strongest
from detector.match.results import CharacterResult, Result, Segment
from detector.match.verify import LOW_INLIERS, MIN_INLIERS, VERIFY_TOP, verified_score, verify_frame
from detector.media.regions import Box
from index.calibrate import calibrated_score
from index.store import IndexStore

__all__ = ["GAP_FRAMES", "LOW_INLIERS", "MIN_INLIERS", "REGION_IOU", "SUPPORT_FRAMES", "TIMELINE_POINTS", "TOP_K",
           "UNVERIFIED_PENALTY", "VERIFY_FRAMES", "VERIFY_TOP", "CharacterHit", "FrameEvidence", "aggregate", "character_score", "exclusive",
           "frame_evidence", "iou", "timeline", "verdict_for", "verified_score", "verify_frame"]

#: Unsupported sampled frames allowed inside one segment. Not measured: chosen by hand (commit
#: 82bb8fd, issue 3): one missed sample (a blink, a cut frame) does not split a segment
GAP_FRAMES = 1
#: Frames whose evidence is averaged for a character's video score. Chosen by hand (commit 82bb8fd,
#: "temporal support"); ablated in-sample on dev + redrawn with effnet-lite0-imagenet
#: (`scripts/ablate_rules.py`: 1 frame within noise of 2 on both sets; docs/measurements.md), kept
SUPPORT_FRAMES = 2
#: Frames whose inlier counts are averaged for a character's verification support V (step 2).
#: Chosen by cross-validation split by character on dev + redrawn, effnet-lite0-imagenet
#: (`scripts/cv_scoring.py`, grid 2 / 1; issue 27, docs/measurements.md)
VERIFY_FRAMES = 1
#: Normalised similarity of a frame with no evidence for a character (below any real match).
#: Not tuned: a floor below any cosine-based n (`detector.embed.text.N_FLOOR` is the same)
MISSING_N = -1.0
#: at most this many points in a result's `timeline`. Not tuned: a display bound
TIMELINE_POINTS = 120
#: logit units taken from a character that was checked and never verified. Not measured as a
#: value: chosen by hand (commit e8e521e, issue 3); the rule on/off was ablated in-sample on dev +
#: redrawn with effnet-lite0-imagenet (`scripts/ablate_rules.py`: without it dev FPR 0.31, redrawn
#: 0.55; docs/measurements.md). On the calibrated scale, so not backbone-dependent (`index.tuning`)
UNVERIFIED_PENALTY = 1.5
#: a frame's hit is dropped when its region overlaps a stronger character's region at this IoU or
#: more (step 1c); chosen by cross-validation split by character on dev + redrawn,
#: effnet-lite0-imagenet (`scripts/cv_scoring.py`, grid 0.7 / 0.5 / 0.3; issue 27,
#: docs/measurements.md). Geometry, not backbone-dependent
REGION_IOU = 0.3


def verdict_for(score: float, flag: float, review: float) -> str:
    return "flag" if score >= flag else "review" if score >= review else "pass"


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1); 0 when either is empty."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _strength(item: tuple[str, CharacterHit]) -> tuple[bool, float, str]:
    c, h = item
    sure = h.channel == "nearcopy" or (h.inliers is not None and h.inliers >= MIN_INLIERS)
    return (not sure, -h.score, c)


def exclusive(ev: FrameEvidence, bound: float | None = None) -> FrameEvidence:
    """Step 1c: the frame's hits with each region explaining at most one character. Strongest
    first (verified or near-copy, then frame score, then name), a hit is kept unless its region
    overlaps a kept hit's region with IoU >= `bound` (default REGION_IOU)."""
    bound = REGION_IOU if bound is None else bound
    kept: dict[str, CharacterHit] = {}
    for c, h in sorted(ev.hits.items(), key=_strength):
        if all(iou(h.box, k.box) < bound for k in kept.values()):
            kept[c] = h
    return ev if len(kept) == len(ev.hits) else replace(ev, hits=kept)


def _segments(track: list[tuple[float, CharacterHit | None]], review: float) -> list[Segment]:
    segments: list[Segment] = []
    run: list[tuple[float, CharacterHit]] = []
    gap = 0

    def close() -> None:
        if run:
            t_peak, peak = max(run, key=lambda th: th[1].score)
            segments.append(Segment(
                start=run[0][0], end=run[-1][0], peak_time=t_peak, peak_score=peak.score,
                reference=peak.reference.source_path, reference_id=peak.reference.id,
                similarity=peak.similarity, box=peak.box, frames=len(run), channel=peak.channel,
                inliers=max((h.inliers for _, h in run if h.inliers is not None), default=None),
            ))

    for t, hit in track:
        if hit is not None and hit.score >= review:
            run.append((t, hit))
            gap = 0
        elif run:
            gap += 1
            if gap > GAP_FRAMES:
                close()
                run, gap = [], 0
    close()
    return segments


def character_score(store: IndexStore, character: str, hits: Sequence[CharacterHit], n_frames: int) -> float:
    """Temporal evidence (step 2): calibrated mean of the best SUPPORT_FRAMES normalised similarities
    over `n_frames` sampled frames, moved by geometric verification (`verified_score` of the mean
    inlier count of the best SUPPORT_FRAMES frames: continuous in every frame's count), or the best
    near-copy frame score if higher.

    A frame without embedding evidence for the character counts as MISSING_N, and a frame not
    checked counts 0 inliers: one strong frame among several sampled ones is averaged with them,
    not with itself (so one frame flags by verification alone at 2 x MIN_INLIERS inliers).
    """
    info = store.characters[character]
    n = sorted((h.normalised for h in hits if np.isfinite(h.normalised)), reverse=True)[:SUPPORT_FRAMES]
    n += [MISSING_N] * (min(SUPPORT_FRAMES, n_frames) - len(n))
    emb = float(calibrated_score(float(np.mean(n)), info.flag_sim, info.sigma)) if n else 0.0
    checked = sorted((h.inliers for h in hits if h.inliers is not None), reverse=True)
    if checked:
        k = min(VERIFY_FRAMES, n_frames)
        support = float(np.mean((checked + [0] * k)[:k]))  # like n: unchecked frames count 0
        emb = verified_score(emb, support, UNVERIFIED_PENALTY)
    near = max((h.score for h in hits if h.channel == "nearcopy"), default=0.0)
    return max(emb, near)


def aggregate(store: IndexStore, path: str, evidence: Sequence[FrameEvidence], *, kind: str,
              duration: float | None, warnings: Sequence[str] = ()) -> Result:
    """Turn per-frame evidence into the video's `Result` (see the module docstring)."""
    flag, review = store.flag_score, store.review_score
    allowed = suppressions(store, evidence)
    evidence = [exclusive(ev) for ev in evidence]
    characters = []
    top = 0.0
    verdicts = []  # each character's, after the match policy (`detector.match.policy`)
    step = sampling_step([ev.time for ev in evidence], duration)
    for c in sorted({c for ev in evidence for c in ev.hits}):
        track = [(ev.time, ev.hits.get(c)) for ev in evidence]
        score = character_score(store, c, [h for _, h in track if h is not None], len(evidence))
        top = max(top, score)
        info = store.characters[c]
        levels = levels_for(store.data.policy, info, flag=flag, review=review)
        segments = _segments(track, levels.review)
        verdict, policy = decide(levels, verdict_for(score, levels.flag, levels.review), segments, step=step,
                                 still=kind == "image")
        verdicts.append(verdict)
        if segments and score >= levels.review:
            inliers = max((h.inliers for _, h in track if h is not None and h.inliers is not None), default=None)
            characters.append(CharacterResult(c, info.franchise, info.rights_holder, score, tuple(segments), inliers,
                                              policy))
    characters.sort(key=lambda cr: (-cr.score, cr.character))
    verdict = strongest(verdicts) if verdicts else verdict_for(top, flag, review)
    return Result(path=path, verdict=verdict, score=top, frames=len(evidence),
                  duration=duration, characters=tuple(characters), kind=kind, warnings=tuple(warnings),
                  timeline=timeline(evidence), suppressed=allowed)


def timeline(evidence: Sequence[FrameEvidence], points: int = TIMELINE_POINTS) -> tuple[tuple[float, float], ...]:
    """(time, best calibrated frame score over all characters) per sampled frame, for the review
    report's score-over-time chart. Longer videos are cut into `points` equal runs of frames, each
    given by its first time and its highest score (so a short peak is never averaged away)."""
    best = [(ev.time, max((h.score for h in ev.hits.values()), default=0.0)) for ev in evidence]
    if len(best) <= points:
        return tuple(best)
    edges = np.linspace(0, len(best), points + 1).astype(int)
    return tuple((best[a][0], max(s for _, s in best[a:b])) for a, b in itertools.pairwise(edges))
