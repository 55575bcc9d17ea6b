"""Configs fuzzed with hypothesis through ``edge-tsm check``: never a traceback, always one line and a
documented exit code (78 config, 66 missing input, 69 device, 65 model)."""
from __future__ import annotations

import math
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinymodel import build_tiny_bundle, write_colour_video

from edge.cli import main

CODES = {0, 65, 66, 69, 78}
KEYS = {
    "": ["model", "engine", "cameras", "events", "sinks", "log_level", "status_interval_s"],
    "engine": ["type", "device", "precision", "threads", "allow_fallback", "cache_dir", "precision_hint",
               "step_timeout_s"],
    "camera": ["name", "source", "type", "width", "height", "fps", "fourcc", "loop", "realtime", "stall_s",
               "reconnect"],
    "events": ["window", "smoothing", "ema_alpha", "enter", "exit", "min_frames", "cooldown_s", "ignore", "classes"],
    "sink": ["type", "name", "queue_size", "cameras", "events", "path", "format", "fsync", "port", "baud",
             "write_timeout_s", "reconnect", "max_pending"],
}
GOOD = {"type": ["stdout", "log", "serial", "onnxruntime", "openvino", "v4l2", "file", "synthetic", "gpio"],
        "source": ["synthetic", "synthetic:red", "/dev/video7", "rtsp://127.0.0.1:9/x", "gst: videotestsrc ! appsink"],
        "port": ["/dev/ttyUSB0", "/dev/null", "/etc/passwd"], "path": ["/proc/nope/x.jsonl", "/"]}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True),
    st.sampled_from([math.inf, -math.inf, 0, -1, 1e308, 2**63]), st.text(max_size=20),
    st.sampled_from(["", " ", "\t", "0", "-1", "1e9", "yes", "null", "~", "CPU", "AUTO:NPU,GPU,CPU", "fp32", "int8",
                     "json", "text", "always", "MJPG", "🙂", "a" * 300]),
)


def values(key: str) -> st.SearchStrategy:
    base = scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=5), scalars, max_size=3)
    return st.sampled_from(GOOD[key]) | base if key in GOOD else base


def section(kind: str) -> st.SearchStrategy:
    keys = KEYS[kind]
    known = st.dictionaries(st.sampled_from(keys), st.deferred(lambda: values("x")), max_size=len(keys))
    typed = st.fixed_dictionaries({}, optional={k: values(k) for k in keys})
    extra = st.dictionaries(st.text(min_size=1, max_size=8), scalars, max_size=2)
    return st.one_of(typed, known, st.builds(lambda a, b: {**a, **b}, typed, extra), scalars)


configs = st.fixed_dictionaries({}, optional={
    "model": st.just("TINY") | values("model"),
    "engine": section("engine"),
    "cameras": st.lists(section("camera"), max_size=3) | scalars,
    "events": section("events"),
    "sinks": st.lists(section("sink"), max_size=3) | scalars,
    "log_level": values("log_level"),
    "status_interval_s": values("status_interval_s"),
}) | scalars | st.lists(scalars)


PATHS = [("model",), *[("engine", k) for k in KEYS["engine"]], *[("cameras", 0, k) for k in KEYS["camera"]],
         *[("events", k) for k in KEYS["events"]], *[("sinks", 0, k) for k in KEYS["sink"]],
         ("cameras", 1), ("sinks", 1), ("log_level",), ("status_interval_s",)]
GOOD_VALUES = st.sampled_from([0, 1, 2, 0.5, 30, 640, 115200, True, False, None, "CPU", "onnxruntime", "openvino",
                               "fp32", "int8", "MJPG", "json", "text", "mean", "ema", ["red"], {"red": {"enter": 0.9}},
                               "synthetic", "VIDEO", "TINY", "/dev/video0", "/dev/ttyUSB0", "stdout", "log", "serial",
                               {"name": "d", "source": "VIDEO"}, {"type": "stdout"}, {"type": "log", "path": "LOG"}])
mutation = st.tuples(st.sampled_from(PATHS), GOOD_VALUES | values("x") | st.just("DELETE"))


