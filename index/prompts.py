"""Text prompts as given and as stored (the text channel itself is `index.text`).

As given, two ways, which add up (a pair given twice is kept once):
    - a manifest CSV's optional `prompt` column: a non-empty cell is a prompt for that row's
      character (one image row carries at most one prompt; give more rows, or a prompt file, for more);
    - a prompt file (`--prompts FILE` on `mamori index build` and `index add`): a UTF-8 CSV with a
      header and the columns `character,prompt`, one prompt per row, any number of rows per
      character, in the order they are to be numbered. Other columns are an error (a misspelt
      header would otherwise pass unnoticed).

As stored (index format version 4, `index.generation`): two tables in a generation's
`meta.sqlite`, written only when the index holds prompts (an index without prompts stays format 3):

    prompts (row, character, prompt, vector)        vector: the raw text embedding, float32 bytes
    text_calibration (name, mu, sigma, bg_max, n_background, source, flag_sim)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.calibrate import Calibration
from index.errors import ManifestError
from index.manifest import ReferenceEntry, csv_reader
from index.records import TextPrompts

__all__ = ["MAX_PROMPT_CHARS", "PROMPT_COLUMNS", "PromptEntry", "collect_prompts", "read_prompt_tables",
           "read_prompts", "write_prompt_tables"]

PROMPT_COLUMNS = ("character", "prompt")
#: longer prompts are refused (the text tower reads at most its context, 77 tokens for CLIP)
MAX_PROMPT_CHARS = 1000

_SCHEMA = """
CREATE TABLE prompts (row INTEGER PRIMARY KEY, character TEXT NOT NULL, prompt TEXT NOT NULL, vector BLOB NOT NULL);
CREATE TABLE text_calibration (
    name TEXT PRIMARY KEY, mu REAL, sigma REAL, bg_max REAL, n_background INTEGER, source TEXT, flag_sim REAL);
"""


@dataclass(frozen=True)
class PromptEntry:
    """One text prompt for a character, as given (not yet embedded)."""

    character: str
    prompt: str


def _checked(where: str, character: str, prompt: str) -> PromptEntry:
    if not character or not prompt:
        raise ManifestError(f"{where}: 'character' and 'prompt' must not be empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ManifestError(f"{where}: prompt longer than {MAX_PROMPT_CHARS} characters")
    return PromptEntry(character, " ".join(prompt.split()))


def read_prompts(csv_path: str | Path) -> list[PromptEntry]:
    """Parse a prompt file (`character,prompt` CSV, see the module docstring).

    Raises:
        ManifestError: missing file, wrong columns, an empty cell, or no rows.

    >>> read_prompts("prompts.csv")   # doctest: +SKIP
    [PromptEntry(character='akane', prompt='a girl with a red scarf and a wooden sword')]
    """
    csv_path = Path(csv_path)
    with csv_reader(csv_path, "prompt file") as reader:
        columns = [c.strip() for c in reader.fieldnames or []]
        if sorted(columns) != sorted(PROMPT_COLUMNS):
            raise ManifestError(f"{csv_path}: columns must be {','.join(PROMPT_COLUMNS)} (got {','.join(columns)})")
        out = []
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            out.append(_checked(f"{csv_path}:{line}", row["character"], row["prompt"]))
    if not out:
        raise ManifestError(f"{csv_path}: the prompt file has no rows")
    return out


def collect_prompts(entries: Sequence[ReferenceEntry], extra: Sequence[PromptEntry],
                    known: set[str]) -> list[PromptEntry]:
    """The manifest's `prompt` cells, then `extra`, each (character, prompt) pair once.

    Raises:
        ManifestError: a prompt for a character that neither `entries` nor `known` (the index's
            characters) has: a prompt only adds a way to find a character with reference art.
    """
    chars = known | {e.character for e in entries}
    out: dict[tuple[str, str], PromptEntry] = {}
    given = [_checked(str(e.path), e.character, e.prompt) for e in entries if e.prompt] + list(extra)
    for p in given:
        if p.character not in chars:
            raise ManifestError(f"prompt {p.prompt!r} names character {p.character!r}, which has no reference "
                                "image here or in the index (prompts add to a character's reference art)")
        out.setdefault((p.character, p.prompt), p)
    return list(out.values())


def write_prompt_tables(db: sqlite3.Connection, text: TextPrompts) -> None:
    """Create and fill the prompt tables in a generation's database (the caller commits)."""
    db.executescript(_SCHEMA)
    vectors = np.ascontiguousarray(text.vectors, np.float32)
    db.executemany("INSERT INTO prompts VALUES (?,?,?,?)",
                   [(i, c, p, vectors[i].tobytes()) for i, (c, p) in
                    enumerate(zip(text.characters, text.prompts, strict=True))])
    db.executemany("INSERT INTO text_calibration VALUES (?,?,?,?,?,?,?)",
                   [(c, k.mu, k.sigma, k.bg_max, k.n_background, k.source, k.flag_sim)
                    for c, k in sorted(text.calibration.items())])


def read_prompt_tables(db: sqlite3.Connection, dim: int) -> TextPrompts | None:
    """The prompts of a format-4 generation, or None when it has none.

    Raises:
        ValueError: a stored vector of the wrong size, or a character without its calibration (the
            caller reports a corrupt index).
    """
    has = db.execute("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='prompts'").fetchone()[0]
    if not has:
        return None
    rows = db.execute("SELECT character, prompt, vector FROM prompts ORDER BY row").fetchall()
    if not rows:
        return None
    if any(len(v) != 4 * dim for *_, v in rows):
        raise ValueError(f"prompts table: a vector is not {dim} float32 values")
    cal = {
        row[0]: Calibration(float(row[1]), float(row[2]), float(row[3]), int(row[4]), str(row[5]), float(row[6]))
        for row in db.execute("SELECT * FROM text_calibration")
    }
    if missing := {c for c, *_ in rows} - set(cal):
        raise ValueError(f"text_calibration table: no row for {sorted(missing)}")
    vectors = np.stack([np.frombuffer(v, np.float32) for *_, v in rows])
    return TextPrompts([c for c, *_ in rows], [p for _, p, _ in rows], vectors, cal)
