"""numpy's OpenBLAS is put on one thread only by the commands where that was measured to help
(`scan`, `rescan`: the matcher's small products, `index.local.quiet_blas`), not by `index build`,
whose calibration does large products (issue 27, point 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from index.local import QUIET_BLAS_ENV

_CODE = """
import json, sys
import cv2, numpy  # loaded first, so the counts list the same libraries with and without a command
from threadpoolctl import threadpool_info
from detector.cli import main
code = main(sys.argv[1:]) if len(sys.argv) > 1 else 0
print(json.dumps([code, [i["num_threads"] for i in threadpool_info()
                         if i.get("internal_api") == "openblas" and i.get("threading_layer") == "pthreads"]]))
"""


def _threads_after(*args: object, env: dict[str, str] | None = None) -> tuple[int, list[int]]:
    """The exit status of `mamori ARGS` run in a fresh process, and its numpy OpenBLAS thread counts after."""
    base = {k: v for k, v in os.environ.items() if k != QUIET_BLAS_ENV}
    proc = subprocess.run([sys.executable, "-c", _CODE, *map(str, args)], capture_output=True, text=True, timeout=600,
                          env={**base, "HF_HUB_OFFLINE": "1", **(env or {})}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    code, counts = json.loads(proc.stdout.splitlines()[-1])
    return int(code), list(counts)


def test_index_build_keeps_blas_threads_and_scan_quiets_them(refs_dir: Path, background_dir: Path,
                                                            clips: dict[str, Path], index_dir: Path,
                                                            tmp_path: Path) -> None:
    _, default = _threads_after()
    if not default or max(default) < 2:
        pytest.skip("numpy's OpenBLAS is not a multi-threaded pthreads build here")
    code, counts = _threads_after("index", "build", refs_dir, "--out", tmp_path / "index", "--backbone",
                                  "effnet-lite0-imagenet", "--background", background_dir, "-q")
    assert code == 0 and counts == default  # the self-check ran the matcher; calibration kept its threads
    code, counts = _threads_after("scan", clips["positive"], "--index", index_dir, "-q")
    assert code == 1 and counts and all(n == 1 for n in counts)  # verification ran: one thread
    code, counts = _threads_after("scan", clips["positive"], "--index", index_dir, "-q",
                                  env={QUIET_BLAS_ENV: "0"})
    assert code == 1 and counts == default  # opted out
