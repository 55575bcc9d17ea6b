"""Field clips: the recorder and spool on real video files, the daemon writing clips as a user runs it,
and the way back to training data (review sheet -> from-clips -> a dataset train reads; from-recording)."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from tinymodel import build_tiny_bundle, write_colour_video
from waiting import wait_until

from edge.cli import main
from edge.clips import ClipRecorder, ClipSpool
from edge.config import ClipsConfig, config_from_data
from edge.data.dataset import load_dataset
from edge.data.fieldclips import from_clips, from_recording, parse_time, spool_clips
from edge.errors import ConfigError, DataError, InputError

LABELS = ["calm", "left", "right"]
MODEL = {"name": "t", "graph": "model.onnx", "precision": "fp32", "sha256": "0" * 64}


def _frame(i: int, size=(64, 48)) -> np.ndarray:
    img = np.full((size[1], size[0], 3), (i * 7) % 256, np.uint8)
    cv2.putText(img, str(i), (2, size[1] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return img


def _probs(top: int, p: float) -> np.ndarray:
    out = np.full(len(LABELS), (1 - p) / (len(LABELS) - 1), np.float32)
    out[top] = p
    return out


def _spool(tmp_path, **kw) -> tuple[ClipSpool, ClipsConfig]:
    cfg = ClipsConfig(**kw)
    spool = ClipSpool(tmp_path / "spool", cfg, MODEL, LABELS)
    spool.open()
    return spool, cfg


def _drive(rec: ClipRecorder, script, cam_fps: float = 30.0, model_every: int = 2, t0: float = 1_000_000.0,
           events=None):
    """Feed the recorder like the daemon does: every frame to tap, every k-th frame's scores to observe.

    ``script(t)`` gives (top, p) at time t (seconds from t0); ``events(t)`` the events at that frame.
    """
    n = int(round(script.duration * cam_fps))
    for i in range(n):
        t = i / cam_fps
        rec.tap(_frame(i), t0 + t, i == 0)
        if i % model_every == 0:
            top, p = script(t)
            probs = _probs(top, p)
            rec.observe(t0 + t, probs, probs, events(t0 + t) if events else [])
    rec.flush()


class Script:
    def __init__(self, duration, parts):
        self.duration, self.parts = duration, parts

    def __call__(self, t):
        for end, top, p in self.parts:
            if t < end:
                return top, p
        return self.parts[-1][1:]


def _sidecars(spool_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(spool_dir.glob("*/*.json"))]


def _video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_uncertain_band_makes_one_clip_with_pre_and_post_roll_and_cooldown(tmp_path):
    spool, cfg = _spool(tmp_path, triggers=["uncertain"], pre_s=1.0, post_s=1.0, width=None,
                        uncertain={"low": 0.4, "high": 0.75, "min_s": 0.5, "cooldown_s": 5.0})
    rec = ClipRecorder("door", cfg, spool, LABELS, fps=15.0)
    # sure 0-3 s, unsure 3-5 s, sure 5-6 s, unsure again 6-7 s (cooldown: no clip), sure to 14 s,
    # unsure 14-15 s (after the cooldown: a second clip)
    script = Script(16.0, [(3, 0, 0.95), (5, 1, 0.5), (6, 0, 0.95), (7, 2, 0.55), (14, 0, 0.95), (15, 2, 0.6),
                           (16, 0, 0.95)])
    _drive(rec, script)
    spool.close()
    sides = _sidecars(tmp_path / "spool")
    assert [s["trigger"] for s in sides] == ["uncertain", "uncertain"]
    first = sides[0]
    # from band start - pre_s (2 s) to band end + post_s (6 s), at the clip rate (15 of 30 fps)
    assert first["duration_s"] == pytest.approx(4.0, abs=0.15)
    assert first["fps"] == 15.0 and first["frames"] == pytest.approx(61, abs=2)
    assert first["predicted"] in LABELS and first["camera"] == "door" and first["model"] == MODEL
    assert len(first["scores"]["t"]) == len(first["scores"]["probs"]) and len(first["scores"]["probs"][0]) == 3
    video = tmp_path / "spool" / first["clip"]
    assert _video_frames(video) == first["frames"]
    assert spool.stats()["written"] == 2 and spool.stats()["dropped"] == 0


def test_event_trigger_cuts_long_events_at_max_s_and_filters_labels(tmp_path):
    spool, cfg = _spool(tmp_path, triggers=["event"], labels=["left"], pre_s=0.5, post_s=0.5, max_s=2.0)
    rec = ClipRecorder("bay", cfg, spool, LABELS, fps=10.0)
    t0 = 2_000_000.0

    def events(t):
        from edge.events import Event
        rel = round(t - t0, 6)
        ev = []
        for label, start, end in (("left", 1.0, 5.0), ("right", 6.0, 7.0)):
            if abs(rel - start) < 1e-6:
                ev.append(Event("start", f"e-{label}", "bay", label, 0.9, t, t, 2))
            if abs(rel - end) < 1e-6:
                ev.append(Event("end", f"e-{label}", "bay", label, 0.9, t, t0 + start, 40))
        return ev

    _drive(rec, Script(8.0, [(8, 0, 0.9)]), cam_fps=10.0, model_every=1, t0=t0, events=events)
    spool.close()
    sides = _sidecars(tmp_path / "spool")
    assert len(sides) == 1, sides  # 'right' is not in clips.labels
    s = sides[0]
    assert s["trigger"] == "event" and s["predicted"] == "left" and s["event_id"] == "e-left"
    assert s["duration_s"] <= 2.0 + 1e-6 and s["frames"] == pytest.approx(21, abs=1)


@pytest.mark.parametrize("codec,suffix", [("mjpg", ".avi"), ("mp4v", ".mp4")])
def test_gap_closes_the_open_clip_and_clears_the_ring(tmp_path, codec, suffix):
    spool, cfg = _spool(tmp_path, triggers=["uncertain"], pre_s=1.0, post_s=1.0, codec=codec,
                        uncertain={"low": 0.3, "high": 0.8, "min_s": 0.0, "cooldown_s": 0.0})
    rec = ClipRecorder("yard", cfg, spool, LABELS, fps=15.0)
    t0 = 3_000_000.0
    for i in range(30):  # 2 s unsure at 15 fps: a clip opens at once
        rec.tap(_frame(i), t0 + i / 15, i == 0)
        rec.observe(t0 + i / 15, _probs(1, 0.5), _probs(1, 0.5), [])
    rec.tap(_frame(99), t0 + 10.0, True)  # the camera reconnected: the clip ends with the frames before
    spool.close()
    sides = _sidecars(tmp_path / "spool")
    assert len(sides) == 1 and sides[0]["frames"] == 30 and sides[0]["clip"].endswith(suffix)
    assert _video_frames(tmp_path / "spool" / sides[0]["clip"]) == 30


def test_quota_removes_the_oldest_clips_first(tmp_path):
    spool, cfg = _spool(tmp_path, triggers=["uncertain"], pre_s=0.0, post_s=0.0, width=None, max_mb=0.2,
                        uncertain={"low": 0.3, "high": 0.8, "min_s": 0.0, "cooldown_s": 0.0})
    sizes = []
    for k in range(6):
        rec = ClipRecorder(f"cam{k % 2}", cfg, spool, LABELS, fps=15.0)
        t0 = 4_000_000.0 + 100 * k
        rng = np.random.default_rng(k)
        for i in range(8):
            rec.tap(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), t0 + i / 15, i == 0)
            rec.observe(t0 + i / 15, _probs(1, 0.5), _probs(1, 0.5), [])
        rec.flush()
        wait_until(lambda k=k: spool.stats()["written"] + spool.stats()["failed"] >= k + 1, timeout=10)
        sizes.append(spool.stats()["bytes"])
    spool.close()
    st = spool.stats()
    assert st["written"] == 6 and st["removed"] >= 1
    on_disk = sum(p.stat().st_size for p in (tmp_path / "spool").rglob("*") if p.is_file())
    assert on_disk <= 0.2 * (1 << 20) and max(sizes) <= 0.2 * (1 << 20)
    kept = sorted(s["start_ts"] for s in _sidecars(tmp_path / "spool"))
    assert kept and kept[-1] == max(kept)  # the newest survived
    assert all(p.with_suffix(".json").exists() for p in (tmp_path / "spool").rglob("*.avi"))


def test_a_slow_disk_drops_clips_not_frames(tmp_path, monkeypatch):
    spool, cfg = _spool(tmp_path, triggers=["uncertain"], pre_s=0.0, post_s=0.0,
                        uncertain={"low": 0.3, "high": 0.8, "min_s": 0.0, "cooldown_s": 0.0})
    gate, taken = threading.Event(), threading.Event()
    real = spool._write
    monkeypatch.setattr(spool, "_write", lambda clip: (taken.set(), gate.wait(10), real(clip)))
    for k in range(8):
        rec = ClipRecorder("c", cfg, spool, LABELS, fps=15.0)
        for i in range(3):
            rec.tap(_frame(i), 5e6 + 100 * k + i / 15, i == 0)
            rec.observe(5e6 + 100 * k + i / 15, _probs(1, 0.5), _probs(1, 0.5), [])
        rec.flush()
        if k == 0:  # the writer holds the first clip (stuck on the slow disk); the queue takes the next 4
            assert taken.wait(10), "the writer never took the first clip"
    assert spool.stats()["dropped"] >= 1
    gate.set()
    spool.close()
    st = spool.stats()
    assert st["written"] + st["dropped"] == 8 and st["written"] >= 4


def test_spool_folder_errors_and_leftovers(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match=r"clips.dir .*file/spool: cannot create or write"):
        ClipSpool(blocker / "spool", ClipsConfig(), MODEL, LABELS).open()
    leftover = tmp_path / "ok" / "cam" / ".20260101T000000.000Z-event-x.tmp.avi"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    spool = ClipSpool(tmp_path / "ok", ClipsConfig(), MODEL, LABELS)
    spool.open()
    spool.close()
    assert not leftover.exists()


def test_clips_config_errors(tmp_path):
    base = {"cameras": [{"name": "a", "source": "x.mp4"}]}
    with pytest.raises(ConfigError, match=r"clips.uncertain.*low \(0.8\) must be below high \(0.5\)"):
        config_from_data({**base, "clips": {"uncertain": {"low": 0.8, "high": 0.5}}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"clips.cameras: 'b' is not a configured camera"):
        config_from_data({**base, "clips": {"cameras": ["b"]}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"clips.triggers"):
        config_from_data({**base, "clips": {"triggers": ["always"]}}, "c.yaml")


# --- the daemon, as a user runs it --------------------------------------------------------------------
@pytest.fixture(scope="module")
def daemon_spool(tmp_path_factory):
    """Run the daemon on a colour video with clips of every event; the spool it leaves."""
    tmp = tmp_path_factory.mktemp("daemon")
    bundle = build_tiny_bundle(tmp / "tiny")
    video = write_colour_video(tmp / "colours.avi", size=(320, 240),
                               script=(("red", 30), ("green", 30), ("blue", 30)))
    cfg = tmp / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(bundle), "cameras": [{"name": "bench", "source": str(video)}],
                                   "sinks": [{"type": "log", "path": str(tmp / "events.jsonl")}],
                                   "state_dir": str(tmp / "state"),
                                   "clips": {"triggers": ["event"], "pre_s": 0.5, "post_s": 0.5, "width": 160}}))
    proc = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(x) for x in (tmp / "events.jsonl").read_text().splitlines()]
    return {"spool": tmp / "state" / "clips", "state": tmp / "state", "bundle": bundle, "events": events,
            "stderr": proc.stderr}


def test_daemon_keeps_a_clip_per_event_with_model_hash_and_scores(daemon_spool):
    spool = daemon_spool["spool"]
    sides = _sidecars(spool)
    starts = [e for e in daemon_spool["events"] if e["event"] == "start"]
    assert [s["predicted"] for s in sides] == [e["label"] for e in starts] == ["red", "green", "blue"]
    digest = hashlib.sha256((daemon_spool["bundle"] / "model.onnx").read_bytes()).hexdigest()
    for s, ev in zip(sides, starts, strict=False):
        assert s["model"]["sha256"] == digest and s["model"]["name"] == "tiny_online"
        assert s["event_id"] == ev["id"] and s["camera"] == "bench" and s["labels"] == ["red", "green", "blue"]
        assert s["width"] == 160 and s["height"] == 120 and s["fps"] == 15.0
        assert s["start_ts"] <= ev["start_ts"]
        video = spool / s["clip"]
        assert _video_frames(video) == s["frames"] >= 20
        first, last = s["source_frames"]  # the file's frame numbers (15 fps file, 15 fps clips: all kept)
        assert last - first + 1 == s["frames"] and 0 <= first < last < 90
        # the per-frame scores: one row per classified frame in the clip, the label on top on average
        probs = np.array(s["scores"]["probs"])
        assert probs.shape[1] == 3 and s["labels"][int(probs.mean(0).argmax())] == s["predicted"]
    assert "clips: kept bench/" in daemon_spool["stderr"]
    from edge.metrics import read_status
    status = read_status(daemon_spool["state"])
    assert status["clips"]["written"] == 3 and status["clips"]["bytes"] > 0


def test_review_sheet_to_dataset_that_train_reads(daemon_spool, tmp_path):
    spool = daemon_spool["spool"]
    sheet = tmp_path / "review.csv"
    assert main(["dataset", "from-clips", "--spool", str(spool), "--sheet", str(sheet)]) == 0
    rows = list(csv.DictReader(sheet.open()))
    assert [r["predicted"] for r in rows] == ["red", "green", "blue"] and all(r["label"] == "" for r in rows)
    # the reviewer agrees with red and blue, calls the green one "teal", skips nothing
    rows[0]["label"], rows[1]["label"], rows[2]["label"] = "red", "teal", "blue"
    with sheet.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "ds"
    assert main(["dataset", "from-clips", "--spool", str(spool), "--labels", str(sheet), "--out", str(out)]) == 0
    ds = load_dataset(out)
    assert ds.labels == ["blue", "red", "teal"] and ds.counts() == {"blue": 1, "red": 1, "teal": 1}
    manifest = json.loads((out / "from-clips.json").read_text())
    assert {c["label"] for c in manifest["clips"]} == {"red", "teal", "blue"}
    # relabel one and run again: it moves, nothing is duplicated
    rows[1]["label"] = "green"
    with sheet.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = from_clips(spool, sheet, out)
    assert summary["clips"] == 3
    assert load_dataset(out).counts() == {"blue": 1, "green": 1, "red": 1}  # the emptied teal/ is gone
    assert len(json.loads((out / "from-clips.json").read_text())["clips"]) == 3
    # mark one skip on a later run: its earlier copy leaves the dataset and the manifest, as the summary says
    rows[2]["label"] = "skip"
    with sheet.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = from_clips(spool, sheet, out)
    assert summary["clips"] == 2 and summary["skipped"] == 1 and summary["removed"] == 1
    assert load_dataset(out).counts() == {"green": 1, "red": 1}
    assert {c["label"] for c in json.loads((out / "from-clips.json").read_text())["clips"]} == {"green", "red"}
    rows[2]["label"] = "blue"
    with sheet.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    from_clips(spool, sheet, out)
    torch = pytest.importorskip("torch")  # noqa: F841 - the [train] extra
    from edge.models.train import TrainConfig, train
    bundle = train(TrainConfig(data=str(out), out=str(tmp_path / "run"), size=32, frames=4, stride=1, epochs=1,
                               batch=3, threads=1, seed=0, max_steps=1), progress=False)
    assert (bundle / "model.onnx").is_file()
    assert yaml.safe_load((bundle / "model.yaml").read_text())["labels"] == ["blue", "green", "red"]


def test_from_clips_errors_name_the_row(daemon_spool, tmp_path, capsys):
    spool = daemon_spool["spool"]
    clips = spool_clips(spool)
    csv_path = tmp_path / "l.csv"
    cases = [
        ("clip,label\nnope.avi,red\n", r"l.csv:2: clip 'nope.avi' is not in spool"),
        (f"{clips[0]['clip']},red\n{clips[0]['path'].name},red\n", r"l.csv:2: clip .* is labelled twice"),
        (f"{clips[0]['clip']},red/evil\n", r"l.csv:1: label 'red/evil' is not a usable folder name"),
        (f"{clips[0]['clip']},skip\n{clips[1]['clip']},\n", r"l.csv: no labelled clip"),
        (f"{clips[0]['clip']}\n", r"l.csv:1: expected 2 columns"),
    ]
    for text, pattern in cases:
        csv_path.write_text(text)
        with pytest.raises(DataError, match=pattern):
            from_clips(spool, csv_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half done
    assert main(["dataset", "from-clips", "--spool", str(tmp_path / "none"), "--sheet", str(tmp_path / "s.csv")]) == 66
    assert "spool" in capsys.readouterr().err


def test_from_recording_cuts_by_rows_and_refuses_bad_rows(tmp_path, capsys):
    video = write_colour_video(tmp_path / "long.avi", script=(("red", 30), ("green", 30), ("blue", 30)))
    ann = tmp_path / "a.csv"
    ann.write_text("start,end,label\n0,2,red\n00:02,00:04.000,green\n# a comment\n4.0,6,blue\n1.5,2.5,mixed\n")
    out = tmp_path / "ds"
    assert main(["dataset", "from-recording", str(video), "--annotations", str(ann), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["clips"] == 4 and summary["per_label"] == {"red": 1, "green": 1, "blue": 1, "mixed": 1}
    ds = load_dataset(out)
    assert ds.counts() == {"blue": 1, "green": 1, "mixed": 1, "red": 1}
    for clip in ds.clips:
        n = _video_frames(clip.path)
        assert n == (15 if ds.labels[clip.label] == "mixed" else 30)
        cap = cv2.VideoCapture(str(clip.path))
        ok, img = cap.read()
        cap.release()
        if ds.labels[clip.label] in ("red", "green", "blue"):  # the right part of the recording
            want = {"red": 2, "green": 1, "blue": 0}[ds.labels[clip.label]]
            assert int(np.argmax(img.reshape(-1, 3).mean(0))) == want
    bad = [("1,1,red\n", r"a.csv:1: end 1 is not after start 1"),
           ("9,10,red\n", r"a.csv:1: start 9 is past the end of long.avi \(6.00 s\)"),
           ("x,2,red\n", r"a.csv:1: start/end 'x', '2': not times"),
           ("0,1\n", r"a.csv:1: expected 3 columns"),
           ("0,1,..\n", r"a.csv:1: label '..' is not a usable folder name")]
    for text, pattern in bad:
        ann.write_text(text)
        with pytest.raises(DataError, match=pattern):
            from_recording(video, ann, tmp_path / "none")
    assert not (tmp_path / "none").exists()
    assert main(["dataset", "from-recording", str(tmp_path / "missing.avi"), "--annotations", str(ann),
                 "--out", str(out)]) == 66
    assert parse_time("01:02:03.5") == pytest.approx(3723.5) and parse_time("1:30") == 90.0
    with pytest.raises(ValueError):
        parse_time("1::2")


def test_synth_recording_and_its_annotations_cut_cleanly(tmp_path, capsys):
    video, ann = tmp_path / "rec.avi", tmp_path / "rec.csv"
    assert main(["dataset", "synth-recording", "--out", str(video), "--annotations", str(ann), "--segments", "2",
                 "--seed", "3"]) == 0
    rows = list(csv.DictReader(ann.open()))
    assert [r["label"] for r in rows][::2] == ["no_motion"] * 3 and len(rows) == 5
    assert all(float(a["end"]) == float(b["start"]) for a, b in zip(rows, rows[1:], strict=False))
    assert float(rows[-1]["end"]) * 15 == pytest.approx(_video_frames(video))
    summary = from_recording(video, ann, tmp_path / "ds")
    assert summary["frames"] == _video_frames(video) and summary["clips"] == 5
