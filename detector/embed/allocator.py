"""The C allocator setting that keeps model passes off the kernel's page-fault path (Linux/glibc).

Without it every forward pass maps fresh pages for its activations (glibc returns blocks over its
mmap threshold to the kernel on free) and the kernel zeroes them again: measured 4.3 million page
faults and as much system time as model time on two dev clips, 1.8x the wall time. So freed blocks
up to 1 GiB are kept for reuse (peak memory is unchanged: the same blocks are reused; resident
memory stays at the peak instead of shrinking between passes).

All threads also share one malloc arena: glibc's per-thread arenas cannot hold blocks over 64 MB,
so a forward pass in a worker thread (`mamori scan --workers`, the HTTP service) would map fresh
pages every time (two worker threads measured 0.67x one worker; with one arena 1.09x). The arena
limit only binds arenas created after it, so `detector/__init__.py` applies this first, before
torch and numpy start their threads. This module imports nothing heavy for that reason.

A program that embeds mamori and wants glibc's defaults sets MAMORI_SYSTEM_ALLOCATOR=1.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_tuned = False


def keep_freed_memory() -> bool:
    """Apply the setting of the module docstring once; False (a no-op) outside Linux/glibc."""
    global _tuned
    if _tuned or not sys.platform.startswith("linux") or os.environ.get("MAMORI_SYSTEM_ALLOCATOR") == "1":
        return _tuned
    try:
        libc = ctypes.CDLL("libc.so.6")
        _tuned = all(libc.mallopt(param, value) for param, value in (
            (_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 30), (_M_ARENA_MAX, 1)))
    except (OSError, AttributeError):  # not glibc
        _tuned = False
    return _tuned
