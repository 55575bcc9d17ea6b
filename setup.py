"""edge-tsm: online TSM video classification for edge devices (runtime + model toolchain)."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
about: dict = {}
exec((ROOT / "edge" / "__init__.py").read_text(), about)

setup(
    name="edge-tsm",
    version=about["__version__"],
    description="Online Temporal Shift Module video classifier for edge devices (OpenVINO / ONNX Runtime)",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # One top-level import name: models/ and calibration/ install as edge.models / edge.calibration.
    # Every package under edge/ is found (a hand-kept list once left edge.teach out of the built wheel).
    packages=find_packages(include=["edge", "edge.*"]) + ["edge.models", "edge.calibration", "edge.systemd"],
    package_dir={"edge": "edge", "edge.models": "models", "edge.calibration": "calibration", "edge.systemd": "systemd"},
    package_data={"edge.models": ["default/*.yaml", "default/*.onnx", "default/*.md", "default/weights.pt",
                                   "presets/*.txt"],
                  "edge.systemd": ["*.service", "*.conf", "*.rules"],
                  "edge.studio": ["API.md", "static/*.html", "static/*.css", "static/js/*.js"]},
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyyaml>=6.0",
        "pydantic>=2.5",
        "pyserial>=3.5",
        "onnx>=1.15",
    ],
    extras_require={
        # Engines are extras: on a Jetson the GPU build of ONNX Runtime comes from JetPack and
        # must not be replaced by the CPU wheel.
        "onnxruntime": ["onnxruntime>=1.17"],
        "openvino": ["openvino>=2024.0"],
        # scikit-image: the photographs generator 5 textures with (the sample images inside its wheel)
        "train": ["torch==2.13.0", "onnxscript>=0.1", "tqdm>=4.60", "scikit-image>=0.22"],
        # edge-tsm dataset synth with photographs, without the PyTorch toolchain
        "synth": ["scikit-image>=0.22"],
        # edge-tsm calibrate / quantize: onnxruntime.quantization (also on the device; no torch)
        "quantize": ["onnxruntime>=1.17", "tqdm>=4.60", "sympy>=1.12"],
        # libgpiod v2 bindings. On a Jetson the sink can use Jetson.GPIO instead (JetPack's, or
        # pip install Jetson.GPIO there): not listed, it cannot be installed or imported elsewhere.
        "gpio": ["gpiod>=2.1"],
        "mqtt": ["paho-mqtt>=2.0"],
        # edge-tsm studio: the local web app (Starlette + uvicorn; the runtime install does not grow)
        "studio": ["starlette>=0.40", "uvicorn>=0.30"],
        # gpiod: the GPIO adapter's tests; paho-mqtt: the MQTT sink's tests (against Debian's mosquitto)
        "dev": ["pytest>=7.4", "ruff>=0.17,<0.18", "hypothesis>=6.90", "tqdm>=4.60", "gpiod>=2.1", "paho-mqtt>=2.0",
                # the studio's browser tests drive Debian's chromium (never a downloaded browser)
                "playwright>=1.40",
                # the studio's API tests (Starlette's TestClient needs httpx)
                "starlette>=0.40", "uvicorn>=0.30", "httpx>=0.27"],
    },
    entry_points={"console_scripts": ["edge-tsm = edge.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
