"""``edge-tsm bench``: it runs end to end on the tiny model, and its figures hold together.

No timed pass/fail here: the bench reports, and how fast anything is depends on the machine. What is
checked is what must hold on any machine: every figure is a number of the right sign, every ratio is
the quotient of the figures it names (within their rounding), the whole pipeline per frame costs at
least the engine step it contains, a stream count that passed was tried, and so on. The pieces with
logic of their own (the streams search, the null sink's latency, the every-frame copy of a bundle)
are checked with fakes: a scripted trial, a fake clock.
"""
from __future__ import annotations

import json
import numbers

import pytest
from tinymodel import add_int8_graph, build_tiny_bundle

from edge.bench import format_table
from edge.bench.kit import DecodeStage, find_streams, rate_copy, write_clip
from edge.bench.nullsink import NullSink
from edge.bundle import load_bundle
from edge.cli import main
from edge.cpu import isa_text, machine
from edge.events import Event

NUMBER_KEYS = ("preprocess_ms", "decode_ms", "pipeline_cpu_ms_per_frame", "overhead_ratio")
PER_ENGINE_KEYS = ("rss_mb", "stream_cpu_pct")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny"))


def _number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v == v and v >= 0


def _quotient(ratio: float, num: float, den: float, digits: int = 3) -> bool:
    """``ratio`` (rounded to ``digits``) is ``num / den`` where both were rounded to ``digits`` too."""
    half = 0.5 * 10 ** -digits
    lo, hi = (num - half) / (den + half), (num + half) / max(den - half, 1e-12)
    return lo - half <= ratio <= hi + half


def test_tiny_bench_json_figures_hold_together(tmp_path_factory, capsys):
    model = add_int8_graph(build_tiny_bundle(tmp_path_factory.mktemp("tiny8")))
    assert main(["-q", "bench", "--json", "--tiny", "--model", str(model)]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in NUMBER_KEYS:
        assert _number(res[key]), (key, res[key])
    engines, precision = res["engines"], res["precision"]
    assert engines and set(res["engine_ms"]) == set(engines)
    assert precision == "int8"  # the default when the bundle has an INT8 graph
    for e in engines:
        ms, cpu = res["engine_ms"][e], res["cpu_ms"]["engine"][e]
        assert set(ms) == set(cpu) == {"fp32", "int8"} and all(_number(v) and v > 0 for v in ms.values())
        # the ratio is the quotient of the two medians the report shows
        assert _quotient(res["int8_over_fp32"][e], ms["int8"], ms["fp32"]), (e, res["int8_over_fp32"][e], ms)
    # the whole pipeline per frame holds the engine step (and more: decode, preprocess, events, a sink)
    assert res["pipeline_wall_ms_per_frame"] >= res["engine_ms"][engines[0]][precision]
    assert res["pipeline_cpu_ms_per_frame"] > 0
    stages = res["cpu_ms"]["decode"] + res["cpu_ms"]["preprocess"] + res["cpu_ms"]["engine"][engines[0]][precision]
    assert res["overhead_ratio"] > 0 and _quotient(res["overhead_ratio"], res["pipeline_cpu_ms_per_frame"], stages,
                                                   digits=2)
    # 4 cameras' frames per call of the batched graph, timed per frame, on every engine (CPU)
    assert res["batch"] == 4 and set(res["engine_batched_ms"]) == set(engines)
    for e, by in res["engine_batched_ms"].items():
        assert set(by) == {"fp32", "int8"} and all(_number(v) and v > 0 for v in by.values())
        assert _quotient(res["int8_over_fp32_batched"][e], by["int8"], by["fp32"])
    # streams: the count that passed was tried and passed; every count above it failed (twice)
    trials = res["streams_detail"]["trials"]
    assert trials and all(isinstance(t["ok"], bool) for t in trials)
    best = res["streams"]
    assert isinstance(best, int) and 0 <= best <= res["streams_detail"]["max_tried"] == 2
    assert best == 0 or any(t["streams"] == best and t["ok"] for t in trials)
    assert all(not t["ok"] for t in trials if t["streams"] > best)
    assert all(t["process_cpu_pct"] > 0 and 0 <= t["classified_min"] <= 1 for t in trials)
    lat = res["event_latency_ms"]
    assert {"p50", "p99", "n"} <= set(lat) and isinstance(lat["n"], int)
    if lat["n"]:
        assert 0 <= lat["p50"] <= lat["p99"]
    else:
        assert lat["p50"] is None and lat["p99"] is None
    for key in PER_ENGINE_KEYS:  # --tiny runs the daemon with the first engine only
        assert set(res[key]) == {engines[0]} and res[key][engines[0]] > 0, (key, res[key])
    ready = res["ready_s"][engines[0]]
    assert ready["first"] > 0 and ready["second"] > 0
    assert res["torch_eager_ms"] is None and res["daemon_over_torch"] is None  # no PyTorch form of the tiny arch
    assert res["clip"]["size"] == [640, 480] and res["clip"]["frames"] > 0 and res["clip"]["kb_per_frame"] > 0
    assert res["decode_scale"] == 8 and _number(res["decode_full_ms"])  # a 16x16 input: 80x60 is plenty
    table = format_table(res)
    assert "whole pipeline" in table and "overhead_ratio" in table and "int8/fp32" in table
    # the torch row is there, saying why it has no figures (--tiny leaves it out), not silently dropped
    assert res["torch"]["note"].startswith("skipped: --tiny")
    torch_row = [ln for ln in table.splitlines() if ln.startswith("PyTorch eager")]
    assert len(torch_row) == 1 and "skipped: --tiny leaves it out" in torch_row[0]
    assert res["machine"]["isa"] == machine()["isa"] and isa_text(machine()) in table.splitlines()[0]
    # a torch that is not installed says so in the same row
    res["torch"] = {"note": "torch is not installed (torch): pip install 'edge-tsm[train]'"}
    assert "skipped: torch is not installed" in format_table(res)


def test_the_decode_stage_is_the_daemons_file_source(tmp_path):
    """The bench decodes with the same FileSource the daemon's file camera runs, scaled by its need."""
    clip = tmp_path / "clip.avi"
    write_clip(clip, (640, 480), 30.0, 0.5)
    dec = DecodeStage(clip, "auto", need=(100, 100, 100))
    try:
        frames = dec.frames(3)
        assert dec.scale == 4 and frames[0].shape == (120, 160, 3)  # 1/4: the largest scale covering 100
        total = dec.source.frame_count
        dec.run(total - 4)  # to the end of the file (the first frame went to open's check)
        dec.before(2)       # reopened off the clock: enough frames again
        dec.run(2)
    finally:
        dec.close()
    full = DecodeStage(clip, 1)
    try:
        assert full.frames(1)[0].shape == (480, 640, 3) and full.scale == 1
    finally:
        full.close()


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
    ev = Event("start", "c-1", "c", "wave", 0.9, 1_800_000_000.25, 1_800_000_000.0, 2)
    sink.expect(ev, 1)  # the pipeline's event callback: the float capture time, no ISO string parsed back
    sink.submit(ev.record(1))
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
