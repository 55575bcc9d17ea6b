"""The batched-graph cache (edge.batching, edge.cache): a folder of this user's alone, files checked
against the hash recorded beside them, nothing written through a planted symlink, nothing in /tmp."""
from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from tinymodel import build_tiny_bundle, write_colour_video

from edge.batching import batched_graph
from edge.cache import cache_folder, private_folder, verified
from edge.cli import main
from edge.errors import InputError

ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """Two tiny online graphs with different weights: the real one and the 'attacker's'."""
    root = tmp_path_factory.mktemp("batching")
    return (build_tiny_bundle(root / "real") / "model.onnx",
            build_tiny_bundle(root / "other", seed=5) / "model.onnx")


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _logits(graph: Path, frame_seed: int = 0) -> np.ndarray:
    import onnxruntime as ort
    s = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(frame_seed)
    feeds = {i.name: rng.normal(size=[2, *i.shape[1:]]).astype(np.float32) for i in s.get_inputs()}
    return s.run(["logits"], feeds)[0]


def test_the_copy_lives_in_a_private_folder_with_its_hash_beside_it(graphs, tmp_path):
    real, _ = graphs
    folder = tmp_path / "cache" / "edge-tsm"
    out = batched_graph(real, folder)
    assert out.parent == folder and _mode(folder) == 0o700 and _mode(out) == 0o600
    assert hashlib.sha256(real.read_bytes()).hexdigest() in out.name  # the source's hash names it
    digest, name = (out.parent / (out.name + ".sha256")).read_text().split()
    assert name == out.name and digest == hashlib.sha256(out.read_bytes()).hexdigest()
    assert verified(out) == (True, "")
    mtime = out.stat().st_mtime_ns
    assert batched_graph(real, folder) == out and out.stat().st_mtime_ns == mtime  # reused, not rewritten


def test_default_folder_is_systemds_else_xdg_never_tmp(graphs, tmp_path, monkeypatch):
    real, _ = graphs
    before = set(os.listdir(tempfile.gettempdir()))
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == (tmp_path / "xdg" / "edge-tsm", "$XDG_CACHE_HOME/edge-tsm")
    assert batched_graph(real).parent == tmp_path / "xdg" / "edge-tsm"
    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path / 'unit'}:{tmp_path / 'second'}")
    assert cache_folder() == (tmp_path / "unit", "$CACHE_DIRECTORY")
    assert batched_graph(real).parent == tmp_path / "unit"
    assert cache_folder(str(tmp_path / "conf")) == (tmp_path / "conf", "engine.cache_dir")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("CACHE_DIRECTORY")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_folder() == (tmp_path / "home" / ".cache" / "edge-tsm", "~/.cache/edge-tsm")
    assert not [n for n in set(os.listdir(tempfile.gettempdir())) - before if "edge-tsm" in n or "batch" in n]


@pytest.mark.parametrize("sidecar", ["kept", "removed"])
def test_a_planted_graph_is_not_used(graphs, tmp_path, caplog, sidecar):
    """Another graph (other weights: other logits) put at the copy's name is detected by its hash and
    rebuilt from the real source, with a warning; the engines never see it."""
    real, other = graphs
    folder = tmp_path / "cache"
    out = batched_graph(real, folder)
    genuine, want = out.read_bytes(), _logits(out)
    planted = batched_graph(other, tmp_path / "elsewhere")
    assert not np.allclose(_logits(planted), want)
    out.write_bytes(planted.read_bytes())
    if sidecar == "removed":
        (folder / (out.name + ".sha256")).unlink()
    with caplog.at_level(logging.WARNING, logger="edge.batching"):
        again = batched_graph(real, folder)
    assert again == out and out.read_bytes() == genuine
    np.testing.assert_array_equal(_logits(again), want)
    why = "no hash recorded" if sidecar == "removed" else "does not match the hash recorded"
    assert why in caplog.text and "rebuilding" in caplog.text, caplog.text


