"""`mamori rescan` decodes exactly the frames the scan sampled, also late in a long NTSC-rate video
(the store keeps float32 times; past ~30 s at 29.97 fps a float32 time is later than the frame's)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from detector.frames import MediaReader
from detector.rescan import _decoded
from index.errors import ScanStoreError


def _ntsc_clip(path: Path, seconds: float) -> None:
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(round(seconds * 30000 / 1001)):
            img = np.full((48, 64, 3), (i * 7) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_late_frames_of_a_long_ntsc_video_are_found_again(tmp_path: Path) -> None:
    clip = tmp_path / "ntsc.mp4"
    _ntsc_clip(clip, 45.0)
    sampled = list(MediaReader(clip, fps=2.0, max_frames=600))  # as the scan sampled it
    rec = SimpleNamespace(times=np.array([f.time for f in sampled], np.float32),
                          sizes=np.array([f.image.size for f in sampled], np.int32))
    entry = SimpleNamespace(path=str(clip), fps=2.0, max_frames=600)
    det = SimpleNamespace(max_pixels=40_000_000)
    wanted = {3, 70, 71, len(sampled) - 1}
    got = list(_decoded(det, entry, rec, wanted))  # type: ignore[arg-type]
    assert [f.index for f in got] == sorted(wanted)
    for f in got:
        assert f.time == pytest.approx(sampled[f.index].time, abs=1e-6)
        assert np.array_equal(np.asarray(f.image), np.asarray(sampled[f.index].image))

    rec.sizes[70] = (32, 24)  # a decoder that gives another size: refused, not misaligned
    with pytest.raises(ScanStoreError, match="32x24"):
        list(_decoded(det, entry, rec, {70}))  # type: ignore[arg-type]
