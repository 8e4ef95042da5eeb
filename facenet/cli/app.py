"""The command line: every absl flag, their checks, and one call into the package per mode.

Flags are parsed and checked here before anything heavy is imported, so a bad value fails in a fraction of a
second with one line on stderr and exit code 2; --help/-h/--helpfull print the usage and exit 0.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from absl import app, flags

from facenet.config import MIN_BATCH, default_examples_dir, default_weights_dir

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

USAGE = """{prog}: train the embedding (-t True) or recognise faces (-t False).

    {prog} -t True -e 20 -m 0.5          # fine-tune on data/<person>/ photos
    {prog} -t False -wc True             # live webcam
    {prog} -t False -wc False --input X  # photos, folders, videos
    {prog} --verify=A.jpg,B.jpg          # 1:1 verification
    {prog} --lfw_pairs P --lfw_dir D     # LFW-protocol benchmark

Exit codes: 0 done, 1 some input failed (each named on stderr), 2 bad arguments, 130 interrupted.
"""

USAGE_EXIT = 2
"""Exit code of a bad flag, value or argument (the Unix convention; absl's own is 1)."""

HELP_WORDS = {"-h", "--h", "-help", "--help", "-helpshort", "--helpshort", "-?", "--?"}
HELPFULL_WORDS = {"-helpfull", "--helpfull"}
HELPXML_WORDS = {"-helpxml", "--helpxml"}

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
    "margin", 0.5, "Margin of the chosen --loss: triplet losses 0.5 (unit-sphere distance); cosface 0.35, arcface 0.5 "
    "(radians), sphereface 4 (integer) when not given.", short_name="m",
)
flags.DEFINE_integer("epochs", 20, "Training epochs.", short_name="e")
flags.DEFINE_integer("batch_size", 32, "Training batch size (P identities x K photos).", short_name="bs")
flags.DEFINE_float(
    "learning_rate", None, "Training learning rate (default per model: 1e-6 fused, sface and dlib; 1e-4 resnet50).",
    short_name="lr",
)
flags.DEFINE_enum(
    "model", "fused", ["dlib", "sface", "fused"],
    "Embedding model: dlib (dlib ResNet twin), sface (SFace twin) or fused (both, concatenated)",
)
flags.DEFINE_enum(
    "detector", "yunet", ["yunet", "hog", "cnn"],
    "Face detector: yunet (OpenCV Zoo YuNet, fast and accurate), hog (dlib HOG, CPU) or cnn (dlib CNN, slow "
    "without a GPU).",
    short_name="d",
)
flags.DEFINE_string("data_dir", "data", "Enrollment photos, one folder per person: data/<person name>/*.jpg.")
flags.DEFINE_string("database_dir", "database", "Where the embedding database lives.")
flags.DEFINE_string(
    "database_url", None, "PostgreSQL URL of a shared gallery (postgresql://…); default: the file in --database_dir"
)
flags.DEFINE_enum("backbone", "dlib_resnet", ["dlib_resnet", "resnet50"], "Embedding backbone.")
flags.DEFINE_string("imagenet_weights", None, "resnet50 only: a local ImageNet weights file (no downloads).")
flags.DEFINE_bool(
    "pretrained", False, "use the pretrained models, ignoring fine-tuned weights in --weights_path"
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
    "installed: none, pass --input).",
)
flags.DEFINE_string("output_dir", "output", "Where annotated photos and videos are written.")
flags.DEFINE_integer("camera", 0, "Webcam index.")
flags.DEFINE_float("threshold", None, "Override the calibrated distance threshold (unit-sphere Euclidean).")
flags.DEFINE_list("verify", None, "Two photos A,B: same person or not (1:1 verification).")
flags.DEFINE_bool("enroll", False, "Only sync the database with --data_dir and print the enrollment report.")
flags.DEFINE_enum("strategy", "semi_hard", ["semi_hard", "batch_hard"], "Older name of --loss (triplet mining).")
flags.DEFINE_enum(
    "loss", "semi_hard", ["semi_hard", "batch_hard", "cosface", "arcface", "sphereface"],
    "Training loss: semi_hard or batch_hard triplet mining, or the cosface, arcface or sphereface margin losses.",
)
flags.DEFINE_float("scale", None, "margin losses: logit scale s (default per loss)")
flags.DEFINE_string("tensorboard_dir", "logs", "TensorBoard logs of training.")
flags.DEFINE_float("validation_split", 0.2, "Share of each person's photos held out to validate training.")

