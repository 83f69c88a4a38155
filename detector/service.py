"""The HTTP scorer (`mamori serve`): FastAPI + uvicorn, one loaded Detector behind every request.

    GET  /v1/health                 liveness (no auth)
    GET  /v1/ready                  200 once the index and the model are loaded, else 503 (no auth)
    GET  /v1/index                  backbone, counts, characters, thresholds, generation  [score]
    POST /v1/score                  an image or video (raw body or multipart `file`) -> Result [score]
    POST /v1/admin/references       multipart: `file` + character, franchise, rights_holder, license [admin]
                                    (an image already indexed: a no-op naming it in `duplicate_of`)
    DELETE /v1/admin/references/ID  remove one reference (id, sha256 or source path)      [admin]
    DELETE /v1/admin/characters/NAME  remove a character (takedown / opt-out)              [admin]
                                    (both delete uploaded art no remaining reference uses)
    POST /v1/admin/reload           re-open the index from disk                            [admin]
    GET  /metrics                   Prometheus counters and latency histogram (no auth)

Why it is built this way:
- *Atomic index switches*: each request takes the current `Detector` once and uses it to the
  end; an admin change writes a new index generation on disk (atomic, `index.store`), opens it,
  then replaces the reference. In-flight requests finish on the old index; a failed update leaves
  the old one serving. Every score reply names its index generation (`X-Mamori-Index-Generation`).
- *Limits before work*: uploads stream to a temporary folder (`detector.uploads`) with size and
  time limits; pixels, duration and frame counts are checked from headers before decoding; a
  deadline stops scoring between frames. Each refusal is a 4xx JSON error naming the limit.
- *Off the event loop, bounded*: scoring runs in a thread pool of `workers`; at most
  `workers + queue` requests are admitted, the next gets 503 with Retry-After. With batching on,
  the workers' forward passes are merged by one model thread (`detector.batching`). `auto` = on:
  measured on this 2-core CPU (`scripts/load_service.py`), 4 clients 2.39 req/s merged vs 2.09
  unmerged (p99 1.87 s vs 3.64 s), 1 client the same (2.25 vs 2.32). (Before the allocator used
  one arena, `detector.allocator`, merging measured slower on a CPU and `auto` was on for GPUs
  only.) The option stays so that a deployment can measure its own hardware.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from detector.api import Detector
from detector.backbones import Backbone, load_backbone
from detector.batching import Batcher
from detector.embedding import RegionEmbedder
from detector.errors import ConfigError, DetectorError, MediaLimitError, UnreadableMediaError
from detector.frames import DEFAULT_FPS
from detector.limits import Limits
from detector.uploads import ApiError, Upload, receive_upload
from index import IndexLockedError, IndexStore, IndexStoreError, ReferenceEntry, ReferenceNotFoundError
from index.build import RemovedReferences, add_upload, remove_references

__all__ = ["Limits", "ServiceConfig", "create_app", "read_tokens"]

log = logging.getLogger("mamori.service")
#: one JSON object per request (`mamori serve` prints these lines bare on stderr)
access_log = logging.getLogger("mamori.requests")
SCOPES = frozenset({"score", "admin"})


@dataclass
class ServiceConfig:
    index: Path
    tokens: dict[str, frozenset[str]] | None = None  # None: no auth (loopback only)
    limits: Limits = field(default_factory=Limits)
    workers: int = 2
    queue: int = 8
    batching: str = "auto"  # on, off, or auto (= on; see the module docstring)
    precision: str = "auto"
    device: str | None = None
    fps: float = DEFAULT_FPS


def read_tokens(path: str | Path) -> dict[str, frozenset[str]]:
    """Parse a tokens file: one `TOKEN SCOPE[,SCOPE]` per line; `#` comments and blank lines ignored.

    Raises:
        ConfigError: unreadable file, a malformed line, or an unknown scope.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read tokens file {path}: {exc.strerror}") from exc
    tokens: dict[str, frozenset[str]] = {}
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        scopes = frozenset(s.strip() for s in parts[1].split(",") if s.strip()) if len(parts) == 2 else frozenset()
        if len(parts) != 2 or not scopes or not scopes <= SCOPES:
            raise ConfigError(f"{path}:{n}: expected `TOKEN SCOPE[,SCOPE]` with scopes from {sorted(SCOPES)}")
        tokens[parts[0]] = scopes
    if not tokens:
        raise ConfigError(f"{path}: no tokens in the file")
    return tokens


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mamori_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("mamori_request_seconds", "request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.verdicts = Counter("mamori_verdicts", "score verdicts", ["verdict"], registry=self.registry)
        self.errors = Counter("mamori_errors", "refused or failed requests", ["error"], registry=self.registry)
        self.in_flight = Gauge("mamori_scoring_in_flight", "requests admitted for scoring", registry=self.registry)


class _State:
    """The loaded model and the current Detector, swapped atomically by admin changes."""

    def __init__(self, cfg: ServiceConfig):
        self.cfg = cfg
        self.detector: Detector | None = None
        self.backbone: Backbone | None = None
        self.batcher: Batcher | None = None
        self.load_error: str | None = None
        self.admin_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="mamori-score")
        self.slots = threading.BoundedSemaphore(cfg.workers + cfg.queue)
        self.metrics = _Metrics()

    def load(self) -> None:
        try:
            store = IndexStore.open(self.cfg.index)
            self.backbone = load_backbone(store.backbone["name"], precision=self.cfg.precision, device=self.cfg.device)
            if self.cfg.batching in ("on", "auto"):
                self.batcher = Batcher(self.backbone)
            self.detector = self._detector(store)
            log.info("ready: index %s (generation %s), backbone %s in %s on %s, batching %s", self.cfg.index,
                     store.manifest.get("generation"), self.backbone.name, self.backbone.precision,
                     self.backbone.device, "on" if self.batcher else "off")
        except Exception as exc:  # noqa: BLE001  (reported by /v1/ready; the process stays up to say why)
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("cannot load: %s", self.load_error)

    def _detector(self, store: IndexStore) -> Detector:
        assert self.backbone is not None
        lim = self.cfg.limits
        det = Detector(store, self.backbone, fps=self.cfg.fps, max_frames=lim.max_frames, max_pixels=lim.max_pixels,
                       max_duration=lim.max_duration, max_frames_total=lim.max_frames_total)
        if self.batcher is not None:
            det.embed_pixels = self.batcher.embed_pixels
        return det

    def reload(self) -> Detector:
        """Open the index's current generation and switch readers to it (caller holds admin_lock)."""
        self.detector = self._detector(IndexStore.open(self.cfg.index))
        return self.detector

    def current(self) -> Detector:
        det = self.detector
        if det is None:
            raise ApiError(503, "NotReady", self.load_error or "the index and model are still loading",
                           headers={"Retry-After": "5"})
        return det

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.close()


