"""Configs fuzzed with hypothesis through ``edge-tsm check``: never a traceback, always one line and a
documented exit code (78 config, 66 missing input, 69 device, 65 model). Then every path-valued key given
paths the OS refuses (over-long, NUL, through a file, the wrong kind, no permission) or odd but legal
names (non-ASCII, not UTF-8), and a config file whose own name is not UTF-8."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import typing
from collections.abc import Callable
from pathlib import Path

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


@settings(max_examples=750, deadline=None, suppress_health_check=list(HealthCheck))
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


# --- paths ----------------------------------------------------------------------------------------------
# Every key that names a file or folder, given a path the OS cannot take or that points at the wrong
# kind of thing: ``check`` answers with one ``edge-tsm: error:`` line naming the key or the path and a
# documented exit code, never a traceback. Names that are odd but legal (a non-ASCII character, a byte
# that is not UTF-8, written into the YAML as the lone surrogate Python decodes it to) must do exactly
# what a plain name does (the "plain" case of the same key: the same exit code).
#
# The cases run through ``edge.cli.main`` in-process, all in one worker interpreter (``CHECK_WORKER``):
# a native library that crashes on a path (OpenCV did, on an undecodable file name) then fails that
# case, with the signal, instead of ending the whole test run; the worker is started again for the rest.
ERROR_CODES = {64, 65, 66, 69, 78}


def _permissions_ignored() -> bool:
    """True where this process reads a file with mode 000 (root, or CAP_DAC_OVERRIDE): no permission cases."""
    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            probe.read_text()
        except PermissionError:
            return False
        return True


PERMISSIONS_IGNORED = _permissions_ignored()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once it is closed: connecting is refused at once


def _mqtt(**kw) -> dict:
    return {"type": "mqtt", "host": "127.0.0.1", "port": _closed_port(), "timeout_s": 1.0,
            "connect_at_start": "require", **kw}


# key -> (role, how the path goes into the base config, the words a message about it may use)
#   roles: in_file / in_dir (must exist and be read), out_file / out_dir (made or written), device
PATH_KEYS: dict[str, tuple[str, Callable[[dict, str, Path], None], tuple[str, ...]]] = {
    "model": ("in_dir", lambda c, v, t: c.update(model=v), ("model",)),
    "cameras[].source": ("in_file", lambda c, v, t: c["cameras"][0].update(source=v), ("camera c",)),
    "log path": ("out_file", lambda c, v, t: c.update(sinks=[{"type": "log", "path": v}]), ("sink log",)),
    "unix path": ("out_file", lambda c, v, t: c.update(sinks=[{"type": "unix", "path": v}]), ("sink unix",)),
    "serial port": ("device", lambda c, v, t: c.update(sinks=[{"type": "serial", "port": v}]), ("sink serial",)),
    "state_dir": ("out_dir", lambda c, v, t: c.update(state_dir=v), ("state_dir", "journal")),
    "clips.dir": ("out_dir", lambda c, v, t: c.update(clips={"dir": v, "triggers": ["event"]}), ("clips.dir",)),
    "metrics.textfile": ("out_file", lambda c, v, t: c.update(metrics={"textfile": v}), ("metrics.textfile",)),
    "mqtt password_file": ("in_file", lambda c, v, t: c.update(sinks=[_mqtt(username="u", password_file=v)]),
                           ("password_file",)),
    "mqtt tls.ca_file": ("in_file", lambda c, v, t: c.update(sinks=[_mqtt(tls={"ca_file": v})]), ("tls.ca_file",)),
    "mqtt tls.cert_file": ("in_file", lambda c, v, t: c.update(sinks=[_mqtt(tls={"cert_file": v})]),
                           ("tls.cert_file",)),
    "mqtt tls.key_file": ("in_file", lambda c, v, t: c.update(sinks=[_mqtt(tls={"cert_file": str(t / "cert.pem"),
                                                                               "key_file": v})]),
                          ("tls.key_file",)),
    "engine.cache_dir": ("out_dir", lambda c, v, t: c.update(engine={"type": "openvino", "cache_dir": v}),
                         ("cache_dir",)),
}
KINDS = ["plain", "long_path", "long_name", "nul", "latin", "undecodable", "through_file", "wrong_kind",
         "no_permission"]
LEGAL = {"plain", "latin", "undecodable"}  # names the OS takes: made like the working parts, they work as well
# ... except where a native library must take the name as text and no stand-in name exists: the engines'
# compile cache is a folder (a file is opened and handed over as /proc/self/fd/N; a folder cannot be)
REFUSED = {"engine.cache_dir/undecodable"}
CASES = [(k, kind) for k in PATH_KEYS for kind in KINDS]


def _odd_path(kind: str, role: str, tmp: Path, marker: str) -> str:
    """A path of ``kind`` for a key of ``role``, under ``tmp``, with ``marker`` in its last components."""
    if kind == "long_path":  # 5000 characters in 50 names: over PATH_MAX (4096 bytes), each name fine
        head = f"{tmp}/" + "/".join(["d" * 99] * 48) + f"/{marker}-"
        return head + "x" * (5000 - len(head))
    if kind == "long_name":  # one name of 300 characters: over NAME_MAX (255 bytes)
        return str(tmp / (marker + "n" * (300 - len(marker))))
    if kind == "nul":
        return str(tmp / f"{marker}-nul\x00x")
    if kind in LEGAL:  # 'bad-ÿ' as text (UTF-8 c3 bf on disk); the byte ff itself as Python reads it
        return str(tmp / {"plain": f"{marker}-plain", "latin": f"{marker}-bad-\xff",
                          "undecodable": f"{marker}-bad-\udcff"}[kind])
    if kind == "through_file":  # a path through a regular file: ENOTDIR, for root too
        (tmp / f"{marker}-afile").write_text("x")
        return str(tmp / f"{marker}-afile" / "x")
    if kind == "wrong_kind":  # a folder where a file is expected, a file where a folder is expected
        if role.endswith("dir"):
            (tmp / f"{marker}-afile").write_text("x")
            return str(tmp / f"{marker}-afile")
        (tmp / f"{marker}-adir").mkdir()
        return str(tmp / f"{marker}-adir")
    if kind != "no_permission":
        raise ValueError(f"unknown path kind {kind!r}")
    locked = tmp / f"{marker}-locked"
    locked.mkdir()
    if role.startswith("out"):  # a folder this user cannot write in
        locked.chmod(0o555)
        return str(locked / "x")
    target = locked / "x"  # a file or folder this user cannot read
    if role == "in_dir":
        target.mkdir()
    else:
        target.write_text("x")
    target.chmod(0)
    return str(target)


def _make_legal(key: str, role: str, path: str, assets, pty_path: Callable[[], str]) -> None:
    """Inputs with odd but legal names are made to exist (copies of the working parts), so the name is
    what is tested; outputs are left for the daemon to make."""
    bundle, video = assets
    if role == "in_dir":
        shutil.copytree(bundle, path)
    elif key == "cameras[].source":
        shutil.copy(video, path)
    elif role == "in_file":
        Path(path).write_text("secret\n")
    elif role == "device":
        os.symlink(pty_path(), path)  # a real pty behind a link with the odd name


CHECK_WORKER = r"""
import io, json, logging, os, sys, traceback
from edge.cli import main
proto = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # what native code prints goes to stderr, the protocol keeps fd 1 to itself
for line in sys.stdin:
    case = json.loads(line)
    proto.write(json.dumps({"start": case["id"]}) + "\n")
    proto.flush()
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)  # strict, as a terminal's
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace", write_through=True)
    sys.stdout, sys.stderr = out, err
    try:
        code = main(case["argv"])
    except BaseException as e:
        code = "raised " + "".join(traceback.format_exception_only(e)).strip()
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        logging.getLogger().handlers[:] = []
    proto.write(json.dumps({"id": case["id"], "code": code, "err": err.buffer.getvalue().decode("utf-8"),
                            "out": out.buffer.getvalue().decode("utf-8")}) + "\n")
    proto.flush()
