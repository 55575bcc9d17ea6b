"""ONNX Runtime engine: CPU, CUDA, TensorRT or the OpenVINO execution provider."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _state

from edge.backends import one_line, zero_feeds
from edge.errors import ConfigError, DeviceError, InputError, ModelError
from edge.paths import library_path

logger = logging.getLogger(__name__)

# ONNX Runtime raises pybind11 classes that share no base but Exception; catch exactly these.
ORT_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(_state, n) for n in ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError",
                                 "RuntimeException", "InvalidProtobuf", "ModelLoaded", "NotImplemented",
                                 "InvalidGraph", "EPFail", "NotFound", "ModelRequiresCompilation")
    if hasattr(_state, n)) + (RuntimeError,)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
# device (lower case) -> providers in order of preference; the first is the one asked for.
PROVIDERS: dict[str, list[str]] = {
    "cpu": [CPU],
    "cuda": [CUDA, CPU],
    "gpu": [CUDA, CPU],
    "tensorrt": [TENSORRT, CUDA, CPU],
    "openvino": [OPENVINO, CPU],
}
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
           "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def _provider_chain(device: str, available: list[str]) -> list[str]:
    key = device.lower()
    if key == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    for chain in PROVIDERS.values():  # a full provider name is accepted too
        if chain[0].lower() == key:
            return chain
    if key not in PROVIDERS:
        raise ConfigError(f"onnxruntime device {device!r}: not one of {', '.join(PROVIDERS)}, auto "
                          "(or a provider name such as CUDAExecutionProvider)")
    return PROVIDERS[key]


class OrtBackend:
    """An ``InferenceSession`` with one latency-minded configuration (see :func:`create_backend`)."""

    name = "onnxruntime"

    def __init__(self, model_path: Path, *, device: str = "CPU", threads: int | None = None,
                 precision_hint: str = "f32", cache_dir: Path | None = None, allow_fallback: bool = False) -> None:
        """Create the session and run one warm-up inference.

        Raises:
            ConfigError: unknown device name.
            DeviceError: the provider asked for is not in this onnxruntime build (unless allow_fallback).
            InputError: ``model_path`` does not exist, or ``cache_dir`` cannot be made or is not this
                user's alone (:func:`edge.cache.private_folder`).
            ModelError: onnxruntime cannot load or run the model.
        """
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise InputError(f"model {self.model_path}: no such file")
        available = ort.get_available_providers()
        chain = _provider_chain(device, available)
        if chain[0] not in available:
            msg = (f"onnxruntime device {device!r}: {chain[0]} is not available in this onnxruntime build "
                   f"(available: {', '.join(available)})")
            if not allow_fallback:
                raise DeviceError(msg)
            logger.warning("%s; falling back to %s", msg, CPU)
            chain = [CPU]
        providers = [p for p in chain if p in available]
        options = [self._provider_options(p, cache_dir, precision_hint) for p in providers]

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or 0
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only: ORT's warnings would flood the journal
        # A daemon must not burn a core spinning between frames.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            with library_path(self.model_path) as name:  # a name that is not UTF-8: /proc/self/fd/N
                self._session: Any = ort.InferenceSession(name, sess_options=so, providers=providers,
                                                          provider_options=options)
        except ORT_ERRORS as e:
            raise ModelError(f"model {self.model_path}: onnxruntime cannot load it ({one_line(e)})") from None
        actual = self._session.get_providers()
        if chain[0] not in actual:  # e.g. CUDA listed but its libraries failed to load
            msg = (f"onnxruntime device {device!r}: {chain[0]} failed to start (running: {', '.join(actual)}); "
                   "check the CUDA/TensorRT libraries")
            if not allow_fallback:
                raise DeviceError(msg)
            logger.warning("%s; falling back to %s", msg, actual[0])
        self.device = actual[0]
        self.precision_note = "f32" if self.device != TENSORRT else "f32 (TensorRT, fp16 off)"
        inputs = self._session.get_inputs()
        self.input_names = [a.name for a in inputs]
        self.output_names = [a.name for a in self._session.get_outputs()]
        specs = [(a.name, tuple(d if isinstance(d, int) else None for d in a.shape), _DTYPES.get(a.type, np.float32))
                 for a in inputs]
        t0 = time.perf_counter()
        self.run(zero_feeds(specs))
        self.warmup_s = time.perf_counter() - t0
        logger.info("onnxruntime: %s on %s (threads %s, warm-up %.1f ms)", self.model_path.name,
                    ", ".join(actual), threads or "default", self.warmup_s * 1e3)

    def _provider_options(self, provider: str, cache_dir: Path | None, precision_hint: str = "f32") -> dict[str, Any]:
        """TensorRT: FP16 kernels unless the hint is f32 (QDQ INT8 graphs run INT8 through their explicit
        quantization either way); the built engine cached between runs (a build takes minutes on a
        Jetson) in a folder keyed by the graph's hash and the ONNX Runtime version, so a new model or
        an upgrade never loads a stale engine."""
        if provider != TENSORRT:
            return {}
        opts: dict[str, Any] = {"trt_fp16_enable": precision_hint != "f32"}
        if cache_dir is not None:  # this user's alone (edge.cache): an engine file there is what runs
            from edge.cache import label, private_folder, sha256
            what = label(cache_dir)
            digest = sha256(self.model_path.read_bytes())[:16]
            folder = private_folder(Path(private_folder(cache_dir, what)) / f"trt-{digest}-ort{ort.__version__}", what)
            opts.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": str(folder),
                         "trt_timing_cache_enable": True, "trt_timing_cache_path": str(folder)})
        return opts

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; outputs by name (fresh arrays owned by the caller).

        Raises:
            ModelError: the inference failed (wrong feed names, shapes or types).
        """
        if self._session is None:
            raise ModelError(f"model {self.model_path}: the onnxruntime backend is closed")
        try:
            outs = self._session.run(None, feeds)
        except (*ORT_ERRORS, ValueError, TypeError) as e:
            raise ModelError(f"model {self.model_path}: onnxruntime inference failed ({one_line(e)})") from None
        return dict(zip(self.output_names, outs, strict=False))

    def close(self) -> None:
        self._session = None
