"""The TSM network: shift semantics, online == offline causal on both engines, reference checkpoints."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.cli import main  # noqa: E402
from edge.models.export import export_bundle, load_checkpoint  # noqa: E402
from edge.models.tsm import OnlineTSM, TSMNet, temporal_shift  # noqa: E402


def _randomise(net: TSMNet, seed: int = 0) -> TSMNet:
    """Non-trivial BN statistics and a classifier with large outputs, so a mismatch would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
        net.classifier.weight.normal_(0, 0.5, generator=g)
    return net.eval()


def test_causal_shift_moves_first_fold_from_the_past():
    x = torch.arange(2 * 3 * 16, dtype=torch.float32).view(2 * 3, 16, 1, 1)  # N=2, T=3, C=16
    y = temporal_shift(x, 3, 2, "causal").view(2, 3, 16)
    v = x.view(2, 3, 16)
    assert torch.equal(y[:, 0, :2], torch.zeros(2, 2))
    assert torch.equal(y[:, 1:, :2], v[:, :-1, :2])
    assert torch.equal(y[:, :, 2:], v[:, :, 2:])


def test_bidirectional_shift_is_the_classic_tsm():
    x = torch.randn(3, 16, 2, 2)  # N=1, T=3
    y = temporal_shift(x, 3, 2, "bidirectional")
    assert torch.equal(y[:2, :2], x[1:, :2])           # first fold from the future
    assert torch.equal(y[2, :2], torch.zeros(2, 2, 2))
    assert torch.equal(y[1:, 2:4], x[:-1, 2:4])        # second fold from the past
    assert torch.equal(y[0, 2:4], torch.zeros(2, 2, 2))
    assert torch.equal(y[:, 4:], x[:, 4:])
    assert torch.equal(temporal_shift(x, 3, 2, "none"), x)


def test_ten_shift_blocks_with_the_reference_state_shapes():
    net = TSMNet(27)
    assert len(net.shift_blocks) == 10
    assert net.state_shapes((224, 224)) == [
        (1, 3, 56, 56), (1, 4, 28, 28), (1, 4, 28, 28), (1, 8, 14, 14), (1, 8, 14, 14), (1, 8, 14, 14),
        (1, 12, 14, 14), (1, 12, 14, 14), (1, 20, 7, 7), (1, 20, 7, 7)]
    assert TSMNet(9, shift="none").state_shapes((112, 112)) == []


def test_width_is_configurable():
    net = TSMNet(5, width=0.5)
    assert net.features[0][0].out_channels == 16
    assert len(net.state_shapes((64, 64))) == 10


def _step_engine(engine: str, path: str, frames: np.ndarray, state_shapes) -> np.ndarray:
    if engine == "onnxruntime":
        import onnxruntime as ort
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        run = lambda feeds: sess.run(None, feeds)  # noqa: E731
    else:
        import openvino as ov
        req = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()

        def run(feeds):
            r = req.infer(feeds)
            return [r[o].copy() for o in req.model_outputs]
    states = [np.zeros(s, np.float32) for s in state_shapes]
    logits = []
    for f in frames:
        out = run({"frame": f[None], **{f"state{i}": s for i, s in enumerate(states)}})
        logits.append(out[0][0])
        states = out[1:]
    return np.stack(logits)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_online_graph_equals_offline_causal_model(tmp_path, engine):
    pytest.importorskip(engine)
    torch.manual_seed(0)  # the convolutions draw from the global generator; unseeded, the margin below varied
    net = _randomise(TSMNet(9, shift="causal"))
    bundle = export_bundle(net, tmp_path / "b", [f"c{i}" for i in range(9)], size=(64, 64), name="t")
    clip = torch.randn(1, 12, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        offline = net(clip)[0].numpy()
        online_torch = OnlineTSM(net)(clip[0, :1], *[torch.zeros(s) for s in net.state_shapes((64, 64))])[0]
    assert np.abs(offline).max() > 1.0  # a meaningful scale
    np.testing.assert_allclose(online_torch[0].numpy(), offline[0], atol=1e-4)
    got = _step_engine(engine, str(bundle / "model.onnx"), clip[0].numpy(), net.state_shapes((64, 64)))
    assert np.abs(got - offline).max() <= 1e-4
    # The states matter: without feeding them back the later frames differ.
    assert np.abs(offline[1:] - _step_frames_without_state(net, clip)).max() > 1e-3


def _step_frames_without_state(net, clip):
    with torch.no_grad():
        zeros = [torch.zeros(s) for s in net.state_shapes((64, 64))]
        return np.stack([OnlineTSM(net)(clip[0, t:t + 1], *zeros)[0][0].numpy() for t in range(1, clip.shape[1])])


# --- reference checkpoints -------------------------------------------------------------------------
# Independent of our module layout: the keys and shapes of the reference online demo's MobileNetV2
# (features.0 stem, 17 inverted-residual blocks, features.18 1x1 conv, classifier).
REFERENCE_KEYS = {
    "features.0.0.weight": (32, 3, 3, 3),
    "features.1.conv.0.weight": (32, 1, 3, 3),       # t=1 block: depthwise first
    "features.1.conv.3.weight": (16, 32, 1, 1),
    "features.3.conv.0.weight": (144, 24, 1, 1),     # first shift block, expand conv
    "features.3.conv.3.weight": (144, 1, 3, 3),
    "features.3.conv.6.weight": (24, 144, 1, 1),
    "features.16.conv.7.running_var": (160,),
    "features.17.conv.6.weight": (320, 960, 1, 1),
    "features.18.0.weight": (1280, 320, 1, 1),
    "classifier.weight": (27, 1280),
    "classifier.bias": (27,),
}


def _reference_online_state_dict(seed: int = 0) -> dict:
    net = _randomise(TSMNet(27), seed)
    sd = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    for k, shape in REFERENCE_KEYS.items():
        assert tuple(sd[k].shape) == shape, k
    assert len(sd) == 262  # 52 conv + 52 BN (4 tensors) + 1 linear (2), no num_batches_tracked
    return sd


def _run_bundle(bundle, size=224) -> np.ndarray:
    import onnxruntime as ort
    sess = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.full(i.shape, 0.1, np.float32) for i in sess.get_inputs()}
    return sess.run(["logits"], feeds)[0]


