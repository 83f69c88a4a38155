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


def test_repeats_and_known_blank_frames_are_not_prepared() -> None:
    scene = draw_scene("pipe", 320, 180)
    noisy = Image.fromarray(np.clip(np.asarray(scene, np.int16) + np.random.default_rng(0).integers(
        -1, 2, (180, 320, 3)), 0, 255).astype(np.uint8))
    other, _ = composite(scene, reference_art("akane").convert("RGBA"), height_frac=0.5, x_frac=0.5)
    black, blue = Image.new("RGB", (320, 180), "black"), Image.new("RGB", (320, 180), (30, 90, 200))
    near_black = Image.new("RGB", (320, 180), (1, 1, 2))
    images = [black, scene, noisy, other, blue, scene, near_black, blue]
    emb = _NoModel()
    frames = (Frame(i, i * 0.5, im) for i, im in enumerate(images))
    got = list(prepare_frames(frames, emb, nearcopy=False))  # type: ignore[arg-type]
    # the second scene follows a blank frame but differs from the last *embedded* one (`other`)
    assert [p.kind for p in got] == ["blank", "new", "repeat", "new", "blank", "new", "blank", "blank"]
    # each flat colour is prepared once; a near-identical flat frame reuses it
    assert [p.pixels is not None for p in got] == [True, True, False, True, True, True, False, False]
    assert got[0].key == got[6].key != got[4].key == got[7].key
    assert emb.prepared == 5
    frames = (Frame(i, i * 0.5, im) for i, im in enumerate(images))
    assert [p.kind for p in prepare_frames(frames, emb, nearcopy=False, skip=False)] == ["new"] * 8  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def held_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Held shots (a still scene, then the character held still), black frames between them."""
    path = tmp_path_factory.mktemp("held") / "held.mp4"
    scene = draw_scene("held", 640, 360)
    shot, _ = composite(scene, reference_art("akane").convert("RGBA"), height_frac=0.6, x_frac=0.6)
    black = Image.new("RGB", (640, 360), "black")
    write_video(path, [scene] * 12 + [black] * 6 + [shot] * 18 + [black] * 6 + [scene] * 6, fps=6)
    return path


@pytest.fixture(scope="module")
def lone_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One frame with the character between black frames: its score averages in a black frame's
    evidence (SUPPORT_FRAMES = 2), so skipping black frames must keep their evidence."""
    path = tmp_path_factory.mktemp("lone") / "lone.mp4"
    scene = draw_scene("lone", 640, 360)
    shot, _ = composite(scene, reference_art("akane").convert("RGBA"), height_frac=0.6, x_frac=0.6)
    black = Image.new("RGB", (640, 360), "black")
    write_video(path, [black] * 6 + [shot] + [black] * 5, fps=4)
    return path


# The lone clip checks the embedding channel's temporal averaging (verify=False): with geometric
# verification on, its one frame holds the reference art itself (~30 inliers) and may be verified.
@pytest.mark.parametrize("clip, frames, verdict, verify",
                         [("held_clip", 32, "flag", True), ("lone_clip", 12, "pass", False)])
def test_skipping_repeats_gives_the_same_result(index_dir: Path, clip: str, frames: int, verdict: str, verify: bool,
                                                request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(clip)
    fast = Detector.open(index_dir, precision="fp32", verify=verify).score_video(path, fps=4)
    full = Detector.open(index_dir, precision="fp32", skip_repeats=False, verify=verify).score_video(path, fps=4)
    a, b = fast.to_dict(), full.to_dict()
    assert a["verdict"] == b["verdict"] == verdict and a["frames"] == b["frames"] == frames
    # the lone clip's score averages its one character frame with a black frame's weak evidence
    assert a["score"] == pytest.approx(b["score"], abs=0.01) and b["score"] > 0.05
    assert [c["character"] for c in a["characters"]] == [c["character"] for c in b["characters"]]
    assert verdict == "pass" or a["characters"][0]["character"] == "akane"
    for ca, cb in zip(a["characters"], b["characters"]):
        assert ca["score"] == pytest.approx(cb["score"], abs=0.01)
        assert [(s["start"], s["end"], s["reference"], s["channel"]) for s in ca["segments"]] == \
               [(s["start"], s["end"], s["reference"], s["channel"]) for s in cb["segments"]]
