"""mamori's reference index: manifests, the on-disk FAISS + SQLite store, building and calibration.

>>> from index import IndexStore, build_index, read_references   # doctest: +SKIP

The errors are imported with the package; every other name on first use (PEP 562 `__getattr__`),
so `import index` does not import FAISS, OpenCV, NumPy or PIL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from index.errors import (
    CorruptIndexError,
    IncompatibleIndexError,
    IndexLockedError,
    IndexNotFoundError,
    IndexStoreError,
    ManifestError,
    ReferenceImageError,
    ReferenceNotFoundError,
    ScanStoreError,
)
from index.lazy import lazy_exports

if TYPE_CHECKING:
    from index.build import BuildReport, add_references, build_index, remove_references, set_thresholds
    from index.calibrate import SCORE_FLAG, SCORE_REVIEW, calibrated_score
    from index.embedder import Embedder
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
    "ScanStoreError",
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

_LAZY = {
    **dict.fromkeys(
        ("BuildReport", "add_references", "build_index", "remove_references", "set_thresholds"),
        "index.build",
    ),
    "Embedder": "index.embedder",
    **dict.fromkeys(("SCORE_FLAG", "SCORE_REVIEW", "calibrated_score"), "index.calibrate"),
    "open_image": "index.images",
    **dict.fromkeys(("ReferenceEntry", "read_folder", "read_manifest", "read_references"), "index.manifest"),
    **dict.fromkeys(("CharacterInfo", "IndexStore", "Reference"), "index.store"),
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
