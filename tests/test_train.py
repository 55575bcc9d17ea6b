"""Smoke training on a tiny generated dataset: bundle written, resumable, fine-tunable, evaluable."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from edge.cli import main  # noqa: E402
from edge.models.train import TrainConfig, lr_at, sample_window, train  # noqa: E402


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """--amp auto keeps its measurement in the cache folder: a test's own, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    assert main(["-q", "dataset", "synth", "--out", str(root), "--per-class", "2", "--seed", "5", "--size",
                 "64x48", "--frames", "10"]) == 0
    return root


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), size=32, frames=4, stride=1, epochs=2, batch=6, threads=1, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_schedule_and_window_sampling():
    assert lr_at(0, 100, 0.1, 0.1) == pytest.approx(0.01)
    assert lr_at(10, 100, 0.1, 0.1) == pytest.approx(0.1)
    assert lr_at(99, 100, 0.1, 0.1) < 0.001
    assert list(sample_window(24, 8, 1, None)) == list(range(8, 16))
    assert list(sample_window(5, 4, 2, None)) == [0, 2, 4, 4]  # clamped at the clip's end
    idx = sample_window(24, 8, 2, np.random.default_rng(0))
    assert np.all(np.diff(idx) == 2) and idx[-1] < 24


def test_smoke_training_writes_a_valid_bundle(tiny_data, tmp_path):
    out = train(_cfg(tiny_data, tmp_path / "m", max_steps=3, val=str(tiny_data)), progress=False)
    spec = yaml.safe_load((out / "model.yaml").read_text())
    assert spec["labels"][:2] == ["no_motion", "swipe_left"] and len(spec["labels"]) == 9
    assert spec["temporal"] == {"shift": "causal", "fps": 15.0, "frame_stride": 1, "clip_frames": 4}
    assert len(spec["states"]) == 10 and spec["input"]["size"] == [32, 32]
    assert (out / "model.onnx").stat().st_size > 1e6 and (out / "CARD.md").is_file()
    record = json.loads((out / "train.json").read_text())
    assert record["history"][-1]["step"] == 3 and "val" in record["metrics"]
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 3


def test_training_is_deterministic_and_resumable(tiny_data, tmp_path):
    a = train(_cfg(tiny_data, tmp_path / "a", epochs=2), progress=False)
    b = train(_cfg(tiny_data, tmp_path / "b", epochs=2, max_steps=3), progress=False)  # one epoch, then stop
    b = train(_cfg(tiny_data, tmp_path / "b", epochs=2, resume=True), progress=False)
    wa = torch.load(a / "weights.pt", weights_only=True)["model"]
    wb = torch.load(b / "weights.pt", weights_only=True)["model"]
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5), k


def test_no_shift_and_init_from_bundle(tiny_data, tmp_path):
    base = train(_cfg(tiny_data, tmp_path / "base", epochs=1), progress=False)
    ns = train(_cfg(tiny_data, tmp_path / "ns", epochs=1, shift="none"), progress=False)
    spec = yaml.safe_load((ns / "model.yaml").read_text())
    assert spec["states"] == [] and spec["temporal"]["shift"] == "none"
    ft = train(_cfg(tiny_data, tmp_path / "ft", epochs=1, init=str(base), lr=0.0), progress=False)
    w0 = torch.load(base / "weights.pt", weights_only=True)["model"]
    w1 = torch.load(ft / "weights.pt", weights_only=True)["model"]
    # lr 0: the conv weights are the initial ones (BN running stats still move).
    assert torch.equal(w0["features.3.conv.0.weight"], w1["features.3.conv.0.weight"])


