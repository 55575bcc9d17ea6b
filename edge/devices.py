"""``edge-tsm devices``: what this machine offers the daemon, read from /dev and /sys.

Cameras (/dev/video* with their V4L2 names and pixel formats where readable), serial ports
(/dev/serial/by-id links, ttyUSB*, ttyACM*, ttyTHS*), GPIO chips, accelerator device nodes, and the
inference engines' versions and devices. Nothing here fails: a section that finds nothing says
so, and a probe that cannot run says why in its entry. ``root`` points the look-ups at another
tree (tests, a mounted image); with a root other than ``/`` no device is opened.
"""
from __future__ import annotations

import grp
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edge.sinks.gpio_lines import is_jetson

GROUPS = ("video", "dialout", "gpio", "render")
_SERIAL = ("ttyUSB", "ttyACM", "ttyTHS")
_V4L2_FMT = re.compile(r"\[\d+\]:\s+'([^']{1,4})'")


def _numbered(folder: Path, prefix: str) -> list[Path]:
    """``folder/prefixN`` entries in numeric order (``video2`` before ``video10``)."""
    found = [p for p in folder.glob(prefix + "*") if p.name[len(prefix):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(prefix):]))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip("\x00\n ").replace("\x00", " ")
    except OSError:
        return None


def _links_to(folder: Path, target: Path) -> list[str]:
    """Names of the symlinks in ``folder`` that point at ``target`` (udev's by-id / by-path links)."""
    out = []
    for link in sorted(folder.glob("*")) if folder.is_dir() else ():
        try:
            dest = os.readlink(link)
        except OSError:
            continue
        if os.path.normpath(link.parent / dest) == os.path.normpath(target):
            out.append(link.name)
    return out


# --- cameras -----------------------------------------------------------------------------------------
def parse_v4l2_formats(text: str) -> list[str]:
    """Pixel formats from ``v4l2-ctl --list-formats`` output: ``['MJPG', 'YUYV']``."""
    return list(dict.fromkeys(m.strip() for m in _V4L2_FMT.findall(text)))


