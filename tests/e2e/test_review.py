"""End to end: scan → a reviewer's not-infringing decision → `mamori review apply` → scan again."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from helpers import reference_art, run_cli

from detector.media.synth import make_clip


def _lines(path: Path) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in map(json.loads, path.read_text().splitlines())}


def test_not_infringing_decision_suppresses_that_clip_only(index_dir: Path, clips: dict[str, Path],
                                                            tmp_path: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    other = tmp_path / "other.mp4"  # akane again, in another pose and scene
    make_clip(other, "clip-other", reference_art("akane", 1), duration=3.0, appear=(0.5, 2.5),
              height_frac=0.6, x_frac=0.3)
    first = tmp_path / "first.jsonl"
    assert run_cli("scan", clips["positive"], other, "--index", index, "--out", first).returncode == 1
    before = _lines(first)
    pos = before["positive.mp4"]
    assert pos["verdict"] == "flag" and pos["characters"][0]["character"] == "akane" and "suppressed" not in pos
    assert before["other.mp4"]["verdict"] == "flag"

    sha = hashlib.sha256(clips["positive"].read_bytes()).hexdigest()
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_text(json.dumps({"path": str(clips["positive"]), "sha256": sha, "character": "akane",
                                     "decision": "not_infringing", "note": "licensed", "reviewer": "kim"}) + "\n"
                         + json.dumps({"path": str(other), "sha256": "0" * 64, "character": "akane",
                                       "decision": "not_infringing", "reviewer": "kim"}) + "\n")
    proc = run_cli("review", "apply", decisions, "--index", index, "--results", first)
    assert proc.returncode == 1, proc.stderr  # the second decision names the wrong sha256: skipped
    assert "1 decision(s) applied" in proc.stderr and "1 skipped" in proc.stderr, proc.stderr
    assert f"{decisions}:2" in proc.stderr

    again = tmp_path / "again.jsonl"
    run_cli("scan", clips["positive"], other, "--index", index, "--out", again)
    after = _lines(again)
    pos = after["positive.mp4"]
    assert all(c["character"] != "akane" for c in pos["characters"]), pos
    [sup] = [s for s in pos["suppressed"] if s["character"] == "akane"]
    assert sup["reviewer"] == "kim" and sup["decision_id"].startswith("d-") and sup["frames"] >= 1
    assert after["other.mp4"]["verdict"] == "flag" and after["other.mp4"]["characters"][0]["character"] == "akane"

    info = json.loads(run_cli("index", "info", index, "--json", check=True).stdout)
    assert info["format_version"] == 6 and info["allowlist"]["counts"]["akane"]["decisions"] == 1
    [entry] = info["allowlist"]["entries"]
    assert entry["id"] == sup["decision_id"] and entry["note"] == "licensed" and entry["sha256"] == sha
    assert "allowlist  akane" in run_cli("index", "info", index, check=True).stdout

    run_cli("index", "remove", index, "--character", "akane", check=True)  # its allow-list goes with it
    assert json.loads(run_cli("index", "info", index, "--json", check=True).stdout)["allowlist"]["entries"] == []


def test_bad_decisions_line_is_an_error(index_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"path": "a.mp4", "sha256": "' + "a" * 64 + '", "character": "akane", "decision": "maybe"}\n')
    proc = run_cli("review", "apply", bad, "--index", index_dir)
    assert proc.returncode == 2 and f"{bad}:1" in proc.stderr and "decision must be one of" in proc.stderr


def test_infringing_decision_adds_confirmed_references_once(index_dir: Path, clips: dict[str, Path],
                                                             tmp_path: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    results = tmp_path / "results.jsonl"
    assert run_cli("scan", clips["positive"], "--index", index, "--out", results).returncode == 1
    sha = hashlib.sha256(clips["positive"].read_bytes()).hexdigest()
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_text(json.dumps({"path": str(clips["positive"]), "sha256": sha, "character": "akane",
                                     "decision": "infringing", "note": "fan edit", "reviewer": "kim"}) + "\n")
    only = run_cli("review", "apply", decisions, "--index", index, "--results", results, "--no-add-confirmed")
    assert only.returncode == 0 and "1 infringing recorded only" in only.stderr, only.stderr
    refs_before = json.loads(run_cli("index", "info", index, "--json", check=True).stdout)["counts"]["references"]

    proc = run_cli("review", "apply", decisions, "--index", index, "--results", results)
    assert proc.returncode == 0 and "1 infringing:" in proc.stderr, proc.stderr
    info = json.loads(run_cli("index", "info", index, "--json", check=True).stdout)
    added = info["characters"]["akane"]["from_review"]
    assert added >= 1 and info["counts"]["references"] == refs_before + added
    assert "confirmed  akane" in run_cli("index", "info", index, check=True).stdout
    files = sorted((index / "confirmed").glob("d-*.png"))
    assert len(files) == added

    again = run_cli("review", "apply", decisions, "--index", index, "--results", results)  # idempotent
    assert again.returncode == 0 and "already in the index" in again.stderr, again.stderr
    info = json.loads(run_cli("index", "info", index, "--json", check=True).stdout)
    assert info["characters"]["akane"]["from_review"] == added and sorted((index / "confirmed").glob("*")) == files

    assert not any(q["source_path"].startswith(str(index / "confirmed")) for q in info["quarantined"])
    run_cli("index", "remove", index, "--reference", files[0], check=True)  # removable like any reference
    assert not files[0].exists()


def test_marked_infringing_decision_finds_a_figure_the_scan_missed(index_dir: Path, tmp_path: Path) -> None:
    """A redraw the index does not know: the reviewer marks where akane is (time + box) in a clip
    whose result does not list akane; that region becomes her reference and finds the next redraw."""
    from index.store import IndexStore

    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    redraw = reference_art("ziggurat", 0)  # another figure: what a generator made of akane, say
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    boxes = make_clip(first, "clip-redraw-1", redraw, duration=3.0, appear=(0.5, 2.5), height_frac=0.6, x_frac=0.3)
    make_clip(second, "clip-redraw-2", redraw, duration=3.0, appear=(0.5, 2.5), height_frac=0.5, x_frac=0.65)
    before = tmp_path / "before.jsonl"
    run_cli("scan", first, second, "--index", index, "--out", before)
    assert not any(c["character"] == "akane" for r in _lines(before).values() for c in r["characters"])

    sha = hashlib.sha256(first.read_bytes()).hexdigest()
    mark = {"path": str(first), "sha256": sha, "character": "akane", "decision": "infringing", "reviewer": "kim"}
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_text(json.dumps({**mark, "time": 1.5, "box": list(boxes[12])}) + "\n"  # frame 18 = 1.5 s
                         + json.dumps({**mark, "time": 9.0}) + "\n"  # past the end: skipped
                         + json.dumps(mark) + "\n")  # no mark: the result has no akane to take, skipped
    proc = run_cli("review", "apply", decisions, "--index", index, "--results", before)
    assert proc.returncode == 1 and "1 infringing: 1 reference(s) added" in proc.stderr, proc.stderr
    assert f"{decisions}:2" in proc.stderr and "past the end" in proc.stderr, proc.stderr
    assert f"{decisions}:3" in proc.stderr and "has no match of 'akane'" in proc.stderr, proc.stderr
    assert "confirmed  akane 1 reference(s)" in run_cli("index", "info", index, check=True).stdout
    [ref] = [r for r in IndexStore.open(index).references.values() if r.extra.get("source") == "review"]
    assert ref.extra["mark_time"] == "1.500" and ref.extra["mark_box"] == ",".join(map(str, boxes[12]))

    after = tmp_path / "after.jsonl"
    run_cli("scan", second, "--index", index, "--out", after)
    [rec] = _lines(after).values()
    assert rec["verdict"] == "flag" and rec["characters"][0]["character"] == "akane", rec


def test_decision_without_results_scores_the_input_again(index_dir: Path, clips: dict[str, Path],
                                                          tmp_path: Path) -> None:
    """No --results: the decision's segments come from scoring the file again (item 1's re-read path)."""
    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    sha = hashlib.sha256(clips["positive"].read_bytes()).hexdigest()
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_text(json.dumps({"path": str(clips["positive"]), "sha256": sha, "character": "akane",
                                     "decision": "not_infringing", "reviewer": "kim"}) + "\n")
    proc = run_cli("review", "apply", decisions, "--index", index)
    assert proc.returncode == 0 and "1 decision(s) applied" in proc.stderr, proc.stderr
    info = json.loads(run_cli("index", "info", index, "--json", check=True).stdout)
    assert info["allowlist"]["counts"]["akane"]["decisions"] == 1
    out = tmp_path / "again.jsonl"
    run_cli("scan", clips["positive"], "--index", index, "--out", out)
    [again] = _lines(out).values()
    assert all(c["character"] != "akane" for c in again["characters"]) and again["suppressed"], again
