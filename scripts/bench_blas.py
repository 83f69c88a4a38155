"""`mamori index build` with numpy's OpenBLAS left alone vs put on one thread (issue 27, point 9).

`index.local.quiet_blas` (numpy's OpenBLAS on one thread for the rest of the process) is asked for
by `scan` and `rescan` only; before, the `mamori` command set MAMORI_QUIET_BLAS=1 for every
command, so `index build`'s self-check (the first matcher call) put calibration on one thread.
This script times the same build, through the command line, in one run, interleaved:
    default               the command as shipped (no one-thread BLAS in `index build`)
    MAMORI_QUIET_BLAS=0   opted out explicitly (must be the same as default)
    MAMORI_QUIET_BLAS=1   forced, i.e. what every command did before

    python scripts/bench_blas.py [--manifest ../shared/eval/dev/manifest.csv]
        [--background ../shared/eval/dev/background] [--backbone effnet-lite0-imagenet] [--repeats 2] [--reverse]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from index.local import QUIET_BLAS_ENV

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "eval" / "dev"
MAMORI = [sys.executable, "-m", "detector.cli"]
SETTINGS = {"default": None, f"{QUIET_BLAS_ENV}=0": "0", f"{QUIET_BLAS_ENV}=1": "1"}


def build(args: argparse.Namespace, out: Path, quiet: str | None) -> tuple[float, float]:
    """One `index build`: (wall, CPU) seconds."""
    env = {k: v for k, v in os.environ.items() if k != QUIET_BLAS_ENV}
    if quiet is not None:
        env[QUIET_BLAS_ENV] = quiet
    shutil.rmtree(out, ignore_errors=True)
    t0, r0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([*MAMORI, "index", "build", "--manifest", str(args.manifest), "--background",
                           str(args.background), "--backbone", args.backbone, "--out", str(out), "-q"],
                          capture_output=True, text=True, env={**env, "HF_HUB_OFFLINE": "1",
                                                               "PYTHONPATH": str(ROOT)}, check=False)
    if proc.returncode != 0:
        sys.exit(f"index build failed:\n{proc.stderr[-2000:]}")
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.monotonic() - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, default=DEV / "manifest.csv")
    p.add_argument("--background", type=Path, default=DEV / "background")
    p.add_argument("--backbone", default="effnet-lite0-imagenet")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--reverse", action="store_true", help="run the settings in the opposite order (drift check)")
    args = p.parse_args()
    order = list(SETTINGS)[::-1] if args.reverse else list(SETTINGS)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in order}
    with tempfile.TemporaryDirectory(prefix="bench-blas-") as tmp:
        for r in range(args.repeats):
            for name in order:  # interleaved: drift on a shared machine hits each alike
                times[name].append(build(args, Path(tmp) / "index", SETTINGS[name]))
                print(f"run {r + 1} {name}: {times[name][-1][0]:.1f} s wall, {times[name][-1][1]:.1f} s CPU",
                      flush=True)
    print(f"\ncores: {len(os.sched_getaffinity(0))}; index build --backbone {args.backbone}, "
          f"{args.repeats} run(s) each, median")
    print("| setting | wall s | CPU s |\n|---|---|---|")
    for name, runs in times.items():
        print(f"| {name} | {statistics.median(w for w, _ in runs):.1f} | {statistics.median(c for _, c in runs):.1f} |")


if __name__ == "__main__":
    main()
