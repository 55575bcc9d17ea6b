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

import yaml
from tinymodel import build_tiny_bundle, write_colour_video
from waiting import wait_until

from edge.cli import main
from edge.errors import EX_NOINPUT
from edge.metrics import BUCKETS_MS, Histogram, prometheus_text


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
