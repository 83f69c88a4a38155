"""Flood counting (`detector.flood`): what a match is, the threshold, the sliding window, the alert lines."""

from __future__ import annotations

from typing import Any

import pytest

from detector.flood import FloodCounter, flood_lines, matched_references


def _result(*refs: str, character: str = "akane") -> dict[str, Any]:
    segments = [{"reference_id": r, "reference": f"/art/{r}.png"} for r in refs]
    return {"verdict": "flag" if refs else "pass", "characters": [{"character": character, "segments": segments}]
            if refs else []}


def test_a_video_matches_each_reference_of_its_segments_once() -> None:
    res = _result("r1", "r1", "r2")
    assert matched_references(res) == {"r1": ("akane", "/art/r1.png"), "r2": ("akane", "/art/r2.png")}
    assert matched_references({"verdict": "error", "characters": []}) == {}
    fc = FloodCounter()
    fc.add(res)
    assert [(f.reference_id, f.count) for f in fc.top()] == [("r1", 1), ("r2", 1)]


@pytest.mark.parametrize(
    ("hits", "total", "share", "min_total", "flooding"),
    [
        (3, 50, 0.05, 50, ["r1"]),  # 6% of 50
        (2, 50, 0.05, 50, []),  # 4%
        (5, 100, 0.05, 50, []),  # exactly the share is not over it
        (6, 100, 0.05, 50, ["r1"]),
        (10, 49, 0.05, 50, []),  # too few videos to judge
        (1, 1, 0.5, 1, ["r1"]),
    ],
)
def test_threshold(hits: int, total: int, share: float, min_total: int, flooding: list[str]) -> None:
    fc = FloodCounter()
    for i in range(total):
        fc.add(_result("r1") if i < hits else _result())
    assert fc.total == total
    assert [f.reference_id for f in fc.flooding(share=share, min_total=min_total)] == flooding


def test_window_slides_and_forget_drops_a_reference() -> None:
    fc = FloodCounter(window=4)
    for res in (_result("r1"), _result("r1"), _result("r2"), _result(), _result()):
        fc.add(res)
    assert fc.total == 4
    assert {f.reference_id: f.count for f in fc.top()} == {"r1": 1, "r2": 1}
    fc.forget("r1")
    assert [f.reference_id for f in fc.top()] == ["r2"]
    for _ in range(4):
        fc.add(_result())
    assert fc.top() == [] and fc.total == 4


def test_alert_lines_name_the_reference_and_hint() -> None:
    fc = FloodCounter()
    for _ in range(3):
        fc.add(_result("r1"))
    fc.add(_result())
    lines = flood_lines(fc.flooding(share=0.5, min_total=2), index="idx")
    assert lines[0] == "flood: reference r1 (akane, /art/r1.png) matched 3 of 4 inputs (75.0%)"
    assert "mamori index quarantine idx ID" in lines[1] and "mamori index enable idx ID" in lines[1]
    assert flood_lines([]) == []


def test_service_metrics_name_at_most_top_k_references() -> None:
    from pathlib import Path

    from prometheus_client import CollectorRegistry, generate_latest

    from detector.service.config import ServiceConfig
    from detector.service.flood import TOP_K, FloodWatch

    registry = CollectorRegistry()
    watch = FloodWatch(ServiceConfig(Path("idx"), flood_window=100, flood_min=1, flood_share=0.05), registry)
    started = [watch.observe(_result(f"r{i:02d}", "r00")) for i in range(3 * TOP_K)]
    assert [f.reference_id for f in started[0]] == ["r00"]  # alerts once, when it starts to flood
    assert all("r00" not in {f.reference_id for f in s} for s in started[1:])
    text = generate_latest(registry).decode()
    labelled = [ln for ln in text.splitlines() if ln.startswith("mamori_flood_top_share{")]
    assert len(labelled) == TOP_K and labelled[0].startswith('mamori_flood_top_share{reference="r00"} 1.0')
    assert f"mamori_flood_window_requests {3 * TOP_K}.0" in text
