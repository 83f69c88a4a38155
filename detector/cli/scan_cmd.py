"""`mamori scan` (many inputs, one JSON line each, resumable) and `mamori score` (one file)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.cli.common import (
    ExitCode,
    add_flood_options,
    add_media_options,
    detector_options,
    iter_inputs,
    positive_int,
    progress_printer,
    write_line,
)
from detector.errors import ConfigError

if TYPE_CHECKING:
    from detector.cli.common import Subparsers
    from detector.runs.flood import FloodCounter
    from index.scanstore import ScanStore
    from index.store import IndexStore

__all__ = ["add_parser"]

Results = Generator[dict[str, Any], None, None]


def _jobs(
    inputs: Sequence[Path], done: dict[tuple[str, str], str] | None, skipped: list[tuple[Path, str]]
) -> Iterator[tuple[Path, str | None]]:
    """(path, sha256 or None) of each input still to scan; with `done` (a resumed scan,
    `detector.runs.batch`), inputs whose (path, sha256) already has a line go to `skipped` instead.
    Only regular files are hashed (`input_sha` checks the type first: a FIFO must not block)."""
    from detector.media.files import input_sha

    for path in inputs:
        sha = input_sha(path) if done else None
        if sha is not None and done is not None and (str(path), sha) in done:
            skipped.append((path, sha))
            continue
        yield path, sha


def _scan_inputs(a: argparse.Namespace) -> list[Path]:
    """Files and searched folders from the command line, then --from-list's paths as listed (a
    folder there is an input like any other, and gets an `error` result: a list names files)."""
    from detector.runs.batch import read_list, unique

    if a.resume and not a.out:
        raise ConfigError("--resume needs --out: the results file to resume")
    if a.retry_errors and not a.resume:
        raise ConfigError("--retry-errors needs --resume: it scans again errors already in --out")
    if a.ray_address and a.engine != "ray":
        raise ConfigError("--ray-address needs --engine ray")
    if a.report and not a.out:
        raise ConfigError("--report needs --out: the report is made from the results file")
    listed = read_list(a.from_list) if a.from_list else []
    return list(unique([*iter_inputs(a.paths), *listed]))


def _scan_results(a: argparse.Namespace, jobs: Iterator[tuple[Path, str | None]], store: ScanStore | None) -> Results:
    options = {"backbone": a.backbone, "precision": a.precision, "device": a.device, **detector_options(a)}
    if a.engine == "ray":
        from detector.runs.engines import scan_ray

        if store is not None:  # workers encode their inputs' records; this process stores them
            options["store_codec"] = store.codec.to_bytes()
        return scan_ray(a.index, options, jobs, a.workers, a.ray_address)
    from detector.api import Detector
    from detector.runs.engines import scan_threads
    from index.local import quiet_blas

    quiet_blas()  # the matcher's small products on one OpenBLAS thread (measured: `index.local.quiet_blas`)
    det = Detector.open(a.index, **options)
    det.recording = store.codec if store is not None else None
    return scan_threads(det, jobs, a.workers)


def _open_store(a: argparse.Namespace) -> tuple[ScanStore, IndexStore] | None:
    """`--store`: the scan store (created, its codec trained on the index, if new) and the index
    whose generation its videos are recorded against."""
    if not a.store:
        return None
    from detector.media.regions import DEFAULT_SCALES
    from detector.recording import open_store
    from index.store import IndexStore

    index = IndexStore.open(a.index)
    return open_store(a.store, index, DEFAULT_SCALES), index


class _Stored:
    """Where `_write_results` puts each scored input's record (`--store`) before its line."""

    def __init__(self, a: argparse.Namespace, opened: tuple[ScanStore, IndexStore] | None):
        self.a, self.index = a, opened[1] if opened else None
        self.writer = opened[0].writer() if opened else None

    def add(self, result: dict[str, Any]) -> None:
        blob = result.pop("_record", None)
        if blob is None or self.writer is None or self.index is None:
            return
        from detector.match.results import path_of
        from detector.recording import add_to_store
        from index.scancodec import VideoRecord

        add_to_store(self.writer, self.index, path_of(result), result, VideoRecord.from_bytes(blob),
                     self.a.fps, self.a.max_frames)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _write_results(
    a: argparse.Namespace, results: Results, first: int, total: int, this_run: list[dict[str, Any]],
    flood: FloodCounter, stored: _Stored,
) -> tuple[dict[str, int], int]:
    """Write each result line as it comes (progress on stderr), counting matches per reference
    in `flood`; (counts per verdict, frames). With --store, an input's record is in the store
    (committed) before its line is written: a line always has its record."""
    counts = {"flag": 0, "review": 0, "pass": 0, "error": 0}
    frames = 0
    t1 = time.monotonic()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(a.out, "a" if a.resume else "w", encoding="utf-8")) if a.out else sys.stdout
        stack.enter_context(contextlib.closing(results))  # stops the engine (Ctrl-C: pending inputs cancelled)
        stack.callback(stored.close)
        for i, result in enumerate(results, first):
            stored.add(result)
            write_line(out, result)
            if a.csv and not a.out:
                this_run.append(result)
            counts[result["verdict"]] += 1
            flood.add(result)
            frames += result["frames"]
            if not a.quiet:
                top = result["characters"][0]["character"] if result["characters"] else ""
                detail = result["error"] or f"{result['score']:.2f} {top}".strip()
                print(
                    f"[{i}/{total}] {result['path']}: {result['verdict']} {detail} ({time.monotonic() - t1:.1f}s)",
                    file=sys.stderr,
                    flush=True,
                )
            t1 = time.monotonic()
    return counts, frames


