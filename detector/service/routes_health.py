"""Unauthenticated routes: liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from detector.service.state import get_state

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/ready")
async def ready(request: Request) -> JSONResponse:
    state = get_state(request)
    det = state.detector
    if det is None:
        return JSONResponse({"ready": False, "reason": state.load_error or "loading"}, status_code=503,
                            headers={"Retry-After": "5"})
    return JSONResponse({"ready": True, "generation": det.store.manifest.get("generation"),
                         "backbone": det.backbone.name, "precision": det.backbone.precision,
                         "batching": state.batcher is not None})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(get_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
