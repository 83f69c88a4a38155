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
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from detector.errors import ConfigError

__all__ = ["ExitCode", "main"]


class ExitCode(enum.IntEnum):
    OK = 0
    FLAGGED = 1
    ERROR = 2
    INTERRUPTED = 130


def _progress_printer(quiet: bool) -> Any:
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if quiet or (done < total and now - last[0] < 1.0):
            return
        last[0] = now
        print(f"  {stage}: {done}/{total}", file=sys.stderr, flush=True)

    return progress


def _embedder(backbone: str, a: argparse.Namespace) -> Any:
    from detector.backbones import load_backbone
    from detector.embedding import RegionEmbedder

    return RegionEmbedder(load_backbone(backbone, precision=a.precision, device=a.device))


def _detector_options(a: argparse.Namespace) -> dict[str, Any]:
    return {"fps": a.fps, "max_frames": a.max_frames, "skip_repeats": not a.no_skip, "verify": not a.no_verify}


def _print_report(report: Any, out: TextIO = sys.stderr) -> None:
    print(f"added {len(report.added)} reference(s); {report.characters} character(s) in the index"
          + (f"; {report.background_images} background image(s)" if report.background_images else ""), file=out)
    for path, why in report.skipped:
        print(f"  skipped {path}: {why}", file=out)
    for r in report.quarantined:
        print(f"  quarantined {r.source_path} ({r.character}): {r.quarantine}; not matched "
              "(rebuild or add with --keep-generic to keep it)", file=out)


def cmd_index_build(a: argparse.Namespace) -> int:
    from index import build_index, read_references

    entries = read_references(a.refs_dir, a.manifest)
    print(f"building {a.out} from {len(entries)} reference image(s) with backbone {a.backbone}", file=sys.stderr)
    report = build_index(entries, a.out, _embedder(a.backbone, a), background=a.background, force=a.force,
                         keep_generic=a.keep_generic, progress=_progress_printer(a.quiet))
    _print_report(report)
    if a.background is None:
        print("no --background given: thresholds use the backbone's defaults (see README, Calibration)", file=sys.stderr)
    return ExitCode.OK


def cmd_index_add(a: argparse.Namespace) -> int:
    from index import IndexStore, add_references, read_references

    entries = read_references(a.refs_dir, a.manifest)
    name = IndexStore.open(a.index).backbone["name"]
    report = add_references(a.index, entries, _embedder(name, a), keep_generic=a.keep_generic,
                            progress=_progress_printer(a.quiet))
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


def cmd_index_info(a: argparse.Namespace) -> int:
    from index import IndexStore

    info = IndexStore.open(a.index).summary()
    if a.json:
        print(json.dumps(info, indent=1))
        return ExitCode.OK
    bb, counts = info["backbone"], info["counts"]
    print(f"index      {info['path']}  (format {info['format_version']}, generation {info['generation']})")
    print(f"backbone   {bb['name']}  dim={bb['dim']}  weights sha256={bb['weights_sha256'][:16]}…  "
          f"precision {info.get('precision') or 'unknown'}")
    print(f"contents   {counts['references']} references, {counts['characters']} characters, "
          f"{counts['background_images']} background images; updated {info['updated']}")
    print(f"rule       {info['thresholds'].get('rule', '')}")
    print(f"{'character':28} {'refs':>4} {'franchise':20} {'flag_sim':>8} {'review_sim':>10} {'verify':6} calibration")
    for name, c in info["characters"].items():
        print(f"{name[:28]:28} {c['references']:4d} {c['franchise'][:20]:20} {c['flag_sim']:8.3f} "
              f"{c['review_sim']:10.3f} {'yes' if c['verifiable'] else 'weak':6} {c['source']} (n={c['n_background']})")
    print("verify     yes: reference art detailed enough for geometric verification (a failed check lowers "
          "the score); weak: only a successful check counts")
    print(f"verdicts   flag >= {info['thresholds'].get('score_flag')}, review >= "
          f"{info['thresholds'].get('score_review')} (calibrated score)")
    q = info["quarantined"]
    print(f"quarantined {len(q)} reference(s)" + (":" if q else ""))
    for r in q:
        print(f"  {r['id']} {r['character']} {r['source_path']}: {r['reason']}")
    return ExitCode.OK


