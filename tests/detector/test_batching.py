from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from detector.embed.batching import Batcher


class _SlowBackbone:
    """Embeds each crop as its first pixel value; each forward pass takes 50 ms."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        self.calls.append(len(pixels))
        if (pixels == 255).all():
            raise RuntimeError("model failed")
        time.sleep(0.05)
        return pixels[:, 0, 0, 0].numpy().astype(np.float32)[:, None]


def test_concurrent_callers_share_forward_passes_and_get_their_own_rows() -> None:
    bb = _SlowBackbone()
    batcher = Batcher(bb, max_crops=64, wait_s=0.02)  # type: ignore[arg-type]
    out: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        px = torch.full((5, 3, 4, 4), i, dtype=torch.uint8)
        out[i] = batcher.embed_pixels(px)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    for i in range(8):
        np.testing.assert_array_equal(out[i][:, 0], np.full(5, i))
    assert sum(bb.calls) == 40 and len(bb.calls) < 8  # merged into fewer passes


def test_a_failed_pass_fails_its_callers_and_the_batcher_goes_on() -> None:
    bb = _SlowBackbone()
    batcher = Batcher(bb)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="model failed"):
        batcher.embed_pixels(torch.full((2, 3, 4, 4), 255, dtype=torch.uint8))
    assert batcher.embed_pixels(torch.full((2, 3, 4, 4), 7, dtype=torch.uint8))[:, 0].tolist() == [7, 7]
    batcher.close()
