"""Routes for the `score` scope: scoring an upload and describing the index (its `quarantined` list
and `flood` part for `admin` tokens only)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from detector.service.errors import Busy, LimitExceeded
from detector.service.flood_actions import after_score, expire_due
from detector.service.state import get_state, require, scopes_of

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(require("score"))])


@router.get("/v1/index")
async def index_info(request: Request) -> dict[str, Any]:
    state = get_state(request)
    await expire_due(state)
    det = state.current()
    summary = det.store.summary()
    summary.pop("path", None)  # the server's file system is not the client's business
    admin = "admin" in scopes_of(request)
    if not admin:  # which references are out of matching, and which flood, is the admin's business
        summary.pop("quarantined", None)
    check = det.precision_check
    summary.update({"flag_score": det.store.flag_score, "review_score": det.store.review_score,
                    "precision": det.backbone.precision, "index_precision": det.store.precision or None,
                    "precision_check": None if check is None else check.to_dict(),
                    "limits": state.cfg.limits.__dict__, "version": request.app.version,
                    **({"flood": state.flood.summary(det.store)} if admin else {})})
    return summary


@router.post("/v1/score")
async def score(request: Request, fps: float | None = Query(None, gt=0, le=30),
                max_frames: int | None = Query(None, ge=1)) -> JSONResponse:
    state = get_state(request)
    limit = state.cfg.limits.max_frames
    if max_frames is not None and max_frames > limit:
        raise LimitExceeded(f"max_frames={max_frames} is above the server's max_frames={limit}")
    await expire_due(state)
    det = state.current()
    if not state.slots.acquire(blocking=False):
        raise Busy("too many requests in flight; retry later")
    state.metrics.in_flight.inc()
    t_end = time.monotonic() + state.cfg.limits.request_timeout
    try:
        with tempfile.TemporaryDirectory(prefix="mamori-upload-") as tmp:
            upload = await state.receive(request, Path(tmp))
            work = lambda: det.score_video(upload.path, fps=fps, max_frames=max_frames,
                                           deadline=t_end, name=upload.filename)
            result = await asyncio.get_running_loop().run_in_executor(state.pool, work)
    finally:
        state.slots.release()
        state.metrics.in_flight.dec()
    request.state.verdict = result.verdict
    state.metrics.verdicts.labels(result.verdict).inc()
    body = result.to_dict()
    await after_score(state, body)
    return JSONResponse(body,
                        headers={"X-Mamori-Index-Generation": str(det.store.manifest.get("generation"))})
