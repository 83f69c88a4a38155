"""Reading reference art into `ReferenceEntry` rows: from a manifest CSV or a folder per character.

Manifest CSV columns: `path,character,franchise,rights_holder,license` (paths relative to the
CSV's folder; extra columns are kept as `extra`), and the optional `prompt` column: a text prompt
for the row's character (CLIP backbones only; `index.prompts`, docs/text-prompts.md). Folder layout: `REFS_DIR/<character>/<images>`,
with franchise, rights holder and licence left empty.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from index.errors import ManifestError
from index.images import IMAGE_SUFFIXES

__all__ = ["PROMPT_COLUMN", "REQUIRED_COLUMNS", "ReferenceEntry", "read_folder", "read_manifest", "read_references"]

REQUIRED_COLUMNS = ("path", "character", "franchise", "rights_holder", "license")
#: optional manifest column: a text prompt for the row's character (not kept in `extra`)
PROMPT_COLUMN = "prompt"


@dataclass(frozen=True)
class ReferenceEntry:
    """One reference image to index, with its rights metadata (not yet read or embedded)."""

    path: Path
    character: str
    franchise: str = ""
    rights_holder: str = ""
    license: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    #: a text prompt for `character` from the manifest's `prompt` column ("" = none)
    prompt: str = ""


@contextmanager
def csv_reader(csv_path: Path, what: str) -> Iterator[csv.DictReader[str]]:
    """A `csv.DictReader` over a UTF-8 CSV (BOM allowed); a missing or unreadable file, read
    inside the block, is a ManifestError naming `what`."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            yield csv.DictReader(f)
    except FileNotFoundError as exc:
        raise ManifestError(f"{csv_path}: no such {what}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"{csv_path}: not a readable UTF-8 CSV ({exc})") from exc


def read_manifest(csv_path: str | Path) -> list[ReferenceEntry]:
    """Parse a manifest CSV.

    Raises:
        ManifestError: missing file or columns, an empty character name, or no rows.
    """
    csv_path = Path(csv_path)
    with csv_reader(csv_path, "manifest file") as reader:
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ManifestError(
                f"{csv_path}: missing column(s) {', '.join(missing)}; "
                f"expected {','.join(REQUIRED_COLUMNS)}"
            )
        entries = []
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            if not row.get("path") or not row.get("character"):
                raise ManifestError(f"{csv_path}:{line}: 'path' and 'character' must not be empty")
            extra = {k: v for k, v in row.items() if k not in (*REQUIRED_COLUMNS, PROMPT_COLUMN) and k}
            entries.append(
                ReferenceEntry(
                    path=(csv_path.parent / row["path"]).resolve(),
                    character=row["character"],
                    franchise=row["franchise"],
                    rights_holder=row["rights_holder"],
                    license=row["license"],
                    extra=extra,
                    prompt=row.get(PROMPT_COLUMN, ""),
                )
            )
    if not entries:
        raise ManifestError(f"{csv_path}: the manifest has no rows")
    return entries


def read_folder(refs_dir: str | Path) -> list[ReferenceEntry]:
    """List `REFS_DIR/<character>/<image>` files as entries (sorted, hidden files skipped).

    Raises:
        ManifestError: the folder is missing or holds no character sub-folder with images.
    """
    refs_dir = Path(refs_dir)
    if not refs_dir.is_dir():
        raise ManifestError(f"{refs_dir}: not a folder (expected REFS_DIR/<character>/<images>)")
    entries = [
        ReferenceEntry(path=img.resolve(), character=char_dir.name)
        for char_dir in sorted(refs_dir.iterdir())
        if char_dir.is_dir() and not char_dir.name.startswith(".")
        for img in sorted(char_dir.rglob("*"))
        if img.is_file() and img.suffix.lower() in IMAGE_SUFFIXES and not img.name.startswith(".")
    ]
    if not entries:
        raise ManifestError(
            f"{refs_dir}: no images found; expected one sub-folder per character holding "
            f"{', '.join(sorted(IMAGE_SUFFIXES))} files"
        )
    return entries


def read_references(refs_dir: str | Path | None, manifest: str | Path | None) -> list[ReferenceEntry]:
    """Entries from exactly one of a folder or a manifest CSV."""
    if (refs_dir is None) == (manifest is None):
        raise ManifestError("give either a reference folder or --manifest CSV, not both or neither")
    return read_manifest(manifest) if manifest is not None else read_folder(refs_dir)  # type: ignore[arg-type]
