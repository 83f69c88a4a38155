"""`detector.media.frames.frame_distance`: the one rule for finding the frame at a time that comes from
elsewhere (a scan store's float32 time, a result line's 4-decimal time, a segment, a reviewer's
mark), on NTSC-rate videos, at both ends of a video, and late in a long one."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from detector.media.frames import MediaReader, frame_at
from detector.media.times import TIME_TOLERANCE, frame_distance

NTSC = [Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001)]


def _clip(path: Path, rate: Fraction, seconds: float) -> Path:
    """A 64x48 H.264 clip whose frame i is grey level 7 * i (mod 256): each frame is told apart."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(round(seconds * rate)):
            img = np.full((48, 64, 3), (i * 7) % 256, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module", params=NTSC, ids=lambda r: f"{r.numerator}/{r.denominator}")
def ntsc(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """An NTSC-rate clip and every frame's time as the scan's sampling computes it (fps above the rate)."""
    path = _clip(tmp_path_factory.mktemp("ntsc") / "clip.mp4", request.param, 12.0)
    times = [f.time for f in MediaReader(path, fps=1000.0, max_frames=10_000)]
    assert len(times) == round(12.0 * request.param)
    return path, times


def _first_from(times: list[float], t: float) -> int:
    return next(i for i, ft in enumerate(times) if frame_distance(ft, t, math.inf) == 0.0)


def _nearest(times: list[float], t: float) -> int:
    return min(range(len(times)), key=lambda i: frame_distance(times[i], t))


def test_a_float32_or_rounded_time_names_its_frame_and_no_other(ntsc: tuple[Path, list[float]]) -> None:
    _, times = ntsc
    stored = np.array(times, np.float32)  # as the scan store keeps them
    assert any(float(s) > t for s, t in zip(stored, times, strict=True))  # later than the frame's own time
    for i, t in enumerate(times):
        for given in (float(stored[i]), round(t, 4)):  # the scan store, a result line
            assert frame_distance(t, given) == 0.0
            assert all(frame_distance(times[j], given) > 0.0 for j in (i - 1, i + 1) if 0 <= j < len(times))
            assert _first_from(times, given) == i
            assert _nearest(times, given) == i


def test_a_segment_holds_exactly_its_frames(ntsc: tuple[Path, list[float]]) -> None:
    path, _ = ntsc
    sampled = [f.time for f in MediaReader(path, fps=2.0)]  # the scan's sampled frames
    stored = np.array(sampled, np.float32)
    a, b = 3, len(sampled) - 4
    inside = [i for i, t in enumerate(sampled) if frame_distance(t, float(stored[a]), float(stored[b])) == 0.0]
    assert inside == list(range(a, b + 1))
    inside = [i for i, t in enumerate(sampled) if frame_distance(t, round(sampled[a], 4), round(sampled[b], 4)) == 0.0]
    assert inside == list(range(a, b + 1))


def test_the_ends_of_a_video(ntsc: tuple[Path, list[float]]) -> None:
    path, times = ntsc
    assert times[0] == 0.0 and frame_distance(0.0, 0.0) == 0.0 and frame_distance(times[1], 0.0) > 0.0
    last = float(np.float32(times[-1]))
    assert _first_from(times, last) == len(times) - 1 and _nearest(times, last) == len(times) - 1
    assert _nearest(times, times[-1] + 5.0) == len(times) - 1  # past the end: the last frame is nearest
    assert frame_distance(times[-1] + 0.5, -math.inf, times[-1]) == pytest.approx(0.5 - TIME_TOLERANCE)

    def grey(img: object) -> int:
        return int(np.asarray(img)[24, 32].mean().round())

    assert abs(grey(frame_at(path, 0.0)) - 0) <= 2
    n = len(times) - 1
    assert abs(grey(frame_at(path, last)) - (n * 7) % 256) <= 2  # the last frame, from its float32 time
    assert abs(grey(frame_at(path, times[-1] + 5.0)) - (n * 7) % 256) <= 2  # past the end: the last frame
    k = len(times) // 2
    assert abs(grey(frame_at(path, float(np.float32(times[k])))) - (k * 7) % 256) <= 2


@pytest.mark.parametrize("rate", NTSC, ids=str)
def test_late_in_a_long_video_the_tolerance_grows_with_float32_steps(rate: Fraction) -> None:
    """Ten hours in, a float32 time is off by up to 2 ms (more than TIME_TOLERANCE); the frame is
    still found, and its neighbours (1/rate apart) are not."""
    k = round(36_000 * rate)
    t, gap = float(k / rate), float(1 / rate)
    stored = float(np.float32(t))
    assert abs(stored - t) > TIME_TOLERANCE / 2
    assert frame_distance(t, stored) == 0.0
    assert frame_distance(t - gap, stored) > 0.0 and frame_distance(t + gap, stored) > 0.0
    assert frame_distance(t, stored, math.inf) == 0.0 and frame_distance(t - gap, stored, math.inf) > 0.0


def test_spans_open_at_one_end() -> None:
    assert frame_distance(7.0, 6.0, math.inf) == 0.0
    assert frame_distance(5.0, 6.0, math.inf) == pytest.approx(1.0 - TIME_TOLERANCE)
    assert frame_distance(-3.0, -math.inf, 2.0) == 0.0
    assert frame_distance(2.0 + TIME_TOLERANCE / 2, 2.0) == 0.0 and frame_distance(2.0 + 2 * TIME_TOLERANCE, 2.0) > 0.0
