"""The commands: what each does (its help's first line and examples), which flags are its own, how its options
are built, and which function runs it; and how the design card's flat form (no command word) maps onto them.

    facenet recognize | enroll | verify | train | lfw | serve | unknowns | frigate   [that command's flags]
    python main.py -t True -e 20 -m 0.5                          # flat form = facenet train -e 20 -m 0.5
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facenet.cli import options as opts

MODEL_FLAGS = ("weights_path", "model", "detector", "pretrained", "json")
"""The flags every command has: where the weights are, which model and detector, pretrained or fine-tuned, JSON."""
GALLERY_FLAGS = ("data_dir", "database_dir", "database_url")
LIVE_FLAGS = ("track", "events", "mqtt_url", "webhook", "collect_unknowns")
FRIGATE_FLAGS = ("frigate_url", "frigate_mqtt_url", "frigate_topic_prefix", "frigate_cameras", "frigate_attempts")
UNKNOWN_FLAGS = ("unknown_days", "unknown_faces")
"""The retention of the unknown faces a command collects."""


@dataclass(frozen=True)
class Command:
    """One command: `name`, its help's first line (`summary`) and examples, its own flags, and how it runs."""

    name: str
    summary: str
    examples: tuple[str, ...]
    own_flags: tuple[str, ...]
    build: Callable[[Any, list[str], str], opts.Options]
    """(parsed flags, positional arguments, prog) -> the typed options of the command."""
    module: str
    function: str
    """The *_command function that runs it: `module.function(**options.arguments())`."""
    arguments: str = ""
    """Its positional arguments, as the usage line shows them (only verify has some)."""


COMMANDS: dict[str, Command] = {command.name: command for command in (
    Command(
        "recognize", "name the faces of photos, folders, videos, live cameras or the webcam (= -t False)",
        ("--input photos/,clip.mp4     # photos, folders (recursive), videos", "-wc True --camera 0          "
         "# the webcam", "--input door=rtsp://… --events ev.jsonl  # live cameras, track events"),
        (*MODEL_FLAGS, *GALLERY_FLAGS, "threshold", "web_cam", "camera", "input", "output_dir", *LIVE_FLAGS,
         "max_frames", *UNKNOWN_FLAGS, "backbone"),
        opts.recognize_options, "facenet.cli.recognize_command", "recognize_command",
    ),
    Command(
        "enroll", "only sync the gallery with --data_dir and print the report (= --enroll)",
        ("--data_dir site_a/ --database_url postgresql://…",),
        (*MODEL_FLAGS, *GALLERY_FLAGS, "rebuild_gallery", "backbone"),
        opts.enroll_options, "facenet.cli.recognize_command", "recognize_command",
    ),
    Command(
        "verify", "1:1: are the largest faces of two photos the same person? (= --verify=A.jpg,B.jpg)",
        ("passport.jpg selfie.jpg --json",),
        (*MODEL_FLAGS, "database_dir", "threshold", "backbone"),
        opts.verify_options, "facenet.cli.verify_command", "verify_command", arguments="A.jpg B.jpg",
    ),
    Command(
        "train", "fine-tune the embedding on --data_dir photos, kept only if validation improved (= -t True)",
        ("-e 20 -m 0.5                 # an adapter over the fused model, semi-hard triplets",
         "--loss cosface --tune backbone"),
        (*MODEL_FLAGS, "data_dir", "database_dir", "epochs", "batch_size", "learning_rate", "validation_split",
         "loss", "strategy", "margin", "scale", "tune", "tensorboard_dir", "backbone", "imagenet_weights"),
        opts.train_options, "facenet.cli.train_command", "train_command",
    ),
    Command(
        "lfw", "the LFW-protocol verification benchmark (= --lfw_pairs P --lfw_dir D)",
        ("--lfw_pairs pairsDevTest.txt --lfw_dir lfw/ --lfw_train_pairs pairsDevTrain.txt --flip",),
        (*MODEL_FLAGS, "database_dir", "lfw_pairs", "lfw_dir", "lfw_train_pairs", "flip", "roc_png", "backbone"),
        opts.lfw_options, "facenet.cli.lfw_command", "lfw_command",
    ),
    Command(
        "serve", "the REST service and web page on --host:--port (= --serve)",
        ("--port 8000", "--host 0.0.0.0 --api_key_file keys.txt", "--input door=rtsp://…   # with live cameras"),
        (*MODEL_FLAGS, *GALLERY_FLAGS, "threshold", "host", "port", "api_key_file", "max_upload_mb", "input",
         "output_dir", *LIVE_FLAGS, *FRIGATE_FLAGS, *UNKNOWN_FLAGS, "backbone"),
        opts.serve_options, "facenet.cli.serve_command", "serve_command",
    ),
    Command(
        "unknowns", "the strangers recognition collected, grouped by person: list, name, ignore or forget a group",
        ("                             # list the groups, most recently seen first",
         "--name 3f2a9c0b1d4e=Ada      # his best faces become photos of data/Ada/, enrolled",
         "--ignore 3f2a9c0b1d4e        # no more alerts for him", "--forget 3f2a9c0b1d4e",
         "--not_person snap.jpg=Ada    # that face is not Ada: look-alikes are no longer named Ada"),
        (*MODEL_FLAGS, *GALLERY_FLAGS, "name", "ignore", "forget", "not_person", *UNKNOWN_FLAGS, "backbone"),
        opts.unknowns_options, "facenet.cli.unknowns_command", "unknowns_command",
    ),
    Command(
        "frigate", "beside Frigate: name the people of its person events, write the names back as sub labels",
        ("--frigate_url http://frigate:5000 --mqtt_url mqtt://homeassistant:1883",
         "--frigate_url http://frigate:5000 --frigate_cameras door,gate --events events.jsonl"),
        (*MODEL_FLAGS, *GALLERY_FLAGS, "threshold", *FRIGATE_FLAGS, "output_dir", "events", "mqtt_url", "webhook",
         "collect_unknowns", *UNKNOWN_FLAGS, "backbone"),
        opts.frigate_options, "facenet.cli.frigate_command", "frigate_command",
    ),
)}


