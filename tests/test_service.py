"""The systemd unit (systemd-analyze verify and security --offline) and ``edge-tsm install-service``."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edge import service
from edge.cli import main
from edge.config import load_config
from edge.service import GROUP, UNIT_NAME, plan, render_unit, template

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None and not os.environ.get("CI"),
                                   reason="systemd-analyze not installed (CI installs it: .ci/apt-packages.txt)")


@pytest.fixture
def program(tmp_path_factory, monkeypatch):
    """A stand-in for this environment's program, where a dynamic user can reach it (a /tmp folder, 0755;
    the real one may sit under /root, which the service cannot enter: tested below). Returns a maker of
    such programs under a chosen folder."""
    base = Path(tempfile.mkdtemp(prefix="edge-tsm-prog-", dir="/tmp"))
    base.chmod(0o755)

    def make(rel: str = "opt/venv/bin/edge-tsm", folder_mode: int = 0o755) -> Path:
        exe = base / rel
        exe.parent.mkdir(parents=True, exist_ok=True)
        for d in [exe.parent, *exe.parent.parents]:
            if d == base:
                break
            d.chmod(folder_mode)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
        return exe
    default = make()
    monkeypatch.setattr(service, "service_paths", lambda: [default])
    yield make
    for d in [base, *base.rglob("*")]:
        if d.is_dir():
            d.chmod(0o755)
    shutil.rmtree(base)


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE or "systemd-analyze", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _unit_dir(tmp_path: Path, dropins: tuple[str, ...] = ()) -> Path:
    unit = tmp_path / UNIT_NAME
    unit.write_text(render_unit(Path("/etc/edge-tsm/config.yaml")))
    if dropins:
        (tmp_path / f"{UNIT_NAME}.d").mkdir()
        for d in dropins:
            (tmp_path / f"{UNIT_NAME}.d" / d).write_text(template(d))
    return unit


def test_exec_start_is_this_environment():
    text = render_unit(Path("/etc/edge-tsm/config.yaml"))
    exec_line = re.search(r"^ExecStart=(.*)$", text, re.M).group(1)
    binary = exec_line.split()[0]
    assert Path(binary).is_file() and Path(binary).parent == Path(sys.executable).parent
    assert exec_line.endswith("run --config /etc/edge-tsm/config.yaml")


@needs_analyze
@pytest.mark.parametrize("dropins", [(), ("jetson.conf",), ("network.conf",), ("metrics.conf",), ("home.conf",),
                                     ("home.conf", "metrics.conf", "jetson.conf")])
def test_unit_verifies_and_is_hardened(tmp_path, dropins):
    unit = _unit_dir(tmp_path, dropins)
    v = _analyze("verify", str(unit), cwd=tmp_path)
    assert v.returncode == 0 and not v.stderr.strip(), v.stderr
    s = _analyze("security", "--offline=true", str(unit), cwd=tmp_path)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", s.stdout)
    assert m, s.stdout[-500:] + s.stderr
    assert float(m.group(1)) <= 2.0


def test_unit_promises():
    text = template(UNIT_NAME)
    for line in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "DevicePolicy=closed", "ProtectSystem=strict",
                 "StateDirectory=edge-tsm", "CacheDirectory=edge-tsm", "ConfigurationDirectory=edge-tsm",
                 "PrivateNetwork=yes", "DeviceAllow=char-video4linux rw", "DeviceAllow=char-gpiochip rw",
                 "CacheDirectoryMode=0700", "ProtectHome=yes"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    groups = re.search(r"^SupplementaryGroups=(.*)$", text, re.M).group(1).split()
    assert GROUP in groups and "gpio" in groups  # both made by the sysusers.d file install-service writes
    assert re.findall(r"^g\s+(\S+)", template("sysusers.conf"), re.M) == [GROUP, "gpio"]


def test_install_service_writes_unit_dropins_and_a_valid_config(tmp_path, capsys, program):
    root = tmp_path / "root"
    assert main(["install-service", "--root", str(root), "--jetson", "--user", "edge"]) == 0
    unit = root / "etc/systemd/system" / UNIT_NAME
    text = unit.read_text()
    assert "User=edge" in text and "DynamicUser=yes" not in text
    assert (root / "etc/systemd/system/edge-tsm.service.d/jetson.conf").is_file()
    assert (root / "etc/udev/rules.d/99-edge-tsm-gpio.rules").read_text().count('GROUP="gpio"') == 1
    cfg = root / "etc/edge-tsm/config.yaml"
    assert load_config(cfg).cameras[0].source == "/dev/video0"
    engine = load_config(cfg).engine  # the documented default (1 thread on CPU) applies: no threads written
    assert engine.threads is None and "threads:" not in cfg.read_text().split("engine:")[1].split("#")[0]
    cfg.write_text(cfg.read_text() + "# edited by the user\n")
    assert main(["install-service", "--root", str(root)]) == 0  # a second run keeps the user's config
    assert cfg.read_text().endswith("# edited by the user\n")
    assert "exists, kept" in capsys.readouterr().out


def test_install_service_mqtt_config_gets_the_network_dropin(tmp_path, program):
    root = tmp_path / "root"
    (root / "etc/edge-tsm").mkdir(parents=True)
    (root / "etc/edge-tsm/config.yaml").write_text("cameras: [{name: c, source: 0}]\nsinks: [{type: mqtt}]\n")
    names = [f.path.name for f in plan(Path("/etc/edge-tsm/config.yaml"), root=root, jetson=False)]
    assert "network.conf" in names and "jetson.conf" not in names


def test_install_service_dry_run_and_errors(tmp_path, capsys, program):
    root = tmp_path / "root"
    assert main(["install-service", "--root", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "ExecStart=" in out and "cameras:" in out and not root.exists()
    assert main(["install-service", "--root", str(root), "--user", "Bad User"]) == 64
    (tmp_path / "file").write_text("")
    assert main(["install-service", "--root", str(tmp_path / "file")]) == 77
    assert "cannot write" in capsys.readouterr().err


def _group_line(root: Path, name: str) -> int | None:
    for line in (root / "etc/group").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == name:
            return int(parts[2])
    return None


needs_sysusers = pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to a group needs root")


@needs_sysusers
@needs_root
def test_config_is_readable_by_the_services_group(tmp_path, capsys, program):
    """The config is 0640 root:edge-tsm, the group exists (made in the image's /etc/group by
    systemd-sysusers --root) and the unit joins it: the dynamic user can read the config, nobody else."""
    root = tmp_path / "root"
    assert main(["install-service", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    gid = _group_line(root, GROUP)
    assert gid is not None and _group_line(root, "gpio") is not None, (root / "etc/group").read_text()
    cfg = root / "etc/edge-tsm/config.yaml"
    st = cfg.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, 0o640)
    assert "ran " in out and "systemd-sysusers" in out
    unit = (root / "etc/systemd/system" / UNIT_NAME).read_text()
    assert GROUP in re.search(r"^SupplementaryGroups=(.*)$", unit, re.M).group(1).split()


@needs_root
def test_an_existing_config_the_service_cannot_read_is_reported_and_kept(tmp_path, capsys, program):
    root = tmp_path / "root"
    cfg = root / "etc/edge-tsm/config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("cameras: [{name: c, source: 0}]\n")
    cfg.chmod(0o640)
    os.chown(cfg, 0, 0)
    assert main(["install-service", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"warning: {cfg} (mode 0640, group 0) is not readable by the service; fix: chgrp {GROUP} {cfg} && " \
           f"chmod 0640 {cfg}" in out
    assert cfg.read_text() == "cameras: [{name: c, source: 0}]\n" and cfg.stat().st_gid == 0
    cfg.chmod(0o644)  # world-readable: nothing to say
    assert main(["install-service", "--root", str(root)]) == 0
    assert "not readable" not in capsys.readouterr().out


@pytest.mark.parametrize("config, dropin", [
    ("sinks: [{type: mqtt, host: broker}]\n", "network.conf"),
    ("metrics: {listen: '127.0.0.1:9108'}\n", "metrics.conf"),
    ("metrics: {listen: '[::1]:9108'}\n", "metrics.conf"),
    ("metrics: {listen: '0.0.0.0:9108', listen_any: true}\n", "network.conf"),
    ("metrics: {listen: '127.0.0.1:9108'}\nsinks: [{type: mqtt, host: broker}]\n", "network.conf"),
    ("metrics: {textfile: /var/lib/x.prom}\n", None),
])
def test_network_dropin_follows_mqtt_and_metrics_listen(tmp_path, config, dropin, program):
    """The unit allows only Unix sockets in a private network namespace: metrics.listen on loopback gets
    metrics.conf (the host's loopback, nothing else), MQTT or a wider listen network.conf."""
    root = tmp_path / "root"
    (root / "etc/edge-tsm").mkdir(parents=True)
    (root / "etc/edge-tsm/config.yaml").write_text("cameras: [{name: c, source: 0}]\n" + config)
    names = {f.path.name for f in plan(Path("/etc/edge-tsm/config.yaml"), root=root, jetson=False)}
    assert {"network.conf", "metrics.conf"} & names == ({dropin} if dropin else set())


def _install_and_verify(root: Path) -> str:
    """The unit install-service wrote, with its drop-ins, through systemd-analyze verify; its text."""
    unit = root / "etc/systemd/system" / UNIT_NAME
    if ANALYZE is not None:
        v = _analyze("verify", str(unit), cwd=root)
        assert v.returncode == 0 and not v.stderr.strip(), v.stderr
    return unit.read_text()


def test_program_under_a_home_folder_gets_protecthome_read_only(tmp_path, caplog, program):
    """ProtectHome=yes hides /home, /root and /run/user: a venv there (reachable, 0755) gets home.conf and a
    warning saying to move it; the written unit and drop-ins verify."""
    exe = program("home/ann/venv/bin/edge-tsm")
    homes = (exe.parents[3],)
    root = tmp_path / "root"
    with caplog.at_level("WARNING", logger="edge.service"):
        files = plan(Path("/etc/edge-tsm/config.yaml"), root=root, jetson=False, program=[exe], homes=homes)
    home = [f for f in files if f.path.name == "home.conf"]
    assert home and "ProtectHome=read-only" in home[0].text
    assert f"edge-tsm runs from {exe}, under a home folder" in caplog.text and "/opt/edge-tsm" in caplog.text
    service.install(files, out=open(os.devnull, "w"))  # noqa: SIM115
    assert (root / "etc/systemd/system/edge-tsm.service.d/home.conf").is_file()
    _install_and_verify(root)
    caplog.clear()
    files = plan(Path("/etc/edge-tsm/config.yaml"), root=root, jetson=False, program=[program()], homes=homes)
    assert "home.conf" not in {f.path.name for f in files} and not caplog.text


def test_program_the_service_cannot_reach_is_refused_with_the_fix(tmp_path, capsys, program, monkeypatch):
    """A venv under a 0700 folder (as /root): the dynamic user cannot start it, ProtectHome or not, so
    install-service refuses in one line, exit 77, saying where to install instead."""
    exe = program("root/venv/bin/edge-tsm")
    locked = exe.parents[2]
    locked.chmod(0o700)
    monkeypatch.setattr(service, "service_paths", lambda: [exe])
    root = tmp_path / "root"
    assert main(["install-service", "--root", str(root)]) == 77
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"edge-tsm: error: install-service: the unit's dynamic user cannot reach {exe}: {locked} is mode "
                   f"0700 (owner {locked.owner()}); install edge-tsm where the service can read it, e.g. python3 -m "
                   "venv /opt/edge-tsm && /opt/edge-tsm/bin/pip install edge-tsm && sudo /opt/edge-tsm/bin/edge-tsm "
                   "install-service"]
    assert not root.exists()
    if os.geteuid() == 0:  # a real account that owns the folder may: --user root
        assert main(["install-service", "--root", str(root), "--user", "root"]) == 0
        assert main(["install-service", "--root", str(root), "--user", "nobody"]) == 77
        assert "user nobody cannot reach" in capsys.readouterr().err


def test_this_environment_is_checked_as_it_is(tmp_path, capsys):
    """No stand-in: the running interpreter and package. Where a dynamic user cannot reach them (this
    checkout under /root) install-service says so (77); elsewhere it writes the unit (0)."""
    paths = service.service_paths()
    blocked = service.unreachable(paths, None, service._gids(["video", "dialout", "gpio", "render", GROUP]))
    code = main(["install-service", "--root", str(tmp_path / "root")])
    err = capsys.readouterr().err
    if blocked:
        assert code == 77 and f"cannot reach {blocked[0]}" in err, err
    else:
        assert code == 0, err


@needs_root
def test_unreachable_reads_owner_group_and_other_bits(program):
    f = program("d/f")
    d = f.parent
    os.chown(d, 1234, 4321)
    d.chmod(0o750)
    f.chmod(0o644)
    assert service.unreachable([f], None, set()) == (f, d)          # others: no x on d
    assert service.unreachable([f], None, {4321}) is None             # the group may
    assert service.unreachable([f], 1234, set()) is None              # the owner may
    assert service.unreachable([f], 0, set()) is None                 # root may
    f.chmod(0o600)
    assert service.unreachable([f], None, {4321}) == (f, f)          # the group may not read f