def cmd_index_thresholds(a: argparse.Namespace) -> int:
    from index import IndexStore, set_thresholds

    if a.flag is not None or a.review is not None:
        set_thresholds(a.index, flag=a.flag, review=a.review)
    store = IndexStore.open(a.index)
    print(f"{a.index}: flag >= {store.flag_score:.4f}, review >= {store.review_score:.4f} (calibrated score)")
    return ExitCode.OK


def iter_inputs(paths: Sequence[str]) -> Iterator[Path]:
    """Files as given (whatever their suffix), and media files found recursively in folders, sorted."""
    from detector.frames import MEDIA_SUFFIXES

    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(
                f for f in p.rglob("*")
                if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES and not f.name.startswith(".")
            )
        else:
            yield p


def _open_out(path: str | None) -> TextIO:
    return open(path, "w", encoding="utf-8") if path else sys.stdout


@contextlib.contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """Ctrl-C waits until the block is done (in the main thread): a line is written whole or not
    at all, not cut in half by a KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if caught and callable(old):
            old(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt


def _write_line(out: TextIO, record: dict[str, Any]) -> None:
    """One JSON line (valid UTF-8: `Result.to_dict` has made its strings valid text), flushed, and
    fsynced when `out` is a file: a crash or Ctrl-C loses at most this line, never half of it."""
    line = json.dumps(record) + "\n"
    with _interrupt_deferred():
        out.write(line)
        out.flush()
        if out is not sys.stdout:
            os.fsync(out.fileno())


def _jobs(inputs: Sequence[Path], done: dict[tuple[str, str], str] | None, skipped: list[Path]) -> Iterator[Any]:
    """(path, sha256 or None) of each input still to scan; with `done` (a resumed scan,
    `detector.batch`), inputs whose (path, sha256) already has a line go to `skipped` instead.
    Only regular files are hashed (`input_sha` checks the type first: a FIFO must not block)."""
    from detector.batch import input_sha

    for path in inputs:
        sha = input_sha(path) if done else None
        if sha is not None and done is not None and (str(path), sha) in done:
            skipped.append(path)
            continue
        yield path, sha


def _scan_inputs(a: argparse.Namespace) -> list[Path]:
    """Files and searched folders from the command line, then --from-list's paths as listed (a
    folder there is an input like any other, and gets an `error` result: a list names files)."""
    from detector.batch import read_list, unique

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


def _scan_results(a: argparse.Namespace, jobs: Iterator[Any]) -> Generator[dict[str, Any], None, None]:
    options = {"backbone": a.backbone, "precision": a.precision, "device": a.device, **_detector_options(a)}
    if a.engine == "ray":
        from detector.engines import scan_ray

        return scan_ray(a.index, options, jobs, a.workers, a.ray_address)
    from detector.api import Detector
    from detector.engines import scan_threads

    return scan_threads(Detector.open(a.index, **options), jobs, a.workers)


def _write_results(a: argparse.Namespace, results: Generator[dict[str, Any], None, None], first: int, total: int,
                   this_run: list[dict[str, Any]]) -> tuple[dict[str, int], int]:
    """Write each result line as it comes (progress on stderr); (counts per verdict, frames)."""
    counts = {"flag": 0, "review": 0, "pass": 0, "error": 0}
    frames = 0
    t1 = time.monotonic()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(a.out, "a" if a.resume else "w", encoding="utf-8")) if a.out else sys.stdout
        stack.enter_context(contextlib.closing(results))  # stops the engine (Ctrl-C: pending inputs cancelled)
        for i, result in enumerate(results, first):
            _write_line(out, result)
            if a.csv and not a.out:
                this_run.append(result)
            counts[result["verdict"]] += 1
            frames += result["frames"]
            if not a.quiet:
                top = result["characters"][0]["character"] if result["characters"] else ""
                detail = result["error"] or f"{result['score']:.2f} {top}".strip()
                print(f"[{i}/{total}] {result['path']}: {result['verdict']} {detail} "
                      f"({time.monotonic() - t1:.1f}s)", file=sys.stderr, flush=True)
            t1 = time.monotonic()
    return counts, frames


def _write_exports(a: argparse.Namespace, this_run: list[dict[str, Any]]) -> None:
    from detector.export import read_results, write_csv

    rows = read_results(a.out) if a.out else this_run  # with --resume: earlier runs' lines too
    if a.csv:
        print(f"wrote {write_csv(rows, a.csv)} row(s) to {a.csv}", file=sys.stderr)
    if a.report:
        from detector.report import write_report

        n = write_report(rows, a.report, index=a.index, progress=_progress_printer(a.quiet))
        print(f"wrote a review report of {n} video(s) to {a.report}", file=sys.stderr)


def cmd_scan(a: argparse.Namespace) -> int:
    from detector.batch import completed

    inputs = _scan_inputs(a)
    if not inputs:
        print("scan: no input files found (give paths or --from-list)", file=sys.stderr)
        return ExitCode.ERROR
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    done = completed(a.out, retry_errors=a.retry_errors) if a.resume else None
    skipped: list[Path] = []
    this_run: list[dict[str, Any]] = []
    t0 = time.monotonic()
    results = _scan_results(a, _jobs(inputs, done, skipped))
    counts, frames = _write_results(a, results, len(skipped) + 1, len(inputs), this_run)
    dt, n = time.monotonic() - t0, len(inputs) - len(skipped)
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    where = f"; results in {a.out}" if a.out else ""
    resumed = f"; {len(skipped)} already in {a.out}, skipped" if skipped else ""
    print(f"scanned {n} file(s) in {dt:.1f}s ({frames / max(dt, 1e-9):.1f} frames/s, {n / max(dt, 1e-9):.2f} "
          f"files/s): {summary}{resumed}{where}", file=sys.stderr)
    if a.csv or a.report:
        _write_exports(a, this_run)
    names = {str(x) for x in inputs}
    flagged_before = done is not None and any(v == "flag" for (p, _), v in done.items() if p in names)
    return ExitCode.FLAGGED if counts["flag"] or flagged_before else ExitCode.OK


def cmd_score(a: argparse.Namespace) -> int:
    from detector.api import Detector
    from detector.engines import score_one

    det = Detector.open(a.index, backbone=a.backbone, precision=a.precision, device=a.device,
                        **_detector_options(a))
    result = score_one(det, Path(a.path))  # any failure on the file is its `error` result
    print(json.dumps(result, indent=1))
    if result["verdict"] == "error":
        return ExitCode.ERROR
    return ExitCode.FLAGGED if result["verdict"] == "flag" else ExitCode.OK


def _read_results(path: str) -> dict[str, dict[str, Any]]:
    from detector.export import read_results

    return {Path(rec["path"]).stem: rec for rec in read_results(path)}


def cmd_report(a: argparse.Namespace) -> int:
    from detector.export import read_results, write_csv

    if not (a.out or a.csv):
        raise ConfigError("report: give -o REPORT.html, --csv FILE, or both")
    rows = read_results(a.results)
    if a.csv:
        print(f"wrote {write_csv(rows, a.csv)} row(s) to {a.csv}", file=sys.stderr)
    if a.out:
        from detector.report import write_report

        n = write_report(rows, a.out, index=a.index, thumbnails=not a.no_thumbnails,
                         progress=_progress_printer(a.quiet))
        print(f"wrote a review report of {n} video(s) to {a.out}", file=sys.stderr)
    return ExitCode.OK


def cmd_evaluate(a: argparse.Namespace) -> int:
    from detector.api import Detector
    from detector.backbones import load_backbone
    from detector.evaluate import evaluate, read_labels
    from index import IndexStore

    labels = read_labels(a.labels)
    store = IndexStore.open(a.index)
    if a.results:
        results = _read_results(a.results)
    elif not a.paths:
        print("evaluate: give the labelled videos (files or folders) or --results", file=sys.stderr)
        return ExitCode.ERROR
    else:
        det = Detector(store, load_backbone(store.backbone["name"], precision=a.precision, device=a.device),
                       **_detector_options(a))
        inputs = [p for p in iter_inputs(a.paths) if p.stem in labels]
        if not inputs:
            print("evaluate: none of the labelled videos was found under the given paths", file=sys.stderr)
            return ExitCode.ERROR
        from detector.engines import scan_threads

        results = {}
        out = _open_out(a.out) if a.out else None
        progress = _progress_printer(a.quiet)
        try:
            for i, result in enumerate(scan_threads(det, ((p, None) for p in inputs)), 1):
                if out is not None:
                    _write_line(out, result)
                results[Path(result["path"]).stem] = result
                progress("videos", i, len(inputs))
        finally:
            if out is not None:
                out.close()
    report = evaluate(results, labels, flag_score=store.flag_score, review_score=store.review_score,
                      target_fpr=a.target_fpr, sample_step=1.0 / a.fps)
    if a.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print("\n".join(report.lines()))
        print(f"to use the suggestion: mamori index thresholds {a.index} --flag {report.suggested_flag:.4f} "
              f"--review {report.suggested_review:.4f}")
    return ExitCode.OK


def cmd_serve(a: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from detector.limits import Limits
    from detector.service import ServiceConfig, create_app, read_tokens

    tokens_file = a.tokens or os.environ.get("MAMORI_TOKENS_FILE")
    tokens = read_tokens(tokens_file) if tokens_file else None
    if tokens is None and a.host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(f"refusing to serve on {a.host} without authentication: give --tokens FILE "
                          "(or MAMORI_TOKENS_FILE), or bind to 127.0.0.1")
    limits = Limits(max_upload_mb=a.max_upload_mb, max_duration=a.max_duration, max_frames_total=a.max_frames_total,
                    max_frames=a.max_frames, max_pixels=a.max_pixels, request_timeout=a.request_timeout)
    cfg = ServiceConfig(Path(a.index), tokens, limits, workers=a.workers, queue=a.queue, batching=a.batching,
                        precision=a.precision, device=a.device, fps=a.fps)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(asctime)s %(name)s %(message)s")
    requests_log = logging.getLogger("mamori.requests")  # one JSON object per line, nothing around it
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    requests_log.addHandler(handler)
    requests_log.propagate = False
    if tokens is None:
        print(f"mamori serve: no tokens configured: no authentication, listening on loopback {a.host}:{a.port} only",
              file=sys.stderr, flush=True)
    else:
        print(f"mamori serve: {len(tokens)} token(s); listening on {a.host}:{a.port}", file=sys.stderr, flush=True)
    uvicorn.run(create_app(cfg), host=a.host, port=a.port, log_level="warning", access_log=False,
                timeout_keep_alive=5)
    return ExitCode.OK


def cmd_demo(a: argparse.Namespace) -> int:
    from detector.demo import run_demo

    return run_demo(Path(a.out), backbone=a.backbone)


def _positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {s}")
    return v


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {s}")
    return v


def _unit_float(s: str) -> float:
    v = float(s)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {s}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from detector.backbones import DEFAULT_BACKBONE
    from detector.frames import DEFAULT_FPS, DEFAULT_MAX_FRAMES
    from detector.inference import PRECISIONS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress output on stderr")

    def model_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="model precision: auto (bf16 where the hardware runs it natively and faster), "
                             "fp32 or bf16 (default %(default)s)")
        sp.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")

    p = argparse.ArgumentParser(prog="mamori",
                                description="Find protected characters in generated images and video.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ix = sub.add_parser("index", help="build and manage a reference index").add_subparsers(
        dest="index_command", required=True, metavar="SUBCOMMAND")
    b = ix.add_parser("build", parents=[common], help="build an index from reference art",
                      description="Embed reference art (REFS_DIR/<character>/<images> or a manifest CSV "
                                  "with columns path,character,franchise,rights_holder,license) into a new index.")
    b.add_argument("refs_dir", nargs="?", help="folder with one sub-folder of images per character")
    b.add_argument("--manifest", help="manifest CSV (paths relative to the CSV's folder)")
    b.add_argument("--out", required=True, help="index folder to create")
    b.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help="clip-vit-b32 (default), effnet-lite0-imagenet (offline), or openclip:ARCH:TAG_OR_PATH")
    b.add_argument("--background", help="folder of non-protected images used to calibrate thresholds")
    b.add_argument("--force", action="store_true", help="replace an existing index at --out")
    b.add_argument("--keep-generic", action="store_true",
                   help="keep references that look generic against the background (default: quarantine them)")
    model_options(b)
    b.set_defaults(func=cmd_index_build)

    ad = ix.add_parser("add", parents=[common], help="add references to an index (same backbone)")
    ad.add_argument("index")
    ad.add_argument("refs_dir", nargs="?")
    ad.add_argument("--manifest")
    ad.add_argument("--keep-generic", action="store_true", help="keep references that look generic (see build)")
    model_options(ad)
    ad.set_defaults(func=cmd_index_add)

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

    th = ix.add_parser("thresholds", parents=[common], help="show or set the verdict thresholds (calibrated score)",
                       description="Verdicts compare a video's calibrated score with two global thresholds "
                                   "stored in the index. `mamori evaluate` suggests values for a target "
                                   "false-positive rate on your own labelled videos.")
    th.add_argument("index")
    th.add_argument("--flag", type=_unit_float, help="flag when score >= this")
    th.add_argument("--review", type=_unit_float, help="send to review when score >= this (and below --flag)")
    th.set_defaults(func=cmd_index_thresholds)

    def media_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--index", required=True, help="index folder")
        sp.add_argument("--fps", type=_positive_float, default=DEFAULT_FPS, help="frames sampled per second (default %(default)s)")
        sp.add_argument("--max-frames", type=_positive_int, default=DEFAULT_MAX_FRAMES,
                        help="most frames sampled per video (default %(default)s); later frames are not checked")
        sp.add_argument("--backbone", help="refuse to run unless the index uses this backbone")
        sp.add_argument("--no-skip", action="store_true",
                        help="embed every region of every sampled frame (default: skip blank frames, reuse repeated "
                             "frames and unchanged regions)")
        sp.add_argument("--no-verify", action="store_true",
                        help="no geometric verification (SIFT + RANSAC) of candidates: faster, less precise")
        model_options(sp)

    s = sub.add_parser("scan", parents=[common], help="scan videos/images, one JSON line per input",
                       description="Scan files and folders (recursively: videos, GIFs, images). Writes one JSON "
                                   "result per input; unreadable files get verdict 'error' and the scan goes on. "
                                   "Exit 0: nothing flagged, 1: something flagged, 2: fatal error.")
    s.add_argument("paths", nargs="*", metavar="PATH")
    media_options(s)
    s.add_argument("--out", help="write JSON lines here (default: stdout)")
    s.add_argument("--from-list", metavar="FILE", help="also scan the paths listed in FILE (one per line, # comments)")
    s.add_argument("--resume", action="store_true",
                   help="append to --out, skipping inputs it already has a result for (same path and sha256)")
    s.add_argument("--retry-errors", action="store_true",
                   help="with --resume: also scan again inputs whose last result is an error not caused by the "
                        "file itself (a worker that died, an internal failure, a file that changed meanwhile)")
    s.add_argument("--csv", metavar="FILE", help="also write a spreadsheet, one row per input (of all of --out)")
    s.add_argument("--report", metavar="FILE", help="also write an HTML review report of all of --out "
                   "(thumbnails in FILE's sibling folder FILE_files/)")
    s.add_argument("--workers", type=_positive_int, default=1,
                   help="inputs scored side by side (threads sharing one model; Ray actors with --engine ray)")
    s.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (this process) or ray (needs pip install 'mamori[ray]')")
    s.add_argument("--ray-address", metavar="ADDR",
                   help="existing Ray cluster (host:6379 or ray://host:10001); default: a private local Ray")
    s.set_defaults(func=cmd_scan)

    sc = sub.add_parser("score", parents=[common], help="score one file, JSON to stdout",
                        description="Exit 0: not flagged, 1: flagged, 2: the file could not be read or a fatal error.")
    sc.add_argument("path")
    media_options(sc)
    sc.set_defaults(func=cmd_score)

    ev = sub.add_parser("evaluate", parents=[common], help="measure an index on labelled videos, suggest thresholds",
                        description="Scan labelled videos (or read a scan's results) and print AP, recall and "
                                    "false-positive rate at the index's thresholds, character and segment "
                                    "accuracy, and thresholds for a target false-positive rate. Labels: JSON "
                                    "object, video file name without suffix -> {positive, character, segment, track}.")
    ev.add_argument("paths", nargs="*", metavar="VIDEOS", help="videos or folders (labelled files are picked by name)")
    media_options(ev)
    ev.add_argument("--labels", required=True, help="labels JSON file")
    ev.add_argument("--results", help="evaluate these scan results (JSON lines) instead of scanning")
    ev.add_argument("--out", help="also write the scan's JSON lines here")
    ev.add_argument("--target-fpr", type=_unit_float, default=0.05, help="false-positive rate to suggest a flag "
                                                                          "threshold for (default %(default)s)")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.set_defaults(func=cmd_evaluate)

    from detector.limits import Limits

    lim = Limits()
    sv = sub.add_parser("serve", parents=[common], help="HTTP scoring service (FastAPI + uvicorn)",
                        description="Serve POST /v1/score and the admin endpoints (see README, HTTP API). "
                                    "Without --tokens (or MAMORI_TOKENS_FILE) there is no authentication and "
                                    "only a loopback address is allowed.")
    sv.add_argument("--index", required=True, help="index folder")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    sv.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    sv.add_argument("--tokens", help="file of `TOKEN SCOPE[,SCOPE]` lines; scopes: score, admin")
    sv.add_argument("--max-upload-mb", type=_positive_float, default=lim.max_upload_mb, help="(default %(default)s)")
    sv.add_argument("--max-duration", type=_positive_float, default=lim.max_duration,
                    help="longest video in seconds (default %(default)s)")
    sv.add_argument("--max-frames-total", type=_positive_int, default=lim.max_frames_total,
                    help="most frames in a video stream (default %(default)s)")
    sv.add_argument("--max-frames", type=_positive_int, default=lim.max_frames,
                    help="most sampled frames per request (default %(default)s)")
    sv.add_argument("--max-pixels", type=_positive_int, default=lim.max_pixels,
                    help="largest image or video frame in pixels (default %(default)s)")
    sv.add_argument("--request-timeout", type=_positive_float, default=lim.request_timeout,
                    help="seconds for upload + scoring (default %(default)s)")
    sv.add_argument("--fps", type=_positive_float, default=DEFAULT_FPS, help="default sampling rate (default %(default)s)")
    sv.add_argument("--workers", type=_positive_int, default=2, help="scoring threads (default %(default)s)")
    sv.add_argument("--queue", type=int, default=8, help="requests waiting beyond the workers before 503 "
                                                          "(default %(default)s)")
    sv.add_argument("--batching", choices=("auto", "on", "off"), default="auto",
                    help="merge concurrent requests' forward passes in one model thread: auto = on (measured "
                         "faster under concurrency on CPU; default %(default)s)")
    model_options(sv)
    sv.set_defaults(func=cmd_serve)

    rp = sub.add_parser("report", parents=[common], help="turn a scan's JSON lines into an HTML review page or CSV",
                        description="-o: a self-contained HTML review page of the flag and review results "
                                    "(thumbnails in the sibling folder REPORT_files/). --csv: one row per result "
                                    "(top character, its strongest segment, other characters, error, sha256).")
    rp.add_argument("results", metavar="RESULTS.jsonl")
    rp.add_argument("-o", "--out", metavar="REPORT.html", help="HTML review report to write")
    rp.add_argument("--csv", metavar="FILE", help="CSV file to write")
    rp.add_argument("--index", help="index the results came from (adds its thresholds to the score charts)")
    rp.add_argument("--no-thumbnails", action="store_true", help="no frame or reference images (faster)")
    rp.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", parents=[common], help="make sample art and videos, build an index, scan (offline)")
    d.add_argument("--out", default="mamori-demo", help="folder for the demo's data and results (default %(default)s)")
    d.add_argument("--backbone", help="backbone to use (default: clip-vit-b32 if its weights are available, "
                                      "else effnet-lite0-imagenet)")
    d.set_defaults(func=cmd_demo)
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


if __name__ == "__main__":
    sys.exit(main())