def test_init_keeps_the_models_classes_by_name(tiny_data, tmp_path):
    """Field data with a few classes, in another order, plus a new one: the model's classifier rows
    follow their label names, its other classes stay, the new class gets a fresh row."""
    import shutil
    base = train(_cfg(tiny_data, tmp_path / "base", epochs=1), progress=False)
    base_labels = yaml.safe_load((base / "model.yaml").read_text())["labels"]
    field = tmp_path / "field"
    for lab in ("zoom_out", "swipe_left"):
        shutil.copytree(tiny_data / lab, field / lab)
    shutil.copytree(tiny_data / "no_motion", field / "waving")  # a class the model does not know
    ft = train(_cfg(field, tmp_path / "ft", epochs=1, init=str(base), lr=0.0), progress=False)
    labels = yaml.safe_load((ft / "model.yaml").read_text())["labels"]
    assert labels == [*base_labels, "waving"]
    w0 = torch.load(base / "weights.pt", weights_only=True)["model"]["classifier.weight"]
    w1 = torch.load(ft / "weights.pt", weights_only=True)["model"]["classifier.weight"]
    assert torch.equal(w1[:len(base_labels)], w0) and not torch.equal(w1[-1], w0[0])


def test_train_cli_errors(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "o")]) == 64
    assert "--data" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 66
    assert "not a folder" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--init",
                 str(tmp_path / "nothing.pt")]) in (65, 66)
    for bad in ("160by120", "160x", "4x4", "0"):
        assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--size", bad]) == 64
        assert f"--size '{bad}': give a square side or WIDTHxHEIGHT" in capsys.readouterr().err


def test_input_size_is_a_square_side_or_width_x_height():
    from edge.models.loader import input_hw
    assert input_hw(112) == (112, 112) and input_hw("96") == (96, 96)
    assert input_hw("160x120") == (120, 160) and input_hw(" 64X48 ") == (48, 64)   # (H, W), as model.yaml


def test_recipe_runs_its_stages_and_keeps_finished_ones(tmp_path, monkeypatch, caplog):
    """A recipe in miniature: generated data, two stages (the second from the first's weights), the
    held-out figures in model.yaml and CARD.md; run again, every finished stage is kept."""
    import logging

    from edge.models import recipe
    tiny = {"synth": {"size": (64, 48), "frames": 10, "fps": 15.0},
            "train_set": {"seed": 5, "per_class": 1}, "test_set": {"seed": 6, "per_class": 1},
            "train": {"size": 32, "width": 0.25, "frames": 4, "stride": 1, "epochs": 1, "batch": 6, "lr": 0.001,
                      "optimizer": "adamw", "weight_decay": 0.01, "seed": 0, "threads": 1},
            "finetune": [{"epochs": 1, "lr": 0.0003, "seed": 1}]}
    monkeypatch.setitem(recipe.RECIPES, "default", tiny)
    out = recipe.run_recipe("default", out=str(tmp_path / "run"), data_dir=str(tmp_path / "data"))
    spec = yaml.safe_load((out / "model.yaml").read_text())
    stage1 = json.loads((out / "stage1" / "train.json").read_text())
    final = json.loads((out / "train.json").read_text())
    assert final["config"]["init"] == str(out / "stage1") and stage1["config"]["init"] is None
    assert spec["provenance"]["heldout"]["metrics"] and "then 1 more epochs" in (out / "CARD.md").read_text()
    assert spec["provenance"]["train_seconds"] == pytest.approx(stage1["seconds"] + final["seconds"], abs=1)
    assert spec["provenance"]["generator"] == 5   # the recipe names none: the newest
    caplog.set_level(logging.INFO, logger="edge.models.recipe")
    recipe.run_recipe("default", out=str(out), data_dir=str(tmp_path / "data"))
    assert caplog.text.count("already trained with this recipe, kept") == 2
    # the last stage now exported balanced: its finished run exports again, the weights as they were
    weights = torch.load(out / "weights.pt", weights_only=True)["model"]
    tiny["finetune"][0]["balance"] = True
    recipe.run_recipe("default", out=str(out), data_dir=str(tmp_path / "data"))
    assert caplog.text.count("kept") == 3 and "exported again (balance True)" in caplog.text
    again = torch.load(out / "weights.pt", weights_only=True)
    assert all(torch.equal(v, weights[k]) for k, v in again["model"].items()) and again["meta"]["prior_offsets"]
    assert "prior_offsets" in yaml.safe_load((out / "model.yaml").read_text())["provenance"]
    assert "exported balanced" in (out / "CARD.md").read_text()


