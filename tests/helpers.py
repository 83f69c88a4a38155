"""Helpers shared by the tests (importable because pyproject sets pythonpath = ["tests"])."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from detector.synth import draw_character

PROTECTED = ["akane", "benkei", "chiyo"]
_SCRIPT = Path(sys.executable).with_name("mamori")  # the installed console script, as a user runs it
MAMORI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "detector.cli"]


def run_cli(*args: str, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `mamori` CLI in a subprocess (same interpreter as the tests)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*MAMORI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"mamori {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def reference_art(name: str, pose: int = 0) -> Image.Image:
    """A character drawn on a plain panel, like a piece of licensed portrait art (RGB)."""
    fig = draw_character(name, 256, pose=pose)
    panel = Image.new("RGB", (256, 256), (236, 228, 210))
    panel.paste(fig, (0, 0), fig)
    return panel
