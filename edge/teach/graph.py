"""The base graph around its classifier: where to cut, a features-only copy, and a copy with a new head.

An online bundle's output (``output.name`` of model.yaml) is made by a classifier over pooled features:
``Gemm(features, W, b)``, ``MatMul`` or ``MatMul`` + ``Add``; in a QDQ INT8 graph with
QuantizeLinear/DequantizeLinear pairs on its input, weights and output. :func:`find_cut` walks back from
the output to that classifier and names the features tensor (before any Q/DQ of it, so an INT8 graph's
head reads the same float features the backbone's calibration produced). :func:`features_model` drops
the classifier and makes the features a graph output; :func:`graft` splices a new head in its place:

    x = ((features - mean) * inv_std) @ P                   (standardised and projected, [N, d])
    window = Concat(history, x)                             ([N, K*d]: the last K frames, oldest first)
    logits = window @ W + b                                 (a linear map of the window)
    history_out = window[:, d:]                             (a new state, zeros at a reset)

Every op keeps the samples of a batch apart (:mod:`edge.batching` can still batch the graph).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.batching import graph_constants
from edge.errors import ModelError

_QDQ = ("QuantizeLinear", "DequantizeLinear", "Identity")
HISTORY_IN = "teach_history"
HISTORY_OUT = "teach_history_out"


@dataclass(frozen=True)
class Cut:
    """Where the classifier starts: the features tensor (``[1, dim]``) and the nodes that make the output."""

    features: str
    dim: int
    classes: int
    weight: np.ndarray | None = None   # the base classifier, [D, classes] (None for a MatMul without bias known)
    bias: np.ndarray | None = None

    def base_logits(self, feats: np.ndarray) -> np.ndarray:
        """The base classifier's logits for features (T x D), as the cut-away head computed them (float)."""
        if self.weight is None:
            raise ModelError("teach: the base classifier's weights are not known")
        return feats @ self.weight + (0 if self.bias is None else self.bias)


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def find_cut(model: onnx.ModelProto, output: str, where: str) -> Cut:
    """The classifier that makes ``output`` and the features it reads.

    Raises:
        ModelError: ``output`` is not made by a Gemm/MatMul(+Add) over a [1, D] features tensor.
    """
    g = model.graph
    prod = _producers(g)
    consts = graph_constants(g)

    def back(name: str) -> onnx.NodeProto | None:
        """The first node up from ``name`` that is not a Q/DQ/Identity."""
        node = prod.get(name)
        while node is not None and node.op_type in _QDQ:
            node = prod.get(node.input[0])
        return node

    def weight(name: str) -> np.ndarray | None:
        """A constant, or a constant behind DequantizeLinear (QDQ weights)."""
        if name in consts:
            return consts[name]
        node = prod.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in consts:
            return consts[node.input[0]]
        return None

    def refuse(why: str) -> ModelError:
        return ModelError(f"{where}: teach cannot cut a head from this graph: output {output!r} {why} "
                          "(expected a Gemm or MatMul(+Add) over pooled [1, D] features)")

    add_bias = None
    if output not in prod:
        raise refuse("is not made by any node")
    node = back(output)
    if node is None:
        raise refuse("comes straight from an input")
    bias_ok = True
    if node.op_type == "Add":
        a, b = (prod.get(i) for i in node.input)
        mm = next((n for n in (a, b) if n is not None and n.op_type == "MatMul"), None)
        other = node.input[1] if mm is a else node.input[0]
        if mm is None or weight(other) is None:
            raise refuse(f"is made by {node.op_type} {node.name!r}")
        add_bias = weight(other)
        node = mm
    if node.op_type not in ("Gemm", "MatMul"):
        raise refuse(f"is made by {node.op_type} {node.name!r}")
    w = weight(node.input[1])
    if w is None or w.ndim != 2:
        raise refuse(f"is made by {node.op_type} {node.name!r} whose weights are not a constant matrix")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    bias = None
    if node.op_type == "Gemm":
        if attrs.get("transA", 0):
            raise refuse(f"is made by Gemm {node.name!r} with transA")
        w = w.T if attrs.get("transB", 0) else w
        if len(node.input) > 2 and node.input[2]:
            bias = weight(node.input[2])
            bias_ok = bias is not None
    elif add_bias is not None:
        bias = add_bias
    dim, classes = w.shape
    if not bias_ok:
        raise refuse(f"is made by Gemm {node.name!r} whose bias is not a constant")
    feat = node.input[0]
    fnode = prod.get(feat)
    while fnode is not None and fnode.op_type in _QDQ:  # the float features before their Q/DQ
        feat = fnode.input[0]
        fnode = prod.get(feat)
    if fnode is None:
        raise refuse("reads a graph input directly, not features computed by the network")
    scale = _dq_scale(prod, consts, node.input[1])
    wf = w.astype(np.float32) * scale if scale is not None else w.astype(np.float32)
    bf = None if bias is None else np.asarray(bias, np.float32).reshape(-1)
    return Cut(feat, int(dim), int(classes), wf, bf)


