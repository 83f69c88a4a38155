"""The `mamori` parser, put together from the command modules, and `main`: errors to exit statuses."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import traceback
from collections.abc import Sequence

from detector.cli import demo_cmd, evaluate_cmd, index_cmd, report_cmd, rescan_cmd, review_cmd, scan_cmd, serve_cmd
from detector.cli.common import ExitCode, common_parent

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; imports nothing heavy (each command imports its modules when run)."""
    common = common_parent()
    p = argparse.ArgumentParser(prog="mamori", description="Find protected characters in generated images and video.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (index_cmd, scan_cmd, rescan_cmd, evaluate_cmd, serve_cmd, report_cmd, review_cmd, demo_cmd):
        command.add_parser(sub, common)
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
