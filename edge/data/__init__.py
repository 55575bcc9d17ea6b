"""Torch-free data code: video datasets (``dataset``), the procedural motion generator (``synth``) and
field-clip datasets (``fieldclips``).

The runtime (the synthetic camera, the demo, evaluation, calibration) imports these without importing
the PyTorch toolchain in :mod:`edge.models`, which reads its training data from here too.
"""
