"""`create_app`: the FastAPI app, its request observer, and the exception handlers that render
every error through `detector.service.errors.ERROR_TABLE`."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from detector.service.config import ServiceConfig
from detector.service.errors import ERROR_TABLE, InvalidParameter, error_response
from detector.service.routes_admin import router as admin_router
from detector.service.routes_allow import router as allow_router
from detector.service.routes_health import router as health_router
from detector.service.routes_review import router as review_router
from detector.service.routes_score import router as score_router
from detector.service.state import ServiceState

__all__ = ["create_app"]

log = logging.getLogger("mamori.service")
#: one JSON object per request (`mamori serve` prints these lines bare on stderr)
access_log = logging.getLogger("mamori.requests")


def create_app(cfg: ServiceConfig) -> FastAPI:
    """The ASGI app. The index and model load in a background thread after start-up, so
    `/v1/health` answers at once and `/v1/ready` says when scoring can begin."""
    state = ServiceState(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=state.load, name="mamori-load", daemon=True).start()
        yield
        state.close()

    app = FastAPI(title="mamori", version="1", lifespan=lifespan,
                  description="Scores images and videos for protected characters (see README, HTTP API).")
    app.state.mamori = state
    app.middleware("http")(_observer(state))
    for exc_type in {rule.exc for rule in ERROR_TABLE}:
        app.add_exception_handler(exc_type, _render)
    app.add_exception_handler(RequestValidationError, _bad_parameter)
    for router in (health_router, score_router, admin_router, review_router, allow_router):
        app.include_router(router)
    return app


async def _render(request: Request, exc: Exception) -> Response:
    return error_response(exc)


async def _bad_parameter(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    where = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
    return error_response(InvalidParameter(where))


Observer = Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]


def _observer(state: ServiceState) -> Observer:
    """The middleware: request id, metrics, one access-log line, and a JSON 500 for a bug."""

    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        request.state.id = rid
        request.state.verdict = None
        t0 = time.monotonic()
        try:
            response = await call_next(request)
        except Exception as exc:  # a bug in a handler: logged with its traceback, a JSON 500 to the client
            log.exception("request %s failed", rid)
            response = error_response(exc)
        dt = time.monotonic() - t0
        endpoint = getattr(request.scope.get("route"), "path", "other")
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

    return observe
