"""Exceptions raised by the `index` package.

    IndexStoreError              anything wrong with reference data or an index on disk
    ├── ManifestError            a manifest CSV or reference folder that cannot be used
    ├── ReferenceImageError      one image that cannot be read (corrupt, truncated, not an image)
    │   └── ImageTooLargeError   over the pixel limit (decompression-bomb guard)
    ├── IndexNotFoundError       no index at that path (or a build that never finished)
    ├── CorruptIndexError        index files present but unreadable or inconsistent
    ├── IncompatibleIndexError   an index made with another backbone, weights or format version
    ├── IndexLockedError         another process is writing the same index
    ├── PolicyError              a match policy file that cannot be used (`index.policy`)
    ├── ReferenceNotFoundError   a remove that matched no reference or character
    └── ScanStoreError           a scan store (`index.scanstore`) missing, damaged, or made with
                                 another backbone than the index it is used with

The builtin `IndexError` is never shadowed.
"""

from __future__ import annotations

__all__ = [
    "CorruptIndexError",
    "ImageTooLargeError",
    "IncompatibleIndexError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexStoreError",
    "ManifestError",
    "PolicyError",
    "ReferenceImageError",
    "ReferenceNotFoundError",
    "ScanStoreError",
]


class IndexStoreError(Exception):
    """Root of every error the `index` package raises."""


class ManifestError(IndexStoreError):
    """A manifest CSV or reference folder that cannot be used."""


class ReferenceImageError(IndexStoreError):
    """A reference image that cannot be read: corrupt, too large, or not an image."""


class ImageTooLargeError(ReferenceImageError):
    """An image whose header claims more pixels than the limit (a decompression bomb, or just huge)."""


class IndexNotFoundError(IndexStoreError):
    """No index at the given path."""


class CorruptIndexError(IndexStoreError):
    """Index files exist but are unreadable or disagree with each other."""


class IncompatibleIndexError(IndexStoreError):
    """The index was made with another backbone, other weights or another format version."""


class IndexLockedError(IndexStoreError):
    """Another process holds the index's write lock."""


class PolicyError(IndexStoreError):
    """A match policy (POLICY.toml) with a syntax error, an unknown key, a wrong type or a value out of range."""


class ReferenceNotFoundError(IndexStoreError):
    """A remove that matched no reference or character (the index is unchanged)."""


class ScanStoreError(IndexStoreError):
    """A scan store that is missing, damaged, locked by a compaction, or made with another backbone."""
