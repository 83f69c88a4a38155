"""`PdqMatcher`: exact Hamming search of region hashes; only queries of usable quality are searched."""

from __future__ import annotations

import numpy as np

from index.nearcopy import PDQ_BYTES, PDQ_MIN_QUALITY, PDQ_THRESHOLD, PdqMatcher


def test_only_good_quality_queries_match_and_rows_map_back() -> None:
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 256, (4, PDQ_BYTES), dtype=np.uint8)
    # reference row 1 is too flat to search: it is never a match target
    matcher = PdqMatcher(refs, np.array([90, PDQ_MIN_QUALITY - 1, 90, 90]))
    assert len(matcher) == 3
    near = refs[2].copy()
    near[0] ^= 0b111  # 3 bits away from reference row 2
    queries = np.stack([near, near, refs[1], rng.integers(0, 256, PDQ_BYTES, dtype=np.uint8)])
    dist, rows = matcher.match(queries, np.array([90, PDQ_MIN_QUALITY - 1, 90, 90]))
    assert rows.tolist()[:3] == [2, -1, -1]
    assert dist[0] == 3 and dist[1] == PDQ_BYTES * 8 + 1  # the low-quality query was not searched
    assert rows[3] == -1 and dist[3] > PDQ_THRESHOLD  # a random hash is far from every reference
    empty_dist, empty_rows = matcher.match(queries[:1], np.array([0]))
    assert empty_rows.tolist() == [-1] and empty_dist.tolist() == [PDQ_BYTES * 8 + 1]
