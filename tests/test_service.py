"""The systemd unit (systemd-analyze verify and security --offline) and ``edge-tsm install-service``."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main
from edge.config import load_config
from edge.service import UNIT_NAME, plan, render_unit, template

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None and not os.environ.get("CI"),
                                   reason="systemd-analyze not installed (CI installs it: .ci/apt-packages.txt)")


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
@pytest.mark.parametrize("dropins", [(), ("jetson.conf",), ("network.conf",)])
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
                 "PrivateNetwork=yes", "DeviceAllow=char-video4linux rw", "DeviceAllow=char-gpiochip rw"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line


def test_install_service_writes_unit_dropins_and_a_valid_config(tmp_path, capsys):
    root = tmp_path / "root"
    assert main(["install-service", "--root", str(root), "--jetson", "--user", "edge"]) == 0
    unit = root / "etc/systemd/system" / UNIT_NAME
    text = unit.read_text()
    assert "User=edge" in text and "DynamicUser=yes" not in text
    assert (root / "etc/systemd/system/edge-tsm.service.d/jetson.conf").is_file()
    assert (root / "etc/udev/rules.d/99-edge-tsm-gpio.rules").read_text().count('GROUP="gpio"') == 1
    cfg = root / "etc/edge-tsm/config.yaml"
    assert load_config(cfg).cameras[0].source == "/dev/video0"
    cfg.write_text(cfg.read_text() + "# edited by the user\n")
    assert main(["install-service", "--root", str(root)]) == 0  # a second run keeps the user's config
    assert cfg.read_text().endswith("# edited by the user\n")
    assert "exists, kept" in capsys.readouterr().out


def test_install_service_mqtt_config_gets_the_network_dropin(tmp_path):
    root = tmp_path / "root"
    (root / "etc/edge-tsm").mkdir(parents=True)
    (root / "etc/edge-tsm/config.yaml").write_text("cameras: [{name: c, source: 0}]\nsinks: [{type: mqtt}]\n")
    names = [f.path.name for f in plan(Path("/etc/edge-tsm/config.yaml"), root=root, jetson=False)]
    assert "network.conf" in names and "jetson.conf" not in names


def test_install_service_dry_run_and_errors(tmp_path, capsys):
    root = tmp_path / "root"
    assert main(["install-service", "--root", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "ExecStart=" in out and "cameras:" in out and not root.exists()
    assert main(["install-service", "--root", str(root), "--user", "Bad User"]) == 64
    (tmp_path / "file").write_text("")
    assert main(["install-service", "--root", str(tmp_path / "file")]) == 77
    assert "cannot write" in capsys.readouterr().err
