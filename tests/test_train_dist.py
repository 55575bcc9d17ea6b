"""Training on more than one process and core (issue 19): the loader's workers give the batches in-process
decoding gives, a clip that cannot be decoded is skipped and named, two processes under torchrun (CPU,
gloo) train the weights one process trains with the same global batch and seed, rank 0 alone writes the
bundle, --resume under torchrun goes on counting steps; --device/--amp/--batch/rendezvous errors are one
line with their exit code."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.cli import main  # noqa: E402
from edge.data.dataset import ClipAugment, load_dataset  # noqa: E402
from edge.errors import DeviceError, UsageError  # noqa: E402
from edge.models.loader import ClipDataset, ClipSource, StepSampler, make_loader  # noqa: E402
from edge.models.precision import resolve_amp, resolve_device  # noqa: E402
from edge.models.train import TrainConfig, train  # noqa: E402

# The tiny run both sides make: 3 classes x 4 clips of 8 frames, 32x32, width 0.25, a global batch of 6.
TINY = ["--size", "32", "--width", "0.25", "--frames", "4", "--stride", "1", "--batch", "6", "--epochs", "2",
        "--lr", "0.01", "--dropout", "0", "--threads", "1", "--workers", "0", "--device", "cpu", "--amp", "off",
        "--seed", "3"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), size=32, width=0.25, frames=4, stride=1, batch=6, epochs=2, lr=0.01,
                dropout=0.0, threads=1, workers=0, device="cpu", amp="off", seed=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tiny3(tmp_path_factory):
    gen = tmp_path_factory.mktemp("gen")
    assert main(["-q", "dataset", "synth", "--out", str(gen), "--per-class", "4", "--seed", "7", "--size", "64x48",
                 "--frames", "8"]) == 0
    root = tmp_path_factory.mktemp("tiny3")
    for label in ("no_motion", "swipe_left", "swipe_right"):
        shutil.copytree(gen / label, root / label)
    return root


def _batches(root, workers: int, epochs=(0, 1), rank=0, world=1, batch=6, cache_gb=6.0):
    ds = load_dataset(root)
    src = ClipSource(ds, cache_gb)
    data = ClipDataset(src, ClipAugment((32, 32), ds.labels), frames=4, stride=1, seed=11)
    sampler = StepSampler(len(src), batch, 11, rank, world)
    loader = make_loader(data, sampler, workers, pin=False)
    out = []
    for e in epochs:
        sampler.set_epoch(e)
        out += list(loader)
    return out


def test_workers_give_the_batches_of_in_process_decoding(tiny3):
    base = _batches(tiny3, 0)
    assert len(base) == 4 and all(b.x.shape == (6, 4, 3, 32, 32) and b.x.dtype == torch.uint8 for b in base)
    assert not torch.equal(base[0].x, base[2].x)  # another epoch, other clips and augmentations
    for other in (_batches(tiny3, 2), _batches(tiny3, 1, cache_gb=0.0)):   # workers; workers streaming from disk
        for a, b in zip(base, other, strict=True):
            assert a.index == b.index and torch.equal(a.y, b.y) and torch.equal(a.x, b.x)
    # two ranks' halves, side by side, are the one-process batch
    halves = [_batches(tiny3, 0, rank=r, world=2) for r in (0, 1)]
    for a, h0, h1 in zip(base, *halves, strict=True):
        assert h0.index + h1.index == a.index and torch.equal(torch.cat((h0.x, h1.x)), a.x)


def test_the_cache_is_one_shared_block_or_none_and_its_default_is_half_the_memory_available(tiny3, tmp_path, caplog):
    """Decoded once into a block in shared memory (the workers read it without a copy, and the end of the
    fill copies nothing: a cache of half the memory was killed by the kernel when it was cloned); clips larger
    than estimated grow it within the budget, or the set streams from disk."""
    import cv2

    from edge.models.loader import cache_budget_gb
    ds = load_dataset(tiny3)
    src = ClipSource(ds, 1.0)
    assert src.cached and src.store.is_shared() and src.store.numel() == sum(src.frames(i).nbytes
                                                                               for i in range(len(src)))
    # one clip twice the size of the others: the estimate (from the first) is short by one clip
    big = tmp_path / "big"
    shutil.copytree(tiny3, big)
    last = sorted((big / "swipe_right").glob("*.mp4"))[-1]
    frames = [cv2.resize(f, (128, 96)) for f in ClipSource(load_dataset(big), 0.0).frames(len(ds.clips) - 1)]
    vw = cv2.VideoWriter(str(last), cv2.VideoWriter_fourcc(*"mp4v"), 15, (128, 96))
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    ds2 = load_dataset(big)
    need = sum(ClipSource(ds2, 0.0).frames(i).nbytes for i in range(len(ds2.clips)))
    grown = ClipSource(ds2, 1.0)
    assert grown.cached and grown.store.numel() == need and grown.frames(len(ds2.clips) - 1).shape[1:3] == (96, 128)
    with caplog.at_level("INFO", logger="edge.models.loader"):
        tight = ClipSource(ds2, need * 1.01 / 1e9)   # the estimate fits, the old block and a grown one do not
    assert not tight.cached and "outgrow the cache" in caplog.text
    assert np.array_equal(tight.frames(0), src.frames(0))   # streamed from disk: the same frames
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    assert cache_budget_gb(None) == pytest.approx(0.5 * avail / 1e9, rel=0.2)
    assert cache_budget_gb(None, 4) == pytest.approx(cache_budget_gb(None) / 4, rel=0.2)
    assert cache_budget_gb(2.5, 4) == 2.5
    with pytest.raises(UsageError, match=r"--cache-gb -1: must be >= 0"):
        train(_cfg(tiny3, tmp_path / "o", cache_gb=-1.0))


def test_a_clip_that_cannot_be_decoded_is_skipped_and_named(tiny3, tmp_path, caplog):
    root = tmp_path / "data"
    shutil.copytree(tiny3, root)
    bad = root / "swipe_left" / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    skipped = [m for b in _batches(root, 2, cache_gb=0.0, batch=13, epochs=(0,)) for m in b.skipped]
    assert len(skipped) == 1 and str(bad) in skipped[0]
    out = train(_cfg(root, tmp_path / "m", batch=13, epochs=1, workers=1, cache_gb=0.0), progress=False)
    record = json.loads((out / "train.json").read_text())
    assert record["history"][0]["skipped"] == 1 and record["history"][0]["step"] == 1
    assert str(bad) in caplog.text and (out / "model.onnx").is_file()


def _torchrun(args: list[str], tmp_path, timeout=180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "edge",
           "-q", "train", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _weights(out) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


def _assert_same(a: dict, b: dict, start: dict) -> None:
    moved = max(float((a[k].float() - start[k].float()).abs().max()) for k in a if a[k].is_floating_point())
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())
    assert moved > 1e-2 and worst < 1e-6, (moved, worst)   # the weights moved far; the two runs agree


def test_two_processes_under_torchrun_train_what_one_process_trains(tiny3, tmp_path):
    # Both sides in float64: in float32 this tiny net's gradients on flat synthetic frames are ill-conditioned
    # (near-constant channels at 1x1 in the deep layers): measured against float64, one process's float32
    # gradient is off by 3% (11% at 64x64) and the two processes' by 1%, so float32 runs agree only to a
    # few percent. In float64 they agree to ~1e-12 in the loss; what is checked is the distributed math.
    one = train(_cfg(tiny3, tmp_path / "one", max_steps=2, float64=True), progress=False)  # one epoch
    r = _torchrun(["--data", str(tiny3), "--out", str(tmp_path / "two"), *TINY, "--max-steps", "2", "--float64"],
                  tmp_path)
    two = tmp_path / "two"
    assert r.stdout.strip() == str(two)    # rank 0 alone prints
    record = json.loads((two / "train.json").read_text())
    assert record["world_size"] == 2 and record["device"] == "cpu" and record["amp"] == "off"
    assert record["batch_per_process"] == 3 and record["history"][-1]["step"] == 2
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # one bundle, no extras
    init = _init_weights(tiny3)
    _assert_same(_weights(two), _weights(one), init)
    # --resume under torchrun: the second epoch, steps 3 and 4, equal to one process going on
    _torchrun(["--data", str(tiny3), "--out", str(two), *TINY, "--resume", "--float64"], tmp_path)
    train(_cfg(tiny3, one, resume=True, float64=True), progress=False)
    record = json.loads((two / "train.json").read_text())
    assert [h["step"] for h in record["history"]] == [2, 4] and record["world_size"] == 2
    _assert_same(_weights(two), _weights(one), init)


def _init_weights(data) -> dict[str, torch.Tensor]:
    """The weights both runs start from (the same seed, the same network)."""
    from edge.models.tsm import TSMNet
    torch.manual_seed(3)
    net = TSMNet(len(load_dataset(data).labels), width=0.25, dropout=0.0)
    return {k: v.double() for k, v in net.state_dict().items()}


def test_device_and_amp_choices():
    cpu = torch.device("cpu")
    assert resolve_device("auto") == cpu and resolve_device("CPU") == cpu
    with pytest.raises(UsageError, match="--device 'tpu': not one of auto, cpu, cuda, cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="--device cuda:1: CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(UsageError, match="--amp fp16: fp16 training is for CUDA"):
        resolve_amp("fp16", cpu)
    avx2 = {"avx2", "fma"}
    with pytest.raises(DeviceError, match=r"--amp bf16: this CPU \(AVX2\) has no native bf16"):
        resolve_amp("bf16", cpu, flags=avx2)
    assert resolve_amp("auto", cpu, flags=avx2).mode == "off"
    assert "emulated" in resolve_amp("auto", cpu, flags=avx2).reason
    native = {"avx512f", "avx512_bf16"}
    seconds = {None: 1.0, torch.bfloat16: 0.5}
    assert resolve_amp("auto", cpu, probe=seconds.get, flags=native).mode == "bf16"
    seconds[torch.bfloat16] = 0.95      # not faster by 1.1x: fp32 stays
    choice = resolve_amp("auto", cpu, probe=seconds.get, flags=native)
    assert choice.mode == "off" and "1.000 s fp32, 0.950 s bf16 per probe step" in choice.reason
    assert resolve_amp("bf16", cpu, flags=native).mode == "bf16" and resolve_amp("off", cpu).mode == "off"


def test_amp_probe_measures_and_keeps_its_measurement(tmp_path, monkeypatch):
    from edge.models.precision import probe_step
    from edge.models.tsm import TSMNet
    probe = probe_step(TSMNet(3, width=0.25), frames=2, size=32, clips=1, rounds=1)
    state = torch.get_rng_state()
    first = probe(None)
    assert first > 0 and (tmp_path / "cache" / "edge-tsm" / "amp-probe.json").is_file()
    assert torch.equal(torch.get_rng_state(), state)   # the run's random stream is untouched
    assert probe(None) == first   # kept: the same machine decides the same way


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_world_and_rendezvous_are_one_line(tiny3, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "--data", str(tiny3), "--out", str(tmp_path / "o"), *TINY, "--batch", "6"]) == 64
    err = capsys.readouterr().err.strip()
    assert "--batch 6 over 4 processes: the global batch must be a multiple of the world size" in err
    assert "\n" not in err
    monkeypatch.undo()
    assert main(["train", "--data", str(tiny3), "--out", str(tmp_path / "o"), "--device", "cuda"]) == 69
    assert "CUDA is not available" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny3), "--out", str(tmp_path / "o"), "--device", "cpu", "--amp",
                 "fp16"]) == 64
    # A process whose peers never come: the rendezvous fails after --dist-timeout, one line, exit 69.
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    r = subprocess.run([sys.executable, "-m", "edge", "train", "--data", str(tiny3), "--out", str(tmp_path / "o"),
                        *TINY, "--dist-timeout", "3"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 69, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("edge-tsm: error:")]
    assert len(lines) == 1 and "rendezvous at 127.0.0.1:" in lines[0] and "rank 1 of 2" in lines[0]


def test_train_json_records_where_it_ran(tiny3, tmp_path):
    out = train(_cfg(tiny3, tmp_path / "m", max_steps=1, workers=1), progress=False)
    record = json.loads((out / "train.json").read_text())
    assert (record["world_size"], record["device"], record["amp"], record["workers"]) == (1, "cpu", "off", 1)
    assert record["history"][0]["clips_per_s"] > 0 and np.isfinite(record["history"][0]["loss"])
