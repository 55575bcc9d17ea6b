"""Several cameras' frames in one engine call: the online graph with a batch dimension.

An exported online bundle has a batch of 1 on every input and output (the frame and each state
tensor). The network itself is per-sample: convolutions, the channel slices and concats of the
temporal shift, element-wise ops, a spatial mean and the classifier. So the same graph with its
first dimension made symbolic (``N``) steps N cameras at once, each row with its own states.
:func:`batched_graph` checks that every op of the graph is of a kind that keeps samples apart (and
that no slice, concat or reduction touches axis 0) before it rewrites the dimension; anything else
(a Reshape, Flatten to axis 0, an op it does not know) leaves batching off for that bundle.

Measured here (docs/performance.md, `edge-tsm bench`): at 224x224 INT8 one call for 4 frames costs
0.97x per frame on ONNX Runtime and 0.72x on OpenVINO (static copies per batch size), against 4 calls;
at 112x112 0.85x and 0.69x.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edge.cache import cache_folder, private_folder, sha256, verified, write_checked
from edge.cache import label as cache_label
from edge.errors import InputError
from edge.paths import path_error, show_path

logger = logging.getLogger(__name__)

_VERSION = "v1"  # of the rewrite below: a change to it must not reuse copies made by the old one

# Ops that treat every sample of the batch alone, whatever their attributes (axis checks below).
_PER_SAMPLE = {"Conv", "ConvInteger", "QLinearConv", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Add",
               "Sub", "Mul", "Div", "BatchNormalization", "AveragePool", "MaxPool", "GlobalAveragePool",
               "GlobalMaxPool", "QuantizeLinear", "DequantizeLinear", "Constant", "Identity", "Cast", "MatMul",
               "Gemm", "LeakyRelu", "PRelu"}


def graph_constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """The graph's initializers and Constant nodes' values by name (what a rewrite may read as fixed)."""
    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _why_not(model: onnx.ModelProto) -> str | None:
    """None when every node keeps the samples of a batch apart; else the first reason it does not."""
    g = model.graph
    consts = graph_constants(g)
    for v in (*g.input, *g.output):
        dims = v.type.tensor_type.shape.dim
        if not dims or dims[0].dim_value != 1:
            return f"{v.name} has no batch dimension of 1"
    for n in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type in ("Concat", "Softmax", "LogSoftmax"):
            if attrs.get("axis", 1 if n.op_type == "Concat" else -1) == 0:
                return f"{n.op_type} {n.name} works along axis 0"
        elif n.op_type == "Flatten":
            if attrs.get("axis", 1) < 1:
                return f"Flatten {n.name} folds the batch"
        elif n.op_type == "Slice":
            axes = consts.get(n.input[3]) if len(n.input) > 3 and n.input[3] else None
            if axes is None or 0 in axes.tolist():
                return f"Slice {n.name} may cut along axis 0"
        elif n.op_type.startswith("Reduce"):
            axes = attrs.get("axes")
            if axes is None and len(n.input) > 1 and n.input[1]:
                axes = consts.get(n.input[1])
                axes = None if axes is None else axes.tolist()
            if axes is None or 0 in list(axes):
                return f"{n.op_type} {n.name} may reduce over the batch"
        elif n.op_type == "Gemm":
            if attrs.get("transA", 0):
                return f"Gemm {n.name} transposes its batch input"
        elif n.op_type not in _PER_SAMPLE:
            return f"op {n.op_type} ({n.name}) is not known to keep samples apart"
    return None


def batched_graph(path: str | Path, cache_dir: str | Path | None = None) -> Path | None:
    """A copy of the online graph at ``path`` with a symbolic batch dimension, or None (logged) when
    the graph is not safe to batch.

    The copy lives in the cache folder (``cache_dir``: the config's or systemd's; default
    ``$XDG_CACHE_HOME/edge-tsm`` or ``~/.cache/edge-tsm``: see :mod:`edge.cache`), which must be this
    user's alone. Its name holds the source graph's SHA-256 (and the rewrite's version), and beside it
    ``<name>.sha256`` holds the copy's own; a copy that does not match (changed, planted, a symlink, half
    of a crashed write) is rebuilt, with a warning, before the engines see it.

    Raises:
        InputError: the cache folder cannot be made, or another user could write in it (exit 66).
    """
    path = Path(path)
    data = path.read_bytes()
    model = onnx.load_from_string(data)
    why = _why_not(model)
    if why:
        logger.info("batching off for %s: %s", path.name, why)
        return None
    if cache_dir is not None:
        folder = private_folder(cache_dir, cache_label(cache_dir))
    else:
        folder = private_folder(*cache_folder())
    out = folder / f"batched-{_VERSION}-{sha256(data)}.onnx"
    ok, bad = verified(out)
    if ok:
        return out
    if bad:
        logger.warning("batched graph %s: %s; rebuilding it from %s", show_path(out), bad, show_path(path))
    for v in (*model.graph.input, *model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]  # intermediate shapes were inferred for N = 1
    try:
        write_checked(out, model.SerializeToString())  # another process may be writing it too: atomic
    except OSError as e:
        raise InputError(f"batched graph {show_path(out)}: cannot write ({path_error(e, out)})") from None
    return out
