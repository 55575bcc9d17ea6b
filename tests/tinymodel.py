"""Tiny model bundles built with ``onnx.helper`` (no torch), plus a numpy reference of each graph.

The online graph: input ``frame`` 1x3x16x16 and two states, 1x1x8x8 and 1x2x4x4.

* ``state0_out = 0.5 * mean_c(avgpool2(frame)) + 0.5 * state0`` (a recurrence: the whole past counts);
* ``state1_out = avgpool4(frame)[:, :2]`` (like a TSM shift: the previous frame only);
* ``logits = flat(frame) @ W0 + flat(state0) @ W1 + flat(state1) @ W2 + b`` (the *incoming* states).

``W0`` holds, for each of the first three classes, the mean of one RGB channel, so a clip that is
mostly red, green or blue is classified as ``red``, ``green`` or ``blue``; small random weights on
everything else make every pixel and both states matter.

The clip graph: input 1xTx3x16x16, a weighted mean over time then the same ``W0`` and ``b``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

LABELS = ["red", "green", "blue"]
SIZE = (16, 16)
STATE_SHAPES = [(1, 1, 8, 8), (1, 2, 4, 4)]
MEAN = [0.5, 0.5, 0.5]
STD = [0.25, 0.25, 0.25]
OPSET = 17


@dataclass
class TinyWeights:
    w0: np.ndarray  # 768 x K
    w1: np.ndarray  # 64 x K
    w2: np.ndarray  # 32 x K
    b: np.ndarray   # K
    tw: np.ndarray  # T, clip graph only: weights over time

    @classmethod
    def make(cls, k: int, seed: int = 0, clip_frames: int = 4) -> TinyWeights:
        rng = np.random.default_rng(seed)
        w0 = rng.normal(0, 0.002, (768, k)).astype(np.float32)
        for c in range(min(3, k)):
            w0[c * 256:(c + 1) * 256, c] += 1.0 / 256
        w1 = rng.normal(0, 0.02, (64, k)).astype(np.float32)
        w2 = rng.normal(0, 0.02, (32, k)).astype(np.float32)
        b = rng.normal(0, 0.01, k).astype(np.float32)
        tw = np.linspace(0.5, 1.5, clip_frames).astype(np.float32)
        return cls(w0, w1, w2, b, tw)


class TinyReference:
    """The tiny graphs in numpy (float64 internally, float32 out)."""

    def __init__(self, weights: TinyWeights) -> None:
        self.w = weights

    def step(self, frame: np.ndarray, s0: np.ndarray, s1: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = frame.astype(np.float64)
        p2 = f.reshape(1, 3, 8, 2, 8, 2).mean((3, 5))
        p4 = f.reshape(1, 3, 4, 4, 4, 4).mean((3, 5))
        s0n = 0.5 * p2.mean(1, keepdims=True) + 0.5 * s0
        s1n = p4[:, :2]
        logits = f.reshape(1, -1) @ self.w.w0 + s0.reshape(1, -1) @ self.w.w1 + s1.reshape(1, -1) @ self.w.w2 + self.w.b
        return logits.astype(np.float32), s0n.astype(np.float32), s1n.astype(np.float32)

    def run_sequence(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Logits of each frame with the states fed back, starting from zeros."""
        s0, s1 = (np.zeros(s, np.float32) for s in STATE_SHAPES)
        out = []
        for x in frames:
            logits, s0, s1 = self.step(x, s0, s1)
            out.append(logits)
        return out

    def clip(self, x: np.ndarray) -> np.ndarray:
        f = (x.astype(np.float64) * self.w.tw.reshape(1, -1, 1, 1, 1)).mean(1)
        return (f.reshape(1, -1) @ self.w.w0 + self.w.b).astype(np.float32)


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def online_graph(w: TinyWeights, *, drop_output: str | None = None, extra_input: str | None = None,
                 rename: dict[str, str] | None = None) -> onnx.ModelProto:
    """The online tiny graph; ``drop_output``/``extra_input``/``rename`` make it disagree with the yaml."""
    k = w.b.shape[0]
    n = {"frame": "frame", "state0": "state0", "state1": "state1", "logits": "logits",
         "state0_out": "state0_out", "state1_out": "state1_out"}
    n.update(rename or {})
    nodes = [
        helper.make_node("AveragePool", [n["frame"]], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("ReduceMean", ["p2"], ["m2"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["m2", "half"], ["m2h"]),
        helper.make_node("Mul", [n["state0"], "half"], ["s0h"]),
        helper.make_node("Add", ["m2h", "s0h"], [n["state0_out"]]),
        helper.make_node("AveragePool", [n["frame"]], ["p4"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Slice", ["p4", "starts", "ends", "axes"], [n["state1_out"]]),
        helper.make_node("Flatten", [n["frame"]], ["ff"], axis=1),
        helper.make_node("Flatten", [n["state0"]], ["f0"], axis=1),
        helper.make_node("Flatten", [n["state1"]], ["f1"], axis=1),
        helper.make_node("MatMul", ["ff", "W0"], ["l0"]),
        helper.make_node("MatMul", ["f0", "W1"], ["l1"]),
        helper.make_node("MatMul", ["f1", "W2"], ["l2"]),
        helper.make_node("Add", ["l0", "l1"], ["l01"]),
        helper.make_node("Add", ["l01", "l2"], ["l012"]),
        helper.make_node("Add", ["l012", "B"], [n["logits"]]),
    ]
    inits = [_init("half", np.float32(0.5)), _init("starts", np.array([0], np.int64)),
             _init("ends", np.array([2], np.int64)), _init("axes", np.array([1], np.int64)),
             _init("W0", w.w0), _init("W1", w.w1), _init("W2", w.w2), _init("B", w.b)]
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(n["frame"], f32, [1, 3, *SIZE]),
              helper.make_tensor_value_info(n["state0"], f32, list(STATE_SHAPES[0])),
              helper.make_tensor_value_info(n["state1"], f32, list(STATE_SHAPES[1]))]
    if extra_input:
        inputs.append(helper.make_tensor_value_info(extra_input, f32, [1, 4]))
    outputs = [helper.make_tensor_value_info(n["logits"], f32, [1, k]),
               helper.make_tensor_value_info(n["state0_out"], f32, list(STATE_SHAPES[0])),
               helper.make_tensor_value_info(n["state1_out"], f32, list(STATE_SHAPES[1]))]
    outputs = [o for o in outputs if o.name != drop_output]
    graph = helper.make_graph(nodes, "tiny_online", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-tsm-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def clip_graph(w: TinyWeights) -> onnx.ModelProto:
    k, t = w.b.shape[0], w.tw.shape[0]
    nodes = [
        helper.make_node("Mul", ["clip", "TW"], ["cw"]),
        helper.make_node("ReduceMean", ["cw"], ["cm"], axes=[1], keepdims=0),
        helper.make_node("Flatten", ["cm"], ["ff"], axis=1),
        helper.make_node("MatMul", ["ff", "W0"], ["l0"]),
        helper.make_node("Add", ["l0", "B"], ["logits"]),
    ]
    inits = [_init("TW", w.tw.reshape(1, t, 1, 1, 1)), _init("W0", w.w0), _init("B", w.b)]
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "tiny_clip", [helper.make_tensor_value_info("clip", f32, [1, t, 3, *SIZE])],
                              [helper.make_tensor_value_info("logits", f32, [1, k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-tsm-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def model_yaml(labels: list[str], *, kind: str = "online", clip_frames: int = 4) -> dict[str, Any]:
    online = kind == "online"
    return {
        "format": 1,
        "kind": kind,
        "name": f"tiny_{kind}",
        "arch": "tiny",
        "labels": list(labels),
        "input": {"name": "frame" if online else "clip", "size": list(SIZE), "layout": "NCHW", "colour": "RGB",
                  "mean": list(MEAN), "std": list(STD), "resize": "short_side_crop", "crop_scale": 1.0},
        "output": {"name": "logits"},
        "states": [{"input": f"state{i}", "output": f"state{i}_out", "shape": list(s)}
                   for i, s in enumerate(STATE_SHAPES)] if online else [],
        "temporal": {"shift": "causal" if online else "bidirectional", "fps": 15, "frame_stride": 1,
                     "clip_frames": clip_frames},
        "precision": "fp32",
        "files": {"fp32": "model.onnx"},
        "provenance": {"data": "none: tests/tinymodel.py", "seed": 0},
    }


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; a value of ``None`` in ``patch`` deletes the key."""
    out = copy.deepcopy(base)
    for key, val in patch.items():
        if val is None:
            out.pop(key, None)
        elif isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], val)
        else:
            out[key] = val
    return out


def build_tiny_bundle(folder: str | Path, *, labels: list[str] | None = None, seed: int = 0,
                      yaml_patch: dict[str, Any] | None = None, drop_output: str | None = None,
                      extra_input: str | None = None, rename: dict[str, str] | None = None) -> Path:
    """Write ``model.onnx`` + ``model.yaml`` of the online tiny model into ``folder``; return it."""
    labels = labels or LABELS
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    w = TinyWeights.make(len(labels), seed)
    onnx.save(online_graph(w, drop_output=drop_output, extra_input=extra_input, rename=rename),
              str(folder / "model.onnx"))
    spec = _merge(model_yaml(labels), yaml_patch or {})
    (folder / "model.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return folder


def add_int8_graph(folder: str | Path, frames: int = 8, seed: int = 0) -> Path:
    """Quantize the tiny online bundle in ``folder`` (QDQ, onnxruntime's static quantization on random
    frames) into ``model.int8.onnx`` and list it as ``files.int8``; the precision stays fp32."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    feeds = [{"frame": rng.standard_normal((1, 3, *SIZE)).astype(np.float32),
              **{f"state{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(STATE_SHAPES)}}
             for _ in range(frames)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    quantize_static(str(folder / "model.onnx"), str(folder / "model.int8.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ)
    spec = yaml.safe_load((folder / "model.yaml").read_text(encoding="utf-8"))
    spec["files"]["int8"] = "model.int8.onnx"
    (folder / "model.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return folder


def build_tiny_clip_bundle(folder: str | Path, *, labels: list[str] | None = None, seed: int = 0,
                           clip_frames: int = 4) -> Path:
    labels = labels or LABELS
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    w = TinyWeights.make(len(labels), seed, clip_frames)
    onnx.save(clip_graph(w), str(folder / "model.onnx"))
    spec = model_yaml(labels, kind="clip", clip_frames=clip_frames)
    (folder / "model.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return folder


def reference(labels: list[str] | None = None, seed: int = 0, clip_frames: int = 4) -> TinyReference:
    """The numpy twin of the bundle built with the same ``labels`` and ``seed``."""
    return TinyReference(TinyWeights.make(len(labels or LABELS), seed, clip_frames))


# --- a video the tiny model classifies: colour segments ----------------------------------------------
COLOUR_BGR = {"red": (0, 0, 220), "green": (0, 200, 0), "blue": (210, 0, 0)}
COLOUR_SCRIPT = (("red", 20), ("green", 20), ("blue", 20))


def write_colour_video(path: str | Path, fourcc: str = "MJPG", fps: float = 15.0, size: tuple[int, int] = (64, 48),
                       script: tuple[tuple[str, int], ...] = COLOUR_SCRIPT) -> Path:
    """Write a clip of plain colour segments (with noise) that the tiny model tells apart."""
    import cv2
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not vw.isOpened():
        raise RuntimeError(f"cannot write {path} with {fourcc}")
    rng = np.random.default_rng(0)
    w, h = size
    for label, n in script:
        for _ in range(n):
            noise = rng.integers(-20, 20, (h, w, 3))
            vw.write(np.clip(np.array(COLOUR_BGR[label])[None, None] + noise, 0, 255).astype(np.uint8))
    vw.release()
    return Path(path)
