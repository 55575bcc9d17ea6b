"""Training on annotated continuous recordings: windows labelled frame by frame beside the clips."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from edge.data.dataset import RECORDINGS, ClipAugment, load_dataset
from edge.errors import DataError
from edge.models.loader import IGNORE, SETTLE_FRAMES, ClipDataset, ClipSource, collate, window_labels


@pytest.fixture(scope="module")
def withrec(tmp_path_factory):
    """Two clips per class and three recordings of three motions, 64x48."""
    from edge.data.synth import generate_dataset
    root = tmp_path_factory.mktemp("withrec")
    s = generate_dataset(root, 2, 3, size=(64, 48), frames=10, recordings=3, recording_segments=3, workers=2)
    assert s["recordings"] == 3 and s["recording_segments"] == 3
    return root


def test_recordings_are_listed_with_their_frame_spans_and_are_no_label(withrec):
    ds = load_dataset(withrec)
    assert RECORDINGS not in ds.labels and len(ds.clips) == 18 and len(ds.recordings) == 3
    rec = ds.recordings[0]
    rows = (rec.path.with_suffix(".csv")).read_text().splitlines()[1:]
    assert len(rows) == 7 and rec.fps == 15.0   # still, then (motion, still) x 3
    labels = rec.frame_labels(rec.frames)
    start, end, label = rows[1].split(",")
    first = round(float(start) * 15)
    assert labels[first] == ds.labels.index(label) and labels[first - 1] == ds.labels.index("no_motion")
    assert (labels >= 0).all() and len(labels) == round(float(rows[-1].split(",")[1]) * 15)
    # a split file selects clips only
    (withrec / "some.txt").write_text("swipe_left/" + ds.clips[2].path.name + "\n")
    assert load_dataset(withrec, "some").recordings == []


def test_a_recording_without_annotations_or_with_an_unknown_label_is_named(withrec, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(withrec, root)
    csv = root / RECORDINGS / "rec_s3_00001.csv"
    csv.write_text(csv.read_text().replace("no_motion", "standing", 1))
    with pytest.raises(DataError, match=r"rec_s3_00001.csv:2: label 'standing' is not one of the dataset's 9"):
        load_dataset(root)
    csv.unlink()
    with pytest.raises(DataError, match=r"rec_s3_00001.avi: no annotations rec_s3_00001.csv beside it"):
        load_dataset(root)


def test_window_labels_skip_the_settling_frames_and_what_no_row_covers():
    labels = np.array([0] * 9 + [3] * 9 + [-1] * 6)
    idx = np.arange(0, 24, 3)             # 8 graph frames, stride 3
    got = window_labels(labels, idx)
    want = [IGNORE, IGNORE, 0, 3, 3, 3, IGNORE, IGNORE]
    want[3:3 + SETTLE_FRAMES] = [IGNORE] * SETTLE_FRAMES   # the label changes at graph frame 3
    assert got.tolist() == want


def test_windows_come_with_frame_labels_and_flips_swap_them(withrec):
    ds = load_dataset(withrec)
    src = ClipSource(ds, 1.0)
    data = ClipDataset(src, ClipAugment((32, 32), ds.labels), frames=8, stride=3, seed=5)
    assert len(data) == 18 + len(data.windows) and len(data.windows) >= 3
    samples = [data[(0, i)] for i in range(len(data))]
    clip, window = samples[0], samples[18]
    assert clip[3] is None and window[2] == IGNORE and window[3].shape == (8,)
    batch = collate([clip, window])
    assert batch.frame_y.shape == (2, 8) and (batch.frame_y[0] == IGNORE).all() and batch.y.tolist()[1] == IGNORE
    # a horizontal flip swaps a window's per-frame labels as it swaps a clip's; unscored frames stay unscored
    aug = ClipAugment((32, 32), ds.labels, vflip=False)
    left, right = ds.labels.index("swipe_left"), ds.labels.index("swipe_right")
    frames = np.zeros((3, 48, 64, 3), np.uint8)
    outs = {tuple(aug(frames, np.array([left, IGNORE, 0]), np.random.default_rng(k))[1].tolist()) for k in range(20)}
    assert outs == {(left, IGNORE, 0), (right, IGNORE, 0)}


def test_training_scores_windows_frame_by_frame(withrec, tmp_path, caplog):
    from edge.models.train import TrainConfig, train
    caplog.set_level(logging.INFO, logger="edge.models.train")
    cfg = TrainConfig(data=str(withrec), out=str(tmp_path / "m"), size=32, width=0.25, frames=4, stride=2, batch=6,
                      epochs=1, lr=0.01, dropout=0.0, threads=1, workers=0, device="cpu", amp="off", seed=3)
    out = train(cfg, progress=False)
    n_windows = int(caplog.text.split(" recordings: ")[1].split(" windows")[0])
    hist = json.loads((out / "train.json").read_text())["history"][0]
    assert hist["step"] == (18 + n_windows) // 6 and 0.0 <= hist["train_acc"] <= 1.0 and np.isfinite(hist["loss"])
    assert (out / "model.onnx").is_file()
