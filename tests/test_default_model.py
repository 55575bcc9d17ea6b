"""The embedded default model: loads by name, both engines agree, the demo recognises what it shows."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from edge.backends import available_engines, create_backend
from edge.bundle import load_bundle
from edge.classifier import OnlineClassifier
from edge.demo import make_demo_clip
from edge.models import DEFAULT_BUNDLE

pytestmark = pytest.mark.skipif(not (DEFAULT_BUNDLE / "model.yaml").is_file(), reason="no default bundle")


def test_default_bundle_contract():
    b = load_bundle("default")
    assert b.name == "default" and b.kind == "online" and b.arch == "mobilenetv2_tsm"
    assert b.labels == ["no_motion", "swipe_left", "swipe_right", "swipe_up", "swipe_down", "zoom_in", "zoom_out",
                        "rotate_cw", "rotate_ccw"]
    assert len(b.states) == 10 and b.temporal.shift == "causal"
    held = b.provenance["heldout"]["metrics"]
    assert set(held) == {"onnxruntime", "openvino"} and held["onnxruntime"]["n"] == 540
    card = (DEFAULT_BUNDLE / "CARD.md").read_text()
    assert f"| {held['onnxruntime']['accuracy']:.4f} |" in card  # the card reports the measured figures
    assert (DEFAULT_BUNDLE / "weights.pt").is_file()


def test_default_model_still_scores_what_its_card_says(tmp_path):
    """A fresh held-out sample (seed 1, the card's split, 10 clips per class) through the runtime engine."""
    from edge.data.synth import generate_dataset
    from edge.models.evaluate import evaluate
    prov = load_bundle("default").provenance
    generate_dataset(tmp_path / "d", 10, 1, generator=prov["generator"])  # the card's held-out set's generator
    r = evaluate("default", tmp_path / "d", engine="onnxruntime")
    card_acc = prov["heldout"]["metrics"]["onnxruntime"]["accuracy"]
    assert r["n"] == 90 and r["accuracy"] >= card_acc - 0.12  # 90 clips: about +-5 points of sampling noise


@pytest.mark.skipif(len(available_engines()) < 2, reason="needs both engines")
def test_engines_agree_on_the_default_model(tmp_path):
    import cv2
    clip = tmp_path / "demo.avi"
    make_demo_clip(clip, seed=3)
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while len(frames) < 60:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    b = load_bundle("default")
    probs = {}
    for engine in available_engines():
        clf = OnlineClassifier(b, create_backend(engine, b.graph_path("fp32")))
        probs[engine] = np.stack([clf.step(f) for f in frames[::b.temporal.frame_stride]])
        clf.backend.close()
    a, c = probs.values()
    assert np.abs(a - c).max() <= 1e-3


def test_run_demo_recognises_the_motions():
    p = subprocess.run([sys.executable, "-m", "edge", "run", "--demo"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    assert events and all(e["v"] == 1 and e["camera"] == "demo" for e in events)
    m = re.search(r"(\d+) motions shown, (\d+) events started, (\d+) of the motions recognised", p.stderr)
    assert m, p.stderr
    shown, started, hit = map(int, m.groups())
    assert shown == 6 and hit >= 3 and started <= 2 * shown
