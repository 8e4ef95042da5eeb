"""Every absl flag of the command line and the checks of their values (one line per bad value).

Which command owns which flag is facenet/cli/commands.py; without a command word (the design card's flat form,
`python main.py -t True …`) every flag is accepted, as before.
"""

from __future__ import annotations

from absl import flags

from facenet.cli import common
from facenet.config import (
    BACKBONES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DETECTOR,
    DEFAULT_EPOCHS,
    DEFAULT_LOSS,
    DEFAULT_MODEL,
    DEFAULT_TUNE,
    DEFAULT_VALIDATION_SPLIT,
    DETECTORS,
    LOSSES,
    PRETRAINED_MODELS,
    TRIPLET_LOSSES,
    TUNE_MODES,
    default_examples_dir,
    default_weights_dir,
)
from facenet.settings import (
    KEEP_DAYS,
    KEEP_FACES,
    max_upload_problem,
    retention_problems,
    scale_problem,
    training_problems,
    triplet_margin_problem,
)

TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "y"), ("false", "0", "no", "n")


class BoolWordParser(flags.ArgumentParser):
    """True/False/true/false/1/0 as a separate argument: absl's own booleans read `-t False` as True."""

    syntax_help = "true|false"

    def parse(self, argument: object) -> bool:
        if isinstance(argument, bool):
            return argument
        word = str(argument).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError(f"expected True or False, got {argument!r}")

    def flag_type(self) -> str:
        return "bool"


def define_bool_word(name: str, default: bool, help_text: str, short_name: str) -> None:
    """A boolean flag that takes its value as a word (`-t False`), not absl's --flag/--noflag."""
    flags.DEFINE(BoolWordParser(), name, default, help_text, short_name=short_name)


_EXAMPLES = default_examples_dir()

