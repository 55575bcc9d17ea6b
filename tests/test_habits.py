"""The code's habits that a reviewer would otherwise have to count: no source file over 450 lines."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 450


def test_no_source_file_over_450_lines():
    long = {str(p.relative_to(REPO)): n for top in ("edge", "models", "calibration")
            for p in (REPO / top).rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines (split by responsibility): {long}"
