from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import av
import pytest
from PIL import Image

from detector.errors import ConfigError, MediaLimitError, UnreadableMediaError
from detector.media.frames import VIDEO_SUFFIXES, MediaReader, frame_image
from detector.media.hostile import remux, retime_flv
from detector.media.regions import count_windows, frame_regions, pad_square, reference_views, square_windows
from detector.media.synth import draw_scene, write_video


def _video(path: Path, seconds: float = 3.0, fps: int = 10, size: tuple[int, int] = (160, 96), codec: str = "libx264") -> Path:
    frames = (draw_scene(i % 3, *size) for i in range(round(seconds * fps)))
    write_video(path, frames, fps=fps, codec=codec)
    return path


def test_samples_at_fps_with_true_timestamps(tmp_path: Path) -> None:
    reader = MediaReader(_video(tmp_path / "a.mp4", 3.0, 10), fps=2.0)
    times = [round(f.time, 3) for f in reader]
    assert times == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert reader.kind == "video" and reader.duration == pytest.approx(3.0, abs=0.15)


def test_fps_not_dividing_frame_rate(tmp_path: Path) -> None:
    times = [f.time for f in MediaReader(_video(tmp_path / "a.mp4", 2.0, 12), fps=5.0)]
    assert times[0] == 0.0 and len(times) == 10
    assert all(0.15 <= b - a <= 0.25 for a, b in itertools.pairwise(times))  # within one source frame of 0.2 s


def test_max_frames_caps_and_warns(tmp_path: Path) -> None:
    reader = MediaReader(_video(tmp_path / "a.mp4", 3.0, 10), fps=10.0, max_frames=4)
    assert len(list(reader)) == 4 and "max_frames=4" in reader.warnings[0]


@pytest.mark.parametrize(("suffix", "codec"), [(".webm", "libvpx-vp9"), (".avi", "mpeg4"), (".mkv", "libx264")])
def test_other_containers(tmp_path: Path, suffix: str, codec: str) -> None:
    frames = list(MediaReader(_video(tmp_path / f"a{suffix}", 1.0, 10, codec=codec), fps=4.0))
    assert len(frames) == 4 and frames[0].image.size == (160, 96)


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "libx264"), (".webm", "libvpx-vp9")])
def test_unsampled_frames_are_not_decoded_and_sampled_frames_unchanged(tmp_path: Path, suffix: str, codec: str) -> None:
    """A panning clip at 24 fps sampled at 2 fps: the same frames, bit for bit, as decoding every
    frame; H.264's unsampled B-frames are dropped undecoded (VP9's decoder decodes all)."""
    scene = draw_scene("pan", 320 + 2 * 72, 180)
    path = tmp_path / f"pan{suffix}"
    write_video(path, (scene.crop((2 * i, 0, 2 * i + 320, 180)) for i in range(72)), fps=24, codec=codec)
    reader = MediaReader(path, fps=2.0)
    got = [(f.time, f.image.tobytes()) for f in reader]
    want, next_t = [], -1.0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):  # every frame decoded, the same sampling rule
            if frame.time >= next_t - 1e-6:
                want.append((frame.time, frame_image(frame).tobytes()))
                next_t = (math.floor(frame.time * 2.0 + 1e-6) + 1) / 2.0
    assert len(got) == 6 and got == want
    assert reader.decoded < 0.8 * 72 if codec == "libx264" else reader.decoded == 72


def test_animated_gif(tmp_path: Path) -> None:
    imgs = [draw_scene(i, 80, 60) for i in range(6)]
    imgs[0].save(tmp_path / "a.gif", save_all=True, append_images=imgs[1:], duration=250, loop=0)
    reader = MediaReader(tmp_path / "a.gif", fps=2.0)
    times = [f.time for f in reader]
    assert reader.kind == "video" and times == pytest.approx([0.0, 0.5, 1.0], abs=0.01)


def test_still_image_is_one_frame(tmp_path: Path) -> None:
    draw_scene(1, 2000, 1000).save(tmp_path / "s.jpg")
    reader = MediaReader(tmp_path / "s.jpg")
    [frame] = list(reader)
    assert reader.kind == "image" and frame.time == 0.0 and max(frame.image.size) == 960  # shrunk


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"this is a text file, not a video\n" * 10, "not a readable video"),
     (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100, "not a readable video|no decodable|cannot decode")],
)
def test_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(UnreadableMediaError, match=message):
        list(MediaReader(p))


