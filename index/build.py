"""Building and changing an index: read reference art, embed it, calibrate, commit atomically.

Steps of `build_index`:
    1. read each reference image safely (`index.images`), hash it, drop exact duplicates (sha256)
    2. embed the references in batches with the caller's `Embedder` (the backbone lives in `detector`)
    3. embed the background images as queries; their mean is the centre all vectors are projected
       with (`index.store.project`); calibrate each character against them (`index.calibrate`)
    (with the embeddings: PDQ hashes for the near-copy channel, SIFT features for geometric
    verification, `index.nearcopy` / `index.local`)
    4. write a new generation and commit it (`index.store.write_index`)

`add_references` and `remove_references` load the current generation, change it in memory,
re-calibrate from the stored background embeddings, and commit the same way. A build also records
its precision and the precision probe (`index.precision`); a removal deletes the removed
references' art in `INDEX/uploads/` that nothing else uses (`index.uploads`).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from index.calibrate import SCORE_FLAG, SCORE_REVIEW, background_scores, calibrate, generic_references, rule
from index.clock import now
from index.embedder import Embedder
from index.errors import (
    IncompatibleIndexError,
    IndexStoreError,
    ManifestError,
    ReferenceImageError,
    ReferenceNotFoundError,
)
from index.images import IMAGE_SUFFIXES, file_sha256, open_image
from index.local import LocalFeatures, reference_features, self_check
from index.manifest import ReferenceEntry
from index.nearcopy import pdq_dihedral
from index.precision import embed_probe, embedder_precision
from index.store import CharacterInfo, IndexData, IndexStore, Reference, index_lock, project, write_index
from index.text import NewPrompts, PromptEntry, embed_prompts, update_text
from index.uploads import delete_unused_uploads, keep_upload

__all__ = ["BuildReport", "Embedder", "RemovedReferences", "add_references", "add_upload", "build_index",
           "calibrated_characters", "drop_references", "remove_references", "set_thresholds"]

BATCH = 16
Progress = Callable[[str, int, int], None]


@dataclass
class BuildReport:
    """What a build or add did: references added, and every input skipped with the reason."""

    added: list[Reference] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    background_images: int = 0
    characters: int = 0
    quarantined: list[Reference] = field(default_factory=list)
    #: inputs that are already in the index (same sha256), with the reference they duplicate
    duplicates: list[tuple[str, Reference]] = field(default_factory=list)


class RemovedReferences(list[Reference]):
    """What `remove_references` removed (a list of references), and `deleted_files`: the removed
    references' art in `INDEX/uploads/` that no remaining reference uses, deleted with them."""

    def __init__(self, removed: Sequence[Reference], deleted_files: Sequence[Path] = ()):
        super().__init__(removed)
        self.deleted_files = list(deleted_files)


