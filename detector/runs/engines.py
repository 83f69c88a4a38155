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
  cluster they must be on storage every node sees at the same path. An actor whose process dies
  is replaced by a new one (or leaves the pool if none can start) and its input is retried once,
  on the next free actor; if that one dies too, the input's result is an `error` of kind
  `worker`, which `scan --resume --retry-errors` scans again. The pool (`ray_map`) is generic:
  it takes jobs and an actor class, and each `RayJob` says what its actor gets, which result lines
  come back and which lines a failed job gives (`VideoJob` here; other jobs live with their
  engines, e.g. `detector.runs.rescan_engines`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol, TypeVar

from detector.errors import ConfigError, DetectorError, UnreadableMediaError
from detector.match.results import Result
from detector.media.files import FileChangedError, hash_file, input_sha, stamp
from detector.runs.ray_auth import warn_without_token_auth

__all__ = ["Job", "RayJob", "VideoJob", "in_threads", "ray_map", "scan_ray", "scan_threads", "score_one"]

T = TypeVar("T")

log = logging.getLogger("mamori.engines")

#: (path, its sha256 when the caller already has it, else None). Workers hash each input
#: themselves (`score_one`); the caller's hash goes into the result of an input whose worker died.
Job = tuple[Path, str | None]


class RayJob(Protocol):
    """A unit of work for the Ray pool (`ray_map`): the pool sends `task()` to a worker's `score`
    and turns what comes back into result lines with `lines`, or `failed`; it knows no more of it."""

    def task(self) -> Any:
        """What the actor's `score` method is called with."""

    def lines(self, value: Any) -> list[dict[str, Any]]:
        """The result lines of what the actor's `score` returned for this job."""

    def failed(self, exc: BaseException, died: bool) -> list[dict[str, Any]]:
        """The result lines of a job whose worker died twice (`died`) or whose task raised."""


def _score_stamped(det: Any, path: Path) -> tuple[Result, bytes | None] | None:
    """The input's result with the sha256 of the bytes scored, or None when the file changed
    between its stamp (taken before hashing) and the end of scoring (`detector.media.files`). With
    `det.recording` set (`scan --store`), also the video's store record (`detector.recording`)."""
    try:
        sha, before = hash_file(path)
    except FileChangedError:
        return None
    except Exception as exc:  # noqa: BLE001 - an input's failure is its result, whatever it is
        return Result.failed(str(path), exc), None
    recorder = None
    try:
        if getattr(det, "recording", None) is not None:
            from detector.recording import FrameRecorder

            recorder = FrameRecorder(det.recording)
            result = det.score_file(path, observer=recorder)
        else:
            result = det.score_file(path)
    except Exception as exc:  # noqa: BLE001
        result = Result.failed(str(path), exc)
    try:
        after = stamp(path)
    except UnreadableMediaError:
        return None
    if after != before:
        return None
    record = recorder.record().to_bytes() if recorder is not None and result.verdict != "error" else None
    return dataclasses.replace(result, sha256=sha), record


def score_one(det: Any, path: Path) -> dict[str, Any]:
    """Score one input as a batch scan does: its result dict, with the sha256 of the bytes scored.

    Never raises for the input: any failure on it (unreadable media, a decoder or model error, a
    bug) becomes its `error` result, with `error_kind` saying which. A file that changes while it
    is scored is scored again, once. With `det.recording` set, a scored input's dict also holds
    its scan-store record under "_record" (bytes; the caller stores it and removes the key).
    """
    for _ in range(2):
        scored = _score_stamped(det, path)
        if scored is not None:
            out = scored[0].to_dict()
            if scored[1] is not None:
                out["_record"] = scored[1]
            return out
    exc = FileChangedError(f"{path}: changed while it was scanned, twice; scan it again when it is complete")
    # the hash as the file is now (None if unreadable): readers key lines by (path, sha256), so a
    # later successful line for the same content replaces this one
    return dataclasses.replace(Result.failed(str(path), exc, kind="changed"), sha256=input_sha(path)).to_dict()


def _thread_shares(workers: int) -> dict[str, Any]:
    """ThreadPoolExecutor arguments that give each worker thread its share of the cores: of
    PyTorch's CPU threads when PyTorch is loaded (`mamori rescan` runs no model), and of FAISS's
    OpenMP threads when FAISS is (both counts are per calling thread, so they are set in each
    worker thread: N workers each searching on every core would oversubscribe them)."""
    torch, faiss = sys.modules.get("torch"), sys.modules.get("faiss")
    if torch is None and faiss is None:
        return {}
    n_torch = max(1, torch.get_num_threads() // workers) if torch is not None else 0
    n_faiss = max(1, faiss.omp_get_max_threads() // workers) if faiss is not None else 0

    def share() -> None:
        if torch is not None:
            torch.set_num_threads(n_torch)
        if faiss is not None:
            faiss.omp_set_num_threads(n_faiss)

    return {"initializer": share}


def scan_threads(det: Any, jobs: Iterable[Job], workers: int = 1) -> Generator[dict[str, Any], None, None]:
    """Score `jobs` with `workers` threads sharing `det`; results in completion order.

    At most 2 x workers inputs are in flight, so a list of millions of paths is read lazily. When
    the caller stops early (Ctrl-C raises KeyboardInterrupt here or in the caller, which closes
    this generator), inputs not started are cancelled and running ones are abandoned, not waited
    for: their threads finish in the background (`mamori scan` then exits without joining them).
    """
    return in_threads(lambda job: score_one(det, job[0]), jobs, workers)


def in_threads(fn: Callable[[T], dict[str, Any]], items: Iterable[T], workers: int,
               name: str = "mamori-scan") -> Generator[dict[str, Any], None, None]:
    """`fn(item)` for each item on `workers` threads, results in completion order (`scan_threads`)."""
    if workers == 1:
        for item in items:
            yield fn(item)
        return
    # PyTorch's and FAISS's CPU thread counts are per calling thread (OpenMP): set them in each
    # worker thread, or every worker runs as many threads as there are cores and they fight over them
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, **_thread_shares(workers))
    pending: set[Future[dict[str, Any]]] = set()
    try:
        for item in items:
            pending.add(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


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
        from index.scancodec import StoreCodec
        from index.store import restore_snapshot

        if os.path.isdir(cwd):  # relative input paths mean the same files as on the driver
            os.chdir(cwd)
        import torch

        from index.local import quiet_blas

        torch.set_num_threads(threads)
        quiet_blas()  # a process of mamori's (`index.local.quiet_blas`)
        self._dir = tempfile.TemporaryDirectory(prefix="mamori-index-")
        options = dict(options)
        codec = options.pop("store_codec", None)  # `scan --store`: records travel back with results
        self.det = Detector.open(restore_snapshot(index_files, self._dir.name), **options)
        self.det.recording = StoreCodec.from_bytes(codec) if codec is not None else None

    def ready(self) -> bool:
        return True

    def score(self, path: str) -> dict[str, Any]:
        return score_one(self.det, Path(path))


class _RayPool:
    """The actors of a Ray scan and their running tasks.

    Why not Ray's own restarts: an actor that had died past `max_restarts` stayed in the pool and
    failed every input sent to it. Here an actor whose process dies is killed for good and a new
    one started in its place (its `ready` call is a task like the others); one that cannot start
    leaves the pool.
    """

    def __init__(self, ray: Any, make: Any, actors: list[Any]) -> None:
        self.ray, self._make = ray, make
        self.idle = list(actors)
        #: task -> (actor, job with its attempt number, or None for a new actor's `ready` call)
        self._tasks: dict[Any, tuple[Any, tuple[RayJob, int] | None]] = {}

    def busy(self) -> bool:
        return bool(self._tasks)

    def submit(self, job: RayJob, attempt: int) -> None:
        actor = self.idle.pop()
        self._tasks[actor.score.remote(job.task())] = (actor, (job, attempt))

    def _replace(self, dead: Any) -> None:
        self.ray.kill(dead, no_restart=True)
        new = self._make()
        self._tasks[new.ready.remote()] = (new, None)

    def next_done(self) -> tuple[RayJob, int, Any, bool] | None:
        """Wait for a task: (job, attempt, result dict or exception, whether its worker died), or
        None when the task was a new actor's `ready` (it joins the pool, or leaves it if it failed)."""
        ref = self.ray.wait(list(self._tasks), num_returns=1)[0][0]
        actor, task = self._tasks.pop(ref)
        try:
            value, died = self.ray.get(ref), False
        except self.ray.exceptions.RayTaskError as exc:  # raised by our code: the actor is fine
            value, died = exc, False
        except self.ray.exceptions.RayError as exc:  # the actor's process (or its node) died
            value, died = exc, True
        if task is None:
            if isinstance(value, BaseException):
                log.warning("a replacement Ray worker could not start: %s", _first_line(value))
                self.ray.kill(actor, no_restart=True)
            else:
                self.idle.append(actor)
            return None
        if died:
            log.warning("a Ray worker died scoring %s: %s; starting another", task[0], _first_line(value))
            self._replace(actor)
        else:
            self.idle.append(actor)
        return task[0], task[1], value, died


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


@dataclasses.dataclass(frozen=True)
class VideoJob:
    """One input of a Ray scan (`Job`'s path and sha256): the actor scores the path."""

    path: Path
    sha256: str | None = None

    def task(self) -> str:
        return str(self.path)

    def lines(self, value: dict[str, Any]) -> list[dict[str, Any]]:
        """The input's result dict (`score_one`)."""
        return [value]

    def failed(self, exc: BaseException, died: bool) -> list[dict[str, Any]]:
        """The `error` result of an input whose worker died on it twice (or whose task failed in Ray)."""
        cause = exc if died else (getattr(exc, "cause", None) or exc)
        result = Result.failed(str(self.path), cause, kind="worker" if died else "internal")
        why = "the Ray worker scoring it died, on two workers" if died else _first_line(cause)
        return [dataclasses.replace(result, error=f"{type(cause).__name__}: {why}",
                                    sha256=self.sha256 or input_sha(self.path)).to_dict()]

    def __str__(self) -> str:
        return str(self.path)


def _ray_results(pool: _RayPool, jobs: Iterable[RayJob]) -> Iterator[dict[str, Any]]:
    """Results of `jobs` on `pool`; the job of a worker that died is retried once, on the next
    free actor (the dead one's replacement is not free until it has loaded the model)."""
    it = iter(jobs)
    retry: deque[tuple[RayJob, int]] = deque()
    exhausted = False
    while True:
        while pool.idle and (retry or not exhausted):
            if retry:
                pool.submit(*retry.popleft())
            elif (job := next(it, None)) is None:
                exhausted = True
            else:
                pool.submit(job, 1)
        if not pool.busy():
            if retry or not exhausted:
                raise DetectorError("every Ray worker died and none could be started again")
            return
        done = pool.next_done()
        if done is None:
            continue
        job, attempt, value, died = done
        if not isinstance(value, BaseException):
            yield from job.lines(value)
        elif died and attempt == 1:
            retry.append((job, 2))
        else:
            yield from job.failed(value, died)


def _start_ray(ray: Any, address: str | None, cpus: int) -> bool:
    """Connect to `address` or start a private local Ray; whether this call started it. Warns on
    stderr when the connection has no token authentication (`detector.runs.ray_auth`)."""
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, cpus), include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot start or reach Ray ({address or 'local'}): {exc}") from exc
    warn_without_token_auth(ray, address)
    return True


def scan_ray(index: str | Path, options: dict[str, Any], jobs: Iterable[Job], workers: int,
             address: str | None = None, cpus_per_worker: float = 1.0) -> Generator[dict[str, Any], None, None]:
    """Score `jobs` on `workers` Ray actors (`ray_map` with `_ScanWorker`s); results in completion order."""
    return ray_map(index, options, (VideoJob(*job) for job in jobs), workers, address, cpus_per_worker)


def ray_map(index: str | Path, options: dict[str, Any], jobs: Iterable[RayJob], workers: int,
            address: str | None = None, cpus_per_worker: float = 1.0,
            worker: type = _ScanWorker) -> Generator[dict[str, Any], None, None]:
    """Run `jobs` on `workers` Ray actors of class `worker`; result lines in completion order.

    Args:
        options: keyword arguments of `Detector.open` (backbone, precision, device, fps, ...).
        address: an existing cluster (`ray://host:10001` or `host:6379`); None starts a private
            local Ray on this machine (node address 127.0.0.1; Ray's own servers still listen on
            all interfaces, with token authentication from Ray 2.52 unless RAY_AUTH_MODE turns it
            off) and stops it afterwards. Either way a connection without token authentication is
            warned about on stderr (`detector.runs.ray_auth`).
        cpus_per_worker: CPUs each actor reserves (and its PyTorch threads).

    Raises:
        ConfigError: Ray is not installed, the cluster cannot be reached, or the workers cannot
            load the detector.
        DetectorError: every worker died and none could be started again.
    """
    ray = _import_ray()
    from index.store import snapshot

    t0 = time.monotonic()
    files = snapshot(index)  # read before starting Ray: a bad index fails fast
    started = _start_ray(ray, address, int(workers * cpus_per_worker))
    try:
        files_ref = ray.put(files)
        del files
        actor_cls = ray.remote(num_cpus=cpus_per_worker, max_restarts=0, max_task_retries=0)(worker)
        threads, cwd = max(1, int(cpus_per_worker)), os.getcwd()

        def make() -> Any:
            return actor_cls.remote(files_ref, options, threads, cwd)

        actors = [make() for _ in range(workers)]
        try:
            ray.get([a.ready.remote() for a in actors])  # a model or index that fails to load stops here
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            raise ConfigError(f"Ray workers could not load the detector: {type(cause).__name__}: {cause}") from exc
        log.info("%d Ray workers ready in %.1fs", workers, time.monotonic() - t0)
        yield from _ray_results(_RayPool(ray, make, actors), jobs)
    finally:
        if started:
            ray.shutdown()
