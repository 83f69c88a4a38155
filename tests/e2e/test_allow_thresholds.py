"""Allow-list suppression is reported only where the allowed region would have been evidence at the
character's review threshold: the index's, or the match policy's where a rule sets one (issue 27,
point 10), in the near-copy channel as in the others."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from helpers import run_cli


def _scan(clip: Path, index: Path, out: Path) -> dict:
    run_cli("scan", clip, "--index", index, "--out", out)
    [rec] = map(json.loads, out.read_text().splitlines())
    return rec


def test_suppressed_only_at_the_review_threshold(index_dir: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    clip = clips["positive"]
    decisions = tmp_path / "d.jsonl"
    decisions.write_text(json.dumps({"path": str(clip), "sha256": hashlib.sha256(clip.read_bytes()).hexdigest(),
                                     "character": "akane", "decision": "not_infringing", "reviewer": "kim"}) + "\n")
    run_cli("review", "apply", decisions, "--index", index, check=True)
    control = _scan(clip, index, tmp_path / "control.jsonl")  # the index's thresholds: akane was suppressed
    assert [s["character"] for s in control["suppressed"]] == ["akane"], control

    # the index's thresholds, but a policy rule puts akane's review at 1.0: the rule decides
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\ncharacter = "akane"\nflag = 1.0\nreview = 1.0\n')
    run_cli("index", "policy", index, policy, check=True)
    ruled = _scan(clip, index, tmp_path / "ruled.jsonl")
    assert not ruled.get("suppressed"), ruled

    # no policy, the index's review at 1.0 (flag too): no allowed region, in any channel (near-copy included), reaches it
    run_cli("index", "policy", index, "--clear", check=True)
    run_cli("index", "thresholds", index, "--flag", "1.0", "--review", "1.0", check=True)
    strict = _scan(clip, index, tmp_path / "strict.jsonl")
    assert not strict.get("suppressed"), strict
