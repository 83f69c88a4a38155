"""mamori's detector: backbones, frame sampling, scoring, the `Detector` API and the `mamori` CLI.

>>> from detector import Detector
>>> det = Detector.open("my-index")                      # doctest: +SKIP
>>> det.score_video("clip.mp4").to_dict()["verdict"]     # doctest: +SKIP
'flag'

The names that need torch (`Detector`, the backbone registry) are imported on first use (PEP 562
`__getattr__`), so `import detector` and `mamori --help` stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detector.embed.allocator import keep_freed_memory
from index.lazy import lazy_exports

keep_freed_memory()  # first, before torch and numpy start threads (see detector/embed/allocator.py)

from detector.errors import (
    BackboneError,
    BackboneUnavailableError,
    ConfigError,
    DetectorError,
    MediaError,
    MediaLimitError,
    UnreadableMediaError,
)
from detector.match.results import CharacterResult, Result, Segment

if TYPE_CHECKING:
    from detector.api import Detector
    from detector.embed.backbones import DEFAULT_BACKBONE, Backbone, Preprocess, list_backbones, load_backbone

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

_LAZY = {
    "Detector": "detector.api",
    "DEFAULT_BACKBONE": "detector.embed.backbones",
    "Backbone": "detector.embed.backbones",
    "Preprocess": "detector.embed.backbones",
    "list_backbones": "detector.embed.backbones",
    "load_backbone": "detector.embed.backbones",
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
