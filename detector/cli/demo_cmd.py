"""`mamori demo`: sample art and videos, an index, a scan, all offline (`detector.runs.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detector.cli.common import Subparsers

__all__ = ["add_parser"]


def cmd_demo(a: argparse.Namespace) -> int:
    from detector.runs.demo import run_demo

    return run_demo(Path(a.out), backbone=a.backbone)


def add_parser(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    d = sub.add_parser("demo", parents=[common], help="make sample art and videos, build an index, scan (offline)")
    d.add_argument("--out", default="mamori-demo", help="folder for the demo's data and results (default %(default)s)")
    d.add_argument(
        "--backbone",
        help="backbone to use (default: clip-vit-b32 if its weights are available, else effnet-lite0-imagenet)",
    )
    d.set_defaults(func=cmd_demo)
