from __future__ import annotations

import pytest

from detector.scoring import CharacterHit, FrameEvidence, _segments, verdict_for
from index.store import Reference

REF = Reference(id="r1", sha256="0" * 64, character="c", source_path="refs/c/1.png")


def track(scores: list[float | None], step: float = 0.5) -> list[tuple[float, CharacterHit | None]]:
    return [(i * step, None if s is None else CharacterHit(s, s, REF, (0, 0, 10, 10))) for i, s in enumerate(scores)]


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
    got = [(s.start, s.end, s.peak_time, s.peak_score) for s in _segments(track(scores))]
    assert got == expected


def test_segment_carries_reference_and_box() -> None:
    [seg] = _segments(track([0.9]))
    assert (seg.reference, seg.reference_id, seg.box, seg.channel, seg.frames) == (
        "refs/c/1.png", "r1", (0, 0, 10, 10), "embedding", 1)


@pytest.mark.parametrize(("score", "verdict"), [(0.0, "pass"), (0.19, "pass"), (0.2, "review"), (0.5, "flag"), (1.0, "flag")])
def test_verdict(score: float, verdict: str) -> None:
    assert verdict_for(score) == verdict


def test_frame_evidence_type() -> None:
    ev = FrameEvidence(1.0, {})
    assert ev.time == 1.0 and ev.hits == {}