def test_a_recipe_built_on_another_trains_its_base_first_or_starts_from_init(tmp_path, monkeypatch, caplog):
    """v2's shape: a base recipe (generator 4) trained first, then its own stages on generator 5 with generator 4
    clips mixed in, scored on both held-out sets beside the base; ``init`` skips the base."""
    import logging

    from edge.errors import UsageError
    from edge.models import recipe
    train = {"size": 32, "width": 0.25, "frames": 4, "stride": 1, "epochs": 1, "batch": 6, "lr": 0.001,
             "optimizer": "adamw", "weight_decay": 0.01, "seed": 0, "threads": 1}
    synth = {"size": (64, 48), "frames": 10, "fps": 15.0}
    base = {"synth": {**synth, "generator": 4}, "train_set": {"seed": 5, "per_class": 1, "dir": "b-train"},
            "test_set": {"seed": 6, "per_class": 1, "dir": "b-test"}, "train": train}
    top = {"base": "tbase", "synth": {**synth, "generator": 5},
           "train_set": {"seed": 5, "per_class": 1, "dir": "t-train",
                         "mix": {"generator": 4, "seed": 7, "per_class": 1}},
           "test_set": {"seed": 6, "per_class": 1, "dir": "t-test"},
           "also_test": [{"generator": 4, "seed": 6, "per_class": 1, "dir": "b-test"}],
           "train": {**train, "seed": 3, "size": 24},   # progressive: the first stage smaller than the bundle
           "finetune": [{"size": 32, "epochs": 1, "lr": 0.0005, "seed": 4},
                        {"size": "40x30", "epochs": 1, "lr": 0.0002, "seed": 5,   # fresh clips, 4:3 like theirs
                         "train_set": {"seed": 8, "per_class": 1, "dir": "t-fresh",
                                       "mix": {"generator": 4, "seed": 9, "per_class": 1},
                                       "recordings": {"count": 1, "segments": 2}}},
                        {"size": "40x30", "epochs": 1, "lr": 0.0001, "seed": 6,   # distractors; recordings of seed 8
                         "train_set": {"seed": 10, "per_class": 1, "dir": "t-dis", "distractors": 1.0,
                                       "recordings": {"count": 1, "segments": 2, "seed": 8}}}]}
    monkeypatch.setitem(recipe.RECIPES, "tbase", base)
    monkeypatch.setitem(recipe.RECIPES, "ttop", top)
    data = tmp_path / "data"
    out = recipe.run_recipe("ttop", out=str(tmp_path / "run"), data_dir=str(data))
    assert sorted(p.name for p in (data / "t-train" / "swipe_left").iterdir()) == [
        "swipe_left_s5_00000.mp4", "swipe_left_s7_00000.mp4"]   # generator 5 seed 5 + generator 4 seed 7
    assert json.loads((out / "stage1" / "train.json").read_text())["config"]["init"] == str(out / "base")
    assert json.loads((out / "stage2" / "train.json").read_text())["config"]["data"] == str(data / "t-train")
    last = json.loads((out / "train.json").read_text())["config"]
    assert last["data"] == str(data / "t-dis") and last["init"] == str(out / "stage3")
    dis = json.loads((data / "t-dis" / "synth.json").read_text())
    assert dis["distractors"] == 1.0 and dis["recording_seed"] == 8 and dis["recordings"] == 1
    for name in ("rec_s8_00000.avi", "rec_s8_00000.csv"):   # the very recordings of the stage before
        have, was = data / "t-dis" / "recordings" / name, data / "t-fresh" / "recordings" / name
        assert have.read_bytes() == was.read_bytes()
    assert sorted(p.name for p in (data / "t-fresh" / "swipe_left").iterdir()) == [
        "swipe_left_s8_00000.mp4", "swipe_left_s9_00000.mp4"]
    assert [p.name for p in sorted((data / "t-fresh" / "recordings").iterdir())] == [
        "rec_s8_00000.avi", "rec_s8_00000.csv"]   # and one annotated recording, trained on frame by frame
    spec = yaml.safe_load((out / "model.yaml").read_text())
    assert spec["input"]["size"] == [30, 40]   # the last stage's size (WIDTHxHEIGHT) is the bundle's [H, W]
    prov = yaml.safe_load((out / "model.yaml").read_text())["provenance"]
    assert prov["generator"] == 5 and prov["recipe"] == "ttop"
    assert [h["data"] for h in prov["heldout_also"]] == [str(data / "b-test")]
    assert set(prov["base"]["heldout"]) == {str(data / "t-test"), str(data / "b-test")}
    card = (out / "CARD.md").read_text()
    assert "tbase (the base, before this recipe)" in card and "--generator 4` rendered into" in card
    assert "1 epochs at 24x24, batch" in card and "then 1 more epochs at 32x32 from those weights" in card
    assert "then 1 more epochs at 40x30 from those weights" in card and "Input 40x30 RGB" in card
    assert ("(seed 5) on fresh clips (`--seed 8 --per-class 1` + `--seed 9 --per-class 1 --generator 4`, with "
            "`--recordings 1 --recording-segments 2`: continuous recordings whose windows are scored") in card
    assert ("on fresh clips (`--seed 10 --per-class 1 --distractors 1`, with `--recordings 1 --recording-segments 2` "
            "of seed 8: continuous") in card
    caplog.set_level(logging.INFO, logger="edge.models.recipe")
    recipe.run_recipe("ttop", out=str(out), data_dir=str(data), init=str(out / "base"))   # the same start: kept
    assert "dataset" in caplog.text and "already trained with this recipe, kept" in caplog.text
    with pytest.raises(UsageError, match="trains from scratch"):
        recipe.run_recipe("tbase", out=str(tmp_path / "x"), data_dir=str(data), init=str(out / "base"))


