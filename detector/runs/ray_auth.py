"""Whether a Ray connection is guarded by Ray's token authentication, and the warning when not.

What Ray does (read in Ray 2.60's `ray._private.worker.init` and
`ray._private.authentication.authentication_token_setup`):

- before Ray 2.52 there is no token authentication at all;
- from 2.52, `ray.init()` without an address (what `--engine ray` does without `--ray-address`)
  starts a new cluster with token authentication on, unless `RAY_AUTH_MODE` is set to something
  else than `token` (a token is made in ~/.ray/auth_token when none exists);
- `ray.init(address=...)` (`--ray-address`) never turns it on: the driver sends a token only with
  `RAY_AUTH_MODE=token` in its own environment, and a cluster started by `ray start` requires one
  only when `RAY_AUTH_MODE=token` was set there (or a token file already existed). A cluster that
  requires tokens refuses a driver without one, so a driver that connected without token mode
  is talking to a cluster that accepts anyone.

So `mamori` (pyproject allows `ray>=2.9`) warns on stderr whenever its connection has no token
authentication, instead of raising the floor: an existing cluster is often pinned to an older Ray.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["RAY_TOKEN_AUTH", "ray_auth_warning", "warn_without_token_auth"]

#: the first Ray release with token authentication (`RAY_AUTH_MODE=token`)
RAY_TOKEN_AUTH = (2, 52)


def ray_auth_warning(version: str, *, address: str | None, token_auth: bool) -> str | None:
    """Why a Ray connection is open to anyone who reaches its ports, or None when token auth guards
    it (see the module docstring). `version`: Ray's; `address`: None for a private cluster;
    `token_auth`: the driver's mode after connecting."""
    nums = [int(n) for n in version.split(".")[:2] if n.isdigit()]
    where = f"the Ray cluster at {address}" if address else "the private Ray cluster on this machine"
    if len(nums) == 2 and tuple(nums) < RAY_TOKEN_AUTH:
        return (f"Ray {version} has no token authentication (it came in Ray 2.52): anyone who reaches "
                f"{where}'s ports can run code on it; firewall them (Ray's security guide) or upgrade Ray")
    if token_auth:
        return None
    if address:
        return (f"connected to {where} without token authentication (Ray turns it on only for a cluster "
                "ray.init() starts itself): anyone who reaches its ports can run code on it; start the cluster "
                "and this command with RAY_AUTH_MODE=token and the cluster's token, or firewall its ports")
    return (f"{where} runs without token authentication (RAY_AUTH_MODE={os.environ.get('RAY_AUTH_MODE', '')!r}); "
            "anyone who reaches its ports can run code on it: unset RAY_AUTH_MODE or firewall them")


def _token_auth_on() -> bool:
    """Whether this Ray driver uses token authentication (False for a Ray without it)."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:
        return False
    return bool(is_token_auth_enabled())


def warn_without_token_auth(ray: Any, address: str | None) -> None:
    """After `ray.init`: print `ray_auth_warning`'s line on stderr, if there is one."""
    warning = ray_auth_warning(str(getattr(ray, "__version__", "")), address=address, token_auth=_token_auth_on())
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
