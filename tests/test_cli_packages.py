"""One exit code for "a needed package is not installed" (issue 16, item 8): 69 (EX_UNAVAILABLE), error
class :class:`edge.errors.PackageMissing`, one line naming the package and the pip command, whether the
command is train, export, quantize or a configuration's sink; a unix sink ``group`` that does not exist
is a configuration error (78)."""
from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest
import yaml
from tinymodel import build_tiny_bundle, write_colour_video

from edge.cli import main
from edge.errors import EX_CONFIG, EX_UNAVAILABLE, PackageMissing, SinkError
from edge.sinks import GpioSinkConfig, create_sink

TORCH_MODULES = ("edge.models.recipe", "edge.models.export", "edge.models.train", "edge.models.tsm")


@pytest.fixture
def no_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ModuleNotFoundError (name 'torch')
    package = importlib.import_module("edge.models")
    for name in TORCH_MODULES:  # imported by an earlier test: import them afresh, and fail
        monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.delattr(package, name.rsplit(".", 1)[1], raising=False)  # `from edge.models import x` reads it


@pytest.mark.parametrize("argv", [["train", "--recipe", "default", "--out", "x"],
                                  ["export", "--checkpoint", "x.pt", "--out", "x"]])
def test_train_and_export_without_torch_exit_69(no_torch, argv, capsys):
    assert main(argv) == EX_UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert f"{argv[0]} needs the torch package (the train extra): pip install 'edge-tsm[train]'" in err
    assert "\n" not in err


@pytest.mark.parametrize("package", ["onnxruntime", "sympy"])
def test_quantize_without_its_packages_exits_69(monkeypatch, package, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    assert main(["quantize", "--model", str(tmp_path), "--calib", str(tmp_path)]) == EX_UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert f"quantize needs the {package} package (the quantize extra): pip install 'edge-tsm[quantize]'" in err


def test_gpio_sink_without_gpiod_is_package_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiod", None)
    cfg = GpioSinkConfig.model_validate({"type": "gpio", "driver": "gpiod", "lines": {"swipe_left": 17}})
    with pytest.raises(PackageMissing, match="needs the gpiod package: pip install 'edge-tsm") as e:
        create_sink(cfg, "gpio").open()
    assert isinstance(e.value, SinkError) and e.value.exit_code == EX_UNAVAILABLE


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pkg")
    return build_tiny_bundle(folder / "tiny"), write_colour_video(folder / "c.avi")


def _check(tmp_path, setup, sink: dict) -> int:
    bundle, video = setup
    cfg = {"model": str(bundle), "cameras": [{"name": "door", "source": str(video)}], "sinks": [sink]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return main(["check", "--config", str(tmp_path / "c.yaml")])


def test_check_with_a_gpio_sink_and_no_gpiod_exits_69(monkeypatch, tmp_path, setup, capsys):
    monkeypatch.setitem(sys.modules, "gpiod", None)
    assert _check(tmp_path, setup, {"type": "gpio", "driver": "gpiod", "lines": {"red": 17}}) == EX_UNAVAILABLE
    assert "needs the gpiod package" in capsys.readouterr().err


def test_unix_sink_group_that_does_not_exist_is_a_config_error(tmp_path, setup, capsys):
    sink = {"type": "unix", "path": str(tmp_path / "e.sock"), "group": "no-such-group-here"}
    assert _check(tmp_path, setup, sink) == EX_CONFIG
    assert "group 'no-such-group-here' does not exist" in capsys.readouterr().err
