"""facenet command line: train the embedding (-t True) or recognise faces (-t False).

    python main.py -t True -e 20 -m 0.5          # fine-tune on data/<person>/ photos
    python main.py -t False -wc True             # live webcam
    python main.py -t False -wc False --input X  # photos, folders, videos
    python main.py --verify=A.jpg,B.jpg          # 1:1 verification
    python main.py --lfw_pairs P --lfw_dir D     # LFW-protocol benchmark

The CLI only composes: each mode is one call into the package.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "y"), ("false", "0", "no", "n")


class BoolWordParser(flags.ArgumentParser):
    """True/False/true/false/1/0 as a separate argument: absl's own booleans read `-t False` as True."""

    syntax_help = "true|false"

    def parse(self, argument):
        if isinstance(argument, bool):
            return argument
        word = str(argument).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError(f"expected True or False, got {argument!r}")

    def flag_type(self):
        return "bool"


def define_bool_word(name: str, default: bool, help_text: str, short_name: str) -> None:
    flags.DEFINE(BoolWordParser(), name, default, help_text, short_name=short_name)


define_bool_word("train", False, "True: train the embedding on --data_dir; False: recognise faces.", "t")
define_bool_word("web_cam", False, "With -t False: True reads the webcam, False reads --input.", "wc")
flags.DEFINE_string(
    "weights_path", "weights", "Weights folder: converted pretrained model and trained weights.", short_name="wp"
)
flags.DEFINE_float("margin", 0.5, "Triplet loss margin (unit-sphere Euclidean distance).", short_name="m")
flags.DEFINE_integer("epochs", 20, "Training epochs.", short_name="e")
flags.DEFINE_integer("batch_size", 32, "Training batch size (P identities x K photos).", short_name="bs")
flags.DEFINE_float(
    "learning_rate", None, "Training learning rate (default per backbone: 1e-6 dlib_resnet, 1e-4 resnet50).",
    short_name="lr",
)
flags.DEFINE_enum(
    "detector", "hog", ["hog", "cnn"], "Face detector: hog (fast, CPU) or cnn (accurate, slow without a GPU).",
    short_name="d",
)
flags.DEFINE_string("data_dir", "data", "Enrollment photos, one folder per person: data/<person name>/*.jpg.")
flags.DEFINE_string("database_dir", "database", "Where the embedding database lives.")
flags.DEFINE_enum("backbone", "dlib_resnet", ["dlib_resnet", "resnet50"], "Embedding backbone.")
flags.DEFINE_string("imagenet_weights", None, "resnet50 only: a local ImageNet weights file (no downloads).")
flags.DEFINE_bool("json", False, "Machine-readable output: JSON lines on stdout, everything human on stderr.")
flags.DEFINE_string("lfw_pairs", None, "LFW-format pairs file: run the verification benchmark.")
flags.DEFINE_string("lfw_dir", None, "Image root of the LFW pairs (<dir>/<Name>/<Name>_<NNNN>.jpg).")
flags.DEFINE_string(
    "lfw_train_pairs", None, "Pairs file (same --lfw_dir) that sets the threshold for --lfw_pairs; default: 10-fold CV"
)
flags.DEFINE_bool("flip", False, "Test-time augmentation: average mirrored chips at three paddings (6 passes).")
flags.DEFINE_string("roc_png", "lfw_roc.png", "Where the LFW benchmark saves its ROC curve.")
flags.DEFINE_list("input", ["examples/photos"], "Photos, folders of photos and video files to recognise.")
flags.DEFINE_string("output_dir", "output", "Where annotated photos and videos are written.")
flags.DEFINE_integer("camera", 0, "Webcam index.")
flags.DEFINE_float("threshold", None, "Override the calibrated distance threshold (unit-sphere Euclidean).")
flags.DEFINE_list("verify", None, "Two photos A,B: same person or not (1:1 verification).")
flags.DEFINE_bool("enroll", False, "Only sync the database with --data_dir and print the enrollment report.")
flags.DEFINE_enum("strategy", "semi_hard", ["semi_hard", "batch_hard"], "Triplet mining strategy.")
flags.DEFINE_string("tensorboard_dir", "logs", "TensorBoard logs of training.")
flags.DEFINE_float("validation_split", 0.2, "Share of each person's photos held out to validate training.")

FLAGS = flags.FLAGS


def _setup_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s: %(message)s", force=True)
    for noisy in ("absl", "tensorflow", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: list[str]) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    _setup_logging()
    with logging_redirect_tqdm():  # log lines printed above progress bars, not through them
        return run_mode(argv)


def run_mode(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"error: unexpected arguments {' '.join(argv[1:])!r} (flags take True/False as values)", file=sys.stderr)
        return 2
    from facenet.console import import_tensorflow_quietly

    import_tensorflow_quietly()
    if FLAGS.lfw_pairs:
        from facenet.evaluate import lfw_command

        return lfw_command(
            pairs=FLAGS.lfw_pairs, lfw_dir=FLAGS.lfw_dir, flip=FLAGS.flip, as_json=FLAGS.json,
            detector=FLAGS.detector, backbone=FLAGS.backbone, weights_dir=FLAGS.weights_path, roc_png=FLAGS.roc_png,
            train_pairs=FLAGS.lfw_train_pairs,
        )
    if FLAGS.verify:
        from facenet.recognize import verify_command

        return verify_command(
            FLAGS.verify, as_json=FLAGS.json, threshold=FLAGS.threshold, detector=FLAGS.detector,
            backbone=FLAGS.backbone, weights_dir=FLAGS.weights_path,
        )
    if FLAGS.train:
        from facenet.train import train_command

        return train_command(
            data_dir=FLAGS.data_dir, weights_dir=FLAGS.weights_path, database_dir=FLAGS.database_dir,
            backbone=FLAGS.backbone, imagenet_weights=FLAGS.imagenet_weights, epochs=FLAGS.epochs,
            margin=FLAGS.margin, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
            strategy=FLAGS.strategy, detector=FLAGS.detector, log_dir=FLAGS.tensorboard_dir,
            validation_split=FLAGS.validation_split, as_json=FLAGS.json,
        )
    from facenet.recognize import recognize_command

    return recognize_command(
        web_cam=FLAGS.web_cam, inputs=FLAGS.input, camera=FLAGS.camera, output_dir=FLAGS.output_dir,
        data_dir=FLAGS.data_dir, database_dir=FLAGS.database_dir, weights_dir=FLAGS.weights_path,
        backbone=FLAGS.backbone, detector=FLAGS.detector, threshold=FLAGS.threshold, as_json=FLAGS.json,
        enroll_only=FLAGS.enroll,
    )


if __name__ == "__main__":
    app.run(main)
