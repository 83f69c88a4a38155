"""Applying a match policy to one character (`detector.match.policy`): levels, time on screen, verdicts."""

from __future__ import annotations

import pytest

from detector.match.policy import Levels, decide, levels_for, on_screen, sampling_step, strongest
from detector.match.results import PolicyMatch, Segment
from index.policy import Policy, Rule
from index.records import CharacterInfo

INFO = CharacterInfo("akane", "Sunset Saga", "Studio X", 0.0, 1.0, 0.0, 0, "default", 0.5, 0.4)


def _segment(start: float, end: float) -> Segment:
    return Segment(start=start, end=end, peak_time=start, peak_score=0.9, reference="r.png", reference_id="r",
                   similarity=0.5, box=(0, 0, 1, 1), frames=1)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (None, (0.7, 0.3)),  # no policy: the index's levels
        (Rule(flag=0.5), (0.5, 0.3)),
        (Rule(flag=0.2), (0.2, 0.2)),  # review moved down to the rule's flag
        (Rule(review=0.9), (0.9, 0.9)),  # flag moved up to the rule's review
        (Rule(flag=0.6, review=0.1), (0.6, 0.1)),
        (Rule(character="benkei", flag=0.1), (0.7, 0.3)),  # does not match: the index's
    ],
)
def test_levels(rule: Rule | None, expected: tuple[float, float]) -> None:
    policy = Policy((rule,)) if rule is not None else None
    levels = levels_for(policy, INFO, flag=0.7, review=0.3)
    assert (levels.flag, levels.review) == expected


def test_on_screen_counts_one_sampling_step_per_segment() -> None:
    assert sampling_step([0.0, 0.5, 1.0, 1.5], 2.0) == 0.5
    assert sampling_step([0.0], 0.3) == 0.3 and sampling_step([], None) == 0.0
    assert on_screen([_segment(1.0, 2.5), _segment(3.0, 3.0)], 0.5) == 2.5  # 2.0 s + one step
    assert on_screen([], 0.5) == 0.0


def test_min_seconds_turns_a_short_flag_into_review_and_labels_pass_through() -> None:
    levels = Levels(0.5, 0.3, Rule(min_seconds=2.0, action="block"), 1)
    short, long = [_segment(1.0, 1.5)], [_segment(1.0, 2.5)]
    assert decide(levels, "flag", short, step=0.5, still=False) == ("review", PolicyMatch(1, "block", "review", 1.0))
    assert decide(levels, "flag", long, step=0.5, still=False) == ("flag", PolicyMatch(1, "block", "flag", 2.0))
    assert decide(levels, "flag", short, step=0.5, still=True) == ("flag", PolicyMatch(1, "block", "flag", None))
    assert decide(Levels(0.5, 0.3), "flag", short, step=0.5, still=False) == ("flag", None)


def test_strongest() -> None:
    assert strongest(["pass", "flag", "review"]) == "flag"
    assert strongest(["pass", "review"]) == "review" and strongest([]) == "pass"
