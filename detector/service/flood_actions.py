"""The flood watch's actions on the index (`detector.service.flood` has the watch and the rules):
after each scored request, log the references that start to flood and, with the opt-in
`--flood-action quarantine`, quarantine them (`after_score`); before each scored request and
`GET /v1/index`, end the automatic quarantines whose time is up (`expire_due`). Each change goes
the admin path (`state.change`: admin lock, new generation, reload).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from detector.runs.flood import FloodReference
from detector.service.flood import flood_reason
from detector.service.state import ServiceState, change
from index import ReferenceNotFoundError
from index.quarantine import enable_reference, quarantine_references

__all__ = ["after_score", "expire_due"]

log = logging.getLogger("mamori.service")


async def after_score(state: ServiceState, result: Mapping[str, Any]) -> None:
    """Count a scored request; log the references that start to flood, and with `--flood-action
    quarantine` quarantine those under the cap (before the reply, so the next request no longer
    matches them), each until its expiry."""
    watch = state.flood
    for f in watch.observe(result):
        act = watch.may_quarantine(f.reference_id)
        capped = watch.action == "quarantine" and not act
        log.warning("flood: reference %s (%s, %s) matched %d of the last %d scored requests (%.1f%%)%s",
                    f.reference_id, f.character, f.source_path, f.count, f.total, 100 * f.share,
                    f"; quarantining it for {watch.ttl:g} s" if act else
                    f"; not quarantined: automatically quarantined {watch.cap} time(s) already" if capped else "")
        if act:
            await _quarantine(state, f)


async def _quarantine(state: ServiceState, f: FloodReference) -> None:
    watch = state.flood
    reason, until = flood_reason(f, time.time(), watch.ttl)
    watch.auto[f.reference_id] += 1  # counted when tried: a failing index does not lift the cap
    try:
        done, _ = await change(state, partial(quarantine_references, state.cfg.index, [f.reference_id], reason))
    except Exception:  # the request was scored; the alert is logged, the index unchanged
        log.exception("flood: could not quarantine reference %s", f.reference_id)
        return
    if done:
        watch.expiry[f.reference_id] = (until, reason)
        watch.quarantined.inc()


async def expire_due(state: ServiceState) -> None:
    """End the automatic quarantines whose time is up (called before each scored request and
    `GET /v1/index`); one whose reason an admin changed meanwhile is left as it is."""
    watch = state.flood
    for ref, reason in watch.due(time.time()):
        try:
            (_, was), _ = await change(state, partial(enable_reference, state.cfg.index, ref, only_reason=reason))
        except ReferenceNotFoundError:  # removed meanwhile: nothing to end
            continue
        except Exception:  # the reference stays quarantined; logged, tried again at the next request
            log.exception("flood: could not end the quarantine of reference %s", ref)
            watch.expiry[ref] = (time.time() + 60, reason)
            continue
        if was:
            log.warning("flood: the automatic quarantine of reference %s expired; it is matched again", ref)
            watch.enabled(ref)
            watch.expired.inc()
