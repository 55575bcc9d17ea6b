"""The ISA guard's two steps (run natively here; CI has no qemu): they reproduce edge-tsm eval's figure."""
from __future__ import annotations

import json

from tinymodel import build_tiny_bundle, write_colour_video

from edge.calibration.isa_guard import main
from edge.cli import main as cli


def test_dump_then_run_gives_the_eval_accuracy(tmp_path, capsys):
    bundle = build_tiny_bundle(tmp_path / "tiny")
    for label in ("red", "green", "blue"):
        (tmp_path / "data" / label).mkdir(parents=True)
    write_colour_video(tmp_path / "data" / "red" / "a.avi")
    assert main(["dump", "--model", str(bundle), "--data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "in.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["clips"] == 1
    assert main(["run", "--model", str(bundle), "--precision", "fp32", "--inputs", str(tmp_path / "in.npz")]) == 0
    ref = tmp_path / "ref.json"
    ref.write_text(capsys.readouterr().out)
    assert main(["run", "--model", str(bundle), "--precision", "fp32", "--inputs", str(tmp_path / "in.npz"),
                 "--reference", str(ref)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["agreement"] == 1.0 and got["n"] == 1
    assert cli(["-q", "eval", "--model", str(bundle), "--data", str(tmp_path / "data"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == got["accuracy"]