"""


def run_in_worker(cases: list[dict], timeout: float = 120.0) -> dict[str, dict]:
    """Run each ``{"id", "argv"}`` through ``edge.cli.main`` in a worker interpreter; a case during which
    the worker died gets ``code`` 'crashed ...' with the worker's stderr, and the worker starts again."""
    results: dict[str, dict] = {}
    pending = list(cases)
    while pending:
        feed = "".join(json.dumps(c) + "\n" for c in pending)
        proc = subprocess.run([sys.executable, "-c", CHECK_WORKER], input=feed, capture_output=True, text=True,
                              timeout=timeout, errors="backslashreplace")
        started = None
        for line in proc.stdout.splitlines():
            msg = json.loads(line)
            if "start" in msg:
                started = msg["start"]
            else:
                results[msg["id"]], started = msg, None
        if started is not None:
            rc = proc.returncode
            how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
            results[started] = {"id": started, "code": f"crashed ({how})", "err": proc.stderr[-3000:], "out": ""}
        elif proc.returncode != 0:
            raise AssertionError(f"the check worker failed outside a case: {proc.stderr[-3000:]}")
        pending = [c for c in pending if c["id"] not in results]
    return results


@pytest.fixture(scope="module")
def path_results(assets, tmp_path_factory):
    """Each (key, kind) case's config written under its own folder and run by ``check``: case -> result."""
    made, cases, meta = [], [], {}

    def pty_path() -> str:
        made.append(os.openpty())
        return os.ttyname(made[-1][1])
    bundle, video = assets
    for i, (key, kind) in enumerate(CASES):
        if kind == "no_permission" and PERMISSIONS_IGNORED:
            continue
        role, put, _ = PATH_KEYS[key]
        tmp = tmp_path_factory.mktemp(f"path{i}")
        marker = f"zq{i}k"
        path = _odd_path(kind, role, tmp, marker)
        if kind in LEGAL:
            _make_legal(key, role, path, assets, pty_path)
        (tmp / "cert.pem").write_text("not a certificate\n")
        cfg = {"model": str(bundle), "state_dir": str(tmp / "state"), "cameras": [{"name": "c", "source": str(video)}],
               "sinks": [{"type": "log", "path": str(tmp / "events.jsonl")}]}
        put(cfg, path, tmp)
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
        cases.append({"id": f"{key}/{kind}", "argv": ["-q", "check", "--config", str(tmp / "config.yaml")]})
        meta[f"{key}/{kind}"] = marker
    try:
        results = run_in_worker(cases)
    finally:
        for master, slave in made:
            os.close(master)
            os.close(slave)
    return {k: {**v, "marker": meta[k]} for k, v in results.items()}


