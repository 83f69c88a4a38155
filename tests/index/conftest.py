"""Fixtures shared by the index tests: three one-colour characters (red has two references)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import COLOURS
from PIL import Image


@pytest.fixture
def refs(tmp_path: Path) -> Path:
    root = tmp_path / "refs"
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), rgb).save(root / name / "a.png")
    Image.new("RGB", (8, 8), (250, 5, 5)).save(root / "red" / "b.png")
    return root
