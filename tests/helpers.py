"""Helpers shared by the tests (importable because pyproject sets pythonpath = ["tests"])."""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw, ImageOps

from detector.media.synth import draw_character, draw_scene

PROTECTED = ["akane", "benkei", "chiyo"]
_SCRIPT = Path(sys.executable).with_name("mamori")  # the installed console script, as a user runs it
MAMORI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "detector.cli"]


#: one-colour characters of the index tests (`tests/index/conftest.py`: `refs`)
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}

def run_cli(*args: str, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `mamori` CLI in a subprocess (same interpreter as the tests)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*MAMORI, *map(str, args)], check=False, capture_output=True, text=True, timeout=timeout,
                          env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"mamori {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def reference_art(name: str, pose: int = 0) -> Image.Image:
    """A character drawn on a plain panel, like a piece of licensed portrait art (RGB)."""
    fig = draw_character(name, 256, pose=pose)
    panel = Image.new("RGB", (256, 256), (236, 228, 210))
    panel.paste(fig, (0, 0), fig)
    return panel


def detailed_art(seed: str, size: int = 256) -> Image.Image:
    """Art with plenty of corners and small details (like painted character art), on a plain panel."""
    r = random.Random(seed)
    im = Image.new("RGB", (size, size), (236, 228, 210))
    d = ImageDraw.Draw(im)
    for _ in range(160):
        x, y, s = r.uniform(20, size - 20), r.uniform(20, size - 20), r.uniform(4, 22)
        pts = [(x + r.uniform(-s, s), y + r.uniform(-s, s)) for _ in range(r.randint(3, 5))]
        d.polygon(pts, fill=tuple(r.randrange(256) for _ in range(3)), outline=(20, 20, 20))
    return im


def jpeg(img: Image.Image, quality: int = 70) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def pasted(art: Image.Image, *, height_frac: float = 0.3, angle: float = 8.0,
           mirror: bool = False) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The art rotated, scaled to `height_frac` of a cluttered 640x360 scene, pasted, JPEG'd."""
    scene = draw_scene("verify-clutter")
    fig = ImageOps.mirror(art) if mirror else art
    fig = fig.convert("RGBA").rotate(angle, resample=Image.BICUBIC, expand=True)
    h = round(scene.height * height_frac)
    fig = fig.resize((round(fig.width * h / fig.height), h), Image.LANCZOS)
    x0, y0 = 380, 120
    scene.paste(fig, (x0, y0), fig)
    return jpeg(scene), (x0, y0, x0 + fig.width, y0 + fig.height)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving_copy(index: Path, root: Path, tokens: dict[str, str], *args: str) -> Iterator[dict[str, Any]]:
    """`serving` on a copy of `index` in `root/index` (for tests that change it), with a tokens file
    of `tokens` ({token: "score,admin"}); yields `serving`'s dict plus "index": the copy."""
    copy = root / "index"
    shutil.copytree(index, copy)
    (root / "tokens.txt").write_text("".join(f"{t} {scopes}\n" for t, scopes in tokens.items()))
    with serving(copy, root, "--tokens", str(root / "tokens.txt"), *args) as srv:
        yield {**srv, "index": copy}


@contextlib.contextmanager
def serving(index: Path, root: Path, *args: str) -> Iterator[dict[str, Any]]:
    """The real `mamori serve` on a free loopback port, ready: {"base", "port", "log", "proc"}.

    Its temporary folder is `root/tmp` (uploads land there and must not stay); its log is
    `root/server.log`. Stopped when the block ends."""
    port = free_port()
    (root / "tmp").mkdir(exist_ok=True)
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen([*MAMORI, "serve", "--index", str(index), "--port", str(port), *args],
                                stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(root / "tmp")})
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/v1/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("server did not become ready:\n" + (root / "server.log").read_text()[-3000:])
            time.sleep(0.3)
        try:
            yield {"base": base, "port": port, "log": root / "server.log", "proc": proc}
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