define_bool_word("train", False, "True: train the embedding on --data_dir; False: recognise faces.", "t")
define_bool_word("web_cam", False, "With -t False: True reads the webcam, False reads --input.", "wc")
flags.DEFINE_string(
    "weights_path", str(default_weights_dir()),
    "Weights folder: converted pretrained models and trained weights (default: weights/ of the source checkout; "
    "installed: $FACENET_HOME, else ${XDG_CACHE_HOME:-~/.cache}/facenet/weights).",
    short_name="wp",
)
flags.DEFINE_float(
    "margin", None, "Margin of the chosen --loss (default per loss: semi_hard and batch_hard 0.5, unit-sphere "
    "distance; cosface 0.35, arcface 0.5 radians; sphereface 4, an integer).", short_name="m",
)
flags.DEFINE_integer("epochs", DEFAULT_EPOCHS, "Training epochs.", short_name="e")
flags.DEFINE_integer(
    "batch_size", DEFAULT_BATCH_SIZE, "Training batch size (P identities x K photos).", short_name="bs"
)
flags.DEFINE_float(
    "learning_rate", None, "Training learning rate (default per --tune and model: adapter, top, top2 1e-4 (the "
    "adapter's; their blocks 1e-6, gains 1e-2); backbone 1e-6 for fused, sface and dlib; resnet50 1e-4).",
    short_name="lr",
)
flags.DEFINE_enum(
    "model", DEFAULT_MODEL, list(PRETRAINED_MODELS),
    "Embedding model: dlib (dlib ResNet twin), sface (SFace twin) or fused (both, concatenated)",
)
flags.DEFINE_enum(
    "detector", DEFAULT_DETECTOR, list(DETECTORS),
    "Face detector: yunet (OpenCV Zoo YuNet, fast and accurate), hog (dlib HOG, CPU) or cnn (dlib CNN, slow "
    "without a GPU).",
    short_name="d",
)
flags.DEFINE_string("data_dir", "data", "Enrollment photos, one folder per person: data/<person name>/*.jpg.")
flags.DEFINE_string("database_dir", "database", "Where the embedding database lives.")
flags.DEFINE_string(
    "database_url", None, "PostgreSQL URL of a shared gallery (postgresql://…); default: the file in --database_dir"
)
flags.DEFINE_bool(
    "rebuild_gallery", False, "With --enroll --database_url: allow dropping a shared gallery made by another model "
    "(everyone in it, every site's people; without it such an enrollment is refused, saying how many would be lost).",
)
flags.DEFINE_enum(
    "backbone", BACKBONES[0], list(BACKBONES),
    "Older flag, kept for scripts: dlib_resnet (the default) uses --model; resnet50 trains Keras' ResNet50 trunk "
    "from scratch (with -t True; --imagenet_weights to start from a local ImageNet file).",
)
flags.DEFINE_string("imagenet_weights", None, "resnet50 only: a local ImageNet weights file (no downloads).")
flags.DEFINE_bool(
    "pretrained", False, "Use the pretrained models, ignoring the gallery's fine-tuned weights (in --database_dir); "
    "with -t True: start training from the pretrained model instead of the gallery's trained weights.",
)
flags.DEFINE_enum(
    "tune", DEFAULT_TUNE, list(TUNE_MODES),
    "What -t True trains: adapter (a residual adapter over the frozen model: fast, adapts to your camera, masks or "
    "light), top / top2 (the adapter, the last (two) block(s) of each branch and a weight per position of their "
    "feature maps, on cached maps: where a mask or blur hides the face) or backbone (the model's own weights, slow "
    "on a CPU).",
)
flags.DEFINE_bool("json", False, "Machine-readable output: JSON lines on stdout, everything human on stderr.")
flags.DEFINE_string("lfw_pairs", None, "LFW-format pairs file: run the verification benchmark.")
flags.DEFINE_string("lfw_dir", None, "Image root of the LFW pairs (<dir>/<Name>/<Name>_<NNNN>.jpg).")
flags.DEFINE_string(
    "lfw_train_pairs", None, "Pairs file (same --lfw_dir) that sets the threshold for --lfw_pairs; default: 10-fold CV"
)
flags.DEFINE_bool("flip", False, "Test-time augmentation: average mirrored chips at three paddings (6 passes).")
flags.DEFINE_string("roc_png", "lfw_roc.png", "Where the LFW benchmark saves its ROC curve.")
flags.DEFINE_list(
    "input", [str(_EXAMPLES)] if _EXAMPLES else None,
    "Photos, folders of photos and video files to recognise (default: examples/photos of the source checkout; "
    "installed: none, pass --input); or live cameras: [name=]rtsp://…, [name=]http(s)://… (MJPEG), "
    "[name=]webcam:N, several at once (cam1, cam2, … when unnamed).",
)
flags.DEFINE_bool(
    "collect_unknowns", None, "Keep each Unknown face that passes the quality gate (one per track) in the gallery's "
    "store of unknown faces, grouped by stranger (`facenet unknowns`). Default: on for the webcam and live cameras, "
    "off for photos and videos.",
)
flags.DEFINE_string("name", None, "facenet unknowns: name a group, GROUP_ID=Person Name (enrolls him).")
flags.DEFINE_string("ignore", None, "facenet unknowns: keep this group but raise no more alerts for it.")
flags.DEFINE_string("forget", None, "facenet unknowns: delete this group and its faces.")
flags.DEFINE_string(
    "not_person", None, "facenet unknowns: PHOTO=Person Name: the photo's largest face is not that person (a face "
    "nearer to it than to the person's own photos is no longer named so).",
)
flags.DEFINE_bool(
    "track", None, "Follow faces across frames (one id and a steady name per person, a few embeddings per track). "
    "Default: on for live cameras and with --events/--mqtt_url/--webhook, off for video files.",
)
flags.DEFINE_string(
    "events", None, "Track events (appeared, named, left) as JSON lines to this file (appended), or - for stdout. "
    "Default: one line per event on stdout (JSON with --json).",
)
flags.DEFINE_string(
    "mqtt_url", None, "Publish track events and presence to this MQTT broker: mqtt://[user:pw@]host[:port]."
)
flags.DEFINE_string("webhook", None, "POST every track event as JSON to this http(s) URL.")
flags.DEFINE_string(
    "frigate_url", None, "Frigate's API (http://frigate:5000, its unauthenticated port): recognise the people of its "
    "person events and write each enrolled name back as the event's sub label (serve: in the service).",
)
flags.DEFINE_string(
    "frigate_mqtt_url", None, "Frigate's MQTT broker, mqtt://[user:pw@]host[:port] (default: --mqtt_url, else port "
    "1883 of --frigate_url's host).",
)
flags.DEFINE_string(
    "frigate_topic_prefix", "frigate", "Frigate's mqtt.topic_prefix: its events are read from <prefix>/events."
)
flags.DEFINE_list("frigate_cameras", None, "Only the person events of these Frigate cameras (default: all).")
flags.DEFINE_integer(
    "frigate_attempts", 5, "Attempts per Frigate event at most (each fetches its snapshot and the camera's latest "
    "frame); none more once it is named surely, or after its end.",
)
flags.DEFINE_integer(
    "max_frames", 0, "Live cameras: stop after this many analysed frames per camera (0: until Ctrl-C)."
)
flags.DEFINE_string("output_dir", "output", "Where annotated photos and videos are written.")
flags.DEFINE_integer("camera", 0, "Webcam index.")
flags.DEFINE_float("threshold", None, "Override the calibrated distance threshold (unit-sphere Euclidean).")
flags.DEFINE_list("verify", None, "Two photos A,B: same person or not (1:1 verification).")
flags.DEFINE_bool("enroll", False, "Only sync the database with --data_dir and print the enrollment report.")
flags.DEFINE_enum(
    "strategy", DEFAULT_LOSS, list(TRIPLET_LOSSES),
    "Older name of --loss, kept for scripts (triplet mining only); when both are given, --loss wins.",
)
flags.DEFINE_enum(
    "loss", DEFAULT_LOSS, list(LOSSES),
    "Training loss: semi_hard or batch_hard triplet mining, or the cosface, arcface or sphereface margin losses.",
)
flags.DEFINE_float("scale", None, "margin losses: logit scale s (default per loss)")
flags.DEFINE_string("tensorboard_dir", "logs", "TensorBoard logs of training.")
flags.DEFINE_float(
    "validation_split", DEFAULT_VALIDATION_SPLIT, "Share of each person's photos held out to validate training."
)
flags.DEFINE_bool("serve", False, "Run the REST service and web page (also: `facenet serve`) on --host:--port.")
flags.DEFINE_string("host", "127.0.0.1", "serve: address to listen on (0.0.0.0: every interface; needs API keys).")
flags.DEFINE_integer("port", 8000, "serve: TCP port.")
flags.DEFINE_string(
    "api_key_file", None, "serve: file of accepted API keys, one per line (also: env FACENET_API_KEYS=k1,k2); "
    "clients send one in the x-api-key header. Without keys the service is open (loopback only).",
)
flags.DEFINE_float("max_upload_mb", 10.0, "serve: largest request body in MiB (larger: 413).")
flags.DEFINE_float(
    "unknown_days", KEEP_DAYS, "Unknown faces collected (strangers, to name or ignore later) are forgotten after this "
    "many days (inf: no age limit).",
)
flags.DEFINE_integer(
    "unknown_faces", KEEP_FACES, "At most this many unknown faces are kept; beyond it the oldest are forgotten.",
)