def test_truncated_video_keeps_decoded_frames_or_fails_cleanly(tmp_path: Path) -> None:
    data = _video(tmp_path / "a.mkv", 3.0, 10).read_bytes()  # mkv: header first, so a cut file is streamable
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    reader = MediaReader(tmp_path / "cut.mkv", fps=2.0)
    frames = list(reader)
    assert 1 <= len(frames) < 6
    (tmp_path / "cut.mp4").write_bytes(_video(tmp_path / "b.mp4").read_bytes()[:2000])  # moov atom lost
    with pytest.raises(UnreadableMediaError):
        list(MediaReader(tmp_path / "cut.mp4"))


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UnreadableMediaError, match="no such file"):
        MediaReader(tmp_path / "nope.mp4")
    with pytest.raises(UnreadableMediaError, match="not a regular file"):
        MediaReader(tmp_path)


def test_pixel_limit(tmp_path: Path) -> None:
    with pytest.raises(MediaLimitError):
        list(MediaReader(_video(tmp_path / "a.mp4", 0.5, 10), max_pixels=100 * 90))
    Image.new("RGB", (300, 300)).save(tmp_path / "big.png")
    with pytest.raises(MediaLimitError):
        list(MediaReader(tmp_path / "big.png", max_pixels=300 * 299))


def test_bad_options(tmp_path: Path) -> None:
    p = _video(tmp_path / "a.mp4", 0.5)
    with pytest.raises(ConfigError):
        MediaReader(p, fps=0)
    with pytest.raises(ConfigError):
        MediaReader(p, max_frames=0)


@pytest.mark.parametrize(("w", "h"), [(640, 360), (360, 640), (500, 500), (1920, 1080), (37, 900)])
def test_windows_cover_the_frame(w: int, h: int) -> None:
    boxes = square_windows(w, h, scales=(1.0, 0.6))
    covered = Image.new("1", (w, h), 0)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        covered.paste(1, (x0, y0, x1, y1))
    assert covered.getbbox() == (0, 0, w, h) and min(covered.getdata()) == 1
    assert count_windows(w, h, (1.0, 0.6)) == len(boxes) + 1  # + the whole frame
    regions = frame_regions(w, h, (1.0, 0.6))
    assert regions[0] == (0, 0, w, h) and regions[1:] == boxes


def test_window_counts() -> None:
    assert len(square_windows(640, 360, scales=(1.0,))) == 3
    assert len(square_windows(500, 500, scales=(1.0,))) == 1


def test_pad_square_keeps_content_centred() -> None:
    out = pad_square(Image.new("RGB", (100, 50), "red"))
    assert out.size == (100, 100) and out.getpixel((50, 50)) == (255, 0, 0) and out.getpixel((50, 5)) == (128, 128, 128)


def test_default_regions_of_a_16x9_frame() -> None:
    # whole frame + 3 windows at scale 1.0 + 15 at 0.6 + 28 at 0.45
    assert count_windows(640, 360) == 47
    sides = sorted({b[2] - b[0] for b in frame_regions(640, 360)[1:]})
    assert sides == [162, 216, 360]


def test_reference_views_full_and_mirror() -> None:
    img = Image.new("RGB", (100, 50), "white")
    img.paste((255, 0, 0), (0, 0, 10, 50))  # a red stripe on the left
    views = reference_views(img)
    assert list(views) == ["full", "mirror"]
    assert views["full"].size == views["mirror"].size == (100, 100)
    assert views["full"].getpixel((2, 50)) == (255, 0, 0) and views["mirror"].getpixel((97, 50)) == (255, 0, 0)


# --- hostile timing, containers and headers (issue 16) ---

def _pan(path: Path, seconds: float = 4.0, fps: int = 12) -> Path:
    """A panning clip: every frame differs, so the sampled times are visible in the pixels."""
    scene = draw_scene("pan-ts", 320 + 4 * round(seconds * fps), 180)
    write_video(path, (scene.crop((4 * i, 0, 4 * i + 320, 180)) for i in range(round(seconds * fps))), fps=fps)
    return path


