"""``edge-tsm classify`` on real video files (mp4v and MJPG) through both engines, with the tiny model."""
from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
from tinymodel import COLOUR_SCRIPT, LABELS, build_tiny_bundle, write_colour_video

from edge.backends import ENGINES, available_engines
from edge.cli import main

ENGINE_PARAMS = [pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None,
                                                             reason=f"{name} not installed"))
                 for name in ENGINES]
SCRIPT = COLOUR_SCRIPT


def write_video(path, fourcc: str) -> None:
    write_colour_video(path, fourcc)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny"))


def _events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("fourcc,ext", [("mp4v", "mp4"), ("MJPG", "avi")])
@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_classify_prints_events_for_what_the_video_shows(tmp_path, bundle, capsys, engine, fourcc, ext):
    video = tmp_path / f"clip.{ext}"
    write_video(video, fourcc)
    csv_path = tmp_path / "frames.csv"
    assert main(["-q", "classify", str(video), "--model", str(bundle), "--engine", engine, "--per-frame",
                 str(csv_path), "--camera", "bench"]) == 0
    evs = _events(capsys.readouterr().out)
    starts = [e["label"] for e in evs if e["event"] == "start"]
    assert starts == ["red", "green", "blue"]
    assert [e["event"] for e in evs] == ["start", "end"] * 3
    assert all(e["camera"] == "bench" and e["v"] == 1 for e in evs)
    assert [e["seq"] for e in evs] == list(range(1, 7))
    rows = list(csv.reader(open(csv_path)))
    assert rows[0] == ["frame", "time_s", *LABELS] and len(rows) == 1 + 60
    probs = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert LABELS[int(probs[30].argmax())] == "green"


@pytest.mark.skipif(len(available_engines()) < 2, reason="needs two engines")
def test_engines_agree_on_a_recorded_clip(tmp_path, bundle):
    video = tmp_path / "clip.avi"
    write_video(video, "MJPG")
    got = {}
    for engine in available_engines():
        assert main(["-q", "classify", str(video), "--model", str(bundle), "--engine", engine, "--per-frame",
                     str(tmp_path / f"{engine}.csv")]) == 0
        rows = list(csv.reader(open(tmp_path / f"{engine}.csv")))[1:]
        got[engine] = np.array([[float(v) for v in r[2:]] for r in rows])
    a, b = got.values()
    assert np.abs(a - b).max() <= 1e-3


def test_classify_errors_are_one_line(tmp_path, bundle, capsys):
    assert main(["classify", str(tmp_path / "missing.mp4"), "--model", str(bundle)]) == 66
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.mp4: no such file" in err
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 100)
    assert main(["classify", str(tmp_path / "junk.mp4"), "--model", str(bundle)]) == 66
    assert "junk.mp4" in capsys.readouterr().err
    write_video(tmp_path / "ok.avi", "MJPG")
    assert main(["classify", str(tmp_path / "ok.avi"), "--model", str(tmp_path / "nobundle")]) == 66
    assert main(["classify", str(tmp_path / "ok.avi"), "--model", str(bundle), "--engine", "tflite"]) == 78
    assert "tflite" in capsys.readouterr().err
    assert main(["classify", str(tmp_path / "ok.avi"), "--model", str(bundle), "--precision", "int8"]) == 65
    assert "int8" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "none.yaml")]) == 66  # the daemon needs a config file


def test_an_event_open_at_the_end_of_the_file_ends_on_the_files_clock(tmp_path, bundle):
    """The last colour runs to the last frame: its end comes from close(), on the file's clock (its last
    frame's time), not at the wall clock's now (eval-events starts the clock at 0, which once put that end
    56 years after the file's start)."""
    from edge.classify import classify_video
    video = tmp_path / "clip.avi"
    write_video(video, "MJPG")
    result = classify_video(video, model=str(bundle), start_time=0.0)
    last = result.events[-1]
    assert last.kind == "end" and last.label == "blue"
    assert last.start_ts <= last.ts < 60.0  # the file is 60 frames long
