"""`POST /v1/admin/decisions` (admin scope): reviewers' decisions applied to the served index.

The body is JSON, within `max_upload_mb`: `{"decisions": [...], "results": [...]}`. Each decision
is an object as in a decisions file (`detector.decisions`); `results` (optional) are the scan's
result lines that locate each decision's regions (without them the server scores each file again).
A decision's `path` must name the file as this server sees it (its sha256 is checked). Under the
admin lock: `not_infringing` decisions go into the allow-list in one commit, then `infringing`
ones' regions are added as references (`detector.confirmed`; `?add_confirmed=false` only records
them), and readers switch to the new generation. The reply lists each decision's status.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from detector.confirmed import add_confirmed
from detector.decisions import decisions_from
from detector.review import Applied, apply_decisions
from detector.service.errors import InvalidParameter, UnsupportedMediaType
from detector.service.routes_admin import _change
from detector.service.state import get_state, require
from index.store import IndexStore, index_lock, write_index

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(require("admin"))])
JSON = ("application/json",)


def _body(path: Path) -> tuple[Any, list[dict[str, Any]] | None]:
    """The body's decisions (unchecked) and result lines (None: not given)."""
    try:
        body = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidParameter(f"the body is not JSON ({exc})") from exc
    if not isinstance(body, dict) or set(body) - {"decisions", "results"}:
        raise InvalidParameter('the body must be {"decisions": [...], "results": [...]} ("results" optional)')
    results = body.get("results")
    if results is not None and not (isinstance(results, list) and all(isinstance(r, dict) and "path" in r
                                                                       for r in results)):
        raise InvalidParameter("`results` must be a list of result lines (objects with a path)")
    return body.get("decisions"), results


def _reply(a: Applied) -> dict[str, Any]:
    d = a.decision
    return {"id": d.id, "path": d.path, "character": d.character, "decision": d.decision, "status": a.status,
            "message": a.message, "regions": a.regions}


@router.post("/v1/admin/decisions")
async def apply(request: Request, add_confirmed_refs: bool = Query(True, alias="add_confirmed")) -> dict[str, Any]:
    state = get_state(request)
    state.current()
    if request.headers.get("content-type", "").split(";")[0].strip().lower() not in JSON:
        raise UnsupportedMediaType('send the decisions as application/json: {"decisions": [...], "results": [...]}')
    with tempfile.TemporaryDirectory(prefix="mamori-decisions-") as tmp:
        raw, records = _body((await state.receive(request, Path(tmp), raw_types=JSON)).path)
    decisions = decisions_from(raw, "decisions")  # a bad decision refuses the request before the index is touched
    index = state.cfg.index

    def run() -> list[Applied]:
        with index_lock(index):
            store = IndexStore.open(index)
            det = state._detector(store)
            applied = apply_decisions(det, decisions, records=records, commit=lambda: write_index(index, store.data),
                                      confirmed=index if add_confirmed_refs else None)
        return add_confirmed(index, applied, det.embedder)

    applied, gen = await _change(state, run)
    counts = {k: sum(a.status == k for a in applied) for k in ("applied", "recorded", "skipped")}
    return {"decisions": [_reply(a) for a in applied], **counts, "generation": gen}
