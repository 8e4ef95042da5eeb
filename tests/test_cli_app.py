"""The command line apart from the library (facenet/cli): help, --version and bad values exit before TensorFlow
loads, with exit codes 0 and 2; defaults that work from any folder; the installable package and its version; the
README's set-up line; plain progress lines off a terminal; atomic writes that leave the umask alone and fsync.

Subprocess runs here stop before TensorFlow is imported, so each takes well under a second (making the README's
virtualenv takes a few seconds).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
import tokenize
import tomllib
import warnings
from pathlib import Path

import pytest

import facenet
import facenet.config as config
from facenet import files, progress
from facenet.cli import app as cli
from facenet.cli import options
from facenet.cli.commands import COMMANDS
from facenet.cli.exit_codes import Exit

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "main.py"
FAST_SECONDS = 5.0


def run_main(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(MAIN), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=60)
    return result, time.monotonic() - started


@pytest.fixture(autouse=True)
def fresh_flags():
    """Each test parses the global flags itself and leaves them unparsed."""
    cli.FLAGS.unparse_flags()
    yield
    cli.FLAGS.unparse_flags()


# --- subprocess: the cheap paths, as users type them -------------------------------------------------------------

@pytest.mark.parametrize("word", ["--help", "-h"])
def test_help_lists_the_commands_and_the_card_s_forms(word, tmp_path):
    result, seconds = run_main(word, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("python main.py: one command per job: python main.py <command> [flags]; python main.py "
                        "<command> --help lists its flags.")
    listed = [line.split()[2] for line in lines if line.startswith("    python main.py ") and "#" in line][:6]
    assert listed == ["recognize", "enroll", "verify", "train", "lfw", "serve"]
    for form in ("python main.py -t True -e 20 -m 0.5          # = python main.py train -e 20 -m 0.5",
                 "python main.py -t False -wc True             # = python main.py recognize -wc True (the webcam)",
                 "python main.py -t False -wc False --input X  # = python main.py recognize --input X"):
        assert f"    {form}" in result.stdout
    for flag in ("-t,--train", "-wc,--web_cam", "--verify", "--[no]enroll", "--lfw_pairs", "--[no]serve"):
        assert f"\n  {flag}:" in result.stdout
    assert "--epochs" not in result.stdout and "--detector" not in result.stdout  # each command's own: <cmd> --help
    assert seconds < FAST_SECONDS
    assert list(tmp_path.iterdir()) == []


def test_helpfull_lists_every_flag(tmp_path):
    result, _ = run_main("--helpfull", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    for flag in ("-t,--train", "-d,--detector: <yunet|hog|cnn>", "--model: <fused|sface|dlib>", "--database_url",
                 "--loss: <semi_hard|batch_hard|cosface|arcface|sphereface>", "--scale", "--[no]pretrained",
                 "absl.logging:"):
        assert flag in result.stdout


MODEL_FLAGS = {"weights_path", "model", "detector", "pretrained", "json", "backbone"}
FRIGATE_FLAGS = {"frigate_url", "frigate_mqtt_url", "frigate_topic_prefix", "frigate_cameras", "frigate_attempts"}
OWN_FLAGS = {
    "recognize": MODEL_FLAGS | {"data_dir", "database_dir", "database_url", "threshold", "web_cam", "camera", "input",
                                "output_dir", "track", "events", "mqtt_url", "webhook", "max_frames",
                                "collect_unknowns", "unknown_days", "unknown_faces"},
    "enroll": MODEL_FLAGS | {"data_dir", "database_dir", "database_url", "rebuild_gallery"},
    "verify": MODEL_FLAGS | {"database_dir", "threshold"},
    "train": MODEL_FLAGS | {"data_dir", "database_dir", "epochs", "batch_size", "learning_rate", "validation_split",
                            "loss", "strategy", "margin", "scale", "tune", "tensorboard_dir", "imagenet_weights"},
    "lfw": MODEL_FLAGS | {"database_dir", "lfw_pairs", "lfw_dir", "lfw_train_pairs", "flip", "roc_png"},
    "serve": MODEL_FLAGS | {"data_dir", "database_dir", "database_url", "threshold", "host", "port", "api_key_file",
                            "max_upload_mb", "input", "output_dir", "track", "events", "mqtt_url", "webhook",
                            "collect_unknowns", "unknown_days", "unknown_faces", *FRIGATE_FLAGS},
    "unknowns": MODEL_FLAGS | {"data_dir", "database_dir", "database_url", "name", "ignore", "forget",
                               "not_person", "unknown_days", "unknown_faces"},
    "frigate": MODEL_FLAGS | {"data_dir", "database_dir", "database_url", "threshold", "output_dir", "events",
                              "mqtt_url", "webhook", "collect_unknowns", "unknown_days", "unknown_faces",
                              *FRIGATE_FLAGS},
}
FIRST_LINES = {
    "recognize": "facenet recognize: name the faces of photos, folders, videos, live cameras or the webcam "
                 "(= -t False)",
    "enroll": "facenet enroll: only sync the gallery with --data_dir and print the report (= --enroll)",
    "verify": "facenet verify: 1:1: are the largest faces of two photos the same person? (= --verify=A.jpg,B.jpg)",
    "train": "facenet train: fine-tune the embedding on --data_dir photos, kept only if validation improved "
             "(= -t True)",
    "lfw": "facenet lfw: the LFW-protocol verification benchmark (= --lfw_pairs P --lfw_dir D)",
    "serve": "facenet serve: the REST service and web page on --host:--port (= --serve)",
    "unknowns": "facenet unknowns: the strangers recognition collected, grouped by person: list, name, ignore or "
                "forget a group",
    "frigate": "facenet frigate: beside Frigate: name the people of its person events, write the names back as sub "
               "labels",
}
HEAVY = ("tensorflow", "keras", "dlib")
"""Never loaded by a run that stops before its command (serve's camera check reads camera specs with OpenCV)."""


def run_facenet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`facenet …` as the installed console script runs it (facenet.cli:main, argv[0] `facenet`), and which heavy
    modules were loaded when it exited (the last stdout line)."""
    code = ("import atexit, sys; from facenet.cli import main; "
            f"atexit.register(lambda: print(sorted(m for m in {HEAVY!r} if m in sys.modules))); "
            f"sys.argv = ['/usr/local/bin/facenet', *{list(args)!r}]; main()")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", list(OWN_FLAGS))
def test_each_command_s_help_lists_only_its_own_flags_before_tensorflow(command, tmp_path):
    result = run_facenet(command, "--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    *out, heavy = result.stdout.splitlines()
    assert heavy == "[]" and out[0] == FIRST_LINES[command]
    listed = set(re.findall(r"^  (?:-\w+,)?--(?:\[no\])?(\w+)", "\n".join(out), flags=re.MULTILINE))
    assert listed == OWN_FLAGS[command]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "says"), [
    (["-t", "True", "--verify", "a.jpg,b.jpg"],
     "error: -t True (train) and --verify (verify) ask for two different commands: run one at a time"),
    (["-t", "True", "-wc", "True"],
     "error: -t True (train) and -wc True (recognize) ask for two different commands: run one at a time"),
    (["--enroll", "--serve"], "error: --enroll (enroll) and --serve (serve) ask for two different commands: run one "
                              "at a time"),
    (["--lfw_pairs", "p", "--verify=a,b"], "error: --verify (verify) and --lfw_pairs (lfw) ask for two different "
                                           "commands: run one at a time"),
    (["train", "--verify", "a.jpg,b.jpg"],
     "error: --verify is not a flag of facenet train (it is how the flat form, without a command word, asks for "
     "facenet verify; see facenet train --help)"),
    (["train", "--input", "x.jpg"], "error: --input is not a flag of facenet train (it is a flag of facenet recognize, "
                                    "facenet serve; see facenet train --help)"),
    (["serve", "-t", "True"], "error: --train (-t) is not a flag of facenet serve (it is how the flat form, without a "
                              "command word, asks for facenet train; see facenet serve --help)"),
    (["verify", "a.jpg"], "usage: facenet verify A.jpg B.jpg (exactly two photos, got 1)"),
    (["--verify=a.jpg"], "usage: facenet --verify=A.jpg,B.jpg (exactly two photos, got 1)"),
    (["lfw"], "error: facenet lfw needs --lfw_pairs PAIRS --lfw_dir DIR (an LFW-format pairs file and its images)"),
    (["train", "-e", "0"], "error: --epochs (-e) must be at least 1, got 0"),
    (["recognize", "extra"], "error: unexpected arguments 'extra' (flags take True/False as values)"),
])
def test_conflicts_and_flags_of_other_commands_exit_2_with_one_line_before_tensorflow(args, says, tmp_path):
    result = run_facenet(*args, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (2, "[]\n", says + "\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "says"), [
    (["-t", "True", "-lr", "0"], "error: --learning_rate (-lr) must be more than 0, got 0.0 (a zero rate trains "
                                  "every epoch for nothing)"),  # the card's train
    (["train", "-lr", "0"], "error: --learning_rate (-lr) must be more than 0, got 0.0 (a zero rate trains every "
                            "epoch for nothing)"),
    (["-t", "False", "-wc", "True", "--camera", "-1"], "error: --camera must be 0 or more (a webcam index), got -1"),
    (["recognize", "-wc", "True", "--camera", "-1"], "error: --camera must be 0 or more (a webcam index), got -1"),
    (["--serve", "--input", "a.jpg"], "error: serve --input takes live cameras only ([name=]rtsp://…, "
                                      "[name=]http(s)://…, [name=]webcam:N), got 'a.jpg'"),
    (["serve", "--input", "a.jpg"], "error: serve --input takes live cameras only ([name=]rtsp://…, "
                                    "[name=]http(s)://…, [name=]webcam:N), got 'a.jpg'"),
    (["--enroll", "--camera", "-1"], "error: --camera must be 0 or more (a webcam index), got -1"),  # flat: any flag
])
def test_an_old_flat_form_and_its_command_refuse_alike(args, says, tmp_path):
    result = run_facenet(*args, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (2, "[]\n", says + "\n")


@pytest.mark.parametrize(("args", "says"), [
    (["-t", "maybe"], "flag --train=maybe: expected True or False, got 'maybe'"),
    (["--threshold", "abc"], "flag --threshold=abc: could not convert string to float"),
    (["--detector", "foo"], "flag --detector=foo: value should be one of <yunet|hog|cnn>"),
    (["--no_such_flag"], "Unknown command line flag 'no_such_flag'"),
    (["-e", "x"], "flag --epochs=x: invalid literal for int()"),
    (["-t", "False", "-wc", "True", "--camera", "-1"], "--camera must be 0 or more (a webcam index), got -1"),
    (["--threshold", "3"], "--threshold must be in (0, 2]"),
    (["--threshold", "0"], "--threshold must be in (0, 2]"),
    (["-t", "True", "-lr", "0"], "--learning_rate (-lr) must be more than 0, got 0.0"),
    (["-t", "True", "--validation_split", "0"], "--validation_split must be in (0, 1), got 0.0: training keeps new"
                                                " weights only if they beat the old ones on held-out photos"),
    (["-e", "0"], "--epochs (-e) must be at least 1, got 0"),
    (["-bs", "3"], "--batch_size (-bs) must be at least 4"),
    (["-m", "0"], "--margin (-m) must be more than 0, got 0.0"),
    (["-t", "False", "-wc", "False", "--input="], "no input to recognise: pass --input"),
    (["-t", "False", "extra"], "unexpected arguments 'extra' (flags take True/False as values)"),
    (["--verify", "a.jpg", "b.jpg"], "--verify takes two photos separated by a comma: --verify=a.jpg,b.jpg"),
    (["train", "--detector", "foo"], "flag --detector=foo: value should be one of <yunet|hog|cnn>"),
    (["verify", "a.jpg", "b.jpg", "--threshold", "3"], "--threshold must be in (0, 2]"),
])
def test_bad_flags_exit_2_with_one_line_before_tensorflow(args, says, tmp_path):
    result, seconds = run_main(*args, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert seconds < FAST_SECONDS
    assert list(tmp_path.iterdir()) == []  # nothing written in the working folder: no weights/, no output/


def test_version_prints_facenet_and_the_version_and_exits_0_before_tensorflow(tmp_path):
    result, seconds = run_main("--version", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "facenet 0.3.0\n", "")
    assert result.stdout == f"facenet {facenet.__version__}\n"
    assert seconds < FAST_SECONDS
    assert list(tmp_path.iterdir()) == []
    result = run_facenet("train", "--version", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "facenet 0.3.0\n[]\n", "")


def test_importing_the_cli_loads_no_heavy_module():
    heavy = "('tensorflow', 'keras', 'cv2', 'dlib')"
    code = f"import sys, facenet.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


# --- in process: parsing, checks, defaults and the command each form maps to -------------------------------------

def test_the_card_s_train_form_is_train_with_these_options():
    invocation = cli.parse(["main.py", "-t", "True", "-e", "3", "-m", "0.3", "-bs", "8", "-lr", "1e-5", "-d", "hog",
                            "-wp", "w", "--model", "dlib", "--loss", "arcface", "--scale", "30", "--pretrained"])
    assert invocation == cli.Invocation("train", options.TrainOptions(
        data_dir="data", database_dir="database", weights_dir="w", model="dlib", detector="hog",
        imagenet_weights=None, epochs=3, batch_size=8, learning_rate=1e-5, validation_split=0.2, loss="arcface",
        strategy=None, margin=0.3, scale=30.0, tune="adapter", log_dir="logs", pretrained=True, as_json=False))


def test_defaults():
    invocation = cli.parse(["facenet"])
    assert invocation == cli.Invocation("recognize", options.RecognizeOptions(
        web_cam=False, inputs=[str(ROOT / "examples" / "photos")], camera=0, output_dir="output", data_dir="data",
        database_dir="database", database_url=None, weights_dir=str(ROOT / "weights"), model="fused",
        detector="yunet", threshold=None, pretrained=False, as_json=False, live=options.LiveOptions()))
    flags = cli.FLAGS
    assert (flags.loss, flags.scale, flags.backbone, flags.strategy) == ("semi_hard", None, "dlib_resnet", "semi_hard")
    # Absolute defaults: `python /elsewhere/main.py` reads this checkout's weights and example photos.
    assert Path(invocation.options.inputs[0]).is_dir()


def test_a_parse_does_not_inherit_values_of_an_earlier_one():
    assert cli.preflight(["facenet", "--camera", "3", "-e", "5"])[0] is None
    assert cli.preflight(["facenet"])[0] is None
    assert (cli.FLAGS.camera, cli.FLAGS.epochs) == (0, 20)


def test_help_in_process(capsys):
    assert cli.preflight(["/usr/bin/facenet", "-h"]) == (0, None)
    out = capsys.readouterr().out
    assert out.startswith("facenet: one command per job") and "    facenet --verify=A.jpg,B.jpg " in out
    assert "    facenet --version                     # which facenet this is\n" in out
    assert cli.preflight(["facenet", "--", "--help"])[0] == 2  # after `--` it is an argument, not a flag
    assert cli.preflight(["/src/main.py", "serve", "-h"]) == (0, None)
    assert capsys.readouterr().out.startswith("python main.py serve: the REST service")


def test_version_in_process(capsys):
    assert cli.preflight(["main.py", "-t", "False", "--port", "1", "--version"]) == (0, None)
    assert capsys.readouterr() == ("facenet 0.3.0\n", "")
    assert cli.preflight(["facenet", "--", "--version"])[0] == 2  # after `--` it is an argument, not a flag


@pytest.mark.parametrize(("args", "problem"), [
    (["--camera", "-2"], "--camera"),
    (["--threshold", "nan"], "--threshold"),
    (["--threshold", "2"], None),
    (["-lr", "-1e-5"], "--learning_rate"),
    (["-lr", "1e-6"], None),
    (["--validation_split", "1"], "no photo would be left to train on"),
    (["--validation_split", "0.5"], None),
    (["-bs", "4"], None),
    (["--scale", "0"], "--scale"),
    (["--scale", "64"], None),
])
def test_check_flags(args, problem):
    cli.FLAGS(["facenet", *args])
    found = cli.check_flags()
    assert found is None if problem is None else problem in found


@pytest.mark.parametrize(("args", "command"), [(["-t", "True"], "train"), (["-wc", "True"], "recognize"),
                                               (["--enroll"], "enroll"), (["--verify=a,b"], "verify"),
                                               (["--lfw_pairs=p"], "lfw")])
def test_modes_that_read_no_input_do_not_need_one(args, command):
    assert cli.parse(["facenet", "--input=", *args]).command == command


@pytest.mark.parametrize(("old", "new"), [
    (["-t", "True", "-e", "20", "-m", "0.5"], ["train", "-e", "20", "-m", "0.5"]),
    (["-t", "True", "--backbone", "resnet50", "--imagenet_weights", "r.h5"],
     ["train", "--backbone", "resnet50", "--imagenet_weights", "r.h5"]),
    (["-t", "False", "-wc", "True"], ["recognize", "-wc", "True"]),
    (["-t", "False", "-wc", "False", "--input", "a.jpg,b", "--json"], ["recognize", "--input", "a.jpg,b", "--json"]),
    (["--input", "door=rtsp://h/1", "--events", "e.jsonl", "--max_frames", "5"],
     ["recognize", "--input", "door=rtsp://h/1", "--events", "e.jsonl", "--max_frames", "5"]),
    (["--enroll", "--database_url", "postgresql://u@h/db", "--rebuild_gallery"],
     ["enroll", "--database_url", "postgresql://u@h/db", "--rebuild_gallery"]),
    (["--verify=a.jpg,b.jpg", "--json", "--pretrained"], ["verify", "a.jpg", "b.jpg", "--json", "--pretrained"]),
    (["--lfw_pairs", "p.txt", "--lfw_dir", "lfw", "--flip"], ["lfw", "--lfw_pairs", "p.txt", "--lfw_dir", "lfw",
                                                              "--flip"]),
    (["--serve", "--port", "8001", "-d", "hog"], ["serve", "--port", "8001", "-d", "hog"]),
])
def test_each_old_form_maps_to_its_command_and_the_same_options(old, new):
    flat = cli.parse(["facenet", *old])
    assert flat == cli.parse(["facenet", *new]) and flat.command == new[0]


def _command_parameters(module: str, function: str) -> tuple[set[str], set[str]]:
    """(all, required) parameter names of a *_command, read from the source without importing it."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function]
    positional = [a.arg for a in node.args.posonlyargs + node.args.args]
    required = set(positional[: len(positional) - len(node.args.defaults)])
    required |= {a.arg for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True) if d is None}
    return set(positional) | {a.arg for a in node.args.kwonlyargs}, required


