"""`mamori index build | add | remove | info | thresholds | policy | quarantine | enable | allow`: make
and manage a reference index (`allow`: `detector.cli.allow_cmd`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from detector.cli.allow_cmd import add_allow
from detector.cli.common import DEFAULT_BACKBONE, ExitCode, add_model_options, progress_printer, unit_float
from detector.cli.review_cmd import print_allowlist

if TYPE_CHECKING:
    from detector.cli.common import Subparsers
    from detector.embed.embedding import RegionEmbedder
    from index.build import BuildReport
    from index.manifest import ReferenceEntry
    from index.prompts import PromptEntry

__all__ = ["add_parser"]

PROMPTS_HELP = ("text prompts, CSV with columns character,prompt (one prompt a row; CLIP backbones only; "
                "docs/text-prompts.md)")


def _embedder(backbone: str, a: argparse.Namespace, *, text: bool = False) -> RegionEmbedder:
    """The backbone as an embedder; with `text` (prompts to embed) its text tower too, and a
    backbone without one is refused here, before any image is embedded."""
    from detector.embed.backbones import load_backbone
    from detector.embed.embedding import RegionEmbedder
    from detector.embed.text import no_text_tower

    embedder = RegionEmbedder(load_backbone(backbone, precision=a.precision, device=a.device, text=text))
    if text and embedder.backbone.text is None:
        raise no_text_tower(backbone)
    return embedder


def _inputs(a: argparse.Namespace, *, prompts_only: bool = False) -> tuple[list[ReferenceEntry], list[PromptEntry]]:
    """Reference entries (folder or --manifest) and the --prompts file's prompts; with
    `prompts_only` (index add), --prompts alone is enough."""
    from index import read_references
    from index.prompts import read_prompts

    prompts = read_prompts(a.prompts) if a.prompts else []
    if prompts_only and prompts and a.refs_dir is None and a.manifest is None:
        return [], prompts
    return read_references(a.refs_dir, a.manifest), prompts


def _print_report(report: BuildReport, out: TextIO = sys.stderr) -> None:
    print(
        f"added {len(report.added)} reference(s); {report.characters} character(s) in the index"
        + (f"; {report.background_images} background image(s)" if report.background_images else ""),
        file=out,
    )
    for path, why in report.skipped:
        print(f"  skipped {path}: {why}", file=out)
    for r in report.quarantined:
        print(
            f"  quarantined {r.source_path} ({r.character}): {r.quarantine}; not matched "
            "(rebuild or add with --keep-generic to keep it)",
            file=out,
        )


def cmd_index_build(a: argparse.Namespace) -> int:
    from index import build_index

    entries, prompts = _inputs(a)
    print(f"building {a.out} from {len(entries)} reference image(s) with backbone {a.backbone}", file=sys.stderr)
    report = build_index(
        entries,
        a.out,
        _embedder(a.backbone, a, text=bool(prompts) or any(e.prompt for e in entries)),
        background=a.background,
        force=a.force,
        keep_generic=a.keep_generic,
        progress=progress_printer(a.quiet),
        prompts=prompts,
    )
    _print_report(report)
    if a.background is None:
        print(
            "no --background given: thresholds use the backbone's defaults (see docs/how-it-works.md, Calibration)", file=sys.stderr
        )
    return ExitCode.OK


def cmd_index_add(a: argparse.Namespace) -> int:
    from index import IndexStore, add_references

    entries, prompts = _inputs(a, prompts_only=True)
    name = IndexStore.open(a.index).backbone["name"]
    embedder = _embedder(name, a, text=bool(prompts) or any(e.prompt for e in entries))
    report = add_references(
        a.index, entries, embedder, keep_generic=a.keep_generic, progress=progress_printer(a.quiet), prompts=prompts
    )
    _print_report(report)
    return ExitCode.OK


def cmd_index_remove(a: argparse.Namespace) -> int:
    from index import remove_references

    gone = remove_references(a.index, character=a.character, reference=a.reference)
    for r in gone:
        print(f"removed {r.id} {r.character} {r.source_path}", file=sys.stderr)
    for f in gone.deleted_files:
        print(f"deleted {f} (uploaded art no remaining reference uses)", file=sys.stderr)
    return ExitCode.OK


def cmd_index_quarantine(a: argparse.Namespace) -> int:
    from index.quarantine import find_reference, quarantine_references
    from index.store import IndexStore

    ref = find_reference(IndexStore.open(a.index).data, a.reference, a.index)
    done = quarantine_references(a.index, [ref.id], a.reason)
    state = "quarantined" if done else f"already quarantined ({ref.quarantine})"
    print(f"{state}: {ref.id} {ref.character} {ref.source_path}", file=sys.stderr)
    return ExitCode.OK


def cmd_index_enable(a: argparse.Namespace) -> int:
    from index.quarantine import enable_reference

    ref, was = enable_reference(a.index, a.reference)
    state = f"enabled (was quarantined: {was})" if was else "not quarantined, unchanged"
    print(f"{state}: {ref.id} {ref.character} {ref.source_path}", file=sys.stderr)
    return ExitCode.OK


def _print_info(info: dict[str, Any]) -> None:
    bb, counts = info["backbone"], info["counts"]
    print(f"index      {info['path']}  (format {info['format_version']}, generation {info['generation']})")
    print(
        f"backbone   {bb['name']}  dim={bb['dim']}  weights sha256={bb['weights_sha256'][:16]}…  "
        f"precision {info.get('precision') or 'unknown'}"
    )
    print(
        f"contents   {counts['references']} references, {counts['characters']} characters, "
        f"{counts['background_images']} background images; updated {info['updated']}"
    )
    print(f"rule       {info['thresholds'].get('rule', '')}")
    print(f"{'character':28} {'refs':>4} {'franchise':20} {'flag_sim':>8} {'review_sim':>10} {'verify':6} calibration")
    for name, c in info["characters"].items():
        print(
            f"{name[:28]:28} {c['references']:4d} {c['franchise'][:20]:20} {c['flag_sim']:8.3f} "
            f"{c['review_sim']:10.3f} {'yes' if c['verifiable'] else 'weak':6} {c['source']} (n={c['n_background']})"
        )
    print(
        "verify     yes: reference art detailed enough for geometric verification (a failed check lowers "
        "the score); weak: only a successful check counts"
    )
    _print_prompts(info)
    print_allowlist(info)
    _print_policy(info.get("policy"))
    print(
        f"verdicts   flag >= {info['thresholds'].get('score_flag')}, review >= "
        f"{info['thresholds'].get('score_review')} (calibrated score)"
    )
    q = info["quarantined"]
    print(f"quarantined {len(q)} reference(s)" + (":" if q else ""))
    for r in q:
        print(f"  {r['id']} {r['character']} {r['source_path']}: {r['reason']}")


def _print_prompts(info: dict[str, Any]) -> None:
    """The text channel: its calibration and each character's prompts (docs/text-prompts.md)."""
    text = info.get("text")
    if not text:
        print("prompts    none (text prompts: CLIP backbones, --prompts or a manifest `prompt` column)")
        return
    print(
        f"prompts    {text['prompts']} text prompt(s); text channel flag_sim {text['flag_sim']:.3f}, "
        f"review_sim {text['review_sim']:.3f}, calibration {text['source']} (n={text['n_background']})"
    )
    for name, c in info["characters"].items():
        for p in c.get("prompts", []):
            print(f"  {name[:28]:28} {p['id']:24} {p['prompt']}")


