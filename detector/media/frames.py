"""Frame sampling: stills, animated GIFs and videos → timestamped RGB frames, streamed.

Steps for a timed medium (PyAV decodes mp4/webm/mov/mkv/avi, animated GIF and anything else
FFmpeg reads):
    1. open the container and check the stream (dimensions against the pixel limit)
    2. decode frames in order; a frame is *sampled* when its true timestamp reaches the next
       multiple of 1/fps (the first frame is always sampled); unsampled frames are never
       converted to RGB, and unsampled non-reference frames (most B-frames of H.264 and HEVC) are
       not even decoded. Decoding at reduced resolution is not used: H.264, HEVC, VP9 and AV1
       cannot, and FFmpeg's `lowres` for MPEG-1/2/4 Part 2 smears moving content (its motion
       compensation drifts until the next keyframe; `scripts/bench_decode.py`: mean error growing
       from 1 to 11 grey levels over 10 s); frames are shrunk while converting to RGB instead
    3. sampled frames are converted at reduced size (longer side <= MAX_SIDE) and yielded one by
       one, so memory does not grow with the video's length; sampling stops at max_frames
A still image is one frame at t=0. Every failure becomes an `UnreadableMediaError` or
`MediaLimitError` with the file named; a stream that breaks after some frames were sampled keeps
those frames and records a warning.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av
from PIL import Image

from detector.errors import ConfigError, MediaLimitError, UnreadableMediaError
from detector.media.times import frame_distance
from index.errors import ImageTooLargeError, ReferenceImageError
from index.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, open_image

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_MAX_FRAMES",
    "MEDIA_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Frame",
    "MediaReader",
    "frame_at",
    "frame_image",
]

#: Frames sampled per second, and at most this many per input. Not measured: chosen by hand (core
#: commit 81051fd, no measurement recorded); 600 frames at 2 fps is 5 minutes of video
DEFAULT_FPS = 2.0
DEFAULT_MAX_FRAMES = 600
#: Sampled frames are converted with their longer side at most this many pixels. Not measured:
#: chosen by hand (core commit 81051fd, no measurement recorded); at 16:9 the smallest window is
#: then 243 px, above the models' 224-px input
MAX_SIDE = 960
#: Containers and elementary streams a folder scan picks up (a file named explicitly is always
#: tried, whatever its suffix): what video generators, platforms, cameras and screen recorders write.
VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".qt", ".webm", ".mkv", ".mk3d", ".avi", ".gif", ".apng", ".mpg", ".mpeg",
    ".m2v", ".vob", ".ts", ".m2ts", ".mts", ".flv", ".f4v", ".3gp", ".3g2", ".ogv", ".wmv", ".asf", ".mxf",
    ".nut", ".ivf", ".y4m", ".h264", ".264", ".avc", ".h265", ".265", ".hevc", ".obu", ".mjpeg", ".mjpg",
})
#: Frame rate assumed when a stream with unusable timestamps declares none.
FALLBACK_RATE = 25.0
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its position among sampled frames, its time in seconds, and its pixels.

    `scale`: the source's pixels per pixel of `image` (sampled frames are shrunk to MAX_SIDE);
    boxes found in `image` are multiplied by it to report them in the video's own coordinates.
    """

    index: int
    time: float
    image: Image.Image
    scale: float = 1.0


