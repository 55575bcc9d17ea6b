"""INT8 calibration and quantization (installed as ``edge.calibration``)."""
