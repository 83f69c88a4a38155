"""`mamori report`: a scan's JSON lines as an HTML review page or a CSV file."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from detector.cli.common import ExitCode, progress_printer
from detector.errors import ConfigError

if TYPE_CHECKING:
    from detector.cli.common import Subparsers

__all__ = ["add_parser"]


def cmd_report(a: argparse.Namespace) -> int:
    from detector.runs.export import read_results, write_csv

    if not (a.out or a.csv):
        raise ConfigError("report: give -o REPORT.html, --csv FILE, or both")
    rows = read_results(a.results)
    if a.csv:
        print(f"wrote {write_csv(rows, a.csv)} row(s) to {a.csv}", file=sys.stderr)
    if a.out:
        from detector.runs.report import write_report

        n = write_report(rows, a.out, index=a.index, thumbnails=not a.no_thumbnails, progress=progress_printer(a.quiet))
        print(f"wrote a review report of {n} video(s) to {a.out}", file=sys.stderr)
    return ExitCode.OK


def add_parser(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    rp = sub.add_parser(
        "report",
        parents=[common],
        help="turn a scan's JSON lines into an HTML review page or CSV",
        description="-o: a self-contained HTML review page of the flag and review results "
        "(thumbnails in the sibling folder REPORT_files/). --csv: one row per result "
        "(top character, its strongest segment, other characters, error, sha256).",
    )
    rp.add_argument("results", metavar="RESULTS.jsonl")
    rp.add_argument("-o", "--out", metavar="REPORT.html", help="HTML review report to write")
    rp.add_argument("--csv", metavar="FILE", help="CSV file to write")
    rp.add_argument("--index", help="index the results came from (adds its thresholds to the score charts)")
    rp.add_argument("--no-thumbnails", action="store_true", help="no frame or reference images (faster)")
    rp.set_defaults(func=cmd_report)
