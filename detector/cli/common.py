"""What every `mamori` command shares: exit codes, option types and groups, inputs, output lines.

Light on purpose: building the parser (`mamori --help`) must import no torch, FAISS, OpenCV or
PyAV, so the defaults shown in help texts are copied here from their homes, and
tests/detector/test_cli_structure.py fails when a copy drifts. Heavy modules are imported inside
the command handlers.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]  # what add_subparsers returns

__all__ = [
    "DEFAULT_BACKBONE",
    "DEFAULT_FPS",
    "DEFAULT_MAX_FRAMES",
    "PRECISIONS",
    "ExitCode",
    "Progress",
    "Subparsers",
    "add_flood_options",
    "add_media_options",
    "add_model_options",
    "common_parent",
    "detector_options",
    "iter_inputs",
    "open_out",
    "positive_float",
    "positive_int",
    "progress_printer",
    "unit_float",
    "write_line",
]

DEFAULT_BACKBONE = "clip-vit-b32"  # detector.embed.backbones.DEFAULT_BACKBONE
PRECISIONS = ("auto", "fp32", "bf16")  # detector.embed.inference.PRECISIONS
DEFAULT_FPS = 2.0  # detector.media.frames.DEFAULT_FPS
DEFAULT_MAX_FRAMES = 600  # detector.media.frames.DEFAULT_MAX_FRAMES

Progress = Callable[[str, int, int], None]


class ExitCode(enum.IntEnum):
    OK = 0
    FLAGGED = 1
    ERROR = 2
    INTERRUPTED = 130


# argparse names a type in its error for a value the type rejects with ValueError ("argument --fps:
# invalid positive_float value: 'x'"): these names are part of the command line's output.


def positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {s}")
    return v


def positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {s}")
    return v


def unit_float(s: str) -> float:
    v = float(s)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {s}")
    return v


def add_flood_options(sp: argparse.ArgumentParser, of: str) -> None:
    """--flood-share and --flood-min (`detector.runs.flood`); `of` names what is counted."""
    from detector.runs.flood import FLOOD_MIN, FLOOD_SHARE

    sp.add_argument("--flood-share", type=unit_float, default=FLOOD_SHARE, metavar="SHARE",
                    help=f"flood alert: a reference that matches more than this share of {of} (default %(default)s)")
    sp.add_argument("--flood-min", type=positive_int, default=FLOOD_MIN, metavar="N",
                    help=f"...once at least N {of} are counted (default %(default)s)")


def common_parent() -> argparse.ArgumentParser:
    """The parent parser of every command: --debug and -q/--quiet."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress output on stderr")
    return common


def add_model_options(sp: argparse.ArgumentParser) -> None:
    """--precision and --device."""
    sp.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="model precision: auto (bf16 where the hardware runs it natively and faster), "
        "fp32 or bf16 (default %(default)s)",
    )
    sp.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")


def add_media_options(sp: argparse.ArgumentParser) -> None:
    """--index, sampling and matching options of the commands that score media, and the model options."""
    sp.add_argument("--index", required=True, help="index folder")
    sp.add_argument(
        "--fps", type=positive_float, default=DEFAULT_FPS, help="frames sampled per second (default %(default)s)"
    )
    sp.add_argument(
        "--max-frames",
        type=positive_int,
        default=DEFAULT_MAX_FRAMES,
        help="most frames sampled per video (default %(default)s); later frames are not checked",
    )
    sp.add_argument("--backbone", help="refuse to run unless the index uses this backbone")
    sp.add_argument(
        "--no-skip",
        action="store_true",
        help="embed every region of every sampled frame (default: skip blank frames, reuse repeated "
        "frames and unchanged regions)",
    )
    sp.add_argument(
        "--no-verify",
        action="store_true",
        help="no geometric verification (SIFT + RANSAC) of candidates: faster, less precise",
    )
    sp.add_argument(
        "--no-shortlist",
        action="store_true",
        help="embed every region of each new frame (default: the whole frame and the large windows, "
        "and only the small windows a cheap pass shortlists)",
    )
    add_model_options(sp)


def detector_options(a: argparse.Namespace) -> dict[str, Any]:
    """`Detector.open` keyword arguments from the media options."""
    return {"fps": a.fps, "max_frames": a.max_frames, "skip_repeats": not a.no_skip, "verify": not a.no_verify,
            "shortlist": not a.no_shortlist}


def progress_printer(quiet: bool) -> Progress:
    """A progress callback printing `stage: done/total` on stderr, at most once a second (and at the end)."""
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if quiet or (done < total and now - last[0] < 1.0):
            return
        last[0] = now
        print(f"  {stage}: {done}/{total}", file=sys.stderr, flush=True)

    return progress


def iter_inputs(paths: Sequence[str]) -> Iterator[Path]:
    """Files as given (whatever their suffix), and media files found recursively in folders, sorted."""
    from detector.media.frames import MEDIA_SUFFIXES

    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES and not f.name.startswith(".")
            )
        else:
            yield p


def open_out(path: str | None) -> TextIO:
    return open(path, "w", encoding="utf-8") if path else sys.stdout


@contextlib.contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """Ctrl-C waits until the block is done (in the main thread): a line is written whole or not
    at all, not cut in half by a KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if caught and callable(old):
            old(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt


def write_line(out: TextIO, record: dict[str, Any]) -> None:
    """One JSON line (valid UTF-8: `Result.to_dict` has made its strings valid text), flushed, and
    fsynced when `out` is a file: a crash or Ctrl-C loses at most this line, never half of it."""
    line = json.dumps(record) + "\n"
    with _interrupt_deferred():
        out.write(line)
        out.flush()
        if out is not sys.stdout:
            os.fsync(out.fileno())
