"""The daemon's last status tells the truth (issue 16, items 4 and 5): a real ``python -m edge run``
subprocess on a file camera that ends, or stopped by SIGTERM; its final status.json counts every event
the journal and the log sink got, and a stopped daemon is not up, nor are its cameras online, in
``edge-tsm status --prometheus`` and in its own textfile."""
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


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_colour_video(tmp_path_factory.mktemp("video") / "colours.avi")


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _start(tmp_path: Path, bundle: Path, camera: dict) -> subprocess.Popen:
    cfg = {"model": str(bundle), "state_dir": str(tmp_path / "state"), "cameras": [camera],
           "sinks": [{"type": "log", "path": str(tmp_path / "e.jsonl")}],
           "metrics": {"interval_s": 0.5, "textfile": str(tmp_path / "edge.prom")}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(tmp_path / "c.yaml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _assert_final_truth(tmp_path: Path, capsys) -> None:
    logged = _lines(tmp_path / "e.jsonl")
    assert logged, "no event was delivered"
    snap = json.loads((tmp_path / "state" / "status.json").read_text())
    assert snap["running"] is False
    assert snap["journal_last_seq"] == logged[-1]["seq"] == max(e["seq"] for e in logged)
    assert snap["sinks"]["log"]["delivered"] == len(logged) and snap["sinks"]["log"]["pending"] == 0
    starts = sum(e["event"] == "start" for e in logged)
    assert sum(snap["cameras"]["door"]["events"].values()) == starts
    for text in ((tmp_path / "edge.prom").read_text(), _prometheus(tmp_path, capsys)):
        assert "edge_tsm_up{} 0" in text and "edge_tsm_up{} 1" not in text
        assert 'edge_tsm_camera_online{camera="door"} 1' not in text
        assert f'edge_tsm_sink_delivered_total{{sink="log"}} {len(logged)}' in text


def _prometheus(tmp_path: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["status", "--state-dir", str(tmp_path / "state"), "--prometheus"]) == 0
    return capsys.readouterr().out


def test_final_status_after_every_camera_ended_counts_the_last_event(tmp_path, bundle, video, capsys):
    proc = _start(tmp_path, bundle, {"name": "door", "source": str(video)})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped (every camera ended)" in err
    _assert_final_truth(tmp_path, capsys)


def test_final_status_after_sigterm_counts_the_ended_open_event(tmp_path, bundle, video, capsys):
    proc = _start(tmp_path, bundle, {"name": "door", "source": str(video), "loop": True, "realtime": True})
    try:
        wait_until(lambda: len(_lines(tmp_path / "e.jsonl")) >= 3, timeout=30, what="3 events logged", proc=proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert _lines(tmp_path / "e.jsonl")[-1]["event"] == "end"  # the open event was ended at the stop
    _assert_final_truth(tmp_path, capsys)
