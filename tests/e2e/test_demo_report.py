"""`mamori demo` as a new user runs it, then `mamori report` on its results (issue 27.10): each demo
result carries the sha256 of its file as `scan` writes it, so the report offers decision buttons;
a result line without one says why, not that a file is missing."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import run_cli

from detector.runs.report_decisions import NO_SHA_FILE, NO_SHA_LINE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _dom(html: Path) -> str | None:
    """The rendered page without its scripts (headless Chromium), or None without Chromium."""
    if CHROMIUM is None:
        return None
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=8000",
                           "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the page's own script holds every message it may show: judge the rendered elements only
    return re.sub(r"<script\b.*?</script>", "", proc.stdout, flags=re.DOTALL)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    run_cli("demo", "--out", out, "--backbone", "effnet-lite0-imagenet", check=True)
    return out


def test_demo_results_carry_sha256_and_the_report_offers_decisions(demo: Path) -> None:
    lines = [json.loads(ln) for ln in (demo / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 4
    for rec in lines:
        assert rec["sha256"] == hashlib.sha256(Path(rec["path"]).read_bytes()).hexdigest(), rec["path"]
    report = demo / "report.html"
    run_cli("report", demo / "results.jsonl", "-o", report, check=True)
    sidecar = (demo / "report_files" / "sha256.js").read_text()
    flagged = [rec["sha256"] for rec in lines if rec["verdict"] != "pass"]  # the report's rows
    assert len(flagged) == 2 and all(sha in sidecar for sha in flagged) and "-" * 64 not in sidecar
    dom = _dom(report)
    if dom is not None:  # rendered: buttons on every row that shows a character, no "no sha256" text
        assert len(re.findall(r'data-d="infringing"', dom)) >= 2 and "no sha256" not in dom


def test_a_result_without_sha256_says_why(demo: Path, tmp_path: Path) -> None:
    """A line from the HTTP API or the Python API has no sha256: the row names that, not a missing file."""
    rec = json.loads((demo / "results.jsonl").read_text().splitlines()[0])
    del rec["sha256"]
    (tmp_path / "r.jsonl").write_text(json.dumps(rec) + "\n")
    run_cli("report", tmp_path / "r.jsonl", "-o", tmp_path / "r.html", check=True)
    page = (tmp_path / "r.html").read_text()
    assert json.dumps(NO_SHA_LINE) in page and json.dumps(NO_SHA_FILE) in page
    assert "report_files/sha256.js missing?" not in page
    dom = _dom(tmp_path / "r.html")
    if dom is not None:
        assert "this result line has no sha256" in dom and 'data-d="infringing"' not in dom
