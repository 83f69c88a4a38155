"""Hostile media made on purpose: the container swaps, timestamp edits and byte mutations an
uploader can apply to a clip, for the tests and `scripts/fuzz_media.py`.

    remux("clip.mp4", "clip.h264")          # the same bitstream as a raw elementary stream
    retime_flv(data, lambda i, ms: 0)       # every FLV tag at t = 0 (constant timestamps)
    mutations(data, rng)                    # named byte-level edits of one file
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import av

__all__ = ["mutations", "remux", "retime_flv"]

#: output format by suffix, for suffixes FFmpeg cannot guess alone
_FORMATS = {".h264": "h264", ".264": "h264", ".h265": "hevc", ".hevc": "hevc", ".ts": "mpegts",
            ".m2ts": "mpegts", ".flv": "flv", ".mkv": "matroska", ".nut": "nut", ".3gp": "3gp"}


def remux(src: str | Path, dst: str | Path) -> Path:
    """Copy the first video stream of `src` into the container that `dst`'s suffix names, without
    re-encoding (`.h264`/`.hevc`: a raw elementary stream, with no timestamps at all)."""
    dst = Path(dst)
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=_FORMATS.get(dst.suffix.lower())) as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is None:  # the demuxer's empty flush packet
                continue
            packet.stream = copy
            out.mux(packet)
    return dst


def _flv_tags(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(offset, tag type, data size) of each tag of an FLV file."""
    pos = struct.unpack(">I", data[5:9])[0] + 4
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        yield pos, data[pos], size
        pos += 11 + size + 4


def retime_flv(data: bytes, new_ms: Callable[[int, int], int], *, zero_cts: bool = False) -> bytes:
    """An FLV file whose i-th video tag's timestamp (ms) becomes `new_ms(i, old_ms)`; with
    `zero_cts` the H.264 composition offsets are zeroed too, so presentation times are exactly the
    new ones (the way to make constant or backwards timestamps that no muxer would write)."""
    out = bytearray(data)
    video = 0
    for pos, kind, size in _flv_tags(data):
        if kind != 9:
            continue
        old = int.from_bytes(data[pos + 4:pos + 7], "big") | data[pos + 7] << 24
        ms = new_ms(video, old) & 0xFFFFFFFF
        out[pos + 4:pos + 7] = (ms & 0xFFFFFF).to_bytes(3, "big")
        out[pos + 7] = ms >> 24
        if zero_cts and size >= 5 and data[pos + 11] & 0x0F == 7:  # AVC: 1 byte flags, 1 type, 3 cts
            out[pos + 13:pos + 16] = b"\0\0\0"
        video += 1
    return bytes(out)


def mutations(data: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """Byte-level edits of one file, each named: truncations, flipped bytes, a zeroed or
    randomised header, a duplicated middle, junk appended."""
    n = len(data)
    yield "truncate-half", data[: n // 2]
    yield "truncate-random", data[: rng.randrange(1, max(2, n))]
    flipped = bytearray(data)
    for _ in range(max(1, n // 2000)):
        i = rng.randrange(n)
        flipped[i] ^= 1 << rng.randrange(8)
    yield "bit-flips", bytes(flipped)
    burst = bytearray(data)
    i = rng.randrange(n)
    burst[i:i + 64] = rng.randbytes(min(64, n - i))
    yield "random-burst", bytes(burst)
    yield "header-zeroed", bytes(min(n, 64)) + data[64:]
    yield "header-random", rng.randbytes(min(n, 32)) + data[32:]
    yield "middle-duplicated", data[: n // 2] + data[n // 4:]
    yield "junk-appended", data + rng.randbytes(4096)
