"""Exceptions raised by the `detector` package.

    DetectorError                 root of everything `detector` raises
    ├── ConfigError               a bad option or name (unknown backbone, bad fps, ...)
    ├── BackboneError             a backbone that cannot be built or loaded
    │   └── BackboneUnavailableError   its weights cannot be had here (offline, missing file)
    └── MediaError                an input file that cannot be used
        ├── UnreadableMediaError  empty, corrupt, truncated, or not an image/video
        └── MediaLimitError       over a limit (pixels, frames, duration)

Index problems raise `index.IndexStoreError` and its subclasses.
"""

from __future__ import annotations

__all__ = [
    "BackboneError",
    "BackboneUnavailableError",
    "ConfigError",
    "DetectorError",
    "MediaError",
    "MediaLimitError",
    "UnreadableMediaError",
]


class DetectorError(Exception):
    """Root of every error the `detector` package raises."""


class ConfigError(DetectorError):
    """A bad option value or an unknown name."""


class BackboneError(DetectorError):
    """A backbone that cannot be built or whose weights do not fit its architecture."""


class BackboneUnavailableError(BackboneError):
    """The backbone's weights cannot be had here (no network and not cached, or a missing file)."""


class MediaError(DetectorError):
    """An input image or video that cannot be used."""


class UnreadableMediaError(MediaError):
    """Empty, corrupt, truncated, or not an image or video at all."""


class MediaLimitError(MediaError):
    """An input over one of the configured limits; `limit` names it (max_pixels, max_duration, ...)."""

    def __init__(self, message: str, *, limit: str = "max_pixels"):
        super().__init__(message)
        self.limit = limit
