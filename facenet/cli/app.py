"""The command line: every absl flag, their checks, and one call into the package per mode.

Flags are parsed and checked here before anything heavy is imported, so a bad value fails in a fraction of a
second with one line on stderr and exit code 2; --help/-h/--helpfull print the usage and --version the version
(`facenet 0.3.0`), and exit 0.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import NoReturn

from absl import app, flags
from tqdm.contrib.logging import logging_redirect_tqdm

from facenet.cli import common
from facenet.cli.exit_codes import EXIT_CODES_TEXT, Exit
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
from facenet.progress import show_progress
from facenet.settings import max_upload_problem, scale_problem, training_problems, triplet_margin_problem
from facenet.text import OneLineFormatter

USAGE = """{prog}: train the embedding (-t True) or recognise faces (-t False).

    {prog} -t True -e 20 -m 0.5          # fine-tune on data/<person>/ photos
    {prog} -t False -wc True             # live webcam
    {prog} -t False -wc False --input X  # photos, folders, videos
    {prog} --verify=A.jpg,B.jpg          # 1:1 verification
    {prog} --lfw_pairs P --lfw_dir D     # LFW-protocol benchmark
    {prog} serve --port 8000             # REST service + web page (same as --serve)
    {prog} serve --input door=rtsp://…   # ... with live cameras (views, tracks, events)
    {prog} --version                     # which facenet this is