# --- the flat form: `python main.py -t True …` -------------------------------------------------------------------

@dataclass(frozen=True)
class ModeFlag:
    """A flat-form flag that asks for a command: how it is written in an error line, and whether it was given."""

    command: str
    spelling: str
    given: Callable[[Any], bool]


MODE_FLAGS: tuple[ModeFlag, ...] = (
    ModeFlag("train", "-t True", lambda values: values.train),
    ModeFlag("recognize", "-wc True", lambda values: values.web_cam),
    ModeFlag("enroll", "--enroll", lambda values: values.enroll),
    ModeFlag("verify", "--verify", lambda values: values["verify"].present),
    ModeFlag("lfw", "--lfw_pairs", lambda values: values["lfw_pairs"].present),
    ModeFlag("serve", "--serve", lambda values: values.serve),
)
"""The flat form's ways of choosing a command; none given: recognize (`-t False`, the default)."""

FLAT_ONLY_FLAGS = {"train": "train", "enroll": "enroll", "verify": "verify", "serve": "serve"}
"""Flags that only choose a command (`-t True`, --enroll, --verify, --serve), and which: the flat form's, no
command's own."""


def flat_command(values: Any) -> str:
    """The command the flat form's flags ask for; ValueError (one line, naming both) when they ask for two."""
    asked = [mode for mode in MODE_FLAGS if mode.given(values)]
    chosen = {mode.command for mode in asked}
    if len(chosen) > 1:
        first, second = asked[0], next(mode for mode in asked if mode.command != asked[0].command)
        raise ValueError(f"{first.spelling} ({first.command}) and {second.spelling} ({second.command}) ask for two "
                         f"different commands: run one at a time")
    return asked[0].command if asked else "recognize"


def owners(flag: str) -> list[str]:
    """The commands whose own flag this is (in the order of COMMANDS)."""
    return [name for name, command in COMMANDS.items() if flag in command.own_flags]
