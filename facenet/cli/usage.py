"""What --help, --helpfull and --version print: the commands, one command's own flags, or every flag."""

from __future__ import annotations

from pathlib import Path

from absl import flags

from facenet.cli import flag_defs  # noqa: F401 - defines the flags whose help this prints
from facenet.cli.commands import COMMANDS, FLAT_ONLY_FLAGS
from facenet.cli.exit_codes import EXIT_CODES_TEXT

USAGE = """{prog}: one command per job: {prog} <command> [flags]; {prog} <command> --help lists its flags.

{commands}

The flat forms (flags without a command word; every command's flags are accepted) work as before:

    {prog} -t True -e 20 -m 0.5          # = {prog} train -e 20 -m 0.5
    {prog} -t False -wc True             # = {prog} recognize -wc True (the webcam)
    {prog} -t False -wc False --input X  # = {prog} recognize --input X (photos, folders, videos)
    {prog} --verify=A.jpg,B.jpg          # = {prog} verify A.jpg B.jpg
    {prog} --enroll                      # = {prog} enroll
    {prog} --lfw_pairs P --lfw_dir D     # = {prog} lfw --lfw_pairs P --lfw_dir D
    {prog} --serve --port 8000           # = {prog} serve --port 8000
    {prog} --version                     # which facenet this is

Two commands at once (`-t True --verify A,B`) are refused with exit code 2.
{exit_codes}
"""

COMMAND_USAGE = """{prog} {name}: {summary}

{examples}

{exit_codes}

flags of {prog} {name} (every command: {prog} --help; every flag: --helpfull):

{flags}
"""


def prog_name(argv0: str) -> str:
    """How the user started the command, for the usage: `facenet`, `python main.py` or `python -m facenet.cli`."""
    name = Path(argv0).name or "facenet"
    if name == "__main__.py":
        return "python -m facenet.cli"
    return f"python {name}" if name.endswith(".py") else name


def _flag_help(names: list[str] | tuple[str, ...]) -> str:
    """absl's help entries of these flags only (alphabetical, with short names, defaults and types)."""
    subset = flags.FlagValues()
    for name in names:
        flag = flags.FLAGS[name]
        subset[flag.name] = flag
        subset.register_flag_by_module("_", flag)
    return subset.module_help("_").split("\n", 2)[2].rstrip("\n")  # without absl's blank line and "_:" header


def _command_lines(prog: str) -> str:
    width = max(len(f"{prog} {c.name} {c.arguments}".rstrip()) for c in COMMANDS.values())
    return "\n".join(f"    {f'{prog} {c.name} {c.arguments}'.rstrip():<{width}}  # {c.summary}"
                     for c in COMMANDS.values())


def help_text(argv0: str = "facenet", full: bool = False, command: str | None = None) -> str:
    """The usage: the commands and the flat form's command flags; with `command`, that command's examples and own
    flags only; `full`: every flag, absl's own too."""
    prog = prog_name(argv0)
    if full:
        return f"{USAGE.format(prog=prog, commands=_command_lines(prog), exit_codes=EXIT_CODES_TEXT)}\n" \
               f"flags:\n\n{flags.FLAGS.get_help().strip(chr(10))}\n"
    if command is not None:
        chosen = COMMANDS[command]
        examples = "\n".join(f"    {prog} {chosen.name} {example}" for example in chosen.examples)
        return COMMAND_USAGE.format(prog=prog, name=chosen.name, summary=chosen.summary, examples=examples,
                                    exit_codes=EXIT_CODES_TEXT, flags=_flag_help(chosen.own_flags))
    mode_flags = _flag_help([*FLAT_ONLY_FLAGS, "web_cam", "lfw_pairs"])
    return (f"{USAGE.format(prog=prog, commands=_command_lines(prog), exit_codes=EXIT_CODES_TEXT)}\n"
            f"flags that choose the command in the flat form (each command's own: {prog} <command> --help; every "
            f"flag: --helpfull):\n\n{mode_flags}\n")


def version_text() -> str:
    """What --version prints: `facenet 0.3.0` (the package's __version__, whichever way the command was started)."""
    from facenet import __version__

    return f"facenet {__version__}\n"