def _write_exports(a: argparse.Namespace, this_run: list[dict[str, Any]]) -> None:
    from detector.runs.export import read_results, write_csv

    rows = read_results(a.out) if a.out else this_run  # with --resume: earlier runs' lines too
    if a.csv:
        print(f"wrote {write_csv(rows, a.csv)} row(s) to {a.csv}", file=sys.stderr)
    if a.report:
        from detector.runs.report import write_report

        n = write_report(rows, a.report, index=a.index, progress=progress_printer(a.quiet))
        print(f"wrote a review report of {n} video(s) to {a.report}", file=sys.stderr)


def _print_flood(a: argparse.Namespace, flood: FloodCounter) -> None:
    """Stderr lines for the references that matched an unusual share of the batch (with --resume:
    of all of --out, counted again from the file: one result per input)."""
    from detector.runs.export import read_results
    from detector.runs.flood import FloodCounter, flood_lines

    if a.resume:
        flood = FloodCounter()
        for rec in read_results(a.out):
            flood.add(rec)
    for line in flood_lines(flood.flooding(share=a.flood_share, min_total=a.flood_min), index=a.index):
        print(line, file=sys.stderr)


def cmd_scan(a: argparse.Namespace) -> int:
    from detector.runs.batch import completed
    from detector.runs.flood import FloodCounter

    inputs = _scan_inputs(a)
    if not inputs:
        print("scan: no input files found (give paths or --from-list)", file=sys.stderr)
        return ExitCode.ERROR
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    done = completed(a.out, retry_errors=a.retry_errors) if a.resume else None
    skipped: list[tuple[Path, str]] = []
    this_run: list[dict[str, Any]] = []
    opened = _open_store(a)
    t0 = time.monotonic()
    results = _scan_results(a, _jobs(inputs, done, skipped), opened[0] if opened else None)
    flood = FloodCounter()
    counts, frames = _write_results(a, results, len(skipped) + 1, len(inputs), this_run, flood, _Stored(a, opened))
    dt, n = time.monotonic() - t0, len(inputs) - len(skipped)
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    where = f"; results in {a.out}" if a.out else ""
    resumed = f"; {len(skipped)} already in {a.out}, skipped" if skipped else ""
    print(
        f"scanned {n} file(s) in {dt:.1f}s ({frames / max(dt, 1e-9):.1f} frames/s, {n / max(dt, 1e-9):.2f} "
        f"files/s): {summary}{resumed}{where}",
        file=sys.stderr,
    )
    _print_flood(a, flood)
    if a.csv or a.report:
        _write_exports(a, this_run)
    # only the inputs skipped now, as their content is now: an old flag of since-edited content does not count
    flagged_before = done is not None and any(done.get((str(p), sha)) == "flag" for p, sha in skipped)
    return ExitCode.FLAGGED if counts["flag"] or flagged_before else ExitCode.OK


def cmd_score(a: argparse.Namespace) -> int:
    from detector.api import Detector
    from detector.runs.engines import score_one

    det = Detector.open(a.index, backbone=a.backbone, precision=a.precision, device=a.device, **detector_options(a))
    result = score_one(det, Path(a.path))  # any failure on the file is its `error` result
    print(json.dumps(result, indent=1))
    if result["verdict"] == "error":
        return ExitCode.ERROR
    return ExitCode.FLAGGED if result["verdict"] == "flag" else ExitCode.OK


def _add_scan(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser(
        "scan",
        parents=[common],
        help="scan videos/images, one JSON line per input",
        description="Scan files and folders (recursively: videos, GIFs, images). Writes one JSON "
        "result per input; unreadable files get verdict 'error' and the scan goes on. "
        "Exit 0: nothing flagged, 1: something flagged, 2: fatal error.",
    )
    s.add_argument("paths", nargs="*", metavar="PATH")
    add_media_options(s)
    s.add_argument("--out", help="write JSON lines here (default: stdout)")
    s.add_argument("--from-list", metavar="FILE", help="also scan the paths listed in FILE (one per line, # comments)")
    s.add_argument(
        "--resume",
        action="store_true",
        help="append to --out, skipping inputs it already has a result for (same path and sha256)",
    )
    s.add_argument(
        "--retry-errors",
        action="store_true",
        help="with --resume: also scan again inputs whose last result is an error not caused by the "
        "file itself (a worker that died, an internal failure, a file that changed meanwhile)",
    )
    s.add_argument("--csv", metavar="FILE", help="also write a spreadsheet, one row per input (of all of --out)")
    s.add_argument(
        "--report",
        metavar="FILE",
        help="also write an HTML review report of all of --out (thumbnails in FILE's sibling folder FILE_files/)",
    )
    s.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="inputs scored side by side (threads sharing one model; Ray actors with --engine ray)",
    )
    s.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (this process) or ray (needs pip install 'mamori[ray]')",
    )
    s.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="existing Ray cluster (host:6379 or ray://host:10001); default: a private local Ray",
    )
    s.add_argument(
        "--store",
        metavar="STORE",
        help="also keep each input's region embeddings (compressed) in this scan store, so characters added "
        "to the index later can be found with `mamori rescan` without decoding the videos again",
    )
    add_flood_options(s, "inputs")
    s.set_defaults(func=cmd_scan)


def add_parser(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    """`mamori scan` and `mamori score`."""
    _add_scan(sub, common)
    sc = sub.add_parser(
        "score",
        parents=[common],
        help="score one file, JSON to stdout",
        description="Exit 0: not flagged, 1: flagged, 2: the file could not be read or a fatal error.",
    )
    sc.add_argument("path")
    add_media_options(sc)
    sc.set_defaults(func=cmd_score)
