"""`GET /v1/admin/allow` and `DELETE /v1/admin/allow/{id}` (admin scope): the allow-list
reviewers' not_infringing decisions wrote (`index.allowlist`), as `mamori index allow list | revoke`.

`GET` answers `{"entries": [...]}`, every entry active and revoked, as `index allow list --json`
prints it. `DELETE` revokes one entry under the admin lock (its regions suppress nothing any
more; it stays listed with `revoked_at` and `revoked_by` = "DELETE /v1/admin/allow"), switches
readers to the new generation and answers `{"revoked": [...], "unchanged": [...], "generation": ...}`;
an entry already revoked is `unchanged`, an unknown id is 404 `AllowEntryNotFoundError`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from detector.review.apply import revoke_entries
from detector.service.state import change, get_state, require
from index.allowlist import allow_entries

__all__ = ["REVOKED_BY_HTTP", "router"]

router = APIRouter(dependencies=[Depends(require("admin"))])
#: `revoked_by` of an entry revoked over HTTP
REVOKED_BY_HTTP = "DELETE /v1/admin/allow"


@router.get("/v1/admin/allow")
async def list_allow(request: Request) -> dict[str, Any]:
    return {"entries": allow_entries(get_state(request).current().store.data.allow)}


@router.delete("/v1/admin/allow/{entry}")
async def revoke(request: Request, entry: str) -> dict[str, Any]:
    state = get_state(request)
    state.current()
    (done, before), gen = await change(state, lambda: revoke_entries(state.cfg.index, [entry], REVOKED_BY_HTTP))
    return {"revoked": done, "unchanged": before, "generation": gen}