def _reference_entry(upload: Upload) -> ReferenceEntry:
    """The metadata of an uploaded reference, from its form fields (`path` carries the suffix)."""
    character = upload.fields.get("character", "").strip()
    if not character:
        raise ApiError(422, "MissingField", "form field `character` is required")
    return ReferenceEntry(Path(f"upload{Path(upload.filename).suffix}"), character,
                          upload.fields.get("franchise", ""), upload.fields.get("rights_holder", ""),
                          upload.fields.get("license", ""))


def _error_response(exc: BaseException) -> JSONResponse:
    status, limit, headers = 500, None, {}
    if isinstance(exc, ApiError):
        status, limit, headers, name = exc.status, exc.limit, exc.headers, exc.error
    else:
        name = type(exc).__name__
        if isinstance(exc, MediaLimitError):
            status, limit = (408 if exc.limit == "request_timeout" else 413), exc.limit
        elif isinstance(exc, (UnreadableMediaError, ConfigError)):
            status = 422
        elif isinstance(exc, ReferenceNotFoundError):
            status = 404
        elif isinstance(exc, IndexLockedError):
            status = 409
        elif isinstance(exc, (IndexStoreError, DetectorError)):
            status = 400
    body: dict[str, Any] = {"error": name, "message": str(exc) if status != 500 else "internal error"}
    if limit:
        body["limit"] = limit
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(cfg: ServiceConfig) -> FastAPI:
    """The ASGI app. The index and model load in a background thread after start-up, so
    `/v1/health` answers at once and `/v1/ready` says when scoring can begin."""
    state = _State(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=state.load, name="mamori-load", daemon=True).start()
        yield
        state.close()

    app = FastAPI(title="mamori", version="1", lifespan=lifespan,
                  description="Scores images and videos for protected characters (see README, HTTP API).")
    app.state.mamori = state

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        request.state.id = rid
        request.state.verdict = None
        t0 = time.monotonic()
        try:
            response = await call_next(request)
        except Exception as exc:  # a bug in a handler: logged with its traceback, a JSON 500 to the client
            log.exception("request %s failed", rid)
            response = _error_response(exc)
        dt = time.monotonic() - t0
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "other")
        state.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        state.metrics.latency.labels(endpoint).observe(dt)
        if response.status_code >= 400:
            state.metrics.errors.labels(response.headers.get("x-mamori-error", str(response.status_code))).inc()
        response.headers["X-Request-ID"] = rid
        access_log.info(json.dumps({
            "ts": round(time.time(), 3), "id": rid, "method": request.method, "path": request.url.path,
            "status": response.status_code, "bytes": request.headers.get("content-length"),
            "seconds": round(dt, 4), "verdict": request.state.verdict}))
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        resp = _error_response(exc)
        resp.headers["x-mamori-error"] = exc.error
        return resp

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": "InvalidParameter", "message": where}, status_code=422,
                            headers={"x-mamori-error": "InvalidParameter"})

    @app.exception_handler(DetectorError)
    async def detector_error(request: Request, exc: DetectorError) -> JSONResponse:
        resp = _error_response(exc)
        resp.headers["x-mamori-error"] = type(exc).__name__
        return resp

    @app.exception_handler(IndexStoreError)
    async def index_error(request: Request, exc: IndexStoreError) -> JSONResponse:
        resp = _error_response(exc)
        resp.headers["x-mamori-error"] = type(exc).__name__
        return resp

    def scope(name: str) -> Callable[[Request], None]:
        def check(request: Request) -> None:
            if cfg.tokens is None:
                return
            auth = request.headers.get("authorization", "")
            kind, _, given = auth.partition(" ")
            given_b = given.strip().encode("utf-8", "replace")
            scopes = next((sc for tok, sc in cfg.tokens.items()  # constant-time per comparison
                           if kind.lower() == "bearer" and hmac.compare_digest(tok.encode(), given_b)), None)
            if scopes is None:
                raise ApiError(401, "Unauthorized", "missing or unknown bearer token",
                               headers={"WWW-Authenticate": "Bearer"})
            if name not in scopes:
                raise ApiError(403, "Forbidden", f"this token lacks the {name!r} scope")

        return check

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/ready")
    async def ready() -> JSONResponse:
        det = state.detector
        if det is None:
            return JSONResponse({"ready": False, "reason": state.load_error or "loading"}, status_code=503,
                                headers={"Retry-After": "5"})
        return JSONResponse({"ready": True, "generation": det.store.manifest.get("generation"),
                             "backbone": det.backbone.name, "precision": det.backbone.precision,
                             "batching": state.batcher is not None})

    @app.get("/v1/index", dependencies=[Depends(scope("score"))])
    async def index_info() -> dict[str, Any]:
        det = state.current()
        summary = det.store.summary()
        summary.pop("path", None)  # the server's file system is not the client's business
        check = det.precision_check
        summary.update({"flag_score": det.store.flag_score, "review_score": det.store.review_score,
                        "precision": det.backbone.precision, "index_precision": det.store.precision or None,
                        "precision_check": None if check is None else check.to_dict(),
                        "limits": cfg.limits.__dict__, "version": app.version})
        return summary

    async def _received(request: Request, folder: Path) -> Any:
        deadline = asyncio.get_running_loop().time() + cfg.limits.request_timeout
        return await receive_upload(request, folder, max_bytes=int(cfg.limits.max_upload_mb * 2**20),
                                    deadline=deadline, filename=request.headers.get("x-filename", "upload"))

    @app.post("/v1/score", dependencies=[Depends(scope("score"))])
    async def score(request: Request, fps: float | None = Query(None, gt=0, le=30),
                    max_frames: int | None = Query(None, ge=1)) -> JSONResponse:
        if max_frames is not None and max_frames > cfg.limits.max_frames:
            raise ApiError(422, "LimitExceeded", f"max_frames={max_frames} is above the server's max_frames="
                           f"{cfg.limits.max_frames}", limit="max_frames")
        det = state.current()
        if not state.slots.acquire(blocking=False):
            raise ApiError(503, "Busy", "too many requests in flight; retry later", headers={"Retry-After": "2"})
        state.metrics.in_flight.inc()
        t_end = time.monotonic() + cfg.limits.request_timeout
        try:
            with tempfile.TemporaryDirectory(prefix="mamori-upload-") as tmp:
                upload = await _received(request, Path(tmp))
                work = lambda: det.score_video(upload.path, fps=fps, max_frames=max_frames,
                                               deadline=t_end, name=upload.filename)
                result = await asyncio.get_running_loop().run_in_executor(state.pool, work)
        finally:
            state.slots.release()
            state.metrics.in_flight.dec()
        request.state.verdict = result.verdict
        state.metrics.verdicts.labels(result.verdict).inc()
        return JSONResponse(result.to_dict(),
                            headers={"X-Mamori-Index-Generation": str(det.store.manifest.get("generation"))})

    async def _admin(fn: Callable[[], Any]) -> Any:
        def locked() -> Any:
            with state.admin_lock:
                out = fn()
                det = state.reload()
                return out, det.store.manifest.get("generation")

        return await asyncio.get_running_loop().run_in_executor(None, locked)

    @app.post("/v1/admin/references", dependencies=[Depends(scope("admin"))])
    async def add_reference(request: Request) -> dict[str, Any]:
        state.current()
        with tempfile.TemporaryDirectory(prefix="mamori-ref-") as tmp:
            upload = await _received(request, Path(tmp))
            entry = _reference_entry(upload)
            assert state.backbone is not None
            embedder = RegionEmbedder(state.backbone)
            # kept in INDEX/uploads/ (the index records where each reference came from)
            report, gen = await _admin(lambda: add_upload(cfg.index, upload.path, entry, embedder))
        if report.skipped and not report.added and not report.duplicates:
            raise ApiError(422, "ReferenceNotAdded", f"reference not added: {report.skipped[0][1]}")
        dup = report.duplicates[0][1] if report.duplicates else None
        return {"added": [r.id for r in report.added], "quarantined": [r.id for r in report.quarantined],
                "duplicate_of": None if dup is None else {"id": dup.id, "sha256": dup.sha256,
                                                          "character": dup.character},
                "characters": report.characters, "generation": gen}

    def _removed(gone: RemovedReferences, gen: Any) -> dict[str, Any]:
        return {"removed": [r.id for r in gone], "deleted_files": [f"uploads/{p.name}" for p in gone.deleted_files],
                "generation": gen}

    @app.delete("/v1/admin/references/{ref:path}", dependencies=[Depends(scope("admin"))])
    async def remove_reference(ref: str) -> dict[str, Any]:
        state.current()
        return _removed(*await _admin(lambda: remove_references(cfg.index, reference=ref)))

    @app.delete("/v1/admin/characters/{name:path}", dependencies=[Depends(scope("admin"))])
    async def remove_character(name: str) -> dict[str, Any]:
        state.current()
        return _removed(*await _admin(lambda: remove_references(cfg.index, character=name)))

    @app.post("/v1/admin/reload", dependencies=[Depends(scope("admin"))])
    async def reload() -> dict[str, Any]:
        state.current()
        _, gen = await _admin(lambda: None)
        return {"generation": gen}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
