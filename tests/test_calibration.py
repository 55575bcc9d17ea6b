"""INT8 calibration and quantization end to end: a real MJPG recording, a small exported TSM bundle, both engines.

The TSM bundle (MobileNetV2-TSM width 0.25 at 32x32, exported by the training toolchain) needs torch;
the error-path tests use the onnx.helper bundle of tests/tinymodel.py and need no torch.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil

import cv2
import numpy as np
import pytest
import yaml
from tinymodel import build_tiny_bundle

from edge.backends import available_engines, create_backend
from edge.bundle import load_bundle
from edge.calibration.calibset import MANIFEST, load_calibration_set
from edge.calibration.collect import _budget, pick_segments
from edge.calibration.guard import decide
from edge.classifier import OnlineClassifier
from edge.cli import main

pytest.importorskip("onnxruntime")
LABELS = ["red", "green", "blue"]
COLOURS = {"red": (0, 0, 220), "green": (0, 200, 0), "blue": (210, 0, 0)}  # BGR
STILL, MOVING = 20, 16   # frames: still / a square moving / still again


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edge-tsm: error: "), err
    return lines[0]


# --- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A real MJPG .avi: a still noisy scene, a square crossing it, the still scene again."""
    path = tmp_path_factory.mktemp("rec") / "door.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (64, 48))
    assert vw.isOpened()
    rng = np.random.default_rng(0)
    bg = rng.integers(40, 120, (48, 64, 3)).astype(np.uint8)
    for i in range(STILL + MOVING + STILL):
        frame = bg.copy()
        if STILL <= i < STILL + MOVING:
            x = 2 + 3 * (i - STILL)
            frame[14:34, x:x + 16] = (30, 200, 230)
        vw.write(np.clip(frame.astype(np.int16) + rng.integers(-3, 4, frame.shape), 0, 255).astype(np.uint8))
    vw.release()
    return path


@pytest.fixture(scope="module")
def tsm_bundle(tmp_path_factory):
    """A small exported MobileNetV2-TSM bundle with non-trivial BN statistics and a confident classifier."""
    torch = pytest.importorskip("torch")
    from edge.models.export import export_bundle
    from edge.models.tsm import TSMNet
    torch.manual_seed(0)  # the convolutions' init draws from the global generator, which earlier tests move on
    net = TSMNet(len(LABELS), width=0.25)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
        net.classifier.weight.normal_(0, 0.5, generator=g)
    return export_bundle(net.eval(), tmp_path_factory.mktemp("tsm") / "b", LABELS, size=(32, 32), name="tiny_tsm")


