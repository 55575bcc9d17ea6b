"""The studio's HTTP API in-process (Starlette's TestClient) over real folders: a dataset of real videos, a
spool of clips with sidecars, a recording, the tiny ONNX model run through the one frame loop.

Library and paging, frames, scores and events, labelling in the command line's formats with 409 on a stale
write, export, jobs and the live pipeline. The door (token, origin, host, body size, paths) is
tests/test_studio_api_security.py.
"""
from __future__ import annotations

import calendar
import csv
import json
import logging
import os
import time

import cv2
import numpy as np
import pytest
from tinymodel import build_tiny_bundle, write_colour_video
from waiting import wait_until

pytest.importorskip("starlette", reason="the studio extra is not installed (pip install -e '.[studio]')")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (pip install -e '.[dev]')")

from starlette.testclient import TestClient  # noqa: E402

from edge.studio.app import create_app  # noqa: E402
from edge.studio.settings import StudioSettings  # noqa: E402

PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"


def spool_clip(spool, camera: str, stem: str, probs: list[list[float]], predicted: str, colour: str = "red",
               start_ts: str = "2026-11-24T14:03:05.000Z", video: bool = True) -> None:
    """A field clip as the daemon's spool writes it: the video, then its sidecar."""
    d = spool / camera
    d.mkdir(parents=True, exist_ok=True)
    if video:
        write_colour_video(d / f"{stem}.avi", script=((colour, 4),))
    side = {"v": 1, "clip": f"{camera}/{stem}.avi", "camera": camera, "trigger": "uncertain", "start_ts": start_ts,
            "duration_s": 0.2, "fps": 15.0, "frames": 4, "labels": ["red", "green", "blue"],
            "predicted": predicted, "predicted_score": round(max(np.mean(probs, axis=0)), 4),
            "scores": {"t": [i / 15 for i in range(len(probs))], "probs": probs}}
    (d / f"{stem}.json").write_text(json.dumps(side), encoding="utf-8")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("studio")
    bundle = build_tiny_bundle(tmp / "tiny")
    data = tmp / "data"
    for label, n in (("red", 3), ("green", 3), ("blue", 1)):
        for i in range(n):
            (data / label).mkdir(parents=True, exist_ok=True)
            write_colour_video(data / label / f"{label}_{i}.avi", script=((label, 6),))
    spool = tmp / "spool"
    spool_clip(spool, "door", "a-sure", [[0.9, 0.05, 0.05]] * 4, "red", start_ts="2026-11-24T14:00:00.000Z")
    spool_clip(spool, "door", "b-unsure", [[0.4, 0.35, 0.25]] * 4, "red", "green", "2026-11-24T14:01:00.000Z")
    spool_clip(spool, "hall", "c-middle", [[0.2, 0.6, 0.2]] * 4, "green", "green", "2026-11-24T14:02:00.000Z")
    recs = tmp / "recordings"
    recs.mkdir()
    write_colour_video(recs / "colours.avi")   # red, green, blue: 20 frames each at 15 fps
    (recs / "broken.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST not really a video" * 50)
    config = tmp / "config.yaml"
    config.write_text(f"# the door camera\nmodel: {bundle}\ncameras:\n"
                      f"  - {{name: door, source: {recs / 'colours.avi'}}}\n"
                      f"  - {{name: usb, source: {recs / 'broken.avi'}, type: v4l2}}\n"
                      "events:\n  enter: 0.6   # a comment inside\n  exit: 0.4\n\nsinks: []  # none\n",
                      encoding="utf-8")
    return {"tmp": tmp, "bundle": bundle, "data": data, "spool": spool, "recs": recs, "work": tmp / "work",
            "config": config}


def make_client(f, **kw):
    f["work"].mkdir(exist_ok=True)
    s = StudioSettings({"data": f["data"], "spool": f["spool"], "recordings": f["recs"], "work": f["work"]},
                       model=str(f["bundle"]), cache_dir=f["tmp"] / "cache", port=PORT, **kw)
    client = TestClient(create_app(s), base_url=BASE)
    client.headers.update({"X-Studio-Token": s.token, "Origin": BASE})
    return client


