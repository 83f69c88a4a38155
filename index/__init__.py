"""mamori's reference index: manifests, the on-disk FAISS + SQLite store, building and calibration.

>>> from index import IndexStore, build_index, read_references   # doctest: +SKIP
"""

from __future__ import annotations

from index.build import BuildReport, Embedder, add_references, build_index, remove_references, set_thresholds
from index.calibrate import SCORE_FLAG, SCORE_REVIEW, calibrated_score
from index.errors import (
    CorruptIndexError,
    IncompatibleIndexError,
    IndexLockedError,
    IndexNotFoundError,
    IndexStoreError,
    ManifestError,
    ReferenceImageError,
    ReferenceNotFoundError,
)
from index.images import open_image
from index.manifest import ReferenceEntry, read_folder, read_manifest, read_references
from index.store import CharacterInfo, IndexStore, Reference

__all__ = [
    "SCORE_FLAG",
    "SCORE_REVIEW",
    "BuildReport",
    "CharacterInfo",
    "CorruptIndexError",
    "Embedder",
    "IncompatibleIndexError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexStore",
    "IndexStoreError",
    "ManifestError",
    "Reference",
    "ReferenceEntry",
    "ReferenceImageError",
    "ReferenceNotFoundError",
    "add_references",
    "build_index",
    "calibrated_score",
    "open_image",
    "read_folder",
    "read_manifest",
    "read_references",
    "remove_references",
    "set_thresholds",
]
