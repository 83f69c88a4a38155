"""`mamori review apply`: reviewers' decisions into the index's allow-list (`detector.review`)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from detector.cli.common import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    ExitCode,
    _positive_float,
    _positive_int,
    add_model_options,
)

if TYPE_CHECKING:
    from detector.cli.common import Subparsers

__all__ = ["add_parser", "print_allowlist"]


def cmd_review_apply(a: argparse.Namespace) -> int:
    from detector.api import Detector
    from detector.backbones import load_backbone
    from detector.decisions import read_decisions
    from detector.review import apply_decisions, read_results
    from index.store import IndexStore, index_lock, write_index

    decisions = read_decisions(a.decisions)  # a bad file is an error before the index is touched
    records = read_results(a.results) if a.results else None
    with index_lock(a.index):  # opened under the lock: the store read is the one written back
        store = IndexStore.open(a.index)
        det = Detector(store, load_backbone(store.backbone["name"], precision=a.precision, device=a.device),
                       fps=a.fps, max_frames=a.max_frames)
        applied = apply_decisions(det, decisions, records=records, commit=lambda: write_index(a.index, store.data))
    for r in applied:
        print(f"{r.status:8} {r.decision.where}: {r.decision.decision} {r.decision.character} in "
              f"{r.decision.path} ({r.decision.id}): {r.message}", file=sys.stderr)
    n = sum(r.status == "applied" for r in applied)
    skipped = sum(r.status == "skipped" for r in applied)
    print(f"{n} decision(s) applied, {sum(r.status == 'recorded' for r in applied)} infringing recorded "
          f"(not used yet), {skipped} skipped", file=sys.stderr)
    return ExitCode.FLAGGED if skipped else ExitCode.OK


def print_allowlist(info: dict[str, Any]) -> None:
    """`index info`'s allow-list lines."""
    allow = info.get("allowlist") or {"counts": {}, "entries": []}
    if not allow["entries"]:
        print("allowlist  none (`mamori review apply` adds reviewers' not-infringing decisions)")
        return
    counts = ", ".join(f"{c} {n['regions']} region(s) / {n['decisions']} decision(s)" for c, n in allow["counts"].items())
    print(f"allowlist  {counts}")
    for e in allow["entries"]:
        print(f"  {e['id']} {e['character']}: {e['path']} by {e['reviewer'] or '?'} at {e['added_at']} "
              f"({e['regions']} region(s)){': ' + e['note'] if e['note'] else ''}")


def add_parser(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    """`mamori review` and its sub-commands."""
    rv = sub.add_parser("review", help="apply reviewers' decisions to an index").add_subparsers(
        dest="review_command", required=True, metavar="SUBCOMMAND")
    ap = rv.add_parser(
        "apply", parents=[common], help="store not-infringing decisions as the index's allow-list",
        description="Each not_infringing decision's matched regions (from --results, or found by scoring the "
        "file again) are embedded and stored in the index's allow-list for that character: near-duplicates "
        "of them no longer count as evidence for it. infringing decisions are accepted but not used yet. "
        "Exit 0 when every decision applied, 1 when some were skipped. docs/cli.md.")
    ap.add_argument("decisions", help="decisions file, JSON lines: path, sha256, character, decision, note, reviewer")
    ap.add_argument("--index", required=True, help="index folder")
    ap.add_argument("--results", help="the scan's JSONL results (else each file is scored again)")
    ap.add_argument("--fps", type=_positive_float, default=DEFAULT_FPS,
                    help="frames sampled per second, as in the scan (default %(default)s)")
    ap.add_argument("--max-frames", type=_positive_int, default=DEFAULT_MAX_FRAMES,
                    help="most frames sampled per video, as in the scan (default %(default)s)")
    add_model_options(ap)
    ap.set_defaults(func=cmd_review_apply)
