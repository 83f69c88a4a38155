"""The service's flood watch: per-reference match counts over the last `--flood-window` scored
requests (`detector.flood`), in `GET /v1/index`, in the metrics, and the `--flood-action`.

Only requests answered with a result count (a refused or failed upload matched nothing). When a
reference starts to flood (over `--flood-share` of the window, once it holds `--flood-min`
requests) it is logged once; with `--flood-action quarantine` it is also quarantined in the
served index through the admin path (`routes_admin._change`: admin lock, new generation, reload),
and stays so until an admin enables it (`POST /v1/admin/references/{ref}/enable`), which also
drops its matches from the window, so old matches do not quarantine it again.

Metrics have a bounded label set: the top `TOP_K` references by count at scrape time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from detector.flood import FloodCounter, FloodReference

if TYPE_CHECKING:
    from detector.service.config import ServiceConfig
    from detector.service.state import ServiceState
    from index import IndexStore

__all__ = ["FLOOD_ACTIONS", "TOP_K", "FloodWatch", "after_score"]

log = logging.getLogger("mamori.service")

FLOOD_ACTIONS = ("alert", "quarantine")
#: references named in the metrics (and twice as many in `GET /v1/index`)
TOP_K = 5


class FloodWatch(Collector):
    """The window's counts, which references flood now, and the metrics about them."""

    def __init__(self, cfg: ServiceConfig, registry: CollectorRegistry):
        self.counter = FloodCounter(cfg.flood_window)
        self.share, self.min_total, self.action = cfg.flood_share, cfg.flood_min, cfg.flood_action
        self.flooding: set[str] = set()
        self.quarantined = Counter("mamori_flood_quarantined", "references quarantined by the flood action",
                                   registry=registry)
        registry.register(self)

    def observe(self, result: Mapping[str, Any]) -> list[FloodReference]:
        """Count one scored request; returns the references that started to flood with it."""
        self.counter.add(result)
        over = {f.reference_id: f for f in self.counter.flooding(share=self.share, min_total=self.min_total)}
        new = [f for r, f in over.items() if r not in self.flooding]
        self.flooding = set(over)
        return new

    def enabled(self, reference_id: str) -> None:
        """An admin enabled the reference: its matches so far no longer count."""
        self.counter.forget(reference_id)
        self.flooding.discard(reference_id)

    def summary(self, store: IndexStore) -> dict[str, Any]:
        """The `flood` part of `GET /v1/index`."""
        refs = store.references
        top = [{**f.to_dict(), "flooding": f.reference_id in self.flooding,
                "quarantined": bool(refs[f.reference_id].quarantine) if f.reference_id in refs else None}
               for f in self.counter.top(2 * TOP_K)]
        return {"window": self.counter.window, "requests": self.counter.total, "share": self.share,
                "min_requests": self.min_total, "action": self.action, "top": top}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("mamori_flood_window_requests", "scored requests in the flood window",
                                value=self.counter.total)
        yield GaugeMetricFamily("mamori_flood_references", "references over the flood share now",
                                value=len(self.flooding))
        top = GaugeMetricFamily("mamori_flood_top_share",
                                f"share of the window's requests matched, top {TOP_K} references",
                                labels=["reference"])
        for f in self.counter.top(TOP_K):
            top.add_metric([f.reference_id], f.share)
        yield top


async def after_score(state: ServiceState, result: Mapping[str, Any]) -> None:
    """Count a scored request; log the references that start to flood, and quarantine them with
    `--flood-action quarantine` (before the reply, so the next request no longer matches them)."""
    watch = state.flood
    new = watch.observe(result)
    for f in new:
        log.warning("flood: reference %s (%s, %s) matched %d of the last %d scored requests (%.1f%%)%s",
                    f.reference_id, f.character, f.source_path, f.count, f.total, 100 * f.share,
                    "; quarantining it" if watch.action == "quarantine" else "")
    if not new or watch.action != "quarantine":
        return
    from detector.service.routes_admin import _change
    from index.quarantine import quarantine_references

    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for f in new:
        reason = f"flood: matched {f.count} of {f.total} scored requests ({f.share:.1%}) by {when}"
        try:
            done, _ = await _change(state, partial(quarantine_references, state.cfg.index, [f.reference_id], reason))
        except Exception:  # the request was scored; the alert is logged, the index unchanged
            log.exception("flood: could not quarantine reference %s", f.reference_id)
            continue
        if done:
            watch.quarantined.inc()
