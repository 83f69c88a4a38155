"""Flood counting (`detector.runs.flood`): what a match is, the threshold, the sliding window, the alert lines."""

from __future__ import annotations

from typing import Any

import pytest

from detector.runs.flood import FloodCounter, flood_lines, matched_references


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


def test_service_metrics_name_no_reference_and_the_admin_view_lists_top_k() -> None:
    """/metrics needs no token: counts only; the references are in `GET /v1/index` for admins."""
    from pathlib import Path
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest

    from detector.service.config import ServiceConfig
    from detector.service.flood import TOP_K, FloodWatch

    registry = CollectorRegistry()
    watch = FloodWatch(ServiceConfig(Path("idx"), flood_window=100, flood_min=1, flood_share=0.05), registry)
    started = [watch.observe(_result(f"r{i:02d}", "r00")) for i in range(3 * TOP_K)]
    assert [f.reference_id for f in started[0]] == ["r00"]  # alerts once, when it starts to flood
    assert all("r00" not in {f.reference_id for f in s} for s in started[1:])
    text = generate_latest(registry).decode()
    assert "reference=" not in text and "r00" not in text and "r01" not in text
    assert "mamori_flood_top_share 1.0" in text and f"mamori_flood_window_requests {3 * TOP_K}.0" in text
    top = watch.summary(SimpleNamespace(references={}))["top"]  # type: ignore[arg-type]
    assert len(top) == TOP_K and top[0]["reference_id"] == "r00" and top[0]["flooding"]


def test_automatic_quarantine_reason_carries_its_expiry() -> None:
    """A restarted server reads the expiry back from the reason; `due` hands each out once."""
    from pathlib import Path
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from detector.runs.flood import FloodReference
    from detector.service.config import ServiceConfig
    from detector.service.flood import FloodWatch, flood_reason

    reason, until = flood_reason(FloodReference("r1", "akane", "/a.png", 3, 4), 1_000_000.0, 60)
    assert until == 1_000_060.0 and reason.startswith("flood (automatic, expires 1970-01-12T13:47:40Z): matched 3 of 4")
    watch = FloodWatch(ServiceConfig(Path("idx"), flood_action="quarantine"), CollectorRegistry())
    refs = {"r1": SimpleNamespace(id="r1", quarantine=reason), "r2": SimpleNamespace(id="r2", quarantine="by hand"),
            "r3": SimpleNamespace(id="r3", quarantine="")}
    watch.restore(SimpleNamespace(references=refs))  # type: ignore[arg-type]
    assert watch.expiry == {"r1": (until, reason)}
    assert watch.due(until - 1) == [] and watch.due(until) == [("r1", reason)] and watch.due(until + 9) == []
    assert watch.may_quarantine("r1")
    watch.auto["r1"] += 1  # the cap (default 1): score traffic quarantines a reference once per run
    assert not watch.may_quarantine("r1") and watch.may_quarantine("r2")
