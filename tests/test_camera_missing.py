"""A V4L2 camera that is not there, as a user meets it: ``edge-tsm check`` in a real process says so in
our one line, without OpenCV's own ``[ WARN ... ]`` line before it (issue 16, item 10)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from tinymodel import build_tiny_bundle

from edge.errors import EX_UNAVAILABLE


def _absent_video_node() -> str:
    for n in range(63, 200):
        if not os.path.exists(f"/dev/video{n}"):
            return f"/dev/video{n}"
    raise RuntimeError("every /dev/video63..199 exists")


def _check(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    device = _absent_video_node()
    cfg = {"model": str(build_tiny_bundle(tmp_path / "tiny")), "engine": {"type": "onnxruntime"},
           "cameras": [{"name": "door", "source": device, "at_start": "require"}], "sinks": [],
           "state_dir": str(tmp_path / "state")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    run_env = {k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"}
    run_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "edge", *args, "check", "--config", str(path)], capture_output=True,
                          text=True, timeout=120, env=run_env)


def test_a_missing_dev_video_is_our_one_line_only(tmp_path):
    run = _check(tmp_path, "-q")
    assert run.returncode == EX_UNAVAILABLE, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("edge-tsm: error: camera door: /dev/video") and lines[0].endswith(
        "cannot open (no such device)"), lines[0]


def test_opencv_log_stays_when_asked_for(tmp_path):
    """OPENCV_LOG_LEVEL set by the user: OpenCV's own lines are theirs to see (and ours still comes)."""
    run = _check(tmp_path, "-q", env={"OPENCV_LOG_LEVEL": "INFO"})
    assert run.returncode == EX_UNAVAILABLE
    assert "[ WARN" in run.stderr or "[ INFO" in run.stderr, run.stderr
    assert run.stderr.splitlines()[-1].endswith("cannot open (no such device)")
