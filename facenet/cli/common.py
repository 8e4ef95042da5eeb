"""What the commands share: loading the face pipeline, and the --threshold range check."""

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