FLAGS = flags.FLAGS


def check_flags(values: flags.FlagValues = FLAGS) -> str | None:
    """The first flag value that cannot work, as one line (no 'error: ' prefix); None when all can.

    Written as `not (x > 0)` so that NaN fails too.
    """
    if values.camera < 0:
        return f"--camera must be 0 or more (a webcam index), got {values.camera}"
    if values.threshold is not None and not 0.0 < values.threshold <= 2.0:
        return f"--threshold must be in (0, 2] (unit-sphere distance), got {values.threshold}"
    if values.learning_rate is not None and not values.learning_rate > 0:
        return (f"--learning_rate (-lr) must be more than 0, got {values.learning_rate} "
                "(a zero rate trains every epoch for nothing)")
    split = values.validation_split
    if not 0.0 < split < 1.0:
        why = ("no photo would be left to train on" if split >= 1.0 else
               "training keeps new weights only if they beat the old ones on held-out photos, so some must be "
               "held out")
        return f"--validation_split must be in (0, 1), got {split}: {why}"
    if values.epochs < 1:
        return f"--epochs (-e) must be at least 1, got {values.epochs}"
    if values.batch_size < MIN_BATCH:
        return f"--batch_size (-bs) must be at least {MIN_BATCH} (2 people x 2 photos), got {values.batch_size}"
    if not values.margin > 0:
        return f"--margin (-m) must be more than 0, got {values.margin}"
    if values.scale is not None and not values.scale > 0:
        return f"--scale must be more than 0, got {values.scale}"
    return None


def _recognises_inputs(values: flags.FlagValues) -> bool:
    """True when the run reads --input: -t False, not the webcam, not --enroll, --verify or --lfw_pairs."""
    return not (values.lfw_pairs or values.verify or values.train or values.web_cam or values.enroll)


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
    if _recognises_inputs(values) and not values.input:
        return "no input to recognise: pass --input PHOTO,FOLDER,VIDEO (or -wc True for the webcam)"
    return None


def _prog(argv0: str) -> str:
    """How the user started the command, for the usage: `facenet`, `python main.py` or `python -m facenet.cli`."""
    name = Path(argv0).name or "facenet"
    if name == "__main__.py":
        return "python -m facenet.cli"
    return f"python {name}" if name.endswith(".py") else name


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return USAGE_EXIT


def help_text(argv0: str = "facenet", full: bool = False) -> str:
    """The usage and the flags of this command (`full`: also absl's own flags)."""
    flag_help = (FLAGS.get_help() if full else FLAGS.module_help(__name__)).strip("\n")
    footer = "" if full else "\nTry --helpfull to get a list of all flags.\n"
    return f"{USAGE.format(prog=_prog(argv0))}\nflags:\n\n{flag_help}\n{footer}"


def _help_request(argv: list[str]) -> str | None:
    """'help', 'helpfull' or 'helpxml' when asked for before a `--` terminator, else None."""
    for word in argv[1:]:
        if word == "--":
            break
        if word in HELP_WORDS:
            return "help"
        if word in HELPFULL_WORDS:
            return "helpfull"
        if word in HELPXML_WORDS:
            return "helpxml"
    return None


