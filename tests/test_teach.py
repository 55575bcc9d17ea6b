"""edge-tsm teach (issue 17): a taught bundle is the base network plus a numpy-trained head, on both engines,
in INT8 too, runs in the daemon's loop, needs no torch, and every bad input is one line with its exit code.

One small taught bundle is shared by the module (3 classes x 4 clips of 12 frames at 112x112, made from
the generator's swipes and zoom under new names, plus an empty and a broken file that must be skipped).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tinymodel import build_tiny_bundle, build_tiny_clip_bundle

from edge.backends import create_backend
from edge.bundle import load_bundle
from edge.classifier import OnlineClassifier
from edge.cli import main
from edge.data.synth import render_clip
from edge.teach import TeachError, TeachOptions, TeachReport, teach
from edge.teach.graph import HISTORY_IN, HeadWeights, features_model, find_cut
from edge.teach.head import VIEWS, HeadConfig, forward

NEW = {"left": "swipe_left", "right": "swipe_right", "grow": "zoom_in"}
ENGINES = ["onnxruntime", "openvino"]


def write_clip(path: Path, frames: np.ndarray, fps: float = 15.0) -> None:
    h, w = frames.shape[1:3]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        vw.write(f)
    vw.release()


def make_data(root: Path, per_class: int = 4, frames: int = 12, seed: int = 3) -> Path:
    for k, (label, motion) in enumerate(NEW.items()):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            clip = render_clip(motion, np.random.default_rng([seed, k, i]), (112, 112), frames, difficulty=0.3)
            write_clip(root / label / f"{label}_{i}.avi", clip)
    return root


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """(bundle folder, report, data folder): taught once for the module."""
    tmp = tmp_path_factory.mktemp("teach")
    data = make_data(tmp / "data", frames=18)  # 6 steps a clip: 72 frames for the INT8 agreement
    (data / "left" / "empty.mp4").write_bytes(b"")
    (data / "right" / "broken.avi").write_bytes(b"RIFF not really a video")
    stages = []
    # the windowed head (its state is tested too); one generated negative clip of each other motion
    window = TeachOptions(head=HeadConfig(frames=3, views=VIEWS), negatives=1)
    report = teach("default", data, tmp / "taught", progress=lambda s, d, t: stages.append((s, d, t)),
                   options=window)
    return tmp / "taught", report, data, stages


def _head_from_graph(path: Path) -> HeadWeights:
    """The head's weights as the taught graph holds them (initializers teach/*)."""
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    w = init["teach/weight"]
    proj = init.get("teach/proj")
    width = proj.shape[1] if proj is not None else init["teach/mean"].shape[1]
    return HeadWeights(mean=init["teach/mean"].reshape(-1), inv_std=init["teach/inv_std"].reshape(-1), weight=w,
                       bias=init["teach/bias"], frames=w.shape[0] // width, proj=proj)


def _run_graph(backend, bundle, frames: list[np.ndarray], out_name: str) -> np.ndarray:
    """Step a graph over preprocessed frames from zero states; the named output per frame."""
    feeds = {s.input: np.zeros(s.shape, np.float32) for s in bundle.states}
    rows = []
    for x in frames:
        feeds[bundle.input.name] = x
        res = backend.run(feeds)
        for s in bundle.states:
            feeds[s.input] = res[s.output]
        rows.append(res[out_name].reshape(-1))
    return np.stack(rows)


def _inputs(bundle, data: Path) -> list[list[np.ndarray]]:
    from edge.preprocess import Preprocessor
    pre = Preprocessor(bundle.input)
    clips = []
    for f in sorted(data.glob("*/*.avi")):
        cap = cv2.VideoCapture(str(f))
        frames = []
        i = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            if i % 3 == 0:
                frames.append(pre(img).copy())
            i += 1
        cap.release()
        if frames:
            clips.append(frames)
    return clips


def test_report_and_bundle(taught):
    out, r, data, stages = taught
    assert isinstance(r, TeachReport) and r.out == out
    assert r.labels == ["grow", "left", "right", "background"]
    assert r.clips_per_class == {"grow": 4, "left": 4, "right": 4, "background": 0}
    assert sorted(Path(s["path"]).name for s in r.skipped) == ["broken.avi", "empty.mp4"]
    assert all(s["why"] for s in r.skipped)
    assert 0.0 <= r.accuracy <= 1.0 and r.folds == 4
    assert len(r.confusion) == 4 and sum(map(sum, r.confusion)) == 12
    assert [p["k"] for p in r.curve][:2] == [1, 2]
    assert {s for s, _, _ in stages} >= {"read", "features", "cross-validation", "int8", "write"}
    # 12 stills + one generated clip of each other motion, but none of swipe_left, swipe_right, zoom_in: the
    # base takes the taught left, right and grow clips for them, so they are not background
    made = r.made["background"]
    assert 12 < made <= 12 + 5, made
    b = load_bundle(out)
    assert b.labels == r.labels and b.states[-1].input == HISTORY_IN and set(b.files) == {"fp32", "int8"}
    assert b.provenance["taught"]["base"] == "default" and len(b.provenance["taught"]["base_graph_sha256"]) == 64
    card = (out / "CARD.md").read_text()
    assert "Cross-validated accuracy" in card and "broken.avi" in card
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


@pytest.mark.parametrize("engine", ENGINES)
def test_taught_scores_equal_the_base_features_through_the_numpy_head(taught, engine, tmp_path):
    out, _, data, _ = taught
    base = load_bundle("default")
    fm = features_model(onnx.load(str(base.graph_path("fp32"))), "logits",
                        find_cut(onnx.load(str(base.graph_path("fp32"))), "logits", "default"))
    onnx.save(fm, str(tmp_path / "f.onnx"))
    taught_b = load_bundle(out)
    head = _head_from_graph(out / "model.onnx")
    fb = create_backend(engine, tmp_path / "f.onnx")
    tb = create_backend(engine, taught_b.graph_path("fp32"))
    worst = 0.0
    for frames in _inputs(taught_b, data)[:6]:
        feats = _run_graph(fb, base, frames, "teach_features")
        got = _run_graph(tb, taught_b, frames, "logits")
        worst = max(worst, float(np.abs(got - forward(head, feats)).max()))
    assert worst < 1e-4, worst


@pytest.mark.parametrize("engine", ENGINES)
def test_int8_agrees_with_fp32(taught, engine):
    out, r, data, _ = taught
    b = load_bundle(out)
    same = total = 0
    fp = OnlineClassifier(b, create_backend(engine, b.graph_path("fp32")))
    q = OnlineClassifier(b, create_backend(engine, b.graph_path("int8")))
    for frames in _inputs(b, data):
        fp.reset()
        q.reset()
        for x in frames:
            same += int(np.argmax(fp.step_input(x)) == np.argmax(q.step_input(x)))
            total += 1
    assert same / total >= 0.98, (same, total)
    assert r.int8_agreement is not None and r.int8_agreement >= 0.98


def test_taught_bundle_emits_its_new_labels_in_the_pipeline(taught, tmp_path):
    from edge.classify import classify_video
    from edge.demo import make_demo_clip
    out = taught[0]
    video = tmp_path / "demo.avi"
    make_demo_clip(video, size=(160, 120), script=("swipe_left", "swipe_right"), motion_frames=30)
    res = classify_video(video, model=str(out), engine="onnxruntime")
    started = [e.label for e in res.events if e.kind == "start"]
    assert "left" in started and "right" in started, started
    assert "background" not in started


def test_teach_runs_without_torch(tmp_path):
    data = make_data(tmp_path / "d", per_class=2, frames=8)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from edge.cli import main\n"
            f"rc = main(['-q', 'teach', '--data', {str(data)!r}, '--out', {str(tmp_path / 'b')!r}, '--json',"
            " '--no-cv'])\n"
            "assert not [m for m in sys.modules if m.startswith('edge.models.') and m != 'edge.models.evaluate']\n"
            "sys.exit(rc)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert p.returncode == 0, p.stderr[-2000:]
    b = load_bundle(tmp_path / "b")  # the default head: the current frame's features, no state of its own
    assert [s.input for s in b.states] == [s.input for s in load_bundle("default").states]


# --- bad input: one line, its exit code, nothing written ---------------------------------------------------
def _fails(argv: list[str], code: int, text: str, capsys, out: Path, existed: bool = False) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len([ln for ln in err if ln.startswith("edge-tsm: error:")]) == 1 and text in err[-1], err
    assert out.exists() == existed
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.teach")]


def test_a_class_folder_with_no_readable_clip(tmp_path, capsys):
    data = make_data(tmp_path / "d", per_class=1, frames=4)
    (data / "wave").mkdir()
    (data / "wave" / "x.mp4").write_bytes(b"\0" * 100)
    _fails(["teach", "--data", str(data), "--out", str(tmp_path / "b")], 65, "class folder wave/ has no readable clip",
           capsys, tmp_path / "b")


def test_a_single_class(tmp_path, capsys):
    (tmp_path / "d" / "wave").mkdir(parents=True)
    _fails(["teach", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "b")], 65,
           "teach needs at least 2 classes", capsys, tmp_path / "b")


