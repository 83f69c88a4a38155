"""Routes for the `admin` scope: add or remove references, take down a character, quarantine or
enable a reference, reload.

Each change runs under the state's admin lock in a worker thread, writes a new index generation
(`index.build`), then switches readers to it (`state.change`, shared with the review, allow-list
and flood routes); the reply names it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from detector.embed.embedding import RegionEmbedder
from detector.service.errors import MissingField, ReferenceNotAdded
from detector.service.state import change, get_state, require
from detector.service.uploads import Upload
from index import ReferenceEntry
from index.build import RemovedReferences, add_upload, remove_references

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(require("admin"))])


def _reference_entry(upload: Upload) -> ReferenceEntry:
    """The metadata of an uploaded reference, from its form fields (`path` carries the suffix)."""
    character = upload.fields.get("character", "").strip()
    if not character:
        raise MissingField("form field `character` is required")
    return ReferenceEntry(Path(f"upload{Path(upload.filename).suffix}"), character,
                          upload.fields.get("franchise", ""), upload.fields.get("rights_holder", ""),
                          upload.fields.get("license", ""))


@router.post("/v1/admin/references")
async def add_reference(request: Request) -> dict[str, Any]:
    state = get_state(request)
    state.current()
    with tempfile.TemporaryDirectory(prefix="mamori-ref-") as tmp:
        upload = await state.receive(request, Path(tmp))
        entry = _reference_entry(upload)
        assert state.backbone is not None
        embedder = RegionEmbedder(state.backbone)
        # kept in INDEX/uploads/ (the index records where each reference came from)
        report, gen = await change(state, lambda: add_upload(state.cfg.index, upload.path, entry, embedder))
    if report.skipped and not report.added and not report.duplicates:
        raise ReferenceNotAdded(f"reference not added: {report.skipped[0][1]}")
    dup = report.duplicates[0][1] if report.duplicates else None
    return {"added": [r.id for r in report.added], "quarantined": [r.id for r in report.quarantined],
            "duplicate_of": None if dup is None else {"id": dup.id, "sha256": dup.sha256, "character": dup.character},
            "characters": report.characters, "generation": gen}


def _removed(gone: RemovedReferences, gen: Any) -> dict[str, Any]:
    return {"removed": [r.id for r in gone], "deleted_files": [f"{p.parent.name}/{p.name}" for p in gone.deleted_files],
            "generation": gen}


@router.delete("/v1/admin/references/{ref:path}")
async def remove_reference(request: Request, ref: str) -> dict[str, Any]:
    state = get_state(request)
    state.current()
    return _removed(*await change(state, lambda: remove_references(state.cfg.index, reference=ref)))


@router.delete("/v1/admin/characters/{name:path}")
async def remove_character(request: Request, name: str) -> dict[str, Any]:
    state = get_state(request)
    state.current()
    return _removed(*await change(state, lambda: remove_references(state.cfg.index, character=name)))


@router.post("/v1/admin/references/{ref:path}/enable")
async def enable_reference(request: Request, ref: str) -> dict[str, Any]:
    """Clear a reference's quarantine (the flood action's or the build's); its flood counts restart."""
    from index.quarantine import enable_reference as enable

    state = get_state(request)
    state.current()
    (done, was), gen = await change(state, lambda: enable(state.cfg.index, ref))
    state.flood.enabled(done.id)
    return {"enabled": done.id, "character": done.character, "was_quarantined": was or None, "generation": gen}


@router.post("/v1/admin/references/{ref:path}/quarantine")
async def quarantine_reference(request: Request, ref: str,
                               reason: str = Query(..., min_length=1, max_length=500)) -> dict[str, Any]:
    """Quarantine a reference (by id, sha256 or source path): kept, never matched, until enabled."""
    from index.quarantine import find_reference, quarantine_references

    state = get_state(request)
    det = state.current()
    found = find_reference(det.store.data, ref, "the served index")
    done, gen = await change(state, lambda: quarantine_references(state.cfg.index, [found.id], reason))
    return {"quarantined": found.id, "character": found.character, "changed": bool(done), "generation": gen}


@router.post("/v1/admin/reload")
async def reload(request: Request) -> dict[str, Any]:
    state = get_state(request)
    state.current()
    _, gen = await change(state, lambda: None)
    return {"generation": gen}
