"""The HTML review report: written by the real CLI, opened in headless Chromium.

Chromium comes from the Debian `chromium` package (CI installs it); without it the browser checks
are skipped with a message saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cdp import Browser
from helpers import reference_art, run_cli
from PIL import Image

from detector.media.synth import make_clip
from detector.runs.report import report_data, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                                    "(apt-get install chromium); report browser checks skipped")
HOSTILE = '<img src=x onerror="document.title=1">.mp4'
#: docs/cli.md "Review report": a 10,000-video report's HTML (thumbnails are separate files) stays under this
MAX_10K_BYTES = 10_000_000


def _chromium(url: str, *args: str) -> str:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--virtual-time-budget=8000", "--window-size=1280,1600", *args, url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def report(index_dir: Path, clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    videos = root / "videos"
    videos.mkdir()
    shutil.copy(clips["positive"], videos / "positive.mp4")
    shutil.copy(clips["negative"], videos / "negative.mp4")
    shutil.copy(clips["positive"], videos / HOSTILE)  # a flagged file whose name is markup
    # 1280x720: sampled frames are shrunk to 960 px, boxes must come back in the video's pixels
    truth = make_clip(videos / "wide.mp4", "report-wide", reference_art("benkei", 0), duration=3.0, appear=(0.5, 3.0),
              height_frac=0.5, x_frac=0.7, size=(1280, 720))
    out = root / "out"
    proc = run_cli("scan", videos, "--index", index_dir, "--out", out / "results.jsonl",
                   "--report", out / "report.html", "--fps", "2")
    assert proc.returncode == 1, proc.stderr  # something flagged
    (root / "truth.json").write_text(json.dumps(truth))
    return {"html": out / "report.html", "results": out / "results.jsonl", "root": root}


def test_report_lists_flagged_videos_with_thumbnails(report: dict[str, Path]) -> None:
    html = report["html"].read_text()
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.DOTALL)[1])
    results = [json.loads(line) for line in report["results"].read_text().splitlines()]
    shown = sorted(r["path"] for r in results if r["verdict"] in ("flag", "review"))
    assert sorted(r["p"] for r in data["rows"]) == shown and len(shown) >= 3
    assert [r["s"] for r in data["rows"]] == sorted((r["s"] for r in data["rows"]), reverse=True)
    files = report["html"].parent / "report_files"
    wide = next(r for r in results if r["path"].endswith("wide.mp4"))
    row = next(r for r in data["rows"] if r["p"] == wide["path"])
    who, _, segs, *checked = row["c"][0]
    assert checked == ([] if wide["characters"][0].get("inliers") is None else [wide["characters"][0]["inliers"]])
    assert data["characters"][who][0] == wide["characters"][0]["character"] == "benkei"
    frame_img, ref = segs[0][6], data["references"][segs[0][4]]
    assert ref[0] == wide["characters"][0]["segments"][0]["reference"] and frame_img and ref[1]
    with Image.open(files / frame_img) as im:
        thumb = im.convert("RGB")
    with Image.open(files / ref[1]) as im:
        assert max(thumb.size) <= 200 and max(im.size) <= 200
    assert (files / frame_img).stat().st_size < 30_000
    # the boxed region is drawn where the result's box is, in the 1280x720 video's coordinates
    x0, y0, x1, y1 = wide["characters"][0]["segments"][0]["box"]
    tx0, ty0, tx1, ty1 = json.loads((report["root"] / "truth.json").read_text())[0]
    assert x0 <= (tx0 + tx1) / 2 <= x1 and y0 <= (ty0 + ty1) / 2 <= y1  # the box holds the figure
    assert x1 > 960  # beyond the 960 px sampled width: the box was scaled back to the video's pixels
    s = thumb.width / 1280
    px = np.asarray(thumb, np.int16)
    edge = px[round((y0 + y1) / 2 * s), min(round(x0 * s) + 1, thumb.width - 1)]
    assert edge[0] > 150 and edge[0] - max(edge[1], edge[2]) > 80, edge  # the red box (JPEG-blurred)
    assert len(wide["timeline"]) == len(row["y"]) == 6
    assert row["t"] == {"a": 0.0, "d": 0.5}  # sampled at 2 fps
    assert max(v for _, v in wide["timeline"]) >= wide["score"] - 0.3


def test_report_again_from_results_reuses_thumbnails(report: dict[str, Path], tmp_path: Path) -> None:
    files = report["html"].parent / "report_files"
    before = {p.name: p.stat().st_mtime_ns for p in files.iterdir()}
    proc = run_cli("report", report["results"], "-o", report["html"], "--csv", tmp_path / "r.csv")
    assert proc.returncode == 0, proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in files.iterdir()} == before
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 1 + len(report["results"].read_text().splitlines())
    assert run_cli("report", report["results"]).returncode == 2  # nothing to write: a usage error


@needs_chromium
def test_report_renders_rows_and_images_in_chromium(report: dict[str, Path]) -> None:
    url = report["html"].as_uri()
    dom = _chromium(url, "--dump-dom")
    rows = len(re.findall(r'<tr class="row"', dom))
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', dom, re.DOTALL)[1])
    assert rows == len(data["rows"]) >= 3 and f'data-rendered="{rows}"' in dom
    states = re.findall(r'data-ok="(\w+)"', dom)
    assert states and all(s == "1" for s in states), states  # every thumbnail loaded
    # the hostile file name is shown as text, never parsed as markup
    assert "onerror=&quot;document.title=1&quot;&gt;.mp4" in dom or '&lt;img src=x onerror' in dom
    assert '<img src="x"' not in dom and "<title>1</title>" not in dom
    shot = report["root"] / "shot.png"
    _chromium(url, f"--screenshot={shot}")
    with Image.open(shot) as im:
        px = np.asarray(im.convert("RGB"), np.int16)
    red = (px[..., 0] > 200) & (px[..., 1] < 80) & (px[..., 2] < 80)  # drawn boxes and flag badges
    assert red.sum() > 200
    assert len(np.unique(px.reshape(-1, 3)[::7], axis=0)) > 500  # thumbnails, not just text on white


@needs_chromium
def test_decisions_clicked_in_the_report_download_and_apply(report: dict[str, Path], index_dir: Path,
                                                            tmp_path: Path) -> None:
    """Click decisions in the page, download them, and feed the file to `mamori review apply`."""
    row = "[...document.querySelectorAll('tr.row')].find(r => r.querySelector('a').textContent.endsWith('/{}'))"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with Browser(str(CHROMIUM), downloads) as b:
        b.open(report["html"].as_uri(), ready="document.body.dataset.rendered > 0")
        b.type("document.getElementById('reviewer')", "kim")
        b.click(row.format("positive.mp4") + ".querySelector('.dec button[data-d=not_infringing]')")
        b.type(row.format("positive.mp4") + ".querySelector('.dec .note')", "licensed fan art")
        b.click(row.format("wide.mp4") + ".querySelector('.dec button[data-d=infringing]')")
        b.click(row.format("wide.mp4") + ".querySelector('.dec button[data-d=\"\"]')")  # undecided again
        b.click(row.format("wide.mp4") + ".querySelector('.dec button[data-d=infringing]')")
        assert b.eval("document.getElementById('decided').textContent") == "2 decisions"
        b.click("document.getElementById('download')")
        got = b.download("decisions.jsonl")
    lines = [json.loads(line) for line in got.read_text().splitlines()]
    results = {Path(r["path"]).name: r for r in map(json.loads, report["results"].read_text().splitlines())}
    by_name = {Path(d["path"]).name: d for d in lines}
    assert by_name["positive.mp4"] == {"path": results["positive.mp4"]["path"], "sha256": results["positive.mp4"]["sha256"],
                                       "character": "akane", "decision": "not_infringing",
                                       "note": "licensed fan art", "reviewer": "kim"}
    assert by_name["wide.mp4"]["decision"] == "infringing" and by_name["wide.mp4"]["character"] == "benkei"
    assert len(lines) == 2
    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    proc = run_cli("review", "apply", got, "--index", index, "--results", report["results"], "--fps", "2")
    assert proc.returncode == 0, proc.stderr
    assert "2 decision(s) applied (1 not infringing into the allow-list, 1 infringing:" in proc.stderr, proc.stderr
    info = json.loads(run_cli("index", "info", index, "--json", check=True).stdout)
    assert info["allowlist"]["counts"]["akane"]["decisions"] == 1 and info["characters"]["benkei"]["from_review"] >= 1


def _fake_results(n: int, video: str, reference: str) -> list[dict[str, object]]:
    """n flagged results at the largest size a row can have (3 characters x 3 segments, a full
    120-point timeline), pointing at videos that no longer exist."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        chars = [{"character": f"character-{c}", "franchise": "Some Franchise", "rights_holder": "Some Studio K.K.",
                  "score": round(float(rng.random()), 4),
                  "segments": [{"start": 1.0 * s, "end": 1.0 * s + 2, "peak_time": 1.0 * s + 1,
                                "peak_score": 0.9, "reference": reference, "reference_id": "0123456789abcdef",
                                "similarity": 0.8, "box": [10, 20, 200, 300], "frames": 3,
                                "channel": "embedding", "inliers": 157} for s in range(3)],
                  "inliers": 157} for c in range(3)]
        rows.append({"path": f"{video}/day-2026-11-24/batch-{i // 1000:03d}/clip-{i:06d}.mp4", "verdict": "flag",
                     "score": chars[0]["score"], "frames": 120, "duration": 60.0, "characters": chars,
                     "error": None, "sha256": f"{i:064x}",
                     "timeline": [[round(t * 0.5, 3), round(float(v), 3)] for t, v in enumerate(rng.random(120))]})
    return rows