def test_a_recipe_set_records_what_its_recordings_are(tmp_path):
    """A stage's set whose recordings have their own distractors (or seed) is generated once, says so in
    synth.json, and another spec (other distractors, none) is not taken for it."""
    from edge.data.synth_recording import make_recording, render_recording
    from edge.models import recipe
    synth = {"size": (32, 24), "frames": 3, "fps": 15.0, "generator": 5}
    spec = {"seed": 5, "per_class": 1, "distractors": 0.0,
            "recordings": {"count": 1, "segments": 1, "distractors": 1.0}}
    root = recipe.ensure_synth(tmp_path / "s", spec, synth)
    have = json.loads((root / "synth.json").read_text())
    assert (have["distractors"], have["recordings"], have["recording_seed"], have["recording_distractors"]) == (
        0.0, 1, 5, 1.0)
    assert not render_recording((5, 0), 1)[0].distractors   # unless asked for, this one has none
    make_recording(tmp_path / "x.avi", tmp_path / "x.csv", segments=1, seed=(5, 0), size=(32, 24), distractors=1.0)
    assert (root / "recordings" / "rec_s5_00000.avi").read_bytes() == (tmp_path / "x.avi").read_bytes()
    assert recipe._synth_ready(root, spec, synth)
    for other in ({**spec, "recordings": {"count": 1, "segments": 1}}, {**spec, "distractors": 0.5},
                  {**spec, "recordings": {"count": 1, "segments": 1, "distractors": 1.0, "seed": 3}}):
        assert not recipe._synth_ready(root, other, synth), other