def _dq_scale(prod: dict[str, onnx.NodeProto], consts: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    """The per-column scale of QDQ weights (DequantizeLinear of an integer constant), laid out like [D, C]."""
    node = prod.get(name)
    if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in consts:
        return None
    return np.asarray(consts[node.input[1]], np.float32).reshape(1, -1)


def _prune(model: onnx.ModelProto) -> None:
    """Remove nodes none of whose outputs is used (repeatedly), then the initializers nothing reads and the
    shapes of tensors no node makes any more."""
    g = model.graph
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)
    made = {o for n in g.node for o in n.output}
    for v in [v for v in g.value_info if v.name not in made]:
        g.value_info.remove(v)


def _drop_output(model: onnx.ModelProto, name: str) -> None:
    g = model.graph
    for o in [o for o in g.output if o.name == name]:
        g.output.remove(o)
    for v in [v for v in g.value_info if v.name == name]:
        g.value_info.remove(v)


FEATURES_OUT = "teach_features"


def features_model(model: onnx.ModelProto, output: str, cut: Cut) -> onnx.ModelProto:
    """A copy of the online graph whose first output is the features (``teach_features``, [1, D]) in
    place of ``output``; the states stay as they are."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _drop_output(m, output)
    # the features tensor itself renamed (an Identity would be folded away by OpenVINO, and its output name
    # with it)
    for n in m.graph.node:
        for seq in (n.input, n.output):
            for i, name in enumerate(seq):
                if name == cut.features:
                    seq[i] = FEATURES_OUT
    m.graph.output.insert(0, helper.make_tensor_value_info(FEATURES_OUT, TensorProto.FLOAT, [1, cut.dim]))
    _prune(m)
    return m


@dataclass
class HeadWeights:
    """The head as the graph holds it: standardisation, a window of ``frames`` frames and one linear map."""

    mean: np.ndarray      # [D]
    inv_std: np.ndarray   # [D]
    weight: np.ndarray    # [frames * d, C], rows oldest frame first
    bias: np.ndarray      # [C]
    frames: int
    proj: np.ndarray | None = None   # [D, d] (None: d = D)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def width(self) -> int:
        """d: what one frame holds in the window."""
        return int(self.proj.shape[1]) if self.proj is not None else self.dim


def graft(model: onnx.ModelProto, output: str, cut: Cut, head: HeadWeights) -> onnx.ModelProto:
    """A copy of ``model`` whose ``output`` comes from ``head`` over the cut features; the old head is
    removed. With a window of more than one frame a state ``teach_history`` -> ``teach_history_out``
    ([1, (frames - 1) * d]) is added as the last input/output."""
    if head.dim != cut.dim:
        raise ModelError(f"teach: the head reads {head.dim} features, the graph gives {cut.dim}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    _drop_output(m, output)
    g.output.insert(0, helper.make_tensor_value_info(cut.features, TensorProto.FLOAT, None))  # kept while pruning
    _prune(m)  # the old head goes: nothing reads it any more
    g.output.remove(g.output[0])
    d, k = head.width, head.frames
    init = [numpy_helper.from_array(np.asarray(a, np.float32), name=f"teach/{n}")
            for n, a in (("mean", head.mean.reshape(1, head.dim)), ("inv_std", head.inv_std.reshape(1, head.dim)),
                         ("weight", head.weight), ("bias", head.bias))]
    g.initializer.extend(init)
    nodes = [helper.make_node("Sub", [cut.features, "teach/mean"], ["teach/centred"], name="teach/Sub"),
             helper.make_node("Mul", ["teach/centred", "teach/inv_std"], ["teach/std"], name="teach/Mul")]
    if head.proj is not None:
        g.initializer.append(numpy_helper.from_array(np.asarray(head.proj, np.float32), name="teach/proj"))
        nodes.append(helper.make_node("MatMul", ["teach/std", "teach/proj"], ["teach/x"], name="teach/MatMul"))
    else:
        nodes.append(helper.make_node("Identity", ["teach/std"], ["teach/x"], name="teach/Identity"))
    window = "teach/x"
    if k > 1:
        g.initializer.extend([numpy_helper.from_array(np.array([d], np.int64), name="teach/keep_start"),
                              numpy_helper.from_array(np.array([k * d], np.int64), name="teach/keep_end"),
                              numpy_helper.from_array(np.array([1], np.int64), name="teach/axis1")])
        nodes += [helper.make_node("Concat", [HISTORY_IN, "teach/x"], ["teach/window"], name="teach/Concat", axis=1),
                  helper.make_node("Slice", ["teach/window", "teach/keep_start", "teach/keep_end", "teach/axis1"],
                                   [HISTORY_OUT], name="teach/Slice")]
        window = "teach/window"
        g.input.append(helper.make_tensor_value_info(HISTORY_IN, TensorProto.FLOAT, [1, (k - 1) * d]))
    nodes.append(helper.make_node("Gemm", [window, "teach/weight", "teach/bias"], [output], name="teach/Gemm"))
    g.node.extend(nodes)
    g.output.insert(0, helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, head.weight.shape[1]]))
    if k > 1:
        g.output.append(helper.make_tensor_value_info(HISTORY_OUT, TensorProto.FLOAT, [1, (k - 1) * d]))
    _prune(m)
    onnx.checker.check_model(m)
    return m
