"""``edge-tsm install-service``: the systemd unit for this environment, its drop-ins, its groups, a config.

What it writes (under ``--root``, an image being built or a test; ``--dry-run`` prints it instead):

* the unit ``systemd/edge-tsm.service``: ``ExecStart`` is the edge-tsm of the running environment (a
  venv); ``--user`` runs it as that account instead of a dynamic user;
* drop-ins: ``jetson.conf`` on a Jetson; ``network.conf`` for an MQTT sink or a ``metrics.listen``
  beyond loopback; ``metrics.conf`` for a ``metrics.listen`` on loopback (the unit's private network
  namespace would hide it from the host's Prometheus); ``home.conf`` (``ProtectHome=read-only``) when
  edge-tsm runs from under /home, /root or /run/user, which ``ProtectHome=yes`` hides from the service;
* ``/etc/sysusers.d/edge-tsm.conf``: the groups the unit joins that a stock system may lack (``edge-tsm``,
  ``gpio``; a unit whose SupplementaryGroups= names a missing group does not start), created at once with
  ``systemd-sysusers`` (or ``groupadd``), and by systemd-sysusers at the first boot of an image;
* a default config, ``0640 root:edge-tsm``: the service reads it through ``SupplementaryGroups=edge-tsm``
  (also after ``systemctl reload``, which a ``LoadCredential=`` copy would not follow), nobody else can.
  An existing config is kept; one the service could not read is reported with the command that fixes it.

Refused (exit 77, with the fix): the service's user could not reach the executable, the interpreter or
the installed package (a venv under /root, mode 0700): install into e.g. /opt/edge-tsm instead.
"""
from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EX_NOPERM, NoPermission, UsageError
from edge.sinks.gpio_lines import is_jetson
from edge.util import atomic_write

logger = logging.getLogger(__name__)

UNIT_NAME = "edge-tsm.service"
GROUP = "edge-tsm"                                  # reads the config; joined by the unit
HOMES = (Path("/home"), Path("/root"), Path("/run/user"))  # what ProtectHome=yes hides
PermissionDenied = NoPermission                     # the older name (exit 77)
__all__ = ["EX_NOPERM", "GROUP", "UNIT_NAME", "PlannedFile", "install", "next_steps", "plan", "render_unit"]

DEFAULT_CONFIG_TEXT = """\
# edge-tsm configuration (edge-tsm config --schema lists every key; edge-tsm check validates this file).
# Readable by the service through the edge-tsm group (mode 0640 root:edge-tsm); keep it so after editing.
model: default                  # the embedded model, or a bundle folder
engine: {type: onnxruntime, device: CPU}   # threads unset: 1 on CPU, the other cores left to the cameras
cameras:
  - {name: cam0, source: /dev/video0, width: 640, height: 480, fps: 30, fourcc: MJPG}
sinks:
  - {type: stdout}              # the journal: journalctl -u edge-tsm
  - {type: log, path: /var/lib/edge-tsm/events.jsonl}
"""


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    text: str
    mode: int = 0o644
    keep_existing: bool = False   # a config the user may have edited is never overwritten
    group: str | None = None      # owned by root:<group> once written (the config)
    sysusers: bool = False        # a sysusers.d file: its groups are created right after it is written


def template(name: str) -> str:
    import edge.systemd
    return (Path(edge.systemd.__file__).parent / name).read_text(encoding="utf-8")


def _script() -> Path:
    return Path(sys.executable).parent / "edge-tsm"


def exec_start(config: Path) -> str:
    """The command systemd runs: this environment's edge-tsm script, else ``python -m edge``."""
    script = _script()
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "edge"]
    return shlex.join([*cmd, "run", "--config", str(config)])


def service_paths() -> list[Path]:
    """What the service must reach to start: the ExecStart program, the real interpreter, the standard
    library and the installed edge package."""
    out = [_script()] if _script().is_file() else []
    out += [Path(os.path.realpath(sys.executable)), Path(os.__file__).parent, Path(__file__).parent]
    return out


def render_unit(config: Path, user: str | None = None) -> str:
    text = template(UNIT_NAME)
    text = re.sub(r"^ExecStart=.*$", lambda _: f"ExecStart={exec_start(config)}", text, flags=re.M)
    if user:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
            raise UsageError(f"--user {user!r}: not a valid user name (lower-case letters, digits, '_', '-')")
        text = re.sub(r"^DynamicUser=yes$", f"User={user}", text, flags=re.M)
    return text


# --- what the config asks of the unit ---------------------------------------------------------------------
def _config_data(config: Path) -> dict:
    from edge.config import parse_yaml
    try:
        data = parse_yaml(config.read_text(encoding="utf-8"), "config")
    except Exception:  # noqa: BLE001 - a broken or missing config: `check` says why; no drop-in then
        return {}
    return data if isinstance(data, dict) else {}


