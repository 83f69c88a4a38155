"""Reference art kept inside the index: `INDEX/uploads/`, one file per image, named by its sha256.

The HTTP service's `POST /v1/admin/references` keeps each uploaded image here (the index records
where each reference came from, and the review report shows it). A file stays while any
reference uses it: a duplicate upload never touches it, and a removal deletes only the files of
the removed references that no remaining reference uses (`unused_uploads`). Art outside
`INDEX/uploads/` (a build's reference folder) is the user's and is never deleted. Files in
`INDEX/confirmed/` (regions of videos that reviewers confirmed as infringing, added as references
by `mamori review apply`, `detector.review.confirmed`) are deleted the same way as uploads.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from index.images import file_sha256
from index.store import Reference

__all__ = ["CONFIRMED", "UPLOADS", "delete_unused_uploads", "keep_upload", "unused_uploads"]

UPLOADS = "uploads"
#: reference art cut from videos reviewers confirmed as infringing (`detector.review.confirmed`)
CONFIRMED = "confirmed"


def keep_upload(index: str | Path, file: str | Path, suffix: str = "") -> tuple[Path, bool]:
    """Move `file` into `INDEX/uploads/` as `<sha256[:16]><suffix>` (a suffix other than a dot and up
    to 7 letters or digits is dropped); returns (its path there, whether this call created it).
    When that file is already there (the same image), `file` is left alone."""
    folder = (Path(index) / UPLOADS).absolute()
    folder.mkdir(exist_ok=True)
    suffix = suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,7}", suffix.lower()) else ""
    kept = folder / f"{file_sha256(file)[:16]}{suffix}"
    if kept.exists():
        return kept, False
    shutil.move(str(file), kept)
    return kept, True


def _key(path: str | Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def unused_uploads(index: str | Path, removed: Iterable[Reference], remaining: Iterable[Reference]) -> list[Path]:
    """The files in `INDEX/uploads/` or `INDEX/confirmed/` that the removed references used and no
    remaining one does."""
    folders = {_key(Path(index) / UPLOADS), _key(Path(index) / CONFIRMED)}
    still = {_key(r.source_path) for r in remaining if r.source_path}
    out: dict[str, Path] = {}
    for r in removed:
        if not r.source_path:
            continue
        key = _key(r.source_path)
        if os.path.dirname(key) in folders and key not in still and os.path.isfile(key):
            out[key] = Path(key)  # the resolved file in uploads/, never a link elsewhere that points there
    return list(out.values())


def delete_unused_uploads(index: str | Path, removed: Iterable[Reference],
                          remaining: Iterable[Reference]) -> list[Path]:
    """Delete `unused_uploads`; returns those actually deleted."""
    deleted = []
    for p in unused_uploads(index, removed, remaining):
        try:
            p.unlink()
        except OSError:
            continue
        deleted.append(p)
    return deleted
