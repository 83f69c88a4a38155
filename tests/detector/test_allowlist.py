"""The allow-list (`index.allowlist`) at query time (`detector.match.evidence`), and decisions files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detector.match.evidence import frame_evidence, suppressions
from detector.review.decisions import DecisionFileError, read_decisions
from index.allowlist import allow_entries, allow_regions, prune_allowlist, revoke_allowed
from index.store import CharacterInfo, IndexData, IndexStore, Reference, write_index

E = np.eye(4, dtype=np.float32)
BOXES = [(0, 0, 10, 10), (10, 0, 20, 10)]


def _index(tmp_path: Path) -> IndexData:
    refs = {"ra": Reference("ra", "a" * 64, "a"), "rb": Reference("rb", "b" * 64, "b")}
    info = {c: CharacterInfo(c, "F", "R", 0.0, 0.1, 0.0, 20, "background", 0.3, 0.2) for c in "ab"}
    return IndexData(backbone={"name": "test", "dim": 4}, references=refs, vectors=E[:2].copy(),
                     vector_refs=["ra", "rb"], vector_views=["full"] * 2, characters=info,
                     background=np.zeros((0, 4), np.float32), background_groups=np.zeros(0, np.int32), thresholds={})


def _allow(data: IndexData, decision: str, character: str, vectors: np.ndarray) -> None:
    allow_regions(data, decision, {"character": character, "path": "v.mp4", "sha256": "c" * 64,
                                   "reviewer": "kim", "note": "ok"}, vectors)


def test_allowed_region_is_no_evidence_for_its_character_only(tmp_path: Path) -> None:
    data = _index(tmp_path)
    both = (E[0] + E[1]) / np.sqrt(2)  # region 0 looks like a and b alike; region 1 is a clean a
    _allow(data, "d-1", "a", both[None])
    write_index(tmp_path / "idx", data)
    store = IndexStore.open(tmp_path / "idx")
    assert store.manifest["format_version"] == 6 and len(store.allow) == 1
    ev = frame_evidence(store, 0.0, np.stack([both, E[0]]), BOXES)
    assert ev.hits["a"].box == BOXES[1]  # the frame's other region still counts for a
    assert ev.hits["b"].box == BOXES[0]  # and the allowed region still counts for b
    only = frame_evidence(store, 0.0, both[None], BOXES[:1])
    assert "a" not in only.hits and "b" in only.hits and only.suppressed == {"a": "d-1"}
    [s] = suppressions(store, [only, only])
    assert (s.character, s.decision_id, s.reviewer, s.frames) == ("a", "d-1", "kim", 2)


def test_near_duplicates_only_and_round_trip(tmp_path: Path) -> None:
    data = _index(tmp_path)
    _allow(data, "d-1", "a", E[:1])
    write_index(tmp_path / "idx", data)
    store = IndexStore.open(tmp_path / "idx")
    sim = store.allow.sim  # the index's backbone's `allow_sim` (index.tuning)
    close = np.cos(np.arccos(sim) * 0.9) * E[0] + np.sin(np.arccos(sim) * 0.9) * E[2]
    far = np.cos(np.arccos(sim) * 1.1) * E[0] + np.sin(np.arccos(sim) * 1.1) * E[2]
    assert store.allow.match(np.stack([close, far])) == {(0, "a"): "d-1"}
    summary = store.summary()["allowlist"]
    assert summary["counts"] == {"a": {"decisions": 1, "regions": 1}}
    assert summary["entries"][0]["reviewer"] == "kim" and summary["entries"][0]["note"] == "ok"
    prune_allowlist(data, {"b"})  # a's last reference removed: its allow-list goes
    assert len(data.allow) == 0 and data.allow.info == {}


def test_index_without_allowlist_keeps_its_format(tmp_path: Path) -> None:
    write_index(tmp_path / "idx", _index(tmp_path))
    store = IndexStore.open(tmp_path / "idx")
    assert store.manifest["format_version"] == 3 and len(store.allow) == 0
    assert frame_evidence(store, 0.0, E[:1], BOXES[:1]).suppressed == {}


def test_revoked_entry_suppresses_nothing_and_keeps_its_history(tmp_path: Path) -> None:
    """Issue 27, point 3: a revoked entry leaves the matcher, stays stored with both times, and an
    allow-list of revoked entries only is still stored (format 6) and survives a prune."""
    data = _index(tmp_path)
    _allow(data, "d-1", "a", E[:1])
    assert revoke_allowed(data, {"d-1"}, by="d-2", at="2026-01-02T00:00:00Z") == ["d-1"]
    assert revoke_allowed(data, {"d-1"}, by="d-3", at="2026-01-03T00:00:00Z") == []  # the first revocation stays
    prune_allowlist(data, {"a", "b"})
    write_index(tmp_path / "idx", data)
    store = IndexStore.open(tmp_path / "idx")
    assert store.manifest["format_version"] == 6 and len(store.allow) == 0
    assert frame_evidence(store, 0.0, E[:1], BOXES[:1]).suppressed == {} and "a" in frame_evidence(
        store, 0.0, E[:1], BOXES[:1]).hits
    [entry] = allow_entries(store.data.allow)
    assert (entry["id"], entry["active"], entry["regions"], entry["revoked_by"]) == ("d-1", False, 0, "d-2")
    assert entry["revoked_at"] == "2026-01-02T00:00:00Z" and entry["reverses"] == []
    assert store.summary()["allowlist"]["entries"] == []  # `index info` shows the active entries
    data.allow.info["d-1"]["reverses"] = '[{"decision": "d-0", "added_at": "", "references": ["r1"]}]'
    _allow(data, "d-1", "a", E[:1])  # the same decision applied again: active again, its reverses kept
    [entry] = allow_entries(data.allow)
    assert entry["active"] and entry["regions"] == 1 and entry["revoked_by"] == "" and entry["reverses"][0]["decision"] == "d-0"
    prune_allowlist(data, {"b"})  # a's last reference removed: its history goes too
    assert data.allow.info == {}


def test_nearcopy_suppression_needs_the_review_threshold(tmp_path: Path) -> None:
    """Issue 27, point 10: an allowed region with a PDQ match (distance 20: near-copy score 0.69) is
    reported as suppressed only where 0.69 reaches the character's review threshold: the index's
    (0.3 yes, 0.9 no), or a match policy rule's where one sets it."""
    from index.nearcopy import nearcopy_score
    from index.policy import Policy, Rule

    data = _index(tmp_path)
    ref_hash = np.zeros((1, 32), np.uint8)
    data.pdq_hashes, data.pdq_quality = ref_hash, np.array([100], np.int32)
    data.pdq_refs, data.pdq_views = ["ra"], ["full"]
    region_hash = np.unpackbits(ref_hash[0])
    region_hash[:20] = 1  # 20 bits from the reference's hash
    hashes = (np.packbits(region_hash)[None], np.array([100], np.int32))
    assert 0.6 < float(nearcopy_score(20)) < 0.7
    _allow(data, "d-1", "a", E[2:3])  # a region like no reference: only the near-copy channel finds a in it
    seen = {}
    strict = {"score_flag": 0.95, "score_review": 0.9}
    rule = Policy((Rule(character="a", flag=0.95, review=0.9),))
    for name, thresholds, policy in (("index 0.3", {}, None), ("index 0.9", strict, None), ("rule 0.9", {}, rule)):
        data.thresholds, data.policy = thresholds, policy
        write_index(tmp_path / name, data)
        store = IndexStore.open(tmp_path / name)
        seen[name] = frame_evidence(store, 0.0, E[2:3], BOXES[:1], hashes).suppressed
    assert seen == {"index 0.3": {"a": "d-1"}, "index 0.9": {}, "rule 0.9": {}}


