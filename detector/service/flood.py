"""The service's flood watch: per-reference match counts over the last `--flood-window` scored
requests (`detector.runs.flood`), in the admin's view of `GET /v1/index`, and the `--flood-action`.

Only requests answered with a result count (a refused or failed upload matched nothing). When a
reference starts to flood (over `--flood-share` of the window, once it holds `--flood-min`
requests) it is logged once (`alert`, the default). Score traffic never takes a reference out of
matching by itself: anyone who may upload could otherwise flood a reference out, then upload the
video it would have caught. Quarantine is an admin action (`mamori index quarantine`, or
`POST /v1/admin/...`), except with the explicit opt-in `--flood-action quarantine`, which is
bounded two ways:

- *per-reference cap*: score traffic quarantines one reference at most
  `--flood-quarantine-max` times (default 1) in a server's run; a later flood of it only alerts;
- *automatic expiry*: each such quarantine ends `--flood-quarantine-ttl` seconds later (default
  3600): at the first request after that time the server enables the reference again (admin
  path: admin lock, new generation, reload) and drops its matches from the window. The expiry is
  written in the quarantine's reason (`flood (automatic, expires ISO-TIME): ...`), so a restarted
  server still ends it; a reason an admin changed meanwhile is left alone.

An admin may end it earlier (`POST /v1/admin/references/{ref}/enable`, which also drops its
matches from the window). Which references flood, and the window's top references, are shown to
`admin` tokens only (`GET /v1/index`'s `flood` part); the unauthenticated metrics carry counts,
never a reference id.

Two modules: this one is the watch itself (`FloodWatch`, held by `state.ServiceState`, so it
imports nothing of the service's state); what a scored request makes it do to the index
(`after_score`, `expire_due`: quarantine, end a quarantine) is `flood_actions`, above `state`.
"""

from __future__ import annotations

import logging
import re
from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from detector.runs.flood import FloodCounter, FloodReference
from index.clock import at, parse

if TYPE_CHECKING:
    from detector.service.config import ServiceConfig
    from index import IndexStore

__all__ = ["FLOOD_ACTIONS", "TOP_K", "FloodWatch", "flood_reason"]

log = logging.getLogger("mamori.service")

FLOOD_ACTIONS = ("alert", "quarantine")
#: references listed in `GET /v1/index`'s flood part
TOP_K = 10
_REASON = re.compile(r"^flood \(automatic, expires (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\)")


def flood_reason(f: FloodReference, now: float, ttl: float) -> tuple[str, float]:
    """(the quarantine reason, the epoch second it expires at) of an automatic flood quarantine."""
    until = float(int(now + ttl + 0.999))  # whole seconds, as written in the reason
    reason = (f"flood (automatic, expires {at(until)}): matched {f.count} of {f.total} scored requests "
              f"({f.share:.1%}) by {at(now)}")
    return reason, until


class FloodWatch(Collector):
    """The window's counts, which references flood now, the automatic quarantines' cap and expiry,
    and the metrics about them."""

    def __init__(self, cfg: ServiceConfig, registry: CollectorRegistry):
        self.counter = FloodCounter(cfg.flood_window)
        self.share, self.min_total, self.action = cfg.flood_share, cfg.flood_min, cfg.flood_action
        self.cap, self.ttl = cfg.flood_quarantine_max, cfg.flood_quarantine_ttl
        self.flooding: set[str] = set()
        #: automatic quarantines per reference in this run (the cap), and those in force: id -> (expiry, reason)
        self.auto: Tally[str] = Tally()
        self.expiry: dict[str, tuple[float, str]] = {}
        self.quarantined = Counter("mamori_flood_quarantined", "references quarantined by the flood action",
                                   registry=registry)
        self.expired = Counter("mamori_flood_expired", "automatic flood quarantines ended by their expiry",
                               registry=registry)
        registry.register(self)

    def observe(self, result: Mapping[str, Any]) -> list[FloodReference]:
        """Count one scored request; returns the references that started to flood with it."""
        self.counter.add(result)
        over = {f.reference_id: f for f in self.counter.flooding(share=self.share, min_total=self.min_total)}
        new = [f for r, f in over.items() if r not in self.flooding]
        self.flooding = set(over)
        return new

    def may_quarantine(self, reference_id: str) -> bool:
        """Whether score traffic may quarantine this reference now (the opt-in, under its cap)."""
        return self.action == "quarantine" and self.auto[reference_id] < self.cap

    def restore(self, store: IndexStore) -> None:
        """Pick up the automatic quarantines in force in the index (a restarted server ends them too)."""
        for ref in store.references.values():
            m = _REASON.match(ref.quarantine or "")
            if m:
                self.expiry[ref.id] = (parse(m[1]), ref.quarantine)

    def due(self, now: float) -> list[tuple[str, str]]:
        """The automatic quarantines whose time is up: (id, reason), removed from `expiry`."""
        out = [(ref, reason) for ref, (until, reason) in self.expiry.items() if until <= now]
        for ref, _ in out:
            del self.expiry[ref]
        return out

    def enabled(self, reference_id: str) -> None:
        """The reference is matched again (an admin, or the expiry): its matches so far no longer count."""
        self.counter.forget(reference_id)
        self.flooding.discard(reference_id)
        self.expiry.pop(reference_id, None)

    def summary(self, store: IndexStore) -> dict[str, Any]:
        """The `flood` part of `GET /v1/index` (admin tokens only)."""
        refs = store.references
        top = [{**f.to_dict(), "flooding": f.reference_id in self.flooding,
                "quarantined": bool(refs[f.reference_id].quarantine) if f.reference_id in refs else None}
               for f in self.counter.top(TOP_K)]
        return {"window": self.counter.window, "requests": self.counter.total, "share": self.share,
                "min_requests": self.min_total, "action": self.action,
                "quarantine": {"max_per_reference": self.cap, "ttl_seconds": self.ttl,
                               "expires": {r: at(t) for r, (t, _) in sorted(self.expiry.items())}},
                "top": top}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Counts only: the metrics need no token, so they name no reference."""
        yield GaugeMetricFamily("mamori_flood_window_requests", "scored requests in the flood window",
                                value=self.counter.total)
        yield GaugeMetricFamily("mamori_flood_references", "references over the flood share now",
                                value=len(self.flooding))
        top = self.counter.top(1)
        yield GaugeMetricFamily("mamori_flood_top_share", "share of the window's requests the most matched "
                                "reference matched (which one: GET /v1/index, admin)", value=top[0].share if top else 0.0)
        yield GaugeMetricFamily("mamori_flood_auto_quarantined", "automatic flood quarantines in force",
                                value=len(self.expiry))
