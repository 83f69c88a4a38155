"""Per-frame evidence (scoring step 1): each region's nearest references → each character's best hit.

Steps:
    1. `frame_evidence`: for one frame, the nearest references of every region (FAISS top-k), the
       region's background term and other-character term (`index.calibrate.normalise`); per
       character keep the best normalised similarity over regions, with its reference and region
       box, and the calibrated score. Near-copy channel: a region whose PDQ hash is within the
       standard distance of a reference hash (`index.nearcopy`) is a hit with `channel:
       "nearcopy"` when it scores higher than the embedding evidence. Text channel (CLIP indexes
       with prompts, `detector.embed.text`): a character's best prompt match is a hit with `channel:
       "text"` when it scores higher than the embedding evidence.
       Allow-list (`index.allowlist`): a region that is a near-duplicate of a region a reviewer
       allowed for character c is no evidence for c in any channel; when such a region alone
       would have been a hit at c's review threshold (`review_level`: the match policy's where a
       rule sets one, else the index's), in any channel, the frame records the decision in
       `suppressed` (the result's `suppressed` list, `detector.match.scoring`).

Geometric verification of the strongest hits is step 1b (`detector.match.verify`); each character keeps
its best region here, and step 1c (`detector.match.scoring.exclusive`) then lets one region explain at
most one character; the hits of all sampled frames become a video's result in `detector.match.scoring`
(steps 2-3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from detector.embed.text import text_hits
from detector.match.policy import levels_for
from detector.match.results import Suppression
from detector.media.regions import Box
from index.calibrate import BG_K, calibrated_score, normalise
from index.nearcopy import PDQ_BYTES, nearcopy_score
from index.store import IndexStore, Reference

__all__ = ["TOP_K", "CharacterHit", "FrameEvidence", "Matrix", "frame_evidence", "region_matrix", "review_level",
           "split_matrix", "suppressions"]

#: Nearest reference vectors looked up per region. Not measured: chosen by hand (core commit
#: 81051fd); a count, not backbone-dependent
TOP_K = 32


@dataclass(frozen=True)
class CharacterHit:
    """One character's best evidence in one frame."""

    similarity: float  # raw cosine (embedding) or 1 - distance/256 (nearcopy)
    normalised: float  # normalised similarity n (embedding channel; -inf for a near-copy only hit)
    score: float  # calibrated frame score
    reference: Reference
    box: Box
    channel: str = "embedding"
    inliers: int | None = None  # geometric verification (step 1b); None = not checked


@dataclass(frozen=True)
class FrameEvidence:
    time: float
    hits: dict[str, CharacterHit]
    #: character -> id of the reviewer decision whose allowed region removed a hit for it
    suppressed: dict[str, str] = field(default_factory=dict)

    def scaled(self, scale: float) -> FrameEvidence:
        """The same evidence with boxes multiplied by `scale` (sampled frame -> source pixels,
        `detector.media.frames.Frame.scale`)."""
        if scale == 1.0:
            return self
        def scaled(box: Box) -> Box:
            x0, y0, x1, y1 = (round(v * scale) for v in box)
            return x0, y0, x1, y1

        return replace(self, hits={c: replace(h, box=scaled(h.box)) for c, h in self.hits.items()})


#: `region_matrix`'s answer: characters, best raw similarity, its reference, normalised similarity
Matrix = tuple[list[str], np.ndarray, list[list[Reference | None]], np.ndarray]


def frame_evidence(store: IndexStore, time: float, vectors: np.ndarray, boxes: Sequence[Box],
                   hashes: tuple[np.ndarray, np.ndarray] | None = None, matrix: Matrix | None = None) -> FrameEvidence:
    """Best evidence per character over all regions of one frame.

    Args:
        vectors: (R, D) raw region embeddings; `boxes[r]` is region r's box.
        hashes: optional ((R, 32) uint8 PDQ hashes, (R,) qualities) of the same regions.
        matrix: `region_matrix(store, vectors)` when the caller has it (one of `split_matrix`'s
            parts: several frames searched at once); computed here otherwise.
    """
    chars, best, best_ref, norm = matrix if matrix is not None else region_matrix(store, vectors)
    hits: dict[str, CharacterHit] = {}
    allowed = store.allow.match(vectors)
    suppressed: dict[str, str] = {}
    if chars:
        col = {c: j for j, c in enumerate(chars)}
        if allowed:
            norm = _suppress(store, norm, col, allowed, suppressed)
        for c, j in col.items():
            r = int(np.argmax(norm[:, j]))
            found_ref = best_ref[r][j]
            if found_ref is None or not np.isfinite(norm[r, j]):  # (every region allowed: -inf)
                continue
            info = store.characters[c]
            n = float(norm[r, j])
            hits[c] = CharacterHit(float(best[r, j]), n, float(calibrated_score(n, info.flag_sim, info.sigma)),
                                   found_ref, boxes[r])
    for c, t in text_hits(store, vectors).items():
        if (t.region, c) in allowed:
            if t.score >= review_level(store, c):
                suppressed.setdefault(c, allowed[t.region, c])
        elif c not in hits or t.score > hits[c].score:
            hits[c] = CharacterHit(t.similarity, t.normalised, t.score, t.reference, boxes[t.region], "text")
    if hashes is not None and len(hashes[0]):
        dist, prefs = store.match_pdq(*hashes)
        for r, (d, pref) in enumerate(zip(dist, prefs, strict=True)):
            if pref is None:
                continue
            s = float(nearcopy_score(d))
            if (r, pref.character) in allowed:
                if s >= review_level(store, pref.character):
                    suppressed.setdefault(pref.character, allowed[r, pref.character])
                continue
            cur = hits.get(pref.character)
            if cur is None or s > cur.score:
                n = cur.normalised if cur is not None else -np.inf
                hits[pref.character] = CharacterHit(1.0 - float(d) / (PDQ_BYTES * 8), n, s, pref, boxes[r], "nearcopy")
    return FrameEvidence(time, hits, suppressed)


