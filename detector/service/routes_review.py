"""`POST /v1/admin/decisions` (admin scope): reviewers' decisions applied to the served index.

The body is JSON, within `max_upload_mb`: `{"decisions": [...], "results": [...]}`. Each decision
is an object as in a decisions file (`detector.review.decisions`); `results` (optional) are the scan's
result lines that locate each decision's regions (checked: a malformed segment is a 422).

A decision's `path` names a file under the server's `--media-root` (relative to it, or absolute
inside it; `decision_input`): anything else, or any decision on a server without a media root, is
refused (403) before a file is opened. Its sha256 is checked. Each file is held to `/v1/score`'s
limits and deadline: at most max_upload_mb, its header within max_pixels / max_duration /
max_frames_total, max_frames sampled frames, and the whole request within request_timeout (408:
nothing is applied). Without `results` the server scores each file again first, in the scoring
pool (a slot as `/v1/score` takes; 503 when none is free) and outside the index locks. Then,
under the admin lock and the index lock: `not_infringing` decisions go into the allow-list in one
commit, `infringing` ones' regions are added as references (`detector.review.confirmed`;
`?add_confirmed=false` only records them), and readers switch to the new generation. The reply
lists each decision's status, named by the path the client sent.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request

from detector.api import Detector
from detector.media.files import input_sha
from detector.media.frames import MediaReader
from detector.review.apply import Applied, apply_decisions
from detector.review.confirmed import add_confirmed
from detector.review.decisions import Decision, decisions_from
from detector.service.decision_input import checked_results, confined
from detector.service.errors import Busy, InvalidParameter, RequestTimeout, UnsupportedMediaType
from detector.service.state import ServiceState, change, get_state, require
from index.store import IndexStore, index_lock, write_index

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(require("admin"))])
JSON = ("application/json",)


def _body(path: Path) -> tuple[Any, list[dict[str, Any]] | None]:
    """The body's decisions (unchecked) and result lines (None: not given; checked)."""
    try:
        body = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidParameter(f"the body is not JSON ({type(exc).__name__})") from exc
    if not isinstance(body, dict) or set(body) - {"decisions", "results"}:
        raise InvalidParameter('the body must be {"decisions": [...], "results": [...]} ("results" optional)')
    return body.get("decisions"), checked_results(body.get("results"))


def _reply(a: Applied, sent: Decision) -> dict[str, Any]:
    d = a.decision
    return {"id": d.id, "path": sent.path, "character": d.character, "decision": d.decision, "status": a.status,
            "message": a.message.replace(d.path, sent.path), "regions": a.regions}


def _prepare(det: Detector, decisions: list[Decision], rescore: bool, t_end: float) -> list[dict[str, Any]]:
    """Outside the locks: each file (once) whose sha256 is a decision's is checked against the
    limits from its header; with `rescore`, scored again (with the deadline) into a result line."""
    records = []
    for path in dict.fromkeys(d.path for d in decisions):
        sha = input_sha(path)
        wanted = [d for d in decisions if d.path == path and d.sha256 == sha]
        if sha is None or not wanted:
            continue  # the apply step skips these decisions, saying why
        reader = MediaReader(path, fps=det.fps, max_frames=1, max_pixels=det.max_pixels,
                             max_duration=det.max_duration, max_stream_frames=det.max_frames_total, deadline=t_end)
        next(iter(reader), None)
        if rescore and any(d.time is None for d in wanted):
            records.append({**det.score_video(path, deadline=t_end).to_dict(), "sha256": sha})
    return records


def _with_deadline(det: Detector, t_end: float) -> None:
    """Make `det` refuse to embed once the request's time is up (checked on every frame embedded)."""
    embed = det.embed_pixels

    def embed_in_time(pixels: Tensor) -> np.ndarray:
        if time.monotonic() > t_end:
            raise RequestTimeout("the decisions were not applied within request_timeout (nothing was changed)")
        return embed(pixels)

    det.embed_pixels = embed_in_time


async def _in_pool(state: ServiceState, work: Callable[[], Any]) -> Any:
    """Run `work` in the scoring pool, in a slot as `/v1/score` takes one."""
    if not state.slots.acquire(blocking=False):
        raise Busy("too many requests in flight; retry later")
    state.metrics.in_flight.inc()
    try:
        return await asyncio.get_running_loop().run_in_executor(state.pool, work)
    finally:
        state.slots.release()
        state.metrics.in_flight.dec()


@router.post("/v1/admin/decisions")
async def apply(request: Request, add_confirmed_refs: bool = Query(True, alias="add_confirmed")) -> dict[str, Any]:
    state = get_state(request)
    det = state.current()
    t_end = time.monotonic() + state.cfg.limits.request_timeout
    if request.headers.get("content-type", "").split(";")[0].strip().lower() not in JSON:
        raise UnsupportedMediaType('send the decisions as application/json: {"decisions": [...], "results": [...]}')
    with tempfile.TemporaryDirectory(prefix="mamori-decisions-") as tmp:
        raw, records = _body((await state.receive(request, Path(tmp), raw_types=JSON)).path)
    sent = decisions_from(raw, "decisions")  # a bad decision refuses the request before the index is touched
    max_bytes = int(state.cfg.limits.max_upload_mb * 2**20)
    decisions = confined(sent, state.cfg.media_root, max_bytes)
    scored = await _in_pool(state, lambda: _prepare(det, decisions, records is None, t_end))
    index = state.cfg.index

    def run() -> list[Applied]:
        with index_lock(index):
            store = IndexStore.open(index)
            fresh = state.detector_for(store)
            _with_deadline(fresh, t_end)
            applied = apply_decisions(fresh, decisions, records=scored if records is None else records,
                                      commit=lambda: write_index(index, store.data),
                                      confirmed=index if add_confirmed_refs else None)
        return add_confirmed(index, applied, fresh.embedder)

    applied, gen = await change(state, run)
    counts = {k: sum(a.status == k for a in applied) for k in ("applied", "recorded", "skipped")}
    return {"decisions": [_reply(a, s) for a, s in zip(applied, sent, strict=True)], **counts, "generation": gen}
