"""The allow-list: regions a reviewer decided are *not* an infringing depiction of a character.

`mamori review apply` (`detector.review.apply`) embeds the matched regions of each `not_infringing`
decision and stores them here; at query time (`detector.match.evidence.frame_evidence`) a region whose
projected embedding is within `allow_sim` (the index's backbone's, `index.tuning`) of an allowed
region of character c is no evidence for c (other characters, and the frame's other regions, still
count).

As stored (index format version 6, `index.generation`): tables in a generation's `meta.sqlite`,
written only when the allow-list holds an entry, active or revoked (an index without one keeps its
older format, and an older index reads as an empty allow-list):

    allowlist (row, decision, character, vector)          vector: raw region embedding, float32 bytes
    allow_decisions (id, character, path, sha256, reviewer, note, added_at)
    allow_history (id, revoked_at, revoked_by, reverses)  only for entries with a history

Revoking an entry (`revoke_allowed`: a later `infringing` decision on the same input and
character, `mamori index allow revoke`, `DELETE /v1/admin/allow/{id}`) removes its regions, so it
suppresses nothing any more, and keeps its row with `revoked_at` and `revoked_by` (the decision id
that reversed it, or the command). `reverses` (JSON, a list of {decision, added_at, references})
names the `infringing` decisions whose confirmed references a `not_infringing` one removed
(`detector.review.apply`). The history is a table of its own so that an older mamori still reads the
index (it sees the active entries only).

Why raw vectors: they are projected with the index's current centre when loaded (`project`), like
the reference vectors, so a re-calibrated background keeps them comparable.

Why `allow_sim` 0.92 (effnet-lite0-imagenet; other backbones the same until measured): measured with effnet-lite0 on the e2e fixtures (tests/e2e/test_review.py:
akane pasted into a drawn scene, 35 regions of 4 frames allowed): the same file re-scanned, 1.0;
re-encoded as H.264 CRF 23, the allowed regions' best matches 0.96-0.99; different content at
most 0.874 (the same character in another pose and scene, every region of every frame) and 0.554
(the same scene without the character). 0.92 splits the gap. A heavy re-encode (CRF 40) falls to
0.82-0.90 and is no longer covered: a re-encoded copy that degraded needs its own decision.
docs/cli.md ("Review decisions and the allow-list").
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Container
from typing import Any

import numpy as np

from index.errors import ReferenceNotFoundError
from index.records import AllowList, IndexData, project
from index.tuning import tuning_for

__all__ = ["AllowEntryNotFoundError", "AllowMatcher", "active_entries", "allow_entries", "allow_regions",
           "allow_summary", "prune_allowlist", "read_allow_tables", "revoke_allowed", "write_allow_tables"]

_INFO = ("character", "path", "sha256", "reviewer", "note", "added_at")
_HISTORY = ("revoked_at", "revoked_by", "reverses")
_SCHEMA = """
CREATE TABLE allowlist (row INTEGER PRIMARY KEY, decision TEXT NOT NULL, character TEXT NOT NULL,
    vector BLOB NOT NULL);
CREATE TABLE allow_decisions (id TEXT PRIMARY KEY, character TEXT, path TEXT, sha256 TEXT, reviewer TEXT,
    note TEXT, added_at TEXT);
CREATE TABLE allow_history (id TEXT PRIMARY KEY, revoked_at TEXT, revoked_by TEXT, reverses TEXT);
"""


class AllowEntryNotFoundError(ReferenceNotFoundError):
    """A revoke naming no allow-list entry of the index (CLI exit 2, HTTP 404)."""


def write_allow_tables(db: sqlite3.Connection, allow: AllowList) -> None:
    """Create and fill the allow-list tables in a generation's database (the caller commits)."""
    db.executescript(_SCHEMA)
    vectors = np.ascontiguousarray(allow.vectors, np.float32)
    db.executemany("INSERT INTO allowlist VALUES (?,?,?,?)",
                   [(i, d, c, vectors[i].tobytes()) for i, (d, c) in
                    enumerate(zip(allow.decisions, allow.characters, strict=True))])
    db.executemany("INSERT INTO allow_decisions VALUES (?,?,?,?,?,?,?)",
                   [(k, *(v.get(f, "") for f in _INFO)) for k, v in sorted(allow.info.items())])
    db.executemany("INSERT INTO allow_history VALUES (?,?,?,?)",
                   [(k, *(v.get(f, "") for f in _HISTORY)) for k, v in sorted(allow.info.items())
                    if any(v.get(f) for f in _HISTORY)])