@pytest.fixture(scope="module")
def client(folders):
    with make_client(folders, config=folders["config"]) as c:
        yield c


def ok(resp, status=200):
    assert resp.status_code == status, resp.text
    return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp


# --- library ---------------------------------------------------------------------------------------------
def test_library_classes_counts_warnings_spool_and_recordings(client):
    lib = ok(client.get("/api/library"))
    assert lib["dataset"]["classes"] == [{"name": "blue", "clips": 1}, {"name": "green", "clips": 3},
                                         {"name": "red", "clips": 3}]
    assert any("blue has 1 clip" in w for w in lib["dataset"]["warnings"])
    assert lib["spool"] == {"clips": 3, "labelled": 0, "error": None}
    assert [r["path"] for r in lib["recordings"]] == ["recordings/broken.avi", "recordings/colours.avi"]
    assert lib["model"]["labels"] == ["red", "green", "blue"] and lib["classes"][:3] == ["blue", "green", "red"]
    clips = ok(client.get("/api/dataset/clips", params={"label": "red", "limit": 2}))
    assert clips["total"] == 3 and [c["path"] for c in clips["items"]] == ["data/red/red_0.avi", "data/red/red_1.avi"]


def test_spool_is_a_review_queue_most_uncertain_first_with_paging(client):
    q = ok(client.get("/api/spool"))
    assert [c["clip"] for c in q["items"]] == ["door/b-unsure.avi", "hall/c-middle.avi", "door/a-sure.avi"]
    assert q["items"][0]["margin"] == pytest.approx(0.05) and q["items"][0]["second"] == "green"
    page = ok(client.get("/api/spool", params={"order": "newest", "offset": 1, "limit": 1}))
    assert page["total"] == 3 and [c["clip"] for c in page["items"]] == ["door/b-unsure.avi"]
    assert client.get("/api/spool", params={"order": "random"}).status_code == 400


def test_a_5000_clip_spool_lists_in_under_a_second(tmp_path):
    spool = tmp_path / "spool"
    rng = np.random.default_rng(0)
    for cam in ("a", "b"):
        d = spool / cam
        d.mkdir(parents=True)
        for i in range(2500):
            p = rng.dirichlet([1, 1, 1], size=2).round(3).tolist()
            (d / f"{i:05d}.avi").write_bytes(b"x")
            (d / f"{i:05d}.json").write_text(json.dumps({"camera": cam, "start_ts": f"2026-01-01T00:{i:05d}",
                                                         "labels": ["r", "g", "b"], "predicted": "r",
                                                         "predicted_score": 0.5, "scores": {"probs": p}}))
    work = tmp_path / "work"
    work.mkdir()
    s = StudioSettings({"spool": spool, "work": work}, model="default", cache_dir=tmp_path / "cache", port=PORT)
    # the first listing parses every sidecar (its CPU time is measured: the 2-core test machine is shared),
    # the second only stats them, and so does a restarted server (the index is kept in the work folder)
    for run in range(2):
        with TestClient(create_app(s), base_url=BASE) as c:
            for k in range(2):
                t0, cpu0 = time.perf_counter(), time.process_time()
                q = ok(c.get("/api/spool", params={"limit": 100}))
                took = (time.process_time() - cpu0) if run == k == 0 else time.perf_counter() - t0
                assert q["total"] == 5000 and len(q["items"]) == 100 and took < 1.0, (run, k, took)
        margins = [x["margin"] for x in q["items"]]
        assert margins == sorted(margins) and q["items"][0]["margin"] < 0.05
    # folders written more than a few seconds ago (as a spool mostly is): a listing reads no sidecar and sorts
    # nothing again, so the page's first two calls cost a few ms of CPU each (40-60 ms each before the index
    # kept its listing: one stat per clip and a sort per call)
    old = time.time() - 60
    for d in (spool / "a", spool / "b"):
        os.utime(d, (old, old))
    with TestClient(create_app(s), base_url=BASE) as c:
        ok(c.get("/api/library"))
        for url, params in (("/api/library", {}), ("/api/spool", {"limit": 50})) * 2:
            cpu0 = time.process_time()
            ok(c.get(url, params=params))
            assert time.process_time() - cpu0 < 0.03, url


