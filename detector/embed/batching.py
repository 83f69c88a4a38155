"""Shared forward passes for concurrent requests (the HTTP service).

Each request's scan thread hands its prepared region batch (uint8 pixels, `Backbone.resize`) to
the `Batcher` and waits; one model thread takes everything queued (up to `max_crops`, waiting at
most `wait_s` for more once one batch is there), runs the model on their union (in passes of
`Backbone.max_batch` crops) and hands each caller its rows. Why one model thread: on a CPU,
several requests running the model at once fight over the same cores; one model thread keeps the
cores on the model, and crops of several requests fill passes that one request's few changed
regions would leave short.
If a forward pass fails, every caller in it gets the exception.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np
import torch

from detector.embed.backbones import Backbone

__all__ = ["Batcher"]


class Batcher:
    """`embed_pixels` with the same contract as `Backbone.embed_pixels`, batched across threads."""

    def __init__(self, backbone: Backbone, *, max_crops: int = 192, wait_s: float = 0.002):
        self.backbone = backbone
        self.max_crops = max_crops
        self.wait_s = wait_s
        self.passes = 0  # forward passes run (for tests and metrics)
        self._q: queue.Queue[tuple[torch.Tensor, Future[np.ndarray]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="mamori-batcher", daemon=True)
        self._thread.start()

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        fut: Future[np.ndarray] = Future()
        self._q.put((pixels, fut))
        return fut.result()

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            items = [item]
            crops = len(item[0])
            until = time.monotonic() + self.wait_s
            while crops < self.max_crops:
                try:
                    nxt = self._q.get(timeout=max(0.0, until - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)  # finish this batch, then stop
                    break
                items.append(nxt)
                crops += len(nxt[0])
            try:
                vecs = self.backbone.embed_pixels(torch.cat([p for p, _ in items]))
                self.passes += 1
            except BaseException as exc:  # noqa: BLE001  (every waiting caller gets the error)
                for _, fut in items:
                    fut.set_exception(exc)
                continue
            at = 0
            for p, fut in items:
                fut.set_result(vecs[at : at + len(p)])
                at += len(p)
