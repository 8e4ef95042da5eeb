"""The command line: `facenet <command> [flags]` (or the design card's flat flags) -> one command and its typed
options -> one call into the package.

The first word picks the command (facenet/cli/commands.py: recognize, enroll, verify, train, lfw, serve), which
accepts only its own flags; without one, the flat form (`python main.py -t True -e 20 -m 0.5`) takes every flag and
its mode flags pick the command, two of them at once being refused. Everything is parsed and checked here before
anything heavy is imported, so a bad value fails in a fraction of a second with one line on stderr and exit code 2;
--help/-h/--helpfull print the usage and --version the version (`facenet 0.3.0`), and exit 0.
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass
from typing import NoReturn

from absl import app, flags
from tqdm.contrib.logging import logging_redirect_tqdm

from facenet.cli import common, flag_defs
from facenet.cli.commands import COMMANDS, FLAT_ONLY_FLAGS, flat_command, owners
from facenet.cli.exit_codes import Exit
from facenet.cli.flag_defs import check_flags
from facenet.cli.options import Options
from facenet.cli.usage import help_text, prog_name, version_text
from facenet.progress import show_progress
from facenet.text import OneLineFormatter

__all__ = ["FLAGS", "Invocation", "check_flags", "help_text", "main", "parse", "preflight", "run"]

FLAGS = flags.FLAGS

HELP_WORDS = {"-h", "--h", "-help", "--help", "-helpshort", "--helpshort", "-?", "--?"}
HELPFULL_WORDS = {"-helpfull", "--helpfull"}
HELPXML_WORDS = {"-helpxml", "--helpxml"}
VERSION_WORDS = {"--version"}


@dataclass(frozen=True)
class Invocation:
    """A checked command line: which command, and its options (the keyword arguments of its function)."""

    command: str
    options: Options


class Refusal(Exception):
    """A command line that cannot run: its one line (`error: …`, or `usage: …`), exit code 2."""

    def __init__(self, message: str, prefix: str = "error") -> None:
        super().__init__(f"{prefix}: {message}")


def _help_request(words: list[str]) -> str | None:
    """'help', 'helpfull', 'helpxml' or 'version' when asked for before a `--` terminator, else None (the first
    one asked for wins)."""
    for word in words:
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


def _spelling(name: str) -> str:
    flag = FLAGS[name]
    return f"--{flag.name}" + (f" (-{flag.short_name})" if flag.short_name else "")


def _foreign_flag(command: str, prog: str) -> None:
    """Refuses a flag given to `command` that is not its own (one line: whose it is)."""
    own = COMMANDS[command].own_flags
    for flag in FLAGS.get_flags_for_module(flag_defs.__name__):
        if flag.present and flag.name not in own:
            if flag.name in FLAT_ONLY_FLAGS:
                whose = f"it is how the flat form, without a command word, asks for {prog} {FLAT_ONLY_FLAGS[flag.name]}"
            else:
                whose = f"it is a flag of {', '.join(f'{prog} {name}' for name in owners(flag.name))}"
            raise Refusal(f"{_spelling(flag.name)} is not a flag of {prog} {command} ({whose}; see "
                          f"{prog} {command} --help)")


def _arguments(command: str, rest: list[str], flat: bool, prog: str) -> list[str]:
    """The positional arguments: verify's two photos (`verify A B`, or the flat --verify=A,B), none elsewhere."""
    if command == "verify" and not flat:
        if len(rest) != 2:
            raise Refusal(f"{prog} verify A.jpg B.jpg (exactly two photos, got {len(rest)})", prefix="usage")
        return rest
    if rest:
        verify = FLAGS.verify
        if flat and verify is not None and len(verify) == 1:
            raise Refusal(f"unexpected arguments {' '.join(rest)!r}: --verify takes two photos separated by a comma: "
                          f"--verify={verify[0]},{rest[0]}")
        raise Refusal(f"unexpected arguments {' '.join(rest)!r} (flags take True/False as values)")
    if command == "verify" and len(verify := FLAGS.verify) != 2:
        raise Refusal(f"{prog} --verify=A.jpg,B.jpg (exactly two photos, got {len(verify)})", prefix="usage")
    return list(FLAGS.verify) if command == "verify" else []


