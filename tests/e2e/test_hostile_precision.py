"""Issue 16: an index opened at another precision than it was built in: the drift is measured on
the index's probe, and a drift past the calibration margin is warned about in every result."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.api import Detector
from detector.embed.backbones import load_backbone
from index import IndexStore


@pytest.mark.slow  # a CPU without native bf16 emulates it: loading and the probe take ~40 s here
def test_other_precision_is_measured(index_dir: Path) -> None:
    store = IndexStore.open(index_dir)
    built = store.precision
    assert built in ("fp32", "bf16", "fp16") and store.data.probe is not None
    other = load_backbone(store.backbone["name"], precision="bf16" if built == "fp32" else "fp32", device="cpu")
    check = Detector(store, other).precision_check  # a real model at the other precision (slow if emulated)
    assert check is not None and check.index == built and check.running == other.precision
    assert 0 < check.drift < 0.5 and 0.9 < check.cosine < 1 and check.margin == store.data.thresholds["margin"]
    print(f"\n{built} index, {other.precision} model: drift {check.drift:.4f}, cosine {check.cosine:.4f}, "
          f"margin {check.margin}")


def test_drift_past_the_margin_is_a_warning_in_every_result(index_dir: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    store = IndexStore.open(index_dir)
    fp32 = load_backbone(store.backbone["name"], precision="fp32", device="cpu")
    if store.precision == "fp32":
        det = Detector(store, fp32)
        assert det.precision_check is None and det.warnings == []  # same precision: not measured
    assert store.data.probe is not None
    store.data.precision = "bf16"  # as if built in bf16, by a model whose arithmetic differs this much:
    store.data.probe = np.roll(store.data.probe, 1, axis=1)
    with caplog.at_level(logging.WARNING, logger="mamori"):
        det = Detector(store, fp32)
    check = det.precision_check
    assert check is not None and not check.ok and check.drift > check.margin
    assert det.warnings == [check.warning] and "--precision bf16" in check.warning
    assert any("precision drift" in r.getMessage() for r in caplog.records)
    result = det.score_image(Image.new("RGB", (96, 64), (200, 180, 160)))
    assert list(result.warnings) == [check.warning] and result.to_dict()["warnings"] == [check.warning]
