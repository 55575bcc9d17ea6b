"""Dataset layout, split files, video reading and the temporally consistent augmentation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.data.dataset import ClipAugment, center_crop_frames, flip_permutation, load_dataset, read_video
from edge.errors import DataError, InputError
from edge.models.export import read_labels


def write_clip(path, frames: np.ndarray, fps: float = 15.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(f)
    vw.release()


def moving_square(n: int = 10, dx: int = 3, size=(48, 64)) -> np.ndarray:
    frames = np.full((n, *size, 3), 40, np.uint8)
    for i in range(n):
        x = 10 + i * dx
        frames[i, 16:32, x:x + 12] = (30, 200, 250)
    return frames


def test_layout_labels_and_splits(tmp_path):
    for label in ("b_label", "a_label"):
        for i in range(2):
            write_clip(tmp_path / label / f"{i}.mp4", moving_square())
    (tmp_path / "a_label" / "notes.txt").write_text("not a video")
    ds = load_dataset(tmp_path)
    assert ds.labels == ["a_label", "b_label"] and len(ds.clips) == 4
    assert ds.counts() == {"a_label": 2, "b_label": 2}
    (tmp_path / "labels.txt").write_text("b_label\na_label\n")
    assert load_dataset(tmp_path).labels == ["b_label", "a_label"]
    (tmp_path / "test.txt").write_text("a_label/1.mp4\n# comment\n\nb_label/0.mp4\n")
    ds = load_dataset(tmp_path, split="test")
    assert [(c.path.name, ds.labels[c.label]) for c in ds.clips] == [("1.mp4", "a_label"), ("0.mp4", "b_label")]
    with pytest.raises(InputError, match="split file val.txt not found"):
        load_dataset(tmp_path, split="val")
    with pytest.raises(DataError, match="label 'b_label', not one of"):
        load_dataset(tmp_path, labels=["a_label", "c"])


def test_a_large_index_lists_every_clip_in_order_without_decoding(tmp_path):
    """20k empty files in 4 label folders (the listing never opens a clip); upper-case extensions count,
    other files and hidden folders do not; a split line may start with ./"""
    for label in ("d", "c", "b", "a"):
        (tmp_path / label).mkdir()
        for i in range(5000):
            (tmp_path / label / f"{i:05d}.{'MP4' if i % 7 == 0 else 'mp4'}").touch()
        (tmp_path / label / "readme.txt").touch()
    (tmp_path / ".cache").mkdir()
    ds = load_dataset(tmp_path)
    assert ds.labels == ["a", "b", "c", "d"] and len(ds.clips) == 20000
    assert ds.clips[0] == type(ds.clips[0])(tmp_path / "a" / "00000.MP4", 0)
    assert [c.path.name for c in ds.clips[:3]] == ["00000.MP4", "00001.mp4", "00002.mp4"]
    (tmp_path / "val.txt").write_text("./b/00003.mp4\nc/00004.mp4\n")
    assert [(c.path, c.label) for c in load_dataset(tmp_path, split="val").clips] == [
        (tmp_path / "b" / "00003.mp4", 1), (tmp_path / "c" / "00004.mp4", 2)]


def test_bad_datasets_say_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="no label folders"):
        load_dataset(tmp_path)
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="no video clips"):
        load_dataset(tmp_path)
    (tmp_path / "x" / "bad.mp4").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="cannot be decoded"):
        read_video(tmp_path / "x" / "bad.mp4")


def test_read_video_roundtrip(tmp_path):
    frames = moving_square(12)
    write_clip(tmp_path / "c.mp4", frames)
    got = read_video(tmp_path / "c.mp4")
    assert got.shape == frames.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - frames).mean() < 6  # lossy codec, same picture


def test_flip_permutations():
    labels = ["no_motion", "swipe_left", "swipe_right", "swipe_up", "swipe_down", "zoom_in", "zoom_out",
              "rotate_cw", "rotate_ccw"]
    h = flip_permutation(labels)
    assert [labels[i] for i in h] == ["no_motion", "swipe_right", "swipe_left", "swipe_up", "swipe_down",
                                      "zoom_in", "zoom_out", "rotate_ccw", "rotate_cw"]
    v = flip_permutation(labels, vertical=True)
    assert [labels[i] for i in v] == ["no_motion", "swipe_left", "swipe_right", "swipe_down", "swipe_up",
                                      "zoom_in", "zoom_out", "rotate_ccw", "rotate_cw"]
    jester = read_labels("jester")
    hj = flip_permutation(jester)
    assert jester[hj[jester.index("Swiping Left")]] == "Swiping Right"
    assert jester[hj[jester.index("Turning Hand Clockwise")]] == "Turning Hand Counterclockwise"
    # A direction without its mirrored partner: no flip for that label set.
    assert flip_permutation(["left_only", "other"]) is None


def _centroid_x(frame_rgb: np.ndarray) -> float:
    mask = frame_rgb[..., 0] > 200  # the square is red-ish in RGB (BGR 30,200,250)
    return float(np.nonzero(mask)[1].mean())


def test_augmentation_is_consistent_over_the_clip_and_flip_swaps_labels():
    labels = ["swipe_left", "swipe_right"]
    frames = moving_square(8, dx=4)  # moves right
    aug = ClipAugment((32, 32), labels, scale_range=(1.0, 1.0), vflip=False, jitter=0.0)
    seen = set()
    for seed in range(12):
        out, label = aug(frames, 1, np.random.default_rng(seed))
        assert out.shape == (8, 32, 32, 3) and out.dtype == np.uint8
        xs = [_centroid_x(f) for f in out]
        moving_right = xs[-1] > xs[0]
        # The label follows the motion that the augmented clip shows.
        assert (labels[label] == "swipe_right") == moving_right
        seen.add(label)
    assert seen == {0, 1}  # both flipped and unflipped clips were drawn


def test_center_crop_frames_shape_and_colour_order():
    frames = moving_square(2, size=(48, 64))
    out = center_crop_frames(frames, (32, 32))
    assert out.shape == (2, 32, 32, 3)
    assert out[0, :, :, 0].max() > 200  # BGR (30,200,250) became RGB (250,200,30)
