"""Several frames' regions searched at once (`split_matrix`, used by `mamori rescan`) give each
frame exactly the evidence of a search of that frame alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.match.evidence import frame_evidence, region_matrix, split_matrix
from index.store import IndexStore


def test_split_matrix_gives_each_frame_its_own_evidence(index_dir: Path) -> None:
    store = IndexStore.open(index_dir)
    rng = np.random.default_rng(0)
    refs = np.asarray(store.data.vectors, np.float32)
    counts = [5, 1, 9]
    # regions near references (real hits) mixed with noise, so frames see different characters
    frames = [refs[rng.integers(0, len(refs), n)] + 0.6 * rng.standard_normal((n, refs.shape[1])).astype(np.float32)
              for n in counts]
    boxes = [[(i, i, i + 10, i + 10) for i in range(n)] for n in counts]
    parts = split_matrix(region_matrix(store, np.concatenate(frames)), counts)
    found = 0
    for vecs, bx, part in zip(frames, boxes, parts, strict=True):
        alone = frame_evidence(store, 1.0, vecs, bx)
        batched = frame_evidence(store, 1.0, vecs, bx, matrix=part)
        assert alone.hits.keys() == batched.hits.keys()
        for c, h in alone.hits.items():
            b = batched.hits[c]
            assert (h.reference.id, h.box) == (b.reference.id, b.box)
            assert np.isclose(h.normalised, b.normalised, atol=1e-6) and np.isclose(h.score, b.score, atol=1e-6)
        found += len(alone.hits)
    assert found > 0