def _formats(dev: str) -> dict[str, Any]:
    """The device's pixel formats via v4l2-ctl, else its current format via OpenCV's V4L2 backend."""
    tool = shutil.which("v4l2-ctl")
    if tool:
        try:
            run = subprocess.run([tool, "-d", dev, "--list-formats"], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as e:
            return {"error": f"v4l2-ctl: {e}"}
        if run.returncode != 0:
            return {"error": " ".join((run.stderr or run.stdout).split())[:200] or f"v4l2-ctl exit {run.returncode}"}
        return {"formats": parse_v4l2_formats(run.stdout), "via": "v4l2-ctl"}
    try:
        import cv2
    except ImportError:
        return {"error": "neither v4l2-ctl (apt install v4l-utils) nor OpenCV to read formats"}
    from edge.capture.opencv import opencv_quiet
    with opencv_quiet():  # a node that is no capture device (a UVC metadata node): our words, not OpenCV's WARN
        cap = cv2.VideoCapture(dev, cv2.CAP_V4L2)
    try:
        if not cap.isOpened():
            return {"error": "cannot open (busy, no permission, or not a capture node)"}
        code = int(cap.get(cv2.CAP_PROP_FOURCC))
        fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ")
        size = f"{int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
        return {"formats": [fourcc] if fourcc else [], "current": f"{fourcc} {size} {cap.get(cv2.CAP_PROP_FPS):g} fps",
                "via": "opencv (current format only; apt install v4l-utils for all)"}
    finally:
        cap.release()


def cameras(root: Path = Path("/"), probe: bool = True) -> list[dict[str, Any]]:
    """/dev/video* with the V4L2 name, by-id links and (``probe``) pixel formats."""
    out = []
    for node in _numbered(root / "dev", "video"):
        sys_dir = root / "sys/class/video4linux" / node.name
        cam: dict[str, Any] = {"path": f"/dev/{node.name}", "name": _read(sys_dir / "name"),
                               "by_id": _links_to(root / "dev/v4l/by-id", node)}
        index = _read(sys_dir / "index")
        if index is not None and index.isdigit():
            cam["index"] = int(index)  # 0: the capture node of a UVC camera; 1: its metadata node
        if probe:
            cam.update(_formats(str(node)))
        out.append(cam)
    return out


# --- serial ------------------------------------------------------------------------------------------
def serial_ports(root: Path = Path("/")) -> list[dict[str, Any]]:
    """ttyUSB*, ttyACM*, ttyTHS* and whatever /dev/serial/by-id points at, with driver and by-id names."""
    dev = root / "dev"
    nodes = {p.name: p for prefix in _SERIAL for p in _numbered(dev, prefix)}
    by_id = dev / "serial/by-id"
    for link in sorted(by_id.glob("*")) if by_id.is_dir() else ():
        try:
            target = Path(os.path.normpath(link.parent / os.readlink(link)))
        except OSError:
            continue
        nodes.setdefault(target.name, target)
    out = []
    for name in sorted(nodes, key=lambda n: (re.sub(r"\d+$", "", n), int(re.sub(r"^\D*", "", n) or 0))):
        driver = root / "sys/class/tty" / name / "device/driver"
        out.append({"path": f"/dev/{name}", "by_id": _links_to(by_id, nodes[name]),
                    "driver": Path(os.readlink(driver)).name if driver.is_symlink() else None})
    return out


# --- GPIO --------------------------------------------------------------------------------------------
def _gpiod_info(path: str) -> dict[str, Any] | None:
    try:
        import gpiod
    except ImportError:
        return None
    try:
        with gpiod.Chip(path) as chip:
            info = chip.get_info()
    except PermissionError:
        return {"error": "permission denied (the gpio group?)"}
    except OSError as e:
        return {"error": e.strerror or str(e)}
    return {"label": info.label, "lines": info.num_lines, "via": "gpiod"}


def gpio_chips(root: Path = Path("/"), probe: bool = True) -> list[dict[str, Any]]:
    """/dev/gpiochip* with label and line count: from gpiod (``probe``, when installed), else from
    the legacy sysfs entry under /sys/bus/gpio/devices/gpiochipN/gpio/ (kernels with GPIO_SYSFS)."""
    out = []
    for node in _numbered(root / "dev", "gpiochip"):
        chip: dict[str, Any] = {"path": f"/dev/{node.name}"}
        info = _gpiod_info(str(node)) if probe else None
        if info is None or "error" in info:
            for legacy in sorted((root / "sys/bus/gpio/devices" / node.name / "gpio").glob("gpiochip*")):
                ngpio = _read(legacy / "ngpio")
                info = {**(info or {}), "label": _read(legacy / "label"),
                        "lines": int(ngpio) if ngpio and ngpio.isdigit() else None, "via": "sysfs"}
                break
        chip.update(info or {"label": None, "lines": None})
        out.append(chip)
    return out


# --- engines and the machine -------------------------------------------------------------------------
def onnxruntime_info() -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"installed": False, "hint": "pip install 'edge-tsm[onnxruntime]' (on a Jetson: the JetPack wheel)"}
    return {"installed": True, "version": ort.__version__, "providers": list(ort.get_available_providers())}


def openvino_info() -> dict[str, Any]:
    try:
        import openvino as ov
    except ImportError:
        return {"installed": False, "hint": "pip install 'edge-tsm[openvino]'"}
    try:
        core = ov.Core()
        devices = []
        for d in core.available_devices:
            try:
                devices.append({"name": d, "full_name": str(core.get_property(d, "FULL_DEVICE_NAME"))})
            except Exception as e:  # noqa: BLE001 - a plugin's error must not hide the others
                devices.append({"name": d, "error": " ".join(str(e).split())[:200]})
    except Exception as e:  # noqa: BLE001 - a broken install is reported, not raised
        return {"installed": True, "version": ov.__version__, "error": " ".join(str(e).split())[:200]}
    return {"installed": True, "version": ov.__version__, "devices": devices}


