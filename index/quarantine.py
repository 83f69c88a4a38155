"""Quarantine references by hand (or by the service's flood action) and enable them again.

A quarantined reference stays on disk and in `index info` but is never matched (`index.store`);
the build quarantines generic-looking references itself (`index.build`). Each change commits a new
generation with the characters' calibration recomputed without (or with) the reference, the same
way `add_references`/`remove_references` do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from index.build import calibrated_characters
from index.errors import IndexStoreError, ReferenceNotFoundError
from index.store import IndexData, IndexStore, Reference, index_lock, write_index

__all__ = ["enable_reference", "find_reference", "quarantine_references"]


def find_reference(data: IndexData, reference: str, where: str | Path) -> Reference:
    """The reference named by its id, sha256 or source path.

    Raises:
        ReferenceNotFoundError: no reference has that name.
    """
    names = {reference, str(Path(reference).resolve())}
    found = next((r for r in data.references.values() if names & {r.id, r.sha256, r.source_path}), None)
    if found is None:
        raise ReferenceNotFoundError(f"{where}: no reference {reference!r} in this index; see `mamori index info`")
    return found


def _commit(path: str | Path, data: IndexData) -> None:
    data.characters = calibrated_characters(data)
    write_index(path, data)


def quarantine_references(path: str | Path, ids: Sequence[str], reason: str) -> list[Reference]:
    """Quarantine the references with these ids, for `reason`, and commit; returns those changed.

    References already quarantined, or no longer in the index, are left alone (no new generation
    when nothing changed), so concurrent callers may ask for the same reference.
    """
    if not reason:
        raise IndexStoreError("a quarantine needs a reason")
    with index_lock(path):
        data = IndexStore.open(path).data
        changed = []
        for rid in ids:
            ref = data.references.get(rid)
            if ref is not None and not ref.quarantine:
                data.references[rid] = changed_ref = replace(ref, quarantine=reason)
                changed.append(changed_ref)
        if changed:
            _commit(path, data)
    return changed


def enable_reference(path: str | Path, reference: str, *, only_reason: str | None = None) -> tuple[Reference, str]:
    """Clear a reference's quarantine (by id, sha256 or source path) and commit: (the reference,
    the reason it was quarantined for, "" when it was not, and nothing was written). With
    `only_reason`, only a quarantine for exactly that reason is cleared (the service's flood expiry
    leaves one an admin set meanwhile); another gives "" and nothing is written.

    Raises:
        ReferenceNotFoundError: no such reference (the index is left unchanged).
    """
    with index_lock(path):
        data = IndexStore.open(path).data
        ref = find_reference(data, reference, path)
        was = ref.quarantine
        if only_reason is not None and was != only_reason:
            return ref, ""
        if was:
            data.references[ref.id] = ref = replace(ref, quarantine="")
            _commit(path, data)
    return ref, was