def test_the_spool_index_sees_what_the_daemon_changes(tmp_path):
    """New, removed and rewritten clips are listed at once (the daemon renames into the folder, so its mtime
    moves); a sidecar edited in place, which does not move it, is seen at the next full check."""
    from edge.studio.library import SpoolIndex
    from edge.util import atomic_write
    spool, p = tmp_path / "spool", [[0.5, 0.3, 0.2]] * 2
    spool_clip(spool, "door", "a", p, "red", video=False)
    spool_clip(spool, "door", "b", p, "green", video=False)
    for stem in ("a", "b", "c"):
        (spool / "door" / f"{stem}.avi").write_bytes(b"x")
    index = SpoolIndex(tmp_path / "index.json")

    def listed():
        return {c["clip"]: c["predicted"] for c in index.ordered(spool, "uncertain")}

    old = time.time() - 60

    def age_folder():   # as if the last change were a minute ago: the folder's listing is trusted
        os.utime(spool / "door", (old, old))

    age_folder()
    assert listed() == {"door/a.avi": "red", "door/b.avi": "green"}
    spool_clip(spool, "door", "c", p, "blue", video=False)
    assert listed() == {"door/a.avi": "red", "door/b.avi": "green", "door/c.avi": "blue"}
    (spool / "door" / "a.json").unlink()
    side = json.loads((spool / "door" / "b.json").read_text())
    atomic_write(spool / "door" / "b.json", json.dumps({**side, "predicted": "blue"}))
    assert listed() == {"door/b.avi": "blue", "door/c.avi": "blue"}
    spool_clip(spool, "hall", "d", p, "red")
    assert listed()["hall/d.avi"] == "red" and len(listed()) == 3
    age_folder()
    listed()
    with open(spool / "door" / "c.json", "r+", encoding="utf-8") as f:   # in place: the folder does not change
        side = json.loads(f.read())
        f.seek(0)
        f.write(json.dumps({**side, "predicted": "green"}))
    age_folder()
    assert listed()["door/c.avi"] == "blue"
    index.VERIFY_S = 0.0
    assert listed()["door/c.avi"] == "green"
    assert set(json.loads((tmp_path / "index.json").read_text())) == {"door/b.avi", "door/c.avi", "hall/d.avi"}


