"""`index.calibrate`: normalisation, shared threshold, generic references, on vectors with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from index.calibrate import (
    BG_WEIGHT,
    OTHER_WEIGHT,
    SCORE_FLAG,
    SCORE_REVIEW,
    background_scores,
    calibrate,
    calibrated_score,
    default_for,
    generic_references,
    normalise,
)
from index.tuning import tuning_for


def _unit(rows: list[list[float]]) -> np.ndarray:
    a = np.asarray(rows, np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_normalise_subtracts_background_and_best_other_character() -> None:
    per_char = np.array([[0.9, 0.5, 0.2], [0.3, 0.3, 0.1]], np.float32)
    bg = np.array([0.1, 0.0], np.float32)
    n = normalise(per_char, bg)
    expected = per_char - BG_WEIGHT * bg[:, None] - OTHER_WEIGHT * np.array([[0.5, 0.9, 0.9], [0.3, 0.3, 0.3]])
    np.testing.assert_allclose(n, expected, atol=1e-6)
    # a region that matches every character alike (franchise style) scores lower than a distinct match
    assert n[0, 0] > n[1, 0]
    # one character: no other-character term
    np.testing.assert_allclose(normalise(np.array([[0.7]]), np.array([0.2])), [[0.5]], atol=1e-6)


def test_background_scores_leave_each_image_out_of_its_own_background_term() -> None:
    # two background images, each with two identical regions; reference = image 0's region
    bg = _unit([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]])
    groups = np.array([0, 0, 1, 1])
    refs = _unit([[1, 0, 0]])
    chars, scores = background_scores(refs, ["a"], bg, groups)
    assert chars == ["a"] and scores.shape == (2, 1)
    # image 0: s = 1, its background term comes from image 1 only (cosine 0) -> n = 1
    # image 1: s = 0, background term from image 0 (cosine 0) -> n = 0
    np.testing.assert_allclose(scores[:, 0], [1.0, 0.0], atol=1e-6)


def test_calibrate_shared_threshold_and_score_scale() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(0.1, 0.05, size=(20, 3)).astype(np.float32)
    cal = calibrate(["a", "b", "c"], scores, "effnet-lite0-imagenet")
    flags = {round(c.flag_sim, 6) for c in cal.values()}
    assert flags == {round(float(scores.max()) + tuning_for("effnet-lite0-imagenet").margin, 6)}  # above every background image, all characters
    for j, c in enumerate("abc"):
        assert cal[c].source == "background" and cal[c].bg_max == pytest.approx(scores[:, j].max())
        assert calibrated_score(cal[c].flag_sim, cal[c].flag_sim, cal[c].sigma) == pytest.approx(SCORE_FLAG)
        assert calibrated_score(cal[c].review_sim, cal[c].flag_sim, cal[c].sigma) == pytest.approx(SCORE_REVIEW)
    # no background image reaches the flag score
    assert calibrated_score(scores, cal["a"].flag_sim, cal["a"].sigma).max() < SCORE_FLAG


def test_calibrate_without_enough_background_uses_backbone_defaults() -> None:
    cal = calibrate(["a"], np.zeros((3, 1), np.float32), "effnet-lite0-imagenet")["a"]
    assert cal.source == "default" and (cal.flag_sim, cal.sigma) == default_for("effnet-lite0-imagenet")
    assert default_for("openclip:ViT-B-16:x") == default_for("openclip")


def test_calibrated_score_monotone_and_bounded() -> None:
    s = calibrated_score(np.linspace(-1, 1, 201), 0.2, 0.05)
    assert np.all(np.diff(s) >= 0) and s.min() >= 0 and s.max() <= 1


def test_generic_reference_is_flagged_and_a_distinct_one_is_not() -> None:
    rng = np.random.default_rng(1)
    common = np.zeros(64, np.float32)
    common[0] = 1.0
    # 12 background images: a shared component (e.g. "a figure on a plain panel") + their own content
    bg_rows, groups = [], []
    for i in range(12):
        own = rng.normal(size=64).astype(np.float32)
        for _ in range(2):
            bg_rows.append(0.6 * common + own / np.linalg.norm(own) + 0.05 * rng.normal(size=64))
            groups.append(i)
    bg = _unit(bg_rows)
    distinct = rng.normal(size=64)
    refs = _unit([common, distinct])  # ref 0 is just the shared component: generic
    out = generic_references(refs, {"generic": [0], "distinct": [1]}, bg, np.array(groups))
    assert set(out) == {"generic"} and "median similarity" in out["generic"]
    # too few background images: nothing is judged
    assert generic_references(refs, {"generic": [0]}, bg[:4], np.array(groups[:4])) == {}
