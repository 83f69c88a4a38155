"""`mamori review apply`: reviewers' decisions into the index's allow-list and references (`detector.review.apply`)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from detector.cli.common import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    ExitCode,
    add_model_options,
    positive_float,
    positive_int,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from detector.cli.common import Subparsers
    from detector.review.apply import Applied

__all__ = ["add_parser", "print_allowlist", "review_summary"]


def cmd_review_apply(a: argparse.Namespace) -> int:
    from detector.api import Detector
    from detector.embed.backbones import load_backbone
    from detector.review.apply import apply_decisions, read_results
    from detector.review.confirmed import add_confirmed
    from detector.review.decisions import read_decisions
    from index.store import IndexStore, index_lock, write_index

    decisions = read_decisions(a.decisions)  # a bad file is an error before the index is touched
    records = read_results(a.results) if a.results else None
    with index_lock(a.index):  # opened under the lock: the store read is the one written back
        store = IndexStore.open(a.index)
        det = Detector(store, load_backbone(store.backbone["name"], precision=a.precision, device=a.device),
                       fps=a.fps, max_frames=a.max_frames)
        applied = apply_decisions(det, decisions, records=records, commit=lambda: write_index(a.index, store.data),
                                  confirmed=a.index if a.add_confirmed else None)
    applied = add_confirmed(a.index, applied, det.embedder)  # its own commit, under the lock again
    for r in applied:
        print(f"{r.status:8} {r.decision.where}: {r.decision.decision} {r.decision.character} in "
              f"{r.decision.path} ({r.decision.id}): {r.message}", file=sys.stderr)
    print(review_summary(applied), file=sys.stderr)
    return ExitCode.FLAGGED if any(r.status == "skipped" for r in applied) else ExitCode.OK


def review_summary(applied: Sequence[Applied]) -> str:
    """The last line of `review apply`: how many decisions of each kind applied, recorded, skipped."""
    allowed = sum(r.status == "applied" and r.decision.decision == "not_infringing" for r in applied)
    confirmed = [r for r in applied if r.status == "applied" and r.decision.decision == "infringing"]
    return (f"{allowed + len(confirmed)} decision(s) applied ({allowed} not infringing into the allow-list, "
            f"{len(confirmed)} infringing: {sum(r.regions for r in confirmed)} reference(s) added), "
            f"{sum(r.status == 'recorded' for r in applied)} infringing recorded only, "
            f"{sum(r.status == 'skipped' for r in applied)} skipped")


def print_allowlist(info: dict[str, Any]) -> None:
    """`index info`'s lines on review: references from infringing decisions, and the allow-list."""
    confirmed = ", ".join(f"{c} {n['from_review']}" for c, n in info["characters"].items() if n.get("from_review"))
    print(f"confirmed  {confirmed} reference(s) from reviewers' infringing decisions" if confirmed else
          "confirmed  none (`mamori review apply` adds reviewers' infringing decisions as references)")
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
        "apply", parents=[common], help="apply reviewers' decisions: allow-list and confirmed references",
        description="Each not_infringing decision's matched regions (from --results, or found by scoring the "
        "file again) are embedded and stored in the index's allow-list for that character: near-duplicates "
        "of them no longer count as evidence for it. Each infringing decision's matched regions are cut out "
        "(INDEX/confirmed/) and added as references of the character, unless --no-add-confirmed. A decision "
        "with the reviewer's mark (time, box) takes its region from the mark instead, at the sampled frame "
        "nearest that time. "
        "Exit 0 when every decision applied, 1 when some were skipped. docs/cli.md.")
    ap.add_argument("decisions", help="decisions file, JSON lines: path, sha256, character, decision, note, reviewer, "
                    "and optionally the reviewer's mark: time (seconds), box [x0, y0, x1, y1]")
    ap.add_argument("--index", required=True, help="index folder")
    ap.add_argument("--results", help="the scan's JSONL results (else each file is scored again)")
    ap.add_argument("--no-add-confirmed", dest="add_confirmed", action="store_false",
                    help="only record infringing decisions; do not add their regions as references")
    ap.add_argument("--fps", type=positive_float, default=DEFAULT_FPS,
                    help="frames sampled per second, as in the scan (default %(default)s)")
    ap.add_argument("--max-frames", type=positive_int, default=DEFAULT_MAX_FRAMES,
                    help="most frames sampled per video, as in the scan (default %(default)s)")
    add_model_options(ap)
    ap.set_defaults(func=cmd_review_apply)