def test_symlinks_in_the_cache_are_never_written_through(graphs, tmp_path):
    """A symlink at the temporary name (what made ``check`` overwrite a root-owned file) or at the copy's
    own name: the victim keeps its bytes, the copy is a regular file."""
    real, _ = graphs
    folder = tmp_path / "cache"
    name = f"batched-v1-{hashlib.sha256(real.read_bytes()).hexdigest()}.onnx"
    private_folder(folder, "test")
    victims = []
    for link in (f".{name}.{os.getpid()}.tmp", f".{name}.sha256.{os.getpid()}.tmp", name, f"{name}.sha256"):
        victim = tmp_path / f"victim-{len(victims)}"
        victim.write_bytes(b"precious")
        os.symlink(victim, folder / link)
        victims.append(victim)
    out = batched_graph(real, folder)
    assert all(v.read_bytes() == b"precious" for v in victims)
    assert not out.is_symlink() and out.is_file() and verified(out) == (True, "")
    assert not (folder / f".{name}.{os.getpid()}.tmp").exists()


def test_a_fifo_at_the_copys_name_does_not_hang(graphs, tmp_path):
    real, _ = graphs
    folder = tmp_path / "cache"
    name = f"batched-v1-{hashlib.sha256(real.read_bytes()).hexdigest()}.onnx"
    private_folder(folder, "test")
    os.mkfifo(folder / name)
    out = batched_graph(real, folder)
    assert stat.S_ISREG(os.lstat(out).st_mode) and verified(out)[0]


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_folder_others_can_write_is_refused(graphs, tmp_path, mode):
    real, _ = graphs
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(InputError) as e:
        batched_graph(real, folder)
    msg = str(e.value)
    assert msg.startswith(f"engine.cache_dir {folder}: refused: writable by ") and f"mode {mode:04o}" in msg
    assert "chmod 700" in msg and "\n" not in msg and not list(folder.iterdir())


def test_a_folder_of_another_user_is_refused(graphs, tmp_path):
    real, _ = graphs
    if ROOT:
        folder = tmp_path / "theirs"
        folder.mkdir(mode=0o700)
        os.chown(folder, 65534, 65534)
    else:
        folder = Path("/")  # root's
    with pytest.raises(InputError, match=r"refused: owned by .*uid \d+\), not by this user") as e:
        batched_graph(real, folder)
    assert "\n" not in str(e.value)
    if ROOT:
        assert not list(folder.iterdir())


def test_private_folder_names_what_is_wrong(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot create or use .*is not a folder"):
        private_folder(tmp_path / "file" / "sub", "engine.cache_dir")
    folder = private_folder(tmp_path / "a" / "b", "engine.cache_dir")
    assert _mode(folder) == 0o700


def test_check_refuses_a_shared_cache_folder_in_one_line(graphs, tmp_path, capsys):
    """Through ``edge-tsm check`` with two cameras (so the batched graph is made): exit 66, one line."""
    real, _ = graphs
    video = write_colour_video(tmp_path / "c.avi")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    cfg = {"model": str(real.parent), "state_dir": str(tmp_path / "state"), "engine": {"cache_dir": str(shared)},
           "cameras": [{"name": "a", "source": str(video)}, {"name": "b", "source": str(video)}], "sinks": []}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "check", "--config", str(tmp_path / "c.yaml")]) == 66
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"edge-tsm: error: engine.cache_dir {shared}: refused"), err
    shared.chmod(0o700)
    assert main(["-q", "check", "--config", str(tmp_path / "c.yaml")]) == 0
    assert [p.name.endswith((".onnx", ".sha256")) for p in shared.iterdir()] == [True, True]


def test_reading_a_cached_graph_allocates_its_size_not_the_limit(tmp_path):
    """read_private once asked for limit + 1 bytes (2 GiB) per read: Python allocates that first, which a small
    device (or strict overcommit) refuses. It now asks for the file's size."""
    import tracemalloc

    from edge.cache import read_private
    path = tmp_path / "graph.onnx"
    path.write_bytes(b"x" * 100_000)
    tracemalloc.start()
    try:
        data = read_private(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data == b"x" * 100_000 and peak < 10_000_000
    assert read_private(path, limit=99_999) is None  # over the limit: refused, as before
