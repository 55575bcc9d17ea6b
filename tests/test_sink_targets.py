"""Two sinks that would write to one target are refused when the config is validated: one ConfigError
line (exit 78) naming both sinks and the target. Paths are compared after ``..`` and ``.`` are resolved
and relative ones made absolute (symlinks are not followed: the config is checked without the disk)."""
from __future__ import annotations

import os

import pytest
import yaml

from edge.cli import main
from edge.config import config_from_data
from edge.errors import EX_CONFIG, ConfigError
from edge.sinks import duplicate_targets

CAM = [{"name": "c", "source": 0}]


def refused(sinks: list[dict]) -> str:
    with pytest.raises(ConfigError) as e:
        config_from_data({"cameras": CAM, "sinks": sinks})
    assert e.value.exit_code == EX_CONFIG and "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize(("sinks", "names", "target"), [
    ([{"type": "log", "path": "/var/log/e.jsonl"}, {"type": "log", "path": "/var/log/x/../e.jsonl"}],
     ("'log'", "'log2'"), "path /var/log/e.jsonl"),
    ([{"type": "log", "path": "/var/log/e.jsonl", "name": "main"}, {"type": "stdout"},
      {"type": "log", "path": "/var/log/./e.jsonl", "name": "copy"}], ("'main'", "'copy'"), "path /var/log/e.jsonl"),
    ([{"type": "unix", "path": "/run/edge-tsm/a.sock"}, {"type": "unix", "path": "/run/edge-tsm//a.sock"}],
     ("'unix'", "'unix2'"), "path /run/edge-tsm/a.sock"),
    ([{"type": "log", "path": "/run/x"}, {"type": "unix", "path": "/run/x"}], ("'log'", "'unix'"), "path /run/x"),
    ([{"type": "serial", "port": "/dev/ttyUSB0"}, {"type": "serial", "port": "/dev/ttyUSB0", "format": "json"}],
     ("'serial'", "'serial2'"), "port /dev/ttyUSB0"),
    ([{"type": "mqtt", "host": "Broker.lan", "device": "d"}, {"type": "mqtt", "host": "broker.lan", "device": "d",
                                                               "port": 1883}],
     ("'mqtt'", "'mqtt2'"), "client id 'edge-tsm-d' at broker broker.lan:1883"),
])
def test_two_sinks_on_one_target_are_one_config_error(sinks, names, target):
    msg = refused(sinks)
    assert f"sinks: {names[0]} and {names[1]} both write to {target} " in msg, msg


def test_a_relative_path_is_the_same_file_as_its_absolute_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    msg = refused([{"type": "log", "path": "e.jsonl"}, {"type": "log", "path": str(tmp_path / "e.jsonl")}])
    assert f"path {tmp_path / 'e.jsonl'}" in msg


@pytest.mark.parametrize("sinks", [
    [{"type": "log", "path": "/var/log/a.jsonl"}, {"type": "log", "path": "/var/log/b.jsonl"}],
    [{"type": "serial", "port": "/dev/ttyUSB0"}, {"type": "serial", "port": "/dev/ttyUSB1"}],
    [{"type": "mqtt", "host": "b", "device": "one"}, {"type": "mqtt", "host": "b", "device": "two"}],
    [{"type": "mqtt", "host": "b", "client_id": "x"}, {"type": "mqtt", "host": "c", "client_id": "x"}],
    [{"type": "stdout"}, {"type": "stdout", "format": "text"}],  # one stream, two formats: a choice, not a clash
])
def test_distinct_targets_pass(sinks):
    cfg = config_from_data({"cameras": CAM, "sinks": sinks})
    assert duplicate_targets(cfg.sinks, [f"s{i}" for i in range(len(sinks))]) is None


def test_check_says_it_in_one_line_with_exit_78(tmp_path, capsys):
    cfg = {"cameras": CAM, "sinks": [{"type": "log", "path": str(tmp_path / "e.jsonl")},
                                     {"type": "log", "path": str(tmp_path / "sub" / ".." / "e.jsonl")}]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "check", "--config", str(tmp_path / "config.yaml")]) == EX_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-tsm: error: config "), err
    assert f"sinks: 'log' and 'log2' both write to path {os.path.normpath(tmp_path / 'e.jsonl')}" in err[0]
