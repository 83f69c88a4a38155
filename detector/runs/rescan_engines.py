"""How `mamori rescan` spreads stored videos over workers (the scan engines' counterparts).

- `rescan_threads` (`--workers N`): N threads sharing one `Rescanner`, one stored video each.
- `rescan_ray` (`--engine ray`): shards are independent (`index.scanstore`), so each Ray actor
  takes a whole shard at a time (a `ShardJob`: the shard's catalogue rows as the driver read them
  at the start, so the driver knows every video it must answer for) and returns its videos'
  results; the store must be on storage every node sees at the same path (like the inputs of
  `scan --engine ray`). The actors (no model: a `Rescanner` each), their replacement when one
  dies and the retry are the scan engine's (`detector.runs.engines.ray_map`).
Any failure on one video (a damaged record, a bug) becomes that video's `error` result; a shard
whose worker died twice (or whose task failed) gives an `error` line for each of its videos,
with the video's own path and sha256. The caller holds the store's lock shared meanwhile
(`ScanStore.reading`), so no compaction moves the records.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from detector.match.results import Result
from detector.runs.engines import in_threads, ray_map
from detector.runs.rescan import Rescanner, Selection, rescan_entry
from index.scanstore import ScanStore, StoreEntry

__all__ = ["ShardJob", "rescan_one", "rescan_ray", "rescan_threads"]


def rescan_one(det: Rescanner, store: ScanStore, entry: StoreEntry, selection: Selection) -> dict[str, Any]:
    """One stored video's result dict; never raises for the video."""
    try:
        return rescan_entry(det, store, entry, selection).to_dict()
    except Exception as exc:  # noqa: BLE001 - a video's failure is its result
        return _failed(entry, str(store.path), exc)


def _failed(entry: StoreEntry, store: str, exc: BaseException, kind: str | None = None,
            error: str | None = None) -> dict[str, Any]:
    failed = Result.failed(entry.path, exc, kind=kind)
    return dataclasses.replace(failed, sha256=entry.sha256, rescan={"store": store},
                               error=error or failed.error).to_dict()


@dataclass(frozen=True)
class ShardJob:
    """One shard of a Ray rescan (`detector.runs.engines.RayJob`): its videos, as catalogued."""

    store: str
    shard: str
    entries: tuple[StoreEntry, ...]

    def task(self) -> tuple[StoreEntry, ...]:
        return self.entries

    def lines(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The shard's videos' result dicts (`_RescanWorker.score`)."""
        return value

    def failed(self, exc: BaseException, died: bool) -> list[dict[str, Any]]:
        """An `error` line per video of the shard (kind `worker` when its worker died twice)."""
        cause = exc if died else (getattr(exc, "cause", None) or exc)
        why = (f"the Ray worker rescanning its shard {self.shard} died, on two workers" if died
               else str(cause).strip().splitlines()[0] if str(cause).strip() else "")
        return [_failed(e, self.store, cause, "worker" if died else "internal", f"{type(cause).__name__}: {why}")
                for e in self.entries]

    def __str__(self) -> str:
        return f"shard {self.shard} ({len(self.entries)} videos)"


def rescan_threads(det: Rescanner, store: ScanStore, entries: Iterable[StoreEntry], selection: Selection,
                   workers: int = 1) -> Generator[dict[str, Any], None, None]:
    """Results of `entries` in completion order, at most 2 x workers in flight (each worker thread
    with its share of FAISS's OpenMP threads: `detector.runs.engines.in_threads`)."""
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

    def score(self, entries: tuple[StoreEntry, ...]) -> list[dict[str, Any]]:
        extra = self.extra
        store = ScanStore.open(extra["store"])
        names = extra.get("names")
        selection = Selection(frozenset(names) if names is not None else None)
        return [rescan_one(self.det, store, e, selection) for e in entries]


def rescan_ray(index: str | Path, options: dict[str, Any], store: ScanStore, selection: Selection,
               entries: Iterable[StoreEntry], workers: int,
               address: str | None = None) -> Generator[dict[str, Any], None, None]:
    """Results of every video of `entries` (in shard order), one shard per Ray task, in completion order."""
    where = str(Path(store.path).resolve())
    extra = {"store": where, "names": sorted(selection.names) if selection.names is not None else None}
    jobs = (ShardJob(where, shard, tuple(group)) for shard, group in groupby(entries, key=lambda e: e.shard))
    return ray_map(index, {**options, "rescan": extra}, jobs, workers, address, worker=_RescanWorker)
