"""The `mamori` command line.

    mamori index build (REFS_DIR | --manifest CSV) --out INDEX [--backbone NAME] [--background DIR]
    mamori index add INDEX (REFS_DIR | --manifest CSV)
    mamori index remove INDEX (--character NAME | --reference ID)
    mamori index info INDEX
    mamori scan PATH... --index INDEX [--out RESULTS.jsonl] [--report REPORT.html] [--fps F] [--max-frames N]
                [--from-list FILE] [--resume [--retry-errors]] [--csv FILE] [--workers N] [--engine local|ray]
                [--ray-address A]
    mamori report RESULTS.jsonl [-o REPORT.html] [--csv FILE] [--index INDEX]
    mamori score IMAGE_OR_VIDEO --index INDEX
    mamori index thresholds INDEX [--flag SCORE] [--review SCORE]
    mamori evaluate VIDEOS... --index INDEX --labels LABELS.json [--target-fpr F] [--results R.jsonl]
    mamori demo [--out DIR]

Exit status (`ExitCode`): 0 nothing flagged, 1 something flagged (scan/score) and nothing else, 2
usage or fatal error (any exception outside one input's scoring, bugs included), 130 interrupted.
Fatal errors print one line `ErrorType: message` on stderr; `--debug` adds the traceback. A
failure while scoring one input is that input's `error` result line, and the batch goes on.

Layout: one module per command group, each owning its parser (`add_parser(subparsers, common)`)
and handlers: `index_cmd`, `scan_cmd` (scan, score), `evaluate_cmd`, `serve_cmd`, `report_cmd`,
`demo_cmd`; shared options, types and output helpers in `common`; `app` assembles the parser and
maps errors to exit statuses. Building the parser imports no torch, FAISS, OpenCV or PyAV: handlers
import what they run.
"""

from __future__ import annotations

from detector.cli.app import build_parser, main
from detector.cli.common import ExitCode, iter_inputs

__all__ = ["ExitCode", "build_parser", "iter_inputs", "main"]
