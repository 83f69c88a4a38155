"""How a backbone runs as fast as the hardware allows without changing its answers.

    device     `auto`: CUDA when torch sees a GPU, else the CPU
    precision  `fp32`, `bf16`, or `auto`: bfloat16 weights and activations on a GPU (float16 where
               the GPU has no bf16) and on a CPU with native bf16 instructions (AVX-512 BF16 or
               AMX) when a probe on drawn art (`probe_images`) shows it *clearly faster* than
               float32 (at least BF16_MIN_SPEEDUP) *and faithful* (every probe embedding's cosine
               to float32 >= MIN_FIDELITY); otherwise float32. A CPU without native bf16 emulates
               it, slowly, so `auto` never picks it there. An explicit `bf16` is always honoured.
    BN folding each BatchNorm that follows a convolution is folded into that convolution's
               weights (EfficientNet: 1.5x on this 2-core CPU), checked numerically at load.

    allocator  on Linux/glibc, freed memory is kept in the process for reuse and all threads
               share one malloc arena (`detector.embed.allocator`, applied when `detector` is imported).

Why a probe: "never slower" and "same answers" are properties of the machine and the model, not
of a CPU flag alone. The speed margin keeps the choice stable from one run to the next (a model
whose two timings are close stays in float32). Measured: EfficientNet-Lite0 in bf16 runs 2.1x
faster end to end but drifts to cosine 0.985 on flat drawn art (0.994 on the dev set's crops),
so `auto` keeps it in fp32; bf16 is one flag away for users who accept that. The probe costs
about a second at load. Fidelity is also printed by `scripts/bench_scan.py`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable

import torch
from PIL import Image

from detector.embed.allocator import keep_freed_memory
from detector.errors import ConfigError

__all__ = ["BF16_MIN_SPEEDUP", "MIN_FIDELITY", "PRECISIONS", "bf16_native", "choose_dtype", "fold_batchnorm",
           "keep_freed_memory", "probe_images", "resolve_device"]

log = logging.getLogger("mamori")

PRECISIONS = ("auto", "fp32", "bf16")
#: `auto` picks bfloat16 on a CPU only when the probe runs at least this much faster ...
BF16_MIN_SPEEDUP = 1.3
#: ... and every probe embedding keeps at least this cosine similarity to float32. Neither
#: measured as a value: chosen by hand (commit 57006d0, issue 6); effnet-lite0-imagenet drifts to
#: ~0.985 in bf16 on flat drawn art and stays fp32 (docs/speed.md). A cosine between one model's
#: own fp32 and bf16 outputs, a fidelity gate, so one value for every backbone
MIN_FIDELITY = 0.995
_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def dtype_name(dtype: torch.dtype) -> str:
    return _NAMES[dtype]


def resolve_device(device: str | None) -> torch.device:
    """`None`/"auto" → CUDA if available, else CPU; otherwise the named torch device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r} (use auto, cpu or cuda[:N])") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU here")
    return dev


def bf16_native() -> bool:
    """True when this CPU runs bfloat16 matrix maths in hardware (oneDNN's own check)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _time(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> float:
    fn(x)  # warm-up: allocations, oneDNN kernel selection
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t)
    return best


def probe_images(size: int) -> list[Image.Image]:
    """Eight drawn images like the art mamori looks at: scenes, characters on panels, both."""
    from detector.media.synth import composite, draw_character, draw_scene

    out = []
    for i in range(4):
        scene = draw_scene(f"probe-{i}", size, size)
        fig = draw_character(f"probe-{i}", size, pose=i % 2)
        panel = Image.new("RGB", fig.size, (236, 228, 210))
        panel.paste(fig, (0, 0), fig)
        out += [panel, composite(scene, fig, height_frac=0.6, x_frac=0.5)[0]]
    return out


def choose_dtype(module: torch.nn.Module, probe: torch.Tensor | None, precision: str, device: torch.device,
                 *, channels_last: bool = False) -> torch.dtype:
    """The dtype a backbone runs in, following the rule in the module docstring.

    Args:
        probe: a normalised (N, 3, S, S) batch of `probe_images` for the `auto` probe.

    Raises:
        ConfigError: unknown precision.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    native = bf16_native()
    if precision == "bf16":
        if not native:
            log.warning("this CPU has no native bf16 instructions: --precision bf16 is emulated and slower than fp32")
        return torch.bfloat16
    if not native or probe is None:
        return torch.float32
    x = probe.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    with torch.inference_mode():
        t32 = _time(module, x)
        low = copy.deepcopy(module).to(torch.bfloat16)
        t16 = _time(low, x.to(torch.bfloat16))
        fidelity = float(torch.nn.functional.cosine_similarity(module(x).float(), low(x.to(torch.bfloat16)).float()).min())
    del low
    speedup = t32 / t16
    use = speedup >= BF16_MIN_SPEEDUP and fidelity >= MIN_FIDELITY
    log.info("precision auto: bf16 probe %.2fx faster than fp32, cosine to fp32 >= %.4f: %s",
             speedup, fidelity, "bf16" if use else "fp32")
    return torch.bfloat16 if use else torch.float32


def fold_batchnorm(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """Fold every timm `BatchNormAct2d` into the convolution registered just before it.

    The folded model replaces each BN by its activation alone. Returns the folded model when its
    output matches the original's on a random batch (relative error < 1e-4), else the original
    (unchanged) with a warning: an architecture whose BN does not follow its convolution.
    """
    from timm.layers import BatchNormAct2d  # type: ignore[attr-defined]

    folded = copy.deepcopy(model)
    pairs: list[tuple[torch.nn.Conv2d, str, BatchNormAct2d]] = []
    last: torch.nn.Conv2d | None = None
    for name, m in folded.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            last = m
        elif isinstance(m, BatchNormAct2d):
            if last is None or last.out_channels != m.num_features or not m.track_running_stats:
                log.warning("BatchNorm %s does not follow a matching convolution: not folding", name)
                return model
            pairs.append((last, name, m))
            last = None
    with torch.no_grad():
        for conv, name, bn in pairs:
            assert bn.running_var is not None and bn.running_mean is not None  # track_running_stats, checked above
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.bias = torch.nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
            parent, _, attr = name.rpartition(".")
            setattr(folded.get_submodule(parent) if parent else folded, attr, torch.nn.Sequential(bn.drop, bn.act))
        x = torch.rand(2, 3, size, size)
        want, got = model(x), folded(x)
    err = float((want - got).norm() / want.norm().clamp_min(1e-12))
    if err > 1e-4:
        log.warning("folding BatchNorm changed the output (relative error %.1e): not folding", err)
        return model
    return folded