@dataclass
class MediaReader:
    """Iterate the sampled frames of one file; `kind`, `duration` and `warnings` are filled in.

    >>> reader = MediaReader("clip.mp4", fps=2.0)        # doctest: +SKIP
    >>> [round(f.time, 2) for f in reader][:3]           # doctest: +SKIP
    [0.0, 0.5, 1.0]
    """

    path: str | Path
    fps: float = DEFAULT_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: refuse videos longer than this many seconds / with more frames than this (None: no limit)
    max_duration: float | None = None
    max_stream_frames: int | None = None
    #: `time.monotonic()` value past which decoding stops with MediaLimitError("request_timeout")
    deadline: float | None = None
    kind: str = ""
    duration: float | None = None
    #: frames the decoder returned so far (unsampled non-reference frames are dropped undecoded)
    decoded: int = 0
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ConfigError(f"fps must be a positive number, not {self.fps}")
        if self.max_frames < 1:
            raise ConfigError(f"max_frames must be at least 1, not {self.max_frames}")
        p = Path(self.path)
        try:
            size = p.stat().st_size
        except FileNotFoundError as exc:
            raise UnreadableMediaError(f"{p}: no such file") from exc
        except OSError as exc:
            raise UnreadableMediaError(f"{p}: cannot read ({exc.strerror})") from exc
        if not p.is_file():
            raise UnreadableMediaError(f"{p}: not a regular file")
        if size == 0:
            raise UnreadableMediaError(f"{p}: empty file (0 bytes)")
        self.kind = "image" if self._is_still(p) else "video"

    @staticmethod
    def _is_still(p: Path) -> bool:
        """A single-frame image Pillow recognises from its header, whatever the suffix; animated
        images go to PyAV. An image whose header claims a decompression bomb's size is refused here
        as a limit (it must not fall through to the video decoder)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(p) as im:
                    return getattr(im, "n_frames", 1) == 1
        except Image.DecompressionBombError as exc:
            raise MediaLimitError(f"{p}: image refused from its header: {exc}", limit="max_pixels") from exc
        except (OSError, SyntaxError, ValueError):
            return False

    def __iter__(self) -> Iterator[Frame]:
        if self.kind == "image":
            img = _open_full(self.path, self.max_pixels)
            self.duration = 0.0
            small = _shrink(img)
            yield Frame(0, 0.0, small, img.width / small.width)
            return
        yield from self._video_frames()

    def open_container(self) -> av.container.InputContainer:
        """The video's opened container (the caller closes it); UnreadableMediaError without a video stream."""
        try:
            container = av.open(str(self.path), mode="r", metadata_errors="ignore")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise UnreadableMediaError(f"{self.path}: not a readable video or image ({_reason(exc)})") from exc
        if not container.streams.video:
            container.close()
            raise UnreadableMediaError(f"{self.path}: no video stream in this file")
        return container

    def _check_limits(self, frames: int | None, seconds: float | None) -> None:
        """Header values first (before decoding), then the running counts and the deadline on
        every packet and every decoded frame, sampled or not."""
        if self.max_stream_frames is not None and frames and frames > self.max_stream_frames:
            raise MediaLimitError(f"{self.path}: more than max_frames_total={self.max_stream_frames} frames in the "
                                  "video", limit="max_frames_total")
        if self.max_duration is not None and seconds and seconds > self.max_duration:
            raise MediaLimitError(f"{self.path}: longer than max_duration={self.max_duration:g}s ({seconds:.1f}s)",
                                  limit="max_duration")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise MediaLimitError(f"{self.path}: decoding did not finish within request_timeout",
                                  limit="request_timeout")

    def _stream_info(self, stream: av.video.stream.VideoStream, container: av.container.InputContainer) -> float:
        """Check the header against the limits, fill in `duration`; return the stream's start time."""
        w, h = stream.codec_context.width, stream.codec_context.height
        if w * h > self.max_pixels:
            raise MediaLimitError(f"{self.path}: {w}x{h} video frames exceed the limit of {self.max_pixels:,} pixels")
        tb = stream.time_base
        if stream.duration is not None and tb:
            self.duration = float(stream.duration * tb)
        elif container.duration is not None:
            self.duration = container.duration / av.time_base
        self._check_limits(stream.frames, self.duration)
        return float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0

    def _video_frames(self) -> Iterator[Frame]:
        container = self.open_container()
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            clock = _Clock(self._stream_info(stream, container), _declared_rate(stream))
            step = 1.0 / self.fps
            n = 0
            try:
                for frame in self._decode(container, stream, clock):
                    t = clock.time(frame)
                    if clock.counted and not clock.warned:
                        clock.warned = True
                        self.warnings.append(
                            f"the stream's timestamps are {clock.why} from t={t:.2f}s: times from there on are "
                            f"counted in frames at {clock.rate:g} fps (the stream's declared or average rate)")
                    self.decoded += 1
                    self._check_limits(self.decoded, t)
                    if clock.due is not None and t < clock.due - 1e-6:
                        continue  # not sampled: never converted
                    if n >= self.max_frames:
                        self.warnings.append(
                            f"stopped at max_frames={self.max_frames} (t={t:.2f}s); later frames were not checked"
                        )
                        break
                    img = frame_image(frame)
                    yield Frame(n, t, img, frame.width / img.width)
                    n += 1
                    clock.due = (math.floor(t / step + 1e-6) + 1) * step
            except (av.FFmpegError, ValueError, MemoryError) as exc:
                if n == 0:
                    raise UnreadableMediaError(f"{self.path}: cannot decode video ({_reason(exc)})") from exc
                self.warnings.append(f"decoding stopped at t={clock.last_time:.2f}s: {_reason(exc)}; "
                                     "frames after it were not checked")
            if n == 0:
                raise UnreadableMediaError(f"{self.path}: the video has no decodable frames")
            if clock.counted:  # the counted length; a stop at max_frames does not shorten the header's
                self.duration = max(self.duration or 0.0, clock.last_time + 1.0 / clock.rate)
            elif self.duration is None or self.duration <= 0:
                self.duration = clock.last_time
        finally:
            container.close()

    def _decode(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                clock: _Clock) -> Iterator[av.VideoFrame]:
        """Demux and decode `stream`, checking the limits on every packet. A frame that no other
        frame is predicted from, due before the next sampled time, would never be sampled: the
        decoder may drop it undecoded (measured for H.264 and HEVC; VP9 and AV1 decode every
        frame). Sampled frames are unchanged. Never while the clock counts frames: then every
        frame must be seen to be counted."""
        codec, packets, tb = stream.codec_context, 0, stream.time_base
        for packet in container.demux(stream):
            at = None if packet.pts is None or not tb else float(packet.pts * tb) - clock.start
            if packet.size:
                packets += 1
                self._check_limits(packets, clock.packet_time(at, packets))
            # a packet stamped before the last frame shown is a rewind (bad timestamps), not a
            # B-frame: decode it, so the clock can count it
            due_early = (not clock.counted and clock.due is not None and at is not None
                         and clock.last_time - 1e-6 <= at < clock.due - 1e-6)
            skip: Literal["NONREF", "DEFAULT"] = "NONREF" if due_early else "DEFAULT"
            if codec.skip_frame != skip:
                codec.skip_frame = skip
            yield from packet.decode()


