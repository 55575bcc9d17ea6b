"""``edge-tsm quantize``: FP32 online bundle + calibration set -> ``model.int8.onnx`` (QDQ) in the bundle.

ONNX Runtime's pre-processing (shape inference, graph optimisation: BN folding and the like) runs
first, then ``quantize_static`` in QDQ format with activations u8 (asymmetric) and weights s8
(symmetric, per output channel by default): measured here the fastest and most accurate combination
on both engines; OpenVINO reads the QDQ graph directly and runs INT8 kernels. The state tensors stay
explicit float inputs/outputs (OpenVINO's stateful transform does not take INT8 graphs). The
calibrator is fed by :class:`edge.calibration.reader.SequenceReader` (true states from real sequences).

The recipe is recorded in ``model.yaml`` (``files.int8`` and the ``quantization`` block); the bundle's
default ``precision`` is left at fp32: only the accuracy guard (:mod:`.guard`) may make INT8 the default.
"""
from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge.bundle import Bundle, load_bundle, validate_graph
from edge.calibration.calibset import CalibrationSet
from edge.calibration.collect import graph_fps
from edge.errors import EdgeError, InputError, ModelError, UsageError
from edge.util import atomic_write

logger = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
METHODS = ("minmax", "entropy", "percentile")
TARGETS = ("both", "onnxruntime", "openvino")
TYPES = ("u8s8", "u8u8", "s8s8")  # activation and weight integer types
CHUNK = 64            # frames per calibration chunk (bounds the memory of the histogram calibrators)


@dataclass(frozen=True)
class QuantizeOptions:
    method: str = "minmax"          # minmax | entropy | percentile (99.999th percentile)
    per_channel: bool = True        # per-output-channel weight scales
    engine_target: str = "both"     # engines the result is checked (and benchmarked) on
    threads: int | None = None      # ONNX Runtime threads for calibration and checks
    types: str = "u8s8"             # activations/weights: u8s8 (default), u8u8, s8s8
    reduce_range: bool = False      # 7-bit weights: no u8 x s8 saturation on x86 without VNNI (AVX2 vpmaddubsw)

    def check(self) -> None:
        """Raises: UsageError: an unknown method or target."""
        if self.method not in METHODS:
            raise UsageError(f"--method {self.method!r}: not one of {', '.join(METHODS)}")
        if self.engine_target not in TARGETS:
            raise UsageError(f"--engine-target {self.engine_target!r}: not one of {', '.join(TARGETS)}")
        if self.types not in TYPES:
            raise UsageError(f"--types {self.types!r}: not one of {', '.join(TYPES)}")


def fp32_bundle(model_ref: str | Path) -> Bundle:
    """The bundle, checked to hold an online FP32 graph that agrees with its yaml.

    Raises:
        InputError: the bundle is missing.
        ModelError: no FP32 graph, a clip bundle, or a graph that disagrees with model.yaml.
    """
    bundle = load_bundle(model_ref, validate=False)
    if "fp32" not in bundle.files:
        raise ModelError(f"model.yaml {bundle.yaml_path}: no FP32 graph (files has: {', '.join(bundle.files)}); "
                         "quantize needs the float model (files.fp32)")
    if bundle.kind != "online":
        raise ModelError(f"model.yaml {bundle.yaml_path}: kind {bundle.kind!r}: quantize takes online bundles "
                         "(frame + states)")
    validate_graph(bundle, "fp32")
    return bundle


def copy_bundle(bundle: Bundle, out: str | Path) -> Bundle:
    """Copy model.yaml, the FP32 graph and CARD.md (not an old INT8 graph) to ``out``; load the copy.

    Raises:
        InputError: ``out`` exists and is not empty, or cannot be written.
    """
    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"quantize --out {dest}: exists and is not an empty folder")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name in (bundle.files["fp32"], "CARD.md"):
            if (bundle.root / name).is_file():
                shutil.copy2(bundle.root / name, dest / name)
        # the copy's model.yaml names only the FP32 graph (and runs it) until quantize records its INT8 graph
        spec = yaml.safe_load(bundle.yaml_path.read_text(encoding="utf-8"))
        spec["files"] = {"fp32": bundle.files["fp32"]}
        spec["precision"] = "fp32"
        spec.pop("quantization", None)
        atomic_write(dest / "model.yaml", yaml.safe_dump(spec, sort_keys=False), mode=0o644)
    except OSError as e:
        raise InputError(f"quantize --out {dest}: cannot write ({e})") from None
    return load_bundle(dest, validate=False)