def read_allow_tables(db: sqlite3.Connection, dim: int) -> AllowList:
    """The allow-list of a format-6 generation (empty when it has none).

    Raises:
        ValueError: a stored vector of the wrong size (the caller reports a corrupt index).
    """
    has = db.execute("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='allowlist'").fetchone()[0]
    if not has:
        return AllowList()
    rows = db.execute("SELECT decision, character, vector FROM allowlist ORDER BY row").fetchall()
    if any(len(v) != 4 * dim for *_, v in rows):
        raise ValueError(f"allowlist table: a vector is not {dim} float32 values")
    info = {row[0]: dict(zip(_INFO, (str(x or "") for x in row[1:]), strict=True))
            for row in db.execute(f"SELECT id, {', '.join(_INFO)} FROM allow_decisions")}
    if db.execute("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='allow_history'").fetchone()[0]:
        for k, *history in db.execute(f"SELECT id, {', '.join(_HISTORY)} FROM allow_history"):
            if k in info:
                info[k].update(zip(_HISTORY, (str(x or "") for x in history), strict=True))
    vectors = np.stack([np.frombuffer(v, np.float32) for *_, v in rows]) if rows else np.zeros((0, dim), np.float32)
    return AllowList([c for _, c, _ in rows], [d for d, *_ in rows], vectors, info)


def allow_regions(data: IndexData, decision: str, info: dict[str, str], vectors: np.ndarray) -> None:
    """Store `vectors` (raw region embeddings) as decision `decision`'s allowed regions of
    `info["character"]`, replacing what an earlier apply of the same decision stored (a revoked
    entry is active again; what it `reverses` is kept)."""
    old = data.allow
    keep = [i for i, d in enumerate(old.decisions) if d != decision]
    dim = int(data.backbone["dim"])
    kept = old.vectors[keep] if len(old) else np.zeros((0, dim), np.float32)
    new = np.asarray(vectors, np.float32).reshape(-1, dim)
    data.allow = AllowList(
        [old.characters[i] for i in keep] + [info["character"]] * len(new),
        [old.decisions[i] for i in keep] + [decision] * len(new),
        np.concatenate([kept, new]),
        {**{k: v for k, v in old.info.items() if k != decision},
         decision: {**{f: info.get(f, "") for f in _INFO}, "revoked_at": "", "revoked_by": "",
                    "reverses": old.info.get(decision, {}).get("reverses", "")}},
    )


def active_entries(allow: AllowList, sha256: str, character: str) -> list[str]:
    """The ids of the entries, not revoked, that allowed `character` in the input `sha256`."""
    return sorted(k for k, v in allow.info.items()
                  if v["sha256"] == sha256 and v["character"] == character and not v.get("revoked_at"))


def revoke_allowed(data: IndexData, ids: Container[str], *, by: str, at: str) -> list[str]:
    """Revoke the entries `ids` of `data.allow`: their regions leave it (they suppress nothing any
    more); each entry stays, with `revoked_at` = `at` and `revoked_by` = `by`. Returns the ids
    revoked by this call (an entry already revoked keeps its first revocation)."""
    old = data.allow
    now = sorted(k for k, v in old.info.items() if k in ids and not v.get("revoked_at"))
    if not now:
        return []
    keep = [i for i, d in enumerate(old.decisions) if d not in now]
    data.allow = AllowList([old.characters[i] for i in keep], [old.decisions[i] for i in keep], old.vectors[keep],
                           {k: {**v, "revoked_at": at, "revoked_by": by} if k in now else v
                            for k, v in old.info.items()})
    return now


