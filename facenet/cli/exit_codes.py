"""The exit codes of every command (`facenet`, `python main.py`, `python -m facenet.cli`): defined here only."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """What a command's exit status means; an int, so `sys.exit(Exit.USAGE)` and `code == 2` both work."""

    OK = 0
    """Done (for training: saved or not)."""
    FAILED = 1
    """Some input, the model, the gallery, a camera or an event sink failed (each named on stderr)."""
    USAGE = 2
    """A bad flag, value or argument, or two commands at once (the Unix convention; absl's own is 1)."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (128 + SIGINT)."""


EXIT_CODES_TEXT = (f"Exit codes: {Exit.OK:d} done, {Exit.FAILED:d} some input failed (each named on stderr), "
                   f"{Exit.USAGE:d} bad arguments, {Exit.INTERRUPTED:d} interrupted.")
"""The usage's line about exit codes."""
