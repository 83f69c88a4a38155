"""The time stamps mamori writes into indexes, allow-lists and scan stores: UTC, to the second."""

from __future__ import annotations

import time

__all__ = ["TIME_FORMAT", "now"]

#: ISO 8601 in UTC (`time.strftime` / `time.strptime` format)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now() -> str:
    """The current time as TIME_FORMAT, e.g. "2026-12-06T16:40:17Z"."""
    return time.strftime(TIME_FORMAT, time.gmtime())
