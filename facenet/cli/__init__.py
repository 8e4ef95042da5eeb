"""The `facenet` command (also `python main.py`): `facenet recognize | enroll | verify | train | lfw | serve`, or the
design card's flat flags. commands.py says which flags each command owns, options.py builds its typed options,
app.py parses, checks and dispatches, exit_codes.py holds the exit codes; one module per command prints the
library's results and returns the exit code (recognize_command, verify_command, lfw_command, …).

Kept apart from the library: importing facenet.* defines no command-line flags; importing facenet.cli.app does
(on first use of `facenet.cli.main` or `FLAGS`, not on `import facenet.cli.console`).
"""

from __future__ import annotations

import sys
from typing import NoReturn

__all__ = ["FLAGS", "check_flags", "main", "preflight", "run"]


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of `facenet`, `python main.py` and `python -m facenet.cli` (see app.main). Ctrl-C at any moment,
    start-up included (importing TensorFlow, loading models), ends with one line and exit code 130."""
    try:
        from facenet.cli import app  # absl and the commands: not loaded by `import facenet.cli`

        app.main(argv)
    except KeyboardInterrupt:
        from facenet.cli.console import INTERRUPTED_LINE
        from facenet.cli.exit_codes import Exit

        sys.stderr.write(INTERRUPTED_LINE + "\n")
        sys.stderr.flush()
        sys.exit(Exit.INTERRUPTED)
    raise AssertionError("app.main returned")  # pragma: no cover - app.main always exits


def __getattr__(name: str) -> object:
    if name in __all__:
        from facenet.cli import app  # on first use of one of its names

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
