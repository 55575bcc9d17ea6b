"""Training on annotated continuous recordings: windows labelled frame by frame beside the clips."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

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


def test_a_window_reads_the_same_frames_from_the_cache_and_from_disk(withrec):
    """Streaming a recording's window seeks to it (MJPG: every frame a key frame); the cache gives the same."""
    from edge.data.dataset import read_span, read_video
    ds = load_dataset(withrec)
    rec = ds.recordings[1]
    whole = read_video(rec.path)
    assert np.array_equal(read_span(rec.path, 17, 40), whole[17:40])
    assert len(read_span(rec.path, len(whole) - 3, len(whole) + 10)) == 3   # past the end: what there is
    cached, streamed = (ClipDataset(ClipSource(ds, gb), ClipAugment((32, 32), ds.labels), frames=8, stride=3, seed=5)
                        for gb in (1.0, 0.0))
    assert cached.src.cached and not streamed.src.cached
    for i in range(18, len(cached)):
        a, b = cached[(1, i)], streamed[(1, i)]
        assert torch.equal(a[1], b[1]) and np.array_equal(a[3], b[3])


def test_seeking_into_an_mp4v_recording_gives_the_frames_decoding_gives(tmp_path):
    """A user's recording in mp4v (predicted frames between key frames): the seek lands on the asked frame."""
    import cv2

    from edge.data.dataset import read_span, read_video
    path = tmp_path / "r.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (64, 48))
    for i in range(90):
        f = np.zeros((48, 64, 3), np.uint8)
        cv2.putText(f, str(i), (4, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        f[:, i % 64] = 200
        w.write(f)
    w.release()
    whole = read_video(path)
    for first in (13, 50, 77):
        assert np.array_equal(read_span(path, first, first + 10), whole[first:first + 10]), first


def test_balance_counts_the_label_rates_and_puts_the_offsets_in_the_graph_not_the_weights(withrec, tmp_path):
    """``train --balance``: offsets minus the log label rate (centred) in model.onnx; weights.pt keeps the trained
    bias and records them; ``export`` from weights.pt applies them again."""
    import onnxruntime as ort

    from edge.models.export import export_checkpoint
    from edge.models.prior import balance_offsets, label_rates
    from edge.models.recipe import _EXPORT, _same
    from edge.models.train import TrainConfig, train
    ds = load_dataset(withrec)
    rates = label_rates(str(withrec), None, ds.labels, frames=4, stride=2)
    still = ds.labels.index("no_motion")
    assert rates.sum() == pytest.approx(1.0) and rates.argmax() == still   # the recordings' pauses
    off = balance_offsets(rates, ds.labels)
    assert sum(off) == pytest.approx(0.0, abs=1e-3) and min(off) == off[still]
    assert np.allclose(np.array(off)[:, None] - np.array(off), np.log(rates)[None] - np.log(rates)[:, None], atol=1e-3)
    assert balance_offsets(np.full(4, 0.25), list("abcd")) == [0.0] * 4
    cfg = TrainConfig(data=str(withrec), out=str(tmp_path / "m"), size=32, width=0.25, frames=4, stride=2, batch=6,
                      epochs=1, max_steps=2, dropout=0.0, threads=1, workers=0, device="cpu", amp="off", seed=3)
    out = train(cfg, progress=False)
    trained = torch.load(out / "weights.pt", weights_only=True)
    assert "prior_offsets" not in trained["meta"]
    # a finished run re-exported with --balance (--resume: no step left, the export alone)
    cfg.balance = cfg.resume = True
    train(cfg, progress=False)
    blob = torch.load(out / "weights.pt", weights_only=True)
    assert blob["meta"]["prior_offsets"] == off
    assert all(torch.equal(v, trained["model"][k]) for k, v in blob["model"].items())   # the trained bias kept
    del blob["meta"]["prior_offsets"]
    torch.save(blob, tmp_path / "raw.pt")
    again, raw = export_checkpoint(out / "weights.pt", tmp_path / "again"), export_checkpoint(tmp_path / "raw.pt",
                                                                                              tmp_path / "raw")

    def logits(bundle):
        sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
        feed = {i.name: np.full([d if isinstance(d, int) else 1 for d in i.shape], 0.3, np.float32)
                for i in sess.get_inputs()}
        return sess.run(["logits"], feed)[0].reshape(-1)
    assert np.allclose(logits(again) - logits(raw), off, atol=1e-4)        # exactly the offsets
    assert np.allclose(logits(out), logits(again), atol=2e-2)             # weights.pt is float16
    assert "prior_offsets" in (out / "model.yaml").read_text()
    # a recipe's finished stage recorded before the key existed counts as exported without it
    have = {k: getattr(cfg, k) for k in ("data", "size", "width", "frames", "stride", "epochs", "batch", "lr",
                                          "optimizer", "weight_decay", "shift", "seed", "init", "max_steps")}
    assert _same(have, cfg)   # the weights are the same: only the export differs
    assert _same({**have, "balance": True}, cfg, _EXPORT) and not _same(have, cfg, _EXPORT)
    cfg.balance = False
    assert _same(have, cfg, _EXPORT)
