"""The `mamori` parser, put together from the command modules, and `main`: errors to exit statuses."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import traceback
from collections.abc import Sequence

from detector.cli.common import ExitCode, common_parent
from detector.cli.demo_cmd import add_parser as add_demo
from detector.cli.evaluate_cmd import add_parser as add_evaluate
from detector.cli.index_cmd import add_parser as add_index
from detector.cli.report_cmd import add_parser as add_report
from detector.cli.rescan_cmd import add_parser as add_rescan
from detector.cli.review_cmd import add_parser as add_review
from detector.cli.scan_cmd import add_parser as add_scan
from detector.cli.serve_cmd import add_parser as add_serve

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; imports nothing heavy (each command imports its modules when run)."""
    common = common_parent()
    p = argparse.ArgumentParser(prog="mamori", description="Find protected characters in generated images and video.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # each command module's `add_parser`, imported by name: `detector.cli` (the package) imports
    # this module, so this module imports the command modules themselves, not the package
    for add_parser in (add_index, add_scan, add_rescan, add_evaluate, add_serve, add_report, add_review, add_demo):
        add_parser(sub, common)
    return p


def _exit_now_if_threads_linger(code: int) -> None:
    """After Ctrl-C, scoring threads abandoned mid-input (`scan_threads`) would keep the interpreter
    from exiting until their inputs are done: flush and leave without waiting for them (every
    result line is already written and fsynced)."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (`ExitCode`; see the `detector.cli` docstring)."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return int(a.func(a))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        _exit_now_if_threads_linger(ExitCode.INTERRUPTED)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return ExitCode.OK
    except Exception as exc:  # noqa: BLE001 - a user mistake (DetectorError, IndexStoreError), an OSError
        # (--out in a missing folder, a full disk) or a bug: exit 2 with one line, never 1 ("flagged")
        if a.debug:
            traceback.print_exc()
        print(f"{type(exc).__name__}: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return ExitCode.ERROR
