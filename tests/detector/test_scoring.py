"""`detector.match.scoring`: per-frame evidence (normalisation, near-copy), temporal aggregation, segments."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from helpers import detailed_art, pasted, reference_art
from PIL import Image

from detector.match.scoring import (
    LOW_INLIERS,
    MIN_INLIERS,
    REGION_IOU,
    SUPPORT_FRAMES,
    UNVERIFIED_PENALTY,
    VERIFY_FRAMES,
    CharacterHit,
    FrameEvidence,
    _segments,
    aggregate,
    character_score,
    exclusive,
    frame_evidence,
    iou,
    verdict_for,
    verified_score,
    verify_frame,
)
from detector.media.synth import draw_scene
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
    # what one frame proves (VERIFY_FRAMES = 1): the best frame's count decides, here 60
    mixed = [CharacterHit(0.5, 0.3, 0.5, ref, (0, 0, 1, 1), inliers=n) for n in (2, 4 * MIN_INLIERS)]
    assert character_score(store, "a", mixed, 2) == pytest.approx(4 / 5)
    res = aggregate(store, "v", [FrameEvidence(t, {"a": h}) for t, h in enumerate(mixed)], kind="video", duration=2.0)
    assert res.characters[0].inliers == 4 * MIN_INLIERS and res.characters[0].segments[0].inliers == 4 * MIN_INLIERS
    # one frame verified with 20 among unchecked ones is verified (was: unchanged, "not sustained")
    once = [CharacterHit(0.5, 0.3, 0.5, ref, (0, 0, 1, 1), inliers=n) for n in (MIN_INLIERS + 5, None, None)]
    assert character_score(store, "a", once, 3) == pytest.approx(20 / 35)
    # one frame at 10 (between LOW_INLIERS and MIN_INLIERS): part way to the unverified penalty
    part = [CharacterHit(0.5, 0.3, 0.5, ref, (0, 0, 1, 1), inliers=n) for n in (10, 2)]
    w = (10 - LOW_INLIERS) / (MIN_INLIERS - LOW_INLIERS)
    penalised = 1 / (1 + np.exp(-(z - UNVERIFIED_PENALTY)))
    assert character_score(store, "a", part, 2) == pytest.approx((1 - w) * penalised + w * 0.5)


def test_evidence_boxes_scale_to_the_source_pixels() -> None:
    hit = CharacterHit(0.5, 0.1, 0.3, REF, (10, 20, 31, 40), inliers=20)
    ev = FrameEvidence(2.0, {"c": hit})
    assert ev.scaled(1.0) is ev
    big = ev.scaled(1.5)
    assert big.hits["c"].box == (15, 30, 46, 60) and big.hits["c"].inliers == 20 and big.time == 2.0


# --- issue 27, point 5: what one frame proves; the score is continuous in the inlier count -------


def _weak(store: IndexStore, inliers: int | None, n: float = 0.05) -> CharacterHit:
    """A frame of weak embedding evidence (e ~ 0.006 at this index's calibration) checked with `inliers`."""
    return CharacterHit(0.3, n, 0.01, store.references["ra"], (0, 0, 1, 1), inliers=inliers)


def test_one_frame_has_no_cliff_at_twice_min_inliers(tmp_path: Path) -> None:
    """The issue's case: one frame with 30 inliers among 600 flagged (0.5) and 29 passed (0.006)."""
    store = _store(tmp_path, {"ra": ("a", E[0])})
    frames = 600
    score = {k: character_score(store, "a", [_weak(store, k)], frames) for k in range(80)}
    e = character_score(store, "a", [_weak(store, None)], frames)
    assert e < 0.01  # weak embedding evidence: the score is decided by the inliers
    assert score[29] == pytest.approx(score[30], abs=0.02) and score[30] > 0.5
    steps = [score[k + 1] - score[k] for k in range(79)]
    # non-decreasing, and no step near the old one (0.006 -> 0.5 between 29 and 30): from this weak
    # embedding evidence to verified the score climbs linearly over LOW_INLIERS..MIN_INLIERS
    assert min(steps) >= 0.0 and max(steps) <= 1 / (MIN_INLIERS - LOW_INLIERS) + 1e-9
    # what one frame proves (VERIFY_FRAMES = 1): a frame verified with MIN_INLIERS flags on its own ...
    assert VERIFY_FRAMES == 1 and score[MIN_INLIERS] >= 0.5 > score[MIN_INLIERS - 1]
    # ... and one at LOW_INLIERS or fewer is no better than a frame with none
    assert score[int(LOW_INLIERS)] == pytest.approx(score[0])


@pytest.mark.parametrize(
    ("counts", "support"),
    [
        ((30,), 30.0),  # one frame, the rest unchecked: the best frame decides (VERIFY_FRAMES = 1)
        ((15,), 15.0),
        ((14,), 14.0),  # just under verified, not "never verified"
        ((40, 14, 14), 40.0),
        ((10, 2), 10.0),  # part way
        ((7, 3), 7.0),  # checked, never close: the full unverified penalty
        ((0, 0), 0.0),
    ],
)
def test_video_score_follows_the_support_continuously(tmp_path: Path, counts: tuple[int, ...], support: float) -> None:
    assert VERIFY_FRAMES == 1
    store = _store(tmp_path, {"ra": ("a", E[0])})
    e = character_score(store, "a", [_weak(store, None) for _ in counts], 10)
    z = np.log(e / (1 - e))
    got = character_score(store, "a", [_weak(store, k) for k in counts], 10)
    if support >= MIN_INLIERS:
        want = 1 / (1 + np.exp(-(max(z, 0.0) + np.log(support / MIN_INLIERS))))
    else:
        w = max(0.0, (support - LOW_INLIERS) / (MIN_INLIERS - LOW_INLIERS))  # linear between the two scores
        want = (1 - w) / (1 + np.exp(-(z - UNVERIFIED_PENALTY))) + w / (1 + np.exp(-max(z, 0.0)))
    assert got == pytest.approx(want)


def test_frame_score_is_continuous_in_its_inlier_count() -> None:
    s = 0.2
    frame = [verified_score(s, k) for k in range(40)]
    assert frame[int(LOW_INLIERS)] == s and frame[0] == s  # no penalty on one frame's failed check
    assert all(0.0 <= b - a <= 1 / (MIN_INLIERS - LOW_INLIERS) for a, b in itertools.pairwise(frame))
    assert frame[MIN_INLIERS] == pytest.approx(0.5)


# --- issue 27, point 4: one region explains one character --------------------------------------

BOX = (100, 50, 300, 250)
NEAR = (120, 60, 320, 260)  # IoU 0.75 with BOX
APART = (400, 50, 600, 250)  # IoU 0 with BOX
SIDE = (240, 50, 440, 250)  # IoU 0.18 with BOX


@pytest.mark.parametrize(
    ("hits", "kept"),
    [
        # (character, frame score, box, inliers): the case, one region at 0.80 / 0.78
        ([("a", 0.858, BOX, None), ("b", 0.711, BOX, None)], {"a"}),
        ([("a", 0.858, BOX, None), ("b", 0.711, NEAR, None)], {"a"}),
        ([("a", 0.858, BOX, None), ("b", 0.711, APART, None)], {"a", "b"}),  # two characters, two places
        ([("a", 0.858, BOX, None), ("b", 0.711, SIDE, None)], {"a", "b"}),  # IoU 0.18 < REGION_IOU
        # verified by geometry beats a higher embedding score in the same region
        ([("a", 0.95, BOX, 3), ("b", 0.62, BOX, 40)], {"b"}),
        ([("a", 0.95, BOX, None), ("b", 0.62, BOX, 40), ("c", 0.9, APART, None)], {"b", "c"}),
        # a checked hit that failed is not "sure": the higher score keeps the region
        ([("a", 0.40, BOX, 5), ("b", 0.45, BOX, 2)], {"b"}),
    ],
)
def test_one_region_explains_one_character(tmp_path: Path, hits: list[tuple[str, float, tuple[int, int, int, int],
                                                                            int | None]], kept: set[str]) -> None:
    assert iou(BOX, NEAR) == pytest.approx(0.747, abs=0.001) and iou(BOX, SIDE) == pytest.approx(0.176, abs=0.001)
    assert iou(BOX, NEAR) >= REGION_IOU > iou(BOX, SIDE)
    store = _store(tmp_path, {"ra": ("a", E[0]), "rb": ("b", E[1]), "rc": ("c", E[2])})
    ev = FrameEvidence(0.0, {c: CharacterHit(0.8, 1.0, s, store.references[f"r{c}"], box, inliers=k)
                             for c, s, box, k in hits})
    assert set(exclusive(ev).hits) == kept
    res = aggregate(store, "still", [ev], kind="image", duration=0.0)
    assert {c.character for c in res.characters} == kept
    boxes = [s.box for c in res.characters for s in c.segments]
    assert len(boxes) == len(set(boxes))  # never one box drawn for two names


def test_one_region_rule_is_per_frame(tmp_path: Path) -> None:
    """A character that lost a region in one frame keeps its own evidence in the frames where it wins."""
    store = _store(tmp_path, {"ra": ("a", E[0]), "rb": ("b", E[1])})

    def hit(c: str, s: float) -> CharacterHit:
        return CharacterHit(0.8, 1.0, s, store.references[f"r{c}"], BOX)

    evidence = [FrameEvidence(t, {"a": hit("a", 0.9), "b": hit("b", 0.8)}) for t in (0.0, 0.5)]
    evidence += [FrameEvidence(t, {"a": hit("a", 0.7), "b": hit("b", 0.95)}) for t in (2.0, 2.5)]
    res = aggregate(store, "v", evidence, kind="video", duration=3.0)
    segs = {c.character: [(s.start, s.end) for s in c.segments] for c in res.characters}
    assert segs == {"a": [(0.0, 0.5)], "b": [(2.0, 2.5)]}
    assert [t for _, t in res.timeline] == [0.9, 0.9, 0.95, 0.95]