@pytest.fixture(scope="module")
def calib_dir(recording, tsm_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("calib") / "set"
    assert main(["-q", "calibrate", "collect", "--from", str(recording), "--model", str(tsm_bundle), "--out", str(out),
                 "--max-frames", "24", "--segment", "8"]) == 0
    return out


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    rng = np.random.default_rng(1)
    for label, bgr in COLOURS.items():
        (root / label).mkdir()
        for i in range(2):
            vw = cv2.VideoWriter(str(root / label / f"c{i}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 15, (40, 32))
            for _ in range(6):
                noisy = np.array(bgr)[None, None] + rng.integers(-30, 30, (32, 40, 3))
                vw.write(np.clip(noisy, 0, 255).astype(np.uint8))
            vw.release()
    return root


@pytest.fixture(scope="module")
def quantized(tsm_bundle, calib_dir, heldout, tmp_path_factory):
    """The TSM bundle quantized through the CLI, with the accuracy guard and --debug."""
    out = tmp_path_factory.mktemp("q") / "int8"
    argv = ["-q", "quantize", "--model", str(tsm_bundle), "--calib", str(calib_dir), "--out", str(out),
            "--eval", str(heldout), "--max-drop", "100", "--debug", "3"]
    buf_out, buf_err = io.StringIO(), io.StringIO()  # capsys is per test; this runs once per module
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        code = main(argv)
    return {"code": code, "out": buf_out.getvalue(), "err": buf_err.getvalue(), "root": out}


# --- collecting ---------------------------------------------------------------------------------------------
def test_collect_from_a_recording_keeps_sequences_around_the_motion(recording, tsm_bundle, tmp_path, capsys):
    code, out, _ = _run(capsys, "-q", "calibrate", "collect", "--from", str(recording), "--model", str(tsm_bundle),
                        "--out", str(tmp_path / "c"), "--max-frames", "12", "--segment", "6")
    assert code == 0
    summary = json.loads(out)
    assert summary["frames"] <= 12 and summary["segments"] == 2 and summary["graph_fps"] == 15.0
    assert json.loads((tmp_path / "c" / MANIFEST).read_text())["summary"] == summary
    cs = load_calibration_set(tmp_path / "c")
    starts = [s.start for s in cs.segments]
    assert starts == sorted(starts)                       # in the order of the recording
    for ref, frames in cs.segments_frames():
        assert frames.dtype == np.uint8 and frames.shape == (ref.frames, 48, 64, 3)
        assert ref.score > 2.0                            # keyframes, not the still scene
        assert STILL - 6 <= ref.start <= STILL + MOVING   # around the moving square


def test_pick_segments_and_budget():
    scores = np.zeros(40, np.float32)
    scores[[10, 11, 30]] = [5.0, 6.0, 9.0]
    assert pick_segments(scores, 8, 2.0) == [(26, 8, 9.0), (7, 8, 6.0)]   # best first, no overlap
    assert pick_segments(np.zeros(40, np.float32), 8, 2.0) == [(16, 8, 0.0)]  # still video: its middle
    assert pick_segments(np.array([0, 3.0], np.float32), 8, 2.0) == [(0, 2, 3.0)]  # shorter than a segment
    ranked = [[(0, 8, 9.0), (20, 8, 3.0)], [(4, 8, 5.0)]]
    assert _budget(ranked, 20) == [[(0, 8, 9.0), (20, 4, 3.0)], [(4, 8, 5.0)]]  # round-robin, the last cut
    assert _budget(ranked, 10) == [[(0, 8, 9.0)], []]                          # too little left: stop


def test_collect_synth_is_reproducible(tsm_bundle, tmp_path, capsys):
    sets = []
    for name in ("a", "b"):
        code, out, _ = _run(capsys, "-q", "calibrate", "collect", "--synth", "--per-class", "1", "--max-frames", "30",
                            "--model", str(tsm_bundle), "--out", str(tmp_path / name))
        assert code == 0
        sets.append(load_calibration_set(tmp_path / name))
    summary = json.loads(out)
    assert summary["source"]["kind"] == "synth" and summary["source"]["seed"] == 2 and summary["frames"] == 30
    assert [s.frames for s in sets[0].segments] == [24, 6]  # 15 fps clips, stride 1: every frame; cut at 30
    for (_, fa), (_, fb) in zip(sets[0].segments_frames(), sets[1].segments_frames(), strict=False):
        assert np.array_equal(fa, fb)


# --- quantizing ---------------------------------------------------------------------------------------------
def test_quantize_end_to_end(quantized, tsm_bundle):
    import onnx
    assert quantized["code"] == 0, quantized["err"]
    res = json.loads(quantized["out"])
    root = quantized["root"]
    ops = [n.op_type for n in onnx.load(str(root / "model.int8.onnx")).graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    spec = yaml.safe_load((root / "model.yaml").read_text())
    assert spec["files"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    q = spec["quantization"]
    assert q["method"] == "minmax" and q["per_channel"] is True and q["format"] == "QDQ"
    assert q["versions"]["onnxruntime"] and q["calibration"]["frames"] == 24 and q["calibration"]["segments"] == 3
    assert q["guard"]["passed"] is True and spec["precision"] == "int8" and res["default"] is True
    assert set(q["guard"]["engines"]) == set(available_engines())
    bundle = load_bundle(root)
    assert bundle.precision == "int8" and bundle.quantization["file"] == "model.int8.onnx"
    assert "## INT8" in (root / "CARD.md").read_text()
    assert not (tsm_bundle / "model.int8.onnx").exists()  # --out: the source bundle is untouched
    # check's INT8 self-check: the sample's figures on this machine, per engine, and a device is held to them
    ref = q["guard"]["selfcheck"]
    assert "INT8 self-check reference" in (root / "CARD.md").read_text()
    assert ref["seed"] == 1 and ref["per_class"] == 4 and set(ref["engines"]) == set(available_engines())
    from edge.int8check import self_check
    for engine, figures in ref["engines"].items():
        assert figures["clips"] == 36 and 0 <= figures["mean_tv"] < 1 and 0 <= figures["frame_agreement"] <= 1
        here = self_check(bundle, engine)
        assert here["limits"]["reference_tv"] == figures["mean_tv"] and here["limits"]["max_tv"] is not None
        assert here["passed"] and here["mean_tv"] <= here["limits"]["max_tv"], here
    assert len(res["debug"]["activations"]) == 3 and "largest quantization errors" in quantized["err"]


@pytest.mark.parametrize("engine", available_engines())
def test_both_engines_run_int8_and_agree_with_fp32(quantized, recording, engine):
    bundle = load_bundle(quantized["root"])
    probs = {}
    for prec in ("fp32", "int8"):
        clf = OnlineClassifier(bundle, create_backend(engine, bundle.graph_path(prec)))
        cap = cv2.VideoCapture(str(recording))
        seq = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            seq.append(clf.step(frame))
        probs[prec] = np.array(seq)
    assert len(probs["int8"]) == STILL + MOVING + STILL
    agree = (probs["fp32"].argmax(1) == probs["int8"].argmax(1)).mean()
    assert agree >= 0.9 and np.abs(probs["fp32"] - probs["int8"]).max() < 0.2


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_openvino_runs_int8_convolutions(quantized):
    bundle = load_bundle(quantized["root"])
    int8 = create_backend("openvino", bundle.graph_path("int8"))
    fp32 = create_backend("openvino", bundle.graph_path("fp32"))
    convs = int8.layer_precisions("Convolution")
    assert convs and set(convs) <= {"u8", "i8"}, convs  # every convolution on INT8 kernels
    assert sum(convs.values()) == sum(fp32.layer_precisions("Convolution").values())
    assert fp32.layer_precisions("Convolution").keys() == {"f32"}


def test_guard_refusal_keeps_fp32(tsm_bundle, calib_dir, heldout, tmp_path, monkeypatch, caplog):
    import edge.calibration.guard as guard_mod

    def scripted(bundle, data, engine, **kw):  # INT8 loses 5 points on every engine
        return {"engine": engine, "n": 6, "agreement": 0.8, "fp32": {"accuracy": 0.5, "macro_f1": 0.5},
                "int8": {"accuracy": 0.45, "macro_f1": 0.4}, "drop_points": 5.0, "disagreements": []}
    monkeypatch.setattr(guard_mod, "paired_eval", scripted)
    from edge.calibration.pipeline import run_quantize
    res = run_quantize(tsm_bundle, calib_dir, out=tmp_path / "b", eval_data=heldout)
    spec = yaml.safe_load((tmp_path / "b" / "model.yaml").read_text())
    assert res["default"] is False and spec["precision"] == "fp32" and spec["files"]["int8"] == "model.int8.onnx"
    assert spec["quantization"]["guard"]["passed"] is False and "5.00 points" in spec["quantization"]["note"]
    assert any(r.levelname == "WARNING" and "NOT made the default" in r.message for r in caplog.records)


def test_decide():
    r = {"fp32": {"accuracy": 0.8}, "int8": {"accuracy": 0.79}, "drop_points": 1.0, "agreement": 0.985}
    assert decide({"onnxruntime": r}, 1.0) == []
    assert decide({"onnxruntime": r}, 0.5)[0].startswith("onnxruntime: accuracy drops 1.00 points")
    assert "agreement 0.9850 below 0.99" in decide({"openvino": r}, 1.0, 0.99)[0]


def test_bench_runs_side_by_side(quantized):
    from edge.bench.int8 import bench, format_bench
    res = bench(load_bundle(quantized["root"]), available_engines(), rounds=2, steps=2)
    assert [r["engine"] for r in res["rows"]] == available_engines()
    assert all(r["fp32_ms"] > 0 and r["int8_ms"] > 0 and r["ratio"] > 0 for r in res["rows"])
    assert "int8/fp32" in format_bench(res)


# --- bad input: one line, the right exit code ---------------------------------------------------------------
@pytest.fixture
def tiny(tmp_path):
    return build_tiny_bundle(tmp_path / "tiny")


def _set_with(tmp_path, frames=None, raw: bytes | None = None, segments: int = 1):
    root = tmp_path / "set"
    root.mkdir()
    segs = [{"file": "seg_00000.npz", "frames": 2, "source": "x", "start": 0, "step": 1, "score": 0.0}][:segments]
    (root / MANIFEST).write_text(json.dumps({"format": 1, "kind": "edge-tsm-calibration", "graph_fps": 15.0,
                                             "segments": segs, "summary": {}}))
    if raw is not None:
        (root / "seg_00000.npz").write_bytes(raw)
    elif frames is not None:
        np.savez_compressed(root / "seg_00000.npz", frames=frames)
    return root


@pytest.mark.parametrize("case, code, words", [
    ("missing", 66, "no such folder"),
    ("empty_dir", 66, "no calib.json"),
    ("no_segments", 65, "empty (no segments"),
    ("corrupt", 65, "not a readable .npz"),
    ("float_frames", 65, "expected frames of N x H x W x 3 uint8"),
    ("grey_frames", 65, "expected frames of N x H x W x 3 uint8"),
])
def test_bad_calibration_sets(case, code, words, tiny, tmp_path, capsys):
    calib = {
        "missing": lambda: tmp_path / "nope",
        "empty_dir": lambda: (tmp_path / "empty").mkdir() or tmp_path / "empty",
        "no_segments": lambda: _set_with(tmp_path, segments=0),
        "corrupt": lambda: _set_with(tmp_path, raw=b"PK\x03\x04 not really a zip"),
        "float_frames": lambda: _set_with(tmp_path, frames=np.zeros((2, 16, 16, 3), np.float32)),
        "grey_frames": lambda: _set_with(tmp_path, frames=np.zeros((2, 16, 16), np.uint8)),
    }[case]()
    rc, out, err = _run(capsys, "quantize", "--model", str(tiny), "--calib", str(calib))
    assert rc == code and out == ""
    assert words in _error_line(err)
    assert not (tiny / "model.int8.onnx").exists()


def test_bundle_without_fp32_graph(tiny, tmp_path, capsys):
    spec = yaml.safe_load((tiny / "model.yaml").read_text())
    shutil.move(tiny / "model.onnx", tiny / "model.int8.onnx")
    spec.update(precision="int8", files={"int8": "model.int8.onnx"})
    (tiny / "model.yaml").write_text(yaml.safe_dump(spec))
    calib = _set_with(tmp_path, frames=np.zeros((2, 16, 16, 3), np.uint8))
    rc, _, err = _run(capsys, "quantize", "--model", str(tiny), "--calib", str(calib))
    assert rc == 65 and "no FP32 graph" in _error_line(err)


def test_bad_recordings(tiny, tmp_path, capsys):
    rc, _, err = _run(capsys, "calibrate", "collect", "--from", str(tmp_path / "none.avi"), "--out",
                      str(tmp_path / "o"), "--model", str(tiny))
    assert rc == 66 and "no such file or folder" in _error_line(err)
    (tmp_path / "junk.avi").write_bytes(b"\x00" * 2048)
    rc, _, err = _run(capsys, "calibrate", "collect", "--from", str(tmp_path / "junk.avi"), "--out",
                      str(tmp_path / "o"), "--model", str(tiny))
    assert rc == 65 and "junk.avi" in _error_line(err)
    rc, _, err = _run(capsys, "calibrate", "collect", "--out", str(tmp_path / "o"), "--model", str(tiny))
    assert rc == 64 and "--from" in _error_line(err)


def test_runtime_runs_the_bundles_default_precision_and_says_so(quantized, recording, caplog):
    from edge.classify import classify_video
    with caplog.at_level("INFO"):
        res = classify_video(recording, model=str(quantized["root"]), engine="onnxruntime")
    assert res.frames_read == STILL + MOVING + STILL
    assert any("INT8 graph model.int8.onnx (the bundle's default)" in r.getMessage() for r in caplog.records)


def test_the_recipes_held_out_set_comes_from_the_generator_the_bundle_was_trained_on():
    """Generator 5 renders other scenes than 4: a bundle made before bundles recorded their generator (v1,
    trained on 4) keeps its held-out figures only on a generator-4 set; one that records it gets that one."""
    from edge.bundle import load_bundle
    default = load_bundle("default").model_copy(update={"provenance": {"recipe": "v1"}})

    def trained_generator(b):
        return b.synth_generator
    assert trained_generator(default) == 4
    assert trained_generator(default.model_copy(update={"provenance": {"generator": 5}})) == 5
    assert trained_generator(default.model_copy(update={"provenance": {"synth": {"generator": 5}}})) == 5
    assert trained_generator(default.model_copy(update={"provenance": {"generator": "5"}})) == 4