def cmd_index_info(a: argparse.Namespace) -> int:
    from index import IndexStore

    info = IndexStore.open(a.index).summary()
    if a.json:
        print(json.dumps(info, indent=1))
    else:
        _print_info(info)
    return ExitCode.OK


def cmd_index_thresholds(a: argparse.Namespace) -> int:
    from index import IndexStore, set_thresholds

    if a.flag is not None or a.review is not None:
        set_thresholds(a.index, flag=a.flag, review=a.review)
    store = IndexStore.open(a.index)
    print(f"{a.index}: flag >= {store.flag_score:.4f}, review >= {store.review_score:.4f} (calibrated score)")
    return ExitCode.OK


def cmd_index_policy(a: argparse.Namespace) -> int:
    """Store a validated POLICY.toml, clear the policy, or print the current one (as TOML)."""
    from index import IndexStore
    from index.policy import load_policy, policy_toml
    from index.store import clear_policy, set_policy

    if a.clear:
        clear_policy(a.index)
        print(f"{a.index}: policy cleared (the index's thresholds decide every verdict)", file=sys.stderr)
    elif a.policy:
        policy = load_policy(a.policy)
        set_policy(a.index, policy)
        print(f"{a.index}: policy with {len(policy.rules)} rule(s) stored", file=sys.stderr)
    print(policy_toml(IndexStore.open(a.index).manifest.get("policy")), end="")
    return ExitCode.OK


def _print_policy(policy: dict[str, Any] | None) -> None:
    """`index info`'s match-policy lines: one per rule, in the order they are tried."""
    if not policy:
        print("policy     none (the verdict thresholds below apply to every character)")
        return
    print(f"policy     {len(policy['rule'])} rule(s), first match wins (`mamori index policy`):")
    for i, rule in enumerate(policy["rule"], 1):
        match = ", ".join(f"{k}={rule[k]!r}" for k in ("character", "franchise", "rights_holder") if k in rule)
        then = ", ".join(f"{k} {rule[k]}" for k in ("flag", "review", "min_seconds", "action") if k in rule)
        print(f"  {rule.get('name', i)}: {match or 'every character'} -> {then or 'no change'}")


