"""The allow-list: regions a reviewer decided are *not* an infringing depiction of a character.

`mamori review apply` (`detector.review`) embeds the matched regions of each `not_infringing`
decision and stores them here; at query time (`detector.evidence.frame_evidence`) a region whose
projected embedding is within ALLOW_SIM of an allowed region of character c is no evidence for c
(other characters, and the frame's other regions, still count).

As stored (index format version 6, `index.generation`): two tables in a generation's
`meta.sqlite`, written only when the allow-list is not empty (an index without one keeps its
older format, and an older index reads as an empty allow-list):

    allowlist (row, decision, character, vector)          vector: raw region embedding, float32 bytes
    allow_decisions (id, character, path, sha256, reviewer, note, added_at)

Why raw vectors: they are projected with the index's current centre when loaded (`project`), like
the reference vectors, so a re-calibrated background keeps them comparable.

Why ALLOW_SIM = 0.92: measured with effnet-lite0 on the e2e fixtures (tests/e2e/test_review.py:
akane pasted into a drawn scene, 35 regions of 4 frames allowed): the same file re-scanned, 1.0;
re-encoded as H.264 CRF 23, the allowed regions' best matches 0.96-0.99; different content at
most 0.874 (the same character in another pose and scene, every region of every frame) and 0.554
(the same scene without the character). 0.92 splits the gap. A heavy re-encode (CRF 40) falls to
0.82-0.90 and is no longer covered: a re-encoded copy that degraded needs its own decision.
docs/cli.md ("Review decisions and the allow-list").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Container
from typing import Any

import numpy as np

from index.records import AllowList, IndexData, project

__all__ = ["ALLOW_SIM", "AllowMatcher", "allow_regions", "allow_summary", "prune_allowlist", "read_allow_tables",
           "write_allow_tables"]

#: cosine (projected space) at or above which a region is a near-duplicate of an allowed region
ALLOW_SIM = 0.92
_INFO = ("character", "path", "sha256", "reviewer", "note", "added_at")
_SCHEMA = """
CREATE TABLE allowlist (row INTEGER PRIMARY KEY, decision TEXT NOT NULL, character TEXT NOT NULL,
    vector BLOB NOT NULL);
CREATE TABLE allow_decisions (id TEXT PRIMARY KEY, character TEXT, path TEXT, sha256 TEXT, reviewer TEXT,
    note TEXT, added_at TEXT);
"""


def write_allow_tables(db: sqlite3.Connection, allow: AllowList) -> None:
    """Create and fill the allow-list tables in a generation's database (the caller commits)."""
    db.executescript(_SCHEMA)
    vectors = np.ascontiguousarray(allow.vectors, np.float32)
    db.executemany("INSERT INTO allowlist VALUES (?,?,?,?)",
                   [(i, d, c, vectors[i].tobytes()) for i, (d, c) in
                    enumerate(zip(allow.decisions, allow.characters, strict=True))])
    db.executemany("INSERT INTO allow_decisions VALUES (?,?,?,?,?,?,?)",
                   [(k, *(v.get(f, "") for f in _INFO)) for k, v in sorted(allow.info.items())])


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
            for row in db.execute("SELECT * FROM allow_decisions")}
    vectors = np.stack([np.frombuffer(v, np.float32) for *_, v in rows]) if rows else np.zeros((0, dim), np.float32)
    return AllowList([c for _, c, _ in rows], [d for d, *_ in rows], vectors, info)


def allow_regions(data: IndexData, decision: str, info: dict[str, str], vectors: np.ndarray) -> None:
    """Store `vectors` (raw region embeddings) as decision `decision`'s allowed regions of
    `info["character"]`, replacing what an earlier apply of the same decision stored."""
    old = data.allow
    keep = [i for i, d in enumerate(old.decisions) if d != decision]
    dim = int(data.backbone["dim"])
    kept = old.vectors[keep] if len(old) else np.zeros((0, dim), np.float32)
    new = np.asarray(vectors, np.float32).reshape(-1, dim)
    data.allow = AllowList(
        [old.characters[i] for i in keep] + [info["character"]] * len(new),
        [old.decisions[i] for i in keep] + [decision] * len(new),
        np.concatenate([kept, new]),
        {**{k: v for k, v in old.info.items() if k != decision}, decision: {f: info.get(f, "") for f in _INFO}},
    )


def prune_allowlist(data: IndexData, characters: Container[str]) -> None:
    """Drop the allowed regions of characters not in `characters` (a character whose last
    reference was removed), and the decisions left without a region."""
    old = data.allow
    keep = [i for i, c in enumerate(old.characters) if c in characters]
    if len(keep) == len(old):
        return
    decisions = [old.decisions[i] for i in keep]
    data.allow = AllowList([old.characters[i] for i in keep], decisions, old.vectors[keep],
                           {k: v for k, v in old.info.items() if k in set(decisions)})


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

    def __init__(self, allow: AllowList, centre: np.ndarray):
        self.allow = allow
        self._centre = centre
        self._vectors = project(allow.vectors, centre) if len(allow) else np.zeros((0, len(centre)), np.float32)

    def __len__(self) -> int:
        return len(self.allow)

    def match(self, vectors: np.ndarray) -> dict[tuple[int, str], str]:
        """{(region, character): decision id} for each region of the (R, D) raw embeddings within
        ALLOW_SIM of a region allowed for that character (the most similar allowed region's decision)."""
        if not len(self.allow) or not len(vectors):
            return {}
        sims = project(vectors, self._centre) @ self._vectors.T
        rows, cols = np.nonzero(sims >= ALLOW_SIM)
        out: dict[tuple[int, str], str] = {}
        for r, a in sorted(zip(rows.tolist(), cols.tolist(), strict=True), key=lambda ra: -sims[ra]):
            out.setdefault((r, self.allow.characters[a]), self.allow.decisions[a])
        return out

    def reviewer(self, decision: str) -> str:
        return self.allow.info.get(decision, {}).get("reviewer", "")