def _command_problem(command: str, options: Options, prog: str) -> str | None:
    """What the chosen command needs: something to recognise, the service's keys and cameras, a pairs file."""
    if command == "serve":
        from facenet.service.keys import key_problem  # the service's modules load only for serve

        return common.serve_camera_problem(options.cameras) or key_problem(options.host, options.key_file)
    if command == "recognize" and not options.web_cam and not options.inputs:
        return "no input to recognise: pass --input PHOTO,FOLDER,VIDEO (or -wc True for the webcam)"
    if command == "frigate" and not options.frigate.url:
        return f"{prog} frigate needs --frigate_url http://HOST:5000 (Frigate's API)"
    if command == "lfw" and not options.pairs:
        return f"{prog} lfw needs --lfw_pairs PAIRS --lfw_dir DIR (an LFW-format pairs file and its images)"
    return None


def parse(argv: list[str]) -> Invocation:
    """The command and options of a command line (help words aside); Refusal when it cannot run.

    `argv[1]` a command's name: that command, with its own flags only; else the flat form: every flag, the command
    chosen by -t True, -wc True, --enroll, --verify, --lfw_pairs or --serve (none: recognize)."""
    prog = prog_name(argv[0] if argv else "facenet")
    command = argv[1] if len(argv) > 1 and argv[1] in COMMANDS else None
    FLAGS.unparse_flags()  # a fresh parse: values of an earlier in-process parse do not linger
    try:
        rest = FLAGS([argv[0], *argv[2:]] if command else argv)[1:]
    except flags.Error as error:
        FLAGS.unparse_flags()
        text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise Refusal(f"{text} (see --help)") from None
    flat = command is None
    if flat:
        try:
            command = flat_command(FLAGS)
        except ValueError as conflict:
            raise Refusal(str(conflict)) from None
    else:
        _foreign_flag(command, prog)
    arguments = _arguments(command, rest, flat, prog)
    problem = check_flags(FLAGS)
    if problem:
        raise Refusal(problem)
    options = COMMANDS[command].build(FLAGS, arguments, prog)
    problem = _command_problem(command, options, prog)
    if problem:
        raise Refusal(problem)
    return Invocation(command, options)


def preflight(argv: list[str]) -> tuple[int | None, Invocation | None]:
    """Parse and check the command line: (exit code, None) when the run ends here, else (None, the invocation).

    Help and the version exit 0 (on stdout); an unknown flag, a bad value, a flag of another command, two commands
    at once or a bad argument exits 2 with one line on stderr.
    """
    argv = list(argv) or ["facenet"]
    command = argv[1] if len(argv) > 1 and argv[1] in COMMANDS else None
    asked = _help_request(argv[2:] if command else argv[1:])
    if asked == "version":
        sys.stdout.write(version_text())
        return Exit.OK, None
    if asked == "helpxml":
        FLAGS.write_help_in_xml_format(sys.stdout)
        return Exit.OK, None
    if asked:
        sys.stdout.write(help_text(argv[0], full=asked == "helpfull", command=command))
        return Exit.OK, None
    try:
        return None, parse(argv)
    except Refusal as refusal:
        print(refusal, file=sys.stderr)
        return Exit.USAGE, None


def run(invocation: Invocation) -> int:
    """Run the checked command (one call into the package) and return its exit code."""
    from facenet.cli.console import import_tensorflow_quietly  # OpenCV and PIL (through images): good flags only

    import_tensorflow_quietly()
    command = COMMANDS[invocation.command]
    function = getattr(importlib.import_module(command.module), command.function)  # the chosen command's modules
    return function(**invocation.options.arguments())


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


def _absl_main(invocation: Invocation) -> int:
    _setup_logging()
    show_progress(True)
    with logging_redirect_tqdm():  # log lines printed above progress bars, not through them
        return run(invocation)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `facenet` and `python main.py`: check the command line, run the command, exit with its code."""
    argv = list(sys.argv if argv is None else argv)
    code, invocation = preflight(argv)
    if invocation is None:
        sys.exit(code)
    app.run(lambda _argv: _absl_main(invocation), argv=argv[:1], flags_parser=lambda _argv: argv[:1])
    raise AssertionError("app.run returned")  # pragma: no cover - app.run always exits