def preflight(argv: list[str]) -> tuple[int | None, list[str]]:
    """Parse and check the command line: (exit code, []) when the run ends here, else (None, remaining argv).

    Help exits 0 (on stdout); an unknown flag, a bad value or a bad argument exits 2 with one line on stderr.
    """
    asked = _help_request(argv)
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


def _setup_logging() -> None:
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 file name in a line: escaped, never raw bytes or a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s: %(message)s", force=True)
    for noisy in ("absl", "tensorflow", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _model() -> str:
    """The embedding model the commands get: --model, unless --backbone resnet50 asks for the trainable trunk."""
    return "resnet50" if FLAGS.backbone == "resnet50" else FLAGS.model


def run(argv: list[str]) -> int:
    """Run the mode the parsed flags ask for (one call into the package) and return its exit code."""
    problem = check_arguments(argv)
    if problem:
        return _error(problem)
    from facenet.cli.console import import_tensorflow_quietly

    import_tensorflow_quietly()
    model = _model()
    if FLAGS.lfw_pairs:
        from facenet.cli.lfw_command import lfw_command

        return lfw_command(
            pairs=FLAGS.lfw_pairs, lfw_dir=FLAGS.lfw_dir, flip=FLAGS.flip, as_json=FLAGS.json,
            detector=FLAGS.detector, model=model, weights_dir=FLAGS.weights_path, roc_png=FLAGS.roc_png,
            train_pairs=FLAGS.lfw_train_pairs, pretrained=FLAGS.pretrained,
        )
    if FLAGS.verify:
        from facenet.cli.verify_command import verify_command

        return verify_command(
            FLAGS.verify, as_json=FLAGS.json, threshold=FLAGS.threshold, detector=FLAGS.detector,
            model=model, weights_dir=FLAGS.weights_path, pretrained=FLAGS.pretrained,
            prog=_prog(argv[0] if argv else "facenet"),
        )
    if FLAGS.train:
        from facenet.cli.train_command import train_command

        # -m, --loss and --strategy pass on only when given: each loss has its own default margin
        return train_command(
            data_dir=FLAGS.data_dir, weights_dir=FLAGS.weights_path, database_dir=FLAGS.database_dir,
            model=model, imagenet_weights=FLAGS.imagenet_weights, epochs=FLAGS.epochs,
            margin=FLAGS.margin if FLAGS["margin"].present else None, batch_size=FLAGS.batch_size,
            learning_rate=FLAGS.learning_rate, strategy=FLAGS.strategy if FLAGS["strategy"].present else None,
            detector=FLAGS.detector, log_dir=FLAGS.tensorboard_dir, validation_split=FLAGS.validation_split,
            as_json=FLAGS.json, pretrained=FLAGS.pretrained, loss=FLAGS.loss if FLAGS["loss"].present else None,
            scale=FLAGS.scale,
        )
    from facenet.cli.recognize_command import recognize_command

    return recognize_command(
        web_cam=FLAGS.web_cam, inputs=FLAGS.input or [], camera=FLAGS.camera, output_dir=FLAGS.output_dir,
        data_dir=FLAGS.data_dir, database_dir=FLAGS.database_dir, weights_dir=FLAGS.weights_path,
        model=model, detector=FLAGS.detector, threshold=FLAGS.threshold, as_json=FLAGS.json,
        enroll_only=FLAGS.enroll, pretrained=FLAGS.pretrained, database_url=FLAGS.database_url,
    )


def _absl_main(argv: list[str]) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    _setup_logging()
    with logging_redirect_tqdm():  # log lines printed above progress bars, not through them
        return run(argv)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `facenet` and `python main.py`: check the command line, run the mode, exit with its code."""
    argv = list(sys.argv if argv is None else argv)
    code, rest = preflight(argv)
    if code is not None:
        sys.exit(code)
    app.run(_absl_main, argv=argv, flags_parser=lambda _argv: rest)
    raise AssertionError("app.run returned")  # pragma: no cover - app.run always exits
