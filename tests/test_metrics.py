"""Metrics of a running daemon subprocess: status.json read by ``edge-tsm status``, Prometheus text
from the textfile and from the localhost endpoint; the histogram and text format on their own."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
import yaml
from tinymodel import build_tiny_bundle, write_colour_video
from waiting import wait_until

from edge.cli import main
from edge.errors import EX_DATAERR, EX_NOINPUT
from edge.metrics import BUCKETS_MS, Histogram, MetricsWriter, prometheus_text


def test_histogram_is_cumulative():
    h = Histogram()
    for ms in (0.1, 0.7, 3.0, 3.0, 5000.0):
        h.observe(ms)
    snap = h.snapshot()
    assert snap["count"] == 5 and snap["cumulative"][-1] == 5 and len(snap["cumulative"]) == len(BUCKETS_MS) + 1
    assert snap["cumulative"][0] == 1 and snap["cumulative"][1] == 2 and snap["cumulative"][3] == 4


def test_prometheus_text_escapes_labels():
    h = Histogram()
    h.observe(1.5)
    text = prometheus_text({"cameras": {'door "1"': {"state": "online", "fps": 30.0, "frames_read": 9, "classified": 3,
                                                      "skipped": 0, "reconnects": 1, "inference_ms": h.snapshot(),
                                                      "events": {"swipe_left": 2}}},
                            "sinks": {"log": {"delivered": 2, "pending": 0, "dropped": 0, "errors": 0}}})
    assert 'edge_tsm_events_total{camera="door \\"1\\"",label="swipe_left"} 2' in text
    assert 'edge_tsm_inference_ms_bucket{camera="door \\"1\\"",le="+Inf"} 1' in text
    assert "# TYPE edge_tsm_sink_pending gauge" in text and text.endswith("\n")


def test_a_reopened_log_and_a_restarted_sink_thread_show_in_status_and_prometheus(tmp_path, capsys):
    sink = {"state": "ok", "delivered": 5, "pending": 0, "dropped": 0, "errors": 0, "crashes": 1, "reopened": 2}
    (tmp_path / "status.json").write_text(json.dumps({"cameras": {}, "sinks": {"log": sink, "mqtt": {
        **sink, "crashes": 0, "reopened": None}}}))
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert next(ln for ln in table if ln.startswith("log")).endswith("(2 reopened, 1 crashes)")
    assert not next(ln for ln in table if ln.startswith("mqtt")).endswith(")")
    assert main(["status", "--state-dir", str(tmp_path), "--prometheus"]) == 0
    text = capsys.readouterr().out
    assert 'edge_tsm_sink_reopened_total{sink="log"} 2' in text and 'crashes_total{sink="mqtt"} 0' in text
    assert 'edge_tsm_sink_crashes_total{sink="log"} 1' in text and 'reopened_total{sink="mqtt"}' not in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_running_daemon_status_textfile_and_endpoint(tmp_path, capsys):
    bundle, video = build_tiny_bundle(tmp_path / "tiny"), write_colour_video(tmp_path / "c.avi")
    port = _free_port()
    cfg = {"model": str(bundle), "state_dir": str(tmp_path / "state"),
           "cameras": [{"name": "door", "source": str(video), "loop": True, "realtime": True}],
           "sinks": [{"type": "log", "path": str(tmp_path / "e.jsonl")}],
           "metrics": {"interval_s": 0.5, "textfile": str(tmp_path / "edge.prom"), "listen": f"127.0.0.1:{port}"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(path)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    status = tmp_path / "state" / "status.json"

    def events_in_status() -> dict | None:
        snap = json.loads(status.read_text()) if status.exists() else {}  # written atomically: whole or absent
        return snap.get("cameras", {}).get("door", {}).get("events")
    try:
        wait_until(events_in_status, timeout=30, what="events counted in status.json", proc=proc)
        assert main(["status", "--config", str(path)]) == 0
        out = capsys.readouterr().out
        assert "running" in out and "door" in out and "online" in out and "log" in out
        assert main(["status", "--state-dir", str(tmp_path / "state"), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["cameras"]["door"]["classified"] > 0
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'edge_tsm_camera_online{camera="door"} 1' in text and "edge_tsm_inference_ms_count" in text
        assert "edge_tsm_sink_delivered_total" in (tmp_path / "edge.prom").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    assert json.loads((tmp_path / "state" / "status.json").read_text())["running"] is False
    assert main(["status", "--state-dir", str(tmp_path / "state")]) == 0
    assert "NOT RUNNING" in capsys.readouterr().out


def test_status_errors(tmp_path, capsys):
    assert main(["status", "--state-dir", str(tmp_path)]) == EX_NOINPUT
    assert "not there" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cameras: [{name: a, source: x.avi}]\n")
    # no state_dir and no systemd: the daemon's per-user state folder (the autouse fixture's XDG_STATE_HOME)
    assert main(["status", "--config", str(cfg)]) == EX_NOINPUT
    assert f"{os.environ['XDG_STATE_HOME']}/edge-tsm" in capsys.readouterr().err


@pytest.mark.parametrize("content, where", [
    ("[]", "expected an object, got a list"),
    ('"status"', "expected an object, got a string"),
    ('{"cameras": []}', "cameras: expected an object of names, got a list"),
    ('{"cameras": {"door": 5}}', "cameras.door: expected an object, got a number"),
    ('{"cameras": {"door": {"fps": "fast"}}}', "cameras.door.fps: expected a number, got 'fast'"),
    ('{"cameras": {"door": {"classified": true}}}', "cameras.door.classified: expected a number"),
    ('{"cameras": {"door": {"events": [1]}}}', "cameras.door.events: expected an object of label: count"),
    ('{"cameras": {"door": {"events": {"wave": "x"}}}}', "cameras.door.events"),
    ('{"cameras": {"door": {"inference_ms": {"buckets_ms": "x"}}}}', "cameras.door.inference_ms: expected a histogram"),
    ('{"sinks": {"log": {"delivered": null}}}', "sinks.log.delivered: expected a number, got None"),
    ('{"sinks": {"log": {"state": 3}}}', "sinks.log.state: expected a string"),
    ('{"sinks": "log"}', "sinks: expected an object of names"),
    ('{"clips": {"written": "3"}}', "clips.written: expected a number"),
    ('{"clips": [1]}', "clips: expected an object"),
    ('{"interval_s": "5"}', "interval_s: expected a number"),
    ('{"uptime_s": [1]}', "uptime_s: expected a number"),
    ('{"running": "yes"}', "running: expected true or false"),
    ("{not json", "not JSON"),
    ("[" * 100_000, "not JSON"),
    ('{"cameras": {"x": ' * 50_000, "not JSON"),
], ids=lambda v: v[:30])
def test_a_status_file_of_the_wrong_shape_is_one_line(tmp_path, capsys, content, where):
    """status.json is read as untrusted input: well-formed JSON of the wrong shape, or not JSON, is one line
    naming the file and what is wrong, exit 65 (before: a KeyError/TypeError traceback)."""
    (tmp_path / "status.json").write_text(content)
    for view in ([], ["--json"], ["--prometheus"]):
        assert main(["status", "--state-dir", str(tmp_path), *view]) == EX_DATAERR
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"edge-tsm: error: status {tmp_path}/status.json: "), err
        assert where in err and "Traceback" not in err and len(err) < 400, err


def test_a_status_with_missing_figures_reads_them_as_zero(tmp_path, capsys):
    (tmp_path / "status.json").write_text('{"cameras": {"door": {"state": null}}, "sinks": {"log": {}}, '
                                          '"clips": {"written": 2}, "future_key": [1, 2]}')
    for view in ([], ["--json"], ["--prometheus"]):
        assert main(["status", "--state-dir", str(tmp_path), *view]) == 0
        out = capsys.readouterr().out
        assert "door" in out and "log" in out
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    assert "clips: 2 written, 0 dropped" in capsys.readouterr().out


def _fifo(p):
    os.mkfifo(p)


def _link(p):
    os.symlink(p.parent / "outside.json", p)


def _folder(p):
    p.mkdir()


@pytest.mark.parametrize("make", [_fifo, _link, _folder], ids=["fifo", "symlink", "folder"])
def test_a_status_that_is_not_a_regular_file_is_never_opened(tmp_path, capsys, make):
    (tmp_path / "outside.json").write_text('{"cameras": {}}')
    make(tmp_path / "status.json")
    assert main(["status", "--state-dir", str(tmp_path)]) == EX_DATAERR  # a FIFO: no hang (O_NONBLOCK, fstat)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not the daemon's status file; remove it" in err, err


def test_the_status_writer_replaces_a_symlink_and_never_writes_through_it(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("precious")
    state = tmp_path / "state"
    state.mkdir()
    os.symlink(outside, state / "status.json")
    os.symlink(outside, state / f".status.json.{os.getpid()}.tmp")  # the temporary name, planted too
    w = MetricsWriter(lambda: {"cameras": {}, "sinks": {}}, state_dir=state, textfile=str(tmp_path / "t.prom"))
    w.write_once()
    assert outside.read_text() == "precious" and not (state / "status.json").is_symlink()
    assert json.loads((state / "status.json").read_text())["running"] is True
