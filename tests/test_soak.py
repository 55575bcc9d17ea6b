"""The soak benchmark (edge.bench.soak) kept working: a few seconds of a real daemon, not a measurement."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tinymodel import build_tiny_bundle

from edge.bench.soak import slope_per_hour, summarize


def test_slope_is_least_squares_per_hour():
    t = [0.0, 60.0, 120.0, 180.0]
    assert slope_per_hour(t, [10.0, 11.0, 12.0, 13.0]) == pytest.approx(60.0)
    assert slope_per_hour(t, [5.0, 7.0, 5.0, 7.0]) == pytest.approx(0.4 * 60)
    assert slope_per_hour([0.0], [1.0]) is None and slope_per_hour([1.0, 1.0], [1.0, 2.0]) is None


def test_summary_splits_the_warm_up_off():
    samples = [{"t": float(t), "rss_mb": 100.0 + min(t, 60), "fds": 20, "threads": 9} for t in range(0, 181, 10)]
    r = summarize(samples, ready_s=1.0, exit_code=0, warmup_s=60.0)
    assert r["rss_mb"]["start"] == 100.0 and r["rss_mb"]["at_warmup"] == 160.0 and r["rss_mb"]["end"] == 160.0
    assert r["rss_mb"]["slope_per_h"] > 0 and r["rss_mb"]["slope_per_h_after_warmup"] == 0.0
    assert summarize(samples, ready_s=1.0, exit_code=0)["warmup_s"] == 180.0  # the default: the journal ring
    assert r["fds"]["slope_per_h"] == 0.0


@pytest.mark.parametrize("source", ["file", "synthetic"])
def test_a_short_soak_runs_a_real_daemon(tmp_path, source):
    bundle = build_tiny_bundle(tmp_path / "tiny")
    proc = subprocess.run([sys.executable, "-m", "edge.bench.soak", "--seconds", "3", "--interval", "1", "--cameras",
                           "2", "--model", str(bundle), "--source", source, "--size", "160x120", "--json",
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert r["exit_code"] == 0 and len(r["samples"]) >= 4 and r["classified"] > 0, r
    for key in ("rss_mb", "fds", "threads"):
        assert r[key]["start"] > 0 and r[key]["end"] > 0 and r[key]["slope_per_h"] is not None
    assert (tmp_path / "work" / "events.jsonl").exists() and (tmp_path / "work" / "state" / "status.json").exists()
