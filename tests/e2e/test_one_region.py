"""Issue 27, point 4, through the real CLI: one region of a frame is evidence for one character.

Two indexed characters share their art (a re-coloured badge is all that differs); a frame shows
that art once. Before the fix each character took the same region as its best evidence, and the
result listed both, flagged, with the same box.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import detailed_art, pasted, run_cli
from PIL import ImageDraw

from detector.media.synth import write_video


def test_one_region_explains_one_character(tmp_path: Path, background_dir: Path) -> None:
    art = detailed_art("twins")
    refs = tmp_path / "refs"
    for name, badge in (("twin-a", (200, 30, 30)), ("twin-b", (30, 30, 200))):
        (refs / name).mkdir(parents=True)
        im = art.copy()
        ImageDraw.Draw(im).rectangle((4, 4, 14, 14), fill=badge)
        im.save(refs / name / "0.png")
    (refs / "other").mkdir()
    detailed_art("someone-else").save(refs / "other" / "0.png")
    index = tmp_path / "index"
    run_cli("index", "build", refs, "--out", index, "--backbone", "effnet-lite0-imagenet", "--background",
            background_dir, check=True)
    frame, _ = pasted(art, height_frac=0.6, angle=0.0)
    frame.save(tmp_path / "frame.png")

    proc = run_cli("score", tmp_path / "frame.png", "--index", index)
    assert proc.returncode in (0, 1), proc.stderr
    res = json.loads(proc.stdout)
    found = [(c["character"], c["score"], [s["box"] for s in c["segments"]]) for c in res["characters"]]
    assert res["verdict"] == "flag" and len(found) == 1 and found[0][0] in ("twin-a", "twin-b"), found
    boxes = [tuple(s["box"]) for c in res["characters"] for s in c["segments"]]
    assert len(boxes) == len(set(boxes))  # no box drawn for two names


def test_rescan_gives_a_region_to_one_character_of_the_whole_index(tmp_path: Path, background_dir: Path) -> None:
    """A character added after the scan does not take a region that explains a character already
    indexed: `rescan` assigns regions among all the index's characters, as a fresh scan does, and
    only then keeps the new ones."""
    art = detailed_art("twins")
    badged = {}
    for name, badge in (("twin-a", (200, 30, 30)), ("twin-b", (30, 30, 200))):
        im = art.copy()
        ImageDraw.Draw(im).rectangle((4, 4, 14, 14), fill=badge)
        badged[name] = im
    refs, later = tmp_path / "refs", tmp_path / "later"
    for folder, name, im in ((refs, "twin-a", badged["twin-a"]), (later, "twin-b", badged["twin-b"]),
                             (refs, "other", detailed_art("someone-else"))):
        (folder / name).mkdir(parents=True)
        im.save(folder / name / "0.png")
    index = tmp_path / "index"
    run_cli("index", "build", refs, "--out", index, "--backbone", "effnet-lite0-imagenet", "--background",
            background_dir, check=True)
    frame, _ = pasted(badged["twin-a"], height_frac=0.6, angle=0.0)  # twin-a's own art: twin-a's region
    video = tmp_path / "v.mp4"
    write_video(video, [frame] * 24)
    store = tmp_path / "scans.store"
    run_cli("scan", video, "--index", index, "--store", store, "--out", tmp_path / "scan.jsonl", "-q")
    run_cli("index", "add", index, later, check=True)

    def names(out: Path) -> list[str]:
        [rec] = (json.loads(ln) for ln in out.read_text().splitlines())
        return [c["character"] for c in rec["characters"]]

    run_cli("scan", video, "--index", index, "--out", tmp_path / "fresh.jsonl", "-q")
    assert names(tmp_path / "fresh.jsonl") == ["twin-a"]  # a fresh scan gives the region to twin-a only
    proc = run_cli("rescan", store, "--index", index, "--out", tmp_path / "rescan.jsonl", "-q")
    assert proc.returncode in (0, 1), proc.stderr
    [rec] = (json.loads(ln) for ln in (tmp_path / "rescan.jsonl").read_text().splitlines())
    assert rec["rescan"]["characters"] == ["twin-b"] and rec["rescan"]["exact"], rec["rescan"]
    assert names(tmp_path / "rescan.jsonl") == [] and rec["verdict"] == "pass", rec
