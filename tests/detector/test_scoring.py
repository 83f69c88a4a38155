"""`detector.scoring`: per-frame evidence (normalisation, near-copy), temporal aggregation, segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import detailed_art, pasted, reference_art
from PIL import Image

from detector.scoring import (
    MIN_INLIERS,
    SUPPORT_FRAMES,
    UNVERIFIED_PENALTY,
    CharacterHit,
    FrameEvidence,
    _segments,
    aggregate,
    character_score,
    frame_evidence,
    verdict_for,
    verified_score,
    verify_frame,
)
from detector.synth import draw_scene
from index.local import reference_features, self_check
from index.nearcopy import pdq_dihedral, region_hashes
from index.store import CharacterInfo, IndexData, IndexStore, Reference, write_index

REF = Reference(id="r1", sha256="0" * 64, character="c", source_path="refs/c/1.png")


def track(scores: list[float | None], step: float = 0.5) -> list[tuple[float, CharacterHit | None]]:
    return [(i * step, None if s is None else CharacterHit(s, s, s, REF, (0, 0, 10, 10))) for i, s in enumerate(scores)]


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([0.0, 0.9, 0.8, 0.0, 0.0, 0.0], [(0.5, 1.0, 0.5, 0.9)]),
        ([0.9, 0.1, 0.9], [(0.0, 1.0, 0.0, 0.9)]),  # a one-frame gap is bridged
        ([0.9, 0.1, 0.1, 0.7], [(0.0, 0.0, 0.0, 0.9), (1.5, 1.5, 1.5, 0.7)]),  # two frames split it
        ([0.1, None, 0.15], []),
        ([0.3, 0.6, 0.4], [(0.0, 1.0, 0.5, 0.6)]),
    ],
)
def test_segments(scores: list[float | None], expected: list[tuple[float, float, float, float]]) -> None:
    got = [(s.start, s.end, s.peak_time, s.peak_score) for s in _segments(track(scores), 0.2)]
    assert got == expected


def test_segment_carries_reference_and_box() -> None:
    [seg] = _segments(track([0.9]), 0.2)
    assert (seg.reference, seg.reference_id, seg.box, seg.channel, seg.frames) == (
        "refs/c/1.png", "r1", (0, 0, 10, 10), "embedding", 1)


@pytest.mark.parametrize(("score", "verdict"), [(0.0, "pass"), (0.19, "pass"), (0.2, "review"), (0.5, "flag"), (1.0, "flag")])
def test_verdict(score: float, verdict: str) -> None:
    assert verdict_for(score, 0.5, 0.2) == verdict


# --- a tiny real index with hand-made 4-d vectors ---------------------------------------------

E = np.eye(4, dtype=np.float32)


def _store(tmp_path: Path, refs: dict[str, tuple[str, np.ndarray]], background: np.ndarray | None = None,
           hashes: dict[str, np.ndarray] | None = None, art: dict[str, Image.Image] | None = None) -> IndexStore:
    references = {rid: Reference(id=rid, sha256=rid * 8, character=c, source_path=f"{rid}.png")
                  for rid, (c, _) in refs.items()}
    chars = sorted({c for c, _ in refs.values()})
    info = {c: CharacterInfo(c, "F", "R", 0.0, 0.1, 0.0, 20, "background", 0.3, 0.2) for c in chars}
    bg = np.zeros((0, 4), np.float32) if background is None else background
    data = IndexData(
        backbone={"name": "test", "dim": 4}, references=references,
        vectors=np.stack([v for _, v in refs.values()]), vector_refs=list(refs), vector_views=["full"] * len(refs),
        characters=info, background=bg, background_groups=np.arange(len(bg), dtype=np.int32), thresholds={},
    )
    for rid, img in (art or {}).items():
        data.local[rid] = reference_features(img)
        data.local_check[rid] = self_check(img, data.local[rid]["full"])
    for rid, h in (hashes or {}).items():
        data.pdq_hashes = np.concatenate([data.pdq_hashes, h])
        data.pdq_quality = np.concatenate([data.pdq_quality, np.full(len(h), 100, np.int32)])
        data.pdq_refs += [rid] * len(h)
        data.pdq_views += ["d"] * len(h)
    write_index(tmp_path / "idx", data)
    return IndexStore.open(tmp_path / "idx")


def test_frame_evidence_picks_the_matching_region_and_normalises(tmp_path: Path) -> None:
    store = _store(tmp_path, {"ra": ("a", E[0]), "rb": ("b", E[1])})
    # region 0 sees nothing, region 1 is a clean match of a, region 2 looks like a and b alike
    q = np.stack([E[3], E[0], (E[0] + E[1]) / np.sqrt(2)])
    boxes = [(0, 0, 10, 10), (10, 0, 20, 10), (20, 0, 30, 10)]
    ev = frame_evidence(store, 1.5, q, boxes)
    a = ev.hits["a"]
    assert a.box == (10, 0, 20, 10) and a.reference.id == "ra" and a.similarity == pytest.approx(1.0)
    assert a.normalised == pytest.approx(1.0 - 0.5 * 0.0)  # no background; best other character cosine 0
    # b's best region is the ambiguous one: 0.707 minus half of a's 0.707
    assert ev.hits["b"].normalised == pytest.approx(0.7071 * 0.5, abs=1e-3)
    assert a.score > 0.5 > ev.hits["b"].score or ev.hits["b"].score < a.score


def test_background_term_lowers_generic_regions(tmp_path: Path) -> None:
    plain = _store(tmp_path / "p", {"ra": ("a", E[0])})
    with_bg = _store(tmp_path / "b", {"ra": ("a", E[0])}, background=np.stack([E[0]] * 3))
    q = E[0][None]
    n_plain = frame_evidence(plain, 0.0, q, [(0, 0, 1, 1)]).hits["a"].normalised
    n_bg = frame_evidence(with_bg, 0.0, q, [(0, 0, 1, 1)]).hits["a"].normalised
    assert n_plain == pytest.approx(1.0) and n_bg == pytest.approx(0.0, abs=1e-6)


def test_nearcopy_channel_matches_an_exact_region(tmp_path: Path) -> None:
    art = draw_scene("nearcopy-art").resize((200, 200))
    frame = draw_scene("nearcopy-frame")
    frame.paste(art, (100, 60))
    h, _ = pdq_dihedral(art)
    store = _store(tmp_path, {"ra": ("a", E[0]), "rb": ("b", E[1])}, hashes={"ra": h})
    boxes = [(0, 0, frame.width, frame.height), (100, 60, 300, 260), (300, 60, 500, 260)]
    hashes = region_hashes(frame, boxes)
    ev = frame_evidence(store, 0.0, np.stack([E[3]] * 3), boxes, hashes)
    hit = ev.hits["a"]
    assert hit.channel == "nearcopy" and hit.box == (100, 60, 300, 260) and hit.score > 0.9
    # a mirrored copy matches through the dihedral reference hashes
    mirrored = frame.copy()
    mirrored.paste(art.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (100, 60))
    ev2 = frame_evidence(store, 0.0, np.stack([E[3]] * 3), boxes, region_hashes(mirrored, boxes))
    assert ev2.hits["a"].channel == "nearcopy"
    # no region lines up with the art: no near-copy hit
    ev3 = frame_evidence(store, 0.0, np.stack([E[3]] * 3), boxes[2:], region_hashes(frame, boxes[2:]))
    assert "a" not in ev3.hits or ev3.hits["a"].channel == "embedding"


def test_one_lucky_frame_does_not_flag_but_sustained_evidence_does(tmp_path: Path) -> None:
    store = _store(tmp_path, {"ra": ("a", E[0]), "rb": ("b", E[1])})
    strong = CharacterHit(0.9, 0.6, 0.95, store.references["ra"], (0, 0, 1, 1))
    weak = CharacterHit(0.3, -0.2, 0.01, store.references["ra"], (0, 0, 1, 1))
    lucky = [FrameEvidence(t, {"a": strong if t == 2 else weak}) for t in range(8)]
    sustained = [FrameEvidence(t, {"a": strong if 2 <= t <= 4 else weak}) for t in range(8)]
    r1 = aggregate(store, "lucky", lucky, kind="video", duration=4.0)
    r2 = aggregate(store, "sustained", sustained, kind="video", duration=4.0)
    assert SUPPORT_FRAMES == 2
    assert r1.verdict != "flag" and r2.verdict == "flag"
    assert r2.characters[0].segments[0].start == 2 and r2.characters[0].segments[0].end == 4
    # a still image has one frame: that frame is all the support there is
    still = aggregate(store, "still", [FrameEvidence(0.0, {"a": strong})], kind="image", duration=0.0)
    assert still.verdict == "flag"


# --- geometric verification (step 1b) and its effect on the video score -----------------------


def test_verify_frame_confirms_the_pasted_art_and_checks_the_others(tmp_path: Path) -> None:
    hero, other = detailed_art("hero"), detailed_art("someone-else")
    store = _store(tmp_path, {"ra": ("hero", E[0]), "rb": ("other", E[1])}, art={"ra": hero, "rb": other})
    frame, box = pasted(hero)
    # both characters matched the art's region by embedding, at a modest score
    ev = FrameEvidence(1.0, {c: CharacterHit(0.5, 0.1, 0.3, store.references[r], box)
                             for c, r in (("hero", "ra"), ("other", "rb"))})
    out = verify_frame(store, frame, ev)
    h, o = out.hits["hero"], out.hits["other"]
    assert h.inliers is not None and h.inliers >= MIN_INLIERS and h.score == pytest.approx(verified_score(0.3, h.inliers))
    assert h.score >= 0.5 and h.box == box and h.normalised == 0.1  # the embedding evidence is kept
    assert o.inliers is not None and o.inliers < MIN_INLIERS and o.score == 0.3  # checked, failed: frame score kept


def test_flat_art_is_never_penalised_for_failing_verification(tmp_path: Path) -> None:
    flat = reference_art("akane")
    store = _store(tmp_path, {"ra": ("akane", E[0])}, art={"ra": flat})
    frame = draw_scene("verify-flat")
    ev = FrameEvidence(0.0, {"akane": CharacterHit(0.5, 0.1, 0.3, store.references["ra"], (300, 100, 500, 300))})
    assert verify_frame(store, frame, ev).hits["akane"].inliers is None  # flat art: a failed check means nothing


def test_video_score_rules_for_verified_unverified_and_unchecked(tmp_path: Path) -> None:
    store = _store(tmp_path, {"ra": ("a", E[0])})
    ref = store.references["ra"]

    def hits(inliers: int | None) -> list[CharacterHit]:
        return [CharacterHit(0.5, 0.3, 0.5, ref, (0, 0, 1, 1), inliers=inliers) for _ in range(2)]

    unchecked = character_score(store, "a", hits(None), 2)
    assert unchecked == pytest.approx(0.5)  # n at the threshold: 0.5
    z = np.log(unchecked / (1 - unchecked))
    assert character_score(store, "a", hits(3), 2) == pytest.approx(1 / (1 + np.exp(-(z - UNVERIFIED_PENALTY))))
    v15, v60 = character_score(store, "a", hits(MIN_INLIERS), 2), character_score(store, "a", hits(4 * MIN_INLIERS), 2)
    assert v15 == pytest.approx(0.5) and v60 == pytest.approx(1 / (1 + 1 / 4)) and v60 > v15
    # temporal support: the mean of the two best frames' counts (31 here) decides
    mixed = [CharacterHit(0.5, 0.3, 0.5, ref, (0, 0, 1, 1), inliers=n) for n in (2, 4 * MIN_INLIERS)]
    support = (2 + 4 * MIN_INLIERS) / 2
    assert character_score(store, "a", mixed, 2) == pytest.approx(support / (support + MIN_INLIERS))
    res = aggregate(store, "v", [FrameEvidence(t, {"a": h}) for t, h in enumerate(mixed)], kind="video", duration=2.0)
    assert res.characters[0].inliers == 4 * MIN_INLIERS and res.characters[0].segments[0].inliers == 4 * MIN_INLIERS
    # one verified frame among unverified ones is not sustained: neither boost nor penalty
    once = [CharacterHit(0.5, 0.3, 0.5, ref, (0, 0, 1, 1), inliers=n) for n in (MIN_INLIERS + 5, None, None)]
    assert character_score(store, "a", once, 3) == pytest.approx(unchecked)


def test_evidence_boxes_scale_to_the_source_pixels() -> None:
    hit = CharacterHit(0.5, 0.1, 0.3, REF, (10, 20, 31, 40), inliers=20)
    ev = FrameEvidence(2.0, {"c": hit})
    assert ev.scaled(1.0) is ev
    big = ev.scaled(1.5)
    assert big.hits["c"].box == (15, 30, 46, 60) and big.hits["c"].inliers == 20 and big.time == 2.0
