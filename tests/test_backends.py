"""Contract tests run on every registered engine: real tiny ONNX graphs, checked against numpy."""
from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from tinymodel import STATE_SHAPES, build_tiny_bundle, reference

from edge.backends import ENGINES, Backend, available_engines, create_backend
from edge.errors import ConfigError, DeviceError, InputError, ModelError

ENGINE_PARAMS = [pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None,
                                                             reason=f"{name} not installed"))
                 for name in ENGINES]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny")) / "model.onnx"


def _feeds(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"frame": rng.normal(size=(1, 3, 16, 16)).astype(np.float32),
            "state0": rng.normal(size=STATE_SHAPES[0]).astype(np.float32),
            "state1": rng.normal(size=STATE_SHAPES[1]).astype(np.float32)}


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_contract_matches_numpy(engine, model):
    b = create_backend(engine, model)
    assert isinstance(b, Backend) and b.name == engine
    assert b.input_names == ["frame", "state0", "state1"]
    assert b.output_names == ["logits", "state0_out", "state1_out"]
    assert b.warmup_s > 0 and "CPU" in b.device and b.precision_note.startswith("f32")
    ref = reference()
    rng = np.random.default_rng(0)
    for _ in range(3):
        feeds = _feeds(rng)
        kept = {k: v.copy() for k, v in feeds.items()}
        out = b.run(feeds)
        want = ref.step(feeds["frame"], feeds["state0"], feeds["state1"])
        for name, w in zip(b.output_names, want, strict=False):
            assert out[name].dtype == np.float32 and out[name].shape == w.shape
            np.testing.assert_allclose(out[name], w, atol=1e-5)
        for k in feeds:  # inputs are never written
            np.testing.assert_array_equal(feeds[k], kept[k])
    first = {k: v.copy() for k, v in b.run(feeds).items()}
    held = b.run(feeds)
    b.run(_feeds(rng))  # outputs belong to the caller: a later run must not overwrite them
    for k in held:
        np.testing.assert_array_equal(held[k], first[k])
    b.close()
    with pytest.raises(ModelError, match="closed"):
        b.run(feeds)


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_bad_feeds_and_models(engine, model, tmp_path):
    b = create_backend(engine, model, threads=1)
    with pytest.raises(ModelError, match="inference failed"):
        b.run({"frame": np.zeros((1, 3, 16, 16), np.float32)})
    with pytest.raises(InputError, match="no such file"):
        create_backend(engine, tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 not a model \xff")
    with pytest.raises(ModelError) as info:
        create_backend(engine, bad)
    assert "\n" not in str(info.value)


def _unavailable_device(engine: str) -> tuple[str, str]:
    """A device this machine lacks and the name the error should list as available."""
    if engine == "onnxruntime":
        import onnxruntime as ort
        have = ort.get_available_providers()
        for dev, prov in (("tensorrt", "TensorrtExecutionProvider"), ("cuda", "CUDAExecutionProvider"),
                          ("openvino", "OpenVINOExecutionProvider")):
            if prov not in have:
                return dev, "CPUExecutionProvider"
    else:
        import openvino as ov
        have = ov.Core().available_devices
        for dev in ("NPU", "GPU"):
            if dev not in {d.split(".")[0] for d in have}:
                return dev, "CPU"
    pytest.skip(f"every {engine} device is present here")


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_unavailable_device_names_the_available_ones(engine, model, caplog):
    dev, listed = _unavailable_device(engine)
    with pytest.raises(DeviceError) as info:
        create_backend(engine, model, device=dev)
    assert dev in str(info.value) and "available:" in str(info.value) and listed in str(info.value)
    with caplog.at_level(logging.WARNING):
        b = create_backend(engine, model, device=dev, allow_fallback=True)
    assert "CPU" in b.device and any("falling back" in r.getMessage() for r in caplog.records)


def test_registry_errors(model, monkeypatch):
    with pytest.raises(ConfigError, match="engine 'tflite': not one of onnxruntime, openvino"):
        create_backend("tflite", model)
    with pytest.raises(ConfigError, match="precision hint"):
        create_backend("onnxruntime", model, precision_hint="bf16")
    with pytest.raises(ConfigError, match="device 'quantum'"):
        create_backend("onnxruntime", model, device="quantum")
    assert set(available_engines()) <= set(ENGINES)
    # An engine whose package is missing says what to install.
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.delitem(sys.modules, "edge.backends.openvino", raising=False)
    with pytest.raises(DeviceError) as info:
        create_backend("openvino", model)
    assert str(info.value) == "engine 'openvino' needs the openvino package: pip install edge-tsm[openvino]"


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_openvino_precision_hint_is_reported(model):
    """The f32 hint is what keeps OpenVINO from running bf16 on CPUs that have it."""
    assert create_backend("openvino", model, precision_hint="f32").precision_note == "f32"
    note = create_backend("openvino", model, precision_hint="default").precision_note
    assert note in ("f32", "bf16", "f16")


def test_tensorrt_options_cache_keyed_by_model_and_version(model, tmp_path):
    """The Jetson path cannot run here; its provider options can: FP16 unless f32 is asked for, and an
    engine cache folder that changes with the graph's bytes and the ONNX Runtime version."""
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from edge.backends.onnxruntime import TENSORRT
    b = create_backend("onnxruntime", model, device="CPU")
    try:
        f32 = b._provider_options(TENSORRT, tmp_path, "f32")
        fast = b._provider_options(TENSORRT, tmp_path, "default")
        assert f32["trt_fp16_enable"] is False and fast["trt_fp16_enable"] is True
        folder = fast["trt_engine_cache_path"]
        assert fast["trt_engine_cache_enable"] and folder.endswith(f"-ort{ort.__version__}")
        assert b._provider_options("CPUExecutionProvider", tmp_path, "default") == {}
        other = tmp_path / "other.onnx"
        other.write_bytes(b.model_path.read_bytes() + b"\0")
        b.model_path, kept = other, b.model_path
        assert b._provider_options(TENSORRT, tmp_path, "default")["trt_engine_cache_path"] != folder
        b.model_path = kept
    finally:
        b.close()


def test_openvino_auto_list_keeps_the_present_devices(model, caplog):
    """``AUTO:NPU,GPU,CPU`` (the order the docs recommend on a NUC) runs where only a CPU exists,
    instead of failing on the absent devices' plugins; the log says what was dropped."""
    pytest.importorskip("openvino")
    from edge.backends.openvino import present_candidates
    assert present_candidates("AUTO:NPU,GPU,CPU", ["CPU"]) == "AUTO:CPU"
    assert present_candidates("AUTO:NPU,GPU.1,CPU", ["CPU", "GPU.0", "GPU.1"]) == "AUTO:GPU.1,CPU"
    assert present_candidates("AUTO:NPU", ["CPU"]) == "AUTO:NPU"  # nothing present: check_device says so
    assert present_candidates("HETERO:GPU,CPU", ["CPU"]) == "HETERO:GPU,CPU"
    with caplog.at_level(logging.INFO):
        b = create_backend("openvino", model, device="AUTO:NPU,GPU,CPU")
    try:
        assert "CPU" in b.device and "not present here" in caplog.text
    finally:
        b.close()


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
def test_compile_cache_folder_is_private(engine, model, tmp_path):
    """OpenVINO's CACHE_DIR and the TensorRT engine cache follow the batched graph's folder rules
    (edge.cache): made 0700, refused when others may write in it or another user owns it."""
    pytest.importorskip(engine)
    import os
    import stat

    def cache_of(folder):
        if engine == "openvino":
            from edge.backends.openvino import OpenVinoBackend
            return Path(OpenVinoBackend._config("CPU", None, "f32", folder)["CACHE_DIR"])
        from edge.backends.onnxruntime import TENSORRT
        b = create_backend("onnxruntime", model, device="CPU")
        try:
            return Path(b._provider_options(TENSORRT, folder, "f32")["trt_engine_cache_path"])
        finally:
            b.close()

    made = cache_of(tmp_path / "new" / "cache")
    assert made.is_dir() and stat.S_IMODE(made.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(InputError, match=r"engine.cache_dir .*shared: refused: writable by its group and others"):
        cache_of(shared)
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(InputError, match="refused: owned by"):
            cache_of(theirs)


def test_openvino_compiles_with_a_private_cache(model, tmp_path):
    pytest.importorskip("openvino")
    b = create_backend("openvino", model, cache_dir=tmp_path / "ov")
    try:
        assert (tmp_path / "ov").is_dir() and oct((tmp_path / "ov").stat().st_mode & 0o777) == "0o700"
    finally:
        b.close()