FLAGS = flags.FLAGS

TRAINING_FLAGS = {"epochs": "epochs (-e)", "batch_size": "batch_size (-bs)",
                  "learning_rate": "learning_rate (-lr)", "validation_split": "validation_split"}
"""How the command line names each training setting in a complaint."""


def check_flags(values: flags.FlagValues = FLAGS) -> str | None:
    """The first flag value that cannot work, as one line (no 'error: ' prefix); None when all can.

    Written as `not (x > 0)` so that NaN fails too.
    """
    if values.camera < 0:
        return f"--camera must be 0 or more (a webcam index), got {values.camera}"
    problem = common.threshold_problem(values.threshold)
    if problem:
        return problem
    for setting, problem in training_problems(values.epochs, values.batch_size, values.learning_rate,
                                              values.validation_split):
        return f"--{TRAINING_FLAGS[setting]} {problem}"
    loss = values.loss if values["loss"].present or not values["strategy"].present else values.strategy
    problem = None if values.margin is None or loss not in TRIPLET_LOSSES else triplet_margin_problem(values.margin)
    if problem:  # a margin loss's margin is checked by the library, which knows each loss's range
        return f"--margin (-m) {problem}"
    problem = None if values.scale is None else scale_problem(values.scale)
    if problem:
        return f"--scale {problem}"
    if not 0 <= values.port <= 65535:
        return f"--port must be in 0-65535, got {values.port}"
    problem = max_upload_problem(values.max_upload_mb)
    if problem:
        return f"--max_upload_mb {problem}"
    for setting, problem in retention_problems(values.unknown_days, values.unknown_faces):
        return f"--{setting} {problem}"
    return _live_problem(values)


def _live_problem(values: flags.FlagValues) -> str | None:
    """The flags of live cameras and events: URL schemes, a frame limit of 0 or more, events need tracking."""
    if values.max_frames < 0:
        return f"--max_frames must be 0 (no limit) or more, got {values.max_frames}"
    if values.mqtt_url and not values.mqtt_url.startswith(("mqtt://", "mqtts://")):
        return f"--mqtt_url must look like mqtt://host:1883, got {values.mqtt_url!r}"
    if values.webhook and not values.webhook.startswith(("http://", "https://")):
        return f"--webhook must be an http(s):// URL, got {values.webhook!r}"
    if values.track is False and (values.events or values.mqtt_url or values.webhook):
        return "--events, --mqtt_url and --webhook report tracks: they cannot be used with --notrack"
    return _frigate_problem(values)


def _frigate_problem(values: flags.FlagValues) -> str | None:
    """The Frigate flags: an http(s) API URL, an mqtt(s) broker URL, a topic prefix without wildcards, 1+ attempts."""
    if values.frigate_url is not None:
        from facenet.live.frigate.api import FrigateApi  # light: urllib only

        try:
            FrigateApi(values.frigate_url)
        except ValueError as error:
            return f"--frigate_url {error}"
    if values.frigate_mqtt_url and not values.frigate_mqtt_url.startswith(("mqtt://", "mqtts://")):
        return f"--frigate_mqtt_url must look like mqtt://host:1883, got {values.frigate_mqtt_url!r}"
    prefix = values.frigate_topic_prefix
    if not prefix.strip("/") or any(ch in prefix for ch in "+#"):
        return f"--frigate_topic_prefix must be a topic without wildcards (Frigate's default: frigate), got {prefix!r}"
    if values.frigate_attempts < 1:
        return f"--frigate_attempts must be at least 1, got {values.frigate_attempts}"
    return None

