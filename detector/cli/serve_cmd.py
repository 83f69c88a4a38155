"""`mamori serve`: the HTTP scoring service (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from detector.cli.common import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    ExitCode,
    add_flood_options,
    add_model_options,
    positive_float,
    positive_int,
)
from detector.errors import ConfigError

if TYPE_CHECKING:
    from detector.cli.common import Subparsers

__all__ = ["LIMIT_DEFAULTS", "add_parser"]

# `detector.media.limits.Limits()` (which imports PyAV), copied for the help texts; a test compares them
LIMIT_DEFAULTS = {
    "max_upload_mb": 512.0,
    "max_duration": 900.0,
    "max_frames_total": 100_000,
    "max_frames": DEFAULT_MAX_FRAMES,
    "max_pixels": 40_000_000,
    "request_timeout": 300.0,
}


def _log_requests(quiet: bool) -> None:
    """Service logs at INFO (WARNING with -q); request lines as bare JSON objects on stderr."""
    import logging

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(name)s %(message)s")
    requests_log = logging.getLogger("mamori.requests")  # one JSON object per line, nothing around it
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    requests_log.addHandler(handler)
    requests_log.propagate = False


def cmd_serve(a: argparse.Namespace) -> int:
    import uvicorn

    from detector.media.limits import Limits
    from detector.service import ServiceConfig, create_app, read_tokens

    tokens_file = a.tokens or os.environ.get("MAMORI_TOKENS_FILE")
    tokens = read_tokens(tokens_file) if tokens_file else None
    if tokens is None and a.host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(
            f"refusing to serve on {a.host} without authentication: give --tokens FILE "
            "(or MAMORI_TOKENS_FILE), or bind to 127.0.0.1"
        )
    limits = Limits(
        max_upload_mb=a.max_upload_mb,
        max_duration=a.max_duration,
        max_frames_total=a.max_frames_total,
        max_frames=a.max_frames,
        max_pixels=a.max_pixels,
        request_timeout=a.request_timeout,
    )
    cfg = ServiceConfig(
        Path(a.index),
        tokens,
        limits,
        workers=a.workers,
        queue=a.queue,
        batching=a.batching,
        precision=a.precision,
        device=a.device,
        fps=a.fps,
        flood_window=a.flood_window,
        flood_share=a.flood_share,
        flood_min=a.flood_min,
        flood_action=a.flood_action,
        flood_quarantine_max=a.flood_quarantine_max,
        flood_quarantine_ttl=a.flood_quarantine_ttl,
        media_root=_media_root(a.media_root),
    )
    _log_requests(a.quiet)
    if tokens is None:
        print(
            f"mamori serve: no tokens configured: no authentication, listening on loopback {a.host}:{a.port} only",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"mamori serve: {len(tokens)} token(s); listening on {a.host}:{a.port}", file=sys.stderr, flush=True)
    uvicorn.run(create_app(cfg), host=a.host, port=a.port, log_level="warning", access_log=False, timeout_keep_alive=5)
    return ExitCode.OK


def _media_root(path: str | None) -> Path | None:
    """--media-root, resolved (symbolic links followed), or None.

    Raises:
        ConfigError: not a folder.
    """
    if path is None:
        return None
    root = Path(path).resolve()
    if not root.is_dir():
        raise ConfigError(f"--media-root {path}: not a folder")
    return root


def _add_limit_options(sv: argparse.ArgumentParser) -> None:
    lim = LIMIT_DEFAULTS
    sv.add_argument("--max-upload-mb", type=positive_float, default=lim["max_upload_mb"], help="(default %(default)s)")
    sv.add_argument(
        "--max-duration",
        type=positive_float,
        default=lim["max_duration"],
        help="longest video in seconds (default %(default)s)",
    )
    sv.add_argument(
        "--max-frames-total",
        type=positive_int,
        default=lim["max_frames_total"],
        help="most frames in a video stream (default %(default)s)",
    )
    sv.add_argument(
        "--max-frames",
        type=positive_int,
        default=lim["max_frames"],
        help="most sampled frames per request (default %(default)s)",
    )
    sv.add_argument(
        "--max-pixels",
        type=positive_int,
        default=lim["max_pixels"],
        help="largest image or video frame in pixels (default %(default)s)",
    )
    sv.add_argument(
        "--request-timeout",
        type=positive_float,
        default=lim["request_timeout"],
        help="seconds for upload + scoring (default %(default)s)",
    )


def _add_flood_options(sv: argparse.ArgumentParser) -> None:
    """The flood watch, and the bounds of its opt-in quarantine (`detector.service.flood`); --media-root."""
    sv.add_argument(
        "--flood-window",
        type=positive_int,
        default=1000,
        metavar="N",
        help="flood watch: count matches per reference over the last N scored requests (default %(default)s)",
    )
    add_flood_options(sv, "the window's requests")
    sv.add_argument(
        "--flood-action",
        choices=("alert", "quarantine"),
        default="alert",
        help="when a reference floods: alert (log it; GET /v1/index for admin tokens; metrics) or, opt-in, also "
        "quarantine it in the index, at most --flood-quarantine-max times per reference, each for "
        "--flood-quarantine-ttl seconds (default %(default)s)",
    )
    sv.add_argument(
        "--flood-quarantine-max",
        type=positive_int,
        default=1,
        metavar="N",
        help="with --flood-action quarantine: times score traffic may quarantine one reference in a run "
        "(default %(default)s)",
    )
    sv.add_argument(
        "--flood-quarantine-ttl",
        type=positive_float,
        default=3600.0,
        metavar="SECONDS",
        help="with --flood-action quarantine: an automatic quarantine ends after this (default %(default)s)",
    )
    sv.add_argument(
        "--media-root",
        metavar="DIR",
        help="POST /v1/admin/decisions may read the files its decisions name under DIR only "
        "(without it, decisions over HTTP are refused)",
    )


def add_parser(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    sv = sub.add_parser(
        "serve",
        parents=[common],
        help="HTTP scoring service (FastAPI + uvicorn)",
        description="Serve POST /v1/score and the admin endpoints (see README, HTTP API). "
        "Without --tokens (or MAMORI_TOKENS_FILE) there is no authentication and "
        "only a loopback address is allowed.",
    )
    sv.add_argument("--index", required=True, help="index folder")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    sv.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    sv.add_argument("--tokens", help="file of `TOKEN SCOPE[,SCOPE]` lines; scopes: score, admin")
    _add_limit_options(sv)
    sv.add_argument(
        "--fps", type=positive_float, default=DEFAULT_FPS, help="default sampling rate (default %(default)s)"
    )
    sv.add_argument("--workers", type=positive_int, default=2, help="scoring threads (default %(default)s)")
    sv.add_argument(
        "--queue", type=int, default=8, help="requests waiting beyond the workers before 503 (default %(default)s)"
    )
    sv.add_argument(
        "--batching",
        choices=("auto", "on", "off"),
        default="auto",
        help="merge concurrent requests' forward passes in one model thread: auto = on (measured "
        "faster under concurrency on CPU; default %(default)s)",
    )
    _add_flood_options(sv)
    add_model_options(sv)
    sv.set_defaults(func=cmd_serve)
