"""dataset synth-recording with generator 5: one continuous scene, no cut inside it (edge.data.synth_recording)."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from edge.cli import main
from edge.data.synth import ALL_CLASSES, CLASSES
from edge.data.synth_recording import make_recording, plan_recording, render_recording
from edge.errors import DataError

W, H = 160, 120


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels that change by more than 48 grey levels from a to b: most of them at a cut."""
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 48).mean())


@pytest.mark.parametrize("classes", [CLASSES, ALL_CLASSES])
def test_the_plan_is_continuous(classes):
    traj, spans = plan_recording(np.random.default_rng(4), classes, 12)
    n = len(traj["cx"])
    assert spans[0][1] == 0 and spans[-1][2] == n and all(a[2] == b[1] for a, b in zip(spans, spans[1:], strict=False))
    assert [s[0] for s in spans][::2] == ["no_motion"] * 13 and all(s[0] in classes for s in spans)
    assert all(s[0] != "no_motion" for s in spans[1::2])
    # no jump anywhere: the object never teleports, turns or resizes at once
    assert np.abs(np.diff(traj["cx"])).max() < 0.08 * W and np.abs(np.diff(traj["cy"])).max() < 0.08 * H
    assert np.abs(np.diff(traj["angle"])).max() < 20 and np.abs(np.diff(np.log(traj["size"]))).max() < 0.15
    assert np.abs(np.diff(traj["yaw"])).max() < 8
    for label, a, b in spans[1:]:  # stills hold still: they end where the motion before them ended
        if label == "no_motion":
            assert traj["cx"][b - 1] == pytest.approx(traj["cx"][a - 1], abs=1e-6)


def test_no_cut_inside_the_recording_but_generator_4_cut_at_every_motion(tmp_path):
    scene, spans = render_recording(3, 3, CLASSES, size=(80, 60))
    frames = [scene.frame(i) for i in range(scene.n)]
    assert scene.n == spans[-1][2] and len(spans) == 7
    v5 = max(_changed(a, b) for a, b in zip(frames, frames[1:], strict=False))
    assert v5 < 0.15, v5
    from edge.demo import make_recording as make_v4
    make_v4(tmp_path / "v4.avi", tmp_path / "v4.csv", segments=2, seed=3, size=(80, 60))
    cap = cv2.VideoCapture(str(tmp_path / "v4.avi"))
    old = []
    while (r := cap.read())[0]:
        old.append(r[1])
    assert max(_changed(a, b) for a, b in zip(old, old[1:], strict=False)) > 0.3  # the measure sees a cut


def test_make_recording_and_its_rows(tmp_path):
    video, ann = tmp_path / "r.avi", tmp_path / "r.csv"
    rows = make_recording(video, ann, segments=2, seed=5, size=(80, 60), classes="shake,tilt_left,wave")
    got = list(csv.DictReader(ann.open()))
    assert [r["label"] for r in got] == [s.label for s in rows] and len(rows) == 5
    assert {r.label for r in rows[1::2]} <= {"shake", "tilt_left", "wave"}
    assert all(float(a["end"]) == float(b["start"]) for a, b in zip(got, got[1:], strict=False))
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == round(rows[-1].end_s * 15)
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (80, 60)


def test_bad_requests(tmp_path):
    with pytest.raises(DataError, match="no motion"):
        make_recording(tmp_path / "a.avi", tmp_path / "a.csv", segments=2, classes="no_motion")
    with pytest.raises(DataError, match="move both ways"):
        plan_recording(np.random.default_rng(0), ("swipe_left",), 8)
    with pytest.raises(DataError, match="segments"):
        make_recording(tmp_path / "a.avi", tmp_path / "a.csv", segments=0)
    args = ["dataset", "synth-recording", "--out", str(tmp_path / "b.avi"), "--annotations", str(tmp_path / "b.csv")]
    assert main(args + ["--generator", "4", "--classes", "swipe_left"]) == 64
    assert main(args + ["--classes", "jump"]) == 64
