"""Bundle loading: model.yaml schema errors, missing files, and the yaml checked against the graph."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from tinymodel import LABELS, STATE_SHAPES, build_tiny_bundle, build_tiny_clip_bundle

import edge.models
from edge.bundle import Bundle, load_bundle, validate_graph
from edge.errors import EX_NOINPUT, InputError, ModelError


def _states(shape0=STATE_SHAPES[0], shape1=STATE_SHAPES[1]) -> list[dict]:
    return [{"input": "state0", "output": "state0_out", "shape": list(shape0)},
            {"input": "state1", "output": "state1_out", "shape": list(shape1)}]


def _error(tmp_path: Path, exc: type[Exception], **kw) -> str:
    root = build_tiny_bundle(tmp_path / "b", **kw)
    with pytest.raises(exc) as info:
        load_bundle(root)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_load_fields_and_graph_path(tmp_path):
    root = build_tiny_bundle(tmp_path / "b")
    for ref in (root, str(root), root / "model.yaml"):
        b = load_bundle(ref)
        assert isinstance(b, Bundle) and b.root == root.resolve()
    assert b.name == "tiny_online" and b.kind == "online" and b.labels == LABELS
    assert b.input.name == "frame" and b.input.size == (16, 16) and b.input.mean == (0.5, 0.5, 0.5)
    assert [s.shape for s in b.states] == STATE_SHAPES and b.states[0].output == "state0_out"
    assert b.output_name == "logits" and b.temporal.clip_frames == 4 and b.precision == "fp32"
    assert b.graph_path() == root.resolve() / "model.onnx" == b.graph_path("fp32")
    with pytest.raises(ModelError, match=r"precision 'int8' has no graph file \(this bundle has: fp32\)"):
        b.graph_path("int8")
    with pytest.raises(ValidationError, match="frozen"):
        b.name = "other"  # type: ignore[misc]
    assert b.model_copy(update={"files": {"fp32": "other.onnx"}}).graph_path() == root.resolve() / "other.onnx"


def test_the_runtime_imports_bundles_and_synthetic_cameras_without_the_toolchain():
    code = ("import sys, edge.bundle, edge.capture.synthetic; edge.bundle.load_bundle('default', validate=False); "
            "bad = [m for m in sys.modules if m.startswith('edge.models') or m == 'torch']; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_default_resolves_inside_the_package():
    default = Path(edge.models.__file__).parent / "default"
    if (default / "model.yaml").is_file():
        assert load_bundle("default").root == default.resolve()
    else:
        with pytest.raises(InputError, match="'default'"):
            load_bundle("default")


def test_missing_things_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such bundle") as info:
        load_bundle(tmp_path / "nothing")
    assert info.value.exit_code == EX_NOINPUT
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no model.yaml"):
        load_bundle(tmp_path / "empty")
    msg = _error(tmp_path, InputError, yaml_patch={"files": {"int8": "model.int8.onnx"}})
    assert "files.int8" in msg and "model.int8.onnx not found" in msg


def test_yaml_errors_name_key_value_and_what_is_allowed(tmp_path):
    msg = _error(tmp_path, ModelError, yaml_patch={"input": {"size": "abc"}})
    where = f"model.yaml {(tmp_path / 'b' / 'model.yaml')}"
    assert msg == f"{where}: input.size: expected [H, W] of positive ints, got 'abc'"
    msg = _error(tmp_path, ModelError, yaml_patch={"colour": "RGB", "input": {"colour": "rgb", "size": [16, 0]},
                                                   "temporal": {"fps": -1}})
    assert "colour: unknown key (allowed: format, kind, name" in msg
    assert "input.colour: expected 'RGB' or 'BGR', got 'rgb'" in msg
    assert "input.size: expected [H, W] of positive ints, got [16, 0]" in msg
    assert "temporal.fps: expected a positive number, got -1" in msg
    assert "labels: required key missing" in _error(tmp_path, ModelError, yaml_patch={"labels": None})
    assert "red repeated" in _error(tmp_path, ModelError, yaml_patch={"labels": ["red", "red", "blue"]})
    msg = _error(tmp_path, ModelError, yaml_patch={"states": [{"input": "state0", "output": "o", "shape": [1, "x"]}]})
    assert "states[0].shape: expected a list of positive ints, got [1, 'x']" in msg
    msg = _error(tmp_path, ModelError, yaml_patch={"files": {"f32": "model.onnx"}})
    assert "files.f32 (key): expected 'fp32', 'fp16' or 'int8', got 'f32'" in msg
    msg = _error(tmp_path, ModelError, yaml_patch={"precision": "int8"})
    assert "precision: 'int8' has no entry in files (files has: fp32)" in msg


def test_yaml_that_is_not_a_mapping(tmp_path):
    root = build_tiny_bundle(tmp_path / "b")
    (root / "model.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ModelError, match="expected a mapping"):
        load_bundle(root)
    (root / "model.yaml").write_text("labels: [a, b\n")
    with pytest.raises(ModelError, match="not valid YAML"):
        load_bundle(root)


def test_graph_state_shape_mismatch_names_both_shapes(tmp_path):
    msg = _error(tmp_path, ModelError, yaml_patch={"states": _states(shape1=(1, 3, 4, 4))})
    assert msg.startswith(f"model.onnx {(tmp_path / 'b' / 'model.onnx')}: ")
    assert "state input 'state1' is [1, 2, 4, 4] in the graph, states[1].shape says [1, 3, 4, 4]" in msg
    assert "state output 'state1_out' is [1, 2, 4, 4] in the graph" in msg
    assert "state0" not in msg


def test_graph_missing_output_unfed_input_and_wrong_names(tmp_path):
    msg = _error(tmp_path, ModelError, drop_output="state1_out")
    assert ("state output 'state1_out' (states[1].output) is not a graph output "
            "(graph outputs: logits, state0_out)") in msg
    msg = _error(tmp_path, ModelError, extra_input="mystery")
    assert "graph input 'mystery' is fed by nothing in model.yaml" in msg
    msg = _error(tmp_path, ModelError, rename={"frame": "image"})
    assert "input 'frame' (input.name) is not a graph input (graph inputs: image, state0, state1)" in msg
    assert "graph input 'image' is fed by nothing" in msg and "; " in msg
    msg = _error(tmp_path, ModelError, yaml_patch={"labels": ["a", "b"]})
    assert "output 'logits' is [1, 3] in the graph, labels (2) says [1, 2]" in msg
    msg = _error(tmp_path, ModelError, yaml_patch={"input": {"size": [16, 20]}})
    assert "input 'frame' is [1, 3, 16, 16] in the graph, model.yaml input.size says [1, 3, 16, 20]" in msg


def test_not_an_onnx_file(tmp_path):
    root = build_tiny_bundle(tmp_path / "b")
    (root / "model.onnx").write_bytes(b"\x08\x07 certainly not a protobuf \xff\xff")
    with pytest.raises(ModelError, match=r"model.onnx .*: not a valid ONNX file \(") as info:
        load_bundle(root)
    assert "\n" not in str(info.value)
    b = load_bundle(root, validate=False)  # the yaml alone is fine
    with pytest.raises(ModelError, match="not a valid ONNX file"):
        validate_graph(b)


def test_clip_bundle(tmp_path):
    root = build_tiny_clip_bundle(tmp_path / "c", clip_frames=4)
    b = load_bundle(root)
    assert b.kind == "clip" and b.states == [] and b.input.name == "clip"
    spec = yaml.safe_load((root / "model.yaml").read_text())
    spec["temporal"]["clip_frames"] = 6
    (root / "model.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ModelError, match=r"input 'clip' is \[1, 4, 3, 16, 16\] in the graph"):
        load_bundle(root)
    spec["states"] = [{"input": "s", "output": "s_out", "shape": [1]}]
    (root / "model.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ModelError, match="kind clip takes no state tensors"):
        load_bundle(root)


def test_truncated_onnx_file(tmp_path):
    """A copy cut short (a full disk, an interrupted download) is a one-line ModelError, not a crash."""
    root = build_tiny_bundle(tmp_path / "b")
    data = (root / "model.onnx").read_bytes()
    (root / "model.onnx").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelError, match=r"model.onnx .*: not a valid ONNX file") as info:
        load_bundle(root)
    assert "\n" not in str(info.value)
