"""The daemon as a user runs it: ``python -m edge run --config F`` in a real subprocess, real video
files, the tiny model on both engines, real log files; signals TERM and HUP; ``check`` exit codes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tinymodel import build_tiny_bundle, write_colour_video
from waiting import wait_until

from edge.cli import main
from edge.errors import EX_CONFIG, EX_DATAERR, EX_NOINPUT, EX_UNAVAILABLE


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_colour_video(tmp_path_factory.mktemp("video") / "colours.avi")


def _config(path: Path, **cfg) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _daemon(config: Path, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_file_camera_to_log_and_stdout_then_exit_0(tmp_path, bundle, video, engine):
    pytest.importorskip(engine)
    log = tmp_path / "events.jsonl"
    cfg = _config(tmp_path / "c.yaml", model=str(bundle), engine={"type": engine},
                  cameras=[{"name": "bench", "source": str(video)}],
                  sinks=[{"type": "log", "path": str(log)}, {"type": "stdout"}])
    proc = _daemon(cfg)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    logged = _lines(log)
    printed = [json.loads(x) for x in out.splitlines() if x.strip()]
    assert printed == logged
    assert [(e["event"], e["label"]) for e in logged] == [
        ("start", "red"), ("end", "red"), ("start", "green"), ("end", "green"), ("start", "blue"), ("end", "blue")]
    assert [e["seq"] for e in logged] == [1, 2, 3, 4, 5, 6]
    assert all(e["camera"] == "bench" and e["v"] == 1 for e in logged)
    assert "ready in" in err and "stopped (every camera ended)" in err


def test_restarts_without_state_dir_never_repeat_a_seq(tmp_path, bundle, video, monkeypatch):
    """Outside systemd without state_dir the journal lives in the per-user state folder
    ($XDG_STATE_HOME/edge-tsm), said at start: seq goes on across restarts, so one log never holds a
    seq twice (consumers dedupe by seq)."""
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_STATE_HOME", str(xdg))
    log = tmp_path / "events.jsonl"
    cfg = _config(tmp_path / "c.yaml", model=str(bundle), cameras=[{"name": "bench", "source": str(video)}],
                  sinks=[{"type": "log", "path": str(log)}])
    for run in range(3):
        proc = _daemon(cfg)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert str(xdg / "edge-tsm") in err  # where the journal is, said at start
        assert len(_lines(log)) == 6 * (run + 1)
    seqs = [e["seq"] for e in _lines(log)]
    assert seqs == list(range(1, 19))
    assert (xdg / "edge-tsm" / "journal").is_dir()


def test_mjpg_camera_bigger_than_the_model_needs_is_decoded_reduced_with_the_same_events(tmp_path, bundle):
    """A 640x480 MJPG file for a small input: the JPEG decoder scales it (1/8: 80x60), the events are
    those of the full decode (decode_scale 1)."""
    video = write_colour_video(tmp_path / "vga.avi", size=(640, 480))
    runs = {}
    for setting in ("auto", 1):
        log = tmp_path / f"events-{setting}.jsonl"
        cfg = _config(tmp_path / f"c-{setting}.yaml", model=str(bundle),
                      cameras=[{"name": "vga", "source": str(video), "decode_scale": setting}],
                      sinks=[{"type": "log", "path": str(log)}], state_dir=str(tmp_path / f"state-{setting}"))
        proc = _daemon(cfg)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert ("MJPG 640x480 decoded at 1/8 (80x60) in the JPEG decoder" in err) == (setting == "auto")
        status = json.loads((tmp_path / f"state-{setting}" / "status.json").read_text())
        assert status["cameras"]["vga"]["decode_scale"] == (8 if setting == "auto" else 1)
        runs[setting] = [(e["event"], e["label"], e["frames"]) for e in _lines(log)]
    assert runs["auto"] == runs[1] and [x[1] for x in runs[1] if x[0] == "start"] == ["red", "green", "blue"]


def test_two_cameras_share_one_model(tmp_path, bundle, video):
    log = tmp_path / "events.jsonl"
    cfg = _config(tmp_path / "c.yaml", model=str(bundle),
                  cameras=[{"name": "a", "source": str(video)}, {"name": "b", "source": str(video)}],
                  sinks=[{"type": "log", "path": str(log)}])
    assert main(["-q", "run", "--config", str(cfg)]) == 0
    evs = _lines(log)
    for cam in ("a", "b"):
        assert [e["label"] for e in evs if e["camera"] == cam and e["event"] == "start"] == ["red", "green", "blue"]
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_batched_cameras_get_the_same_events_as_unbatched(tmp_path, bundle, video, engine, capsys):
    """Three file cameras (lossless: every frame classified) in batches of up to 3, then one frame per
    call: the same events per camera, the same frames classified."""
    pytest.importorskip(engine)
    runs, logs = {}, {}
    for max_batch in (3, 1):
        log = tmp_path / f"events-{max_batch}.jsonl"
        cfg = _config(tmp_path / f"c{max_batch}.yaml", model=str(bundle),
                      engine={"type": engine, "max_batch": max_batch},
                      cameras=[{"name": n, "source": str(video)} for n in ("a", "b", "c")],
                      sinks=[{"type": "log", "path": str(log)}])
        assert main(["run", "--config", str(cfg)]) == 0
        logs[max_batch] = capsys.readouterr().err
        runs[max_batch] = [{k: e[k] for k in ("camera", "event", "label", "frames", "score")} for e in _lines(log)]
    assert "batching: up to 3 cameras' frames per engine call" in logs[3] and "batching" not in logs[1]
    for cam in ("a", "b", "c"):
        got = [e for e in runs[3] if e["camera"] == cam]
        assert got == [e for e in runs[1] if e["camera"] == cam]
        assert [e["label"] for e in got if e["event"] == "start"] == ["red", "green", "blue"]


def test_sigterm_drains_and_ends_open_events(tmp_path, bundle, video):
    log = tmp_path / "events.jsonl"
    cfg = _config(tmp_path / "c.yaml", model=str(bundle),
                  cameras=[{"name": "loop", "source": str(video), "loop": True, "realtime": True}],
                  sinks=[{"type": "log", "path": str(log)}], status_interval_s=0)
    proc = _daemon(cfg)
    try:
        wait_until(lambda: len(_lines(log)) >= 2, timeout=20, proc=proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    evs = _lines(log)  # every line is whole JSON (_lines would raise otherwise)
    starts = [e for e in evs if e["event"] == "start"]
    ends = [e for e in evs if e["event"] == "end"]
    assert len(starts) == len(ends) and evs[-1]["event"] == "end"  # the open event was ended, and delivered
    assert "SIGTERM: stopping" in err


def test_sighup_reloads_and_refuses_a_bad_config(tmp_path, bundle, video):
    log1, log2 = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    base = dict(model=str(bundle), cameras=[{"name": "loop", "source": str(video), "loop": True, "realtime": True}])
    cfg = _config(tmp_path / "c.yaml", **base, sinks=[{"type": "log", "path": str(log1)}])
    proc = _daemon(cfg)
    try:
        wait_until(lambda: len(_lines(log1)) >= 1, timeout=20, proc=proc)
        _config(cfg, **base, sinks=[{"type": "log", "path": str(log1)}, {"type": "log", "path": str(log2)}])
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(_lines(log2)) >= 2, timeout=20, proc=proc)
        cfg.write_text("cameras: [{name: x, source: y, fps: -3}]\n")
        proc.send_signal(signal.SIGHUP)
        n = len(_lines(log2))
        wait_until(lambda: len(_lines(log2)) >= n + 2, timeout=20, proc=proc)  # still running on the previous config
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "reload refused, still running the previous config" in err and "cameras[0].fps" in err
    assert err.count("reloaded in") == 1


def test_check_ok_and_exit_codes(tmp_path, bundle, video, capsys):
    good = _config(tmp_path / "good.yaml", model=str(bundle), cameras=[{"name": "c", "source": str(video)}],
                   sinks=[{"type": "log", "path": str(tmp_path / "e.jsonl")}])
    assert main(["check", "--config", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    cases = [
        (dict(model=str(tmp_path / "nope"), cameras=[{"name": "c", "source": str(video)}]), EX_NOINPUT, "nope"),
        (dict(model=str(video.parent), cameras=[{"name": "c", "source": str(video)}]), EX_NOINPUT, "model.yaml"),
        # at_start: require keeps the exit codes a missing device had before devices could come late
        (dict(model=str(bundle), cameras=[{"name": "c", "source": "/dev/video99", "at_start": "require"}]),
         EX_UNAVAILABLE, "/dev/video99"),
        (dict(model=str(bundle), cameras=[{"name": "c", "source": str(tmp_path / "no.avi"), "at_start": "require"}]),
         EX_NOINPUT, "no.avi"),
        (dict(model=str(bundle), cameras=[{"name": "c", "source": str(video)}],
              sinks=[{"type": "serial", "port": str(tmp_path / "ttyUSB9"), "at_start": "require"}]),
         EX_UNAVAILABLE, "ttyUSB9"),
        # what waiting cannot mend fails with at_start: retry too: a path through a file, a port that is no tty
        (dict(model=str(bundle), cameras=[{"name": "c", "source": str(video / "x.avi")}]), EX_NOINPUT, "x.avi"),
        (dict(model=str(bundle), cameras=[{"name": "c", "source": str(video)}],
              sinks=[{"type": "serial", "port": str(video)}]), EX_UNAVAILABLE, "not a serial port"),
        (dict(model=str(bundle), cameras=[{"name": "c", "source": str(video)}],
              events={"classes": {"purple": {"enter": 0.9}}}), EX_CONFIG, "'purple' is not a label"),
    ]
    for i, (cfg, code, needle) in enumerate(cases):
        path = _config(tmp_path / f"bad{i}.yaml", **cfg)
        for verb in ("check", "run"):
            assert main([verb, "--config", str(path)]) == code, (verb, cfg)
            err = capsys.readouterr().err.strip().splitlines()
            assert err and err[-1].startswith("edge-tsm: error: ") and needle in err[-1], (verb, err)


def test_check_warns_for_devices_not_there_yet_and_exits_0(tmp_path, bundle, video, capsys):
    """at_start: retry (the default): a missing camera file, V4L2 node or serial port is one warning line
    each, and check passes (run would start and wait for them)."""
    cfg = _config(tmp_path / "c.yaml", model=str(bundle), state_dir=str(tmp_path / "state"),
                  cameras=[{"name": "here", "source": str(video)}, {"name": "late", "source": str(tmp_path / "no.avi")},
                           {"name": "usb", "source": "/dev/video99"}],
                  sinks=[{"type": "serial", "port": str(tmp_path / "ttyUSB9")}])
    assert main(["check", "--config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert "ok" in out
    warnings = [x for x in err.splitlines() if x.startswith("WARNING")]
    assert len(warnings) == 3, err
    for needle in ("camera late: ", "camera usb: /dev/video99", "sink serial: port "):
        assert sum(needle in x and "waiting for it (at_start: retry)" in x for x in warnings) == 1, (needle, err)


def test_wrong_bundle_is_exit_65(tmp_path, bundle, video, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in Path(bundle).iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    spec = yaml.safe_load((broken / "model.yaml").read_text())
    spec["states"][0]["shape"] = [1, 3, 8, 8]
    (broken / "model.yaml").write_text(yaml.safe_dump(spec))
    cfg = _config(tmp_path / "c.yaml", model=str(broken), cameras=[{"name": "c", "source": str(video)}])
    assert main(["check", "--config", str(cfg)]) == EX_DATAERR
    assert "shape" in capsys.readouterr().err


def test_batching_stays_off_where_shapes_must_be_static(tmp_path, bundle, video, capsys):
    """An NPU (here absent: the engine falls back to CPU) gets no dynamic-batch graph; the cameras run."""
    pytest.importorskip("openvino")
    log = tmp_path / "events.jsonl"
    cfg = _config(tmp_path / "c.yaml", model=str(bundle), engine={"type": "openvino", "device": "NPU"},
                  cameras=[{"name": "a", "source": str(video)}, {"name": "b", "source": str(video)}],
                  sinks=[{"type": "log", "path": str(log)}])
    assert main(["run", "--config", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "batching off on openvino NPU" in err and "falling back to CPU" in err
    assert len([e for e in _lines(log) if e["event"] == "start"]) == 6