def test_export_reference_online_checkpoint(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    sd = _reference_online_state_dict()
    torch.save(sd, tmp_path / "mobilenetv2_jester_online.pth.tar")
    rc = main(["export", "--checkpoint", str(tmp_path / "mobilenetv2_jester_online.pth.tar"), "--arch",
               "mobilenetv2_tsm", "--labels", "jester", "--out", str(tmp_path / "jester")])
    assert rc == 0
    import yaml
    spec = yaml.safe_load((tmp_path / "jester" / "model.yaml").read_text())
    assert len(spec["labels"]) == 27 and spec["labels"][16] == "Swiping Left"
    assert spec["input"]["size"] == [224, 224] and len(spec["states"]) == 10
    assert spec["temporal"]["shift"] == "causal"
    net = TSMNet(27)
    net.load_state_dict(sd, strict=False)
    net.eval()
    with torch.no_grad():
        ref = OnlineTSM(net)(torch.full((1, 3, 224, 224), 0.1),
                             *[torch.full(s, 0.1) for s in net.state_shapes((224, 224))])[0].numpy()
    np.testing.assert_allclose(_run_bundle(tmp_path / "jester"), ref, atol=1e-4)
    assert "bidirectional" not in capsys.readouterr().err


def test_export_reference_offline_checkpoint_warns(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    sd = _reference_online_state_dict(seed=3)
    offline = {}
    for k, v in sd.items():
        k2 = k.replace("classifier.", "new_fc.")
        parts = k2.split(".")
        # shift blocks wrap their first conv: features.N.conv.0.net.weight
        shifted = (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)
        if parts[0] == "features" and parts[2:4] == ["conv", "0"] and int(parts[1]) in shifted:
            k2 = ".".join(parts[:4] + ["net"] + parts[4:])
        offline["module." + ("base_model." + k2 if not k2.startswith("new_fc") else k2)] = v
    assert "module.base_model.features.3.conv.0.net.weight" in offline and "module.new_fc.weight" in offline
    torch.save({"epoch": 25, "arch": "mobilenetv2", "state_dict": offline, "best_prec1": 95.0},
               tmp_path / "TSM_jester_mobilenetv2.pth")
    rc = main(["export", "--checkpoint", str(tmp_path / "TSM_jester_mobilenetv2.pth"), "--labels", "jester",
               "--out", str(tmp_path / "off")])
    assert rc == 0
    err = capsys.readouterr().err
    assert "bidirectional" in err and "lose accuracy" in err
    sd2, meta = load_checkpoint(tmp_path / "TSM_jester_mobilenetv2.pth")
    assert meta["layout"] == "reference-offline" and set(sd2) == set(sd)


def test_mismatched_checkpoints_get_one_clear_line(tmp_path, capsys):
    sd = _reference_online_state_dict()
    broken = dict(sd)
    del broken["features.5.conv.3.weight"]
    torch.save(broken, tmp_path / "missing.pth")
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pth"), "--labels", "jester", "--out",
                 str(tmp_path / "x")]) == 65
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing key features.5.conv.3.weight" in err and "(192, 1, 3, 3)" in err

    wrong = dict(sd)
    wrong["features.3.conv.0.weight"] = torch.zeros(96, 24, 1, 1)
    torch.save(wrong, tmp_path / "shape.pth")
    assert main(["export", "--checkpoint", str(tmp_path / "shape.pth"), "--labels", "jester", "--out",
                 str(tmp_path / "x")]) == 65
    err = capsys.readouterr().err.strip()
    assert "features.3.conv.0.weight has shape (96, 24, 1, 1)" in err and "(144, 24, 1, 1)" in err

    extra = dict(sd)
    extra["features.19.weight"] = torch.zeros(3)
    torch.save(extra, tmp_path / "extra.pth")
    assert main(["export", "--checkpoint", str(tmp_path / "extra.pth"), "--labels", "jester", "--out",
                 str(tmp_path / "x")]) == 65
    assert "unexpected key features.19.weight" in capsys.readouterr().err

    (tmp_path / "labels.txt").write_text("a\nb\n")
    torch.save(sd, tmp_path / "ok.pth")
    assert main(["export", "--checkpoint", str(tmp_path / "ok.pth"), "--labels", str(tmp_path / "labels.txt"),
                 "--out", str(tmp_path / "x")]) == 65
    assert "27 classes, the labels have 2" in capsys.readouterr().err

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    assert main(["export", "--checkpoint", str(tmp_path / "junk.pth"), "--labels", "jester", "--out",
                 str(tmp_path / "x")]) == 66
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "junk.pth" in err
    assert main(["export", "--checkpoint", str(tmp_path / "nope.pth"), "--labels", "jester", "--out",
                 str(tmp_path / "x")]) == 66
    assert main(["export", "--checkpoint", str(tmp_path / "ok.pth"), "--labels", "nosuchpreset", "--out",
                 str(tmp_path / "x")]) == 66
    assert "not a preset (jester)" in capsys.readouterr().err
