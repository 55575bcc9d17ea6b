"""``edge-tsm install-service``: the systemd unit for this environment, its drop-ins, a default config.

The unit template is ``systemd/edge-tsm.service`` (package ``edge.systemd``); only ``ExecStart`` (the
edge-tsm of the running environment, e.g. a venv) and, with ``--user``, the account change. A Jetson
also gets ``jetson.conf`` (GPU nodes, the Argus socket) and the udev rule for the gpio group; a config
with an MQTT sink gets ``network.conf``. ``--root`` writes under another root (an image being built,
or a test); ``--dry-run`` prints what would be written.
"""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError, UsageError
from edge.sinks.gpio_lines import is_jetson
from edge.util import atomic_write

EX_NOPERM = 77
UNIT_NAME = "edge-tsm.service"

DEFAULT_CONFIG_TEXT = """\
# edge-tsm configuration (edge-tsm config --schema lists every key; edge-tsm check validates this file).
model: default                  # the embedded model, or a bundle folder
engine: {type: onnxruntime, device: CPU, threads: 2}
cameras:
  - {name: cam0, source: /dev/video0, width: 640, height: 480, fps: 30, fourcc: MJPG}
sinks:
  - {type: stdout}              # the journal: journalctl -u edge-tsm
  - {type: log, path: /var/lib/edge-tsm/events.jsonl}
"""


class PermissionDenied(EdgeError):
    exit_code = EX_NOPERM


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    text: str
    mode: int = 0o644
    keep_existing: bool = False   # a config the user may have edited is never overwritten


def template(name: str) -> str:
    import edge.systemd
    return (Path(edge.systemd.__file__).parent / name).read_text(encoding="utf-8")


def exec_start(config: Path) -> str:
    """The command systemd runs: this environment's edge-tsm script, else ``python -m edge``."""
    script = Path(sys.executable).parent / "edge-tsm"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "edge"]
    return shlex.join([*cmd, "run", "--config", str(config)])


def render_unit(config: Path, user: str | None = None) -> str:
    text = template(UNIT_NAME)
    text = re.sub(r"^ExecStart=.*$", lambda _: f"ExecStart={exec_start(config)}", text, flags=re.M)
    if user:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
            raise UsageError(f"--user {user!r}: not a valid user name (lower-case letters, digits, '_', '-')")
        text = re.sub(r"^DynamicUser=yes$", f"User={user}", text, flags=re.M)
    return text


def _config_has_mqtt(config: Path) -> bool:
    try:
        import yaml
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
        return any(isinstance(s, dict) and s.get("type") == "mqtt" for s in (data or {}).get("sinks") or [])
    except Exception:  # noqa: BLE001 - a broken or missing config: `check` says why; no drop-in then
        return False


def plan(config: Path, *, user: str | None = None, root: Path = Path("/"), unit_dir: str = "etc/systemd/system",
         jetson: bool | None = None, network: bool | None = None) -> list[PlannedFile]:
    """The files install-service writes (paths under ``root``)."""
    jetson = is_jetson(root) if jetson is None else jetson
    cfg_on_disk = root / str(config).lstrip("/")
    network = _config_has_mqtt(cfg_on_disk) if network is None else network
    units = root / unit_dir
    files = [PlannedFile(units / UNIT_NAME, render_unit(config, user))]
    if jetson:
        files.append(PlannedFile(units / f"{UNIT_NAME}.d" / "jetson.conf", template("jetson.conf")))
        files.append(PlannedFile(root / "etc/udev/rules.d/99-edge-tsm-gpio.rules", template("99-edge-tsm-gpio.rules")))
    if network:
        files.append(PlannedFile(units / f"{UNIT_NAME}.d" / "network.conf", template("network.conf")))
    files.append(PlannedFile(cfg_on_disk, DEFAULT_CONFIG_TEXT, 0o640, keep_existing=True))
    return files


def install(files: list[PlannedFile], dry_run: bool = False, out=None) -> list[Path]:
    """Write (or with ``dry_run`` print) the planned files; return the paths written.

    Raises:
        PermissionDenied: a file cannot be written (exit 77; run as root).
    """
    out = out or sys.stdout
    written = []
    for f in files:
        exists = f.path.exists()
        if f.keep_existing and exists:
            print(f"# {f.path}: exists, kept", file=out)
            continue
        if dry_run:
            print(f"# --- {f.path} (mode {f.mode:o}) ---", file=out)
            print(f.text.rstrip("\n"), file=out)
            continue
        try:
            f.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(f.path, f.text, mode=f.mode)
        except PermissionError:
            raise PermissionDenied(f"install-service: {f.path}: permission denied (run as root: "
                                   f"sudo {Path(sys.argv[0]).name} install-service ...)") from None
        except OSError as e:
            raise PermissionDenied(f"install-service: {f.path}: cannot write ({e.strerror})") from None
        written.append(f.path)
        print(f"wrote {f.path}", file=out)
    return written


def next_steps(files: list[PlannedFile]) -> str:
    steps = ["systemctl daemon-reload"]
    if any(f.path.name.endswith(".rules") for f in files):
        steps.append("udevadm control --reload-rules && udevadm trigger --subsystem-match=gpio")
    cfg = files[-1].path
    steps += [f"edge-tsm check --config {cfg}", "systemctl enable --now edge-tsm",
              "journalctl -u edge-tsm -f"]
    return "then: " + "; ".join(steps)