def region_matrix(store: IndexStore, vectors: np.ndarray) -> Matrix:
    """Per region and character (the characters in any region's top-k, sorted): the best raw
    similarity, its reference (None: not in the region's top-k) and the normalised similarity n
    (-inf where the reference is None). `frame_evidence` keeps each character's best region;
    `detector.shortlist` scores regions with it."""
    sims, refs = store.search(vectors, TOP_K)
    chars = sorted({ref.character for row in refs for ref in row})
    col = {c: j for j, c in enumerate(chars)}
    # characters outside a region's top-k sit below its k-th similarity: use that as their value
    width = len(chars) + int(store.active_characters > len(chars))
    best = np.repeat(sims[:, -1:], width, axis=1).astype(np.float32)
    best_ref: list[list[Reference | None]] = [[None] * len(chars) for _ in range(len(vectors))]
    for r in range(len(vectors)):
        for sim, ref in zip(sims[r], refs[r]):
            j = col[ref.character]
            if best_ref[r][j] is None or sim > best[r, j]:
                best[r, j] = sim
                best_ref[r][j] = ref
    if not chars:
        return chars, best, best_ref, np.zeros((len(vectors), 0), np.float32)
    norm = normalise(best, store.background_similarity(vectors, BG_K))[:, : len(chars)]
    found = np.array([[x is not None for x in row] for row in best_ref])
    return chars, best, best_ref, np.where(found, norm, -np.inf)


def split_matrix(matrix: Matrix, counts: Sequence[int]) -> list[Matrix]:
    """`region_matrix` of several frames' regions stacked (`counts[i]` rows each), cut per frame.

    Each part is what `region_matrix` of that frame alone gives, except for extra columns of
    characters found in other frames only: those rows hold no reference (-inf), so
    `frame_evidence` skips them, and a region's other-character term is the same either way (a
    character outside a region's top-k sits at its k-th similarity in both).
    """
    chars, best, best_ref, norm = matrix
    out, at = [], 0
    for n in counts:
        out.append((chars, best[at:at + n], best_ref[at:at + n], norm[at:at + n]))
        at += n
    return out


def _suppress(store: IndexStore, norm: np.ndarray, col: dict[str, int], allowed: dict[tuple[int, str], str],
              suppressed: dict[str, str]) -> np.ndarray:
    """`norm` with each allowed (region, character) cell removed (-inf); a character whose removed
    cells held evidence at the review threshold gets the decision in `suppressed`."""
    out = norm.copy()
    for (r, c), decision in allowed.items():
        j = col.get(c)
        if j is None or not np.isfinite(norm[r, j]):
            continue
        info = store.characters[c]
        if calibrated_score(float(norm[r, j]), info.flag_sim, info.sigma) >= review_level(store, c):
            suppressed.setdefault(c, decision)
        out[r, j] = -np.inf
    return out


def review_level(store: IndexStore, character: str) -> float:
    """The calibrated score at which a hit for `character` is evidence: its review threshold under
    the index's match policy (`detector.match.policy.levels_for`), or the index's without a rule."""
    return levels_for(store.data.policy, store.characters[character], flag=store.flag_score,
                      review=store.review_score).review


def suppressions(store: IndexStore, evidence: Sequence[FrameEvidence]) -> tuple[Suppression, ...]:
    """Per (character, decision), the sampled frames whose evidence the allow-list removed."""
    frames: dict[tuple[str, str], int] = {}
    for ev in evidence:
        for c, d in ev.suppressed.items():
            frames[c, d] = frames.get((c, d), 0) + 1
    return tuple(Suppression(c, d, store.allow.reviewer(d), n) for (c, d), n in sorted(frames.items()))
