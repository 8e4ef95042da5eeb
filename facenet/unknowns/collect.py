"""Collecting unknown faces: the quality gate, then a sighting in the store of the gallery being recognised against.

One `Collector` per recognising process (a camera loop, the service, a run over videos): recognition hands it each
face that ended Unknown (a photo's face, or a track's best face once the track is named Unknown), with its embedding.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from facenet.gallery import GalleryOptions, open_gallery
from facenet.gallery.thresholds import verify_threshold
from facenet.unknowns.sighting import MIN_DETECTOR_SCORE, Box, FaceCut, Sighting, new_id
from facenet.unknowns.store import Collected, Retention, UnknownStoreError

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline


class Collector:
    """Keeps the unknown faces that pass the quality gate as sightings of `options`' gallery (grouped at once)."""

    def __init__(self, options: GalleryOptions, pipeline: FacePipeline, retention: Retention | None = None) -> None:
        self.options, self.retention, self.pipeline = options, retention or Retention(), pipeline
        self.model_id, self.threshold = pipeline.model_id, verify_threshold(pipeline)
        self.min_detector = MIN_DETECTOR_SCORE if pipeline.detector.kind == "yunet" else None
        self.kept = 0
        self.refused: Counter[str] = Counter()
        """Faces the gate kept out, by reason (its first words: "face too small", "face blurred", …)."""

    def collect(self, cut: FaceCut, vector: np.ndarray, source: str, when: float | None = None,
                not_of: str | None = None) -> Collected | None:
        """Store the face as a sighting of `source` (a camera's name, a video, "api"); None when the gate refuses
        it. `not_of`: a person marked this face "not <name>" (a negative example of that person; kept whatever its
        quality). GalleryError when a PostgreSQL gallery cannot be reached, OSError when the folder cannot be
        written."""
        quality = cut.quality()
        passed, why = quality.ok(self.min_detector)
        if not passed and not_of is None:
            self.refused[why.split(" (")[0]] += 1
            return None
        sighting = Sighting(new_id(), time.time() if when is None else when, source,
                            np.asarray(vector, np.float32), cut.chip(), quality, not_of=not_of)
        with open_gallery(self.options) as gallery:
            store = gallery.unknowns(self.retention)
            try:
                collected = store.collect(sighting, self.model_id, self.threshold)
            except OSError as error:
                raise UnknownStoreError(f"{store.where}: cannot keep an unknown face: {error.strerror or error}"
                                        ) from None
        self.kept += 1
        return collected

    def mark_not(self, image: np.ndarray, name: str, box: Box | None = None, source: str = "api") -> Collected:
        """"Not <name>": the face of an RGB photo at `box` (the detected face overlapping it most; default: the
        largest face) becomes a negative example of `name` and an unknown sighting. NoFaceError when no face is
        found (or none overlaps `box`)."""
        from facenet.verify import NoFaceError

        faces = self.pipeline.detect(image)
        if box is not None:
            faces = sorted((f for f in faces if _overlap(f.box, box) > 0.3), key=lambda f: -_overlap(f.box, box))
        if not faces:
            raise NoFaceError(f"{source}: no face found" + ("" if box is None else f" at box {list(box)}"))
        face = faces[0]
        vector = self.pipeline.embed(image, [face])[0]
        kept = self.collect(FaceCut.of(image, face.box, face.score, face.points), vector, source, not_of=name)
        assert kept is not None  # a negative is never refused by the gate
        return kept


def _overlap(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
