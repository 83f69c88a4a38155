"""The time stamps mamori writes into indexes, allow-lists and scan stores: UTC, to the second."""

from __future__ import annotations

import calendar
import time

__all__ = ["TIME_FORMAT", "at", "now", "parse"]

#: ISO 8601 in UTC (`time.strftime` / `time.strptime` format)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now() -> str:
    """The current time as TIME_FORMAT, e.g. "2026-12-06T16:40:17Z"."""
    return time.strftime(TIME_FORMAT, time.gmtime())


def at(t: float) -> str:
    """Epoch seconds `t` as TIME_FORMAT."""
    return time.strftime(TIME_FORMAT, time.gmtime(t))


def parse(stamp: str) -> float:
    """Epoch seconds of a TIME_FORMAT stamp (the inverse of `at`, to the second).

    Raises:
        ValueError: not a TIME_FORMAT stamp.
    """
    return float(calendar.timegm(time.strptime(stamp, TIME_FORMAT)))
