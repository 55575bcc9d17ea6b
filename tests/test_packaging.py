"""The built wheel holds every module and data file of the repository (CI installs in editable mode, which
would not notice a package missing from setup.py: ``edge.teach`` once was, and ``edge-tsm teach`` failed with
ModuleNotFoundError in a normal ``pip install``)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# where each top-level folder of the repository lands in the wheel (setup.py's package_dir)
INSTALLED_AS = {"edge": "edge", "models": "edge/models", "calibration": "edge/calibration", "systemd": "edge/systemd"}


def _tracked() -> list[str]:
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (REPO / p).is_file()]


def _expected(tracked: list[str]) -> set[str]:
    want = set()
    for rel in tracked:
        top, _, rest = rel.partition("/")
        if top not in INSTALLED_AS or not rest:
            continue
        if (rel.endswith(".py") or rel.startswith(("edge/studio/static/", "models/default/", "systemd/"))
                or rel == "edge/studio/API.md"):
            want.add(f"{INSTALLED_AS[top]}/{rest}")
    return want


def _can_build_here() -> bool:
    from importlib.metadata import PackageNotFoundError, version
    try:
        major, minor = (int(x) for x in version("setuptools").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    if (major, minor) >= (70, 1):
        return True
    try:
        version("wheel")
        return True
    except PackageNotFoundError:
        return False


def test_wheel_holds_every_module_and_data_file(tmp_path):
    tracked = _tracked()
    src = tmp_path / "src"
    for rel in tracked:  # the working tree's tracked files, as a clean clone has them
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    # the installed setuptools builds the wheel when it can (70.1 and later have bdist_wheel; before, the
    # wheel package); else pip's isolated build fetches one
    flags = ["--no-build-isolation"] if _can_build_here() else []
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *flags, "-q", "-w", str(tmp_path / "dist"),
                        str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("edge_tsm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    want = _expected(tracked)
    assert {"edge/teach/__init__.py", "edge/models/default/model.yaml", "edge/studio/static/index.html"} <= want
    missing = sorted(want - names)
    assert not missing, f"setup.py leaves these out of the wheel: {missing[:20]}"
