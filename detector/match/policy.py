"""The index's match policy (`index.policy`) applied to one character of a result (`detector.match.scoring`).

Steps, per character:
    1. `levels_for`: the first matching rule's flag and review thresholds (a threshold the rule
       leaves out is the index's, moved if needed so that review <= flag); no rule: the index's.
    2. segments are cut at that review level, and the character's verdict is its score against
       those levels (`verdict_for`).
    3. `decide`: a `flag` whose time on screen (`on_screen`) is below the rule's `min_seconds`
       becomes `review` (videos only: a still image has no time on screen).
The video's verdict is the strongest verdict of its characters (`strongest`); without a policy
that is exactly the index's thresholds applied to the top score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detector.match.results import PolicyMatch, Segment
from index.policy import Policy, Rule
from index.records import CharacterInfo

__all__ = ["Levels", "decide", "levels_for", "on_screen", "sampling_step", "strongest"]

_RANK = ("pass", "review", "flag")


@dataclass(frozen=True)
class Levels:
    """The thresholds one character is judged by, and the rule they came from (None: no rule)."""

    flag: float
    review: float
    rule: Rule | None = None
    #: the rule's name, else its 1-based position in the policy
    label: str | int | None = None


def levels_for(policy: Policy | None, info: CharacterInfo, *, flag: float, review: float) -> Levels:
    """Step 1: the levels of character `info` under `policy`, the index's being `flag` and `review`."""
    hit = policy.match(info.name, info.franchise, info.rights_holder) if policy is not None else None
    if hit is None:
        return Levels(flag, review)
    label, rule = hit
    if rule.flag is not None:
        flag, review = rule.flag, min(review, rule.flag)
    if rule.review is not None:
        review, flag = rule.review, max(flag, rule.review)
    return Levels(flag, review, rule, label)


def sampling_step(times: Sequence[float], duration: float | None) -> float:
    """Seconds between sampled frames: the median gap between consecutive sampled times; with one
    sampled frame, the video's duration (0 when unknown)."""
    gaps = np.diff(np.asarray(times, np.float64))
    return float(np.median(gaps)) if len(gaps) else float(duration or 0.0)


def on_screen(segments: Sequence[Segment], step: float) -> float:
    """Seconds a character is on screen: the sum over its segments of end - start + one sampling
    step (each sampled frame stands for one step, so a one-frame segment counts one step)."""
    return sum(s.end - s.start + step for s in segments)


def decide(levels: Levels, verdict: str, segments: Sequence[Segment], *, step: float,
           still: bool) -> tuple[str, PolicyMatch | None]:
    """Step 3: the character's verdict after `min_seconds`, and what its result reports (None when no rule matched)."""
    rule = levels.rule
    if rule is None or levels.label is None:
        return verdict, None
    seconds = None if still else on_screen(segments, step)
    if verdict == "flag" and rule.min_seconds is not None and seconds is not None and seconds < rule.min_seconds:
        verdict = "review"
    return verdict, PolicyMatch(rule=levels.label, action=rule.action, verdict=verdict,
                                on_screen=None if seconds is None else round(seconds, 3))


def strongest(verdicts: Sequence[str]) -> str:
    """The strongest of `verdicts` (flag > review > pass); `pass` when there are none."""
    return max(verdicts, key=_RANK.index, default="pass")
