"""``edge-tsm eval-events``: the matching rules on hand-made events, then the whole path on a real
colour video through the tiny model (both engines' runtime path is the one ``classify`` uses)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from tinymodel import build_tiny_bundle, write_colour_video

from edge.cli import main
from edge.evalevents import (
    _prf,
    format_report,
    match_events,
    miss_summary,
    pair_events,
    pool_results,
    replay,
    why_missed,
)
from edge.events import Event, EventSettings, Thresholds

LABELS = ["no_motion", "wave", "clap"]


def ev(label: str, start: float, fired: float | None = None, end: float | None = None) -> dict:
    fired = start + 0.3 if fired is None else fired
    return {"label": label, "start": start, "fired": fired, "end": fired + 1 if end is None else end, "score": 0.9}


def seg(label: str, start: float, end: float, line: int = 1) -> dict:
    return {"label": label, "start": start, "end": end, "line": line}


def test_every_motion_found_once_is_precision_and_recall_one_with_its_latency():
    r = match_events([ev("wave", 1.1, 1.5), ev("clap", 4.0, 4.6)],
                     [seg("no_motion", 0, 1), seg("wave", 1, 2), seg("no_motion", 2, 4), seg("clap", 4, 5)],
                     LABELS, ("no_motion",), 0.5)
    assert (r["tp"], r["fp"], r["fn"], r["precision"], r["recall"], r["f1"]) == (2, 0, 0, 1.0, 1.0, 1.0)
    assert r["segments"] == 2 and r["latency_s"] == {"p50": 0.55, "p90": 0.6, "max": 0.6, "n": 2}
    assert set(r["per_class"]) == {"wave", "clap"}  # background labels are not targets


def test_a_second_event_for_one_motion_and_a_wrong_label_are_false_and_misses_are_counted():
    r = match_events([ev("wave", 1.0), ev("wave", 1.6), ev("clap", 3.1)],
                     [seg("wave", 1, 2, 2), seg("wave", 3, 4, 3), seg("no_motion", 4, 6, 4)],
                     LABELS, ("no_motion",), 0.5)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 2, 1)
    assert r["false_events"] == [{"label": "wave", "fired_s": 1.9, "score": 0.9, "truth": "wave",
                                  "why": "segment already matched"},
                                 {"label": "clap", "fired_s": 3.4, "score": 0.9, "truth": "wave", "why": None}]
    assert r["missed"] == [{"label": "wave", "start_s": 3, "end_s": 4, "line": 3}]
    assert r["per_class"]["wave"] == {"tp": 1, "fp": 1, "fn": 1, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert r["per_class"]["clap"]["precision"] == 0.0 and r["per_class"]["clap"]["recall"] is None


def test_a_false_event_of_the_annotated_label_says_why():
    # one motion, two events: the second is false because its segment is matched; an event that started
    # well before its segment (fired inside it) is false because of the tolerance
    r = match_events([ev("wave", 1.0), ev("wave", 1.6), ev("clap", 2.0, fired=3.2)],
                     [seg("wave", 1, 2), seg("no_motion", 2, 3), seg("clap", 3, 4)], LABELS, ("no_motion",), 0.5)
    assert [(f["label"], f["why"]) for f in r["false_events"]] == [
        ("wave", "segment already matched"), ("clap", "started 1.00 s before the segment")]
    from edge.evalevents import format_report
    text = format_report({"video": "r.avi", "duration_s": 4.0, "model": "m", "precision_graph": "fp32",
                          "engine": "onnxruntime", "tolerance_s": 0.5, **r})
    assert "wave at 1.90 s (wave, segment already matched), clap at 3.20 s (clap, started 1.00 s before the " \
           "segment)" in text


@pytest.mark.parametrize("start, tolerance, matched", [(0.6, 0.5, True), (0.4, 0.5, False), (2.4, 0.5, True),
                                                       (2.6, 0.5, False), (0.9, 0.0, False)])
def test_tolerance_around_the_annotated_span(start, tolerance, matched):
    r = match_events([ev("wave", start)], [seg("wave", 1, 2)], LABELS, ("no_motion",), tolerance)
    assert r["tp"] == int(matched)


def test_events_pair_by_id_and_an_unended_one_keeps_its_start():
    lines = [Event("start", "a", "cam", "wave", 0.8, 1.5, 1.2, 2), Event("start", "b", "cam", "clap", 0.7, 4.0, 3.9, 2),
             Event("end", "a", "cam", "wave", 0.9, 2.5, 1.2, 12)]
    got = pair_events(lines)
    assert [(e["id"], e["start"], e["fired"], e["end"]) for e in got] == [("a", 1.2, 1.5, 2.5), ("b", 3.9, 4.0, 4.0)]


def test_recordings_pool_their_matches_per_label_and_their_latencies():
    a = {**match_events([ev("wave", 1.1, 1.5), ev("clap", 3.0, 3.1)], [seg("wave", 1, 2), seg("clap", 4, 5)],
                        LABELS, ("no_motion",), 0.5), "duration_s": 6.0}
    b = {**match_events([ev("wave", 1.0, 1.9)], [seg("wave", 1, 2), seg("wave", 3, 4)], LABELS, ("no_motion",), 0.5),
         "duration_s": 4.0}
    t = pool_results([a, b])
    assert (t["recordings"], t["segments"], t["events"], t["tp"], t["fp"], t["fn"]) == (2, 4, 3, 2, 1, 2)
    assert (t["precision"], t["recall"], t["duration_s"]) == (0.6667, 0.5, 10.0)
    assert t["per_class"]["wave"] == {"tp": 2, "fp": 0, "fn": 1, "precision": 1.0, "recall": 0.6667, "f1": 0.8}
    assert (t["per_class"]["clap"]["fp"], t["per_class"]["clap"]["fn"]) == (1, 1)
    assert t["latency_s"] == {"p50": 0.7, "p90": 0.9, "max": 0.9, "n": 2}


def test_the_text_rounds_the_counts_once():
    """257 of 275 is 0.93455: 0.9345 in the JSON, and 0.935 in the text (not 0.9345 rounded again to 0.934)."""
    r = {"video": "r.avi", "duration_s": 975.4, "segments": 320, "events": 275, "model": "m", "precision_graph": "int8",
         "engine": "onnxruntime", "tolerance_s": 0.5, **_prf(257, 18, 63), "per_class": {"wave": _prf(257, 18, 63)},
         "latency_s": {"n": 0}, "false_events": [], "missed": []}
    assert r["precision"] == 0.9345
    text = format_report(r)
    assert "precision 0.935  recall 0.803  F1 0.864  (matched 257, false 18, missed 63)" in text
    assert "wave              0.935  0.803  0.864  257   18   63" in text


SETTINGS = EventSettings(window=1, defaults=Thresholds(enter=0.6, exit=0.4, min_frames=2, cooldown_s=0.5),
                         ignore=("no_motion",))


def frames(*rows, active=None):
    """Scored frames at 0.2 s steps from 1.0 s: (no_motion, wave, clap) scores, the event on after each."""
    active = active or [None] * len(rows)
    return [(1.0 + 0.2 * i, np.array(r, np.float32), a) for i, (r, a) in enumerate(zip(rows, active, strict=True))]


@pytest.mark.parametrize("rows, active, why, said", [
    ([(0.7, 0.3, 0.0), (0.6, 0.35, 0.05)], None, "under_enter", "its score peaked at 0.350, under enter 0.6; "
                                                                "the model said no_motion most"),
    # (scores sum to 1: only a label whose enter is under 0.5 can reach it and still be outscored)
    ([(0.0, 0.45, 0.55), (0.0, 0.3, 0.7), (0.0, 0.35, 0.65)], None, "outscored", "but clap scored higher"),
    ([(0.0, 0.8, 0.2), (0.7, 0.3, 0.0), (0.0, 0.7, 0.3)], None, "too_brief", "for 1 frame(s) in a row, under "
                                                                            "min_frames 2"),
    ([(0.0, 0.8, 0.2)] * 3, ["clap"] * 3, "other_event", "a clap event was still on"),
    ([(0.0, 0.8, 0.2)] * 3, [None, "wave", "wave"], "counted_elsewhere", "a wave event was on"),
    ([(0.0, 0.8, 0.2)] * 3, None, "cooldown", "within the 0.5 s cool-down after a wave event"),
])
def test_each_miss_says_why_from_the_scores_the_detector_saw(rows, active, why, said):
    st = SETTINGS if why != "outscored" else EventSettings(window=1, defaults=SETTINGS.defaults, ignore=("no_motion",),
                                                           classes={"wave": Thresholds(enter=0.4, exit=0.3)})
    r = why_missed(seg("wave", 1.0, 1.6), frames(*rows, active=active), LABELS, st, 0.0)
    assert r["why"] == why and said in r["why_text"], r
    assert r["peak"] == pytest.approx(max(x[1] for x in rows), abs=1e-4)


def test_a_miss_with_no_frame_scored_and_the_summary_of_reasons():
    assert why_missed(seg("wave", 5.0, 6.0), frames((0.0, 0.9, 0.1)), LABELS, SETTINGS, 0.5)["why"] == "unscored"
    missed = [{"why": "under_enter", "mostly": "no_motion"}, {"why": "too_brief", "mostly": "wave"},
              {"why": "under_enter", "mostly": "no_motion"}, {"why": "under_enter", "mostly": "clap"}]
    assert miss_summary(missed) == {"why": {"under_enter": 3, "too_brief": 1},
                                    "under_enter_said": {"no_motion": 2, "clap": 1}}


def test_replay_smooths_like_the_detector_and_skips_its_warmup():
    st = EventSettings(window=2, defaults=Thresholds(enter=0.6, exit=0.4, min_frames=1, cooldown_s=0.0),
                       ignore=("no_motion",), warmup=1)
    probs = [(0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 1.0, 0.0)]
    out = replay([(0.2 * i, np.array(p)) for i, p in enumerate(probs)], LABELS, st)[0]
    assert [round(t, 1) for t, _, _ in out] == [0.2, 0.4, 0.6]       # the first frame is the warm-up
    assert [float(s[1]) for _, s, _ in out] == [0.0, 0.5, 1.0]      # a mean over two frames after it
    assert [a for _, _, a in out] == [None, None, "wave"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    bundle = build_tiny_bundle(d / "tiny")
    video = write_colour_video(d / "colours.avi")  # red, green, blue: 20 frames each at 15 fps
    return bundle, video, d


def _csv(path, rows: str):
    path.write_text("start,end,label\n" + rows)
    return path


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_the_tiny_model_finds_each_colour_on_the_recording(recording, capsys, engine):
    pytest.importorskip(engine)
    bundle, video, d = recording
    ann = _csv(d / "truth.csv", "0,1.333,red\n1.333,2.667,green\n2.667,4.0,blue\n")
    assert main(["-q", "eval-events", str(video), "--annotations", str(ann), "--model", str(bundle),
                 "--engine", engine, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["segments"], r["tp"], r["fp"], r["fn"], r["f1"]) == (3, 3, 0, 0, 1.0)
    assert 0 <= r["latency_s"]["max"] < 1.0 and r["duration_s"] == 4.0
    # the annotator swapped green and blue: the two events are false, the two segments missed
    swapped = _csv(d / "swapped.csv", "0,1.333,red\n1.333,2.667,blue\n2.667,4.0,green\n")
    assert main(["-q", "eval-events", str(video), "--annotations", str(swapped), "--model", str(bundle),
                 "--engine", engine, "--tolerance", "0"]) == 0
    text = capsys.readouterr().out
    assert "precision 0.333  recall 0.333" in text and "(matched 1, false 2, missed 2)" in text
    assert "false events: green at" in text and "missed:\n  blue 1.33-2.67 s (line 3): its score" in text
    assert ("why missed: 1 its score stayed under enter (the model said green 1); 1 on top for fewer than "
            "min_frames frames") in text


def test_the_config_sets_the_events_and_the_model(recording, capsys):
    bundle, video, d = recording
    ann = _csv(d / "truth2.csv", "0,1.333,red\n1.333,2.667,green\n2.667,4.0,blue\n")
    cfg = d / "daemon.yaml"
    cfg.write_text(f"model: {bundle}\ncameras: [{{name: c, source: {video}}}]\nsinks: [{{type: stdout}}]\n"
                   "events: {ignore: [red]}\n")
    assert main(["-q", "eval-events", str(video), "--annotations", str(ann), "--config", str(cfg), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["ignored_labels"] == ["red"] and r["segments"] == 2 and r["tp"] == 2 and "red" not in r["per_class"]


@pytest.mark.parametrize("rows, message", [
    ("0,1,purple\n", r"truth-bad.csv:2: label 'purple' is not one of the model's labels \(red, green, blue\)"),
    ("0,x,red\n", r"truth-bad.csv:2: start/end '0', 'x': not times"),
    ("9,10,red\n", r"truth-bad.csv:2: start 9 is past the end of colours.avi \(4.00 s\)"),
    ("1,1,red\n", r"truth-bad.csv:2: end 1 is not after start 1"),
])
def test_bad_annotations_are_one_line_naming_the_row(recording, capsys, rows, message):
    bundle, video, d = recording
    ann = _csv(d / "truth-bad.csv", rows)
    assert main(["-q", "eval-events", str(video), "--annotations", str(ann), "--model", str(bundle)]) == 65
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err


def test_several_recordings_each_then_pooled_with_their_annotations_beside_them(recording, capsys, monkeypatch):
    """``eval-events A.avi B.avi``: each recording's figures and all of them pooled; the annotations are each
    video's name with .csv, all read and checked before the first video runs."""
    import shutil
    bundle, video, d = recording
    one, two = d / "one.avi", d / "two.avi"
    shutil.copy(video, one)
    shutil.copy(video, two)
    _csv(d / "one.csv", "0,1.333,red\n1.333,2.667,green\n2.667,4.0,blue\n")
    _csv(d / "two.csv", "0,1.333,red\n1.333,2.667,blue\n2.667,4.0,green\n")   # green and blue swapped
    assert main(["-q", "eval-events", str(one), str(two), "--model", str(bundle), "--tolerance", "0", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [(x["video"], x["tp"], x["fp"], x["fn"]) for x in r["recordings"]] == [(str(one), 3, 0, 0),
                                                                                 (str(two), 1, 2, 2)]
    t = r["total"]
    assert (t["recordings"], t["segments"], t["tp"], t["fp"], t["fn"], t["duration_s"]) == (2, 6, 4, 2, 2, 8.0)
    assert t["per_class"]["red"]["tp"] == 2 and t["latency_s"]["n"] == 4
    assert main(["-q", "eval-events", str(one), str(two), "--model", str(bundle), "--tolerance", "0"]) == 0
    text = capsys.readouterr().out
    assert "one.avi: 4.0 s" in text and "two.avi: 4.0 s" in text
    assert "all 2 recordings: 8.0 s, 6 annotated motions" in text and "(matched 4, false 2, missed 2)" in text
    # one bad row in the last file: one line naming it, and no recording was run for nothing
    import edge.evalevents as ee
    ran = []
    monkeypatch.setattr(ee, "classify_video", lambda *a, **k: ran.append(a))
    _csv(d / "two.csv", "0,1,purple\n")
    assert main(["-q", "eval-events", str(one), str(two), "--model", str(bundle)]) == 65
    assert "two.csv:2: label 'purple'" in capsys.readouterr().err and not ran
    # no annotations beside a recording, or --annotations for several: usage, exit 64
    (d / "two.csv").unlink()
    assert main(["-q", "eval-events", str(one), str(two), "--model", str(bundle)]) == 64
    assert f"eval-events {two}: no annotations: {d / 'two.csv'} does not exist" in capsys.readouterr().err
    assert main(["-q", "eval-events", str(one), str(one), "--annotations", str(d / "one.csv"),
                 "--model", str(bundle)]) == 64
    assert "--annotations is for one recording" in capsys.readouterr().err and not ran
