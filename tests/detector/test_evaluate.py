"""`detector.runs.evaluate`: metrics and threshold suggestions on hand-made results with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.errors import ConfigError
from detector.runs.evaluate import Label, average_precision, evaluate, read_labels, threshold_for_fpr


def _res(score: float, verdict: str, char: str | None = None, seg: tuple[float, float] = (0.0, 0.0)) -> dict:
    chars = [] if char is None else [{"character": char, "score": score,
                                       "segments": [{"start": seg[0], "end": seg[1]}]}]
    return {"score": score, "verdict": verdict, "characters": chars}


def test_average_precision_known_values() -> None:
    assert average_precision([(0.9, True), (0.1, False)]) == 1.0
    assert average_precision([(0.9, False), (0.1, True)]) == 0.5
    assert average_precision([(0.5, True), (0.5, False)]) == 0.5  # ties go against the positives


def test_threshold_for_fpr() -> None:
    neg = [0.1, 0.2, 0.3, 0.9]
    assert threshold_for_fpr(neg, 0.0) == pytest.approx(0.9001)  # nothing may pass
    assert threshold_for_fpr(neg, 0.25) == pytest.approx(0.3001)  # the 0.9 one may
    assert threshold_for_fpr(neg, 0.99) == pytest.approx(0.1001)
    assert threshold_for_fpr([], 0.05) == 0.0


def test_evaluate_metrics() -> None:
    labels = {
        "p1": Label(True, "akane", (1.0, 3.0), "nearcopy"),
        "p2": Label(True, "benkei", (0.0, 2.0), "nearcopy"),
        "p3": Label(True, "chiyo", (2.0, 4.0), "pose"),
        "n1": Label(False, track="negative"),
        "n2": Label(False, track="negative"),
    }
    results = {
        "p1": _res(0.95, "flag", "akane", (1.0, 2.5)),  # right character, segment IoU (0.75..2.75)/(1..3) = 0.75
        "p2": _res(0.90, "flag", "akane", (0.0, 2.0)),  # wrong character
        "p3": _res(0.30, "review", "chiyo", (2.0, 4.0)),  # not flagged
        "n1": _res(0.60, "flag", "benkei"),
        "n2": _res(0.10, "pass"),
    }
    r = evaluate(results, labels, flag_score=0.5, review_score=0.2, target_fpr=0.0, sample_step=0.5)
    assert (r.n_positive, r.n_negative) == (3, 2)
    assert r.recall == pytest.approx(2 / 3) and r.fpr == pytest.approx(0.5)
    assert r.char_acc == pytest.approx(0.5)
    # p1's segment [0.75, 2.75] vs [1, 3]: IoU 1.75 / 2.25
    assert r.segment_iou == pytest.approx(1.75 / 2.25) and r.segment_acc == 1.0
    # ranking p1 .95, p2 .90, n1 .60, p3 .30, n2 .10: AP = (1 + 1 + 3/4) / 3
    assert r.ap == pytest.approx((1 + 1 + 0.75) / 3)
    assert r.suggested_flag == pytest.approx(0.6001)
    assert r.recall_at_suggested == pytest.approx(2 / 3) and r.fpr_at_suggested == 0.0
    assert r.tracks["nearcopy"] == {"n": 2, "flag": 2, "review": 0, "median_score": 0.95}
    assert "suggested for FPR <= 0" in "\n".join(r.lines())


def test_missing_and_error_results_count_as_unflagged() -> None:
    labels = {"p": Label(True, "akane"), "q": Label(True, "akane"), "n": Label(False)}
    results = {"q": {"verdict": "error", "score": 0.0, "characters": []}, "n": _res(0.1, "pass")}
    r = evaluate(results, labels, flag_score=0.5, review_score=0.2)
    assert r.missing == ["p"] and r.errors == ["q"] and r.recall == 0.0


def test_read_labels(tmp_path: Path) -> None:
    good = tmp_path / "labels.json"
    good.write_text(json.dumps({"a": {"positive": True, "character": "akane", "segment": [1, 2], "track": "x"},
                                "b": {"positive": False, "character": None, "segment": None}}))
    labels = read_labels(good)
    assert labels["a"] == Label(True, "akane", (1.0, 2.0), "x") and labels["b"].track == "negative"
    for bad, why in [
        ({"a": {"positive": "yes"}}, "boolean"),
        ({"a": {"positive": True}}, "character"),
        ({"a": {"positive": False, "segment": [3, 1]}}, "segment"),
        ([], "non-empty"),
    ]:
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=why):
            read_labels(p)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON"):
        read_labels(tmp_path / "junk.json")
    with pytest.raises(ConfigError, match="no such labels file"):
        read_labels(tmp_path / "missing.json")


def test_undefined_metrics_are_null_in_json() -> None:
    r = evaluate({"n": _res(0.1, "pass")}, {"n": Label(False)}, flag_score=0.5, review_score=0.2)
    d = r.to_dict()
    assert d["ap"] is None and d["recall"] is None and d["char_acc"] is None and d["fpr"] == 0.0
    json.dumps(d, allow_nan=False)  # strict JSON
