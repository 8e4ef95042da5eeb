"""1:1 verification: are the largest faces of two photos the same person? One rule for the API, the service and
the `--verify` command: each photo's subject through the pipeline's fallback chain, one distance, the pipeline's
verify threshold (gallery.thresholds) unless one is given."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facenet.gallery.thresholds import verify_threshold
from facenet.images import to_rgb

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline

log = logging.getLogger(__name__)

Image = str | Path | bytes | np.ndarray
"""A photo: a path, the bytes of an image file, a PIL.Image, or an RGB uint8 array (H, W, 3)."""


class NoFaceError(ValueError):
    """A photo in which no face was found; the message names the photo."""


class UnverifiablePhotos(ValueError):
    """A photo of a verification that is unreadable or has no face; `problems`: one line per such photo."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Verification:
    """The answer of a verification: same person or not, the distance of the two faces and the threshold used."""

    same: bool
    distance: float
    threshold: float


def image_name(image: Image) -> str:
    """How messages name a photo: its path, else its kind."""
    return str(image) if isinstance(image, (str, Path)) else f"the {type(image).__name__} image"


def subject_vector(pipeline: FacePipeline, image: Image, name: str | None = None) -> np.ndarray:
    """The unit vector of a photo's subject (its largest face, through the fallback chain); NoFaceError (naming
    `name`, else the photo) when there is none."""
    rgb = to_rgb(image)
    subject = pipeline.subject(rgb, "largest")
    if subject.face is None:
        raise NoFaceError(f"{name or image_name(image)}: no face found")
    return pipeline.embed(rgb, [subject.face])[0]


def decide(pipeline: FacePipeline, first: np.ndarray, second: np.ndarray, threshold: float | None) -> Verification:
    """Same person when the two unit vectors lie within the threshold (default: the pipeline's verify threshold)."""
    threshold = verify_threshold(pipeline) if threshold is None else float(threshold)
    distance = float(np.linalg.norm(first - second))
    return Verification(distance <= threshold, distance, threshold)


def verify_with(pipeline: FacePipeline, a: Image, b: Image, threshold: float | None = None,
                names: tuple[str | None, str | None] = (None, None)) -> Verification:
    """Verify two images through a given pipeline (the API's, the service's); `names`: what a NoFaceError names."""
    return decide(pipeline, subject_vector(pipeline, a, names[0]), subject_vector(pipeline, b, names[1]), threshold)


def verify_photos(pipeline: FacePipeline, paths: Sequence[str | Path], threshold: float | None = None) -> Verification:
    """Verify two photo files (the `--verify` command); UnverifiablePhotos naming every photo that is unreadable or
    has no face."""
    if len(paths) != 2:
        raise ValueError(f"verification compares exactly two photos, got {len(paths)}")
    found = pipeline.embed_photos([Path(p) for p in paths], "largest", desc="verifying")
    problems = [f"{path}: {result.subject.reason}" for path, result in found.items() if result.vector is None]
    for path, result in found.items():
        if result.subject.faces > 1:
            log.info("%s: %d faces, comparing the largest", path, result.subject.faces)
    if problems:
        raise UnverifiablePhotos(problems)
    first, second = (found[Path(p)].vector for p in paths)
    return decide(pipeline, first, second, threshold)