@pytest.mark.parametrize(("args", "function"), [
    (["recognize"], "recognize_command"), (["enroll"], "recognize_command"), (["verify", "a", "b"], "verify_command"),
    (["train"], "train_command"), (["lfw", "--lfw_pairs", "p"], "lfw_command"), (["serve"], "serve_command"),
    (["frigate", "--frigate_url", "http://frigate:5000"], "frigate_command"),
])
def test_each_command_s_options_are_the_arguments_its_function_takes(args, function):
    invocation = cli.parse(["facenet", *args])
    command = COMMANDS[invocation.command]
    assert (command.module, command.function) == (f"facenet.cli.{function}", function)
    accepted, required = _command_parameters(command.module, function)
    passed = set(invocation.options.arguments())
    assert passed <= accepted and required <= passed, passed ^ accepted
    assert invocation.options.arguments().get("enroll_only", False) is (args[0] == "enroll")


@pytest.mark.parametrize(("argv0", "prog"), [("/usr/local/bin/facenet", "facenet"), ("/src/main.py", "python main.py"),
                                             ("/src/facenet/cli/__main__.py", "python -m facenet.cli")])
def test_verify_is_told_the_name_of_the_program_for_its_usage_line(argv0, prog):
    assert cli.parse([argv0, "--verify=a.jpg,b.jpg"]).options.prog == prog


