"""``quantize --debug N``: the layers where quantization loses the most, by ONNX Runtime's QDQ debugging helpers.

Both graphs (the pre-processed FP32 one and the QDQ one) are run on a few calibration frames with
their true states, saving every float activation (``collect_activations``). Per quantized tensor:
``own_db``, the signal-to-quantization-noise ratio (SQNR, dB; lower = worse) of quantizing the FP32
model's values of that tensor with its QDQ scale and zero point (the error that layer adds by itself,
with exact inputs), and ``vs_fp32_db``, ``compute_activation_error``'s SQNR of the QDQ model against
the FP32 model at that tensor (which accumulates the error of every layer before it). Weights get
the same figure from ``compute_weight_error``. (ORT's own pre/post-QDQ figure is not used for the
ranking: where a Relu/Clip was folded into the quantization range it compares the unclipped values
with the clipped ones and reports a large error that is not there.)
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def largest_errors(fp32_pre: Path, int8: Path, feeds: list[dict[str, np.ndarray]], n: int) -> dict[str, Any]:
    """The ``n`` activations and weights with the lowest SQNR, worst first."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        compute_weight_error,
        create_activation_matching,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    from edge.calibration.reader import FeedList
    with tempfile.TemporaryDirectory(prefix="edge-tsm-qdq-debug-") as tmp:
        aug_fp32, aug_int8 = Path(tmp) / "fp32.aug.onnx", Path(tmp) / "int8.aug.onnx"
        modify_model_output_intermediate_tensors(str(fp32_pre), str(aug_fp32))
        modify_model_output_intermediate_tensors(str(int8), str(aug_int8))
        float_acts = collect_activations(str(aug_fp32), FeedList(feeds))
        qdq_acts = collect_activations(str(aug_int8), FeedList(feeds))
    act_err = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    weight_err = compute_weight_error(create_weight_matching(str(fp32_pre), str(int8)))
    acts = []
    for name, (scale, zero, lo, hi) in _activation_qparams(int8).items():
        if name not in float_acts:
            continue
        x = np.concatenate([a.reshape(-1) for a in float_acts[name]]).astype(np.float64)
        fake = (np.clip(np.round(x / scale) + zero, lo, hi) - zero) * scale
        entry = {"tensor": name, "own_db": round(_sqnr(x, fake), 2)}
        if name in act_err and "xmodel_err" in act_err[name]:
            entry["vs_fp32_db"] = round(act_err[name]["xmodel_err"], 2)
        acts.append(entry)
    acts.sort(key=lambda a: a["own_db"])
    import onnx
    users = {i: node.name or node.op_type for node in onnx.load(str(fp32_pre)).graph.node for i in node.input}
    weights = sorted(({"weight": name, "layer": users.get(name, "?"), "db": round(db, 2)}
                      for name, db in weight_err.items() if np.isfinite(db)), key=lambda w: w["db"])
    logger.info("QDQ debug on %d frames: %d activations, %d weights compared", len(feeds), len(acts), len(weights))
    return {"frames": len(feeds), "activations": acts[:n], "weights": weights[:n]}


def _activation_qparams(int8: Path) -> dict[str, tuple[float, float, int, int]]:
    """Tensor -> (scale, zero point, qmin, qmax) of every QuantizeLinear with a scalar scale (activations)."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(int8))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[1] not in inits:
            continue
        scale, zero = inits[node.input[1]], inits.get(node.input[2])
        if scale.size != 1 or zero is None:
            continue
        info = np.iinfo(zero.dtype)
        out[node.input[0]] = (float(scale.reshape(-1)[0]), float(zero.reshape(-1)[0]), int(info.min), int(info.max))
    return out


def _sqnr(x: np.ndarray, y: np.ndarray) -> float:
    eps = np.finfo(np.float32).eps
    return float(20 * np.log10(max(np.linalg.norm(x), eps) / max(np.linalg.norm(x - y), eps)))


def format_debug(debug: dict[str, Any]) -> str:
    """Plain-text table of :func:`largest_errors`' result."""
    lines = [f"largest quantization errors on {debug['frames']} calibration frames (SQNR dB, lower is worse):",
             f"  {'own':>8} {'vs fp32':>8}  activation"]
    lines += [f"  {a['own_db']:8.2f} {a.get('vs_fp32_db', float('nan')):8.2f}  {a['tensor']}"
              for a in debug["activations"]]
    lines += [f"  {'weight':>8}", *[f"  {w['db']:8.2f}  {w['layer']} ({w['weight']})" for w in debug["weights"]]]
    return "\n".join(lines)
