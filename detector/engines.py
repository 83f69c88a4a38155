"""Scan engines: how a batch of inputs is spread over workers. All of them run the same
`score_one` on the same `Detector` code and yield result dicts (the JSON-line schema) in completion
order; the caller (`mamori scan`) writes and fsyncs each line, so `--resume` works with any engine.

- `scan_threads` (`--workers N`, the default engine): N scoring threads in this process sharing
  one Detector (one model in memory). Each thread runs its own decode-and-crop prefetch thread
  (`detector.pipeline`), and PyTorch's intra-op threads are split between the workers
  (cores // N each), so N videos are decoded and scored side by side.
- `scan_ray` (`--engine ray`): N Ray actors, each loading the Detector once. The index is read
  once (`index.store.snapshot`) and put in Ray's object store: it travels to each node once and
  the actors on that node read the same copy. Inputs are sent by path (relative paths are taken
  from the driver's working folder, which actors enter when it exists on their node), so on a
  cluster they must be on storage every node sees at the same path. A crashed actor is restarted and its input
  retried once; after that the input is an `error` result, like any unreadable file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from detector.errors import ConfigError, DetectorError
from detector.results import Result
from index.errors import IndexStoreError
from index.images import file_sha256

__all__ = ["Job", "scan_ray", "scan_threads", "score_one"]

log = logging.getLogger("mamori.engines")

#: (path, sha256 of its content or None to compute it)
Job = tuple[Path, str | None]

#: failures that make one input's `error` result instead of stopping the batch
_INPUT_ERRORS = (DetectorError, IndexStoreError, RuntimeError, OSError, ValueError, MemoryError)


def score_one(det: Any, path: Path, sha: str | None = None) -> dict[str, Any]:
    """Score one input as a batch scan does: its result dict, with the input's sha256 recorded.

    An unexpected failure on this input (a decoder or model error) becomes its `error` result.
    """
    if sha is None:
        try:
            sha = file_sha256(path)
        except OSError:
            sha = None  # unreadable: score_file reports why
    try:
        result = det.score_file(path)
    except _INPUT_ERRORS as exc:
        result = Result.failed(str(path), exc)
    return dataclasses.replace(result, sha256=sha).to_dict()


def _threads_per_worker(workers: int) -> int:
    return max(1, torch.get_num_threads() // workers)


def scan_threads(det: Any, jobs: Iterable[Job], workers: int = 1) -> Iterator[dict[str, Any]]:
    """Score `jobs` with `workers` threads sharing `det`; results in completion order.

    At most 2 x workers inputs are in flight, so a list of millions of paths is read lazily.
    """
    if workers == 1:
        for path, sha in jobs:
            yield score_one(det, path, sha)
        return
    # PyTorch's CPU thread count is per calling thread (OpenMP): set it in each worker thread, or
    # every worker runs as many threads as there are cores and they fight over them
    per_worker = _threads_per_worker(workers)
    pending: set[Future[dict[str, Any]]] = set()
    it = iter(jobs)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mamori-scan",
                                initializer=torch.set_num_threads, initargs=(per_worker,)) as pool:
            for path, sha in it:
                pending.add(pool.submit(score_one, det, path, sha))
                if len(pending) >= 2 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (f.result() for f in done)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
    finally:
        for f in pending:
            f.cancel()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--engine ray needs Ray: pip install 'mamori[ray]'") from exc
    return ray


class _ScanWorker:
    """A Ray actor's state: one Detector on a private copy of the index."""

    def __init__(self, index_files: dict[str, bytes], options: dict[str, Any], threads: int, cwd: str) -> None:
        from detector.api import Detector
        from index.store import restore_snapshot

        if os.path.isdir(cwd):  # relative input paths mean the same files as on the driver
            os.chdir(cwd)
        torch.set_num_threads(threads)
        self._dir = tempfile.TemporaryDirectory(prefix="mamori-index-")
        self.det = Detector.open(restore_snapshot(index_files, self._dir.name), **options)

    def ready(self) -> bool:
        return True

    def score(self, path: str, sha: str | None) -> dict[str, Any]:
        return score_one(self.det, Path(path), sha)


def scan_ray(index: str | Path, options: dict[str, Any], jobs: Iterable[Job], workers: int,
             address: str | None = None, cpus_per_worker: float = 1.0) -> Iterator[dict[str, Any]]:
    """Score `jobs` on `workers` Ray actors; results in completion order.

    Args:
        options: keyword arguments of `Detector.open` (backbone, precision, device, fps, ...).
        address: an existing cluster (`ray://host:10001` or `host:6379`); None starts a private
            local Ray on this machine (node address 127.0.0.1; Ray's own servers still listen on
            all interfaces, with its token authentication) and stops it afterwards.
        cpus_per_worker: CPUs each actor reserves (and its PyTorch threads).

    Raises:
        ConfigError: Ray is not installed or the cluster cannot be reached.
    """
    ray = _import_ray()
    from index.store import snapshot

    t0 = time.monotonic()
    files = snapshot(index)  # read before starting Ray: a bad index fails fast
    started = not ray.is_initialized()
    if started:
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=max(os.cpu_count() or 1, int(workers * cpus_per_worker)),
                         include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot start or reach Ray ({address or 'local'}): {exc}") from exc
    try:
        files_ref = ray.put(files)
        del files
        actor_cls = ray.remote(num_cpus=cpus_per_worker, max_restarts=2, max_task_retries=1)(_ScanWorker)
        threads = max(1, int(cpus_per_worker))
        actors = [actor_cls.remote(files_ref, options, threads, os.getcwd()) for _ in range(workers)]
        try:
            ray.get([a.ready.remote() for a in actors])  # a model or index that fails to load stops here
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            raise ConfigError(f"Ray workers could not load the detector: {type(cause).__name__}: {cause}") from exc
        log.info("%d Ray workers ready in %.1fs", workers, time.monotonic() - t0)
        idle = list(actors)
        running: dict[Any, tuple[Any, Job]] = {}
        it = iter(jobs)
        exhausted = False
        while True:
            while idle and not exhausted:
                job = next(it, None)
                if job is None:
                    exhausted = True
                    break
                actor = idle.pop()
                running[actor.score.remote(str(job[0]), job[1])] = (actor, job)
            if not running:
                return
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, (path, sha) = running.pop(ready[0])
            idle.append(actor)
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # the actor died on this input, and again on the retry
                cause = getattr(exc, "cause", None) or exc
                result = dataclasses.replace(Result.failed(str(path), cause), sha256=sha).to_dict()
            yield result
    finally:
        if started:
            ray.shutdown()
