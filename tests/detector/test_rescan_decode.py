"""`mamori rescan` decodes exactly the frames the scan sampled, also late in a long NTSC-rate video
(the store keeps float32 times; past ~30 s at 29.97 fps a float32 time is later than the frame's)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from detector.media.frames import MediaReader
from detector.runs.rescan import _decoded
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


class _Container:
    """A stream whose first frame is stamped before the stream's start (an edit list, a cut):
    the scan's clock clamps its time at 0 (`detector.media.frames._Clock`)."""

    def __init__(self, frames: list[av.VideoFrame]) -> None:
        self.streams = SimpleNamespace(video=[SimpleNamespace(time_base=Fraction(1, 1000), start_time=100)])
        self.frames = frames

    def seek(self, *args: object, **kw: object) -> None:
        pass

    def decode(self, stream: object) -> list[av.VideoFrame]:
        return list(self.frames)


def test_rescan_clamps_frame_times_at_zero_as_the_scan_does() -> None:
    from detector.runs.rescan import _seeked

    frames = []
    for i, ms in enumerate((60, 140, 220)):  # 0.06 s is 0.04 s before the stream's start
        f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
        f.pts, f.time_base = ms, Fraction(1, 1000)
        frames.append(f)
    rec = SimpleNamespace(times=np.array([0.0, 0.04, 0.12], np.float32), sizes=np.tile([[64, 48]], (3, 1)).astype(np.int32))
    got = list(_seeked(_Container(frames), rec, {0}))  # type: ignore[arg-type]
    assert [(f.index, f.time) for f in got] == [(0, 0.0)]
    assert np.asarray(got[0].image)[0, 0, 0] == 0  # the first frame, not the next one
