"""The public Python API: a few verbs over the one face pipeline, for scripts and notebooks.

    import facenet
    facenet.verify("a.jpg", "b.jpg").same                     # 1:1
    gallery = facenet.Gallery("data", "database")             # enrolled people, synced with data/<person>/
    for match in gallery.recognize("group.jpg"):              # every face, largest first
        print(match.name, match.box, match.distance, match.score)

Images are paths or RGB uint8 arrays (H, W, 3). Boxes are (left, top, right, bottom) pixels, right/bottom
exclusive. Models load once per process (per model, detector and weights folder) and are reused across calls.
Errors are raised, never printed: `ImageError` for a bad photo, `NoFaceError` when a photo has no face.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facenet.config import DEFAULT_DETECTOR, DEFAULT_MODEL, default_weights_dir
from facenet.images import ImageError, load_image

if TYPE_CHECKING:
    from facenet.database import EnrollmentReport, FaceDatabase
    from facenet.faces import Face
    from facenet.pipeline import FacePipeline

Image = str | Path | np.ndarray
"""A photo: a path, or an RGB uint8 array (H, W, 3)."""


class NoFaceError(ValueError):
    """A photo in which no face was found; the message names the photo."""


@cache
def _pipeline(detector: str, model: str, weights_dir: str, pretrained: bool) -> FacePipeline:
    from facenet.pipeline import FacePipeline

    return FacePipeline(detector, model, weights_dir, pretrained)


def face_pipeline(
    model: str = DEFAULT_MODEL, detector: str = DEFAULT_DETECTOR, weights_dir: str | Path | None = None,
    pretrained: bool = False,
) -> FacePipeline:
    """The shared `FacePipeline` for these settings (built on first use, then reused)."""
    return _pipeline(detector, model, str(weights_dir or default_weights_dir()), pretrained)


def _rgb(image: Image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {image.dtype} {image.shape}")
        return image
    return load_image(image)


def _name(image: Image) -> str:
    return "image array" if isinstance(image, np.ndarray) else str(image)


def detect_faces(image: Image, **settings) -> list[Face]:
    """Every face of a photo, largest first: `.box`, `.score`, `.points` (5 landmarks) when the detector gives them."""
    return face_pipeline(**settings).detect(_rgb(image))


def embed_faces(image: Image, faces: list[Face] | None = None, **settings) -> np.ndarray:
    """Unit vectors (N, dim) of the given faces of a photo (default: every face, largest first)."""
    rgb = _rgb(image)
    shared = face_pipeline(**settings)
    return shared.embed(rgb, shared.detect(rgb) if faces is None else shared.complete(rgb, faces))


def embed_face(image: Image, **settings) -> np.ndarray:
    """The unit vector of a photo's subject (its largest face, through the fallback chain); NoFaceError if none."""
    return subject_vector(face_pipeline(**settings), image)


def subject_vector(pipeline: FacePipeline, image: Image, name: str | None = None) -> np.ndarray:
    """`embed_face` through a given pipeline (the service's, say); `name`: what a NoFaceError names."""
    rgb = _rgb(image)
    subject = pipeline.subject(rgb, "largest")
    if subject.face is None:
        raise NoFaceError(f"{name or _name(image)}: no face found")
    return pipeline.embed(rgb, [subject.face])[0]


@dataclass(frozen=True)
class Verification:
    """The answer of `verify`: same person or not, the distance of the two faces and the threshold used."""

    same: bool
    distance: float
    threshold: float


def verify(a: Image, b: Image, threshold: float | None = None, **settings) -> Verification:
    """Are the largest faces of two photos the same person? Default threshold: the model's, calibrated on LFW."""
    return verify_with(face_pipeline(**settings), a, b, threshold)


def verify_with(pipeline: FacePipeline, a: Image, b: Image, threshold: float | None = None,
                names: tuple[str | None, str | None] = (None, None)) -> Verification:
    """`verify` through a given pipeline (the service's, say); `names`: what a NoFaceError names."""
    first, second = subject_vector(pipeline, a, names[0]), subject_vector(pipeline, b, names[1])
    if threshold is None:
        from facenet.recognize import verify_threshold

        threshold = verify_threshold(pipeline)
    distance = float(np.linalg.norm(first - second))
    return Verification(distance <= threshold, distance, float(threshold))


@dataclass(frozen=True)
class Match:
    """One face of a recognised photo: enrolled name or "Unknown", box, distance to the nearest person, 0-100 score
    (distance and score are None when nobody is enrolled)."""

    name: str
    box: tuple[int, int, int, int]
    distance: float | None
    score: float | None


class Gallery:
    """The people enrolled from `data_dir/<person name>/` photos, stored in `database_dir` (synced on creation and
    by `sync()`, as the command line does: only new or changed photos are embedded)."""

    def __init__(
        self,
        data_dir: str | Path = "data",
        database_dir: str | Path = "database",
        threshold: float | None = None,
        **settings,
    ) -> None:
        self.data_dir, self.database_dir = Path(data_dir), Path(database_dir)
        self.threshold = threshold
        self.pipeline = face_pipeline(**settings)
        self.database: FaceDatabase
        self.report: EnrollmentReport
        self.sync()

    def sync(self) -> EnrollmentReport:
        """Bring the database in line with data_dir; returns the enrollment report (also kept as `.report`)."""
        from facenet.database import sync_database

        self.database, self.report = sync_database(self.data_dir, self.database_dir, self.pipeline)
        return self.report

    @property
    def people(self) -> list[str]:
        """The enrolled names."""
        return list(self.database.names)

    def recognize(self, image: Image) -> list[Match]:
        """Every face of a photo, largest first, named (or "Unknown")."""
        from facenet.recognize import Recognizer

        results = Recognizer(self.pipeline, self.database, self.threshold).recognize(_rgb(image))
        return [Match(r.name, r.box, r.distance, r.score) for r in results]

    def embeddings(self) -> dict[str, np.ndarray]:
        """Each enrolled person's centroid (unit vector)."""
        return dict(zip(self.database.names, self.database.centroids, strict=True))


__all__ = ["Gallery", "ImageError", "Match", "NoFaceError", "Verification", "detect_faces", "embed_face",
           "embed_faces", "face_pipeline", "load_image", "verify"]
