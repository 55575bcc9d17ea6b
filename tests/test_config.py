"""Config parsing: typed models, unknown keys refused, one-line errors naming key, value and what is allowed."""
from __future__ import annotations

import json

import pytest

from edge.cli import main
from edge.config import (
    Config,
    config_from_data,
    json_schema,
    load_config,
    normalise_camera_source,
    parse_yaml,
    sink_names,
)
from edge.errors import EX_CONFIG, EX_NOINPUT, ConfigError, InputError

CAM = "cameras: [{name: door, source: clip.avi}]\n"


def _load(text: str) -> Config:
    return config_from_data(parse_yaml(text, "config t.yaml"), "config t.yaml")


def test_minimal_config_gets_defaults():
    cfg = _load(CAM)
    assert cfg.model == "default" and cfg.engine.type == "onnxruntime" and cfg.engine.precision_hint == "f32"
    assert [s.type for s in cfg.sinks] == ["stdout"]
    assert cfg.cameras[0].reconnect.initial_s == 0.5
    assert cfg.events.window is None  # filled from the model's decision rate at start


def test_design_sheet_example_parses():
    cfg = _load("""
model: default
engine: {type: openvino, device: AUTO, precision: int8, threads: 2}
cameras:
  - {name: door, source: /dev/video0, width: 640, height: 480, fps: 30, fourcc: MJPG}
events: {window: 8, enter: 0.7, exit: 0.5, min_frames: 4, cooldown_s: 2, ignore: [no_motion],
         classes: {swipe_left: {enter: 0.8}}}
sinks:
  - {type: log, path: /var/lib/edge-tsm/events.jsonl}
  - {type: serial, port: /dev/ttyUSB0, baud: 115200, format: text}
""")
    assert cfg.engine.device == "AUTO" and cfg.events.classes["swipe_left"].enter == 0.8
    assert sink_names(cfg) == ["log", "serial"]


@pytest.mark.parametrize("text,expected", [
    (CAM.replace("}]", ", fps: -1}]"), "config t.yaml: cameras[0].fps: expected a number > 0"),
    (CAM.replace("}]", ", fsp: 3}]"), "cameras[0].fsp: unknown key (allowed: name, source, type,"),
    (CAM.replace("}]", ", fps: '30'}]"), "cameras[0].fps: expected a number, got '30'"),
    (CAM.replace("door", "'a b'"), "cameras[0].name: expected letters, digits"),
    (CAM + CAM, "duplicate key 'cameras' (first at line 1)"),
    ("cameras: []", "cameras: expected at least 1 item(s), got []"),
    ("model: default", "cameras: required key missing"),
    (CAM + "sinks: [{type: serial, port: /dev/x, baud: 12}]", "sinks[0].baud: expected one of 1200, 2400"),
    (CAM + "sinks: [{type: serial, port: /dev/x, bud: 9600}]", "sinks[0].bud: unknown key (allowed: name,"),
    (CAM + "sinks: [{type: seral, port: /dev/x}]", "sinks[0].type: expected 'stdout', 'log', 'serial'"),
    (CAM + "sinks: [{port: /dev/x}]", "sinks[0]: needs a 'type' key"),
    (CAM + "events: {enter: 0.3, exit: 0.5}", "events: exit (0.5) must be <= enter (0.3)"),
    (CAM + "events: {classes: {x: {enter: 2}}}", "events.classes.x.enter: expected a number <= 1"),
    (CAM + "engine: {type: tensorrt}", "engine.type: expected 'onnxruntime' or 'openvino', got 'tensorrt'"),
    ("cameras: [{name: a, source: x}, {name: a, source: 0}]", "camera names must be unique"),
    (CAM + "sinks: [{type: log, path: a, cameras: [gate]}]", "sinks[0].cameras: 'gate' is not a configured camera"),
    ("- 1", "expected a mapping of keys"),
    ("", "empty; expected a mapping"),
    ("cameras: [{name: a, source: x", "not valid YAML at line 1"),
    ("a: &x [1]\nb: *x\ncameras: [{name: a, source: x}]", "a: unknown key (allowed: model, engine, cameras"),
    ("cameras: [{name: a, source: x, reconnect: {initial_s: 5, max_s: 1}}]", "max_s (1.0) must be >= initial_s"),
])
def test_errors_are_one_line_and_name_the_key(text, expected):
    with pytest.raises(ConfigError) as e:
        _load(text)
    msg = str(e.value)
    assert expected in msg and "\n" not in msg and msg.startswith("config t.yaml")
    assert e.value.exit_code == EX_CONFIG


def test_load_config_file_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(InputError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"cameras: \x00")
    with pytest.raises(ConfigError, match="NUL"):
        load_config(nul)


@pytest.mark.parametrize("source,kind", [
    (0, ("v4l2", 0)), ("/dev/video2", ("v4l2", "/dev/video2")), ("3", ("v4l2", 3)),
    ("rtsp://cam.local/stream", ("url", "rtsp://cam.local/stream")), ("clip.mp4", ("file", "clip.mp4")),
    ("gst: videotestsrc ! appsink", ("gstreamer", "videotestsrc ! appsink")), ("synthetic", ("synthetic", "synthetic")),
    ("synthetic:zoom_in", ("synthetic", "synthetic:zoom_in")),
])
def test_source_kinds(source, kind):
    cfg = config_from_data({"cameras": [{"name": "c", "source": source}]})
    assert normalise_camera_source(cfg.cameras[0]) == kind


def test_schema_is_json_and_describes_fields(capsys):
    schema = json.loads(json_schema())
    assert "cameras" in schema["properties"] and "cameras" in schema["required"]
    assert main(["config", "--schema"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == schema
    text = json.dumps(schema)
    assert "V4L2 index" in text  # field descriptions travel with the schema


def test_cli_exit_codes(tmp_path, capsys):
    assert main(["check", "--config", str(tmp_path / "nope.yaml")]) == EX_NOINPUT
    bad = tmp_path / "bad.yaml"
    bad.write_text(CAM.replace("}]", ", fps: -1}]"))
    assert main(["check", "--config", str(bad)]) == EX_CONFIG
    assert main(["run", "--config", str(bad)]) == EX_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"edge-tsm: error: config {bad}: cameras[0].fps: expected a number > 0.0, got -1"
    assert main(["config", "--config", str(bad)]) == EX_CONFIG