def _add_build(ix: Subparsers, common: argparse.ArgumentParser) -> None:
    b = ix.add_parser(
        "build",
        parents=[common],
        help="build an index from reference art",
        description="Embed reference art (REFS_DIR/<character>/<images> or a manifest CSV "
        "with columns path,character,franchise,rights_holder,license and an optional prompt column) "
        "into a new index.",
    )
    b.add_argument("refs_dir", nargs="?", help="folder with one sub-folder of images per character")
    b.add_argument("--manifest", help="manifest CSV (paths relative to the CSV's folder)")
    b.add_argument("--out", required=True, help="index folder to create")
    b.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        help="clip-vit-b32 (default), effnet-lite0-imagenet or mamori-identity-lite0 (offline), "
        "openclip:ARCH:TAG_OR_PATH, timm:MODEL[:FILE], onnx:PATH.onnx (docs/backbones.md)",
    )
    b.add_argument("--background", help="folder of non-protected images used to calibrate thresholds")
    b.add_argument("--prompts", help=PROMPTS_HELP)
    b.add_argument("--force", action="store_true", help="replace an existing index at --out")
    b.add_argument(
        "--keep-generic",
        action="store_true",
        help="keep references that look generic against the background (default: quarantine them)",
    )
    add_model_options(b)
    b.set_defaults(func=cmd_index_build)


def _add_add(ix: Subparsers, common: argparse.ArgumentParser) -> None:
    ad = ix.add_parser("add", parents=[common], help="add references or text prompts to an index (same backbone)")
    ad.add_argument("index")
    ad.add_argument("refs_dir", nargs="?")
    ad.add_argument("--manifest")
    ad.add_argument("--prompts", help=PROMPTS_HELP + "; alone, adds only prompts")
    ad.add_argument("--keep-generic", action="store_true", help="keep references that look generic (see build)")
    add_model_options(ad)
    ad.set_defaults(func=cmd_index_add)


def _add_manage(ix: Subparsers, common: argparse.ArgumentParser) -> None:
    """remove, info, thresholds and policy."""
    rm = ix.add_parser("remove", parents=[common], help="remove a character or one reference (takedown/opt-out)")
    rm.add_argument("index")
    g = rm.add_mutually_exclusive_group(required=True)
    g.add_argument("--character", help="remove every reference of this character")
    g.add_argument("--reference", help="remove one reference: its id, sha256 or source path")
    rm.set_defaults(func=cmd_index_remove)

    inf = ix.add_parser("info", parents=[common], help="show an index's backbone, counts and thresholds")
    inf.add_argument("index")
    inf.add_argument("--json", action="store_true", help="print the full summary as JSON")
    inf.set_defaults(func=cmd_index_info)

    th = ix.add_parser(
        "thresholds",
        parents=[common],
        help="show or set the verdict thresholds (calibrated score)",
        description="Verdicts compare a video's calibrated score with two global thresholds "
        "stored in the index. `mamori evaluate` suggests values for a target "
        "false-positive rate on your own labelled videos.",
    )
    th.add_argument("index")
    th.add_argument("--flag", type=unit_float, help="flag when score >= this")
    th.add_argument("--review", type=unit_float, help="send to review when score >= this (and below --flag)")
    th.set_defaults(func=cmd_index_thresholds)

    po = ix.add_parser(
        "policy",
        parents=[common],
        help="show, set or clear the match policy (per-franchise thresholds, min_seconds, action)",
        description="Store a match policy in the index: ordered [[rule]] tables matching franchise, "
        "rights_holder and/or character, with optional flag/review thresholds, min_seconds on screen "
        "and an action label (docs/cli.md, Match policy). Without POLICY or --clear, print the current policy.",
    )
    po.add_argument("index")
    g = po.add_mutually_exclusive_group()
    g.add_argument("policy", nargs="?", metavar="POLICY.toml", help="policy file to validate and store")
    g.add_argument("--clear", action="store_true", help="remove the policy (back to the index's thresholds)")
    po.set_defaults(func=cmd_index_policy)


def _add_quarantine(ix: Subparsers, common: argparse.ArgumentParser) -> None:
    """quarantine and enable (one reference: its id, sha256 or source path)."""
    qu = ix.add_parser("quarantine", parents=[common],
                       help="keep a reference in the index but never match it (e.g. one that floods scans)")
    qu.add_argument("index")
    qu.add_argument("reference", help="its id, sha256 or source path")
    qu.add_argument("--reason", default="quarantined by hand", help="shown by `index info` (default %(default)r)")
    qu.set_defaults(func=cmd_index_quarantine)
    en = ix.add_parser("enable", parents=[common], help="clear a reference's quarantine: match it again")
    en.add_argument("index")
    en.add_argument("reference", help="its id, sha256 or source path")
    en.set_defaults(func=cmd_index_enable)


def add_parser(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    """`mamori index` and its sub-commands."""
    ix = sub.add_parser("index", help="build and manage a reference index").add_subparsers(
        dest="index_command", required=True, metavar="SUBCOMMAND"
    )
    _add_build(ix, common)
    _add_add(ix, common)
    _add_manage(ix, common)
    _add_quarantine(ix, common)
    add_allow(ix, common)
