"""``edge-tsm bench``: it runs end to end on the tiny model and reports every figure with a sane type.

No timed pass/fail here: the bench reports; these tests only check that it runs and what it returns.
The pieces with logic of their own (the streams search, the null sink's latency, the every-frame
copy of a bundle) are checked with fakes: a scripted trial, a fake clock.
"""
from __future__ import annotations

import json
import numbers

import pytest
from tinymodel import build_tiny_bundle

from edge.bench import format_table
from edge.benchkit import find_streams, rate_copy
from edge.bundle import load_bundle
from edge.cli import main
from edge.events import iso_ts
from edge.sinks.null import NullSink

NUMBER_KEYS = ("preprocess_ms", "decode_ms", "pipeline_cpu_ms_per_frame", "overhead_ratio")
PER_ENGINE_KEYS = ("rss_mb", "stream_cpu_pct")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny"))


def _number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v == v and v >= 0


def test_tiny_bench_json_has_every_figure(bundle, capsys):
    assert main(["-q", "bench", "--json", "--tiny", "--model", str(bundle)]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in NUMBER_KEYS:
        assert _number(res[key]), (key, res[key])
    engines = res["engines"]
    assert engines and set(res["engine_ms"]) == set(engines)
    for by_precision in res["engine_ms"].values():
        assert set(by_precision) == {"fp32"}  # the tiny bundle has no INT8 graph
        assert all(_number(v) for v in by_precision.values())
    assert set(res["int8_over_fp32"]) == set(engines) and all(v is None for v in res["int8_over_fp32"].values())
    # 4 cameras' frames per call of the batched graph, timed per frame, on every engine (CPU)
    assert res["batch"] == 4 and set(res["engine_batched_ms"]) == set(engines)
    assert all(set(by) == {"fp32"} and _number(by["fp32"]) for by in res["engine_batched_ms"].values())
    assert all(v is None for v in res["int8_over_fp32_batched"].values())
    assert isinstance(res["streams"], int) and 0 <= res["streams"] <= 2
    lat = res["event_latency_ms"]
    assert {"p50", "p99", "n"} <= set(lat) and isinstance(lat["n"], int)
    assert all(lat[k] is None if lat["n"] == 0 else _number(lat[k]) for k in ("p50", "p99"))
    assert res["streams_detail"]["trials"] and all(isinstance(t["ok"], bool) for t in res["streams_detail"]["trials"])
    for key in PER_ENGINE_KEYS:  # --tiny runs the daemon with the first engine only
        assert set(res[key]) == {engines[0]} and _number(res[key][engines[0]]), (key, res[key])
    ready = res["ready_s"][engines[0]]
    assert _number(ready["first"]) and _number(ready["second"])
    assert res["torch_eager_ms"] is None and res["daemon_over_torch"] is None  # no PyTorch form of the tiny arch
    assert res["clip"]["size"] == [640, 480]
    assert res["decode_scale"] == 8 and _number(res["decode_full_ms"])  # a 16x16 input: 80x60 is plenty
    table = format_table(res)
    assert "whole pipeline" in table and "overhead_ratio" in table


def test_bench_max_batch_reaches_the_streams_runs(bundle, capsys):
    assert main(["-q", "bench", "--json", "--tiny", "--no-daemon", "--batch", "0", "--max-batch", "1",
                 "--decode-scale", "1",
                 "--model", str(bundle), "--engines", "onnxruntime"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["streams_detail"]["max_batch"] == 1 and res["max_batch"] == 1
    assert res["engine_batched_ms"] == {} and res["rss_mb"] == {}
    assert res["decode_scale"] == 1 and res["decode_full_ms"] == res["decode_ms"]


@pytest.mark.parametrize("args, named", [(["--batch", "3"], "--steps 4"), (["--max-batch", "0"], "--max-batch 0")])
def test_bench_refuses_a_batch_it_cannot_run(bundle, capsys, args, named):
    assert main(["-q", "bench", "--tiny", "--model", str(bundle), *args]) == 64
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1


def test_bench_refuses_an_unknown_engine(bundle, capsys):
    assert main(["-q", "bench", "--tiny", "--model", str(bundle), "--engines", "tensorflow"]) == 64
    assert "tensorflow" in capsys.readouterr().err


def test_streams_search_doubles_then_bisects_retrying_a_failed_count_once():
    tried = []

    def trial(n: int) -> dict:
        tried.append(n)
        return {"streams": n, "ok": n <= 5, "classified_min": 1.0 if n <= 5 else 0.9}
    best, trials = find_streams(trial, 32)
    assert best == 5
    assert tried == [1, 2, 4, 8, 8, 6, 6, 5]
    assert [t["streams"] for t in trials] == tried


def test_streams_search_a_count_passes_when_its_retry_passes():
    results = {3: [False, True]}  # a neighbour stole time from the first trial at 3

    def trial(n: int) -> dict:
        ok = results[n].pop(0) if n in results else n <= 3
        return {"streams": n, "ok": ok, "classified_min": 1.0 if ok else 0.95}
    best, trials = find_streams(trial, 32)
    assert best == 3
    assert [t["streams"] for t in trials] == [1, 2, 4, 4, 3, 3]


@pytest.mark.parametrize("capacity, cap, expected", [(0, 8, 0), (100, 6, 6), (1, 1, 1)])
def test_streams_search_edges(capacity, cap, expected):
    best, trials = find_streams(lambda n: {"streams": n, "ok": n <= capacity, "classified_min": 1.0}, cap)
    assert best == expected
    assert max(t["streams"] for t in trials) <= cap


def test_null_sink_records_capture_to_delivery_latency():
    now = [1_800_000_000.5]
    sink = NullSink(clock=lambda: now[0])
    sink.open()
    sink.submit({"event": "start", "camera": "c", "ts": iso_ts(1_800_000_000.25), "seq": 1})
    assert sink.wait_for(lambda st: st["delivered"] == 1, 5)
    assert sink.latencies_ms(clear=True) == [pytest.approx(250.0, abs=1.0)]
    assert sink.latencies_ms() == []
    assert sink.close() == 0


def test_rate_copy_sends_every_camera_frame_to_the_model(bundle, tmp_path):
    original = load_bundle(bundle)
    copy = load_bundle(rate_copy(original, tmp_path / "every", 30.0))
    assert copy.temporal.fps == 30.0 and copy.temporal.frame_stride == 1
    assert copy.labels == original.labels and copy.states == original.states
    assert (copy.root / copy.files["fp32"]).resolve() == (original.root / original.files["fp32"]).resolve()