@pytest.mark.parametrize(("args", "model"), [([], "fused"), (["--model", "sface"], "sface"),
                                             (["--backbone", "resnet50", "--model", "dlib"], "resnet50")])
def test_the_model_and_pretrained_reach_the_command(args, model):
    train = cli.parse(["facenet", "-t", "True", "--pretrained", *args]).options
    assert (train.model, train.pretrained) == (model, True)
    verify = cli.parse(["facenet", "verify", "a", "b", "--pretrained", *args]).options
    assert (verify.model, verify.trained_dir) == (model, None)


def test_the_serve_word_takes_serve_s_flags_only_and_its_cameras():
    serve = cli.parse(["facenet", "serve", "--port", "8002", "--data_dir", "people", "--input", "door=rtsp://h/1",
                       "--events", "e.jsonl"]).options
    assert (serve.port, serve.data_dir, serve.host, serve.cameras) == (8002, "people", "127.0.0.1", ["door=rtsp://h/1"])
    assert serve.live == options.LiveOptions(events="e.jsonl")
    assert cli.parse(["facenet", "serve"]).options.cameras == []  # --input's default (example photos): no camera


def test_the_frigate_flags_reach_frigate_and_serve():
    expected = options.FrigateOptions("http://frigate:5000", "mqtt://b:1884", "nvr", ("door", "gate"), 2)
    flags = ["--frigate_url", "http://frigate:5000", "--frigate_mqtt_url", "mqtt://b:1884", "--frigate_topic_prefix",
             "nvr", "--frigate_cameras", "door,gate", "--frigate_attempts", "2"]
    assert cli.parse(["facenet", "frigate", *flags]).options.frigate == expected
    assert cli.parse(["facenet", "serve", *flags]).options.frigate == expected
    assert cli.parse(["facenet", "serve"]).options.frigate == options.FrigateOptions()  # no Frigate: none followed


