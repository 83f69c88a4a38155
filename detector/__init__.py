"""mamori's detector: backbones, frame sampling, scoring, the `Detector` API and the `mamori` CLI.

>>> from detector import Detector
>>> det = Detector.open("my-index")                      # doctest: +SKIP
>>> det.score_video("clip.mp4").to_dict()["verdict"]     # doctest: +SKIP
'flag'
"""

from __future__ import annotations

from detector.allocator import keep_freed_memory

keep_freed_memory()  # first, before torch and numpy start threads (see detector/allocator.py)

from detector.api import Detector
from detector.backbones import DEFAULT_BACKBONE, Backbone, Preprocess, list_backbones, load_backbone
from detector.errors import (
    BackboneError,
    BackboneUnavailableError,
    ConfigError,
    DetectorError,
    MediaError,
    MediaLimitError,
    UnreadableMediaError,
)
from detector.results import CharacterResult, Result, Segment

__all__ = [
    "DEFAULT_BACKBONE",
    "Backbone",
    "BackboneError",
    "BackboneUnavailableError",
    "CharacterResult",
    "ConfigError",
    "Detector",
    "DetectorError",
    "MediaError",
    "MediaLimitError",
    "Preprocess",
    "Result",
    "Segment",
    "UnreadableMediaError",
    "list_backbones",
    "load_backbone",
]