@pytest.mark.parametrize("key, kind", CASES, ids=[f"{k}/{kind}" for k, kind in CASES])
def test_odd_paths_are_one_line_and_a_documented_code(key, kind, path_results):
    if kind == "no_permission" and PERMISSIONS_IGNORED:
        pytest.skip("this process ignores file permissions (root): the path through a file stands in for it")
    r = path_results[f"{key}/{kind}"]
    code, err, marker = r["code"], r["err"].strip().splitlines(), r["marker"]
    words = PATH_KEYS[key][2]
    shown = f"{key} / {kind}: exit {_cut(str(code))}, stderr {[_cut(x) for x in err[-3:]]}"
    assert isinstance(code, int) and not any("Traceback" in x for x in err), shown
    legal = kind in LEGAL and f"{key}/{kind}" not in REFUSED
    if legal:  # as a plain name does (mqtt: no broker there, exit 69 for every name, after the files)
        plain = path_results[f"{key}/plain"]
        assert code == plain["code"], f"{shown}; with a plain name: exit {_cut(str(plain['code']))}"
        if code == 0:
            assert "ok" in r["out"], shown
            return
        assert (marker in r["err"]) == (plain["marker"] in plain["err"]), f"{shown}; plain: {plain['err']}"
    assert code in ERROR_CODES, shown
    errors = [x for x in err if x.startswith("edge-tsm: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], shown
    assert legal or marker in errors[0] or any(w in errors[0] for w in words), \
        f"{shown}: names neither the key ({', '.join(words)}) nor the path"


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit - 80]}...{text[-60:]} ({len(text)} characters)"


def _undecodable_config(tmp_path: Path, assets) -> bytes:
    """A valid config in a file whose name holds the byte ff (not UTF-8); its path as bytes."""
    bundle, video = assets
    folder = os.fsencode(tmp_path) + b"/conf-\xff"
    os.mkdir(folder)
    path = folder + b"/edge-\xff.yaml"
    with open(path, "w") as f:
        yaml.safe_dump({"model": str(bundle), "state_dir": str(tmp_path / "state"),
                        "cameras": [{"name": "c", "source": str(video)}],
                        "sinks": [{"type": "log", "path": str(tmp_path / "events.jsonl")}]}, f)
    return path


