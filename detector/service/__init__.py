"""The HTTP scorer (`mamori serve`): FastAPI + uvicorn, one loaded Detector behind every request.

    GET  /v1/health                 liveness (no auth)
    GET  /v1/ready                  200 once the index and the model are loaded, else 503 (no auth)
    GET  /v1/index                  backbone, counts, characters, thresholds, generation  [score]
                                    (quarantined references and the flood watch: admin only)
    POST /v1/score                  an image or video (raw body or multipart `file`) -> Result [score]
    POST /v1/admin/references       multipart: `file` + character, franchise, rights_holder, license [admin]
                                    (an image already indexed: a no-op naming it in `duplicate_of`)
    DELETE /v1/admin/references/ID  remove one reference (id, sha256 or source path)      [admin]
    DELETE /v1/admin/characters/NAME  remove a character (takedown / opt-out)              [admin]
                                    (both delete uploaded art no remaining reference uses)
    POST /v1/admin/references/ID/quarantine?reason=  stop matching a reference            [admin]
    POST /v1/admin/references/ID/enable  match it again                                   [admin]
    POST /v1/admin/reload           re-open the index from disk                            [admin]
    POST /v1/admin/decisions        reviewers' decisions, on files under --media-root only [admin]
    GET  /metrics                   Prometheus counters and latency histogram (no auth; no reference ids)

Why it is built this way:
- *Atomic index switches*: each request takes the current `Detector` once and uses it to the
  end; an admin change writes a new index generation on disk (atomic, `index.store`), opens it,
  then replaces the reference. In-flight requests finish on the old index; a failed update leaves
  the old one serving. Every score reply names its index generation (`X-Mamori-Index-Generation`).
- *Limits before work*: uploads stream to a temporary folder (`uploads`) with size and
  time limits; pixels, duration and frame counts are checked from headers before decoding; a
  deadline stops scoring between frames. Each refusal is a 4xx JSON error naming the limit.
- *One error table*: routes raise domain errors (`detector.errors`, `index.errors`) or the
  service's own (`errors`: 401, 403, 415, 503, ...); `errors.ERROR_TABLE` alone turns each into
  its status and `{"error", "message", "limit"}` body.
- *Off the event loop, bounded*: scoring runs in a thread pool of `workers`; at most
  `workers + queue` requests are admitted, the next gets 503 with Retry-After. With batching on,
  the workers' forward passes are merged by one model thread (`detector.embed.batching`). `auto` = on:
  measured on this 2-core CPU (`scripts/load_service.py`), 4 clients 2.39 req/s merged vs 2.09
  unmerged (p99 1.87 s vs 3.64 s), 1 client the same (2.25 vs 2.32). (Before the allocator used
  one arena, `detector.embed.allocator`, merging measured slower on a CPU and `auto` was on for GPUs
  only.) The option stays so that a deployment can measure its own hardware.

Modules: `app` (create_app, middleware, exception handlers), `errors` (the table), `config`
(ServiceConfig, tokens file), `state` (model, current Detector, metrics, auth dependency),
`routes_health`, `routes_score`, `routes_admin`, `routes_review` (the routers), `uploads` (streamed
bodies), `decision_input` (the media root, checked result lines), `flood` (the flood watch).
"""

from __future__ import annotations

from detector.media.limits import Limits
from detector.service.app import create_app
from detector.service.config import ServiceConfig, read_tokens

__all__ = ["Limits", "ServiceConfig", "create_app", "read_tokens"]