def allow_entries(allow: AllowList) -> list[dict[str, Any]]:
    """Every entry, active and revoked (`mamori index allow list`, `GET /v1/admin/allow`): its id,
    decision fields, regions (0 once revoked), `active`, `revoked_at`, `revoked_by` and `reverses`."""
    regions = {d: allow.decisions.count(d) for d in set(allow.decisions)}
    return [{"id": k, **{f: v.get(f, "") for f in _INFO}, "regions": regions.get(k, 0),
             "active": not v.get("revoked_at"), "revoked_at": v.get("revoked_at", ""),
             "revoked_by": v.get("revoked_by", ""), "reverses": json.loads(v.get("reverses") or "[]")}
            for k, v in sorted(allow.info.items(), key=lambda kv: (kv[1]["character"], kv[1]["added_at"], kv[0]))]


def prune_allowlist(data: IndexData, characters: Container[str]) -> None:
    """Drop the allowed regions of characters not in `characters` (a character whose last
    reference was removed), and the decisions left without a region, except revoked ones of the
    remaining characters (their history)."""
    old = data.allow
    keep = [i for i, c in enumerate(old.characters) if c in characters]
    decisions = {old.decisions[i] for i in keep}
    info = {k: v for k, v in old.info.items()
            if k in decisions or (v.get("revoked_at") and v["character"] in characters)}
    if len(keep) == len(old) and len(info) == len(old.info):
        return
    data.allow = AllowList([old.characters[i] for i in keep], [old.decisions[i] for i in keep], old.vectors[keep],
                           info)


def allow_summary(allow: AllowList) -> dict[str, Any]:
    """`index info`'s `allowlist`: per character its decisions and regions, and each decision."""
    counts: dict[str, dict[str, int]] = {}
    regions: dict[str, int] = {}
    for c, d in zip(allow.characters, allow.decisions, strict=True):
        regions[d] = regions.get(d, 0) + 1
        counts.setdefault(c, {"decisions": 0, "regions": 0})["regions"] += 1
    for d in regions:
        counts[allow.info[d]["character"]]["decisions"] += 1
    entries = [{"id": d, **allow.info[d], "regions": n}
               for d, n in sorted(regions.items(), key=lambda dn: (allow.info[dn[0]]["character"], dn[0]))]
    return {"counts": dict(sorted(counts.items())), "entries": entries}


class AllowMatcher:
    """The query side: which regions of a frame are near-duplicates of allowed regions, per character."""

    def __init__(self, allow: AllowList, centre: np.ndarray, sim: float):
        self.allow = allow
        self._centre = centre
        #: cosine at or above which a region is a near-duplicate of an allowed one
        self.sim = sim
        self._vectors = project(allow.vectors, centre) if len(allow) else np.zeros((0, len(centre)), np.float32)

    @classmethod
    def for_index(cls, data: IndexData) -> AllowMatcher:
        """The matcher of `data`'s allow-list, at its backbone's `allow_sim` (`index.tuning`)."""
        return cls(data.allow, data.centre, tuning_for(str(data.backbone["name"])).allow_sim)

    def __len__(self) -> int:
        return len(self.allow)

    def match(self, vectors: np.ndarray) -> dict[tuple[int, str], str]:
        """{(region, character): decision id} for each region of the (R, D) raw embeddings within
        `sim` of a region allowed for that character (the most similar allowed region's decision)."""
        if not len(self.allow) or not len(vectors):
            return {}
        sims = project(vectors, self._centre) @ self._vectors.T
        rows, cols = np.nonzero(sims >= self.sim)
        out: dict[tuple[int, str], str] = {}
        for r, a in sorted(zip(rows.tolist(), cols.tolist(), strict=True), key=lambda ra: -sims[ra]):
            out.setdefault((r, self.allow.characters[a]), self.allow.decisions[a])
        return out

    def reviewer(self, decision: str) -> str:
        return self.allow.info.get(decision, {}).get("reviewer", "")