def test_config_file_with_an_undecodable_name_in_process(tmp_path, assets):
    """The command line as Python hands it over: the byte ff as the lone surrogate \\udcff."""
    path = _undecodable_config(tmp_path, assets)
    r = run_in_worker([{"id": "ok", "argv": ["-q", "check", "--config", os.fsdecode(path)]},
                       {"id": "missing", "argv": ["-q", "check", "--config", os.fsdecode(path + b".missing")]}])
    assert r["ok"]["code"] == 0 and "ok" in r["ok"]["out"] and not r["ok"]["err"], r["ok"]
    err = r["missing"]["err"].strip().splitlines()
    assert r["missing"]["code"] == 66 and len(err) == 1 and err[0].startswith("edge-tsm: error: config ") \
        and "no such file" in err[0], r["missing"]


def test_config_file_with_an_undecodable_name_as_a_user_runs_it(tmp_path, assets):
    """``edge-tsm check --config <bytes>`` in a real process with a terminal's strict UTF-8 stdout (as under
    en_US.UTF-8; C.UTF-8 would let Python escape what it cannot encode): ok, no traceback."""
    path = _undecodable_config(tmp_path, assets)
    env = dict(os.environ, LC_ALL="C.UTF-8", PYTHONIOENCODING="utf-8:strict")
    env.pop("PYTHONUTF8", None)
    proc = subprocess.run([sys.executable, "-m", "edge", "-q", "check", "--config", path], capture_output=True,
                          env=env, timeout=60)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0 and b"ok" in proc.stdout and "Traceback" not in err, (proc.returncode, err)


# --- every number of the config: infinite, not a number, huge -------------------------------------------------
# Each float key (found by walking the config's models, so a new one is covered or fails here) given inf,
# -inf, nan, 1e300 and 1e400 (which YAML 1.2 reads as inf), and each int key 10^30, through ``check`` as a
# user writes them in YAML: exit 78 and one line naming the key. Found once: reconnect 1e300 / .inf crashed
# the capture thread (OverflowError, exit 70), an MQTT timeout_s of 1e20 made a traceback.
def _number_places() -> dict[str, tuple[list, dict]]:
    from edge.config import (
        CameraConfig,
        ClassThresholds,
        ClipsConfig,
        Config,
        EngineConfig,
        EventsConfig,
        JournalConfig,
        MetricsConfig,
        UncertainTrigger,
    )
    from edge.schema import ReconnectConfig
    from edge.sinks import SINK_TYPES
    sinks = {"stdout": {}, "log": {"path": "LOG"}, "serial": {"port": "/dev/null"}, "gpio": {"lines": {"red": 1}},
             "mqtt": {"host": "127.0.0.1"}, "unix": {"path": "SOCK"}}
    places = {Config: ([], {}), EngineConfig: (["engine"], {}), CameraConfig: (["cameras", 0], {}),
              ReconnectConfig: (["cameras", 0, "reconnect"], {}), EventsConfig: (["events"], {}),
              ClassThresholds: (["events", "classes", "red"], {}), JournalConfig: (["journal"], {}),
              MetricsConfig: (["metrics"], {}), ClipsConfig: (["clips"], {}),
              UncertainTrigger: (["clips", "uncertain"], {})}
    for sink in SINK_TYPES:
        kind = typing.get_args(sink.config.model_fields["type"].annotation)[0]
        places[sink.config] = (["sinks", 0], {"type": kind, **sinks[kind]})
    from edge.sinks.mqtt import MqttTlsConfig
    places[MqttTlsConfig] = (["sinks", 0, "tls"], {})  # under an mqtt sink (the tests put one there)
    return places


def _number_cases() -> list[tuple[str, list, dict, str, str]]:
    from edge.config import Config
    from edge.schema import models_and_fields
    places = _number_places()
    _, numbers = models_and_fields(Config)
    cases = []
    for model, name, kind in numbers:
        assert model in places, f"{model.__name__}: add where it goes in a config to _number_places"
        where, base = places[model]
        bads = ["inf", "-inf", "nan", "1e300", "1e400"] if kind is float else [str(10 ** 30)]
        if (model.__name__, name) == ("CameraConfig", "source"):
            continue  # a V4L2 index: any int is a name OpenCV may refuse (exit 69), not a config error
        cases += [(f"{model.__name__}.{name}={bad}", where, base, name, bad) for bad in bads]
    return cases


NUMBER_CASES = _number_cases()


