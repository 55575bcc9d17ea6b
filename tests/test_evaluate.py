"""``edge-tsm eval`` on real mp4 files through both engines; the metric arithmetic by hand; the PNG plot."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from tinymodel import LABELS, build_tiny_bundle

from edge.backends import ENGINES, available_engines
from edge.cpu import machine
from edge.errors import DataError
from edge.models.evaluate import abbreviations, evaluate, format_report, metrics_from_confusion, plot_confusion

ENGINE_PARAMS = [pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None,
                                                             reason=f"{name} not installed"))
                 for name in ENGINES]
COLOURS = {"red": (0, 0, 220), "green": (0, 200, 0), "blue": (210, 0, 0)}  # BGR
FRAMES = 5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two noisy clips per colour, written with the mp4v codec (the tiny model tells colours apart)."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for label, bgr in COLOURS.items():
        for i in range(2):
            (root / label).mkdir(exist_ok=True)
            vw = cv2.VideoWriter(str(root / label / f"clip{i}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 15, (32, 24))
            assert vw.isOpened()
            for _ in range(FRAMES):
                noise = rng.integers(-30, 30, (24, 32, 3))
                vw.write(np.clip(np.array(bgr)[None, None] + noise, 0, 255).astype(np.uint8))
            vw.release()
    return root


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_evaluate_on_real_videos(engine, data, bundle_dir):
    r = evaluate(bundle_dir, data, engine=engine)
    for key in ("accuracy", "macro_f1", "per_class", "confusion", "labels", "n", "engine", "precision", "model"):
        assert key in r
    assert r["labels"] == LABELS  # the bundle's order, not the folders' (blue, green, red)
    assert r["n"] == 6 and np.asarray(r["confusion"]).sum() == 6 and r["frames"] == 6 * FRAMES
    assert r["engine"] == engine and r["precision"] == "fp32" and r["model"] == "tiny_online"
    assert r["accuracy"] == 1.0 and r["macro_f1"] == 1.0
    assert r["per_class"]["red"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    text = format_report(r)
    assert "accuracy  1.0000" in text and "macro-F1  1.0000" in text and "red" in text
    # the CPU it ran on (INT8 figures differ by ISA), as /proc/cpuinfo lists it, in the JSON and the text
    m = machine()
    assert r["machine"] == {"cpu": m["cpu"], "arch": m["arch"], "isa": m["isa"]}
    assert f"cpu       {m['cpu']} ({m['arch']}; " in text
    if Path("/proc/cpuinfo").is_file() and " avx2 " in Path("/proc/cpuinfo").read_text():
        assert "avx2" in r["machine"]["isa"] and "avx2" in text


@pytest.mark.skipif(len(available_engines()) < 2, reason="needs two engines")
def test_engines_agree_and_frame_stride(data, tmp_path):
    root = build_tiny_bundle(tmp_path / "b", yaml_patch={"temporal": {"frame_stride": 2}})
    results = [evaluate(root, data, engine=e) for e in available_engines()]
    assert results[0]["confusion"] == results[1]["confusion"]
    assert all(r["frames"] == 6 * ((FRAMES + 1) // 2) for r in results)  # frames 0, 2, 4 of each clip


def test_unknown_label_folder_is_a_data_error(data, bundle_dir, tmp_path):
    (tmp_path / "purple").mkdir()
    (tmp_path / "purple" / "x.mp4").write_bytes((data / "red" / "clip0.mp4").read_bytes())
    with pytest.raises(DataError, match="purple"):
        evaluate(bundle_dir, tmp_path)


def test_metrics_by_hand():
    # rows true, cols predicted; 'd' never occurs and is never predicted
    conf = [[3, 1, 0, 0],
            [0, 2, 0, 0],
            [0, 2, 0, 0],
            [0, 0, 0, 0]]
    r = metrics_from_confusion(conf, ["a", "b", "c", "d"])
    assert r["n"] == 8 and r["accuracy"] == pytest.approx(5 / 8)
    a, b, c, d = (r["per_class"][k] for k in "abcd")
    assert (a["precision"], a["recall"], a["support"]) == (1.0, 0.75, 4)
    assert a["f1"] == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert (b["precision"], b["recall"]) == (pytest.approx(2 / 5), 1.0)
    assert b["f1"] == pytest.approx(2 * 0.4 * 1 / 1.4)
    assert c == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}  # never predicted: 0, not NaN
    assert d["f1"] == 0.0 and d["support"] == 0
    # macro-F1 over the labels present in true or predicted (a, b, c), as sklearn's f1_score(average="macro")
    assert r["macro_f1"] == pytest.approx((a["f1"] + b["f1"] + 0.0) / 3)
    assert metrics_from_confusion([[0, 0], [0, 0]], ["x", "y"])["accuracy"] == 0.0
    with pytest.raises(DataError):
        metrics_from_confusion([[1, 2]], ["x", "y"])


def test_report_abbreviations_and_plot(tmp_path):
    labels = ["no_motion", "swipe_left", "swipe_right", "rotate_cw", "rotate_ccw", "zoom"]
    abbr = abbreviations(labels)
    assert len(set(abbr)) == len(abbr) and abbr[:3] == ["nm", "sl", "sr"]
    conf = np.diag([5, 4, 3, 2, 1, 6]) + 1
    r = metrics_from_confusion(conf, labels)
    r.update(model="m", engine="onnxruntime", precision="fp32")
    text = format_report(r)
    assert "confusion (rows: true, columns: predicted)" in text and "rotate_ccw" in text
    path = plot_confusion(r, tmp_path / "sub" / "confusion.png")
    img = cv2.imread(str(path))
    assert img is not None and img.ndim == 3 and img.shape[0] > 6 * 30 and img.shape[1] > 6 * 30
    assert (img < 128).any() and (img > 200).any()
