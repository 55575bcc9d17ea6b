"""A tqdm progress bar on stderr when tqdm is installed, progress is wanted and stderr is a terminal;
else the plain iterable (so logs and pipes get no bar fragments)."""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def bar(items: Iterable[Any] | None = None, *, enabled: bool, desc: str, total: int | None = None,
        unit: str = "frame") -> Any:
    """``tqdm(items, ...)`` on stderr, or ``items`` itself (or a no-op bar when ``items`` is None)."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False,
                        disable=None)  # None: off when stderr is not a terminal
    return items if items is not None else _NoBar()


class _NoBar:
    """Stands in for a manual tqdm bar (``update``/``close``) when there is none."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
