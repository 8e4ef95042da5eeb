"""The `facenet` command (also `python main.py`): flags and dispatch only; the work is done by the library.

Kept apart from the library: importing facenet.* defines no command-line flags; importing facenet.cli does.
"""

from facenet.cli.app import FLAGS, check_flags, main, preflight, run

__all__ = ["FLAGS", "check_flags", "main", "preflight", "run"]
