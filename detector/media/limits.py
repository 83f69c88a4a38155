"""The HTTP service's per-request limits (a light module: the CLI reads the defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

from detector.media.frames import DEFAULT_MAX_FRAMES
from index.images import DEFAULT_MAX_PIXELS

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Per-request limits; each has a `mamori serve` flag of the same name."""

    max_upload_mb: float = 512.0
    max_duration: float = 900.0  # seconds of video
    max_frames_total: int = 100_000  # frames in the video stream (sampled or not)
    max_frames: int = DEFAULT_MAX_FRAMES  # sampled frames; the `max_frames` query may only lower it
    max_pixels: int = DEFAULT_MAX_PIXELS
    request_timeout: float = 300.0  # seconds for upload + scoring
