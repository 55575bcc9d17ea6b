"""Capture: every source kind on real parts (video files, a local HTTP stream, the synthetic
renderer, the real V4L2 backend for a missing device); the one fake is a V4L2 camera behind
cv2.VideoCapture's interface, serving a real video file, that can be unplugged."""
from __future__ import annotations

import functools
import http.server
import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from waiting import wait_until

from edge.capture import SOURCES, Camera, create_source
from edge.capture.opencv import FileSource, UrlSource, V4L2Source, backends, fourcc_text, pick_scale, redact_url
from edge.capture.synthetic import MOTIONS, STILL_FRAMES
from edge.config import CameraConfig
from edge.errors import EX_NOINPUT, EX_UNAVAILABLE, CaptureError, InputError

N_FRAMES, FPS, W, H = 60, 30.0, 640, 480
HAS_GST = backends()["GStreamer"]


def write_video(path: Path, fourcc: str, frames: int = N_FRAMES) -> Path:
    """Grey frames that show their own number as 6 black/white blocks (survives lossy codecs)."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H))
    assert vw.isOpened(), f"cannot write {fourcc} here"
    for i in range(frames):
        img = np.full((H, W, 3), 128, np.uint8)
        for bit in range(6):
            img[40:120, 40 + 96 * bit: 120 + 96 * bit] = 255 if i >> bit & 1 else 0
        cv2.rectangle(img, (10 * i, 300), (10 * i + 20, 320), (255, 255, 255), -1)  # something moving
        vw.write(img)
    vw.release()
    return path


def frame_number(img: np.ndarray, scale: int = 1) -> int:
    """The number a test-video frame shows (see write_video), also in a frame decoded at 1/scale."""
    return sum(1 << bit for bit in range(6)
               if img[50 // scale:110 // scale, (50 + 96 * bit) // scale:(110 + 96 * bit) // scale].mean() > 128)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {"mp4v": write_video(d / "clip.mp4", "mp4v"), "MJPG": write_video(d / "clip.avi", "MJPG")}


@pytest.fixture(scope="module")
def http_url(videos):
    """The MJPG .avi served by python's http.server on loopback."""
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *args: None})
    handler = functools.partial(quiet, directory=str(videos["MJPG"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/clip.avi"
    server.shutdown()
    server.server_close()
    thread.join(5)


class FakeV4L2:
    """A V4L2 camera in place of ``cv2.VideoCapture`` (calling it opens it and returns it): frames from
    a real video file, looped, resized to the accepted size and paced at the accepted rate like a
    driver's blocking read; accepts MJPG/YUYV at 640x480 or 320x240; ``unplug()`` fails reads and opens."""

    FOURCCS, WIDTHS, HEIGHTS = ("YUYV", "MJPG"), (640, 320), (480, 240)

    def __init__(self, video: Path, fps: float = 60.0) -> None:
        self.video, self.fps = video, fps
        self.sets: list[tuple[int, float]] = []  # every set() call, in order
        self.opens: list[tuple[object, int]] = []
        self.failed_opens, self.plugged, self.opened, self.file = 0, True, False, None
        self.decoded = self.grabbed = 0   # frames read with and without decoding
        self.corrupt = 0  # the next this many MJPG packets are garbage (a USB transfer cut short)
        self._cond = threading.Condition()

    def __call__(self, target, api: int) -> FakeV4L2:
        with self._cond:
            self.opens.append((target, api))
            self.failed_opens += not self.plugged
            self._cond.notify_all()
        self.opened, self.due = self.plugged, time.monotonic()
        self.props = {cv2.CAP_PROP_FOURCC: float(cv2.VideoWriter_fourcc(*"YUYV")), cv2.CAP_PROP_FRAME_WIDTH: 640.0,
                      cv2.CAP_PROP_FRAME_HEIGHT: 480.0, cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_CONVERT_RGB: 1.0}
        self.file = cv2.VideoCapture(str(self.video)) if self.opened else None
        return self

    def unplug(self, plugged: bool = False) -> None:
        self.plugged = plugged

    def wait_failed_opens(self, n: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.failed_opens >= n, timeout)

    def isOpened(self) -> bool:  # noqa: N802 (cv2's name)
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        self.sets.append((prop, value))
        ok = {cv2.CAP_PROP_FOURCC: fourcc_text(value) in self.FOURCCS, cv2.CAP_PROP_FRAME_WIDTH: value in self.WIDTHS,
              cv2.CAP_PROP_FRAME_HEIGHT: value in self.HEIGHTS, cv2.CAP_PROP_FPS: 0 < value <= self.fps,
              cv2.CAP_PROP_CONVERT_RGB: value in (0, 1)}.get(prop)
        if ok:
            self.props[prop] = float(value)
        return bool(ok)

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def grab(self) -> bool:
        """Dequeue a frame without decoding it (cv2.VideoCapture.grab)."""
        ok, _ = self.read(decode=False)
        return ok

    def read(self, decode: bool = True) -> tuple[bool, np.ndarray | None]:
        if not (self.opened and self.plugged):
            return False, None
        self.decoded += decode
        self.grabbed += not decode
        self.due += 1 / self.props[cv2.CAP_PROP_FPS]
        time.sleep(max(0.0, self.due - time.monotonic()))  # the driver's blocking wait for the next frame
        ok, img = self.file.read()
        if not ok:  # a camera never ends
            self.file.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, img = self.file.read()
        size = (int(self.props[cv2.CAP_PROP_FRAME_WIDTH]), int(self.props[cv2.CAP_PROP_FRAME_HEIGHT]))
        img = cv2.resize(img, size) if size != img.shape[1::-1] else img
        if self.props[cv2.CAP_PROP_CONVERT_RGB] == 0 and fourcc_text(self.props[cv2.CAP_PROP_FOURCC]) == "MJPG":
            if self.corrupt:  # the driver's buffer as OpenCV hands it over unconverted: 1 x N bytes
                self.corrupt -= 1
                return True, np.frombuffer(b"\xff\xd8" + bytes(range(200)), np.uint8).reshape(1, -1)
            return True, cv2.imencode(".jpg", img)[1].reshape(1, -1)
        return True, img

    def release(self) -> None:
        self.opened = False
        if self.file is not None:
            self.file.release()


def cam_cfg(source, **kw) -> CameraConfig:
    return CameraConfig(name=kw.pop("name", "door"), source=source, **kw)


def fake_v4l2_source(video: Path, device_fps: float = 60.0, **kw) -> tuple[V4L2Source, FakeV4L2]:
    dev = FakeV4L2(video, device_fps)
    return V4L2Source(cam_cfg("/dev/video0", **kw), "/dev/video0", capture_factory=dev), dev


def started(cfg: CameraConfig, rate_hz: float | None = None, source=None) -> Camera:
    cam = Camera(cfg, rate_hz, source=source)
    cam.open()
    cam.start()
    return cam


def drain(cam: Camera) -> list:
    """Every frame until the source ends (get returns None)."""
    frames = []
    while (f := cam.get(5.0)) is not None:
        frames.append(f)
    return frames


# --- the contract, over every kind in the registry -------------------------------------------------------
CASES = ["file-mp4v", "file-MJPG", "url", "synthetic", "v4l2", "gstreamer"]


def make_source(case: str, videos: dict[str, Path], request) -> tuple[object, int | None, tuple[int, int, int]]:
    """(source, frames it holds (None: endless), frame shape)."""
    if case.startswith("file-"):
        return create_source(cam_cfg(str(videos[case[5:]]))), N_FRAMES, (H, W, 3)
    if case == "url":
        return create_source(cam_cfg(request.getfixturevalue("http_url"))), None, (H, W, 3)
    if case == "synthetic":
        return create_source(cam_cfg("synthetic", width=320, height=240)), None, (240, 320, 3)
    if case == "v4l2":
        return fake_v4l2_source(videos["MJPG"], 200.0, fourcc="MJPG", width=320, height=240)[0], None, (240, 320, 3)
    if not HAS_GST:
        pytest.skip("this OpenCV has no GStreamer")
    pipeline = "gst: videotestsrc num-buffers=100 ! video/x-raw,width=320,height=240 ! videoconvert ! appsink"
    return create_source(cam_cfg(pipeline)), None, (240, 320, 3)


def test_every_registered_kind_has_a_contract_case():
    assert {c.split("-")[0] for c in CASES} == set(SOURCES)


@pytest.mark.parametrize("case", CASES)
def test_contract(case, videos, request):
    src, total, shape = make_source(case, videos, request)
    assert src.kind == case.split("-")[0]
    src.open()
    assert src.fps > 0
    frames, prev = 0, None
    while total is not None or frames < 20:
        img = src.read()
        if img is None:
            break
        assert img.dtype == np.uint8 and img.shape == shape and img.flags.c_contiguous
        assert prev is None or not np.shares_memory(img, prev)  # a fresh array per frame
        prev, frames = img, frames + 1
    if total is not None:
        assert frames == total and src.read() is None and frame_number(prev) == N_FRAMES - 1
    src.close()
    src.close()
    with pytest.raises(CaptureError, match="not open"):
        src.read()
    # the same kind run by a Camera
    cam = Camera(src.cfg, None, source=make_source(case, videos, request)[0])
    assert cam.state == "stopped"
    cam.open()
    assert cam.state == "online"
    cam.start()
    got = [cam.get(5.0) for _ in range(5)]
    assert all(f is not None and f.image.shape == shape for f in got)
    assert [f.gap for f in got] == [True, False, False, False, False]
    assert all(b.index > a.index and b.ts >= a.ts for a, b in zip(got, got[1:], strict=False))
    t = time.monotonic()
    cam.stop()
    assert time.monotonic() - t < 1.0 and cam.state == "stopped" and cam.error is None


# --- files ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fourcc", ["mp4v", "MJPG"])
def test_file_passes_every_kth_frame_losslessly_and_ends(videos, fourcc):
    cam = started(cam_cfg(str(videos[fourcc])), rate_hz=10.0)  # 30 fps file -> every 3rd
    assert isinstance(cam.source, FileSource) and not cam.source.live and not cam.source.paced
    frames = drain(cam)
    assert cam.step == 3 and [f.index for f in frames] == list(range(0, N_FRAMES, 3))
    assert [frame_number(f.image) for f in frames] == [f.index for f in frames]  # the frames they claim to be
    assert [f.gap for f in frames] == [True] + [False] * (len(frames) - 1)
    assert [round((f.ts - frames[0].ts) * FPS) for f in frames] == [f.index for f in frames]
    s = cam.stats()
    assert cam.ended and s["state"] == "ended" and s["skipped"] == 0
    assert s["frames_read"] == N_FRAMES and s["frames_passed"] == len(frames)
    assert cam.get(0.0) is None
    cam.stop()
    assert cam.ended


def test_file_loop_wraps_with_a_gap(videos):
    cam = started(cam_cfg(str(videos["MJPG"]), loop=True))
    frames = [cam.get(5.0) for _ in range(2 * N_FRAMES + 10)]
    cam.stop()
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [f.index for f in frames if f.gap] == [0, N_FRAMES, 2 * N_FRAMES]
    assert [frame_number(f.image) for f in frames] == [f.index % N_FRAMES for f in frames]
    assert all(b.ts > a.ts for a, b in zip(frames, frames[1:], strict=False))  # time runs on across the wrap
    assert not cam.ended


def test_realtime_file_is_paced_at_its_fps(videos):
    src = create_source(cam_cfg(str(videos["MJPG"]), realtime=True))
    assert src.live and src.paced
    cam = Camera(src.cfg, None, source=src)
    cam.open()
    t = time.monotonic()
    cam.start()
    for _ in range(15):
        assert cam.get(5.0) is not None
    elapsed = time.monotonic() - t
    cam.stop()
    assert elapsed >= 0.4  # 15 frames at 30 fps: 14/30 s at least (a lower bound only)


def test_missing_or_corrupt_file_is_one_input_error_line(tmp_path):
    with pytest.raises(InputError) as e:
        Camera(cam_cfg(str(tmp_path / "nope.mp4")), None).open()
    assert e.value.exit_code == EX_NOINPUT
    assert str(e.value) == f"camera door: {tmp_path / 'nope.mp4'}: no such file"
    bad = tmp_path / "bad.mp4"  # random bytes
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError) as e:
        create_source(cam_cfg(str(bad))).open()
    assert str(e.value) == f"camera door: {bad}: cannot be opened (not a video OpenCV can decode)"


def test_a_file_not_there_yet_is_waited_for_and_read_from_its_first_frame_when_it_appears(tmp_path, videos):
    """at_start: retry (the default): open_or_wait() says why it waits, the state is 'waiting' (not a
    reconnect), and once the file appears the camera reads it from frame 0, lossless, with a gap."""
    path = tmp_path / "mount" / "late.avi"  # its folder is missing too, as a stick not mounted yet
    cam = Camera(cam_cfg(str(path), reconnect={"initial_s": 0.05, "max_s": 0.1}), None)
    why = cam.open_or_wait()
    assert why == (f"camera door: {path}: no such file; waiting for it (at_start: retry), opening it with "
                   f"backoff 0.05..0.1 s while the rest runs")
    cam.start()
    try:
        assert cam.state == "waiting" and cam.get(0.2) is None and not cam.ended
        path.parent.mkdir()
        path.write_bytes(videos["MJPG"].read_bytes())
        frames = drain(cam)
        assert [f.index for f in frames] == list(range(N_FRAMES)) and frames[0].gap
        assert [frame_number(f.image) for f in frames[:3]] == [0, 1, 2]
        assert cam.stats()["reconnects"] == 0 and cam.state == "ended"
    finally:
        cam.stop()


def test_what_waiting_cannot_mend_still_fails_at_start(tmp_path, videos):
    """require fails as open() does; with retry so does a path that cannot work (through a file, not a
    video, a V4L2 node that is not a capture device); a reload's handover (``why``) waits for anything."""
    with pytest.raises(InputError, match="no such file"):
        Camera(cam_cfg(str(tmp_path / "nope.avi"), at_start="require"), None).open_or_wait()
    (tmp_path / "afile").write_text("x")
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video" * 1000)
    for path in (tmp_path / "afile" / "x.avi", bad):
        with pytest.raises(InputError):
            Camera(cam_cfg(str(path)), None).open_or_wait()
        cam = Camera(cam_cfg(str(path)), None)
        assert "waiting for it (handed over at a reload)" in cam.open_or_wait("handed over at a reload")
        assert cam.state == "waiting"
        cam.stop()
    cam = Camera(cam_cfg("/dev/video99"), None)  # the real V4L2 backend: no such node here, so it may come
    assert "cannot open (no such device); waiting for it" in cam.open_or_wait()
    cam.stop()
    with pytest.raises(CaptureError, match="not a V4L2 capture device"):  # a node that is there but no camera
        Camera(cam_cfg("/dev/null", type="v4l2"), None).open_or_wait()


def test_a_v4l2_camera_plugged_in_after_start_delivers_without_a_reconnect(videos):
    src, dev = fake_v4l2_source(videos["MJPG"], reconnect={"initial_s": 0.05, "max_s": 0.1})
    dev.unplug()  # not there at start
    cam = Camera(src.cfg, None, source=src)
    assert "waiting for it (at_start: retry)" in cam.open_or_wait()
    cam.start()
    try:
        assert dev.wait_failed_opens(2)
        assert cam.state == "waiting"
        dev.unplug(plugged=True)
        wait_until(lambda: cam.get(0.1) is not None, timeout=5, what="a frame once the camera is plugged in")
        assert cam.state == "online" and cam.stats()["reconnects"] == 0
    finally:
        cam.stop()


def test_truncated_file_ends_cleanly_with_a_warning(tmp_path, videos, caplog):
    data = videos["MJPG"].read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    cam = started(cam_cfg(str(cut)))
    frames = drain(cam)
    cam.stop()
    assert cam.ended and cam.error is None
    assert 10 < len(frames) < N_FRAMES
    assert [frame_number(f.image) for f in frames] == list(range(len(frames)))
    assert any("truncated or damaged" in r.message and r.levelno == logging.WARNING for r in caplog.records)


# --- live sources -----------------------------------------------------------------------------------
@pytest.mark.parametrize("setting, size, need, scale", [
    ("auto", (640, 480), (0, 0, 112), 4),      # 160x120 still covers a 112 short side
    ("auto", (640, 480), (0, 0, 224), 2),
    ("auto", (640, 480), (320, 0, 112), 2),    # field clips 320 wide
    ("auto", (1920, 1080), (0, 0, 112), 8),    # 240x135
    ("auto", (642, 482), (0, 0, 121), 4),      # the decoder rounds up: 161x121 at 1/4
    ("auto", (642, 482), (0, 0, 122), 2),
    ("auto", (640, 480), (0, 0, 0), 1),        # nothing known of the need: full size
    ("auto", (320, 240), (224, 224, 0), 1),    # a stretch input bigger than half the frame
    (2, (640, 480), (0, 0, 400), 2),           # a number is taken as given (and warned about by the source)
    (1, (1920, 1080), (0, 0, 112), 1),
])
def test_decode_scale_choice(setting, size, need, scale):
    assert pick_scale(setting, size, need) == scale


def test_mjpg_file_is_decoded_at_the_size_the_model_needs_losslessly(videos, caplog):
    caplog.set_level(logging.INFO, logger="edge.capture")
    for setting, need, scale in (("auto", (0, 0, 112), 4), ("auto", (320, 0, 112), 2), (1, (0, 0, 112), 1)):
        src = FileSource(cam_cfg(str(videos["MJPG"]), decode_scale=setting), videos["MJPG"])
        src.need = need
        src.open()
        frames = []
        while (img := src.read()) is not None:
            frames.append(img)
            src.skip()  # grabbed, not decoded, still counted
        src.close()
        assert src.scale == scale and frames[0].shape == (H // scale, W // scale, 3)
        assert [frame_number(f, scale) for f in frames] == list(range(0, N_FRAMES, 2))
    assert "camera door: " + str(videos["MJPG"]) + ": MJPG 640x480 decoded at 1/4 (160x120) in the JPEG decoder" \
        in caplog.messages


def test_a_decode_scale_too_small_for_the_model_is_taken_with_a_warning(videos, caplog):
    src = FileSource(cam_cfg(str(videos["MJPG"]), decode_scale=8), videos["MJPG"])
    src.need = (0, 0, 112)
    src.open()
    img = src.read()
    src.close()
    assert src.scale == 8 and img.shape == (60, 80, 3)
    assert any("decode_scale 8 gives 80x60 frames, smaller than needed for the model's input and the clips "
               "(at least short side 112): they are scaled up" in r.message for r in caplog.records
               if r.levelno == logging.WARNING)


def test_decode_scale_on_another_codec_decodes_in_full_with_one_warning(videos, caplog):
    src = FileSource(cam_cfg(str(videos["mp4v"]), decode_scale=4), videos["mp4v"])
    src.need = (0, 0, 112)
    src.open()
    img = src.read()
    src.open()  # a reopen (loop, reconnect) does not repeat it
    src.close()
    assert src.scale == 1 and img.shape == (H, W, 3)
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "decode_scale 4 applies to MJPG only; this source is" in warnings[0]


def test_v4l2_mjpg_packets_are_decoded_reduced_and_bad_ones_skipped(videos, caplog):
    """The driver's MJPG buffer is taken unconverted (CONVERT_RGB off) and decoded at 1/2; packets that
    do not decode are skipped and counted; a run of them is a read failure (the camera is reopened)."""
    src, dev = fake_v4l2_source(videos["MJPG"], device_fps=600.0, fourcc="MJPG")
    src.need = (0, 0, 224)
    src.open()
    assert (cv2.CAP_PROP_CONVERT_RGB, 0) in dev.sets and src.scale == 2
    first = src.read()
    dev.corrupt = 3
    after = src.read()
    assert first.shape == after.shape == (240, 320, 3)
    assert frame_number(after, 2) == (frame_number(first, 2) + 4) % N_FRAMES  # three bad packets skipped
    assert "camera door: /dev/video0: 1 undecodable MJPG frame(s) so far (skipped)" in caplog.messages
    dev.corrupt = 100
    with pytest.raises(CaptureError, match="camera door: /dev/video0: read failed"):
        src.read()
    src.close()


def test_frames_the_model_skips_are_grabbed_not_decoded(videos):
    """60 fps camera, model at 15 fps: 3 frames in 4 are only grabbed (a V4L2 MJPG camera skips the
    JPEG decode); the ones passed are every 4th; with a tap (field clips) every frame is decoded."""
    src, dev = fake_v4l2_source(videos["MJPG"], device_fps=60.0)
    cam = started(src.cfg, rate_hz=15.0, source=src)
    got = [cam.get(5.0) for _ in range(8)]
    cam.stop()
    assert all(f.index % 4 == 0 for f in got)
    assert dev.grabbed >= 2 * dev.decoded and dev.decoded >= 8
    assert cam.stats()["frames_read"] >= dev.decoded + dev.grabbed - 1
    src, dev = fake_v4l2_source(videos["MJPG"], device_fps=60.0)
    cam = Camera(src.cfg, 15.0, source=src)
    seen = []
    cam.tap = lambda img, ts, gap, index: seen.append(index)
    cam.open()
    cam.start()
    got = [cam.get(5.0) for _ in range(4)]
    cam.stop()
    assert dev.grabbed == 0 and len(seen) >= 13 and seen[:13] == list(range(13))


def test_file_frames_skipped_by_grab_keep_their_numbers(videos):
    """A file read losslessly with a step: the frames passed carry their frame numbers in the file."""
    cfg = cam_cfg(str(videos["MJPG"]))
    cam = started(cfg, rate_hz=5.0, source=FileSource(cfg, str(videos["MJPG"])))
    frames = drain(cam)
    assert cam.step > 1 and [f.index for f in frames] == list(range(0, cam.stats()["frames_read"], cam.step))


def test_slow_consumer_gets_the_newest_frame_never_a_backlog(videos):
    src, _ = fake_v4l2_source(videos["MJPG"], device_fps=100.0)
    cam = started(src.cfg, source=src)
    work, got = threading.Event(), []
    for _ in range(5):
        work.wait(0.08)  # the consumer is busy for 8 frame times
        before = cam.stats()["frames_read"]
        f = cam.get(5.0)
        assert f.index >= before - 1  # the newest frame read when the consumer asked, not an old one
        got.append(f)
    s = cam.stats()
    cam.stop()
    assert all(b.index - a.index >= 3 for a, b in zip(got, got[1:], strict=False)) and s["skipped"] >= 10
    assert s["frames_passed"] - len(got) - s["skipped"] <= 1  # at most the one latest frame waiting


def test_v4l2_settings_go_through_set_in_order_and_refusals_warn(videos, caplog):
    src, dev = fake_v4l2_source(videos["MJPG"], fourcc="MJPG", width=320, height=240, fps=30.0)
    caplog.set_level(logging.INFO, logger="edge.capture")
    src.open()
    img = src.read()
    src.close()
    assert dev.opens == [("/dev/video0", cv2.CAP_V4L2)]
    assert [p for p, _ in dev.sets] == [cv2.CAP_PROP_FOURCC, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT,
                                        cv2.CAP_PROP_FPS]
    assert fourcc_text(dev.sets[0][1]) == "MJPG" and img.shape == (240, 320, 3) and src.fps == 30.0
    assert "camera door: /dev/video0 320x240 MJPG 30 fps" in caplog.messages
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)
    refused, _ = fake_v4l2_source(videos["MJPG"], fourcc="H264", width=1280, height=720)
    refused.open()
    refused.close()
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["camera door: /dev/video0: the driver did not accept size 1280x720 (got 640x480), "
                        "format H264 (got YUYV)"]


def test_v4l2_unplug_and_replug_reconnects(videos, caplog):
    caplog.set_level(logging.DEBUG, logger="edge.capture")
    src, dev = fake_v4l2_source(videos["MJPG"], reconnect={"initial_s": 0.02, "max_s": 0.1})
    cam = started(src.cfg, source=src)
    assert cam.get(5.0).gap and not cam.get(5.0).gap
    dev.unplug()
    assert dev.wait_failed_opens(3)
    assert cam.state == "reconnecting" and cam.stats()["reconnects"] == 0
    dev.unplug(plugged=True)  # and back in
    while not cam.get(5.0).gap:  # frames read before the unplug may still be waiting
        pass
    s = cam.stats()
    cam.stop()
    assert s["state"] == "online" and s["reconnects"] == 1
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "read failed; reconnecting" in warnings[0] and "reconnected" in warnings[1]
    retries = [r for r in caplog.records if "reconnect attempt" in r.message]
    assert len(retries) >= 3 and all(r.levelno == logging.DEBUG for r in retries)


def test_stop_is_prompt_while_waiting(videos):
    src, dev = fake_v4l2_source(videos["MJPG"], reconnect={"initial_s": 30.0, "max_s": 60.0})
    live = started(src.cfg, source=src)
    dev.unplug()
    files = started(cam_cfg(str(videos["MJPG"])))  # lossless, and nobody takes its frames
    wait_until(lambda: live.state == "reconnecting" and files.stats()["frames_passed"] == 2, timeout=5)
    for cam in (live, files):
        t = time.monotonic()
        cam.stop()
        assert time.monotonic() - t < 1.0 and cam.state == "stopped"


def test_unavailable_devices_are_exit_69_naming_the_device():
    with pytest.raises(CaptureError) as e:  # the real cv2 V4L2 backend; no such device here
        Camera(cam_cfg("/dev/video99"), None).open()
    assert e.value.exit_code == EX_UNAVAILABLE
    assert str(e.value) == "camera door: /dev/video99: cannot open (no such device)"
    if not HAS_GST:  # a pipeline, and this OpenCV has no GStreamer: say what to install
        with pytest.raises(CaptureError, match="needs OpenCV built with GStreamer.*JetPack OpenCV"):
            create_source(cam_cfg("gst: v4l2src ! videoconvert ! appsink")).open()


def test_url_is_live_and_redacted():
    src = create_source(cam_cfg("rtsp://admin:hunter2@10.0.0.5/stream"))
    assert isinstance(src, UrlSource) and src.live and "hunter2" not in src.where
    assert redact_url("http://host:8080/x") == "http://host:8080/x"
    assert redact_url("rtsp://u:p@h:554/s") == "rtsp://u:***@h:554/s"


# --- synthetic --------------------------------------------------------------------------------------
def test_synthetic_cycles_the_motions_deterministically_and_checks_labels():
    a, b = (create_source(cam_cfg("synthetic", width=160, height=120)) for _ in range(2))
    a.open(), b.open()
    shown = []
    for _ in range(STILL_FRAMES + 1):
        img = a.read()
        shown.append(a.showing)
        assert np.array_equal(img, b.read())
    assert shown == ["no_motion"] * STILL_FRAMES + [MOTIONS[0]]
    assert not a.live and not a.paced
    one = create_source(cam_cfg("synthetic:zoom_in", fps=30.0, realtime=True))
    one.open()
    assert one.read().shape == (480, 640, 3) and one.showing == "zoom_in" and one.fps == 30.0 and one.live
    with pytest.raises(CaptureError, match=r"camera door: unknown synthetic label 'wave' \(known: no_motion, "):
        create_source(cam_cfg("synthetic:wave"))