def network_needs(data: dict) -> str | None:
    """``network`` (any address: an MQTT broker, a metrics.listen beyond loopback), ``loopback`` (a
    metrics.listen on 127.0.0.1 or ::1) or None (Unix sockets only, as the unit has it)."""
    from edge.config import is_loopback, listen_address
    sinks = data.get("sinks")
    if isinstance(sinks, list) and any(isinstance(s, dict) and s.get("type") == "mqtt" for s in sinks):
        return "network"
    metrics = data.get("metrics")
    listen = metrics.get("listen") if isinstance(metrics, dict) else None
    if not isinstance(listen, str):
        return None
    try:
        host, _ = listen_address(listen)
    except ValueError:
        return None  # `check` refuses it
    return "loopback" if is_loopback(host) else "network"


# --- can the service reach its program? ----------------------------------------------------------------
def under_home(paths: list[Path], homes: tuple[Path, ...] = HOMES) -> list[Path]:
    return [p for p in paths if any(p == h or h in p.parents for h in homes)]


def _allowed(st: os.stat_result, uid: int | None, gids: set[int], bits: int) -> bool:
    """Whether a user (uid None: a dynamic one, owner of nothing) in ``gids`` has ``bits`` (r=4, x=1)."""
    if uid == 0:
        return True
    shift = 6 if uid is not None and st.st_uid == uid else 3 if st.st_gid in gids else 0
    return (st.st_mode >> shift) & bits == bits


def unreachable(paths: list[Path], uid: int | None, gids: set[int]) -> tuple[Path, Path] | None:
    """The first (path, folder or file in the way) the user cannot reach: every folder above needs x, the
    path itself r (a folder also x); None when all can be reached (a missing path is not checked)."""
    for path in paths:
        if not path.exists():
            continue
        for folder in reversed([*path.parents]):
            if not _allowed(folder.stat(), uid, gids, 1):
                return path, folder
        if not _allowed(path.stat(), uid, gids, 5 if path.is_dir() else 4):
            return path, path
    return None


def _gids(names: list[str]) -> set[int]:
    out = set()
    for n in names:
        try:
            out.add(grp.getgrnam(n).gr_gid)
        except KeyError:
            pass
    return out


def _check_reach(unit: str, user: str | None, paths: list[Path]) -> None:
    """Raises NoPermission when the service's user could not reach ``paths``."""
    groups = (re.search(r"^SupplementaryGroups=(.*)$", unit, re.M) or [None, ""])[1].split() + [GROUP]
    if user:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            logger.warning("--user %s: no such user here; cannot check that it reaches %s", user, paths[0])
            return
        uid, gids = pw.pw_uid, _gids(groups) | set(os.getgrouplist(user, pw.pw_gid))
    else:
        uid, gids = None, _gids(groups)
    blocked = unreachable(paths, uid, gids)
    if blocked is None:
        return
    path, where = blocked
    who = f"user {user}" if user else "the unit's dynamic user"
    raise NoPermission(
        f"install-service: {who} cannot reach {path}: {where} is mode {stat.S_IMODE(where.stat().st_mode):04o} "
        f"(owner {where.owner()}); install edge-tsm where the service can read it, e.g. python3 -m venv "
        f"/opt/edge-tsm && /opt/edge-tsm/bin/pip install edge-tsm && sudo /opt/edge-tsm/bin/edge-tsm install-service")


# --- the plan -----------------------------------------------------------------------------------------------
def plan(config: Path, *, user: str | None = None, root: Path = Path("/"), unit_dir: str = "etc/systemd/system",
         jetson: bool | None = None, network: bool | None = None,
         program: list[Path] | None = None, homes: tuple[Path, ...] = HOMES) -> list[PlannedFile]:
    """The files install-service writes (paths under ``root``); the config comes last.

    ``program``: the paths the service must reach (default :func:`service_paths`); ``homes``: the folders
    ProtectHome= hides (tests move both).

    Raises:
        UsageError: a bad ``--user`` name.
        NoPermission: the service's user could not reach ``program`` (exit 77).
    """
    jetson = is_jetson(root) if jetson is None else jetson
    cfg_on_disk = root / str(config).lstrip("/")
    needs = "network" if network else network_needs(_config_data(cfg_on_disk))
    units = root / unit_dir
    dropins = units / f"{UNIT_NAME}.d"
    unit = render_unit(config, user)
    program = service_paths() if program is None else program
    _check_reach(unit, user, program)
    files = [PlannedFile(units / UNIT_NAME, unit)]
    home = under_home(program, homes)
    if home:
        logger.warning("edge-tsm runs from %s, under a home folder the unit's ProtectHome=yes hides: adding "
                       "home.conf (ProtectHome=read-only); better, install it outside home folders (e.g. "
                       "/opt/edge-tsm)", home[0])
        files.append(PlannedFile(dropins / "home.conf", template("home.conf")))
    if jetson:
        files.append(PlannedFile(dropins / "jetson.conf", template("jetson.conf")))
        files.append(PlannedFile(root / "etc/udev/rules.d/99-edge-tsm-gpio.rules", template("99-edge-tsm-gpio.rules")))
    if needs == "network":
        files.append(PlannedFile(dropins / "network.conf", template("network.conf")))
    elif needs == "loopback":
        files.append(PlannedFile(dropins / "metrics.conf", template("metrics.conf")))
    files.append(PlannedFile(root / "etc/sysusers.d/edge-tsm.conf", template("sysusers.conf"), sysusers=True))
    files.append(PlannedFile(cfg_on_disk, DEFAULT_CONFIG_TEXT, 0o640, keep_existing=True, group=GROUP))
    return files


