"""`mamori evaluate`: measure an index on labelled videos and suggest thresholds."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Container
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.cli.common import (
    ExitCode,
    add_media_options,
    detector_options,
    iter_inputs,
    open_out,
    progress_printer,
    unit_float,
    write_line,
)

if TYPE_CHECKING:
    from detector.cli.common import Subparsers
    from index.store import IndexStore

__all__ = ["add_parser"]


def _read_results(path: str) -> dict[str, dict[str, Any]]:
    from detector.runs.export import read_results

    return {Path(rec["path"]).stem: rec for rec in read_results(path)}


def _scan_labelled(
    a: argparse.Namespace, store: IndexStore, labels: Container[str]
) -> dict[str, dict[str, Any]] | None:
    """Scan the labelled videos under `a.paths` (their lines also to --out); None when there are none."""
    from detector.api import Detector
    from detector.embed.backbones import load_backbone

    det = Detector(
        store, load_backbone(store.backbone["name"], precision=a.precision, device=a.device), **detector_options(a)
    )
    inputs = [p for p in iter_inputs(a.paths) if p.stem in labels]
    if not inputs:
        print("evaluate: none of the labelled videos was found under the given paths", file=sys.stderr)
        return None
    from detector.runs.engines import scan_threads

    results = {}
    out = open_out(a.out) if a.out else None
    progress = progress_printer(a.quiet)
    try:
        for i, result in enumerate(scan_threads(det, ((p, None) for p in inputs)), 1):
            if out is not None:
                write_line(out, result)
            results[Path(result["path"]).stem] = result
            progress("videos", i, len(inputs))
    finally:
        if out is not None:
            out.close()
    return results


def cmd_evaluate(a: argparse.Namespace) -> int:
    from detector.runs.evaluate import evaluate, read_labels
    from index import IndexStore

    labels = read_labels(a.labels)
    store = IndexStore.open(a.index)
    if a.results:
        results = _read_results(a.results)
    elif not a.paths:
        print("evaluate: give the labelled videos (files or folders) or --results", file=sys.stderr)
        return ExitCode.ERROR
    else:
        scanned = _scan_labelled(a, store, labels)
        if scanned is None:
            return ExitCode.ERROR
        results = scanned
    report = evaluate(
        results,
        labels,
        flag_score=store.flag_score,
        review_score=store.review_score,
        target_fpr=a.target_fpr,
        sample_step=1.0 / a.fps,
    )
    if a.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print("\n".join(report.lines()))
        print(
            f"to use the suggestion: mamori index thresholds {a.index} --flag {report.suggested_flag:.4f} "
            f"--review {report.suggested_review:.4f}"
        )
    return ExitCode.OK


def add_parser(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    ev = sub.add_parser(
        "evaluate",
        parents=[common],
        help="measure an index on labelled videos, suggest thresholds",
        description="Scan labelled videos (or read a scan's results) and print AP, recall and "
        "false-positive rate at the index's thresholds, character and segment "
        "accuracy, and thresholds for a target false-positive rate. Labels: JSON "
        "object, video file name without suffix -> {positive, character, segment, track}.",
    )
    ev.add_argument("paths", nargs="*", metavar="VIDEOS", help="videos or folders (labelled files are picked by name)")
    add_media_options(ev)
    ev.add_argument("--labels", required=True, help="labels JSON file")
    ev.add_argument("--results", help="evaluate these scan results (JSON lines) instead of scanning")
    ev.add_argument("--out", help="also write the scan's JSON lines here")
    ev.add_argument(
        "--target-fpr",
        type=unit_float,
        default=0.05,
        help="false-positive rate to suggest a flag threshold for (default %(default)s)",
    )
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.set_defaults(func=cmd_evaluate)
