"""Inference engines behind one small interface, chosen by name from a plain registry.

Each engine lives in its own module, imported only when its factory is called, so a device with
only one engine installed never imports the other. Adding an engine: one file, one line in
:data:`ENGINES`.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from edge.errors import ConfigError, DeviceError
from edge.util import lazy_import


@runtime_checkable
class Backend(Protocol):
    """A compiled graph: ``run`` feeds named float arrays and returns the outputs by name.

    The returned arrays belong to the caller (the backend does not reuse them), and ``run`` never
    writes into the arrays it is fed, so a caller may feed an output straight back as an input.
    """

    name: str                 # engine: 'onnxruntime' | 'openvino'
    device: str               # what actually runs, e.g. 'CPU' or 'CUDAExecutionProvider'
    precision_note: str       # the execution precision actually used, e.g. 'f32'
    input_names: list[str]
    output_names: list[str]
    warmup_s: float           # seconds the warm-up inference took at construction

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


BackendFactory = Callable[..., Backend]


def one_line(error: BaseException | str) -> str:
    """An engine's (often multi-line) error message as one line, without source-location noise."""
    lines = [ln.strip() for ln in str(error).splitlines()]
    keep = [ln for ln in lines if ln and not ln.startswith("Exception from src/") and not ln.startswith("Check '")]
    return " ".join(" ".join(keep or lines).split())


def zero_feeds(specs: list[tuple[str, tuple, np.dtype]]) -> dict[str, np.ndarray]:
    """Zero arrays for warm-up: (name, shape with None for dynamic dims, dtype) -> name -> zeros."""
    return {name: np.zeros(tuple(1 if d is None else d for d in shape), dtype) for name, shape, dtype in specs}


def _ort_factory(model_path: Path, **kw: object) -> Backend:
    mod = lazy_import("edge.backends.onnxruntime", what="engine 'onnxruntime'", package="onnxruntime",
                      install="pip install edge-tsm[onnxruntime] (on a Jetson: the GPU build from JetPack)",
                      error=DeviceError)
    return mod.OrtBackend(model_path, **kw)


def _ov_factory(model_path: Path, **kw: object) -> Backend:
    mod = lazy_import("edge.backends.openvino", what="engine 'openvino'", package="openvino",
                      install="pip install edge-tsm[openvino]", error=DeviceError)
    return mod.OpenVinoBackend(model_path, **kw)


ENGINES: dict[str, BackendFactory] = {"onnxruntime": _ort_factory, "openvino": _ov_factory}
_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def create_backend(engine: str, model_path: str | Path, *, device: str = "CPU", threads: int | None = None,
                   precision_hint: str = "f32", cache_dir: Path | None = None,
                   allow_fallback: bool = False) -> Backend:
    """Compile ``model_path`` on ``engine``/``device`` and warm it up.

    ``precision_hint``: 'f32' forces full-precision execution (OpenVINO otherwise runs bf16 on CPUs
    that have it, f16 on GPUs); 'default' leaves the engine's choice. ``allow_fallback``: run on CPU
    (with a WARNING) instead of failing when the device is not there.
    Raises:
        ConfigError: unknown engine, device name or precision hint.
        DeviceError: the engine is not installed or the device is not available.
        InputError: the model file is missing.
        ModelError: the engine cannot load the model.
    """
    factory = ENGINES.get(engine)
    if factory is None:
        raise ConfigError(f"engine {engine!r}: not one of {', '.join(ENGINES)}")
    if precision_hint not in ("f32", "default"):
        raise ConfigError(f"precision hint {precision_hint!r}: not one of f32, default")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads {threads!r}: expected a positive integer or none (engine default)")
    return factory(Path(model_path), device=device, threads=threads, precision_hint=precision_hint,
                   cache_dir=cache_dir, allow_fallback=allow_fallback)


def available_engines() -> list[str]:
    """The registered engines whose package is importable here."""
    return [name for name in ENGINES if importlib.util.find_spec(_MODULES[name]) is not None]
