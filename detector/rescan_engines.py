"""How `mamori rescan` spreads stored videos over workers (the scan engines' counterparts).

- `rescan_threads` (`--workers N`): N threads sharing one `Rescanner`, one stored video each.
- `rescan_ray` (`--engine ray`): shards are independent (`index.scanstore`), so each Ray actor
  takes a whole shard at a time and returns its videos' results; the store must be on storage
  every node sees at the same path (like the inputs of `scan --engine ray`). The actors (no
  model: a `Rescanner` each), their replacement when one dies and the retry are the scan engine's
  (`detector.engines.scan_ray`).
Any failure on one video (a damaged record, a bug) becomes that video's `error` result.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Collection, Generator, Iterable
from pathlib import Path
from typing import Any

from detector.engines import in_threads, scan_ray
from detector.rescan import Rescanner, Selection, rescan_entry
from detector.results import Result
from index.scanstore import ScanStore, StoreEntry

__all__ = ["rescan_one", "rescan_ray", "rescan_threads"]


def rescan_one(det: Rescanner, store: ScanStore, entry: StoreEntry, selection: Selection) -> dict[str, Any]:
    """One stored video's result dict; never raises for the video."""
    try:
        return rescan_entry(det, store, entry, selection).to_dict()
    except Exception as exc:  # noqa: BLE001 - a video's failure is its result
        failed = Result.failed(entry.path, exc)
        return dataclasses.replace(failed, sha256=entry.sha256, rescan={"store": str(store.path)}).to_dict()


def rescan_threads(det: Rescanner, store: ScanStore, entries: Iterable[StoreEntry], selection: Selection,
                   workers: int = 1) -> Generator[dict[str, Any], None, None]:
    """Results of `entries` in completion order, at most 2 x workers in flight (each worker thread
    with its share of FAISS's OpenMP threads: `detector.engines.in_threads`)."""
    return in_threads(lambda e: rescan_one(det, store, e, selection), entries, workers, "mamori-rescan")


class _RescanWorker:
    """A Ray actor: a `Rescanner` on a private copy of the index, rescanning the store shard by shard."""

    def __init__(self, index_files: dict[str, bytes], options: dict[str, Any], threads: int, cwd: str) -> None:
        from index.store import restore_snapshot

        if os.path.isdir(cwd):  # relative paths in the store mean the same files as on the driver
            os.chdir(cwd)
        import faiss

        from index.local import quiet_blas

        faiss.omp_set_num_threads(threads)  # each actor its share of the cores
        quiet_blas()  # a process of mamori's (`index.local.quiet_blas`)
        self._dir = tempfile.TemporaryDirectory(prefix="mamori-index-")
        self.extra: dict[str, Any] = options["rescan"]
        self.det = Rescanner.open(restore_snapshot(index_files, self._dir.name), verify=options["verify"])

    def ready(self) -> bool:
        return True

    def score(self, shard: str) -> list[dict[str, Any]]:
        extra = self.extra
        store = ScanStore.open(extra["store"])
        names = extra.get("names")
        selection = Selection(frozenset(names) if names is not None else None)
        skip = {tuple(k) for k in extra.get("skip", ())}
        return [rescan_one(self.det, store, e, selection) for e in store.entries(shard)
                if (e.path, e.sha256) not in skip]


def rescan_ray(index: str | Path, options: dict[str, Any], store: ScanStore, selection: Selection,
               shards: Iterable[str], workers: int, address: str | None = None,
               skip: Collection[tuple[str, str]] = ()) -> Generator[dict[str, Any], None, None]:
    """Results of every video of `shards`, one shard per Ray task, in completion order."""
    extra = {"store": str(Path(store.path).resolve()),
             "names": sorted(selection.names) if selection.names is not None else None, "skip": sorted(skip)}
    jobs = ((Path(shard), None) for shard in shards)
    return scan_ray(index, {**options, "rescan": extra}, jobs, workers, address, worker=_RescanWorker)