def test_a_label_that_clashes_with_background(tmp_path, capsys):
    data = make_data(tmp_path / "d", per_class=1, frames=4)
    (data / "no_motion").mkdir()
    _fails(["teach", "--data", str(data), "--out", str(tmp_path / "b")], 65,
           "class folder 'no_motion' clashes with the background class", capsys, tmp_path / "b")


def test_a_clip_model_as_base(tmp_path, capsys):
    base = build_tiny_clip_bundle(tmp_path / "clip")
    _fails(["teach", "--base", str(base), "--data", str(tmp_path), "--out", str(tmp_path / "b")], 65,
           "is a clip model", capsys, tmp_path / "b")


def test_a_base_with_no_features_to_cut_at(tmp_path, capsys):
    base = build_tiny_bundle(tmp_path / "tiny")
    _fails(["teach", "--base", str(base), "--data", str(tmp_path), "--out", str(tmp_path / "b")], 65,
           "teach cannot cut a head from this graph", capsys, tmp_path / "b")


def test_an_output_folder_that_exists(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    _fails(["teach", "--data", str(tmp_path), "--out", str(tmp_path / "b")], 73, "already exists", capsys,
           tmp_path / "b", existed=True)
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"


def test_a_taught_bundle_as_base(tmp_path, capsys):
    """The default head (no history state) is a taught bundle too: one line naming its base, nothing written."""
    data = make_data(tmp_path / "d", per_class=2, frames=6)
    teach("default", data, tmp_path / "first", options=TeachOptions(cross_validate=False, negatives=0))
    _fails(["teach", "--base", str(tmp_path / "first"), "--data", str(data), "--out", str(tmp_path / "b")], 65,
           "is a taught bundle (its graph holds a taught head); teach from its base (default)", capsys,
           tmp_path / "b")


@pytest.mark.parametrize("flag,value", [("--frames", "0"), ("--frames", "65"), ("--augment", "33"),
                                        ("--threads", "0")])
def test_options_out_of_bounds(tmp_path, capsys, flag, value):
    data = make_data(tmp_path / "d", per_class=1, frames=4)
    _fails(["teach", "--data", str(data), "--out", str(tmp_path / "b"), flag, value], 64,
           f"teach: {flag} {value}: must be", capsys, tmp_path / "b")


def test_missing_data_folder(tmp_path, capsys):
    _fails(["teach", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "b")], 66, "not a folder", capsys,
           tmp_path / "b")


def test_cancel_leaves_nothing(tmp_path):
    import threading
    data = make_data(tmp_path / "d", per_class=2, frames=4)
    cancel = threading.Event()

    def progress(stage, done, total):
        if stage == "features":
            cancel.set()
    with pytest.raises(TeachError) as e:
        teach("default", data, tmp_path / "b", progress=progress, cancel=cancel)
    assert e.value.code == 130 and "cancelled" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_no_cross_validation_with_one_clip_per_class(tmp_path):
    r = teach("default", make_data(tmp_path / "d", per_class=1, frames=6), tmp_path / "b",
              options=TeachOptions(negatives=0))
    assert math.isnan(r.accuracy) and r.curve == [] and r.folds == 0


def test_needs_more_names_the_weakest_class_and_none_when_all_are_recalled():
    from edge.teach.report import needs_more
    counts = {"a": 5, "b": 3, "c": 4}
    assert needs_more({"per_class_recall": {"a": 0.6, "b": 0.9, "c": 0.6}}, counts) == "c"
    assert needs_more({"per_class_recall": {"a": 1.0, "b": 1.0, "c": 1.0}}, counts) is None
    assert needs_more({}, counts) == "b"
