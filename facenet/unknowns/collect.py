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
from facenet.unknowns.sighting import FaceCut, Sighting, new_id
from facenet.unknowns.store import Collected, Retention

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline


class Collector:
    """Keeps the unknown faces that pass the quality gate as sightings of `options`' gallery (grouped at once)."""

    def __init__(self, options: GalleryOptions, pipeline: FacePipeline, retention: Retention | None = None) -> None:
        self.options, self.retention = options, retention or Retention()
        self.model_id, self.threshold = pipeline.model_id, verify_threshold(pipeline)
        self.kept = 0
        self.refused: Counter[str] = Counter()
        """Faces the gate kept out, by reason (its first words: "face too small", "face blurred", …)."""

    def collect(self, cut: FaceCut, vector: np.ndarray, source: str, when: float | None = None
                ) -> Collected | None:
        """Store the face as a sighting of `source` (a camera's name, a video, "api"); None when the gate refuses
        it. GalleryError when a PostgreSQL gallery cannot be reached, OSError when the folder cannot be written."""
        quality = cut.quality()
        passed, why = quality.ok()
        if not passed:
            self.refused[why.split(" (")[0]] += 1
            return None
        sighting = Sighting(new_id(), time.time() if when is None else when, source,
                            np.asarray(vector, np.float32), cut.chip(), quality)
        with open_gallery(self.options) as gallery:
            collected = gallery.unknowns(self.retention).collect(sighting, self.model_id, self.threshold)
        self.kept += 1
        return collected