# --- player ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fourcc", ["MJPG", "mp4v"])
def test_frames_are_frame_accurate_jpegs(folders, client, fourcc):
    name = f"steps-{fourcc}.{'avi' if fourcc == 'MJPG' else 'mp4'}"
    path = folders["recs"] / name
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 15, (96, 64))
    for i in range(40):   # each frame a different grey level: the frame number can be read back
        vw.write(np.full((64, 96, 3), 5 * i + 20, np.uint8))
    vw.release()
    cap, decoded = cv2.VideoCapture(str(path)), []   # what a sequential decode gives for each frame
    while (got := cap.read())[0]:
        decoded.append(float(got[1].mean()))
    cap.release()
    ref = f"recordings/{name}"
    info = ok(client.get("/api/video/info", params={"path": ref}))
    assert (info["frames"], info["fps"], info["width"], info["height"]) == (40, 15.0, 96, 64)
    for i in (0, 1, 2, 30, 7, 8, 39, 3):   # forward, jumps, back
        r = ok(client.get("/api/video/frame", params={"path": ref, "i": i}))
        assert r.headers["content-type"] == "image/jpeg" and r.headers["x-frame-index"] == str(i)
        img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert abs(float(img.mean()) - decoded[i]) < 1.0 and abs(decoded[i] - (5 * i + 20)) < 4, (i, img.mean())
    again = client.get("/api/video/frame", params={"path": ref, "i": 3},
                       headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    small = ok(client.get("/api/video/frame", params={"path": ref, "i": 0, "w": 48}))
    assert cv2.imdecode(np.frombuffer(small.content, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (32, 48)
    assert client.get("/api/video/frame", params={"path": ref, "i": 40}).status_code == 404
    path.unlink()


def test_a_corrupt_video_is_one_message_and_the_server_goes_on(client, caplog):
    with caplog.at_level(logging.WARNING, logger="edge.studio"):
        for url in ("/api/video/info", "/api/scores"):
            r = client.get(url, params={"path": "recordings/broken.avi"})
            assert r.status_code == 422 and "broken.avi" in r.json()["error"], r.text
    lines = [r for r in caplog.records if "broken.avi" in r.getMessage()]
    assert len(lines) == 2, [r.getMessage() for r in lines]
    assert ok(client.get("/api/video/info", params={"path": "recordings/colours.avi"}))["frames"] == 60


def test_scores_come_from_the_pipeline_are_cached_and_give_the_pipelines_events(folders, client):
    from edge.classify import classify_video
    from edge.config import load_config
    first = ok(client.get("/api/scores", params={"path": "recordings/colours.avi"}))
    assert first["labels"] == ["red", "green", "blue"] and first["frames"] == 60 and not first["cached"]
    probs = np.array(first["probs"])
    assert len(first["index"]) == len(first["t"]) == len(probs) > 0
    # what the model sees: each colour wins in its third of the recording (after the states settle)
    for k, colour in enumerate(("red", "green", "blue")):
        inside = [j for j, i in enumerate(first["index"]) if 20 * k + 8 <= i < 20 * k + 20]
        assert (probs[inside].argmax(axis=1) == k).all(), colour
    again = ok(client.get("/api/scores", params={"path": "recordings/colours.avi"}))
    assert again["cached"] and again["probs"] == first["probs"]
    # the events are the ones the daemon's loop emits with the config's events: settings
    events = load_config(folders["config"]).events
    res = classify_video(folders["recs"] / "colours.avi", model=str(folders["bundle"]), events=events,
                         start_time=0.0)
    starts = [(e.label, round(e.start_ts, 3), round(e.ts, 3)) for e in res.events if e.kind == "start"]
    assert [(e["label"], e["start"], e["fired"]) for e in first["events"]] == starts
    assert [e["label"] for e in first["events"]] == ["red", "green", "blue"]
    assert first["settings"]["enter"] == 0.6


def test_replay_with_other_thresholds_and_a_bad_section(client):
    r = ok(client.post("/api/events/replay", json={"path": "recordings/colours.avi",
                                                   "events": {"enter": 0.99, "exit": 0.5}}))
    assert r["events"] == [] and r["settings"]["enter"] == 0.99
    bad = client.post("/api/events/replay", json={"path": "recordings/colours.avi", "events": {"enter": 2}})
    assert bad.status_code == 400 and "enter" in bad.json()["error"]
    bad = client.post("/api/events/replay", json={"path": "recordings/colours.avi",
                                                  "events": {"classes": {"purple": {"enter": 0.5}}}})
    assert bad.status_code == 400 and "purple" in bad.json()["error"]


# --- labelling -------------------------------------------------------------------------------------------
def test_clip_labels_save_at_once_refuse_a_stale_write_and_export_with_from_clips(folders, client):
    work, data = folders["work"], folders["data"]
    r = ok(client.post("/api/labels/clip", json={"path": "spool/door/b-unsure.avi", "label": "green", "was": None}))
    rows = list(csv.DictReader((work / "spool-labels.csv").open(encoding="utf-8")))
    assert [(x["clip"], x["label"], x["predicted"]) for x in rows] == [("door/b-unsure.avi", "green", "red")]
    assert r["version"]
    # another tab still showing it unlabelled: 409, the file keeps green
    stale = client.post("/api/labels/clip", json={"path": "spool/door/b-unsure.avi", "label": "red", "was": None})
    assert stale.status_code == 409 and stale.json()["current"] == "green"
    # undo (the page re-saves the old label) and redo; a skip; a label that is no folder name
    ok(client.post("/api/labels/clip", json={"path": "spool/door/b-unsure.avi", "label": None, "was": "green"}))
    assert "door/b-unsure.avi" not in (work / "spool-labels.csv").read_text()
    ok(client.post("/api/labels/clip", json={"path": "spool/door/b-unsure.avi", "label": "green"}))
    ok(client.post("/api/labels/clip", json={"path": "spool/door/a-sure.avi", "label": "skip"}))
    bad = client.post("/api/labels/clip", json={"path": "spool/door/a-sure.avi", "label": "../x", "was": "skip"})
    assert bad.status_code == 400
    assert ok(client.get("/api/spool", params={"show": "labelled"}))["total"] == 2
    # the CLI reads the same file
    from edge.data.fieldclips import from_clips
    out = from_clips(folders["spool"], work / "spool-labels.csv", folders["tmp"] / "cli-out")
    assert out["per_label"] == {"green": 1} and out["skipped"] == 1
    exported = ok(client.post("/api/export/clips", json={}))
    assert exported["per_label"] == {"green": 1} and exported["gone"] == 0
    assert (data / "green" / "door-b-unsure.avi").is_file()
    lib = ok(client.get("/api/library"))
    assert {c["name"]: c["clips"] for c in lib["dataset"]["classes"]}["green"] == 4
    (data / "green" / "door-b-unsure.avi").unlink()


def test_segments_versioned_409_and_from_recording(folders, client):
    ref = "recordings/colours.avi"
    got = ok(client.get("/api/segments", params={"path": ref}))
    assert got["version"] is None and got["segments"] == []
    segs = [{"start": 1.4, "end": 2.6, "label": "green"}, {"start": 0.0, "end": 1.3, "label": "red"}]
    saved = ok(client.post("/api/segments", json={"path": ref, "version": None, "segments": segs}))
    text = (folders["recs"] / "colours.csv").read_text()
    assert text == "start,end,label\n0.000,1.300,red\n1.400,2.600,green\n"
    stale = client.post("/api/segments", json={"path": ref, "version": None, "segments": []})
    assert stale.status_code == 409 and len(stale.json()["segments"]) == 2
    assert (folders["recs"] / "colours.csv").read_text() == text
    for bad in ({"start": 2, "end": 1, "label": "red"}, {"start": 0, "end": 1, "label": "a b"}, "x"):
        r = client.post("/api/segments", json={"path": ref, "version": saved["version"], "segments": [bad]})
        assert r.status_code == 400, bad
    from edge.data.fieldclips import read_segments
    assert [r[1:] for r in read_segments(folders["recs"] / "colours.csv")] == [(0.0, 1.3, "red"), (1.4, 2.6, "green")]
    out = ok(client.post("/api/export/recording", json={"path": ref}))
    assert out["per_label"] == {"red": 1, "green": 1}
    made = sorted(folders["data"].glob("*/colours-*.avi"))
    assert len(made) == 2
    for p in made:
        p.unlink()


def test_new_class_and_moving_a_dataset_clip(folders, client):
    r = ok(client.post("/api/classes", json={"name": "purple"}))
    assert "purple" in r["classes"]
    assert client.post("/api/classes", json={"name": "no/slash"}).status_code == 400
    moved = ok(client.post("/api/dataset/move", json={"path": "data/blue/blue_0.avi", "label": "green"}))
    assert moved["path"] == "data/green/blue_0.avi" and (folders["data"] / "green" / "blue_0.avi").is_file()
    assert client.post("/api/dataset/move", json={"path": "data/blue/blue_0.avi", "label": "green"}).status_code == 404
    ok(client.post("/api/dataset/move", json={"path": "data/green/blue_0.avi", "label": "blue"}))


# --- jobs ------------------------------------------------------------------------------------------------
def test_eval_events_job_gives_the_clis_numbers_and_the_events(folders, client):
    from edge.config import load_config
    from edge.evalevents import evaluate_events
    ref = "recordings/colours.avi"
    cur = ok(client.get("/api/segments", params={"path": ref}))
    truth = [{"start": 0.0, "end": 1.333, "label": "red"}, {"start": 1.333, "end": 2.667, "label": "blue"},
             {"start": 2.667, "end": 4.0, "label": "blue"}]
    ok(client.post("/api/segments", json={"path": ref, "version": cur["version"], "segments": truth}))
    job = ok(client.post("/api/jobs", json={"kind": "eval-events", "path": ref, "tolerance": 0.5}), 202)
    done = wait_until(lambda: (j := ok(client.get(f"/api/jobs/{job['id']}")))["state"] in ("done", "failed") and j,
                      timeout=30)
    assert done["state"] == "done", done["error"]
    r = done["result"]
    cli = evaluate_events(folders["recs"] / "colours.avi", folders["recs"] / "colours.csv",
                          model=str(folders["bundle"]), events=load_config(folders["config"]).events)
    assert r["event_count"] == len(r["events"]) == cli["events"]
    for key in ("segments", "tp", "fp", "fn", "precision", "recall", "f1", "latency_s", "missed",
                "false_events", "miss_summary"):
        assert r[key] == cli[key], key
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 1)
    # its blue event is the next segment's (it starts within the tolerance of both): counted elsewhere
    assert r["missed"][0]["why"] == "counted_elsewhere" and r["missed"][0]["mostly"] == "green", r["missed"]
    assert [(e["label"], e["matched"]) for e in r["events"]] == [("red", True), ("green", False), ("blue", True)]
    assert ok(client.get("/api/jobs"))["jobs"][0]["id"] == job["id"]
    assert client.post("/api/jobs", json={"kind": "nope"}).status_code == 400
    assert client.get("/api/jobs/j999").status_code == 404


def test_a_cancelled_scores_run_stops_the_frame_loop_and_caches_nothing(folders):
    """The eval-events job hands its cancel to the scores computation (a long recording stops at once)."""
    import threading

    from edge.studio.jobs import Cancelled
    from edge.studio.scores import Scores
    s = StudioSettings({"data": folders["data"], "spool": folders["spool"], "recordings": folders["recs"],
                        "work": folders["work"]}, model=str(folders["bundle"]), cache_dir=folders["tmp"] / "c2",
                       port=PORT)
    sc = Scores(s)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        sc.scores(folders["recs"] / "colours.avi", cancel=cancel)
    assert not list(sc.folder().glob("*.npz"))
    whole = sc.scores(folders["recs"] / "colours.avi")
    assert not whole["cached"] and whole["frames"] == 60


def test_jobs_run_in_order_report_progress_and_cancel():
    import threading

    from edge.studio.jobs import Cancelled, Jobs
    jobs = Jobs()
    gate = threading.Event()

    def slow(job):
        for i in range(100):
            job.progress("step", i, 100)
            if job.cancel.wait(0.01) or gate.is_set():
                break
        if job.cancel.is_set():
            raise Cancelled()
        return {"i": i}

    a = jobs.submit("x", {}, slow)
    b = jobs.submit("x", {}, lambda job: {"b": True})
    wait_until(lambda: a.state == "running" and a.done > 0)
    assert b.state == "queued"
    jobs.cancel(a.id)
    wait_until(lambda: a.state == "cancelled" and b.state == "done")
    assert b.result == {"b": True} and a.json()["progress"]["stage"] == "step"
    c = jobs.submit("x", {}, lambda job: 1 / 0)
    wait_until(lambda: c.state == "failed")
    assert "ZeroDivisionError" in c.error
    jobs.close()


# --- live and the config ---------------------------------------------------------------------------------
def test_live_file_camera_frames_scores_replay_and_stop(client):
    src = ok(client.get("/api/live/sources"))
    assert src["cameras"][0]["name"] == "door" and "recordings/colours.avi" in src["files"]
    started = ok(client.post("/api/live/start", json={"camera": "door"}))
    sid = started["id"]
    assert started["labels"] == ["red", "green", "blue"]
    seen = {"t": [], "events": []}
    cursor = 0

    def more():
        nonlocal cursor
        p = ok(client.get(f"/api/live/{sid}", params={"since": cursor}))
        assert p["error"] is None, p["error"]
        cursor = p["next"]
        seen["t"] += p["t"]
        seen["events"] += p["events"]
        return len(seen["t"]) >= 20 and p
    wait_until(more, timeout=20)
    assert seen["t"] == sorted(seen["t"])
    frame = ok(client.get(f"/api/live/{sid}/frame"))
    img = cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] > 0
    strict = ok(client.post(f"/api/live/{sid}/replay", json={"events": {"enter": 0.99}}))
    loose = ok(client.post(f"/api/live/{sid}/replay", json={"events": {"enter": 0.5, "min_frames": 1}}))
    assert strict["events"] == [] and len(loose["events"]) >= 1 and loose["seconds"] > 0
    assert ok(client.post("/api/live/stop", json={}))["stopped"] == sid
    assert client.get(f"/api/live/{sid}").status_code == 404
    bad = client.post("/api/live/start", json={"camera": "garage"})
    assert bad.status_code == 404 and "door" in bad.json()["error"]


def test_a_busy_or_absent_v4l2_device_is_one_line(client):
    r = client.post("/api/live/start", json={"source": "/dev/video97"})
    assert r.status_code == 503 and "/dev/video97" in r.json()["error"] and "no such device" in r.json()["error"]
    assert "daemon" not in r.json()["error"]
    # a device node that is there but cannot be opened (held by the daemon): the page says who may hold it
    r = client.post("/api/live/start", json={"camera": "usb"})
    err = r.json()["error"]
    assert r.status_code == 503 and "busy" in err and "systemctl stop edge-tsm" in err and err.count("\n") == 0


def test_events_saved_into_the_config_validated_with_a_backup(folders, client):
    cfgp = folders["config"]
    before = cfgp.read_text()
    cur = ok(client.get("/api/config"))
    assert cur["events"] == {"enter": 0.6, "exit": 0.4}
    bad = client.post("/api/config/events", json={"version": cur["version"], "events": {"enter": 0.3, "exit": 0.5}})
    assert bad.status_code == 400 and "exit" in bad.json()["error"]
    bad = client.post("/api/config/events", json={"version": cur["version"], "events": {"classes": {"x": {}}}})
    assert bad.status_code == 400 and "'x'" in bad.json()["error"]
    assert cfgp.read_text() == before
    saved = ok(client.post("/api/config/events", json={"version": cur["version"],
                                                       "events": {"enter": 0.7, "exit": 0.45,
                                                                  "classes": {"blue": {"enter": 0.8}}}}))
    text = cfgp.read_text()
    assert text.startswith("# the door camera\n") and "sinks: []  # none" in text and "a comment inside" not in text
    from edge.config import load_config
    ev = load_config(cfgp).events
    assert (ev.enter, ev.exit, ev.classes["blue"].enter) == (0.7, 0.45, 0.8)
    assert (cfgp.parent / "config.yaml.bak").read_text() == before and saved["backup"].endswith(".bak")
    stale = client.post("/api/config/events", json={"version": cur["version"], "events": {}})
    assert stale.status_code == 409
    # the scores' events now follow the saved settings
    assert ok(client.get("/api/scores", params={"path": "recordings/colours.avi"}))["settings"]["enter"] == 0.7
    cfgp.write_text(before)


# --- teach (the real edge.teach on the default model) -------------------------------------------------------
def test_teach_job_progress_cancel_and_a_bundle_that_loads(tmp_path):
    pytest.importorskip("edge.teach", reason="edge.teach is not in this tree yet")
    from edge.bundle import load_bundle
    from edge.data.synth import render_clip
    data = tmp_path / "data"
    for k, label in enumerate(("swipe_left", "swipe_right", "zoom_in")):
        for i in range(3):
            clip = render_clip(label, np.random.default_rng([7, k, i]), (112, 112), 12, difficulty=0.0)
            p = data / label / f"{label}_{i}.avi"
            p.parent.mkdir(parents=True, exist_ok=True)
            vw = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 15, (112, 112))
            for f in clip:
                vw.write(f)
            vw.release()
    work = tmp_path / "work"
    work.mkdir()
    s = StudioSettings({"data": data, "work": work}, model="default", cache_dir=tmp_path / "cache", port=PORT)
    with TestClient(create_app(s), base_url=BASE) as c:
        c.headers.update({"X-Studio-Token": s.token, "Origin": BASE})
        assert c.post("/api/jobs", json={"kind": "teach", "name": "../x"}).status_code == 400
        assert c.post("/api/jobs", json={"kind": "teach", "name": "a", "options": {"epochs": 3}}).status_code == 400
        first = ok(c.post("/api/jobs", json={"kind": "teach", "name": "cancelled"}), 202)
        quick = ok(c.post("/api/jobs", json={"kind": "teach", "name": "door-v2",
                                             "options": {"cross_validate": False, "phases": False, "augment": 0}}), 202)
        wait_until(lambda: ok(c.get(f"/api/jobs/{first['id']}"))["progress"]["stage"] in ("features", "read"),
                   timeout=30)
        assert ok(c.get(f"/api/jobs/{quick['id']}"))["state"] == "queued"
        ok(c.post(f"/api/jobs/{first['id']}/cancel", json={}))
        done = wait_until(lambda: (j := ok(c.get(f"/api/jobs/{quick['id']}")))["state"] in ("done", "failed") and j,
                          timeout=120)
        assert ok(c.get(f"/api/jobs/{first['id']}"))["state"] == "cancelled"
        assert not (work / "bundles" / "cancelled").exists()
        assert done["state"] == "done", done["error"]
        r = done["result"]
        assert r["out"] == "work/bundles/door-v2" and r["accuracy"] is None
        assert {k: v for k, v in r["clips_per_class"].items() if v} == {"swipe_left": 3, "swipe_right": 3, "zoom_in": 3}
        b = load_bundle(r["folder"])
        assert b.labels[:3] == ["swipe_left", "swipe_right", "zoom_in"]
        # the taught bundle is a model the timeline and eval-events can use
        sc = ok(c.get("/api/scores", params={"path": "data/zoom_in/zoom_in_0.avi", "model": "work/bundles/door-v2"}))
        assert sc["labels"] == b.labels and len(sc["probs"]) > 0
        assert c.post("/api/jobs", json={"kind": "teach", "name": "door-v2"}).status_code == 409
    # the page's model choosers: the bundle taught is offered, and still after a restart
    for _ in range(2):
        with TestClient(create_app(s), base_url=BASE) as c:
            listed = ok(c.get("/api/bundles"))["bundles"]
        assert [x["path"] for x in listed] == ["default", "work/bundles/door-v2"]
        assert listed[1]["labels"] == b.labels and listed[1]["base"] == "default" and listed[1]["error"] is None


