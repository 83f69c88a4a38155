"""One generation's files on disk: `meta.sqlite` (refs, vectors, pdq, characters tables; from
format 4, the prompts and text_calibration tables of `index.prompts` when the index has prompts;
from format 6, the allowlist and allow_decisions tables of `index.allowlist`),
`vectors.faiss`, `background.npz` (background embeddings, centre, precision probe) and `local.npz`
(SIFT features of each reference view). `index.store` decides when a generation is written and
committed; this module only writes and reads one folder."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.allowlist import read_allow_tables, write_allow_tables
from index.errors import IncompatibleIndexError
from index.local import LocalFeatures
from index.nearcopy import PDQ_BYTES
from index.prompts import read_prompt_tables, write_prompt_tables
from index.records import CharacterInfo, IndexData, Reference

__all__ = ["FORMAT_VERSION", "OLDEST_FORMAT_VERSION", "format_version", "fsync_path", "read_generation",
           "write_generation"]

#: 4: format 3 + text prompts (`index.prompts`). An index without prompts is still written as
#: format 3, so a mamori that predates prompts keeps reading it; format 3 is read as "no prompts".
#: 5: + a match policy (`index.policy`, in index.json), written only when one is set.
#: 6: + the allow-list (`index.allowlist`), written only when not empty; older formats read as
#: an empty allow-list.
FORMAT_VERSION = 6
OLDEST_FORMAT_VERSION = 3
_SCHEMA = """
CREATE TABLE refs (
    id TEXT PRIMARY KEY, sha256 TEXT UNIQUE NOT NULL, character TEXT NOT NULL,
    franchise TEXT, rights_holder TEXT, license TEXT, source_path TEXT,
    width INTEGER, height INTEGER, added_at TEXT, extra TEXT, quarantine TEXT);
CREATE TABLE vectors (row INTEGER PRIMARY KEY, ref TEXT NOT NULL REFERENCES refs(id), view TEXT);
CREATE TABLE pdq (row INTEGER PRIMARY KEY, ref TEXT NOT NULL REFERENCES refs(id), view TEXT,
    quality INTEGER, hash BLOB);
CREATE TABLE characters (
    name TEXT PRIMARY KEY, franchise TEXT, rights_holder TEXT,
    mu REAL, sigma REAL, bg_max REAL, n_background INTEGER, source TEXT,
    flag_sim REAL, review_sim REAL);
