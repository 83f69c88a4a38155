"""`onnx:PATH.onnx`: any exported image embedder, run by onnxruntime (extra `mamori[onnx]`).

The sidecar is the same path with `.onnx` replaced by `.json` (`ids/anime.onnx` → `ids/anime.json`):

    {"input_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "output_name": "embedding"}

    input_size     int, or [H, W] with H == W (mamori embeds square regions)
    mean, std      three numbers each, RGB, for pixels scaled to 0-1
    input_name     the image input; optional when the graph has one input
    output_name    the embedding output; optional when the graph has one output
    layout         "NCHW" (default) or "NHWC"
    interpolation  "bicubic" (default) or "bilinear"
Other keys are refused, so a misspelt one is an error rather than silently ignored.

Precision: the graph runs in the type it was exported with (a float32 input: fp32; float16: fp16);
`--precision auto` accepts it, naming another precision (e.g. bf16) is a ConfigError. Device: the
CPU provider; the CUDA provider when the device is CUDA and onnxruntime has it (onnxruntime-gpu),
else the CPU with a warning. Batch: a dynamic batch dimension takes `max_batch` crops a pass; a
fixed one (often 1) takes exactly that many, the last pass padded. The output is flattened to
(N, D) and L2-normalised. Identity: the name as given; the sha256 of the .onnx file's sha256 and
the sidecar's content (a changed output or layout is another embedding); D from a probe pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.embed.backbone_base import Backbone, Preprocess, register
from detector.embed.inference import PRECISIONS, dtype_name, resolve_device
from detector.errors import BackboneError, BackboneUnavailableError, ConfigError
from index.images import file_sha256

__all__ = ["OnnxBackbone", "Sidecar", "read_sidecar"]

log = logging.getLogger("mamori")
_KEYS = {"input_size", "mean", "std", "input_name", "output_name", "layout", "interpolation"}
_DTYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}
_FORMAT = 'e.g. {"input_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "output_name": "embedding"}'


@dataclass(frozen=True)
class Sidecar:
    """What the sidecar JSON says about the graph (module docstring), and its sha256."""

    preprocess: Preprocess
    input_name: str | None
    output_name: str | None
    layout: str
    sha256: str


def read_sidecar(path: Path) -> Sidecar:
    """Parse and check the sidecar at `path`. Raises ConfigError naming the problem and the format."""
    if not path.is_file():
        raise ConfigError(f"ONNX sidecar {path} not found: put the model's preprocessing there, {_FORMAT}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"ONNX sidecar {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"ONNX sidecar {path} must be a JSON object, {_FORMAT}")
    unknown, missing = sorted(set(raw) - _KEYS), [k for k in ("input_size", "mean", "std") if k not in raw]
    if unknown or missing:
        raise ConfigError(f"ONNX sidecar {path}: unknown keys {unknown}, missing keys {missing}; "
                          f"keys are {sorted(_KEYS)}, {_FORMAT}")
    size = raw["input_size"]
    size = size if isinstance(size, list) else [size, size]
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size) or size[0] != size[1]:
        raise ConfigError(f"ONNX sidecar {path}: input_size must be a positive int or a square [H, W], not {raw['input_size']!r}")
    mean, std = _rgb(path, "mean", raw["mean"], 0.0), _rgb(path, "std", raw["std"], 1e-6)
    layout, interp = raw.get("layout", "NCHW"), raw.get("interpolation", "bicubic")
    if layout not in ("NCHW", "NHWC") or interp not in ("bicubic", "bilinear"):
        raise ConfigError(f"ONNX sidecar {path}: layout must be NCHW or NHWC and interpolation bicubic or "
                          f"bilinear, not {layout!r} / {interp!r}")
    names = [raw.get(k) for k in ("input_name", "output_name")]
    if not all(n is None or isinstance(n, str) for n in names):
        raise ConfigError(f"ONNX sidecar {path}: input_name and output_name must be strings")
    sha = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()
    return Sidecar(Preprocess(size[0], mean, std, interp), names[0], names[1], layout, sha)


def _rgb(path: Path, key: str, value: Any, low: float) -> tuple[float, float, float]:
    ok = isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)
    if not ok or not all(low <= v <= 1.0 for v in value):
        raise ConfigError(f"ONNX sidecar {path}: {key} must be three RGB numbers for pixels in 0-1 "
                          f"(divide 0-255 values by 255), not {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


@register("onnx:")
def _load_onnx(name: str) -> Backbone:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise BackboneUnavailableError(f"backbone {name!r} needs onnxruntime: pip install 'mamori[onnx]'") from exc
    path = Path(name[len("onnx:"):]).expanduser()
    if path.suffix != ".onnx":
        raise ConfigError(f"{name!r}: expected onnx:PATH.onnx, e.g. onnx:/models/anime-id.onnx")
    if not path.is_file():
        raise BackboneUnavailableError(f"{name!r}: ONNX model {path} not found")
    sidecar = read_sidecar(path.with_suffix(".json"))
    sha = hashlib.sha256(f"{file_sha256(path)}\n{sidecar.sha256}".encode()).hexdigest()
    return OnnxBackbone(name, path, sidecar, sha)


class OnnxBackbone(Backbone):
    """A `Backbone` whose forward pass is an onnxruntime session (`module` is an unused placeholder).

    Why a subclass: resizing and normalising stay mamori's (the same as every backbone, so the
    sidecar's numbers mean what they say); only the forward pass and the device rules differ.
    """

    def __init__(self, name: str, path: Path, sidecar: Sidecar, weights_sha256: str):
        super().__init__(name, torch.nn.Identity(), 0, sidecar.preprocess, weights_sha256)
        self.path, self.sidecar = path, sidecar
        self.providers: list[Any] = ["CPUExecutionProvider"]
        self.session = self._session(self.providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_name = _pick(name, "input", sidecar.input_name, [i.name for i in inputs])
        self.output_name = _pick(name, "output", sidecar.output_name, [o.name for o in outputs])
        meta = next(i for i in inputs if i.name == self.input_name)
        if meta.type not in _DTYPES:
            raise BackboneError(f"backbone {name!r}: input {meta.name!r} is {meta.type}, not a float image tensor")
        self.dtype = _DTYPES[meta.type]
        self.fixed_batch = _check_shape(name, list(meta.shape), sidecar)
        probe = self._run(np.zeros(self._shape(self.fixed_batch or 1), self._np_dtype))
        self.dim = int(probe.reshape(len(probe), -1).shape[1])

    @property
    def _np_dtype(self) -> type[np.floating[Any]]:
        return np.float16 if self.dtype == torch.float16 else np.float32

    def _shape(self, n: int) -> tuple[int, int, int, int]:
        s = self.preprocess.size
        return (n, 3, s, s) if self.sidecar.layout == "NCHW" else (n, s, s, 3)

    def _session(self, providers: list[Any]) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.log_severity_level = 3  # errors only: onnxruntime's provider notes are not ours to print
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise BackboneError(f"backbone {self.name!r}: onnxruntime cannot load {self.path}: {str(exc)[:300]}") from exc

    def to(self, precision: str = "auto", device: str | None = None) -> OnnxBackbone:
        """Pick the provider for `device`; `precision` must be auto or the graph's own (module docstring)."""
        import onnxruntime as ort

        mine = dtype_name(self.dtype)
        if precision not in PRECISIONS or precision not in ("auto", mine):
            raise ConfigError(f"backbone {self.name!r}: an ONNX graph runs in the precision it was exported in "
                              f"({mine}); --precision {precision} does not apply (use auto or {mine})")
        dev = resolve_device(device)
        providers: list[Any] = ["CPUExecutionProvider"]
        if dev.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]
        elif dev.type == "cuda":
            (log.info if device in (None, "auto") else log.warning)(
                "onnxruntime has no CUDA provider here (pip install onnxruntime-gpu): %s runs on the CPU", self.name)
            dev = torch.device("cpu")
        if providers != self.providers:
            self.session, self.providers = self._session(providers), providers
        self.device = dev
        return self

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            out = self.session.run([self.output_name], {self.input_name: x})[0]
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise BackboneError(f"backbone {self.name!r}: onnxruntime failed on a {x.shape} batch: {str(exc)[:300]}") from exc
        if out.shape[0] != len(x):
            raise BackboneError(f"backbone {self.name!r}: output {self.output_name!r} has shape {out.shape} for "
                                f"{len(x)} images; its first dimension must be the batch")
        return np.asarray(out)

    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a uint8 (N, 3, S, S) batch from `resize`: (N, D) float32, L2-normalised."""
        return self._embed_chunks(pixels, lambda p: (p.float().div_(255.0) - self._mean.cpu()) / self._std.cpu())

    def embed_tensor(self, x: torch.Tensor) -> np.ndarray:
        """Embed a normalised (N, 3, S, S) batch: (N, D) float32, L2-normalised."""
        return self._embed_chunks(x, lambda t: t.float())

    def _embed_chunks(self, x: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        step = self.fixed_batch or self.max_batch
        parts = []
        for i in range(0, len(x), step):
            chunk = prepare(x[i : i + step].cpu())
            if self.sidecar.layout == "NHWC":
                chunk = chunk.permute(0, 2, 3, 1)
            arr = np.ascontiguousarray(chunk.numpy(), dtype=self._np_dtype)
            k = len(arr)
            if self.fixed_batch and k < step:
                arr = np.concatenate([arr, np.zeros((step - k, *arr.shape[1:]), arr.dtype)])
            parts.append(self._run(arr)[:k].reshape(k, -1).astype(np.float32))
        if not parts:
            return np.zeros((0, self.dim), np.float32)
        feats = torch.nn.functional.normalize(torch.from_numpy(np.concatenate(parts)), dim=-1)
        return feats.numpy()


def _pick(name: str, kind: str, wanted: str | None, names: list[str]) -> str:
    """The graph's input or output the sidecar names, or its only one."""
    if wanted is None and len(names) == 1:
        return names[0]
    if wanted is None or wanted not in names:
        raise ConfigError(f"backbone {name!r}: the sidecar must name the {kind} with {kind}_name, one of {names}"
                          + ("" if wanted is None else f" (not {wanted!r})"))
    return wanted


def _check_shape(name: str, shape: list[Any], sidecar: Sidecar) -> int | None:
    """Check the input's shape against the sidecar; returns its fixed batch size, or None if dynamic."""
    s = sidecar.preprocess.size
    want = [3, s, s] if sidecar.layout == "NCHW" else [s, s, 3]
    if len(shape) != 4 or any(isinstance(d, int) and d != w for d, w in zip(shape[1:], want)):
        raise ConfigError(f"backbone {name!r}: the graph's input is {shape}, the sidecar says "
                          f"{sidecar.layout} {s}x{s} RGB ({['N', *want]})")
    return shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