# --- writing ------------------------------------------------------------------------------------------------
def _group_id(root: Path, name: str) -> int | None:
    """The group's id in ``root``'s /etc/group (the running system's groups when root is /)."""
    if root == Path("/"):
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None
    try:
        for line in (root / "etc/group").read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) >= 3 and parts[0] == name and parts[2].isdigit():
                return int(parts[2])
    except OSError:
        pass
    return None


def _create_groups(conf: Path, root: Path, out) -> None:
    """The sysusers.d file's groups, now: systemd-sysusers (--root for an image), else groupadd on /."""
    tool = shutil.which("systemd-sysusers")
    if tool:
        cmd = [tool, *(() if root == Path("/") else (f"--root={root}",)), str(conf)]
    elif root == Path("/"):
        missing = [g for g in re.findall(r"^g\s+(\S+)", conf.read_text(), re.M) if _group_id(root, g) is None]
        for g in missing:
            _run(["groupadd", "--system", g], out)
        return
    else:
        print(f"# {conf}: no systemd-sysusers here; the image creates its groups at first boot", file=out)
        return
    _run(cmd, out)


def _run(cmd: list[str], out) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise NoPermission(f"install-service: {shlex.join(cmd)}: cannot run ({e.strerror})") from None
    if proc.returncode != 0:
        why = " ".join((proc.stderr or proc.stdout).split())[:300]
        raise NoPermission(f"install-service: {shlex.join(cmd)} failed (exit {proc.returncode}: {why}); "
                           "run as root") from None
    print(f"ran {shlex.join(cmd)}", file=out)


def _give_to_group(f: PlannedFile, root: Path, out, created: bool) -> None:
    """The config: root:<group>, so the service reads it; an existing one the service cannot read is reported."""
    gid = _group_id(root, f.group)
    st = f.path.stat()
    if not created:
        if st.st_mode & 0o004 or (st.st_gid == gid and st.st_mode & 0o040):
            return
        print(f"warning: {f.path} (mode {stat.S_IMODE(st.st_mode):04o}, group {st.st_gid}) is not readable by the "
              f"service; fix: chgrp {f.group} {f.path} && chmod 0640 {f.path}", file=out)
        return
    if gid is None:
        print(f"warning: group {f.group} does not exist (yet), so {f.path} stays root-only; once it does: "
              f"chgrp {f.group} {f.path}", file=out)
        return
    try:
        os.chown(f.path, 0, gid)
    except PermissionError:
        raise NoPermission(f"install-service: {f.path}: cannot give it to group {f.group} (run as root: sudo "
                           f"{Path(sys.argv[0]).name} install-service ...)") from None


def install(files: list[PlannedFile], dry_run: bool = False, out=None) -> list[Path]:
    """Write (or with ``dry_run`` print) the planned files and create their groups; return the paths written.

    Raises:
        NoPermission: a file cannot be written or given to its group, or the groups cannot be created (exit
            77; run as root).
    """
    out = out or sys.stdout
    written = []
    root = _root_of(files)
    for f in files:
        exists = f.path.exists()
        if f.keep_existing and exists:
            print(f"# {f.path}: exists, kept", file=out)
            if f.group and not dry_run:
                _give_to_group(f, root, out, created=False)
            continue
        if dry_run:
            owner = f", root:{f.group}" if f.group else ""
            print(f"# --- {f.path} (mode {f.mode:o}{owner}) ---", file=out)
            print(f.text.rstrip("\n"), file=out)
            continue
        try:
            f.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(f.path, f.text, mode=f.mode)
        except PermissionError:
            raise NoPermission(f"install-service: {f.path}: permission denied (run as root: "
                               f"sudo {Path(sys.argv[0]).name} install-service ...)") from None
        except OSError as e:
            raise NoPermission(f"install-service: {f.path}: cannot write ({e.strerror})") from None
        written.append(f.path)
        print(f"wrote {f.path}", file=out)
        if f.sysusers:
            _create_groups(f.path, root, out)
        if f.group:
            _give_to_group(f, root, out, created=True)
    return written


def _root_of(files: list[PlannedFile]) -> Path:
    """The --root the plan was made for (the sysusers.d file sits at <root>/etc/sysusers.d/)."""
    conf = next((f.path for f in files if f.sysusers), None)
    return conf.parents[2] if conf is not None else Path("/")


def next_steps(files: list[PlannedFile]) -> str:
    steps = ["systemctl daemon-reload"]
    if any(f.path.name.endswith(".rules") for f in files):
        steps.append("udevadm control --reload-rules && udevadm trigger --subsystem-match=gpio")
    cfg = files[-1].path
    steps += [f"edge-tsm check --config {cfg}", "systemctl enable --now edge-tsm",
              "journalctl -u edge-tsm -f"]
    return "then: " + "; ".join(steps)
