"""Reversing a reviewer's decision (issue 27, point 3): the later decision on an input and character
wins, and the allow-list can be listed and revoked, through the real CLI and the real server."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import httpx
from helpers import run_cli, serving_copy


def _scan(clip: Path, index: Path, out: Path) -> dict:
    run_cli("scan", clip, "--index", index, "--out", out)
    [rec] = map(json.loads, out.read_text().splitlines())
    return rec


def _decide(tmp_path: Path, clip: Path, decision: str, name: str) -> Path:
    sha = hashlib.sha256(clip.read_bytes()).hexdigest()
    path = tmp_path / f"{name}.jsonl"
    path.write_text(json.dumps({"path": str(clip), "sha256": sha, "character": "akane", "decision": decision,
                                "reviewer": "kim"}) + "\n")
    return path


def _entries(index: Path) -> list[dict]:
    return json.loads(run_cli("index", "allow", "list", index, "--json", check=True).stdout)["entries"]


def _flags_akane(rec: dict) -> bool:
    return rec["verdict"] == "flag" and rec["characters"][0]["character"] == "akane"


def _reverse_and_back(index_dir: Path, clips: dict[str, Path], tmp_path: Path) -> dict:
    """flag -> not_infringing -> pass -> infringing (same reviewer) -> flag through the original
    references, with no allow-list entry left suppressing; then back again. Returns the last scan."""
    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    clip, results = clips["positive"], tmp_path / "first.jsonl"
    assert _flags_akane(_scan(clip, index, results))
    allow = run_cli("review", "apply", _decide(tmp_path, clip, "not_infringing", "allow"), "--index", index,
                    "--results", results)
    assert allow.returncode == 0, allow.stderr
    passed = _scan(clip, index, tmp_path / "passed.jsonl")
    assert not any(c["character"] == "akane" for c in passed["characters"]) and passed["suppressed"], passed
    [entry] = _entries(index)
    assert entry["active"] and entry["regions"] >= 1 and entry["id"] == passed["suppressed"][0]["decision_id"]

    # the reversal, references not added: only the original references can flag it now
    reverse = run_cli("review", "apply", _decide(tmp_path, clip, "infringing", "reverse"), "--index", index,
                      "--results", results, "--no-add-confirmed")
    assert reverse.returncode == 0 and f"revoked allow-list entry {entry['id']}" in reverse.stderr, reverse.stderr
    again = _scan(clip, index, tmp_path / "again.jsonl")
    assert _flags_akane(again) and not again.get("suppressed"), again
    info = json.loads(run_cli("index", "info", index, "--json", check=True).stdout)
    assert info["allowlist"]["entries"] == [] and info["characters"]["akane"].get("from_review", 0) == 0
    [revoked] = _entries(index)
    infringing_id = reverse.stderr.split(f"in {clip} (")[1].split(")")[0]
    assert infringing_id.startswith("d-") and infringing_id != entry["id"]
    assert (revoked["id"], revoked["active"], revoked["regions"]) == (entry["id"], False, 0)
    assert revoked["revoked_by"] == infringing_id and revoked["revoked_at"] >= revoked["added_at"] == entry["added_at"]
    listed = run_cli("index", "allow", "list", index, check=True).stdout
    assert f"revoked {entry['id']} akane" in listed and f"revoked at {revoked['revoked_at']} by {infringing_id}" in listed

    # infringing with its regions added, then not_infringing again: the later decision wins again
    confirm = run_cli("review", "apply", _decide(tmp_path, clip, "infringing", "confirm"), "--index", index,
                      "--results", results)
    assert confirm.returncode == 0 and "reference(s) added" in confirm.stderr, confirm.stderr
    added = json.loads(run_cli("index", "info", index, "--json", check=True).stdout)["characters"]["akane"]["from_review"]
    assert added >= 1 and len(list((index / "confirmed").glob("d-*.png"))) == added
    back = run_cli("review", "apply", _decide(tmp_path, clip, "not_infringing", "back"), "--index", index,
                   "--results", results)
    assert back.returncode == 0 and f"removed {added} confirmed reference(s)" in back.stderr, back.stderr
    info = json.loads(run_cli("index", "info", index, "--json", check=True).stdout)
    assert info["characters"]["akane"].get("from_review", 0) == 0 and not list((index / "confirmed").glob("*.png"))
    final = _scan(clip, index, tmp_path / "final.jsonl")
    [active] = _entries(index)
    assert active["id"] == entry["id"] and active["active"] and active["revoked_at"] == ""
    [rev] = active["reverses"]
    assert rev["decision"] == infringing_id and len(rev["references"]) == added and rev["added_at"] <= active["added_at"]
    return final


def test_infringing_after_not_infringing_flags_again(index_dir: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    final = _reverse_and_back(index_dir, clips, tmp_path)
    assert [s["decision_id"] for s in final["suppressed"]] == [_entries(tmp_path / "index")[0]["id"]], final


def test_back_to_not_infringing_passes_again(index_dir: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    """The regions allowed on the way back are chosen against the index without the removed
    confirmed references (chosen with them in, a frame only they out-scored flagged the clip)."""
    final = _reverse_and_back(index_dir, clips, tmp_path)
    assert not any(c["character"] == "akane" for c in final["characters"]), final


def test_allow_list_and_revoke(index_dir: Path, clips: dict[str, Path], tmp_path: Path) -> None:
    """`mamori index allow list | revoke` and `GET /v1/admin/allow`, `DELETE /v1/admin/allow/{id}`."""
    root = tmp_path / "serve"
    root.mkdir()
    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    assert "no allow-list entries" in run_cli("index", "allow", "list", index, check=True).stdout
    clip = clips["positive"]
    run_cli("review", "apply", _decide(tmp_path, clip, "not_infringing", "allow"), "--index", index, check=True)
    [entry] = _entries(index)
    unknown = run_cli("index", "allow", "revoke", index, entry["id"], "d-000000000000")
    assert unknown.returncode == 2 and "no allow-list entry 'd-000000000000'" in unknown.stderr, unknown.stderr
    assert _entries(index)[0]["active"]  # nothing changed

    tokens = {"tok-score": "score", "tok-admin": "score,admin"}
    with serving_copy(index, root, tokens) as srv:
        admin = httpx.Client(base_url=srv["base"], headers={"Authorization": "Bearer tok-admin"}, timeout=300)
        score = httpx.Client(base_url=srv["base"], headers={"Authorization": "Bearer tok-score"}, timeout=300)
        with admin, score:
            assert score.get("/v1/admin/allow").status_code == 403
            assert score.delete(f"/v1/admin/allow/{entry['id']}").status_code == 403
            assert admin.get("/v1/admin/allow").json() == {"entries": [entry]}
            r = admin.delete("/v1/admin/allow/d-000000000000")
            assert r.status_code == 404 and r.json()["error"] == "AllowEntryNotFoundError", r.text
            with open(clip, "rb") as fh:
                before = score.post("/v1/score", content=fh, headers={"content-type": "video/mp4"}).json()
            assert not any(c["character"] == "akane" for c in before["characters"]) and before["suppressed"], before
            gen = admin.get("/v1/index").json()["generation"]
            r = admin.delete(f"/v1/admin/allow/{entry['id']}")
            assert r.status_code == 200 and r.json()["revoked"] == [entry["id"]] and r.json()["generation"] != gen, r.text
            again = admin.delete(f"/v1/admin/allow/{entry['id']}").json()
            assert again["revoked"] == [] and again["unchanged"] == [entry["id"]]
            [listed] = admin.get("/v1/admin/allow").json()["entries"]
            assert not listed["active"] and listed["revoked_by"] == "DELETE /v1/admin/allow" and listed["revoked_at"]
            with open(clip, "rb") as fh:
                after = score.post("/v1/score", content=fh, headers={"content-type": "video/mp4"}).json()
            assert _flags_akane(after) and not after.get("suppressed"), after

    revoked = run_cli("index", "allow", "revoke", index, entry["id"])  # the CLI on the original index
    assert revoked.returncode == 0 and f"revoked {entry['id']}" in revoked.stderr, revoked.stderr
    [listed] = _entries(index)
    assert not listed["active"] and listed["revoked_by"] == "mamori index allow revoke"
    scanned = _scan(clip, index, tmp_path / "after.jsonl")
    assert _flags_akane(scanned) and not scanned.get("suppressed"), scanned
