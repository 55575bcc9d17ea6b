"""A graph planted in the daemon's cache folder, against a real ``python -m edge run``.

Issue 15 found a batched graph planted by another user in $TMPDIR (logits +100 on one class) made every
camera emit that class. The cache now lives in a folder of the service's own and each derived graph is
checked against the SHA-256 recorded beside it: a planted one is rebuilt (warning) and never run.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from test_faults import FAST_EVENTS, Daemon, assets, log_lines, report

__all__ = ["assets"]  # the module-scoped fixture, shared with test_faults


def _events(log: Path) -> Counter:
    return Counter((e["camera"], e["label"], e["event"]) for e in map(json.loads, log_lines(log)))


def _run_to_the_end(tmp: Path, cfg: dict) -> tuple[Counter, str]:
    d = Daemon(tmp, cfg)
    d.start()
    try:
        code = d.proc.wait(timeout=120)  # two file cameras without loop: the daemon stops when both end
    finally:
        d.kill()
    d.err.join()
    assert code == 0, d.stderr[-2000:]
    return _events(Path(cfg["sinks"][0]["path"])), d.stderr


def test_a_graph_planted_in_the_cache_is_not_run(assets, tmp_path):
    bundle, video = assets
    cache = tmp_path / "cache"

    def cfg(name: str) -> dict:
        (tmp_path / name).mkdir()
        return {"model": str(bundle), "engine": {"cache_dir": str(cache)}, "state_dir": str(tmp_path / name / "state"),
                "status_interval_s": 0, "events": FAST_EVENTS,
                "cameras": [{"name": "a", "source": str(video)}, {"name": "b", "source": str(video)}],
                "sinks": [{"type": "log", "path": str(tmp_path / name / "events.jsonl")}]}

    clean, err = _run_to_the_end(tmp_path / "clean", cfg("clean"))
    assert "batching: up to 2 cameras" in err and len({label for _, label, _ in clean}) >= 2, (clean, err[-1500:])
    graphs = list(cache.glob("batched-*.onnx"))
    assert len(graphs) == 1
    model = onnx.load(str(graphs[0]))  # the attack: +100 on the logits of 'blue' (bias B), hash file kept
    bias = next(t for t in model.graph.initializer if t.name == "B")
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32([0, 0, 100]), "B"))
    graphs[0].write_bytes(model.SerializeToString())

    planted, err = _run_to_the_end(tmp_path / "planted", cfg("planted"))
    assert f"batched graph {graphs[0]}: its content does not match the hash recorded beside it; rebuilding" in err
    report("graph planted in the batched-graph cache", 1, sum(clean.values()), {"log": sum(planted.values())},
           0, sum((clean - planted).values()), 0.0)
    assert planted == clean  # the same events as with the genuine graph: not all 'blue'
