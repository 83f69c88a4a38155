"""`mamori index allow list | revoke`: the allow-list reviewers' not_infringing decisions wrote
(`index.allowlist`), listed with each entry's history, and entries revoked by hand."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from detector.cli.common import ExitCode

if TYPE_CHECKING:
    from detector.cli.common import Subparsers

__all__ = ["add_allow", "allow_line"]

#: `revoked_by` of an entry revoked with `mamori index allow revoke`
REVOKED_BY_CLI = "mamori index allow revoke"


def allow_line(e: dict[str, Any]) -> str:
    """One entry of `index allow list` (`index.allowlist.allow_entries`), with its history."""
    state = "active " if e["active"] else "revoked"
    line = (f"{state} {e['id']} {e['character']}: {e['path']} by {e['reviewer'] or '?'} at {e['added_at']} "
            f"({e['regions']} region(s)){': ' + e['note'] if e['note'] else ''}")
    if not e["active"]:
        line += f"\n  revoked at {e['revoked_at']} by {e['revoked_by']}"
    for r in e["reverses"]:
        line += (f"\n  reverses infringing decision {r['decision'] or '?'} (references added at {r['added_at']}: "
                 f"{', '.join(r['references'])}, removed)")
    return line


def cmd_allow_list(a: argparse.Namespace) -> int:
    from index import IndexStore
    from index.allowlist import allow_entries

    entries = allow_entries(IndexStore.open(a.index).data.allow)
    if a.json:
        print(json.dumps({"entries": entries}, indent=1))
    elif not entries:
        print("no allow-list entries (`mamori review apply` adds reviewers' not-infringing decisions)")
    for e in [] if a.json else entries:
        print(allow_line(e))
    return ExitCode.OK


def cmd_allow_revoke(a: argparse.Namespace) -> int:
    from detector.review.apply import revoke_entries

    done, before = revoke_entries(a.index, a.ids, REVOKED_BY_CLI)
    for k in done:
        print(f"revoked {k}", file=sys.stderr)
    for k in before:
        print(f"already revoked, unchanged: {k}", file=sys.stderr)
    return ExitCode.OK


def add_allow(ix: Subparsers, common: argparse.ArgumentParser) -> None:
    """`mamori index allow list | revoke`."""
    al = ix.add_parser("allow", help="list or revoke the allow-list reviewers' not_infringing decisions wrote"
                       ).add_subparsers(dest="allow_command", required=True, metavar="SUBCOMMAND")
    ls = al.add_parser("list", parents=[common], help="every allow-list entry, active and revoked, with its history",
                       description="Each entry a not_infringing decision wrote: id, character, input, reviewer, "
                       "when it was added, its regions, and for a revoked one when and by what (a later "
                       "infringing decision's id, or a command); `reverses` names the infringing decisions "
                       "whose confirmed references it removed. docs/cli.md.")
    ls.add_argument("index")
    ls.add_argument("--json", action="store_true", help='print {"entries": [...]} as JSON')
    ls.set_defaults(func=cmd_allow_list)
    rv = al.add_parser("revoke", parents=[common], help="revoke allow-list entries: their regions suppress nothing",
                       description="Revoke entries by id (one commit): their regions leave the allow-list, the "
                       "entry stays listed with revoked_at and revoked_by. An unknown id is an error and "
                       "changes nothing; one already revoked is left as it was.")
    rv.add_argument("index")
    rv.add_argument("ids", nargs="+", metavar="ID", help="entry id (d-..., as `index allow list` shows)")
    rv.set_defaults(func=cmd_allow_revoke)
