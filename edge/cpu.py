"""The CPU at hand, as INT8 kernels see it: its name, architecture and vector/matrix extensions.

INT8 results differ by CPU family (ONNX Runtime takes ``vpdpbusd`` on AVX-512 VNNI, ``vpmaddubsw`` with
int16 pair sums that can saturate on AVX2 only; ARM has its own dot-product kernels), so every figure
about INT8 (the guard in model.yaml, ``bench``, ``eval``, ``check``'s self-check) names the ISA it was
measured on. Read from /proc/cpuinfo (Linux, x86 ``flags`` or ARM ``Features``); no dependency.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# the extensions the INT8 kernels of ONNX Runtime and OpenVINO choose between, in this order
INT8_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "sve")


def machine(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU as /proc/cpuinfo names it, its core count, and the vector/matrix extensions INT8 kernels use."""
    name, flags = "?", set()
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "?":
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    isa = [f for f in INT8_ISA if f in flags]
    return {"cpu": name, "cores": os.cpu_count(), "arch": platform.machine(), "isa": isa,
            "python": platform.python_version()}


def isa_text(m: dict[str, Any] | None = None) -> str:
    """``AMD EPYC (x86_64; avx2, avx512f, avx512_vnni)``: one phrase for a log line or a report."""
    m = m or machine()
    return f"{m.get('cpu', '?')} ({m.get('arch', '?')}; {', '.join(m.get('isa') or []) or 'no INT8 ISA listed'})"


def family(m: dict[str, Any] | None = None) -> str:
    """The INT8 kernel family: ``x86 VNNI``, ``x86 AVX2 (no VNNI)``, ``x86`` (neither), ``ARM dot product``,
    ``ARM`` or the architecture's name."""
    m = m or machine()
    isa, arch = set(m.get("isa") or []), str(m.get("arch", "?"))
    if arch in ("x86_64", "AMD64", "i686", "x86"):
        if isa & {"avx512_vnni", "avx_vnni", "amx_int8"}:
            return "x86 VNNI"
        return "x86 AVX2 (no VNNI)" if "avx2" in isa else "x86"
    if arch in ("aarch64", "arm64", "armv7l"):
        return "ARM dot product" if "asimddp" in isa else "ARM"
    return arch