def quantize_bundle(bundle: Bundle, calib: CalibrationSet, opts: QuantizeOptions = QuantizeOptions(), *,
                    debug: int = 0, progress: bool = False) -> dict[str, Any]:
    """Write ``model.int8.onnx`` into ``bundle.root``; return the report (recipe, checks, debug layers).

    ``model.yaml`` is not touched here (see :func:`edge.calibration.record.record_quantization`).
    Raises:
        DataError: the calibration set is unreadable or does not fit the model's input.
        ModelError: ONNX Runtime cannot pre-process or quantize the graph, or the result disagrees
            with model.yaml.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    from edge.calibration.reader import SequenceReader
    opts.check()
    if abs(calib.graph_fps - graph_fps(bundle)) > 1e-6:
        logger.warning("calibration set %s was collected at %.3g graph frames/s, the model runs at %.3g: its "
                       "states come from sequences at another rate", calib.root, calib.graph_fps, graph_fps(bundle))
    t0 = time.perf_counter()
    reader = SequenceReader(bundle, calib, threads=opts.threads, progress=progress)
    fp32 = bundle.graph_path("fp32")
    target = bundle.root / INT8_FILE
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    # The calibrators keep every intermediate output of one collect call: feed them in chunks. (Not
    # CalibMaxIntermediateOutputs: in onnxruntime 1.32 it drops the outputs it has collected.)
    extra: dict[str, Any] = {"ActivationSymmetric": opts.types == "s8s8", "WeightSymmetric": opts.types != "u8u8",
                             "CalibStridedMinMax": _chunk(len(reader))}
    act, weight = {"u8s8": (QuantType.QUInt8, QuantType.QInt8), "u8u8": (QuantType.QUInt8, QuantType.QUInt8),
                   "s8s8": (QuantType.QInt8, QuantType.QInt8)}[opts.types]
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edge-tsm-quantize-") as tmp:
        pre, out = Path(tmp) / "model.pre.onnx", Path(tmp) / INT8_FILE
        try:
            quant_pre_process(str(fp32), str(pre))
        except EdgeError:
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime/onnx raise many unrelated types; name the step
            raise ModelError(f"model {fp32}: onnxruntime pre-processing failed ({_line(e)})") from None
        chatter = io.StringIO()  # the histogram calibrators print to stdout, where our JSON goes
        try:
            with contextlib.redirect_stdout(chatter):
                quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ,
                                activation_type=act, weight_type=weight, reduce_range=opts.reduce_range,
                                per_channel=opts.per_channel, calibrate_method=methods[opts.method],
                                calibration_providers=["CPUExecutionProvider"], extra_options=extra)
        except EdgeError:
            raise
        except Exception as e:  # noqa: BLE001 - as above
            raise ModelError(f"model {fp32}: onnxruntime quantization failed ({_line(e)})") from None
        finally:
            reader.close_bar()
            if chatter.getvalue().strip():
                logger.debug("onnxruntime calibrator: %s", " / ".join(chatter.getvalue().split("\n")[-6:]))
        if debug:
            from edge.calibration.debug import largest_errors
            report["debug"] = largest_errors(pre, out, reader.feeds[:DEBUG_FRAMES], debug)
        model = onnx.load(str(out), load_external_data=False)
        counts = {op: sum(1 for n in model.graph.node if n.op_type == op)
                  for op in ("QuantizeLinear", "DequantizeLinear", "Conv", "Gemm", "MatMul")}
        if not counts["QuantizeLinear"]:
            raise ModelError(f"model {fp32}: quantization produced no QuantizeLinear node (nothing to quantize?)")
        try:
            atomic_write(target, out.read_bytes(), mode=0o644)
        except OSError as e:
            raise InputError(f"bundle {bundle.root}: cannot write {INT8_FILE} ({e})") from None
    validate_graph(bundle.model_copy(update={"files": {**bundle.files, "int8": INT8_FILE}}), "int8")
    report.update({
        "int8": str(target), "seconds": round(time.perf_counter() - t0, 1), "nodes": counts,
        "mb": {"fp32": round(fp32.stat().st_size / 1e6, 2), "int8": round(target.stat().st_size / 1e6, 2)},
        "calibration_agreement": _agreement(target, reader, opts.threads, bundle.output_name),
        "recipe": {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                   "preprocess": "onnxruntime.quantization.quant_pre_process",
                   "method": opts.method, "per_channel": opts.per_channel,
                   "activations": {"u8s8": "uint8 asymmetric", "u8u8": "uint8 asymmetric",
                                   "s8s8": "int8 symmetric"}[opts.types],
                   "weights": {"u8s8": "int8 symmetric", "u8u8": "uint8 asymmetric",
                               "s8s8": "int8 symmetric"}[opts.types]
                              + (" 7-bit (reduce_range)" if opts.reduce_range else "")
                              + (" per channel" if opts.per_channel else " per tensor"),
                   "engine_target": opts.engine_target,
                   "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, **_edge_version()}},
        "calibration": _calib_record(calib, len(reader)),
    })
    logger.info("wrote %s (%s, %s, %d QuantizeLinear): %.2f MB (FP32 %.2f MB) in %.1f s", target, opts.method,
                "per channel" if opts.per_channel else "per tensor", counts["QuantizeLinear"], report["mb"]["int8"],
                report["mb"]["fp32"], report["seconds"])
    return report


DEBUG_FRAMES = 16     # calibration frames the --debug pass runs (with their true states)


def _chunk(n: int) -> int:
    """The largest divisor of ``n`` up to CHUNK (ONNX Runtime's strided calibration needs one)."""
    return max(d for d in range(1, min(CHUNK, n) + 1) if n % d == 0)


def _agreement(int8: Path, reader: Any, threads: int | None, out_name: str) -> dict[str, Any]:
    """Top-1 agreement of INT8 with FP32 on the calibration frames (ONNX Runtime, true states fed)."""
    from edge.backends import create_backend
    backend = create_backend("onnxruntime", int8, threads=threads)
    try:
        same = sum(int(np.argmax(backend.run(f)[out_name]) == np.argmax(ref))
                   for f, ref in zip(reader.feeds, reader.fp32_logits, strict=False))
    finally:
        backend.close()
    n = len(reader.feeds)
    return {"frames": n, "top1_agreement": round(same / n, 4) if n else 0.0}


def _calib_record(calib: CalibrationSet, frames: int) -> dict[str, Any]:
    src = calib.summary.get("source", {}) if isinstance(calib.summary.get("source"), dict) else {}
    keep = {k: src[k] for k in ("kind", "seed", "per_class", "generator") if k in src}
    if "videos" in src:
        keep["videos"] = len(src["videos"])
    return {"set": str(calib.root), "segments": len(calib.segments), "frames": frames,
            "graph_fps": calib.graph_fps, **keep}


def _edge_version() -> dict[str, str]:
    from edge import __version__
    return {"edge-tsm": __version__}


def _line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__
