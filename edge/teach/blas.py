"""BLAS threads for teach's numpy work: one, while the head is fitted.

The head's matrices are small (thousands of rows, a few hundred columns): OpenBLAS's threads cost more
in hand-overs than they save, and on a busy 2-core device they fight the inference engine and each
other (measured: fitting one head took 5.0 s with one thread, 29 s with two on a machine loaded with
other work). numpy has no public switch, so the loaded OpenBLAS library's own setter is called through
ctypes; where numpy uses another BLAS nothing changes (logged at debug level).
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import re
from collections.abc import Iterator

logger = logging.getLogger(__name__)
_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads")


def _openblas() -> list[tuple[object, object]]:
    """(setter, getter) of every OpenBLAS loaded in this process."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", f.read())))
    except OSError:
        return []
    out = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            getter = name.replace("set_num_threads", "get_num_threads")
            if hasattr(lib, name) and hasattr(lib, getter):
                out.append((getattr(lib, name), getattr(lib, getter)))
                break
    return out


@contextlib.contextmanager
def blas_threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``n`` OpenBLAS threads, then restore the previous number."""
    libs = _openblas()
    if not libs:
        logger.debug("teach: no OpenBLAS found in this process; BLAS threads left as they are")
    before = [get() for _, get in libs]
    for set_, _ in libs:
        set_(n)
    try:
        yield
    finally:
        for (set_, _), k in zip(libs, before, strict=False):
            set_(k)