def machine(root: Path = Path("/")) -> dict[str, Any]:
    """Model, architecture, kernel, Jetson or not (with its L4T release line), accelerator nodes, groups."""
    model = _read(root / "proc/device-tree/model") or " ".join(
        filter(None, (_read(root / "sys/class/dmi/id/sys_vendor"), _read(root / "sys/class/dmi/id/product_name"))))
    jetson = is_jetson(root)
    release = _read(root / "etc/nv_tegra_release")
    nodes = [f"/dev/dri/{p.name}" for p in _numbered(root / "dev/dri", "renderD")] + \
        [f"/dev/accel/{p.name}" for p in _numbered(root / "dev/accel", "accel")]
    return {"model": model or None, "arch": platform.machine(), "kernel": platform.release(), "jetson": jetson,
            "l4t": release.splitlines()[0] if jetson and release else None, "accelerator_nodes": nodes,
            "uid": os.geteuid(), "groups": _groups()}


def _groups() -> dict[str, bool | None]:
    """Whether this process is in each device group (None: the group does not exist here)."""
    mine = set(os.getgroups()) | {os.getegid()}
    out: dict[str, bool | None] = {}
    for name in GROUPS:
        try:
            out[name] = grp.getgrnam(name).gr_gid in mine
        except KeyError:
            out[name] = None
    return out


def survey(root: Path = Path("/"), engines: bool = True) -> dict[str, Any]:
    """Everything ``edge-tsm devices`` reports, as one JSON-ready dict."""
    probe = Path(root).resolve() == Path("/")
    report: dict[str, Any] = {"machine": machine(root), "cameras": cameras(root, probe),
                              "serial": serial_ports(root), "gpio": gpio_chips(root, probe)}
    if engines:
        report["onnxruntime"], report["openvino"] = onnxruntime_info(), openvino_info()
    return report


# --- text --------------------------------------------------------------------------------------------
def _join(items: list[str]) -> str:
    return ", ".join(items)


def render(report: dict[str, Any]) -> str:
    """The survey as a few readable lines per section ("none found" for an empty one)."""
    m = report["machine"]
    groups = _join(f"{g} {'yes' if v else 'no' if v is False else '(no such group)'}"
                   for g, v in m["groups"].items())
    lines = [f"machine: {m['model'] or 'unknown model'} ({m['arch']}, Linux {m['kernel']}), "
             + (f"Jetson, {m['l4t']}" if m["jetson"] and m["l4t"] else "Jetson" if m["jetson"] else "not a Jetson"),
             f"groups of this process: {groups}" + (" (root: no group needed)" if m["uid"] == 0 else ""),
             f"accelerator nodes: {_join(m['accelerator_nodes']) or 'none found'}", "cameras:"]
    for c in report["cameras"]:
        fmt = _join(c["formats"]) if c.get("formats") else c.get("error", "")
        lines.append(f"  {c['path']}  {c['name'] or '(no name)'}" + (f"  formats: {fmt}" if fmt else "")
                     + (f"  [{c['current']}]" if c.get("current") else "")
                     + (f"  by-id: {_join(c['by_id'])}" if c["by_id"] else ""))
    lines += ["  none found"] if not report["cameras"] else []
    lines.append("serial ports:")
    for s in report["serial"]:
        lines.append(f"  {s['path']}" + (f"  ({s['driver']})" if s["driver"] else "")
                     + (f"  by-id: {_join(s['by_id'])}" if s["by_id"] else ""))
    lines += ["  none found"] if not report["serial"] else []
    lines.append("GPIO chips:")
    for g in report["gpio"]:
        what = g.get("error") or _join([g["label"] or "(no label)"] + ([f"{g['lines']} lines"] if g["lines"] else []))
        lines.append(f"  {g['path']}  {what}")
    lines += ["  none found"] if not report["gpio"] else []
    for key, title in (("onnxruntime", "ONNX Runtime"), ("openvino", "OpenVINO")):
        e = report.get(key)
        if e is None:
            continue
        if not e["installed"]:
            lines.append(f"{title}: not installed ({e['hint']})")
        elif e.get("error"):
            lines.append(f"{title} {e['version']}: {e['error']}")
        elif key == "onnxruntime":
            lines.append(f"{title} {e['version']}: providers {_join(e['providers'])}")
        else:
            devs = _join(f"{d['name']} ({d.get('full_name') or d.get('error')})" for d in e["devices"])
            lines.append(f"{title} {e['version']}: devices {devs or 'none found'}")
    return "\n".join(lines)