def _batched(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _noop(stage: str, done: int, total: int) -> None:
    pass


def check_identity(index_backbone: dict[str, Any], embedder: Embedder, where: str) -> None:
    """Raise IncompatibleIndexError unless the embedder is the backbone the index was built with."""
    mine = embedder.identity
    for key in ("name", "dim", "weights_sha256", "preprocess"):
        if index_backbone.get(key) != mine.get(key):
            raise IncompatibleIndexError(
                f"{where}: index was built with backbone {index_backbone.get('name')!r} "
                f"({key}={index_backbone.get(key)!r}), not {mine.get('name')!r} ({key}={mine.get(key)!r}); "
                "use the index's backbone or build a new index"
            )


def _embed_entries(
    entries: Sequence[ReferenceEntry],
    embedder: Embedder,
    known_sha: dict[str, Reference],
    report: BuildReport,
    progress: Progress,
) -> tuple[list[Reference], list[np.ndarray], list[str], list[str], list[tuple[str, np.ndarray, np.ndarray]],
           dict[str, dict[str, LocalFeatures]], dict[str, int]]:
    refs, vecs, vec_refs, views = [], [], [], []
    local: dict[str, dict[str, LocalFeatures]] = {}
    checks: dict[str, int] = {}
    hashes: list[tuple[str, np.ndarray, np.ndarray]] = []
    seen = dict(known_sha)
    done = 0
    for batch in _batched(entries, BATCH):
        imgs, kept = [], []
        for e in batch:
            try:
                sha = file_sha256(e.path)
                if sha in seen:
                    other = seen[sha]
                    report.skipped.append((str(e.path), f"duplicate of reference {other.id} ({other.source_path}, {other.character})"))
                    report.duplicates.append((str(e.path), other))
                    continue
                img = open_image(e.path)
            except (ReferenceImageError, OSError) as exc:
                report.skipped.append((str(e.path), str(exc)))
                continue
            ref = Reference(
                id=sha[:16], sha256=sha, character=e.character, franchise=e.franchise,
                rights_holder=e.rights_holder, license=e.license, source_path=str(e.path),
                width=img.width, height=img.height, added_at=now(), extra=dict(e.extra),
            )
            seen[sha] = ref
            imgs.append(img)
            kept.append(ref)
            hashes.append((ref.id, *pdq_dihedral(img)))
            local[ref.id] = reference_features(img)
            checks[ref.id] = self_check(img, local[ref.id]["full"])
        for ref, (v, names) in zip(kept, embedder.embed_references(imgs) if imgs else [], strict=True):
            refs.append(ref)
            vecs.append(v)
            vec_refs += [ref.id] * len(v)
            views += names
        done += len(batch)
        progress("references", done, len(entries))
    return refs, vecs, vec_refs, views, hashes, local, checks


def _add_hashes(data: IndexData, hashes: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    for ref, h, q in hashes:
        data.pdq_hashes = np.concatenate([data.pdq_hashes, h])
        data.pdq_quality = np.concatenate([data.pdq_quality, q])
        data.pdq_refs += [ref] * len(h)
        data.pdq_views += [f"dihedral-{i}" for i in range(len(h))]


def _embed_background(
    folder: Path, embedder: Embedder, report: BuildReport, progress: Progress
) -> tuple[np.ndarray, np.ndarray]:
    if not folder.is_dir():
        raise ManifestError(f"{folder}: background folder not found")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    vecs, groups = [], []
    n_img = 0
    for i, batch in enumerate(_batched(files, BATCH)):
        imgs = []
        for p in batch:
            try:
                imgs.append(open_image(p))
            except ReferenceImageError as exc:
                report.skipped.append((str(p), f"background: {exc}"))
        for v in embedder.embed_queries(imgs) if imgs else []:
            vecs.append(v)
            groups += [n_img] * len(v)
            n_img += 1
        progress("background", min((i + 1) * BATCH, len(files)), len(files))
    report.background_images = n_img
    dim = int(embedder.identity["dim"])
    return (np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)), np.asarray(groups, np.int32)


def _quarantine(data: IndexData, new: set[str], keep: bool) -> list[Reference]:
    """Flag generic references among `new` (unless `keep`); returns those quarantined."""
    if keep or not new:
        return []
    rows: dict[str, list[int]] = {}
    for i, r in enumerate(data.vector_refs):
        if r in new:
            rows.setdefault(r, []).append(i)
    generic = generic_references(data.vectors, rows, project(data.background, data.centre), data.background_groups)
    out = []
    for r, why in generic.items():
        data.references[r] = replace(data.references[r], quarantine=why)
        out.append(data.references[r])
    return out


def calibrated_characters(data: IndexData, texts: NewPrompts | None = None,
                skipped: list[tuple[str, str]] | None = None) -> dict[str, CharacterInfo]:
    """Recompute every character's calibration from the stored background embeddings.

    Quarantined references take no part; a character with only quarantined references keeps its
    metadata row (so `index info` can list it) with the shared threshold. The text channel: `index.text.update_text`.
    """
    update_text(data, texts, skipped)
    active = [i for i, r in enumerate(data.vector_refs) if not data.references[data.vector_refs[i]].quarantine]
    chars, scores = background_scores(data.vectors[active], [data.references[data.vector_refs[i]].character
                                                             for i in active],
                                      project(data.background, data.centre), data.background_groups)
    cal = calibrate(chars, scores, data.backbone["name"])
    first: dict[str, Reference] = {}
    for r in data.references.values():
        first.setdefault(r.character, r)
    if first and cal:
        any_cal = next(iter(cal.values()))
        for c in first:
            cal.setdefault(c, replace(any_cal, mu=float("nan"), bg_max=float("nan")))
    elif first:
        cal = calibrate(sorted(first), np.zeros((0, len(first))), data.backbone["name"])
    return {
        c: CharacterInfo(c, first[c].franchise, first[c].rights_holder, k.mu, k.sigma, k.bg_max,
                         k.n_background, k.source, k.flag_sim, k.review_sim)
        for c, k in sorted(cal.items())
    }


def build_index(
    entries: Sequence[ReferenceEntry],
    out: str | Path,
    embedder: Embedder,
    *,
    background: str | Path | None = None,
    force: bool = False,
    keep_generic: bool = False,
    progress: Progress = _noop, prompts: Sequence[PromptEntry] = (),
) -> BuildReport:
    """Build a new index at `out` from reference entries.

    References that look generic against the background set are quarantined (kept on disk, listed
    by `index info`, never matched) unless `keep_generic`. Text `prompts`: `index.text.embed_prompts`.

    Raises:
        IndexStoreError: `out` already holds an index (and not `force`), or no reference could be read.
    """
    out = Path(out)
    if (out / "index.json").exists() and not force:
        raise IndexStoreError(f"{out}: an index already exists here (use --force to replace it, or `mamori index add`)")
    report, texts = BuildReport(), embed_prompts(entries, prompts, embedder, set())  # fails before any image work
    with index_lock(out):
        refs, vecs, vec_refs, views, hashes, local, checks = _embed_entries(entries, embedder, {}, report, progress)
        if not refs:
            raise IndexStoreError(f"no reference image could be read ({len(report.skipped)} skipped); nothing to index")
        dim = int(embedder.identity["dim"])
        bg, groups = (
            _embed_background(Path(background), embedder, report, progress)
            if background is not None
            else (np.zeros((0, dim), np.float32), np.zeros(0, np.int32))
        )
        centre = bg.mean(axis=0) if len(bg) else np.zeros(dim, np.float32)
        data = IndexData(
            backbone=dict(embedder.identity), references={r.id: r for r in refs}, characters={}, local=local,
            vectors=project(np.concatenate(vecs), centre), vector_refs=vec_refs, vector_views=views, centre=centre,
            background=bg, background_groups=groups, thresholds=rule(str(embedder.identity["name"])),
            local_check=checks, precision=embedder_precision(embedder), probe=embed_probe(embedder),
        )
        _add_hashes(data, hashes)
        report.quarantined = _quarantine(data, {r.id for r in refs}, keep_generic)
        data.characters = calibrated_characters(data, texts, report.skipped)
        write_index(out, data)
    report.added = refs
    report.characters = len(data.characters)
    return report


def add_references(
    path: str | Path, entries: Sequence[ReferenceEntry], embedder: Embedder, *, keep_generic: bool = False,
    progress: Progress = _noop, prompts: Sequence[PromptEntry] = (),
) -> BuildReport:
    """Add references and text prompts to an existing index (duplicates by sha256 are skipped) and commit."""
    report = BuildReport()
    with index_lock(path):
        data = IndexStore.open(path).data
        check_identity(data.backbone, embedder, str(path))
        texts = embed_prompts(entries, prompts, embedder, {r.character for r in data.references.values()})
        known = {r.sha256: r for r in data.references.values()}
        refs, vecs, vec_refs, views, hashes, local, checks = _embed_entries(entries, embedder, known, report, progress)
        if refs:
            data.local.update(local)
            data.local_check.update(checks)
            data.references.update({r.id: r for r in refs})
            data.vectors = np.concatenate([data.vectors, project(np.concatenate(vecs), data.centre)])
            data.vector_refs += vec_refs
            data.vector_views += views
            _add_hashes(data, hashes)
            report.quarantined = _quarantine(data, {r.id for r in refs}, keep_generic)
        if refs or texts:
            data.characters = calibrated_characters(data, texts, report.skipped)
            write_index(path, data)
    report.added = refs
    report.characters = len(data.characters)
    return report


def add_upload(path: str | Path, file: str | Path, entry: ReferenceEntry, embedder: Embedder) -> BuildReport:
    """Keep an uploaded image in `INDEX/uploads/` (`index.uploads.keep_upload`) and add it as a
    reference with `entry`'s metadata (its `path` gives only the suffix).

    An image already in the index changes nothing: the report's `duplicates` names the reference
    it duplicates, and the art kept for that reference stays. The kept file is removed again only
    when this call put it there and it was not added. Callers serialise calls (the service does).
    """
    kept, created = keep_upload(path, file, entry.path.suffix)
    try:
        report = add_references(path, [replace(entry, path=kept)], embedder)
    except BaseException:
        if created:
            kept.unlink(missing_ok=True)
        raise
    if created and not report.added:
        kept.unlink(missing_ok=True)
    return report


def drop_references(data: IndexData, ids: Container[str]) -> None:
    """Take references `ids` out of `data` and recalibrate (the caller writes it, then deletes unused art)."""
    keep = [i for i, r in enumerate(data.vector_refs) if r not in ids]
    keep_h = [i for i, r in enumerate(data.pdq_refs) if r not in ids]
    data.references = {k: v for k, v in data.references.items() if k not in ids}
    data.vectors, data.vector_refs = data.vectors[keep], [data.vector_refs[i] for i in keep]
    data.vector_views = [data.vector_views[i] for i in keep]
    data.pdq_hashes, data.pdq_quality = data.pdq_hashes[keep_h], data.pdq_quality[keep_h]
    data.pdq_refs, data.pdq_views = [data.pdq_refs[i] for i in keep_h], [data.pdq_views[i] for i in keep_h]
    data.local = {k: v for k, v in data.local.items() if k not in ids}
    data.local_check = {k: v for k, v in data.local_check.items() if k not in ids}
    data.characters = calibrated_characters(data)


def remove_references(
    path: str | Path, *, character: str | None = None, reference: str | None = None
) -> RemovedReferences:
    """Remove every reference of a character, or one reference (by id, sha256 or source path).

    After the commit, the removed references' art in `INDEX/uploads/` that no remaining reference
    uses is deleted (`index.uploads`); the reply's `deleted_files` lists it.

    Raises:
        ReferenceNotFoundError: nothing matched (the index is left unchanged).
    """
    if (character is None) == (reference is None) or not (character or reference):
        raise IndexStoreError("give exactly one of --character or --reference, not empty")
    with index_lock(path):
        data = IndexStore.open(path).data
        names = {reference, str(Path(reference).resolve())} if reference is not None else set()
        gone = [r for r in data.references.values()
                if (r.character == character) or names & {r.id, r.sha256, r.source_path}]
        if not gone:
            what = f"character {character!r}" if character is not None else f"reference {reference!r}"
            raise ReferenceNotFoundError(f"{path}: no {what} in this index; see `mamori index info`")
        drop_references(data, {r.id for r in gone})
        write_index(path, data)
        deleted = delete_unused_uploads(path, gone, data.references.values())
    return RemovedReferences(gone, deleted)


def set_thresholds(path: str | Path, *, flag: float | None = None, review: float | None = None) -> dict[str, Any]:
    """Change the global verdict thresholds (on the calibrated score) and commit a new generation.

    Raises:
        IndexStoreError: a value outside [0, 1], or review above flag.
    """
    with index_lock(path):
        data = IndexStore.open(path).data
        th = dict(data.thresholds)
        if flag is not None:
            th["score_flag"] = float(flag)
        if review is not None:
            th["score_review"] = float(review)
        f, r = th.get("score_flag", SCORE_FLAG), th.get("score_review", SCORE_REVIEW)
        if not (0.0 <= r <= f <= 1.0):
            raise IndexStoreError(f"thresholds must satisfy 0 <= review <= flag <= 1 (got review {r}, flag {f})")
        data.thresholds = th
        write_index(path, data)
    return th
