"""`detector.runs.engines.in_threads`: what each worker thread is given."""

from __future__ import annotations


def test_worker_threads_each_get_their_share_of_faiss_threads() -> None:
    import faiss

    from detector.runs.engines import in_threads

    main = faiss.omp_get_max_threads()
    got = list(in_threads(lambda _: {"n": faiss.omp_get_max_threads()}, range(4), 2))
    assert [r["n"] for r in got] == [max(1, main // 2)] * 4
    assert faiss.omp_get_max_threads() == main  # the caller's own count is untouched
