"""What `mamori serve` is configured with: `ServiceConfig` and the bearer tokens file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from detector.errors import ConfigError
from detector.media.frames import DEFAULT_FPS
from detector.media.limits import Limits
from detector.runs.flood import FLOOD_MIN, FLOOD_SHARE

__all__ = ["SCOPES", "ServiceConfig", "read_tokens"]

SCOPES = frozenset({"score", "admin"})


@dataclass
class ServiceConfig:
    index: Path
    tokens: dict[str, frozenset[str]] | None = None  # None: no auth (loopback only)
    limits: Limits = field(default_factory=Limits)
    workers: int = 2
    queue: int = 8
    batching: str = "auto"  # on, off, or auto (= on; see the `detector.service` docstring)
    precision: str = "auto"
    device: str | None = None
    fps: float = DEFAULT_FPS
    #: flood watch (`detector.service.flood`): scored requests counted, share, minimum, action
    flood_window: int = 1000
    flood_share: float = FLOOD_SHARE
    flood_min: int = FLOOD_MIN
    flood_action: str = "alert"  # or quarantine (opt-in, bounded by the next two)
    flood_quarantine_max: int = 1  # automatic quarantines per reference in a run
    flood_quarantine_ttl: float = 3600.0  # seconds an automatic quarantine lasts
    #: the folder `POST /v1/admin/decisions` may read files from (None: decisions over HTTP are refused)
    media_root: Path | None = None


def read_tokens(path: str | Path) -> dict[str, frozenset[str]]:
    """Parse a tokens file: one `TOKEN SCOPE[,SCOPE]` per line; `#` comments and blank lines ignored.

    Raises:
        ConfigError: unreadable file, a malformed line, or an unknown scope.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read tokens file {path}: {exc.strerror}") from exc
    tokens: dict[str, frozenset[str]] = {}
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        scopes = frozenset(s.strip() for s in parts[1].split(",") if s.strip()) if len(parts) == 2 else frozenset()
        if len(parts) != 2 or not scopes or not scopes <= SCOPES:
            raise ConfigError(f"{path}:{n}: expected `TOKEN SCOPE[,SCOPE]` with scopes from {sorted(SCOPES)}")
        tokens[parts[0]] = scopes
    if not tokens:
        raise ConfigError(f"{path}: no tokens in the file")
    return tokens