def readme_command_lines() -> list[list[str]]:
    """The arguments of every `python main.py …` / `facenet …` line of the README's examples, then of the docs/
    pages it links to (continuations joined, comments, `> file` redirections and `[--optional]` placeholders left
    out; --version is not a command)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = re.sub(r"\\\n\s*", "", "\n".join(page.read_text() for page in pages))
    found = []
    for line in text.splitlines():
        match = re.match(r"^    (?:[A-Z_]+=\S+ )?(?:python main\.py|facenet)((?: .*)?)$", line)
        if match:
            words = re.sub(r"\[[^]]*\]|>\s*\S+", "", match.group(1).split("#")[0]).split()
            if words != ["--version"]:
                found.append(words)
    return found


def test_every_command_line_of_the_readme_maps_onto_a_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keys.txt").write_text("a-long-enough-secret-key-123\n")  # serve --host 0.0.0.0 --api_key_file keys.txt
    lines = readme_command_lines()
    commands = [cli.parse(["facenet", *words]).command for words in lines]
    assert len(lines) >= 30 and set(commands) == set(COMMANDS)
    assert commands[:3] == ["recognize", "recognize", "train"]  # the card's forms, first in the README


def test_exit_codes_are_one_enum():
    assert [(code.name, int(code)) for code in Exit] == [("OK", 0), ("FAILED", 1), ("USAGE", 2), ("INTERRUPTED", 130)]
    sources = "\n".join(p.read_text() for p in sorted((ROOT / "facenet").rglob("*.py")))
    for leftover in ("USAGE_EXIT", "INTERRUPTED_EXIT", "EXIT_USAGE", "EXIT_FAILED", "return 130", "return 2\n"):
        assert leftover not in sources


# --- the library returns values and raises errors; only facenet/cli prints and exits ------------------------------

def _library_modules() -> list[Path]:
    """Every facenet/*.py and facenet/<package>/**.py, except the command line (facenet/cli/)."""
    package = ROOT / "facenet"
    return sorted(p for p in package.rglob("*.py") if p.relative_to(package).parts[0] != "cli")


def _code_tokens(path: Path) -> list[tokenize.TokenInfo]:
    """The file's tokens without strings and comments: docstring examples (`print(match.name)`) do not count."""
    with path.open("rb") as handle:
        return [t for t in tokenize.tokenize(handle.readline) if t.type not in (tokenize.STRING, tokenize.COMMENT)]


def _output_calls(path: Path) -> list[str]:
    """`line: what` for each print(, sys.exit, sys.stdout, emit_json and import of facenet.cli in a module's code."""
    tokens = _code_tokens(path)
    found = []
    for i, token in enumerate(tokens):
        after = [t.string for t in tokens[i + 1: i + 3]]
        if token.type != tokenize.NAME:
            continue
        if token.string == "print" and after[:1] == ["("]:
            found.append(f"{token.start[0]}: print(")
        elif token.string == "sys" and after in ([".", "exit"], [".", "stdout"]):
            found.append(f"{token.start[0]}: sys.{after[1]}")
        elif token.string in ("exit", "quit", "SystemExit") and after[:1] == ["("] and tokens[i - 1].string != ".":
            found.append(f"{token.start[0]}: {token.string}(")
        elif token.string == "emit_json":
            found.append(f"{token.start[0]}: emit_json")
        elif token.string == "facenet" and after == [".", "cli"]:
            found.append(f"{token.start[0]}: imports facenet.cli")
    return found


def test_the_scan_finds_what_it_looks_for(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""print(x) in a docstring"""\nimport sys\nfrom facenet.cli.console import emit_json\n'
                      'print("a")  # print(b)\nsys.exit(1)\nsys.stdout.write("x")\nfingerprint(model)\n')
    assert _output_calls(module) == ["3: imports facenet.cli", "3: emit_json", "4: print(", "5: sys.exit",
                                     "6: sys.stdout"]


def test_library_modules_never_print_exit_or_emit_json():
    modules = _library_modules()
    assert {"recognize.py", "verify.py", "settings.py", "metrics.py", "lfw.py", "file.py", "pg/gallery.py",
            "pg/sync.py", "pg/queries.py", "pg/schema.py", "pg/urls.py", "progress.py"} <= {
        p.name if p.parent.name != "pg" else f"pg/{p.name}" for p in modules}
    offenders = {}
    for path in modules:
        found = _output_calls(path)
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}, "the library printed, exited or used the CLI's output helpers (move that to facenet/cli)"


# --- defaults of a checkout and of an installed package (facenet/config.py) -------------------------------------

def test_default_dirs_of_the_checkout():
    assert config.default_weights_dir() == ROOT / "weights"
    assert config.default_examples_dir() == ROOT / "examples" / "photos"


def test_default_dirs_when_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "_checkout_root", lambda: None)
    monkeypatch.setenv("FACENET_HOME", str(tmp_path / "home"))
    assert config.default_weights_dir() == tmp_path / "home"
    monkeypatch.delenv("FACENET_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert config.default_weights_dir() == tmp_path / "xdg" / "facenet" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config.default_weights_dir() == tmp_path / ".cache" / "facenet" / "weights"
    assert config.default_examples_dir() is None


def test_the_version_has_one_place_which_pip_reads():
    """pyproject.toml takes the version from facenet.__version__ (what `pip show facenet` says), as setuptools
    builds it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "facenet.__version__"}
    pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # setuptools: "[tool.setuptools] support is still beta"
        built = pyprojecttoml.read_configuration(ROOT / "pyproject.toml", expand=True)
    assert built["project"]["version"] == facenet.__version__ == "0.3.0"


def test_pyproject_installs_the_command_and_mirrors_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "facenet" and project["project"]["scripts"] == {"facenet": "facenet.cli:main"}
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["facenet*"]
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    wanted = sorted(line.split("#")[0].strip() for line in lines if line.split("#")[0].strip())
    assert sorted(project["project"]["dependencies"]) == wanted


# --- the webcam index guard (facenet/sources.py) -----------------------------------------------------------------

def test_negative_camera_index_is_refused_before_opencv(monkeypatch):
    from facenet import sources

    def never(*_args):
        raise AssertionError("cv2.VideoCapture called")

    monkeypatch.setattr(sources.cv2, "VideoCapture", never)
    with pytest.raises(sources.SourceError, match="camera -1: a webcam index must be 0 or more"):
        sources.VideoSource.open_camera(-1)


# --- progress without a terminal (facenet/progress.py) -----------------------------------------------------------

@pytest.fixture
def shown(monkeypatch) -> None:
    """Progress turned on, as the command line does (library calls print nothing)."""
    monkeypatch.setattr(progress, "_shown", True)


def test_progress_off_a_terminal_prints_plain_count_lines(shown, capsys):
    assert list(progress.progress(range(25), "photos", unit="photo")) == list(range(25))
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert lines[0] == "photos: 3/25 photo (12%)" and len(lines) == 9  # every 10% (3 items), then the end
    assert lines[-1].startswith("photos: 25/25 photo (100%), done in ")


def test_progress_of_an_unknown_total_prints_every_100(shown, capsys):
    assert sum(1 for _ in progress.progress((i for i in range(250)), "frames", unit="frame")) == 250
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == ["frames: 100 frame", "frames: 200 frame"] and lines[2].startswith("frames: 250 frame, done")


def test_progress_on_a_terminal_is_a_tqdm_bar(shown, monkeypatch, capsys):
    monkeypatch.setattr(progress, "_stderr_is_terminal", lambda: True)
    assert list(progress.progress([1, 2, 3], "photos")) == [1, 2, 3]
    assert "\r" in capsys.readouterr().err


# --- atomic writes (facenet/files.py) ----------------------------------------------------------------------------

def _process_umask() -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines() if Path("/proc/self/status").exists() else []:
        if line.startswith("Umask:"):
            return int(line.split(":")[1], 8)
    return None


@pytest.fixture
def fsynced(monkeypatch) -> list[Path]:
    """os.fsync recorded (the path of each fd) and os.umask forbidden."""
    seen: list[Path] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        seen.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def umask(_mask: int) -> int:
        raise AssertionError("os.umask called after import")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "umask", umask)
    return seen


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fsynced fds")
def test_atomic_write_fsyncs_file_and_folder_and_keeps_the_umask(tmp_path, fsynced):
    target = tmp_path / "sub" / "out.txt"
    errors: list[BaseException] = []

    def write_in_a_thread() -> None:
        try:
            files.atomic_write(target, lambda tmp: tmp.write_text("new"))
        except BaseException as error:  # noqa: BLE001 - reported by the assert below
            errors.append(error)

    thread = threading.Thread(target=write_in_a_thread)
    thread.start()
    thread.join()
    assert errors == [] and target.read_text() == "new"
    assert len(fsynced) == 2 and fsynced[0].parent == target.parent and fsynced[0].name.startswith(".out.")
    assert fsynced[1] == target.parent  # the folder, after the rename
    assert stat.S_IMODE(target.stat().st_mode) == files.FILE_MODE == 0o666 & ~files.UMASK
    if _process_umask() is not None:
        assert _process_umask() == files.UMASK
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_write_failure_leaves_the_old_file_and_no_temp(tmp_path, fsynced):
    target = tmp_path / "db.npz"
    target.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["db.npz"]
    assert fsynced == []



def test_ci_runs_exactly_the_readme_set_up_commands():
    """The README's install command (which installs pytest too) and its test command, in that order, are .ci/run."""
    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set up"): readme.index("The main commands:")]
    commands = [line.strip() for line in setup.splitlines() if line.startswith("    ")]
    assert len(commands) == 2 and "requirements-dev.txt" in commands[0] and commands[1] == "python -m pytest -q"
    assert "requirements-system.txt" in commands[0]
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    ci = [line for line in script if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == commands
    assert "pytest" in (ROOT / "requirements-dev.txt").read_text()


def readme_install_line() -> str:
    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set up"): readme.index("The main commands:")]
    return next(line.strip() for line in setup.splitlines() if line.startswith("    "))


def test_the_install_line_makes_and_activates_a_virtualenv_before_any_python():
    """On Debian only `python3` exists outside a virtualenv and its pip refuses the system Python (PEP 668): after the
    Debian packages (whose failure without root is one line, and the line goes on), the install line makes .venv with
    python3 and activates it in the same shell, and only then runs `python` (pip, main.py; the tests come after)."""
    line = readme_install_line()
    apt, _, rest = line.partition(' || echo "Debian packages not installed (needs root): ')
    assert apt.startswith("(") and apt.endswith(")") and "python" not in apt  # a subshell: its failure is caught
    venv = " && python3 -m venv .venv && . .venv/bin/activate && "
    assert venv in rest and "python" not in rest[: rest.index(venv)]
    assert rest.index(venv) < rest.index("python -m pip install") < rest.index("python main.py")
    assert "python3-venv" in (ROOT / "requirements-system.txt").read_text().split()
    assert ".venv/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_install_line_s_virtualenv_is_the_python_of_the_same_shell(tmp_path):
    """The README's venv commands, run as written in bash under .ci/run's `set -euo pipefail` with only `python3` on
    the PATH (no `python`): the next `python` in that shell is the new virtualenv's (and activating it trips no
    unset variable)."""
    line = readme_install_line()
    venv = line[line.index("python3 -m venv"): line.index(" && python -m pip")]
    assert venv == "python3 -m venv .venv && . .venv/bin/activate"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    base = getattr(sys, "_base_executable", sys.executable)  # a virtualenv's python3 would nest, not Debian's
    (bin_dir / "python3").symlink_to(base)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}  # python3 and nothing else, as on a fresh Debian
    script = f"set -euo pipefail\n{venv}\npython -c 'import sys; print(sys.prefix)'\n"
    bash = shutil.which("bash") or "/bin/bash"  # found on the test's PATH: the script's holds only python3
    done = subprocess.run([bash, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path / '.venv'}\n"


@pytest.mark.parametrize(("flag", "setting", "value"), [
    ("-e", "epochs", "0"), ("-bs", "3", None), ("-lr", "learning_rate", "0"), ("-lr", "learning_rate", "-1e-4"),
    ("-lr", "learning_rate", "nan"), ("--validation_split", "validation_split", "0"),
    ("--validation_split", "validation_split", "1"),
])
def test_the_command_line_and_the_library_refuse_the_same_training_settings(flag, setting, value, capsys):
    """One rule per setting (facenet.settings): the flag check and `train.check_settings` agree on every bad value,
    with the same words after the flag's or the setting's name."""
    from facenet.train.chips import TrainingError
    from facenet.train.loop import check_settings

    if value is None:  # ("-bs", "3"): the batch size
        setting, value = "batch_size", setting
    code, _ = cli.preflight(["main.py", "-t", "True", flag, value])
    said = capsys.readouterr().err.strip()
    good = {"epochs": 2, "batch_size": 8, "learning_rate": 1e-4, "validation_split": 0.2}
    number = float(value) if setting in ("learning_rate", "validation_split") else int(value)
    with pytest.raises(TrainingError) as refused:
        check_settings(**{**good, setting: number})
    library = str(refused.value)
    assert code == 2 and library.startswith(f"{setting} must ")
    assert said.endswith(library.removeprefix(setting)) and f"--{setting}" in said


@pytest.mark.parametrize("threshold", ["0", "-1", "2.5", "nan", "inf"])
def test_the_command_line_and_the_api_refuse_the_same_thresholds(threshold, capsys):
    from facenet.settings import check_threshold

    code, _ = cli.preflight(["main.py", "--threshold", threshold])
    said = capsys.readouterr().err.strip()
    with pytest.raises(ValueError) as refused:
        check_threshold(float(threshold))
    assert code == 2 and said == f"error: --{refused.value}"
    assert check_threshold(2.0) == 2.0 and check_threshold("0.6") == 0.6


def test_the_margin_rule_is_the_library_s_for_each_loss(capsys):
    """-m 0 is refused for the triplet losses by the flags and by `loss_settings` alike; a margin loss's margin is
    left to the library, which knows its range (cosface accepts 0: plain normalised softmax)."""
    from facenet.train.chips import TrainingError
    from facenet.train.step import loss_settings

    code, _ = cli.preflight(["main.py", "-t", "True", "-m", "0", "--loss", "batch_hard"])
    assert code == 2 and "--margin (-m) must be more than 0, got 0.0" in capsys.readouterr().err
    with pytest.raises(TrainingError, match="margin must be more than 0, got 0"):
        loss_settings("batch_hard", 0.0)
    assert cli.parse(["main.py", "-t", "True", "-m", "0", "--loss", "cosface"]).options.margin == 0.0
    assert loss_settings("cosface", 0.0).margin == 0.0


@pytest.mark.parametrize("scale", ["0", "-30", "nan"])
def test_the_command_line_and_the_library_refuse_the_same_scales(scale, capsys):
    """--scale and `loss_settings(scale=...)` share facenet.settings.scale_problem: the same values, the same words."""
    from facenet.train.chips import TrainingError
    from facenet.train.step import loss_settings

    code, _ = cli.preflight(["main.py", "-t", "True", "--loss", "arcface", "--scale", scale])
    said = capsys.readouterr().err.strip()
    with pytest.raises(TrainingError) as refused:
        loss_settings("arcface", scale=float(scale))
    assert code == 2 and said == f"error: --{refused.value}"


def test_the_training_flags_default_to_the_library_s_defaults():
    """-e, -bs, --validation_split, --loss and --tune default to what `fine_tune` does when called without them."""
    import inspect

    from facenet.train.cached import CachedOptions as AdapterOptions
    from facenet.train.fine_tune import fine_tune
    from facenet.train.loop import train

    assert cli.parse(["main.py", "-t", "True"]).command == "train"
    flags = cli.FLAGS
    given = {"epochs": flags.epochs, "batch_size": flags.batch_size, "validation_split": flags.validation_split}
    library = inspect.signature(fine_tune).parameters
    assert {name: library[name].default for name in given} == given
    assert (library["loss"].default, library["tune"].default) == (flags.loss, flags.tune) == (flags.strategy, "adapter")
    assert {name: inspect.signature(train).parameters[name].default for name in given} == given
    assert {name: getattr(AdapterOptions(), name) for name in given} == given
    assert AdapterOptions().learning_rate == config.learning_rate(flags.model, flags.tune)
