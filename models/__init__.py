"""Model toolchain (installed as ``edge.models``): the TSM network, training, export, evaluation.

Importing this package never imports torch; only ``edge.models.tsm``, ``train``, ``export`` and ``recipe``
do. The data code they read (datasets, the procedural generator, field clips) is torch-free and lives in
:mod:`edge.data`, where the runtime imports it without this package. The embedded default bundle lives in
``default/`` beside this file (the runtime finds it without importing this package:
:func:`edge.bundle.default_root`).
"""
from pathlib import Path

DEFAULT_BUNDLE = Path(__file__).parent / "default"
PRESETS = Path(__file__).parent / "presets"