def test_raw_h264_stream_is_sampled_by_frame_count(tmp_path: Path) -> None:
    """The same bitstream as a raw .h264 (no timestamps at all) gives the same sampled frames
    at the same times as the .mp4, with a warning, instead of one frame at t = 0."""
    mp4 = _pan(tmp_path / "a.mp4")
    raw = remux(mp4, tmp_path / "a.h264")
    want = [(f.time, f.image.tobytes()) for f in MediaReader(mp4, fps=2.0)]
    reader = MediaReader(raw, fps=2.0)
    got = [(f.time, f.image.tobytes()) for f in reader]
    assert [t for t, _ in got] == pytest.approx([t for t, _ in want]) and len(got) == 8
    assert [b for _, b in got] == [b for _, b in want]
    assert any("timestamps are missing" in w and "12 fps" in w for w in reader.warnings)
    assert reader.duration == pytest.approx(4.0)


@pytest.mark.parametrize("edit", ["constant", "backwards"])
def test_constant_or_backwards_timestamps_are_counted(tmp_path: Path, edit: str) -> None:
    flv = remux(_pan(tmp_path / "a.mp4"), tmp_path / "a.flv")
    new = (lambda i, ms: 0) if edit == "constant" else (lambda i, ms: max(0, 4000 - ms))
    bad = tmp_path / f"{edit}.flv"
    bad.write_bytes(retime_flv(flv.read_bytes(), new, zero_cts=True))
    reader = MediaReader(bad, fps=2.0)
    times = [f.time for f in reader]
    assert len(times) >= 7 and times == sorted(times) and times[-1] >= 3.0
    assert any("timestamps are not increasing" in w for w in reader.warnings)


def test_good_timestamps_give_no_warning(tmp_path: Path) -> None:
    for p in (_pan(tmp_path / "a.mp4", 1.0), remux(_pan(tmp_path / "b.mp4", 1.0), tmp_path / "b.ts")):
        reader = MediaReader(p, fps=2.0)
        assert len(list(reader)) == 2 and reader.warnings == []


def test_folder_scans_pick_up_stream_and_broadcast_containers() -> None:
    for suffix in (".h264", ".264", ".h265", ".hevc", ".ts", ".m2ts", ".mkv", ".flv", ".3gp", ".ogv"):
        assert suffix in VIDEO_SUFFIXES


@pytest.mark.parametrize("name", ["bomb.png", "bomb.mp4", "bomb"])
def test_image_bomb_refused_from_its_header_whatever_the_suffix(tmp_path: Path, name: str) -> None:
    """A 20000x20000 PNG of a few hundred KB: a limit error, never handed to the video decoder."""
    Image.new("1", (20000, 20000)).save(tmp_path / name, format="PNG")
    assert (tmp_path / name).stat().st_size < 1_000_000
    with pytest.raises(MediaLimitError, match="refused") as info:
        list(MediaReader(tmp_path / name))
    assert info.value.limit == "max_pixels"
    Image.new("1", (8000, 8000)).save(tmp_path / "big.gif", format="GIF")  # over 40 MP, under Pillow's bomb size
    with pytest.raises(MediaLimitError) as info:
        list(MediaReader(tmp_path / "big.gif"))
    assert info.value.limit == "max_pixels"


def test_deadline_checked_while_decoding_unsampled_frames(tmp_path: Path) -> None:
    """At 0.01 fps only the first frame is sampled; the deadline still stops the decoding."""
    reader = MediaReader(_pan(tmp_path / "a.mp4"), fps=0.01)
    frames = iter(reader)
    next(frames)
    reader.deadline = time.monotonic() - 1.0
    with pytest.raises(MediaLimitError) as info:
        next(frames)
    assert info.value.limit == "request_timeout" and reader.decoded <= 2


def test_frame_limit_checked_on_unsampled_frames(tmp_path: Path) -> None:
    reader = MediaReader(_pan(tmp_path / "a.mp4"), fps=0.01, max_stream_frames=20)
    with pytest.raises(MediaLimitError) as info:
        list(reader)
    assert info.value.limit == "max_frames_total"


@pytest.mark.parametrize(("w", "h"), [(1, 960), (960, 1), (4000, 3), (2, 3)])
def test_extreme_aspect_ratios_cost_a_bounded_number_of_crops(w: int, h: int) -> None:
    """A 1x4000 strip used to cost one 1x1 window per pixel (thousands of crops: a hang)."""
    assert count_windows(w, h) <= 60
    assert count_windows(640, 360) == 47  # ordinary frames unchanged