{exit_codes}
"""

HELP_WORDS = {"-h", "--h", "-help", "--help", "-helpshort", "--helpshort", "-?", "--?"}
HELPFULL_WORDS = {"-helpfull", "--helpfull"}
HELPXML_WORDS = {"-helpxml", "--helpxml"}
VERSION_WORDS = {"--version"}

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
    "learning_rate", None, "Training learning rate (default per --tune and model: adapter 1e-4; backbone 1e-6 for "
    "fused, sface and dlib; resnet50 1e-4).",
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
    "light) or backbone (the model's own weights, slow on a CPU).",
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
    return None


def _recognises_inputs(values: flags.FlagValues) -> bool:
    """True when the run reads --input: -t False, not the webcam, not --enroll, --verify, --lfw_pairs or --serve."""
    return not (values.lfw_pairs or values.verify or values.train or values.web_cam or values.enroll or values.serve)


def check_arguments(argv: list[str], values: flags.FlagValues = FLAGS) -> str | None:
    """check_flags, plus what the mode needs: no stray arguments, and something to recognise."""
    if len(argv) > 1:
        if values.verify is not None and len(values.verify) == 1:
            return (f"unexpected arguments {' '.join(argv[1:])!r}: --verify takes two photos separated by a comma: "
                    f"--verify={values.verify[0]},{argv[1]}")
        return f"unexpected arguments {' '.join(argv[1:])!r} (flags take True/False as values)"
    problem = check_flags(values)
    if problem:
        return problem
    if values.serve:
        from facenet.service.keys import key_problem  # the service's modules load only for --serve

        return common.serve_camera_problem(_serve_cameras(values)) or key_problem(values.host, values.api_key_file)
    if _recognises_inputs(values) and not values.input:
        return "no input to recognise: pass --input PHOTO,FOLDER,VIDEO (or -wc True for the webcam)"
    return None


def _serve_cameras(values: flags.FlagValues) -> list[str]:
    """The live cameras of `serve --input …` (--input's default, the example photos, is not one)."""
    return list(values.input or []) if values["input"].present else []


def _prog(argv0: str) -> str:
    """How the user started the command, for the usage: `facenet`, `python main.py` or `python -m facenet.cli`."""
    name = Path(argv0).name or "facenet"
    if name == "__main__.py":
        return "python -m facenet.cli"
    return f"python {name}" if name.endswith(".py") else name


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return Exit.USAGE


def help_text(argv0: str = "facenet", full: bool = False) -> str:
    """The usage and the flags of this command (`full`: also absl's own flags)."""
    flag_help = (FLAGS.get_help() if full else FLAGS.module_help(__name__)).strip("\n")
    footer = "" if full else "\nTry --helpfull to get a list of all flags.\n"
    return f"{USAGE.format(prog=_prog(argv0), exit_codes=EXIT_CODES_TEXT)}\nflags:\n\n{flag_help}\n{footer}"


def version_text() -> str:
    """What --version prints: `facenet 0.3.0` (the package's __version__, whichever way the command was started)."""
    from facenet import __version__

    return f"facenet {__version__}\n"


def _help_request(argv: list[str]) -> str | None:
    """'help', 'helpfull', 'helpxml' or 'version' when asked for before a `--` terminator, else None (the first
    one asked for wins)."""
    for word in argv[1:]:
        if word == "--":
            break
        if word in HELP_WORDS:
            return "help"
        if word in HELPFULL_WORDS:
            return "helpfull"
        if word in HELPXML_WORDS:
            return "helpxml"
        if word in VERSION_WORDS:
            return "version"
    return None


def preflight(argv: list[str]) -> tuple[int | None, list[str]]:
    """Parse and check the command line: (exit code, []) when the run ends here, else (None, remaining argv).

    Help and the version exit 0 (on stdout); an unknown flag, a bad value or a bad argument exits 2 with one line on
    stderr.
    """
    asked = _help_request(argv)
    if asked == "version":
        sys.stdout.write(version_text())
        return 0, []
    if asked == "helpxml":
        FLAGS.write_help_in_xml_format(sys.stdout)
        return 0, []
    if asked:
        sys.stdout.write(help_text(argv[0] if argv else "facenet", full=asked == "helpfull"))
        return 0, []
    FLAGS.unparse_flags()  # a fresh parse: values of an earlier in-process parse do not linger
    try:
        rest = FLAGS(argv)
    except flags.Error as error:
        FLAGS.unparse_flags()
        text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        return _error(f"{text} (see --help)"), []
    problem = check_arguments(rest)
    if problem:
        return _error(problem), []
    return None, rest


def _own_info(record: logging.LogRecord) -> bool:
    """INFO lines are the package's own; other libraries' (TensorFlow's converter: "Sharding callback duration",
    "Writing fingerprint", …) show from WARNING up."""
    return record.levelno >= logging.WARNING or record.name == "facenet" or record.name.startswith("facenet.")


def _setup_logging() -> None:
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 file name in a line: escaped, never raw bytes or a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s: %(message)s", force=True)
    for handler in logging.getLogger().handlers:  # a name with a newline cannot inject a fake log line
        handler.setFormatter(OneLineFormatter("%(levelname)s: %(message)s"))
        handler.addFilter(_own_info)
    for noisy in ("absl", "tensorflow", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _model() -> str:
    """The embedding model the commands get: --model, unless --backbone resnet50 asks for the trainable trunk."""
    return "resnet50" if FLAGS.backbone == "resnet50" else FLAGS.model


def _trained_dir() -> str | None:
    """Whose fine-tuned weights recognition, --verify and --lfw_pairs use: the gallery's (--database_dir), unless
    --pretrained."""
    return None if FLAGS.pretrained else FLAGS.database_dir


def run(argv: list[str]) -> int:
    """Run the mode the parsed flags ask for (one call into the package) and return its exit code."""
    problem = check_arguments(argv)
    if problem:
        return _error(problem)
    from facenet.cli.console import import_tensorflow_quietly  # OpenCV and PIL (through images): good flags only

    import_tensorflow_quietly()
    model = _model()
    from facenet.cli.event_output import LiveOptions  # light: live options of serve and recognize

    if FLAGS.serve:
        from facenet.cli.serve_command import serve_command  # each command loads its heavy modules when chosen

        return serve_command(
            host=FLAGS.host, port=FLAGS.port, key_file=FLAGS.api_key_file, max_upload_mb=FLAGS.max_upload_mb,
            data_dir=FLAGS.data_dir, database_dir=FLAGS.database_dir, database_url=FLAGS.database_url,
            weights_dir=FLAGS.weights_path, model=model, detector=FLAGS.detector, threshold=FLAGS.threshold,
            pretrained=FLAGS.pretrained, cameras=_serve_cameras(FLAGS),
            live=LiveOptions(FLAGS.track, FLAGS.events, FLAGS.mqtt_url, FLAGS.webhook),
            output_dir=FLAGS.output_dir, as_json=FLAGS.json,
        )
    if FLAGS.lfw_pairs:
        from facenet.cli.lfw_command import lfw_command  # TensorFlow and the pipeline: the chosen command only

        return lfw_command(
            pairs=FLAGS.lfw_pairs, lfw_dir=FLAGS.lfw_dir, flip=FLAGS.flip, as_json=FLAGS.json,
            detector=FLAGS.detector, model=model, weights_dir=FLAGS.weights_path, roc_png=FLAGS.roc_png,
            train_pairs=FLAGS.lfw_train_pairs, trained_dir=_trained_dir(),
        )
    if FLAGS.verify:
        from facenet.cli.verify_command import verify_command  # TensorFlow and the pipeline: the chosen command only

        return verify_command(
            FLAGS.verify, as_json=FLAGS.json, threshold=FLAGS.threshold, detector=FLAGS.detector,
            model=model, weights_dir=FLAGS.weights_path, trained_dir=_trained_dir(),
            prog=_prog(argv[0] if argv else "facenet"),
        )
    if FLAGS.train:
        from facenet.cli.train_command import train_command  # TensorFlow and training: the chosen command only

        # -m (None unless given), --loss and --strategy pass on only when given: each loss has its own default margin
        return train_command(
            data_dir=FLAGS.data_dir, weights_dir=FLAGS.weights_path, database_dir=FLAGS.database_dir,
            model=model, imagenet_weights=FLAGS.imagenet_weights, epochs=FLAGS.epochs,
            margin=FLAGS.margin, batch_size=FLAGS.batch_size,
            learning_rate=FLAGS.learning_rate, strategy=FLAGS.strategy if FLAGS["strategy"].present else None,
            detector=FLAGS.detector, log_dir=FLAGS.tensorboard_dir, validation_split=FLAGS.validation_split,
            as_json=FLAGS.json, pretrained=FLAGS.pretrained, loss=FLAGS.loss if FLAGS["loss"].present else None,
            scale=FLAGS.scale, tune=FLAGS.tune,
        )
    from facenet.cli.recognize_command import recognize_command  # the recognize command's modules load only here

    return recognize_command(
        web_cam=FLAGS.web_cam, inputs=FLAGS.input or [], camera=FLAGS.camera, output_dir=FLAGS.output_dir,
        data_dir=FLAGS.data_dir, database_dir=FLAGS.database_dir, weights_dir=FLAGS.weights_path,
        model=model, detector=FLAGS.detector, threshold=FLAGS.threshold, as_json=FLAGS.json,
        enroll_only=FLAGS.enroll, pretrained=FLAGS.pretrained, database_url=FLAGS.database_url,
        rebuild_gallery=FLAGS.rebuild_gallery,
        live=LiveOptions(FLAGS.track, FLAGS.events, FLAGS.mqtt_url, FLAGS.webhook, FLAGS.max_frames),
    )


def _absl_main(argv: list[str]) -> int:
    _setup_logging()
    show_progress(True)
    with logging_redirect_tqdm():  # log lines printed above progress bars, not through them
        return run(argv)


SUBCOMMANDS = {"serve": "--serve"}
"""Words accepted as the first argument, each standing for a flag: `facenet serve --port 8000`."""


def expand_subcommand(argv: list[str]) -> list[str]:
    """`facenet serve ...` -> `facenet --serve ...`: a subcommand word is its flag; every other flag still works."""
    if len(argv) > 1 and argv[1] in SUBCOMMANDS:
        return [argv[0], SUBCOMMANDS[argv[1]], *argv[2:]]
    return argv


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `facenet` and `python main.py`: check the command line, run the mode, exit with its code."""
    argv = expand_subcommand(list(sys.argv if argv is None else argv))
    code, rest = preflight(argv)
    if code is not None:
        sys.exit(code)
    app.run(_absl_main, argv=argv, flags_parser=lambda _argv: rest)
    raise AssertionError("app.run returned")  # pragma: no cover - app.run always exits
