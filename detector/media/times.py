"""The one rule for finding the sampled frame at a time that comes from elsewhere (a result line,
the scan store, a reviewer's mark): `frame_distance` (issue 29)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TIME_TOLERANCE", "frame_distance"]

#: Seconds by which a time from elsewhere may miss its frame's decoded time (`frame_distance`):
#: a result line rounds times to 0.1 ms; two frames are 16.7 ms apart at 60000/1001 fps, 4.2 ms at 240.
TIME_TOLERANCE = 1e-3


def frame_distance(time: float, start: float, end: float | None = None) -> float:
    """Seconds from a frame at `time` to the time `start`, or to the span [start, end] (`end`
    math.inf: at or after `start`); 0.0 when the frame is the one at `start` or lies in the span.

    The one rule for finding the frame at a time from elsewhere (a result line, the scan store, a
    reviewer's mark): each finite end is widened by TIME_TOLERANCE, or by two float32 steps at that
    time where more (the scan store keeps float32 times: late in an NTSC-rate video one is later
    than its frame's; past 2^13 s a step is 1 ms). Callers ask for "the frame at t" (0.0), "the
    frames of a segment" (0.0 with `end`), "the first frame from t on" (`end` math.inf) or "the
    frame nearest t" (the smallest distance; the earlier frame on a tie).

    >>> frame_distance(45.045, float(np.float32(45.045))), round(frame_distance(45.0784, 45.045), 4)
    (0.0, 0.0324)
    """
    end = start if end is None else end
    return max(0.0, start - _tolerance(start) - time, time - end - _tolerance(end))


def _tolerance(t: float) -> float:
    if not math.isfinite(t):
        return 0.0
    return max(TIME_TOLERANCE, 2 * float(np.spacing(np.float32(abs(t)))))
