"""``edge-tsm devices``: the real command on this machine (none of the devices exist here), then the
parsing of names, by-id links and labels from a fake /dev + /sys tree built like udev and the kernel
lay them out."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge import devices
from edge.cli import main

V4L2_CTL = """ioctl: VIDIOC_ENUM_FMT
\tType: Video Capture

\t[0]: 'MJPG' (Motion-JPEG, compressed)
\t[1]: 'YUYV' (YUYV 4:2:2)
"""


def test_cli_runs_here_and_says_none_found_per_section():
    run = subprocess.run([sys.executable, "-m", "edge", "devices"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for section in ("cameras:", "serial ports:", "GPIO chips:", "ONNX Runtime", "OpenVINO", "machine:"):
        assert section in out
    if not list(Path("/dev").glob("video*")):
        assert "cameras:\n  none found" in out
    if not list(Path("/dev").glob("gpiochip*")):
        assert "GPIO chips:\n  none found" in out


def test_cli_json_is_one_object_with_engine_versions(capsys):
    assert main(["devices", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"machine", "cameras", "serial", "gpio", "onnxruntime", "openvino"}
    ort = pytest.importorskip("onnxruntime")
    assert report["onnxruntime"]["version"] == ort.__version__
    assert "CPUExecutionProvider" in report["onnxruntime"]["providers"]
    if report["openvino"]["installed"]:
        assert any(d["name"] == "CPU" and d["full_name"] for d in report["openvino"]["devices"])


def link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def touch(path: Path, text: str | bytes = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


@pytest.fixture
def tree(tmp_path) -> Path:
    """A Jetson-like root: two UVC nodes and a CSI one, USB serial adapters, two GPIO chips."""
    r = tmp_path
    for n, (name, index) in {0: ("HD Pro Webcam C920", "0"), 1: ("HD Pro Webcam C920", "1"),
                             10: ("vi-output, imx219 9-0010", "0")}.items():
        touch(r / f"dev/video{n}")
        touch(r / f"sys/class/video4linux/video{n}/name", name + "\n")
        touch(r / f"sys/class/video4linux/video{n}/index", index + "\n")
    link(r / "dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920_ABC-video-index0", "../../video0")
    link(r / "dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920_ABC-video-index1", "../../video1")
    for tty in ("ttyUSB0", "ttyACM0", "ttyTHS1", "ttyS0"):
        touch(r / f"dev/{tty}")
    link(r / "dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0", "../../ttyUSB0")
    link(r / "dev/serial/by-id/usb-Arduino_Uno_7573-if00", "../../ttyACM0")
    link(r / "dev/serial/by-id/usb-stale-if00", "../../ttyUSB7")   # node gone: still listed, as udev left it
    link(r / "sys/class/tty/ttyUSB0/device/driver", "../../../bus/usb-serial/drivers/ftdi_sio")
    for n, (label, ngpio) in {0: ("tegra234-gpio", "164"), 1: ("tegra234-gpio-aon", "32")}.items():
        touch(r / f"dev/gpiochip{n}")
        legacy = r / f"sys/bus/gpio/devices/gpiochip{n}/gpio/gpiochip{300 + n * 200}"
        touch(legacy / "label", label + "\n")
        touch(legacy / "ngpio", ngpio + "\n")
    touch(r / "dev/dri/renderD128")
    touch(r / "proc/device-tree/model", b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    touch(r / "proc/device-tree/compatible", b"nvidia,p3768-0000+p3767-0005\x00nvidia,tegra234\x00")
    touch(r / "etc/nv_tegra_release", "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic\n")
    return r


def test_fake_tree_names_links_labels(tree):
    report = devices.survey(tree, engines=False)
    assert report["cameras"] == [
        {"path": "/dev/video0", "name": "HD Pro Webcam C920", "index": 0,
         "by_id": ["usb-046d_HD_Pro_Webcam_C920_ABC-video-index0"]},
        {"path": "/dev/video1", "name": "HD Pro Webcam C920", "index": 1,
         "by_id": ["usb-046d_HD_Pro_Webcam_C920_ABC-video-index1"]},
        {"path": "/dev/video10", "name": "vi-output, imx219 9-0010", "index": 0, "by_id": []}]
    assert report["serial"] == [
        {"path": "/dev/ttyACM0", "by_id": ["usb-Arduino_Uno_7573-if00"], "driver": None},
        {"path": "/dev/ttyTHS1", "by_id": [], "driver": None},
        {"path": "/dev/ttyUSB0", "by_id": ["usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"], "driver": "ftdi_sio"},
        {"path": "/dev/ttyUSB7", "by_id": ["usb-stale-if00"], "driver": None}]
    assert report["gpio"] == [{"path": "/dev/gpiochip0", "label": "tegra234-gpio", "lines": 164, "via": "sysfs"},
                              {"path": "/dev/gpiochip1", "label": "tegra234-gpio-aon", "lines": 32, "via": "sysfs"}]
    m = report["machine"]
    assert (m["model"], m["jetson"], m["accelerator_nodes"]) == \
        ("NVIDIA Jetson Orin Nano Developer Kit", True, ["/dev/dri/renderD128"])
    assert m["l4t"].startswith("# R36 (release), REVISION: 3.0")
    text = devices.render(report)
    assert "/dev/ttyUSB0  (ftdi_sio)  by-id: usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0" in text
    assert "/dev/gpiochip1  tegra234-gpio-aon, 32 lines" in text
    assert "Jetson, # R36" in text and "ONNX Runtime" not in text


def test_cli_root_json_on_an_empty_tree(tmp_path, capsys):
    assert main(["devices", "--json", "--root", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["cameras"], report["serial"], report["gpio"]) == ([], [], [])
    assert report["machine"]["jetson"] is False and report["machine"]["model"] is None


def test_v4l2_ctl_formats_are_parsed():
    assert devices.parse_v4l2_formats(V4L2_CTL) == ["MJPG", "YUYV"]
    assert devices.parse_v4l2_formats("") == []