@pytest.mark.parametrize("case, where, base, name, bad", NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
def test_infinite_and_huge_numbers_are_one_line_exit_78(case, where, base, name, bad, assets, tmp_path, capsys):
    bundle, video = assets
    cfg = {"model": str(bundle), "state_dir": str(tmp_path / "state"), "cameras": [{"name": "c", "source": str(video)}],
           "events": {"classes": {"red": {}}}, "clips": {}, "sinks": [{"type": "stdout"}]}
    node = cfg
    for key in where:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node.update(_fill(base, bundle, video, tmp_path / "events.jsonl"))
    if base.get("type") == "unix":
        node["path"] = str(tmp_path / "s.sock")
    node[name] = {"red": "BAD"} if name == "lines" else "BAD"
    text = yaml.safe_dump(cfg).replace("BAD", {"inf": ".inf", "-inf": "-.inf", "nan": ".nan"}.get(bad, bad))
    (tmp_path / "config.yaml").write_text(text)
    code = main(["-q", "check", "--config", str(tmp_path / "config.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 78 and len(err) == 1 and err[0].startswith("edge-tsm: error: config "), (case, code, err)
    assert f"{name}:" in err[0] or f"{name}." in err[0], (case, err)
    assert len(err[0]) < 400, err[0]


# --- every string of the config at its longest ------------------------------------------------------------------
# Each string-valued key (found by walking the models) given the longest string a config may hold
# (edge.schema.MAX_STR characters) and one character more, through ``check``: a documented code and, on
# failure, one line of a few hundred characters at most, whatever reached the paths, the engines or the
# sinks (a 50 MB value once made a 50 MB error line).
def _string_cases() -> list[tuple[str, list, dict, str, str]]:
    from edge.config import Config
    from edge.schema import models_and_fields
    places = _number_places()
    _, strings = models_and_fields(Config, (str,))
    cases = []
    for model, name, _ in strings:
        assert model in places, f"{model.__name__}: add where it goes in a config to _number_places"
        where, base = places[model]
        for size in ("max", "over"):
            cases.append((f"{model.__name__}.{name}/{size}", where, base, name, size))
    return cases


STRING_CASES = _string_cases()


@pytest.fixture(scope="module")
def string_results(assets, tmp_path_factory):
    from edge.schema import MAX_STR
    bundle, video = assets
    cases = []
    for case, where, base, name, size in STRING_CASES:
        tmp = tmp_path_factory.mktemp("str")
        big = f"{tmp}/" + "y" * (MAX_STR + (size == "over") - len(f"{tmp}/"))
        cfg = {"model": str(bundle), "state_dir": str(tmp / "state"), "cameras": [{"name": "c", "source": str(video)}],
               "sinks": [_mqtt() if "tls" in where else {"type": "stdout"}]}
        node = cfg
        for key in where:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        node.update(_fill(base, bundle, video, tmp / "events.jsonl"))
        if base.get("type") == "unix":
            node["path"] = str(tmp / "s.sock")
        if base.get("type") == "mqtt":
            node.update(_mqtt())
        field = typing.get_origin(model_field(where, base, name))
        node[name] = {big: {} if name == "classes" else 1} if field is dict else [big] if field is list else big
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
        cases.append({"id": case, "argv": ["-q", "check", "--config", str(tmp / "config.yaml")]})
    return run_in_worker(cases, timeout=600)


def model_field(where: list, base: dict, name: str):
    from edge.schema import _unwrap
    model = next(m for m, (w, b) in _number_places().items() if w == where and b == base)
    return _unwrap(model.model_fields[name].annotation)


@pytest.mark.parametrize("case, where, base, name, size", STRING_CASES, ids=[c[0] for c in STRING_CASES])
def test_the_longest_strings_make_short_lines(case, where, base, name, size, string_results):
    r = string_results[case]
    code, err = r["code"], r["err"].strip().splitlines()
    assert isinstance(code, int) and not any("Traceback" in x for x in err), (case, code, [x[:300] for x in err])
    assert code in {0} | ERROR_CODES, (case, code, [x[:300] for x in err])
    if size == "over":  # the config's limit (some keys have a smaller one)
        assert code == 78 and re.search(r"expected at most \d+ characters \(16385 given\)", err[-1]), \
            (case, err[-1][:300])
    if code:
        assert err[-1].startswith("edge-tsm: error: ") and len(err[-1]) < 600, (case, err[-1][:300], len(err[-1]))
