from __future__ import annotations

import numpy as np
import pytest

from index.calibrate import (
    MARGIN,
    SCORE_FLAG,
    SCORE_REVIEW,
    Z_FLAG,
    background_similarities,
    calibrate,
    calibrated_score,
)


def test_background_similarities_takes_best_region_and_reference() -> None:
    refs = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
    chars = ["a", "b", "b"]
    bg = np.array([[1, 0], [0, 1], [0.8, 0.6]], np.float32)
    groups = np.array([0, 0, 1])  # image 0 has two regions, image 1 one
    sims = background_similarities(refs, chars, bg, groups)
    np.testing.assert_allclose(sims["a"], [1.0, 0.8], atol=1e-6)
    np.testing.assert_allclose(sims["b"], [1.0, 0.96], atol=1e-6)


@pytest.mark.parametrize(
    ("values", "flag_sim", "source"),
    [
        (np.linspace(0.1, 0.5, 20), 0.5 + MARGIN, "background"),  # just above the closest background image
        (np.full(20, 0.3), 0.3 + MARGIN, "background"),
        (np.array([0.2, 0.3]), 0.52 + Z_FLAG * 0.05, "default"),  # too few: effnet defaults
    ],
)
def test_calibrate_rule(values: np.ndarray, flag_sim: float, source: str) -> None:
    cal = calibrate({"c": values}, "effnet-lite0-imagenet")["c"]
    assert cal.source == source
    assert cal.flag_sim == pytest.approx(flag_sim)
    assert cal.sigma >= 0.02
    assert calibrated_score(cal.flag_sim, cal.flag_sim, cal.sigma) == pytest.approx(SCORE_FLAG)
    assert calibrated_score(cal.review_sim, cal.flag_sim, cal.sigma) == pytest.approx(SCORE_REVIEW)


def test_calibrated_score_monotone_and_bounded() -> None:
    s = calibrated_score(np.linspace(-1, 1, 201), 0.6, 0.05)
    assert np.all(np.diff(s) >= 0) and s.min() >= 0 and s.max() <= 1


def test_scores_comparable_across_characters() -> None:
    # the same margin above each character's own threshold, in its own spread, gives the same score
    a = calibrated_score(0.6 + 2 * 0.05, 0.6, 0.05)
    b = calibrated_score(0.3 + 2 * 0.10, 0.3, 0.10)
    assert a == pytest.approx(b)
