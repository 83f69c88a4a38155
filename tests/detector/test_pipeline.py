from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import reference_art
from PIL import Image

from detector import Detector
from detector.frames import Frame
from detector.pipeline import prefetch, prepare_frames
from detector.synth import composite, draw_scene, write_video


def test_prefetch_keeps_order_and_reraises() -> None:
    assert list(prefetch(lambda: iter(range(50)), depth=2)) == list(range(50))

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("broken stream")

    got = []
    with pytest.raises(ValueError, match="broken stream"):
        for x in prefetch(failing):
            got.append(x)
    assert got == [1]


def test_prefetch_stops_and_closes_the_producer_when_the_consumer_stops() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    gen = prefetch(endless, depth=2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()  # joins the producer thread
    assert closed.is_set()
    assert not any(t.name == "mamori-prefetch" for t in threading.enumerate())


class _NoModel:
    """Stands in for RegionEmbedder: records which frames were prepared."""

    def __init__(self) -> None:
        self.prepared = 0

    def prepare_frame(self, image: Image.Image) -> tuple[object, list[tuple[int, int, int, int]]]:
        self.prepared += 1
        return object(), [(0, 0, image.width, image.height)]


def test_blank_and_repeated_frames_are_not_prepared() -> None:
    scene = draw_scene("pipe", 320, 180)
    noisy = Image.fromarray(np.clip(np.asarray(scene, np.int16) + np.random.default_rng(0).integers(
        -1, 2, (180, 320, 3)), 0, 255).astype(np.uint8))
    other, _ = composite(scene, reference_art("akane").convert("RGBA"), height_frac=0.5, x_frac=0.5)
    images = [Image.new("RGB", (320, 180), "black"), scene, noisy, other, Image.new("RGB", (320, 180), (30, 90, 200)),
              scene]
    emb = _NoModel()
    frames = (Frame(i, i * 0.5, im) for i, im in enumerate(images))
    kinds = [p.kind for p in prepare_frames(frames, emb, nearcopy=False)]  # type: ignore[arg-type]
    # the last scene follows a blank frame but differs from the last *embedded* one (`other`)
    assert kinds == ["blank", "new", "repeat", "new", "blank", "new"]
    assert emb.prepared == 3
    frames = (Frame(i, i * 0.5, im) for i, im in enumerate(images))
    assert [p.kind for p in prepare_frames(frames, emb, nearcopy=False, skip=False)] == ["new"] * 6  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def held_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Held shots (a still scene, then the character held still), black frames between them."""
    path = tmp_path_factory.mktemp("held") / "held.mp4"
    scene = draw_scene("held", 640, 360)
    shot, _ = composite(scene, reference_art("akane").convert("RGBA"), height_frac=0.6, x_frac=0.6)
    black = Image.new("RGB", (640, 360), "black")
    write_video(path, [scene] * 12 + [black] * 6 + [shot] * 18 + [black] * 6 + [scene] * 6, fps=6)
    return path


def test_skipping_repeats_gives_the_same_result(index_dir: Path, held_clip: Path) -> None:
    fast = Detector.open(index_dir, precision="fp32").score_video(held_clip, fps=4)
    full = Detector.open(index_dir, precision="fp32", skip_repeats=False).score_video(held_clip, fps=4)
    a, b = fast.to_dict(), full.to_dict()
    assert a["verdict"] == b["verdict"] == "flag" and a["frames"] == b["frames"] == 32
    assert [c["character"] for c in a["characters"]] == [c["character"] for c in b["characters"]]
    assert a["characters"][0]["character"] == "akane"
    for ca, cb in zip(a["characters"], b["characters"]):
        assert ca["score"] == pytest.approx(cb["score"], abs=0.01)
        assert [(s["start"], s["end"], s["reference"], s["channel"]) for s in ca["segments"]] == \
               [(s["start"], s["end"], s["reference"], s["channel"]) for s in cb["segments"]]
