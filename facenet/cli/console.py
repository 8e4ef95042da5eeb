"""What the commands print: JSON lines on stdout, everything human (errors, logs, progress) on stderr."""

from __future__ import annotations

import json
import os
import sys
import tempfile

from facenet.cli.exit_codes import Exit
from facenet.images import display_path
from facenet.progress import progress

__all__ = ["emit_json", "error", "import_tensorflow_quietly", "progress"]


def _valid_utf8(value: object) -> object:
    """`value` with every string made valid UTF-8: bytes of a non-UTF-8 file name shown as \\xNN escapes."""
    if isinstance(value, str):
        return display_path(value)
    if isinstance(value, dict):
        return {key: _valid_utf8(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_valid_utf8(item) for item in value]
    return value


def emit_json(record: dict) -> None:
    """One JSON object per line on stdout (UTF-8 names kept readable; never invalid UTF-8)."""
    sys.stdout.write(json.dumps(_valid_utf8(record), ensure_ascii=False) + "\n")
    sys.stdout.flush()


INTERRUPTED_LINE = "interrupted (Ctrl-C)"
"""The one line of a run stopped by Ctrl-C, wherever it was (start-up, enrollment, recognition)."""


def error(message: str, code: int = Exit.USAGE, prefix: str = "error") -> int:
    """`error: message` (or another `prefix`) on stderr; returns `code` (default 2: bad arguments or input) for the
    command to return."""
    print(f"{prefix}: {message}", file=sys.stderr)
    return code


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up banner (oneDNN/absl lines on fd 2) hidden.

    TF 2.21 prints them before TF_CPP_MIN_LOG_LEVEL takes effect; they are shown only if the import fails.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401 - the point of this function
        except KeyboardInterrupt:
            raise  # Ctrl-C while importing: the caller says so in one line, TensorFlow's banner stays hidden
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
