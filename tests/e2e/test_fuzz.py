"""The fuzzer as CI runs it: 30 hostile inputs through the real CLI, every one answered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fuzz_30_inputs_one_line_each_no_crash_no_hang(index_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz_media.py"), "--n", "30", "--index",
                           str(index_dir), "--work", str(tmp_path), "--timeout", "90", "--json"],
                          check=False, capture_output=True, text=True, timeout=1200)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["inputs"] == 30 and summary["result_lines"] == 30, summary
    assert summary["crashes"] == [] and summary["hangs"] == [] and summary["inputs_without_one_line"] == 0, summary
    assert summary["verdicts"].get("error", 0) >= 5  # the broken ones are errors, not crashes
    assert proc.returncode == 0, proc.stderr
