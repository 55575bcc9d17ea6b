"""``--device`` and ``--amp`` for ``edge-tsm train``: which device, which mixed precision, and why.

* ``--device auto|cpu|cuda|cuda:N``: auto takes CUDA when torch sees a GPU, else the CPU. Under
  torchrun each process takes ``cuda:LOCAL_RANK`` unless an index is given.
* ``--amp auto|bf16|fp16|off``: fp16 with a gradient scaler on CUDA; bf16 on CUDA when the GPU has it,
  or on a CPU with native bf16 (the ``avx512_bf16`` or ``amx_bf16`` flag). ``auto`` on a CPU without those
  flags is ``off`` (PyTorch would emulate bf16, slower than fp32); on a CPU with them it times a few
  training steps of the run's own network in fp32 and in bf16 and takes bf16 only when it is clearly
  faster. The measurement is kept in the cache folder (``amp-probe.json``), keyed by the CPU, the torch
  version, the thread count and the network's shape, so one machine decides once and a run's choice
  does not depend on the load at its start. Export always writes FP32 weights.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from edge.errors import DeviceError, UsageError

logger = logging.getLogger(__name__)

AMP_MODES = ("auto", "bf16", "fp16", "off")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_MIN_SPEEDUP = 1.1   # auto takes bf16 on a CPU only when a step is at least this much faster


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``--device`` -> a torch device.

    Raises:
        UsageError: not one of auto, cpu, cuda, cuda:N.
        DeviceError: CUDA asked for but absent (a CPU build of torch, no driver, or no such GPU index).
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    kind, _, index = spec.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise UsageError(f"--device {spec!r}: not one of auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no usable GPU or driver"
        raise DeviceError(f"--device {spec}: CUDA is not available (torch {torch.__version__}: {build}); "
                          "use --device cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU")
    n = torch.cuda.device_count()
    i = int(index) if index else local_rank
    if i >= n:
        raise DeviceError(f"--device {spec}: GPU index {i} does not exist (this machine has {n}: 0..{n - 1})"
                          + ("; under torchrun give --device cuda and one process per GPU" if not index else ""))
    return torch.device("cuda", i)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as the kernel lists them (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    try:
        for line in Path(cpuinfo).read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_isa(flags: set[str]) -> str:
    """A short name of the widest vector ISA (for logs, train.json and the docs' tables)."""
    parts = []
    if "avx512f" in flags:
        parts.append("AVX-512" + (" VNNI" if "avx512_vnni" in flags else ""))
    elif "avx2" in flags:
        parts.append("AVX2")
    if "avx512_bf16" in flags:
        parts.append("AVX512_BF16")
    if "amx_bf16" in flags:
        parts.append("AMX-BF16")
    return " + ".join(parts) or platform.machine()


@dataclass(frozen=True)
class Amp:
    """The mixed-precision choice of a run: ``mode`` (bf16, fp16, off) and why it was taken."""

    mode: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """fp16 needs a gradient scaler (its range underflows small gradients); bf16 and fp32 do not."""
        return torch.amp.GradScaler(device.type) if self.mode == "fp16" else None


def resolve_amp(spec: str, device: torch.device, probe: Any = None, flags: set[str] | None = None) -> Amp:
    """``--amp`` -> the precision this run uses on ``device``.

    ``probe``: a callable ``(dtype) -> seconds per step`` used by ``auto`` on a CPU with native bf16
    (see :func:`probe_step`); ``flags``: the CPU flags (default: /proc/cpuinfo).

    Raises:
        UsageError: not a mode, or fp16 on the CPU.
        DeviceError: bf16 on a CPU or GPU without native bf16.
    """
    if spec not in AMP_MODES:
        raise UsageError(f"--amp {spec!r}: not one of {', '.join(AMP_MODES)}")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if spec == "off":
            return Amp("off", "--amp off")
        if spec == "fp16":
            return Amp("fp16", "--amp fp16 (with a gradient scaler)")
        if spec == "bf16":
            if not bf16_ok:
                raise DeviceError(f"--amp bf16: {torch.cuda.get_device_name(device)} has no native bf16; "
                                  "use --amp fp16 (or auto)")
            return Amp("bf16", "--amp bf16")
        return Amp("bf16", "auto: the GPU has native bf16") if bf16_ok else \
            Amp("fp16", "auto: the GPU has no native bf16, fp16 with a gradient scaler")
    flags = cpu_flags() if flags is None else flags
    native = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if spec == "off":
        return Amp("off", "--amp off")
    if spec == "fp16":
        raise UsageError("--amp fp16: fp16 training is for CUDA (with a gradient scaler); on the CPU use "
                         "--amp bf16 where the CPU has native bf16, or --amp off")
    if not native:
        if spec == "bf16":
            raise DeviceError(f"--amp bf16: this CPU ({vector_isa(flags)}) has no native bf16 (neither of "
                              f"{', '.join(NATIVE_BF16_FLAGS)} in /proc/cpuinfo): PyTorch would emulate it, slower "
                              "than fp32; use --amp off (or auto)")
        return Amp("off", f"auto: no native bf16 on this CPU ({vector_isa(flags)}): bf16 would be emulated")
    if spec == "bf16":
        return Amp("bf16", f"--amp bf16 (native: {', '.join(native)})")
    if probe is None:
        return Amp("off", "auto: native bf16 but no measurement given")
    fp32_s, bf16_s = probe(None), probe(torch.bfloat16)
    speedup = fp32_s / bf16_s if bf16_s > 0 else 0.0
    clips = getattr(probe, "clips", None)   # a probe step is a few clips, not a training step's batch
    per = f" for a forward and backward pass of {clips} clips" if clips else " per probe step"
    why = f"measured {fp32_s:.3f} s fp32, {bf16_s:.3f} s bf16{per} ({', '.join(native)})"
    if speedup >= BF16_MIN_SPEEDUP:
        return Amp("bf16", f"auto: {why}: bf16 {speedup:.2f}x faster")
    return Amp("off", f"auto: {why}: bf16 not faster by {BF16_MIN_SPEEDUP:g}x")


def probe_step(net: torch.nn.Module, frames: int, size: int | tuple[int, int], clips: int = 2,
               rounds: int = 3) -> Any:
    """A ``probe`` for :func:`resolve_amp`: seconds of one forward+backward of a copy of ``net`` (CPU),
    the median of ``rounds`` after one warm-up, on ``clips`` random clips of the run's shape; cached per
    machine so the choice is made once (see the module docstring)."""
    h, w = (size, size) if isinstance(size, int) else size
    key = {"cpu": cpu_name(), "flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx"))),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "frames": frames,
           "size": h if h == w else [h, w],
           "clips": clips, "params": sum(p.numel() for p in net.parameters())}

    def measure(dtype: torch.dtype | None) -> float:
        name = "fp32" if dtype is None else "bf16"
        cached = _cache_get(key, name)
        if cached is not None:
            return cached
        model = copy.deepcopy(net).train()
        x = torch.randn(clips, frames, 3, h, w, generator=torch.Generator().manual_seed(0))
        y = torch.zeros(clips, dtype=torch.long)
        times = []
        with torch.random.fork_rng(devices=[]):   # dropout here must not move the run's own random stream
            for _ in range(rounds + 1):
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    loss = F.cross_entropy(model(x).mean(1), y)
                loss.backward()
                times.append(time.perf_counter() - t0)
        secs = sorted(times[1:])[len(times[1:]) // 2]
        _cache_put(key, name, secs)
        return secs
    measure.clips = clips   # type: ignore[attr-defined]  (what the seconds are of, for the log line)
    return measure


def _cache_file() -> Path | None:
    from edge.paths import default_folder
    found = default_folder("CACHE_DIRECTORY", "XDG_CACHE_HOME", ".cache")
    return found[0] / "amp-probe.json" if found else None


def _cache_get(key: dict[str, Any], name: str) -> float | None:
    path = _cache_file()
    try:
        entries = json.loads(path.read_text()) if path else []
    except (OSError, ValueError):
        return None
    for e in entries if isinstance(entries, list) else []:
        if isinstance(e, dict) and e.get("key") == key and isinstance(e.get(name), (int, float)):
            return float(e[name])
    return None


def _cache_put(key: dict[str, Any], name: str, secs: float) -> None:
    path = _cache_file()
    if path is None:
        return
    try:
        entries = json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError):
        entries = []
    entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    for e in entries:
        if e.get("key") == key:
            e[name] = secs
            break
    else:
        entries.append({"key": key, name: secs})
    try:
        from edge.util import atomic_write
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(entries[-32:], indent=1), mode=0o644)
    except OSError as e:  # a read-only home: the choice is still made, only measured again next time
        logger.debug("amp probe cache %s not written: %s", path, e)


def default_workers(device: torch.device, local_world: int = 1, threads: int | None = None) -> int:
    """``--workers`` when not given: the cores this process may use beyond its compute threads, at most 8.

    On a GPU the compute needs one core, the rest decode; on the CPU the compute threads take
    ``threads`` (torch's default: all) cores, so a small machine gets 0 workers (decoding in the
    training process) and a many-core one gets the spare cores."""
    cores = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
                // max(1, local_world))
    if device.type == "cuda":
        return max(0, min(8, cores - 1))
    compute = threads or cores
    return max(0, min(8, cores - compute))
