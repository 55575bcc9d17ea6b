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


def _undescribed(node, where: str = "") -> list[str]:
    """Every property in a JSON schema (top level, $defs, nested and inline objects) without a description."""
    out: list[str] = []
    if isinstance(node, dict):
        for key, prop in (node.get("properties") or {}).items():
            if not (isinstance(prop, dict) and prop.get("description", "").strip()):
                out.append(f"{where}.{key}")
        for key, sub in node.items():
            out += _undescribed(sub, f"{where}.{key}" if key != "properties" else where)
    elif isinstance(node, list):
        for sub in node:
            out += _undescribed(sub, where)
    return out


def test_every_key_of_the_schema_has_a_description(capsys):
    assert main(["config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"StdoutSinkConfig", "JournalConfig", "ClassThresholds"} <= set(schema["$defs"])  # sinks, nested ones
    assert _undescribed(schema) == []
    assert _undescribed({"properties": {"a": {"type": "string"}, "b": {"description": "x"}}}) == [".a"]


def test_cli_exit_codes(tmp_path, capsys):
    assert main(["check", "--config", str(tmp_path / "nope.yaml")]) == EX_NOINPUT
    bad = tmp_path / "bad.yaml"
    bad.write_text(CAM.replace("}]", ", fps: -1}]"))
    assert main(["check", "--config", str(bad)]) == EX_CONFIG
    assert main(["run", "--config", str(bad)]) == EX_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"edge-tsm: error: config {bad}: cameras[0].fps: expected a number > 0, got -1"
    assert main(["config", "--config", str(bad)]) == EX_CONFIG


# --- every number finite and bounded, long values cut, YAML 1.2 numbers, metrics.listen --------------------
def _field_value(model, name, value):
    """``value`` as the field takes it (a dict field such as gpio ``lines`` gets it as a mapping value)."""
    import typing

    from edge.schema import _unwrap
    return {"x": value} if typing.get_origin(_unwrap(model.model_fields[name].annotation)) is dict else value


def _errors_at(model, name, value) -> list[dict]:
    from pydantic import ValidationError
    try:
        model.model_validate({name: _field_value(model, name, value)})
    except ValidationError as e:
        return [err for err in e.errors() if err["loc"][:1] == (name,)]
    return []


def test_every_model_is_strict_and_every_number_finite_and_bounded():
    """Walks every model the config reaches (sinks, nested sections): unknown keys refused, no inf or
    nan, and no float or int without an upper bound (1e300 s of backoff, a 10^30 queue: refused at load,
    not an OverflowError in a thread later)."""
    from edge.schema import models_and_fields
    models, numbers = models_and_fields(Config)
    assert len(models) >= 15 and len(numbers) >= 40
    for m in models:
        assert m.model_config.get("extra") == "forbid" and m.model_config.get("allow_inf_nan") is False, m.__name__
    unbounded = []
    for model, name, kind in numbers:
        where = f"{model.__name__}.{name}"
        if kind is float:
            for bad in (float("inf"), float("-inf"), float("nan")):
                assert _errors_at(model, name, bad), f"{where} accepts {bad}"
            huge = 1e300
        else:
            huge = 10 ** 30
        if not _errors_at(model, name, huge) or not _errors_at(model, name, -huge):
            unbounded.append(where)
    assert unbounded == [], unbounded   # a V4L2 index too: 0 to 255


@pytest.mark.parametrize("text, value", [("1e-9", 1e-9), ("1e3", 1000.0), ("2.5e3", 2500.0), ("-1E+2", -100.0),
                                          (".5e1", 5.0), ("1.5e-3", 1.5e-3), ("1_000", 1000), ("0.25", 0.25),
                                          ("'1e3'", "1e3"), ("1e400", float("inf")), ("e3", "e3"), ("1e", "1e")])
def test_yaml_numbers_as_yaml_1_2_reads_them(text, value):
    got = parse_yaml(f"v: {text}\n", "t")["v"]
    assert got == value and type(got) is type(value)


def test_exponent_numbers_reach_the_config_and_inf_is_refused():
    cfg = _load(CAM + "events: {cooldown_s: 1e-9}\njournal: {fsync_interval_s: 5e-1}\n")
    assert cfg.events.cooldown_s == 1e-9 and cfg.journal.fsync_interval_s == 0.5
    with pytest.raises(ConfigError, match=r"^config t.yaml: events.cooldown_s: expected a finite number, got inf$"):
        _load(CAM + "events: {cooldown_s: 1e400}\n")
    with pytest.raises(ConfigError, match=r"cameras\[0\].reconnect.initial_s: expected a number <= 3600, got 1e\+300"):
        _load(CAM.replace("}]", ", reconnect: {initial_s: 1e300, max_s: .inf}}]"))


@pytest.mark.parametrize("listen, ok", [("127.0.0.1:9108", True), ("127.1.2.3:0", True), ("[::1]:9108", True),
                                        ("localhost:9108", True), ("0.0.0.0:9108", False), ("[::]:9108", False),
                                        ("192.168.1.5:9108", False), ("example.com:9108", False)])
def test_metrics_listen_beyond_loopback_needs_listen_any(listen, ok):
    text = CAM + f"metrics: {{listen: '{listen}'}}\n"
    if ok:
        assert _load(text).metrics.listen == listen
    else:
        with pytest.raises(ConfigError) as e:
            _load(text)
        assert str(e.value) == (f"config t.yaml: metrics.listen: a HOST other than loopback serves the status (camera "
                                f"names, labels, counts) to the network without authentication; use 127.0.0.1:PORT, "
                                f"or set metrics.listen_any: true, got '{listen}'")
        assert _load(CAM + f"metrics: {{listen_any: true, listen: '{listen}'}}\n").metrics.listen == listen


@pytest.mark.parametrize("listen", ["9108", ":9108", "host:", "host:99999", "host:http"])
def test_metrics_listen_must_be_host_and_port(listen):
    with pytest.raises(ConfigError, match=r"metrics.listen: expected HOST:PORT such as 127.0.0.1:9108, got "):
        _load(CAM + f"metrics: {{listen: '{listen}', listen_any: true}}\n")


def test_metrics_changes_name_what_waits_for_a_restart():
    from edge.config import metrics_changes
    old = _load(CAM + "metrics: {listen: '127.0.0.1:9108'}\n")
    assert metrics_changes(old, _load(CAM + "metrics: {listen: '127.0.0.1:9108'}\nlog_level: debug\n")) == []
    new = _load(CAM + "metrics: {listen: '127.0.0.1:9200', interval_s: 2}\n")
    assert metrics_changes(old, new) == [
        "metrics.interval_s changed from 5.0 to 2.0: it takes effect at the next restart (the running daemon "
        "keeps 5.0)",
        "metrics.listen changed from '127.0.0.1:9108' to '127.0.0.1:9200': it takes effect at the next restart "
        "(the running daemon keeps '127.0.0.1:9108')"]
    assert metrics_changes(new, _load(CAM))[-1].startswith("metrics.listen changed from '127.0.0.1:9200' to None")


@pytest.mark.parametrize("where", ["name", "fourcc", "cameras_list", "sink_camera", "clips_camera", "key", "dup_key",
                                   "log_level", "listen", "top"])
def test_a_huge_value_makes_a_short_error_line(where):
    """A 5 MB value wherever it is refused: the line shows 60 characters of it, never the value."""
    big = "x" * 5_000_000
    cam = {"name": "c", "source": "synthetic"}
    data = {"name": {"cameras": [{"name": big, "source": "synthetic"}]},
            "fourcc": {"cameras": [{**cam, "fourcc": big}]},
            "cameras_list": {"cameras": [big] * 100_000},
            "sink_camera": {"cameras": [cam], "sinks": [{"type": "stdout", "cameras": [big]}]},
            "clips_camera": {"cameras": [cam], "clips": {"cameras": [big]}},
            "key": {"cameras": [cam], big: 1},
            "log_level": {"cameras": [cam], "log_level": big},
            "listen": {"cameras": [cam], "metrics": {"listen": big}},
            "top": big}.get(where)
    with pytest.raises(ConfigError) as e:
        if where == "dup_key":
            parse_yaml(f"{'k' * 1_000_000}: 1\n{'k' * 1_000_000}: 2\n", "config t.yaml")
        else:
            config_from_data(data, "config t.yaml")
    assert len(str(e.value)) < 400 and "\n" not in str(e.value), str(e.value)[:500]


def test_a_config_file_over_a_mebibyte_is_refused_at_once(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text(CAM + f"state_dir: /{'d' * 50_000_000}\n")
    assert main(["-q", "check", "--config", str(path)]) == EX_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"edge-tsm: error: config {path}: more than 1 MiB; a config is a few kB of YAML (is this the "
                   "right file?)"]
