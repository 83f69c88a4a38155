"""`mamori rescan` (stored videos against today's index) and `mamori store info|compact`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.cli.common import ExitCode, positive_int, write_line
from detector.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from detector.cli.common import Subparsers
    from index.scanstore import ScanStore, StoreEntry

__all__ = ["DEFAULT_MAX_WORKERS", "add_parser", "default_workers"]

#: `rescan --workers` default: one per core, at most this many (the Python parts of a rescan hold
#: the GIL between SIFT, FAISS and decoding calls, so more threads than this add little)
DEFAULT_MAX_WORKERS = 8


def default_workers(engine: str = "local") -> int:
    """`rescan`'s default worker count: locally, one thread per core this process may use (at
    most DEFAULT_MAX_WORKERS). A rescan runs no model that would own the cores, so its per-video
    work (decoding, SIFT, matching: C code that releases the GIL) runs on all of them; measured
    on the dev set, two cores: one worker 19-23 s, two 12-13 s (docs/rescan.md). With Ray, 1 as
    for `scan` (the driver's cores say nothing about a cluster's; each actor holds an index copy)."""
    if engine == "ray":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(DEFAULT_MAX_WORKERS, cores or 1))


def _results(a: argparse.Namespace, store: ScanStore, entries: list[StoreEntry]) -> Iterator[dict[str, Any]]:
    from detector.runs.rescan import Rescanner, check_store, select_characters
    from index.local import quiet_blas

    quiet_blas()  # the matcher's small products on one OpenBLAS thread (measured here: `index.local`)
    det = Rescanner.open(a.index, verify=not a.no_verify)  # the driver's own: it checks the backbone and the selection
    check_store(det, store)
    selection = select_characters(det, store, characters=a.characters or (), since=a.since, every=a.all)
    workers = a.workers or default_workers(a.engine)
    if a.engine == "ray":
        from detector.runs.rescan_engines import rescan_ray

        del det
        return rescan_ray(a.index, {"verify": not a.no_verify}, store, selection, entries, workers, a.ray_address)
    from detector.runs.rescan_engines import rescan_threads

    return rescan_threads(det, store, entries, selection, workers)


def cmd_rescan(a: argparse.Namespace) -> int:
    """Every stored video gets one line, a result or an error: the videos are listed once, under
    the store's shared lock, held to the end (a `store compact` meanwhile is refused)."""
    from detector.runs.batch import completed
    from index.scanstore import ScanStore

    if a.resume and not a.out:
        raise ConfigError("--resume needs --out: the results file to resume")
    if a.ray_address and a.engine != "ray":
        raise ConfigError("--ray-address needs --engine ray")
    if sum(map(bool, (a.characters, a.since, a.all))) > 1:
        raise ConfigError("give one of --characters, --since and --all")
    store = ScanStore.open(a.store)
    counts = {"flag": 0, "review": 0, "pass": 0, "error": 0}
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.enter_context(store.reading())
        skip = set(completed(a.out, rescan=True)) if a.resume else set()
        listed = store.entries()
        entries = [e for e in listed if (e.path, e.sha256) not in skip]
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        out = stack.enter_context(open(a.out, "a" if a.resume else "w", encoding="utf-8")) if a.out else sys.stdout
        results = _results(a, store, entries)
        stack.enter_context(contextlib.closing(results))  # type: ignore[type-var]
        for i, r in enumerate(results, len(listed) - len(entries) + 1):
            write_line(out, r)
            counts[r["verdict"]] += 1
            if not a.quiet:
                top = r["characters"][0]["character"] if r["characters"] else ""
                print(f"[{i}/{len(listed)}] {r['path']}: {r['verdict']} {r['error'] or top}", file=sys.stderr,
                      flush=True)
    n = sum(counts.values())
    print(f"rescanned {n} stored video(s) in {time.monotonic() - t0:.1f}s: "
          + ", ".join(f"{v} {k}" for k, v in counts.items()) + (f"; results in {a.out}" if a.out else ""),
          file=sys.stderr)
    return ExitCode.FLAGGED if counts["flag"] else ExitCode.OK


def cmd_store_info(a: argparse.Namespace) -> int:
    from index.scanstore import ScanStore

    print(json.dumps(ScanStore.open(a.store).info(), indent=1))
    return ExitCode.OK


def cmd_store_compact(a: argparse.Namespace) -> int:
    from index.scanstore import ScanStore

    done = ScanStore.open(a.store).compact()
    for path, sha256, why in done.damaged:
        print(f"skipped a damaged record: {path} (sha256 {sha256}): {why}", file=sys.stderr)
    dropped = (f"; {len(done.damaged)} damaged record(s) skipped and dropped from the catalogue (listed above: "
               "scan those videos again with --store)") if done.damaged else ""
    print(f"compacted {a.store}: {done.before:,} -> {done.after:,} bytes{dropped}", file=sys.stderr)
    return ExitCode.OK


def add_parser(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    """`mamori rescan` and `mamori store`."""
    r = sub.add_parser(
        "rescan", parents=[common], help="match videos already scanned with --store against the index, without decoding them",
        description="Score the videos of a scan store (`mamori scan --store`) against the index: by default only "
        "the characters with references the index did not hold when each video was scanned. Results are "
        "JSON lines like scan's, with a `rescan` object. Frames where a reported character could match are "
        "decoded again, near-copy hashed and verified geometrically when the video is still at its path, "
        "unchanged. No model runs: the stored vectors are the embedding evidence. "
        "Exit 0: nothing flagged, 1: something flagged, 2: fatal error.")
    r.add_argument("store", metavar="STORE")
    r.add_argument("--index", required=True, help="index folder (same backbone as the store)")
    which = r.add_argument_group("characters reported (default: those new since each video was scanned)")
    which.add_argument("--characters", nargs="+", metavar="NAME", help="these characters")
    which.add_argument("--since", metavar="GENERATION",
                       help="characters with references added after this index generation (see `mamori store info`)")
    which.add_argument("--all", action="store_true", help="every character of the index")
    r.add_argument("--out", help="write JSON lines here (default: stdout)")
    r.add_argument("--resume", action="store_true",
                   help="append to --out, skipping videos it already has a rescan line for (scan lines in the same "
                   "file do not count)")
    r.add_argument("--no-verify", action="store_true",
                   help="never decode the videos: approximate evidence only, no geometric verification")
    r.add_argument("--workers", type=positive_int, default=None,
                   help="videos (threads) or Ray actors side by side (default: locally one per core, at most "
                   f"{DEFAULT_MAX_WORKERS}: a rescan runs no model, its SIFT and decoding run beside each other; "
                   "with --engine ray, 1)")
    r.add_argument("--engine", choices=("local", "ray"), default="local", help="local or ray (one shard per task)")
    r.add_argument("--ray-address", metavar="ADDR", help="existing Ray cluster; default: a private local Ray")
    r.set_defaults(func=cmd_rescan)
    s = sub.add_parser("store", help="scan store housekeeping: info, compact")
    ssub = s.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    info = ssub.add_parser("info", parents=[common], help="what a scan store holds (JSON)")
    info.add_argument("store", metavar="STORE")
    info.set_defaults(func=cmd_store_info)
    compact = ssub.add_parser("compact", parents=[common],
                              help="rewrite the live records, dropping replaced ones and partial writes")
    compact.add_argument("store", metavar="STORE")
    compact.set_defaults(func=cmd_store_compact)
