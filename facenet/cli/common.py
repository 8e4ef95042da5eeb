"""What the commands share: loading the face pipeline, the --threshold range check, the cameras of `serve`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from facenet import settings

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline


def load_pipeline(detector: str, model: str, weights_dir: str | Path,
                  trained_dir: str | Path | None = None) -> FacePipeline:
    """The face pipeline of the commands, with the fine-tuned weights of the gallery in `trained_dir` (None: the
    pretrained model). TensorFlow is imported only here: argument errors, a missing camera or photo fail in a
    fraction of a second. (Tests replace this function to reuse one loaded pipeline.)"""
    from facenet.pipeline import FacePipeline  # TensorFlow: only once the flags are known to be good

    return FacePipeline(detector, model, weights_dir, trained_dir)


def threshold_problem(threshold: float | None) -> str | None:
    """The one-line complaint about a --threshold the library would refuse (settings.threshold_problem); None when
    it is fine or unset."""
    problem = None if threshold is None else settings.threshold_problem(threshold)
    return None if problem is None else f"--threshold {problem}"


def serve_camera_problem(specs: list[str]) -> str | None:
    """Why `serve --input` cannot be the service's cameras (one line), or None: every item a live camera."""
    if not specs:
        return None
    from facenet.live.streams import is_camera_spec, parse_cameras  # OpenCV: only when cameras are given

    files = [spec for spec in specs if not is_camera_spec(spec)]
    if files:
        return (f"serve --input takes live cameras only ([name=]rtsp://…, [name=]http(s)://…, [name=]webcam:N), "
                f"got {files[0]!r}")
    try:
        parse_cameras(specs)
    except ValueError as error:
        return str(error)
    return None