def _mutate(cfg: dict, path: tuple, value) -> None:
    node = cfg
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {} if not isinstance(key, str) or key not in ("cameras", "sinks") else [])
        elif isinstance(node, list):
            while len(node) <= key:
                node.append({})
            node = node[key]
        else:
            return
    last = path[-1]
    if isinstance(node, list):
        while len(node) <= last:
            node.append({})
        if value != "DELETE":
            node[last] = value
    elif isinstance(node, dict):
        if value == "DELETE":
            node.pop(last, None)
        else:
            node[last] = value


def _fill(value, bundle, video, log):
    if isinstance(value, dict):
        return {k: _fill(v, bundle, video, log) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, bundle, video, log) for v in value]
    return {"TINY": str(bundle), "VIDEO": str(video), "LOG": str(log)}.get(value, value) if isinstance(value, str) \
        else value


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    cwd = os.getcwd()
    os.chdir(root)  # relative paths a fuzzed config names (a log sink's) land here, not in the checkout
    try:
        yield build_tiny_bundle(root / "tiny"), write_colour_video(root / "c.avi")
    finally:
        os.chdir(cwd)


def _check(path, capsys, verb: str = "check") -> None:
    code = main(["-q", verb, "--config", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code in CODES, (code, err)
    if code:
        assert len(err) == 1 and err[0].startswith("edge-tsm: error: "), err


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(cfg=configs)
def test_fuzzed_configs_never_traceback(cfg, assets, tmp_path_factory, capsys):
    bundle, video = assets
    if isinstance(cfg, dict):
        if cfg.get("model") == "TINY":
            cfg["model"] = str(bundle)
        if isinstance(cfg.get("cameras"), list):  # half the time a camera that exists, so later keys get reached
            for cam in cfg["cameras"]:
                if isinstance(cam, dict) and cam.get("source") == "synthetic:red":
                    cam["source"] = str(video)
    path = tmp_path_factory.mktemp("c") / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    _check(path, capsys)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_valid_configs_never_traceback(mutations, assets, tmp_path_factory, capsys):
    """A valid config with one to three keys set to odd values or removed: reaches the model, camera
    and sink checks, not just the schema."""
    bundle, video = assets
    folder = tmp_path_factory.mktemp("m")
    cfg = {"model": "TINY", "cameras": [{"name": "c", "source": "VIDEO"}], "sinks": [{"type": "log", "path": "LOG"}]}
    for path, value in mutations:
        _mutate(cfg, path, value)
    cfg = _fill(cfg, bundle, video, folder / "events.jsonl")
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    _check(folder / "config.yaml", capsys)
    cams = cfg.get("cameras") if isinstance(cfg, dict) else None
    if isinstance(cams, list) and cams and all(isinstance(c, dict) and c.get("source") == str(video)
                                                and not c.get("loop") and not c.get("realtime") for c in cams):
        _check(folder / "config.yaml", capsys, verb="run")  # a file that ends: run returns by itself


ODD_YAML = [
    "cameras: &c [{name: a, source: synthetic}]\nsinks: *c\n",
    "cameras: [{name: a, source: synthetic, name: b}]\n",
    "cameras: [{<<: {name: a}, source: synthetic}]\n",
    "cameras:\n\t- {name: a}\n",
    "!!python/object/apply:os.system ['echo hi']\n",
    "cameras: !!binary aGVsbG8=\n",
    "cameras: " + "[" * 2000 + "]" * 2000 + "\n",
    "a: &a [*a]\n",
    "cameras: [{name: a, source: synthetic}]\n...\n---\nmodel: x\n",
    "\ufeffcameras: [{name: a, source: synthetic}]\n",
    "cameras: [{? [1, 2] : x}]\n",
    "%YAML 9.9\n---\ncameras: []\n",
]


@pytest.mark.parametrize("text", ODD_YAML)
def test_odd_yaml(text, tmp_path, capsys, assets):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    _check(path, capsys)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=200))
def test_binary_garbage(data, tmp_path_factory, capsys, assets):
    path = tmp_path_factory.mktemp("b") / "c.yaml"
    path.write_bytes(data)
    _check(path, capsys)
