"""Model toolchain (installed as ``edge.models``): the TSM network, datasets, training, export.

Importing this package never imports torch; only ``edge.models.tsm``, ``train`` and ``export`` do.
The embedded default bundle lives in ``default/`` beside this file.
"""
from pathlib import Path

DEFAULT_BUNDLE = Path(__file__).parent / "default"
PRESETS = Path(__file__).parent / "presets"
