"""The on-disk index: FAISS vectors + SQLite metadata + `index.json`, written atomically.

Layout of an index folder:

    INDEX/index.json          the commit point: format version, backbone, counts, thresholds,
                              and the name of the current generation folder
    INDEX/gen-<id>/vectors.faiss    exact inner-product FAISS index (rows = vectors table)
    INDEX/gen-<id>/meta.sqlite      refs, vectors and characters tables (+ prompts, `index.prompts`)
    INDEX/gen-<id>/background.npz   background query embeddings kept for re-calibration
    INDEX/gen-<id>/local.npz        SIFT features of each reference view (`index.local`)
    INDEX/.lock               held (flock) by a writer

What a generation holds in memory is in `index.records` (`Reference`, `CharacterInfo`,
`IndexData`, `project`); how one generation folder is written and read is `index.generation`.
This module commits generations, locks, snapshots, and serves queries (`IndexStore`).

Why generations: every change (build, add, remove) writes a complete new generation folder,
fsyncs it, and only then replaces `index.json` with `os.replace`, which is atomic. A crash at any
moment leaves either the old index or the new one, never a half-written one that opens; leftover
`.tmp-*` folders are ignored and swept by the next writer. Readers that loaded the previous
generation keep working from memory (the one before the current is kept on disk).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import sqlite3
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.allowlist import AllowMatcher, allow_summary, prune_allowlist
from index.calibrate import SCORE_FLAG, SCORE_REVIEW
from index.clock import now
from index.errors import CorruptIndexError, IndexLockedError, IndexNotFoundError
from index.generation import FORMAT_VERSION, format_version, fsync_path, read_generation, write_generation
from index.local import VERIFIABLE, LocalFeatures
from index.nearcopy import PdqMatcher
from index.policy import Policy, read_policy
from index.records import CharacterInfo, IndexData, Reference, project
from index.text import TextMatcher, text_summary

__all__ = [
    "FORMAT_VERSION",
    "CharacterInfo",
    "IndexData",
    "IndexStore",
    "Reference",
    "clear_policy",
    "index_lock",
    "project",
    "restore_snapshot",
    "set_policy",
    "snapshot",
    "write_index",
]

@contextlib.contextmanager
def index_lock(path: str | Path) -> Iterator[None]:
    """Hold the index's exclusive write lock (non-blocking: a second writer gets an error)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise IndexLockedError(f"{path}: another process is writing this index") from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_index(path: str | Path, data: IndexData) -> None:
    """Write `data` as a new generation of the index at `path` and commit it atomically.

    The caller holds `index_lock(path)`.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    prune_allowlist(data, data.characters)  # a character without references keeps no allow-list
    tmp = path / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        write_generation(tmp, data)
        gen = f"gen-{time.time_ns():x}-{uuid.uuid4().hex[:6]}"
        os.rename(tmp, path / gen)
        fsync_path(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest: dict[str, Any] = {
        "format": "mamori-index",
        "format_version": format_version(data),
        "generation": gen,
        "backbone": data.backbone,
        "faiss": "IndexFlatIP",
        "counts": {
            "references": len(data.references),
            "vectors": int(data.vectors.shape[0]),
            "characters": len(data.characters),
            "background_images": len(np.unique(data.background_groups)),
        },
        "thresholds": data.thresholds,
        "created": data.created or now(),
        "updated": now(),
    }
    if data.precision:
        manifest["precision"] = data.precision
    if data.text is not None:
        manifest["counts"]["prompts"] = len(data.text.prompts)
    if data.policy is not None:  # `index.policy`: stored here, beside the thresholds it refines
        manifest["policy"] = data.policy.to_dict()
    tmp_json = path / f".tmp-index-{uuid.uuid4().hex}.json"
    with open(tmp_json, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_json, path / "index.json")
    fsync_path(path)
    _sweep(path, keep={gen, _previous_generation(path, gen)})


def snapshot(path: str | Path) -> dict[str, bytes]:
    """The current generation's files and `index.json`, as {relative path: bytes}, to ship an index
    to another machine (the Ray engine); `restore_snapshot` writes them back out.

    Generations are never modified, so the copy is consistent; if a writer commits and sweeps the
    generation while it is read, the read is retried on the new one.

    Raises:
        IndexNotFoundError / CorruptIndexError: as `IndexStore.open`.
    """
    path = Path(path)
    for _ in range(3):
        if not (path / "index.json").is_file():
            raise IndexNotFoundError(f"{path}: no mamori index here; build one with `mamori index build`")
        manifest_bytes = (path / "index.json").read_bytes()
        try:
            gen = str(json.loads(manifest_bytes)["generation"])
        except (KeyError, ValueError) as exc:
            raise CorruptIndexError(f"{path}: index.json is unreadable ({exc})") from exc
        try:
            files = {f"{gen}/{f.name}": f.read_bytes() for f in sorted((path / gen).iterdir()) if f.is_file()}
        except FileNotFoundError:
            continue  # swept by a writer that committed meanwhile: read the new generation
        return {"index.json": manifest_bytes, **files}
    raise CorruptIndexError(f"{path}: the index kept changing while it was read; try again")


def restore_snapshot(files: dict[str, bytes], dest: str | Path) -> Path:
    """Write a `snapshot` into the empty or new folder `dest` (an index that `IndexStore.open` reads)."""
    dest = Path(dest)
    for name, data in files.items():
        target = (dest / name).resolve()
        if not target.is_relative_to(dest.resolve()):
            raise CorruptIndexError(f"index snapshot names a file outside the index: {name!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


def _previous_generation(path: Path, current: str) -> str:
    gens = sorted(p.name for p in path.glob("gen-*") if p.name != current)
    return gens[-1] if gens else ""


def _sweep(path: Path, keep: set[str]) -> None:
    for p in path.iterdir():
        if (p.name.startswith("gen-") and p.name not in keep) or p.name.startswith(".tmp-"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


class IndexStore:
    """A loaded, read-only index: metadata in memory and an exact FAISS inner-product search.

    Owns the FAISS row ↔ reference mapping; callers get `Reference` objects, never raw rows.

    >>> store = IndexStore.open("my-index")          # doctest: +SKIP
    >>> sims, refs = store.search(queries, k=8)      # doctest: +SKIP
    """

    def __init__(self, path: Path, manifest: dict[str, Any], data: IndexData, faiss_index: Any):
        self.path = path
        self.manifest = manifest
        self.data = data
        active = [i for i, r in enumerate(data.vector_refs) if not data.references[r].quarantine]
        if len(active) == len(data.vector_refs):
            self._faiss = faiss_index
        else:  # quarantined references stay on disk (and in `index info`) but are never matched
            self._faiss = faiss.IndexFlatIP(faiss_index.d)
            if active:
                self._faiss.add(np.ascontiguousarray(data.vectors[active], np.float32))
        self._row_refs = [data.references[data.vector_refs[i]] for i in active]
        #: characters that can be matched (those with at least one reference not quarantined)
        self.active_characters = len({r.character for r in self._row_refs})
        pdq_active = np.array([not data.references[r].quarantine for r in data.pdq_refs], bool)
        self._pdq_refs = [data.references[r] for r in data.pdq_refs]
        self._pdq = PdqMatcher(data.pdq_hashes, np.where(pdq_active, data.pdq_quality, -1))
        #: character -> SIFT features of its active reference views, with the reference of each
        self._local: dict[str, list[tuple[Reference, LocalFeatures]]] = {}
        #: characters with at least one active reference that passes the self-check
        self._verifiable: set[str] = set()
        for ref_id, views in data.local.items():
            ref = data.references.get(ref_id)
            if ref is not None and not ref.quarantine:
                self._local.setdefault(ref.character, []).extend((ref, f) for f in views.values() if len(f))
                if data.local_check.get(ref_id, 0) >= VERIFIABLE:
                    self._verifiable.add(ref.character)
        #: the text channel's query side (`index.text`); None when the index holds no prompts
        self.text = TextMatcher(data, data.text) if data.text is not None else None
        #: reviewers' allowed regions (`index.allowlist`), matched in `detector.match.evidence`
        self.allow = AllowMatcher.for_index(data)
        self._background = faiss.IndexFlatIP(faiss_index.d)
        if len(data.background):
            self._background.add(np.ascontiguousarray(project(data.background, data.centre)))

    def rebuilt(self) -> IndexStore:
        """A store over `self.data` as it is now, before it is written: references added or dropped
        in memory (`index.build.drop_references`) are matched, and calibrated, as they will be on disk."""
        flat = faiss.IndexFlatIP(int(self.data.backbone["dim"]))
        if len(self.data.vectors):
            flat.add(np.ascontiguousarray(self.data.vectors, np.float32))
        return IndexStore(self.path, self.manifest, self.data, flat)

    @property
    def backbone(self) -> dict[str, Any]:
        return self.data.backbone

    @property
    def references(self) -> dict[str, Reference]:
        return self.data.references

    @property
    def characters(self) -> dict[str, CharacterInfo]:
        return self.data.characters

    @property
    def precision(self) -> str:
        """The precision the index was embedded in (fp32, bf16, fp16), or "" when not recorded."""
        return self.data.precision

    @property
    def flag_score(self) -> float:
        """Verdict `flag` at a calibrated score >= this (`mamori index thresholds` changes it)."""
        return float(self.data.thresholds.get("score_flag", SCORE_FLAG))

    @property
    def review_score(self) -> float:
        """Verdict `review` at a calibrated score >= this and below `flag_score`."""
        return float(self.data.thresholds.get("score_review", SCORE_REVIEW))

    @classmethod
    def open(cls, path: str | Path) -> IndexStore:
        """Load the index's current generation.

        Raises:
            IndexNotFoundError: no `index.json` at `path`.
            CorruptIndexError: files missing, unreadable, or inconsistent.
        """
        path = Path(path)
        manifest_path = path / "index.json"
        if not manifest_path.is_file():
            hint = " (a build may have been interrupted)" if path.is_dir() else ""
            raise IndexNotFoundError(f"{path}: no mamori index here{hint}; build one with `mamori index build`")
        try:
            manifest = json.loads(manifest_path.read_text())
            gen = path / manifest["generation"]
            data, faiss_index = read_generation(gen, manifest)
            data.policy = read_policy(manifest)  # kept in index.json, not in the generation folder
        except (OSError, EOFError, KeyError, ValueError, sqlite3.Error, RuntimeError, zipfile.BadZipFile) as exc:
            raise CorruptIndexError(f"{path}: index files are unreadable ({exc})") from exc
        if faiss_index.ntotal != len(data.vector_refs) or faiss_index.d != int(data.backbone["dim"]):
            raise CorruptIndexError(f"{path}: FAISS vectors and metadata disagree")
        return cls(path, manifest, data, faiss_index)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[Reference]]]:
        """Nearest references of raw backbone embeddings (projected here, see `project`).

        Returns (N, k') cosine similarities and the matching references, best first (k' <= k).
        """
        k = min(k, self._faiss.ntotal)
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.float32), [[] for _ in range(len(queries))]
        q = np.ascontiguousarray(project(queries, self.data.centre))
        sims, rows = self._faiss.search(q, k)
        return sims, [[self._row_refs[r] for r in row] for row in rows]

    @property
    def has_pdq(self) -> bool:
        """Whether any active reference has a usable PDQ hash (the near-copy channel is on)."""
        return len(self._pdq) > 0

    def local_features(self, character: str) -> list[tuple[Reference, LocalFeatures]]:
        """SIFT features of the character's active reference views (geometric verification)."""
        return self._local.get(character, [])

    def verifiable(self, character: str) -> bool:
        """Whether the character has reference art detailed enough that a genuine appearance is
        expected to verify (`index.local.self_check`)."""
        return character in self._verifiable

    def background_similarity(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(N,) mean cosine of each raw query to its k nearest background regions (0 without background).

        The per-query term of score normalisation (`index.calibrate`): how similar a region is to
        ordinary, non-protected imagery.
        """
        k = min(k, self._background.ntotal)
        if k == 0 or len(queries) == 0:
            return np.zeros(len(queries), np.float32)
        sims, _ = self._background.search(np.ascontiguousarray(project(queries, self.data.centre)), k)
        mean: np.ndarray = sims.mean(axis=1)
        return mean

    def match_pdq(self, hashes: np.ndarray, qualities: np.ndarray) -> tuple[np.ndarray, list[Reference | None]]:
        """Near-copy lookup of region PDQ hashes: (N,) Hamming distances and the matched reference or None."""
        dist, rows = self._pdq.match(hashes, qualities)
        return dist, [self._pdq_refs[r] if r >= 0 else None for r in rows]

    def summary(self) -> dict[str, Any]:
        """What `mamori index info` prints: the manifest plus per-character counts."""
        per_char: dict[str, int] = {}
        reviewed: dict[str, int] = {}  # references from reviewers' infringing decisions (`extra.source`)
        for r in self.references.values():
            per_char[r.character] = per_char.get(r.character, 0) + 1
            reviewed[r.character] = reviewed.get(r.character, 0) + (r.extra.get("source") == "review")
        out = dict(self.manifest)
        out["path"] = str(self.path)
        out.setdefault("precision", None)  # an index from before the precision was recorded
        out.setdefault("policy", None)  # the match policy (`index.policy`); null: none, the thresholds decide
        out["characters"] = {
            name: {"references": per_char.get(name, 0), "from_review": reviewed.get(name, 0),
                   **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(c).items()},
                   "verifiable": self.verifiable(name)}
            for name, c in sorted(self.characters.items())
        }
        out["quarantined"] = [
            {"id": r.id, "character": r.character, "source_path": r.source_path, "reason": r.quarantine}
            for r in sorted(self.references.values(), key=lambda r: (r.character, r.source_path)) if r.quarantine
        ]
        text_summary(out, self.data)  # per character `prompts`, and `text` (the text channel's calibration)
        out["allowlist"] = allow_summary(self.data.allow)
        return out


def set_policy(path: str | Path, policy: Policy | None) -> Policy | None:
    """Store `policy` (`index.policy`) in the index at `path` (None: back to the default, no
    policy) and commit a new generation atomically, under the index lock, like
    `index.build.set_thresholds`. Here, not in `index.policy`: this module reads the policy of each
    generation it opens, so the policy module stays below it (no import circle)."""
    with index_lock(path):
        data = IndexStore.open(path).data
        data.policy = policy
        write_index(path, data)
    return policy


def clear_policy(path: str | Path) -> None:
    """Back to the default policy (none): today's global thresholds for every character."""
    set_policy(path, None)