def test_a_10000_video_report_stays_small_and_opens(tmp_path: Path) -> None:
    ref = tmp_path / "ref.png"
    reference_art("akane", 0).save(ref)
    results = _fake_results(10_000, str(tmp_path / "gone"), str(ref))
    t0 = time.monotonic()
    n = write_report(results, tmp_path / "big.html")
    took = time.monotonic() - t0
    size = (tmp_path / "big.html").stat().st_size
    print(f"10,000-row report: {size / 1e6:.1f} MB HTML, written in {took:.1f}s", file=sys.stderr)
    assert n == 10_000 and size < MAX_10K_BYTES
    # the one reference (frames are gone) and the rows' sha256 for the decision buttons
    assert sorted(p.suffix for p in (tmp_path / "big_files").iterdir()) == [".jpg", ".js"]
    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed: 10,000-row render not checked")
    dom = _chromium((tmp_path / "big.html").as_uri(), "--dump-dom")
    assert 'data-rendered="50"' in dom and "page 1 of 200 (10000 videos)" in dom
    assert "video file not found" in dom


def test_rows_carry_the_geometric_check(tmp_path: Path) -> None:
    ref = tmp_path / "ref.png"
    reference_art("akane", 0).save(ref)
    [checked] = _fake_results(1, str(tmp_path / "gone"), str(ref))
    unchecked = json.loads(json.dumps(checked))
    unchecked["path"] = "other.mp4"
    for c in unchecked["characters"]:
        del c["inliers"]
    data = report_data([checked, unchecked], None, tmp_path)
    by_path = {r["p"]: r for r in data["rows"]}
    assert [c[3] for c in by_path[checked["path"]]["c"]] == [157, 157, 157]
    assert all(len(c) == 3 for c in by_path["other.mp4"]["c"])  # no check: nothing added to the row
