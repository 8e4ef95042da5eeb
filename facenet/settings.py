"""The rules user settings must follow, in one place for the library and the command line: each check returns
the one-line complaint about a value (None when it can work), the library raises it and the command line prints it
with the flag's name. Written as `not (x > 0)` so that NaN fails too. NumPy-free and TensorFlow-free: the command
line checks flags before loading anything."""

from __future__ import annotations

import math

from facenet.config import MIN_BATCH

MAX_DISTANCE = 2.0
"""The largest distance between unit vectors: a threshold beyond it accepts every face."""

KEEP_DAYS = 30.0
"""Default retention of unknown faces (facenet.unknowns): a sighting older than this many days is forgotten
(strangers' faces are not kept for ever); the --unknown_days flag."""

KEEP_FACES = 10_000
"""Default retention of unknown faces: at most this many sightings are kept, beyond it the oldest are forgotten;
the --unknown_faces flag."""


def threshold_problem(value: float) -> str | None:
    """A distance threshold must be a finite number in (0, 2] (unit-sphere Euclidean distance)."""
    if not (math.isfinite(value) and 0.0 < value <= MAX_DISTANCE):
        return f"must be in (0, {MAX_DISTANCE:g}] (unit-sphere distance), got {value}"
    return None


def training_problems(epochs: int, batch_size: int, learning_rate: float | None,
                      validation_split: float) -> list[tuple[str, str]]:
    """(setting, complaint) for each training setting that cannot work; empty when all can. A learning rate of
    None means the per-model default."""
    problems = []
    if learning_rate is not None and not learning_rate > 0:
        problems.append(("learning_rate", f"must be more than 0, got {learning_rate} (a zero rate trains every "
                                          "epoch for nothing)"))
    if not 0.0 < validation_split < 1.0:
        why = ("no photo would be left to train on" if validation_split >= 1.0 else
               "training keeps new weights only if they beat the old ones on held-out photos, so some must be "
               "held out")
        problems.append(("validation_split", f"must be in (0, 1), got {validation_split}: {why}"))
    if epochs < 1:
        problems.append(("epochs", f"must be at least 1, got {epochs}"))
    if batch_size < MIN_BATCH:
        problems.append(("batch_size", f"must be at least {MIN_BATCH} (2 people x 2 photos), got {batch_size}"))
    return problems


def triplet_margin_problem(margin: float) -> str | None:
    """A triplet loss's margin (unit-sphere distance) must be more than 0; the margin losses check their own
    ranges (train.margin.check_margin)."""
    if not margin > 0:
        return f"must be more than 0, got {margin}"
    return None


def scale_problem(scale: float) -> str | None:
    """A margin loss's logit scale must be more than 0."""
    if not scale > 0:
        return f"must be more than 0, got {scale}"
    return None


def max_upload_problem(megabytes: float) -> str | None:
    """The service's upload limit (MiB) must be a finite number more than 0."""
    if not (math.isfinite(megabytes) and megabytes > 0):
        return f"must be more than 0 and finite (MiB), got {megabytes}"
    return None


def retention_problems(days: float, faces: int) -> list[tuple[str, str]]:
    """(setting, complaint) for each retention of unknown faces that would keep nothing: `days` more than 0 (inf:
    no age limit), `faces` at least 1."""
    problems = []
    if not days > 0:
        problems.append(("unknown_days", f"must be more than 0 (days), got {days}"))
    if faces < 1:
        problems.append(("unknown_faces", f"must be at least 1, got {faces}"))
    return problems


def check_threshold(threshold: object) -> float:
    """A distance threshold as a float: TypeError unless it is a number, ValueError unless `threshold_problem`
    passes it."""
    try:
        value = float(threshold)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"threshold must be a number, not {type(threshold).__name__}") from None
    problem = threshold_problem(value)
    if problem:
        raise ValueError(f"threshold {problem}")
    return value
