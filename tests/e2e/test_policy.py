"""Match policy end to end: `mamori index policy` through the real CLI, then scans and the HTTP server."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx
import pytest
from helpers import PROTECTED, reference_art, run_cli, serving

from detector.media.synth import composite, draw_scene

SAGA = """
[[rule]]
name = "saga"
franchise = "Sunset Saga"
flag = 0.6
action = "block"
"""


@pytest.fixture(scope="module")
def saga_index(tmp_path_factory: pytest.TempPathFactory, refs_dir: Path, background_dir: Path) -> Path:
    """The session's characters, indexed from a manifest with franchise "Sunset Saga"; global flag
    threshold 0.99, so the positive clip (score ~0.94) is a `review` without a policy."""
    root = tmp_path_factory.mktemp("saga")
    with open(root / "refs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "character", "franchise", "rights_holder", "license"])
        w.writerows([p, p.parent.name, "Sunset Saga", "Studio X", "test"] for p in sorted(refs_dir.glob("*/*.png")))
    run_cli("index", "build", "--manifest", root / "refs.csv", "--out", root / "index", "--backbone",
            "effnet-lite0-imagenet", "--background", background_dir, check=True)
    run_cli("index", "thresholds", root / "index", "--flag", "0.99", "--review", "0.5", check=True)
    return root / "index"


def _scan(index: Path, clip: Path, out: Path) -> dict:
    run_cli("scan", clip, "--index", index, "--out", out)
    return json.loads(out.read_text())


def test_policy_through_the_cli(saga_index: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "saga.toml").write_text(SAGA)
    (tmp_path / "short.toml").write_text(SAGA.replace('action = "block"', 'action = "track"\nmin_seconds = 3'))
    assert json.loads((saga_index / "index.json").read_text())["format_version"] == 3

    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nflag = 2\n")
    proc = run_cli("index", "policy", saga_index, bad)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("PolicyError:") and "flag must be between 0 and 1" in proc.stderr

    # a franchise rule with a lower flag threshold turns the review into a flag; its action is in the results
    proc = run_cli("index", "policy", saga_index, tmp_path / "saga.toml", check=True)
    assert 'name = "saga"' in proc.stdout
    assert json.loads((saga_index / "index.json").read_text())["format_version"] == 5
    r = _scan(saga_index, clips["positive"], tmp_path / "saga.jsonl")
    assert r["verdict"] == "flag", r
    assert r["characters"][0]["policy"] == {"rule": "saga", "action": "block", "verdict": "flag", "on_screen": 2.0}

    info = run_cli("index", "info", saga_index, check=True).stdout
    assert "policy     1 rule(s)" in info and "saga: franchise='Sunset Saga' -> flag 0.6, action block" in info
    js = json.loads(run_cli("index", "info", saga_index, "--json", check=True).stdout)
    assert js["policy"] == {"rule": [{"name": "saga", "franchise": "Sunset Saga", "flag": 0.6, "action": "block"}]}

    # min_seconds: 2 s on screen is below 3, so the flag is only a review (the must-show)
    run_cli("index", "policy", saga_index, tmp_path / "short.toml", check=True)
    r = _scan(saga_index, clips["positive"], tmp_path / "short.jsonl")
    assert r["verdict"] == "review", r
    assert r["characters"][0]["policy"] == {"rule": "saga", "action": "track", "verdict": "review", "on_screen": 2.0}

    # --clear: today's verdict, no policy field; printing shows there is none
    run_cli("index", "policy", saga_index, "--clear", check=True)
    r = _scan(saga_index, clips["positive"], tmp_path / "clear.jsonl")
    assert r["verdict"] == "review" and "policy" not in r["characters"][0]
    assert run_cli("index", "policy", saga_index, check=True).stdout.startswith("# no policy")
    assert json.loads((saga_index / "index.json").read_text())["format_version"] == 3
    assert "policy     none" in run_cli("index", "info", saga_index, check=True).stdout


def test_policy_in_http_score_reply(saga_index: Path, tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text('[[rule]]\ncharacter = "akane"\naction = "monetise"\n[[rule]]\naction = "track"\n')
    run_cli("index", "policy", saga_index, policy, check=True)
    scene, _ = composite(draw_scene("serve"), reference_art(PROTECTED[0]).convert("RGBA"), height_frac=0.6,
                         x_frac=0.6)
    buf = io.BytesIO()
    scene.save(buf, "PNG")
    try:
        with serving(saga_index, tmp_path) as srv:
            reply = httpx.post(f"{srv['base']}/v1/score", files={"file": ("a.png", buf.getvalue(), "image/png")},
                               timeout=120)
    finally:
        run_cli("index", "policy", saga_index, "--clear", check=True)
    assert reply.status_code == 200, reply.text
    top = reply.json()["characters"][0]
    assert top["character"] == "akane"
    assert top["policy"] == {"rule": 1, "action": "monetise", "verdict": top["policy"]["verdict"], "on_screen": None}
