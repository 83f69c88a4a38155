"""`index.local`: SIFT + RANSAC geometric verification, reference self-check, and storage in the index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import detailed_art, pasted, reference_art
from PIL import Image

from detector.match.verify import MIN_INLIERS, padded
from detector.media.synth import draw_scene
from index.local import VERIFIABLE, count_inliers, describe, reference_features, self_check, two_nearest
from index.store import IndexData, IndexStore, Reference, write_index


def test_a_transformed_copy_in_clutter_verifies_and_other_art_does_not() -> None:
    art, other = detailed_art("hero"), detailed_art("someone-else")
    frame, box = pasted(art)
    region = describe(frame.crop(padded(box, *frame.size)))
    assert len(region) >= 2 * MIN_INLIERS
    assert count_inliers(region, reference_features(art)["full"]) >= MIN_INLIERS
    assert max(count_inliers(region, f) for f in reference_features(other).values()) < MIN_INLIERS
    # the scene around the art alone does not verify it
    empty = describe(draw_scene("verify-clutter").crop(padded(box, 640, 360)))
    assert count_inliers(empty, reference_features(art)["full"]) < MIN_INLIERS


def test_a_mirrored_copy_verifies_through_the_mirror_view() -> None:
    art = detailed_art("hero")
    frame, box = pasted(art, mirror=True, angle=-5.0)
    region = describe(frame.crop(padded(box, *frame.size)))
    views = reference_features(art)
    assert count_inliers(region, views["mirror"]) >= MIN_INLIERS
    assert count_inliers(region, views["mirror"]) > count_inliers(region, views["full"])


def test_self_check_tells_detailed_art_from_flat_art() -> None:
    art = detailed_art("hero")
    assert self_check(art, reference_features(art)["full"]) >= VERIFIABLE
    flat = reference_art("akane")  # a few flat shapes: too few corners to expect verification
    assert self_check(flat, reference_features(flat)["full"]) < VERIFIABLE


def test_features_are_bounded_and_flat_images_have_none() -> None:
    f = describe(detailed_art("hero", 512))
    assert 0 < len(f) <= 500 and f.descriptors.dtype == np.uint8 and f.points.max() <= 320
    assert len(describe(Image.new("RGB", (300, 200), (40, 90, 200)))) == 0
    assert count_inliers(describe(Image.new("RGB", (50, 50))), f) == 0


def test_padded_box_is_clipped() -> None:
    assert padded((10, 10, 110, 50), 120, 60) == (0, 0, 120, 60)
    assert padded((40, 20, 80, 40), 640, 360) == (30, 15, 90, 45)


@pytest.mark.parametrize("quarantined", [False, True])
def test_local_features_round_trip_through_the_index(tmp_path: Path, quarantined: bool) -> None:
    art, flat = detailed_art("hero"), reference_art("akane")
    refs = {
        "ra": Reference(id="ra", sha256="a" * 64, character="hero", quarantine="generic" if quarantined else ""),
        "rb": Reference(id="rb", sha256="b" * 64, character="plain"),
    }
    local = {"ra": reference_features(art), "rb": reference_features(flat)}
    data = IndexData(
        backbone={"name": "test", "dim": 4}, references=refs, vectors=np.eye(4, dtype=np.float32)[:2],
        vector_refs=["ra", "rb"], vector_views=["full", "full"], characters={},
        background=np.zeros((0, 4), np.float32), background_groups=np.zeros(0, np.int32), thresholds={},
        local=local, local_check={"ra": self_check(art, local["ra"]["full"]), "rb": self_check(flat, local["rb"]["full"])},
    )
    write_index(tmp_path / "idx", data)
    store = IndexStore.open(tmp_path / "idx")
    got = store.data.local["ra"]["mirror"]
    assert np.array_equal(got.descriptors, local["ra"]["mirror"].descriptors)
    assert np.allclose(got.points, local["ra"]["mirror"].points)
    assert store.data.local_check == data.local_check
    # quarantined references are never matched, locally either
    assert len(store.local_features("hero")) == (0 if quarantined else 2)
    assert store.verifiable("hero") is not quarantined
    assert len(store.local_features("plain")) == 2 and not store.verifiable("plain")


def test_two_nearest_matches_a_full_sort() -> None:
    rng = np.random.default_rng(3)
    dist = rng.random((300, 200)).astype(np.float32)
    dist[5, [7, 9]] = -1.0  # a tie for the nearest: both distances are -1
    order = np.sort(dist, axis=1)
    best, first, second = two_nearest(dist.copy())
    assert np.array_equal(first, order[:, 0]) and np.array_equal(second, order[:, 1])
    assert np.array_equal(best, np.argmin(dist, axis=1))
    assert first[5] == second[5] == -1.0



def test_quiet_blas_puts_numpys_openblas_on_one_thread_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from threadpoolctl import threadpool_info

    from index import local

    def pthreads_openblas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info()
                if i.get("internal_api") == "openblas" and i.get("threading_layer") == "pthreads"]

    before = pthreads_openblas()
    monkeypatch.setattr(local, "_quiet", {"wanted": False, "limiter": None})
    monkeypatch.delenv(local.QUIET_BLAS_ENV, raising=False)
    art = detailed_art("hero")
    shot, box = pasted(art, height_frac=0.6)
    ref, region = describe(art), describe(shot.crop(padded(box, *shot.size)))
    count_inliers(region, ref)
    assert pthreads_openblas() == before  # not asked: left alone
    monkeypatch.setenv(local.QUIET_BLAS_ENV, "1")
    counts: list[int] = []
    threads = [threading.Thread(target=lambda: counts.append(count_inliers(region, ref))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(set(counts)) == 1 and counts[0] >= MIN_INLIERS  # four threads at once, the same answer
        assert pthreads_openblas() and all(n == 1 for n in pthreads_openblas())
        limiter = local._quiet["limiter"]
        count_inliers(region, ref)
        assert local._quiet["limiter"] is limiter  # applied once
    finally:
        if local._quiet["limiter"] is not None:
            local._quiet["limiter"].restore_original_limits()
    assert pthreads_openblas() == before