@dataclass
class _Clock:
    """A decoded frame's time in seconds: from the stream's timestamps while they are present and
    increasing; once one is missing, equal to the last or earlier (a raw `.h264` stream has none;
    an edited or hostile container may repeat or rewind them), from the frame count at `rate`
    after the last good timestamp. Frames leave the decoder in display order, so a good stream's
    timestamps always increase; trusting bad ones would sample a single frame, and the rest of
    the video would go unseen."""

    start: float
    rate: float
    #: the next sampled time (None: the next frame is sampled)
    due: float | None = None
    counted: bool = False
    warned: bool = False
    why: str = ""
    last_time: float = 0.0
    _raw: float | None = None  # last good timestamp, before clamping at 0
    _anchor: tuple[float, int] = (0.0, 0)  # (time, frame number) that counted times start from
    _frames: int = 0

    def time(self, frame: av.VideoFrame) -> float:
        k = self._frames
        self._frames += 1
        if not self.counted:
            t = None if frame.time is None else float(frame.time) - self.start
            if t is not None and math.isfinite(t) and (self._raw is None or t > self._raw + 1e-9):
                self._raw = t
                self._anchor = (max(0.0, t), k)
                self.last_time = max(0.0, t)
                return self.last_time
            self.counted = True
            self.why = "missing" if t is None else "not increasing"
        t0, k0 = self._anchor
        self.last_time = t0 + (k - k0) / self.rate
        return self.last_time

    def packet_time(self, at: float | None, packets: int) -> float | None:
        """A packet's time for the duration limit: its timestamp, or its count once counting."""
        return packets / self.rate if self.counted else at


def _declared_rate(stream: av.video.stream.VideoStream) -> float:
    """Frames per second for counting: the rate the bitstream declares (H.264/HEVC timing info),
    else the container's average or base rate, else FALLBACK_RATE."""
    for rate in (stream.codec_context.framerate, stream.average_rate, stream.base_rate):
        try:
            r = float(rate) if rate else 0.0
        except (TypeError, ValueError, ZeroDivisionError):
            r = 0.0
        if 1.0 <= r <= 1000.0:
            return r
    return FALLBACK_RATE


def frame_at(path: str | Path, time: float, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A video's first frame from `time` on (`frame_distance`), or the image itself, at full size,
    in the coordinates of a result's boxes (the review report's thumbnails). Seeks to the keyframe
    before `time` and decodes forward; past the end, the last frame.

    Raises:
        UnreadableMediaError, MediaLimitError: as `MediaReader`.
    """
    reader = MediaReader(path, max_pixels=max_pixels)
    if reader.kind == "image":
        return _open_full(path, max_pixels)
    container = reader.open_container()
    try:
        stream = container.streams.video[0]
        start, tb = reader._stream_info(stream, container), stream.time_base  # (the pixel limit)
        if time > 0 and tb:
            try:
                container.seek(int((time + start) / tb), stream=stream, backward=True, any_frame=False)
            except av.FFmpegError:
                container.seek(0)
        last = None
        try:
            for frame in container.decode(stream):
                last = frame
                if frame.time is not None and frame_distance(float(frame.time) - start, time, math.inf) == 0.0:
                    break
        except (av.FFmpegError, ValueError, MemoryError) as exc:
            if last is None:
                raise UnreadableMediaError(f"{path}: cannot decode video ({_reason(exc)})") from exc
        if last is None:
            raise UnreadableMediaError(f"{path}: no decodable frame at {time:.2f}s")
        return _to_image(last)
    finally:
        container.close()


def _open_full(path: str | Path, max_pixels: int) -> Image.Image:
    try:
        return open_image(path, max_pixels=max_pixels)
    except ImageTooLargeError as exc:
        raise MediaLimitError(str(exc)) from exc
    except ReferenceImageError as exc:
        raise UnreadableMediaError(str(exc)) from exc


def frame_image(frame: av.VideoFrame) -> Image.Image:
    """A decoded frame as the scan samples it: RGB, its longer side shrunk to MAX_SIDE."""
    w, h = frame.width, frame.height
    scale = min(1.0, MAX_SIDE / max(w, h))
    if scale < 1.0:
        return _to_image(frame, width=max(1, round(w * scale)), height=max(1, round(h * scale)))
    return _to_image(frame)


def _to_image(frame: av.VideoFrame, **size: int) -> Image.Image:
    """PyAV's RGB conversion (untyped in PyAV's stubs)."""
    img: Image.Image = frame.to_image(**size)  # type: ignore[no-untyped-call]
    return img


def _shrink(img: Image.Image) -> Image.Image:
    scale = MAX_SIDE / max(img.size)
    if scale >= 1.0:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()
