"""The Hugging Face hub, as backbone and tokenizer loaders meet it: behave as offline when it
cannot be reached, so a machine without network fails in a second rather than after a minute of
retries. Used by `detector.embed.backbones` (open_clip weights), `detector.embed.backbone_timm` and
`detector.embed.text` (tokenizers); imports nothing of mamori, so each can import it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

__all__ = ["hub_offline_if_unreachable", "hub_reachable"]


def hub_reachable(host: str = "huggingface.co") -> bool:
    """True unless name resolution fails at once (no network): then only the cache is tried."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HF_ENDPOINT")):
        return True
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline_if_unreachable() -> Iterator[None]:
    """Honour HF_HUB_OFFLINE, and behave as offline when the hub cannot be resolved at all,
    so a machine without network fails in a second rather than after a minute of retries."""
    import huggingface_hub.constants as hc

    before = hc.HF_HUB_OFFLINE
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: read it again for a later change
    if not before and (os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
                       or not hub_reachable()):
        hc.HF_HUB_OFFLINE = True
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = before
        hub_log.setLevel(level)