def test_bundles_the_page_can_choose_from(folders, client):
    """The server's --model, the built-in bundle, and every folder under work/bundles (one that does not
    load: its error, one line), each with its labels, precision and when it was made."""
    work = folders["work"] / "bundles"
    build_tiny_bundle(work / "b-copy", seed=1)   # the config's events: name these labels
    (work / "a-broken").mkdir(parents=True, exist_ok=True)
    (work / "a-broken" / "model.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    (work / ".c-teach-123").mkdir(exist_ok=True)   # teach's folder while it runs: not offered
    listed = ok(client.get("/api/bundles"))["bundles"]
    assert [x["path"] for x in listed] == ["default", "builtin", "work/bundles/a-broken", "work/bundles/b-copy"]
    server, builtin, broken, copy = listed
    assert server["labels"] == ["red", "green", "blue"] and server["folder"] == str(folders["bundle"].resolve())
    assert builtin["name"] == "default" and "swipe_left" in builtin["labels"]
    assert builtin["precision"] in ("fp32", "int8")
    assert copy["labels"] == ["red", "green", "blue"] and copy["error"] is None and copy["accuracy"] is None
    assert copy["folder"] == str((work / "b-copy").resolve()) and copy["precision"] == "fp32"
    made = calendar.timegm(time.strptime(copy["made"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(made - (work / "b-copy" / "model.yaml").stat().st_mtime) < 2
    assert "model.yaml" in broken["error"] and "labels" not in broken
    # what it lists is what the timeline and eval-events take
    sc = ok(client.get("/api/scores", params={"path": "recordings/colours.avi", "model": "work/bundles/b-copy"}))
    mine = ok(client.get("/api/scores", params={"path": "recordings/colours.avi"}))
    assert sc["labels"] == mine["labels"] and len(sc["probs"]) == len(mine["probs"]) and sc["probs"] != mine["probs"]
    assert client.get("/api/scores", params={"path": "recordings/colours.avi", "model": "nope"}).status_code == 404
