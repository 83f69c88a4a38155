"""Scoring: region matches of each sampled frame → per-character evidence → segments → verdict.

Steps:
    1. `frame_evidence`: for one frame, the nearest references of every region (FAISS top-k);
       per character keep the best raw similarity, its reference and its region box, and the
       calibrated score (`index.calibrate.calibrated_score`, per-character thresholds).
    2. `aggregate`: per character, a *segment* is a run of sampled frames whose score is at least
       SCORE_REVIEW, allowing a gap of up to GAP_FRAMES unsupported frames inside it; it reports
       start, end, peak time/score and the best reference at the peak.
    3. A character's video score is its peak frame score; the video's `score` is the top
       character's. Verdict: `flag` if score >= SCORE_FLAG, `review` if >= SCORE_REVIEW, else `pass`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detector.regions import Box
from detector.results import CharacterResult, Result, Segment
from index.calibrate import SCORE_FLAG, SCORE_REVIEW, calibrated_score
from index.store import IndexStore, Reference

__all__ = ["GAP_FRAMES", "TOP_K", "CharacterHit", "FrameEvidence", "aggregate", "frame_evidence", "verdict_for"]

#: Nearest references looked up per region.
TOP_K = 32
#: Unsupported sampled frames allowed inside one segment.
GAP_FRAMES = 1


@dataclass(frozen=True)
class CharacterHit:
    similarity: float
    score: float
    reference: Reference
    box: Box


@dataclass(frozen=True)
class FrameEvidence:
    time: float
    hits: dict[str, CharacterHit]


def frame_evidence(store: IndexStore, time: float, vectors: np.ndarray, boxes: Sequence[Box]) -> FrameEvidence:
    """Best match per character over all regions of one frame."""
    sims, refs = store.search(vectors, TOP_K)
    best: dict[str, tuple[float, Reference, Box]] = {}
    for r, box in enumerate(boxes):
        for sim, ref in zip(sims[r], refs[r]):
            cur = best.get(ref.character)
            if cur is None or sim > cur[0]:
                best[ref.character] = (float(sim), ref, box)
    hits = {}
    for c, (sim, ref, box) in best.items():
        info = store.characters[c]
        hits[c] = CharacterHit(sim, float(calibrated_score(sim, info.flag_sim, info.sigma)), ref, box)
    return FrameEvidence(time, hits)


def verdict_for(score: float) -> str:
    return "flag" if score >= SCORE_FLAG else "review" if score >= SCORE_REVIEW else "pass"


def _segments(track: list[tuple[float, CharacterHit | None]]) -> list[Segment]:
    segments: list[Segment] = []
    run: list[tuple[float, CharacterHit]] = []
    gap = 0

    def close() -> None:
        if run:
            t_peak, peak = max(run, key=lambda th: th[1].score)
            segments.append(Segment(
                start=run[0][0], end=run[-1][0], peak_time=t_peak, peak_score=peak.score,
                reference=peak.reference.source_path, reference_id=peak.reference.id,
                similarity=peak.similarity, box=peak.box, frames=len(run),
            ))

    for t, hit in track:
        if hit is not None and hit.score >= SCORE_REVIEW:
            run.append((t, hit))
            gap = 0
        elif run:
            gap += 1
            if gap > GAP_FRAMES:
                close()
                run, gap = [], 0
    close()
    return segments


def aggregate(store: IndexStore, path: str, evidence: Sequence[FrameEvidence], *, kind: str,
              duration: float | None, warnings: Sequence[str] = ()) -> Result:
    """Turn per-frame evidence into the video's `Result` (see the module docstring)."""
    characters = []
    top = 0.0
    for c in sorted({c for ev in evidence for c in ev.hits}):
        track = [(ev.time, ev.hits.get(c)) for ev in evidence]
        peak = max(h.score for _, h in track if h is not None)
        top = max(top, peak)
        segments = _segments(track)
        if segments:
            info = store.characters[c]
            characters.append(CharacterResult(c, info.franchise, info.rights_holder, peak,
                                              tuple(segments)))
    characters.sort(key=lambda cr: (-cr.score, cr.character))
    return Result(path=path, verdict=verdict_for(top), score=top, frames=len(evidence), duration=duration,
                  characters=tuple(characters), kind=kind, warnings=tuple(warnings))
