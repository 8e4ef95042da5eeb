"""The `facenet` command (also `python main.py`): flags and dispatch (app.py), and one module per command that
prints the library's results and returns the exit code (recognize_command, verify_command, lfw_command, …).

Kept apart from the library: importing facenet.* defines no command-line flags; importing facenet.cli.app does
(on first use of `facenet.cli.main` or `FLAGS`, not on `import facenet.cli.console`).
"""

from __future__ import annotations

__all__ = ["FLAGS", "check_flags", "main", "preflight", "run"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from facenet.cli import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
