"""Online classification: states fed back frame by frame, reset, clip windows; both engines and numpy agree."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from tinymodel import build_tiny_bundle, build_tiny_clip_bundle, reference

from edge.backends import ENGINES, available_engines, create_backend
from edge.bundle import load_bundle
from edge.classifier import OnlineClassifier
from edge.errors import DataError, ModelError

ENGINE_PARAMS = [pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None,
                                                             reason=f"{name} not installed"))
                 for name in ENGINES]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(build_tiny_bundle(tmp_path_factory.mktemp("tiny")))


def _frames(n: int, seed: int = 0, hw=(24, 32)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*hw, 3), np.uint8) for _ in range(n)]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z.reshape(-1).astype(np.float64) - z.max())
    return e / e.sum()


def _classifier(bundle, engine: str) -> OnlineClassifier:
    return OnlineClassifier(bundle, create_backend(engine, bundle.graph_path()))


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_steps_equal_numpy_reimplementation(bundle, engine):
    clf = _classifier(bundle, engine)
    frames = _frames(8)
    inputs = [clf.preprocess(f).copy() for f in frames]
    want = [_softmax(z) for z in reference().run_sequence(inputs)]
    got = [clf.step(f) for f in frames]
    for g, w in zip(got, want, strict=False):
        assert g.dtype == np.float32 and g.shape == (3,)
        np.testing.assert_allclose(g, w, atol=1e-5)
        assert abs(float(g.sum()) - 1) < 1e-5
    # States matter: the same frame again scores differently than after a reset.
    clf.reset()
    a, b = clf.step(frames[0]), clf.step(frames[0])
    assert not np.allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(a, want[0], atol=1e-5)


@pytest.mark.skipif(len(available_engines()) < 2, reason="needs two engines")
def test_engines_agree_frame_by_frame(bundle):
    a, b = (_classifier(bundle, e) for e in available_engines()[:2])
    for f in _frames(12, seed=3, hw=(48, 64)):
        np.testing.assert_allclose(a.step(f), b.step(f), atol=1e-5)


def test_reset_starts_over(bundle):
    clf = _classifier(bundle, available_engines()[0])
    frames = _frames(5, seed=4)
    first = [clf.step(f) for f in frames]
    assert clf.frames == 5
    clf.reset()
    assert clf.frames == 0
    assert all(not s.any() for name, s in clf._feeds.items() if name.startswith("state"))
    again = [clf.step(f) for f in frames]
    for a, b in zip(first, again, strict=False):
        np.testing.assert_array_equal(a, b)


def test_step_input_and_its_checks(bundle):
    clf = _classifier(bundle, available_engines()[0])
    x = np.random.default_rng(5).normal(size=(1, 3, 16, 16)).astype(np.float32)
    want = _softmax(reference().run_sequence([x])[0])
    np.testing.assert_allclose(clf.step_input(x), want, atol=1e-5)
    with pytest.raises(DataError, match=r"expected float32 \[1, 3, 16, 16\]"):
        clf.step_input(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(DataError):
        clf.step_input(x.astype(np.float64))


def test_backend_of_another_graph_is_refused(bundle, tmp_path):
    clip = build_tiny_clip_bundle(tmp_path / "clip")
    with pytest.raises(ModelError, match="does not match model.yaml"):
        OnlineClassifier(bundle, create_backend(available_engines()[0], clip / "model.onnx"))


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_clip_bundle_runs_as_sliding_window(engine, tmp_path):
    t = 4
    b = load_bundle(build_tiny_clip_bundle(tmp_path / "clip", clip_frames=t))
    clf = _classifier(b, engine)
    frames = _frames(7, seed=6)
    xs = [clf.preprocess(f).copy()[0] for f in frames]
    ref = reference(clip_frames=t)
    for i, f in enumerate(frames):
        window = [xs[0]] * max(0, t - 1 - i) + xs[max(0, i - t + 1):i + 1]  # padded with the first frame
        want = _softmax(ref.clip(np.stack(window)[None]))
        np.testing.assert_allclose(clf.step(f), want, atol=1e-5)
    clf.reset()
    np.testing.assert_allclose(clf.step(frames[3]), _softmax(ref.clip(np.stack([xs[3]] * t)[None])), atol=1e-5)


@pytest.mark.parametrize("engine, static", [*((e, False) for e in ENGINES), ("openvino", True)])
@pytest.mark.parametrize("which", ["tiny", "default"])
def test_batched_steps_equal_one_camera_at_a_time(bundle, engine, static, which, tmp_path):
    """Three cameras stepped together through the batched graph give each camera exactly what it gets
    alone: the rows keep their own states (the default model's real graph, FP32 and INT8 alike). On
    OpenVINO also with a static-shape copy per batch size (what the daemon compiles there)."""
    pytest.importorskip(engine)
    from edge.batching import batched_graph
    from edge.classifier import BatchStepper
    b = bundle if which == "tiny" else load_bundle("default")
    precisions = ["fp32"] if which == "tiny" else ["fp32", "int8"]
    for prec in precisions:
        path = batched_graph(b.graph_path(prec), tmp_path)
        assert path is not None
        single = [OnlineClassifier(b, create_backend(engine, b.graph_path(prec))) for _ in range(3)]
        batched = [OnlineClassifier(b, single[0].backend) for _ in range(3)]
        stepper = BatchStepper(b, create_backend(engine, path), max_batch=3 if static else 0)
        if static:
            assert sorted(stepper.backend._static) == [2, 3]
        streams = [_frames(6, seed=k, hw=(48, 64)) for k in range(3)]
        for t in range(6):
            rows = [k for k in range(3) if not (k == 2 and t in (1, 2))]  # camera 2 skips two rounds
            alone = [single[k].step(streams[k][t]) for k in rows]
            together = stepper.step([batched[k] for k in rows],
                                    [batched[k].preprocess(streams[k][t]).copy() for k in rows])
            for a, g in zip(alone, together, strict=False):
                np.testing.assert_allclose(g, a, atol=2e-5 if prec == "fp32" else 2e-3)


def test_graphs_that_mix_samples_are_not_batched(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from edge.batching import batched_graph
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 4])
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g", [x], [y], [shape])
    onnx.save(helper.make_model(g), str(tmp_path / "m.onnx"))
    assert batched_graph(tmp_path / "m.onnx", tmp_path) is None
