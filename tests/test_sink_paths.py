"""Paths a log or unix sink cannot use: one SinkError line naming the sink and the path and saying what to
do (exit 69), never a traceback. The paths are the ones a config can hold: thousands of characters, a
name over 255 bytes, a NUL byte, characters that cannot be encoded as a file name, a folder without
write permission, a path through a regular file, a directory. Then the same through ``edge-tsm check``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from edge.cli import main
from edge.config import config_from_data
from edge.errors import EX_UNAVAILABLE, SinkError
from edge.paths import show_path
from edge.sinks import LogSinkConfig, UnixSinkConfig, create_sink

CASES = {  # case -> (path under tmp_path, words the message must hold)
    "5000 characters": (lambda t: t / "/".join(["d" * 200] * 24) / "events.jsonl", "choose a shorter path"),
    "a 300-byte name": (lambda t: t / ("n" * 300 + ".jsonl"), "choose a shorter path"),
    "a NUL byte": (lambda t: t / "ev\x00ents.jsonl", "contains a NUL byte"),
    "a NUL byte in the folder": (lambda t: t / "lo\x00gs" / "events.jsonl", "contains a NUL byte"),
    "not encodable": (lambda t: t / "ev\ud800.jsonl", "cannot be encoded as a file name"),
    "through a regular file": (lambda t: t / "file" / "events.jsonl", "is not a folder"),
    "through a regular file, deeper": (lambda t: t / "file" / "a" / "b" / "events.jsonl", "is not a folder"),
    "no write permission": (lambda t: t / "ro" / "sub" / "events.jsonl", "Permission denied"),
    "a directory": (lambda t: t / "dir", "directory"),
    "a symlink": (lambda t: t / "link.jsonl", "is a symlink; refused (set follow_symlinks: true"),
}


def prepare(tmp_path: Path, case: str) -> Path:
    (tmp_path / "file").write_text("precious")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "file")  # planted: writing through it would hit "file"
    if case == "no write permission":
        if os.geteuid() == 0:
            pytest.skip("root may write anywhere")
        (tmp_path / "ro").mkdir(mode=0o555)
    return CASES[case][0](tmp_path)


def check_one_line(e: pytest.ExceptionInfo, prefix: str, path: Path, words: str) -> None:
    msg = str(e.value)
    assert e.value.exit_code == EX_UNAVAILABLE
    assert "\n" not in msg and msg.isprintable(), msg
    assert msg.startswith(f"{prefix} {show_path(path)}: "), msg
    assert words in msg, msg
    assert len(msg) < 700, msg


@pytest.mark.parametrize("case", sorted(CASES))
def test_log_sink_path_errors_are_one_line(tmp_path, case):
    path = prepare(tmp_path, case)
    with pytest.raises(SinkError) as e:
        create_sink(LogSinkConfig(type="log", path=str(path)), "events").open()
    check_one_line(e, "sink events: file", path, CASES[case][1])
    assert (tmp_path / "file").read_text() == "precious"


@pytest.mark.parametrize("case", sorted(set(CASES) - {"a 300-byte name"}))
def test_unix_sink_path_errors_are_one_line(tmp_path, case):
    path = prepare(tmp_path, case)
    with pytest.raises(SinkError) as e:
        create_sink(UnixSinkConfig(type="unix", path=str(path)), "sock").open()
    words = {"5000 characters": "path too long for a Unix socket", "a NUL byte in the folder": "contains a NUL byte",
             "a directory": "exists and is a folder", "a symlink": "exists and is a symlink"}.get(case, CASES[case][1])
    check_one_line(e, "sink sock: socket", path, words)


@pytest.mark.parametrize("kind", ["log", "unix"])
def test_undecodable_bytes_in_a_path_are_a_valid_linux_name(tmp_path, kind):
    """A name with a byte that is not UTF-8 (Python's surrogate escape) is a real file name on Linux: the
    config takes it, the sink works there, and its messages show the byte escaped."""
    path = tmp_path / "ev\udcff"
    cfg = config_from_data({"cameras": [{"name": "c", "source": 0}], "sinks": [{"type": kind, "path": str(path)}]})
    sink = create_sink(cfg.sinks[0], kind)
    sink.open()
    assert os.listdir(os.fsencode(tmp_path)) == [b"ev\xff"]
    sink.submit({"v": 1, "event": "start", "camera": "c", "label": "a", "seq": 1})
    assert sink.wait_for(lambda st: st["delivered"] == 1, 5) and sink.close() == 0
    assert sink.where.isprintable() and "\\udcff" in sink.where


def test_show_path_keeps_a_message_on_one_short_line():
    assert show_path("/var/lib/edge-tsm/events.jsonl") == "/var/lib/edge-tsm/events.jsonl"
    assert show_path("/tmp/a\nb\x00c\ud800") == "/tmp/a\\nb\\x00c\\ud800"
    long = show_path("/x" * 2500)
    assert len(long) < 320 and long.endswith("(5000 characters)") and long.startswith("/x/x")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from tinymodel import build_tiny_bundle, write_colour_video
    root = tmp_path_factory.mktemp("assets")
    return build_tiny_bundle(root / "tiny"), write_colour_video(root / "c.avi")


@pytest.mark.parametrize("case", ["5000 characters", "a NUL byte", "not encodable", "through a regular file",
                                  "a directory", "a symlink"])
def test_check_says_it_in_one_line_with_exit_69(assets, tmp_path, capsys, case):
    bundle, video = assets
    path = prepare(tmp_path, case)
    cfg = {"model": str(bundle), "cameras": [{"name": "c", "source": str(video)}],
           "sinks": [{"type": "log", "path": str(path)}], "state_dir": str(tmp_path / "state")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    assert main(["-q", "check", "--config", str(tmp_path / "config.yaml")]) == EX_UNAVAILABLE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"edge-tsm: error: sink log: file {show_path(path)}: "), err
    assert CASES[case][1] in err[0]
    assert (tmp_path / "file").read_text() == "precious"