"""



def format_version(data: IndexData) -> int:
    """The format version `data` is written in: 6 with an allow-list, 5 with a match policy, 4 with
    text prompts, else 3."""
    if data.allow.stored:  # the allow-list (`index.allowlist`)
        return 6
    v = 4 if data.text is not None else OLDEST_FORMAT_VERSION
    if data.policy is not None:  # 5: a match policy (`index.policy`, kept in index.json)
        v = max(v, 5)
    return v


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_generation(gen: Path, data: IndexData) -> None:
    vectors = np.ascontiguousarray(data.vectors, dtype=np.float32)
    flat = faiss.IndexFlatIP(int(data.backbone["dim"]))
    if len(vectors):
        flat.add(vectors)
    faiss.write_index(flat, str(gen / "vectors.faiss"))
    db = sqlite3.connect(gen / "meta.sqlite")
    try:
        db.executescript(_SCHEMA)
        db.executemany(
            "INSERT INTO refs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (r.id, r.sha256, r.character, r.franchise, r.rights_holder, r.license,
                 r.source_path, r.width, r.height, r.added_at, json.dumps(r.extra), r.quarantine)
                for r in data.references.values()
            ],
        )
        db.executemany(
            "INSERT INTO pdq VALUES (?,?,?,?,?)",
            [(i, ref, view, int(q), bytes(h)) for i, (ref, view, q, h) in
             enumerate(zip(data.pdq_refs, data.pdq_views, data.pdq_quality, data.pdq_hashes, strict=True))],
        )
        db.executemany(
            "INSERT INTO vectors VALUES (?,?,?)",
            list(zip(range(len(vectors)), data.vector_refs, data.vector_views, strict=True)),
        )
        db.executemany(
            "INSERT INTO characters VALUES (?,?,?,?,?,?,?,?,?,?)",
            [tuple(asdict(c).values()) for c in data.characters.values()],
        )
        if data.text is not None:
            write_prompt_tables(db, data.text)
        if data.allow.stored:
            write_allow_tables(db, data.allow)
        db.commit()
    finally:
        db.close()
    with open(gen / "background.npz", "wb") as f:
        arrays: dict[str, Any] = {"vectors": data.background.astype(np.float32), "groups": data.background_groups,
                                  "centre": np.asarray(data.centre, np.float32)}
        if data.probe is not None:
            arrays["probe"] = np.asarray(data.probe, np.float32)
        np.savez(f, **arrays)
    with open(gen / "local.npz", "wb") as f:
        packed: dict[str, Any] = _pack_local(data.local, data.local_check)
        np.savez(f, **packed)
    for p in gen.iterdir():
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_path(gen)


def _pack_local(local: dict[str, dict[str, LocalFeatures]], checks: dict[str, int]) -> dict[str, np.ndarray]:
    rows = [(ref, view, f) for ref, views in local.items() for view, f in views.items()]
    sizes = [len(f) for *_, f in rows]
    return {
        "checks": np.array([checks.get(r, 0) for r, *_ in rows], np.int32),
        "refs": np.array([r for r, *_ in rows], dtype=str).reshape(-1),
        "views": np.array([v for _, v, _ in rows], dtype=str).reshape(-1),
        "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "points": np.concatenate([f.points for *_, f in rows]) if rows else np.zeros((0, 2), np.float32),
        "descriptors": np.concatenate([f.descriptors for *_, f in rows]) if rows else np.zeros((0, 128), np.uint8),
    }


def _unpack_local(z: Any) -> tuple[dict[str, dict[str, LocalFeatures]], dict[str, int]]:
    out: dict[str, dict[str, LocalFeatures]] = {}
    checks = dict(zip(z["refs"].tolist(), z["checks"].tolist(), strict=True))
    off, pts, desc = z["offsets"], z["points"].astype(np.float32), z["descriptors"].astype(np.uint8)
    if len(off) != len(z["refs"]) + 1 or (len(off) and off[-1] != len(pts)) or len(pts) != len(desc):
        raise ValueError("local.npz: feature offsets and arrays disagree")
    for i, (ref, view) in enumerate(zip(z["refs"].tolist(), z["views"].tolist(), strict=True)):
        out.setdefault(ref, {})[view] = LocalFeatures(pts[off[i] : off[i + 1]], desc[off[i] : off[i + 1]])
    return out, checks


def read_generation(gen: Path, manifest: dict[str, Any]) -> tuple[IndexData, Any]:
    if manifest.get("format") != "mamori-index":
        raise ValueError("index.json is not a mamori index manifest")
    version = int(manifest.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise IncompatibleIndexError(
            f"index format version {version} is newer than this mamori understands ({FORMAT_VERSION}); upgrade mamori"
        )
    if version < OLDEST_FORMAT_VERSION:
        raise IncompatibleIndexError(
            f"index format version {version} was written by an older mamori (this one reads "
            f"{OLDEST_FORMAT_VERSION}-{FORMAT_VERSION}: "
            "reference views, near-copy hashes, quarantine, local features); rebuild it with `mamori index build`"
        )
    # as a file: URI (any character in the path percent-encoded), so that `?`, `#` or `%` in a
    # folder name cannot end the path or start URI parameters
    db = sqlite3.connect(f"{(gen / 'meta.sqlite').absolute().as_uri()}?mode=ro", uri=True)
    try:
        refs = {
            # the ten columns before `extra`; mypy cannot count a row's length
            row[0]: Reference(*row[:10], extra=json.loads(row[10] or "{}"), quarantine=row[11] or "")  # type: ignore[misc]
            for row in db.execute("SELECT * FROM refs")
        }
        vec_rows = db.execute("SELECT ref, view FROM vectors ORDER BY row").fetchall()
        pdq_rows = db.execute("SELECT ref, view, quality, hash FROM pdq ORDER BY row").fetchall()
        chars = {row[0]: CharacterInfo(*row) for row in db.execute("SELECT * FROM characters")}
        text = read_prompt_tables(db, int(manifest["backbone"]["dim"])) if version >= 4 else None
        allow = read_allow_tables(db, int(manifest["backbone"]["dim"]))  # format < 6: no table, empty
    finally:
        db.close()
    with np.load(gen / "background.npz") as bg:
        background, groups, centre = bg["vectors"], bg["groups"], bg["centre"]
        probe = bg["probe"] if "probe" in bg.files else None
    with np.load(gen / "local.npz") as z:
        local, local_check = _unpack_local(z)
    flat = faiss.read_index(str(gen / "vectors.faiss"))
    vectors = flat.reconstruct_n(0, flat.ntotal) if flat.ntotal else np.zeros((0, flat.d), np.float32)
    data = IndexData(
        backbone=manifest["backbone"],
        references=refs,
        vectors=vectors,
        vector_refs=[r for r, _ in vec_rows],
        vector_views=[v for _, v in vec_rows],
        characters=chars,
        background=background,
        background_groups=groups,
        thresholds=manifest.get("thresholds", {}),
        centre=centre,
        created=manifest.get("created", ""),
        pdq_hashes=np.array([np.frombuffer(h, np.uint8) for *_, h in pdq_rows], np.uint8).reshape(-1, PDQ_BYTES),
        pdq_quality=np.array([q for _, _, q, _ in pdq_rows], np.int32),
        pdq_refs=[r for r, *_ in pdq_rows],
        pdq_views=[v for _, v, *_ in pdq_rows],
        local=local,
        local_check=local_check,
        precision=str(manifest.get("precision") or ""),
        probe=probe,
        text=text, allow=allow,
    )
    return data, flat