GOOD = {"path": "v.mp4", "sha256": "A" * 64, "character": "a", "decision": "not_infringing", "reviewer": "kim"}


@pytest.mark.parametrize(("line", "message"), [
    ("not json", "not JSON"),
    ("[1]", "must be a JSON object"),
    (json.dumps({**GOOD, "decision": "maybe"}), "decision must be one of"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "character"}), "missing character"),
    (json.dumps({**GOOD, "sha256": "xyz"}), "64 hex digits"),
    (json.dumps({**GOOD, "note": 3}), "note must be text"),
    (json.dumps({**GOOD, "extra": "x"}), r"unknown field\(s\) extra"),
])
def test_bad_decision_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(GOOD) + "\n\n" + line + "\n")
    with pytest.raises(DecisionFileError, match=f"d.jsonl:3: .*{message}"):
        read_decisions(f)


def test_decisions_parse(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "decision": "infringing", "reviewer": "lee"}) + "\n")
    first, second = read_decisions(f)
    assert first.sha256 == "a" * 64 and first.note == "" and first.where.endswith("d.jsonl:1")
    assert second.decision == "infringing" and first.id != second.id and first.id == read_decisions(f)[0].id
    f.write_text("\n")
    with pytest.raises(DecisionFileError, match="no decisions"):
        read_decisions(f)
