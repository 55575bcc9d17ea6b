"""OpenVINO engine: CPU, Intel GPU, NPU, or AUTO (with a priority list, ``AUTO:NPU,GPU,CPU``).

Trap: on CPUs with bf16 (AMX/AVX512-BF16) OpenVINO runs a float model in bf16 unless
``INFERENCE_PRECISION_HINT`` is ``f32``; ``precision_hint='f32'`` (the default) sets it, and the
precision actually used is logged.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from edge.backends import one_line, zero_feeds
from edge.errors import DeviceError, InputError, ModelError
from edge.paths import library_path

logger = logging.getLogger(__name__)

VIRTUAL = ("AUTO", "MULTI", "HETERO", "BATCH")  # devices that pick or combine the real ones


def _base(device: str) -> str:
    return device.split(".")[0]


def check_device(device: str, available: list[str]) -> str | None:
    """None when ``device`` can run here, else why not (one line)."""
    kind, _, rest = device.partition(":")
    if kind in VIRTUAL:
        wanted = [d for d in rest.split(",") if d]
        if wanted and not any(d in available or _base(d) in {_base(a) for a in available} for d in wanted):
            return f"none of {', '.join(wanted)} is available"
        return None
    if device in available or (device == _base(device) and device in {_base(a) for a in available}):
        return None
    return "not available"


def present_candidates(device: str, available: list[str]) -> str:
    """``AUTO:NPU,GPU,CPU`` -> ``AUTO:CPU`` on a machine with only a CPU: AUTO and MULTI would otherwise
    try to load the absent devices' plugins and fail (e.g. the GPU plugin without libOpenCL). Left
    unchanged when none of the candidates is present (check_device reports that)."""
    kind, _, rest = device.partition(":")
    if kind not in ("AUTO", "MULTI") or not rest:
        return device
    bases = {_base(a) for a in available}
    wanted = [d for d in rest.split(",") if d]
    keep = [d for d in wanted if d in available or _base(d) in bases]
    if keep and keep != wanted:
        logger.info("openvino %s: %s not present here; candidates %s", kind, ", ".join(sorted(set(wanted) - set(keep))),
                    ", ".join(keep))
        return f"{kind}:{','.join(keep)}"
    return device


class OpenVinoBackend:
    """One compiled model and one infer request, tuned for latency (see :func:`create_backend`)."""

    name = "openvino"

    def __init__(self, model_path: Path, *, device: str = "CPU", threads: int | None = None,
                 precision_hint: str = "f32", cache_dir: Path | None = None, allow_fallback: bool = False) -> None:
        """Read, compile and warm up the model.

        Raises:
            DeviceError: the device is not available (unless allow_fallback) or cannot compile the model.
            InputError: ``model_path`` does not exist, or ``cache_dir`` cannot be made or is not this
                user's alone (:func:`edge.cache.private_folder`).
            ModelError: OpenVINO cannot read the model or run it.
        """
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise InputError(f"model {self.model_path}: no such file")
        core = ov.Core()
        available = list(core.available_devices)
        device = device.strip()
        device = device.upper()  # OpenVINO device names are upper case: 'cpu' -> 'CPU'
        requested = device
        device = present_candidates(device, available)
        why = check_device(device, available)
        if why:
            msg = f"openvino device {device!r}: {why} (available: {', '.join(available) or 'none'}; also AUTO)"
            if not allow_fallback:
                raise DeviceError(msg)
            logger.warning("%s; falling back to CPU", msg)
            device = "CPU"
        try:
            with library_path(self.model_path) as name:  # a name that is not UTF-8: /proc/self/fd/N
                model = core.read_model(name)
        except RuntimeError as e:
            raise ModelError(f"model {self.model_path}: openvino cannot read it ({one_line(e)})") from None
        config = self._config(device, threads, precision_hint, cache_dir)
        try:
            self._compiled: Any = core.compile_model(model, device, config)
        except RuntimeError as e:
            raise DeviceError(f"openvino device {device!r}: cannot compile {self.model_path} ({one_line(e)})") from None
        self._core, self._device, self._config_used = core, device, config
        self._request: Any = self._compiled.create_infer_request()
        # batch size -> (compiled, request, input views, output views) of a static copy (compile_batch_sizes)
        self._static: dict[int, tuple[Any, Any, dict[str, np.ndarray], list[np.ndarray]]] = {}
        self.requested_device = requested
        self.device = ",".join(self._compiled.get_property("EXECUTION_DEVICES"))
        self.precision_note = self._precision(precision_hint)
        self.input_names = [p.get_any_name() for p in self._compiled.inputs]
        self.output_names = [p.get_any_name() for p in self._compiled.outputs]
        self._input_set = set(self.input_names)
        # The request's own input/output buffers as numpy views: run() copies the feeds into them and the
        # results out of them (a plain infer() then costs ~0.05 ms instead of ~0.17 ms for 11 inputs and
        # 11 outputs with infer(dict), measured on the default model).
        static = all(p.get_partial_shape().is_static for p in (*self._compiled.inputs, *self._compiled.outputs))
        self._in_views = {n: self._request.get_tensor(n).data for n in self.input_names} if static else None
        self._out_views = [self._request.get_tensor(n).data for n in self.output_names] if static else None
        specs = []
        for p in self._compiled.inputs:
            shape = tuple(d.get_length() if d.is_static else None for d in p.get_partial_shape())
            specs.append((p.get_any_name(), shape, p.get_element_type().to_dtype()))
        t0 = time.perf_counter()
        self.run(zero_feeds(specs))
        self.warmup_s = time.perf_counter() - t0
        convs = self.layer_precisions("Convolution")
        logger.info("openvino: %s on %s (asked %s), precision %s, convolutions %s, threads %s, warm-up %.1f ms",
                    self.model_path.name, self.device, requested, self.precision_note,
                    " ".join(f"{p} x{n}" for p, n in sorted(convs.items())) or "not reported", threads or "default",
                    self.warmup_s * 1e3)

    def compile_batch_sizes(self, sizes: list[int]) -> None:
        """For a graph with a dynamic batch dimension (:func:`edge.batching.batched_graph`): compile one
        static-shape copy per batch size, which ``run`` then uses for feeds of that size. OpenVINO runs
        a static shape faster than the dynamic graph (measured here: 0.81x the time per frame at batch 4,
        INT8, 112 and 224). Sizes it cannot compile stay on the dynamic graph (logged).
        """
        if self._in_views is not None:
            return  # already static
        t0 = time.perf_counter()
        for n in sizes:
            if n in self._static:
                continue
            try:
                with library_path(self.model_path) as name:
                    model = self._core.read_model(name)
                shapes = {}
                for p in model.inputs:
                    shape = p.get_partial_shape()
                    shape[0] = ov.Dimension(n)
                    shapes[p.get_any_name()] = shape
                model.reshape(shapes)
                compiled = self._core.compile_model(model, self._device, self._config_used)
            except (RuntimeError, TypeError, ValueError) as e:
                logger.info("openvino: batch %d stays on the dynamic graph (%s)", n, one_line(e))
                continue
            request = compiled.create_infer_request()
            self._static[n] = (compiled, request, {m: request.get_tensor(m).data for m in self.input_names},
                               [request.get_tensor(m).data for m in self.output_names])
        logger.info("openvino: static copies for batch sizes %s in %.2f s", ",".join(map(str, sorted(self._static))),
                    time.perf_counter() - t0)

    @staticmethod
    def _config(device: str, threads: int | None, precision_hint: str, cache_dir: Path | None) -> dict[str, Any]:
        kind = device.partition(":")[0]
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision_hint == "f32" and _base(kind) != "NPU":  # the NPU computes in f16 whatever it is told
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if cache_dir is not None:  # this user's alone (edge.cache): a compiled blob there is what runs
            from edge.cache import label, private_folder
            config["CACHE_DIR"] = str(private_folder(cache_dir, label(cache_dir)))
        if threads:
            if _base(kind) == "CPU":
                config["INFERENCE_NUM_THREADS"] = int(threads)
            elif kind in VIRTUAL:
                config["DEVICE_PROPERTIES"] = {"CPU": {"INFERENCE_NUM_THREADS": int(threads)}}
            else:
                logger.debug("openvino: threads=%s ignored on %s (a CPU setting)", threads, device)
        return config

    def layer_precisions(self, layer_type: str = "Convolution") -> dict[str, int]:
        """How many ``layer_type`` layers the compiled model runs at each precision, e.g. ``{'u8': 52}``.

        An INT8 (QDQ) graph on CPU runs its convolutions as u8/i8; f32 there means OpenVINO did not
        fuse the quantization and runs the layer in float. Empty when the device does not report it.
        """
        counts: dict[str, int] = {}
        try:
            ops = self._compiled.get_runtime_model().get_ordered_ops()
        except RuntimeError:  # some devices (AUTO before it settles, NPU) have no runtime model to show
            return counts
        for op in ops:
            info = op.get_rt_info()
            if "layerType" in info and "runtimePrecision" in info and info["layerType"].astype(str) == layer_type:
                prec = info["runtimePrecision"].astype(str)
                counts[prec] = counts.get(prec, 0) + 1
        return counts

    def _precision(self, precision_hint: str) -> str:
        try:
            return str(self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        except RuntimeError:  # AUTO and friends do not report it
            return "f32 (requested)" if precision_hint == "f32" else "device default"

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; outputs by name, copied out of the request (it reuses its tensors).

        Raises:
            ModelError: the inference failed (wrong feed names, shapes or types).
        """
        if self._request is None:
            raise ModelError(f"model {self.model_path}: the openvino backend is closed")
        if feeds.keys() != self._input_set:  # OpenVINO would silently reuse the last value of a missing input
            missing = sorted(self._input_set - feeds.keys())
            unknown = sorted(feeds.keys() - self._input_set)
            raise ModelError(f"model {self.model_path}: openvino inference failed (missing inputs: "
                             f"{', '.join(missing) or 'none'}; unknown inputs: {', '.join(unknown) or 'none'})")
        request, in_views, out_views = self._request, self._in_views, self._out_views
        if in_views is None and self._static:
            static = self._static.get(next(iter(feeds.values())).shape[0])
            if static is not None:
                _, request, in_views, out_views = static
        if in_views is None:  # dynamic shapes: the request sizes its tensors per call
            try:
                res = self._request.infer(feeds, share_inputs=True, share_outputs=False)
            except (RuntimeError, KeyError, TypeError, ValueError) as e:
                raise ModelError(f"model {self.model_path}: openvino inference failed ({one_line(e)})") from None
            return dict(zip(self.output_names, res.to_tuple(), strict=False))
        try:
            for name, view in in_views.items():
                x = feeds[name]
                if x.shape != view.shape or x.dtype != view.dtype:  # copyto would broadcast or cast silently
                    raise ModelError(f"model {self.model_path}: openvino inference failed (input {name!r}: expected "
                                     f"{view.dtype} {list(view.shape)}, got {x.dtype} {list(x.shape)})")
                np.copyto(view, x)
            request.infer()
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            raise ModelError(f"model {self.model_path}: openvino inference failed ({one_line(e)})") from None
        return {n: v.copy() for n, v in zip(self.output_names, out_views, strict=False)}

    def close(self) -> None:
        self._request = None
        self._compiled = None
        self._static.clear()
