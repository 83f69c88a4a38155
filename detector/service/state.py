"""The service's shared state: the loaded model, the current Detector, the pools and the metrics.

The routers reach it through `get_state` (the app's `state.mamori`) and guard routes with
`require(scope)`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from detector.api import Detector
from detector.embed.backbones import Backbone, load_backbone
from detector.embed.batching import Batcher
from detector.service.config import SCOPES, ServiceConfig
from detector.service.errors import Forbidden, NotReady, Unauthorized
from detector.service.flood import FloodWatch
from detector.service.uploads import RAW_TYPES, Upload, receive_upload
from index import IndexStore

__all__ = ["Metrics", "ServiceState", "change", "get_state", "require", "scopes_of"]

log = logging.getLogger("mamori.service")
T = TypeVar("T")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mamori_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("mamori_request_seconds", "request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.verdicts = Counter("mamori_verdicts", "score verdicts", ["verdict"], registry=self.registry)
        self.errors = Counter("mamori_errors", "refused or failed requests", ["error"], registry=self.registry)
        self.in_flight = Gauge("mamori_scoring_in_flight", "requests admitted for scoring", registry=self.registry)


class ServiceState:
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
        self.metrics = Metrics()
        self.flood = FloodWatch(cfg, self.metrics.registry)

    def load(self) -> None:
        try:
            store = IndexStore.open(self.cfg.index)
            self.backbone = load_backbone(store.backbone["name"], precision=self.cfg.precision, device=self.cfg.device)
            if self.cfg.batching in ("on", "auto"):
                self.batcher = Batcher(self.backbone)
            self.detector = self.detector_for(store)
            self.flood.restore(store)
            log.info("ready: index %s (generation %s), backbone %s in %s on %s, batching %s", self.cfg.index,
                     store.manifest.get("generation"), self.backbone.name, self.backbone.precision,
                     self.backbone.device, "on" if self.batcher else "off")
        except Exception as exc:  # noqa: BLE001  (reported by /v1/ready; the process stays up to say why)
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("cannot load: %s", self.load_error)

    def detector_for(self, store: IndexStore) -> Detector:
        """A `Detector` over `store` with the service's backbone, limits and batcher."""
        assert self.backbone is not None
        lim = self.cfg.limits
        det = Detector(store, self.backbone, fps=self.cfg.fps, max_frames=lim.max_frames, max_pixels=lim.max_pixels,
                       max_duration=lim.max_duration, max_frames_total=lim.max_frames_total)
        if self.batcher is not None:
            det.embed_pixels = self.batcher.embed_pixels
        return det

    def reload(self) -> Detector:
        """Open the index's current generation and switch readers to it (caller holds admin_lock)."""
        self.detector = self.detector_for(IndexStore.open(self.cfg.index))
        return self.detector

    async def receive(self, request: Request, folder: Path, raw_types: tuple[str, ...] = RAW_TYPES) -> Upload:
        """The request's upload in `folder`, within the configured size and time limits."""
        lim = self.cfg.limits
        deadline = asyncio.get_running_loop().time() + lim.request_timeout
        return await receive_upload(request, folder, max_bytes=int(lim.max_upload_mb * 2**20), deadline=deadline,
                                    filename=request.headers.get("x-filename", "upload"), raw_types=raw_types)

    def current(self) -> Detector:
        det = self.detector
        if det is None:
            raise NotReady(self.load_error or "the index and model are still loading")
        return det

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.close()


async def change(state: ServiceState, fn: Callable[[], T]) -> tuple[T, Any]:
    """Run the index change `fn` under the admin lock in a worker thread, then switch readers to
    the new generation: (fn's result, generation). The one way every route (admin, review,
    allow-list) and the flood action change the index."""

    def locked() -> tuple[T, Any]:
        with state.admin_lock:
            out = fn()
            det = state.reload()
            return out, det.store.manifest.get("generation")

    return await asyncio.get_running_loop().run_in_executor(None, locked)


def get_state(request: Request) -> ServiceState:
    """The state of the app serving `request` (set by `create_app`)."""
    state: ServiceState = request.app.state.mamori
    return state


def scopes_of(request: Request) -> frozenset[str]:
    """The scopes of the request's bearer token (every scope when the server has no tokens).

    Raises:
        Unauthorized: a missing or unknown token.
    """
    tokens = get_state(request).cfg.tokens
    if tokens is None:
        return SCOPES
    kind, _, given = request.headers.get("authorization", "").partition(" ")
    given_b = given.strip().encode("utf-8", "replace")
    scopes = next((sc for tok, sc in tokens.items()  # constant-time per comparison
                   if kind.lower() == "bearer" and hmac.compare_digest(tok.encode(), given_b)), None)
    if scopes is None:
        raise Unauthorized("missing or unknown bearer token")
    return scopes


def require(scope: str) -> Callable[[Request], None]:
    """A dependency that refuses a request whose bearer token lacks `scope` (no check without tokens)."""

    def check(request: Request) -> None:
        if scope not in scopes_of(request):
            raise Forbidden(f"this token lacks the {scope!r} scope")

    return check
