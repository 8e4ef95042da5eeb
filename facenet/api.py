"""The public Python API: a few verbs over the one face pipeline, for scripts and notebooks.

    import facenet
    facenet.verify("a.jpg", "b.jpg").same                     # 1:1
    gallery = facenet.Gallery("data", "database")             # enrolled people, synced with data/<person>/
    for face in gallery.recognize("group.jpg"):               # every face, largest first: facenet.Recognition
        print(face.name, face.box, face.distance, face.score)

Images are paths, bytes of an image file, PIL images or RGB uint8 arrays (H, W, 3). Boxes are
(left, top, right, bottom) pixels, right/bottom exclusive. Models load once per process (per model, detector and
weights folder) and are reused across calls. Errors are raised, never printed: `ImageError` for a bad photo,
`NoFaceError` when a photo has no face, TypeError/ValueError for arguments of the wrong kind.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facenet import redact
from facenet.config import DEFAULT_DETECTOR, DEFAULT_MODEL, default_weights_dir
from facenet.detect.face import Face, Recognition
from facenet.gallery import GalleryOptions, open_gallery
from facenet.images import ImageError, load_image, to_rgb
from facenet.settings import check_threshold
from facenet.unknowns.naming import Named, name_group
from facenet.unknowns.store import Collected, Group, Retention
from facenet.verify import Image, NoFaceError, Verification, subject_vector, verify_with

if TYPE_CHECKING:
    from facenet.gallery import EnrollmentReport, FaceDatabase
    from facenet.pipeline import FacePipeline
    from facenet.train.fine_tune import FineTuneResult


@cache
def _pipeline(detector: str, model: str, weights_dir: str, trained_dir: str | None, _version: tuple) -> FacePipeline:
    from facenet.pipeline import FacePipeline  # loads TensorFlow: `import facenet` stays light until first use

    return FacePipeline(detector, model, weights_dir, trained_dir)


def face_pipeline(
    model: str = DEFAULT_MODEL, detector: str = DEFAULT_DETECTOR, weights_dir: str | Path | None = None,
    pretrained: bool = False, trained_dir: str | Path | None = None,
) -> FacePipeline:
    """The shared `FacePipeline` for these settings (built on first use, then reused; rebuilt when the gallery's
    trained weights change). `trained_dir`: a gallery (database folder) whose fine-tuned weights to use (default:
    none, the pretrained model); `pretrained=True` ignores them."""
    from facenet.models.trained import trained_weights_path  # imports Keras (TensorFlow): first use only

    trained = None if pretrained or trained_dir is None else str(Path(trained_dir).resolve())
    version: tuple = ()
    if trained is not None:
        path = trained_weights_path(trained, model)
        version = (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else ()
    return _pipeline(detector, model, str(weights_dir or default_weights_dir()), trained, version)


def _faces(faces: object) -> list[Face]:
    """`faces=` as a list of Face objects (a list or tuple of them, e.g. from detect_faces); TypeError otherwise."""
    if isinstance(faces, Face):
        return [faces]
    if not isinstance(faces, (list, tuple)) or not all(isinstance(face, Face) for face in faces):
        raise TypeError("faces must be a list or tuple of the Face objects detect_faces returns, "
                        f"not {type(faces).__name__}")
    return list(faces)


def detect_faces(image: Image, **settings) -> list[Face]:
    """Every face of a photo, largest first: `.box`, `.score`, `.points` (5 landmarks) when the detector gives them."""
    return face_pipeline(**settings).detect(to_rgb(image))


def embed_faces(image: Image, faces: list[Face] | None = None, **settings) -> np.ndarray:
    """Unit vectors (N, dim) of the given faces of a photo (default: every face, largest first)."""
    rgb = to_rgb(image)
    shared = face_pipeline(**settings)
    return shared.embed(rgb, shared.detect(rgb) if faces is None else shared.complete(rgb, _faces(faces)))


def embed_face(image: Image, **settings) -> np.ndarray:
    """The unit vector of a photo's subject (its largest face, through the fallback chain); NoFaceError if none."""
    return subject_vector(face_pipeline(**settings), image)


def verify(a: Image, b: Image, threshold: float | None = None, **settings) -> Verification:
    """Are the largest faces of two photos the same person? Default threshold: the model's, calibrated on LFW.

    ValueError for a threshold that is not a finite number above 0."""
    if threshold is not None:
        threshold = check_threshold(threshold)
    return verify_with(face_pipeline(**settings), a, b, threshold)


class Gallery:
    """The people enrolled from `data_dir/<person name>/` photos, stored in `database_dir` (synced on creation and
    by `sync()`, as the command line does: only new or changed photos are embedded). `database_dir` may also be a
    PostgreSQL URL (a gallery shared by several machines: only this data folder's people are written; its photo
    hashes are cached in `cache_dir`, like the command line's --database_dir). A folder gallery's fine-tuned weights
    (beside its database, made by `fine_tune`) are used unless `pretrained=True`."""

    def __init__(
        self,
        data_dir: str | Path = "data",
        database_dir: str | Path = "database",
        threshold: float | None = None,
        cache_dir: str | Path = "database",
        retention: Retention | None = None,
        **settings,
    ) -> None:
        self.data_dir, self.location = Path(data_dir), str(database_dir)
        self.options = GalleryOptions.at(database_dir, cache_dir)
        self.database_dir = None if self.options.database_url else self.options.database_dir
        self.threshold = None if threshold is None else check_threshold(threshold)
        self.retention = retention or Retention()
        self.settings = {"trained_dir": self.database_dir, **settings}
        self.pipeline = face_pipeline(**self.settings)
        self.database: FaceDatabase
        self.report: EnrollmentReport
        self.sync()

    def sync(self) -> EnrollmentReport:
        """Bring the gallery in line with data_dir; returns the enrollment report (also kept as `.report`)."""
        self.pipeline = face_pipeline(**self.settings)  # new trained weights since the last sync: a new model
        with open_gallery(self.options) as gallery:
            self.report = gallery.sync(self.data_dir, self.pipeline)
            self.database = gallery.load(self.pipeline)
        return self.report

    @property
    def people(self) -> list[str]:
        """The enrolled names."""
        return list(self.database.names)

    def recognize(self, image: Image, collect: bool = False, source: str = "api") -> list[Recognition]:
        """Every face of a photo, largest first: its `Recognition` (box, name or "Unknown", distance, 0-100 score,
        landmarks; distance and score are None when nobody is enrolled). `collect`: keep each Unknown face that passes
        the quality gate as a sighting of `source` in the gallery's store of unknown faces (see `unknowns`; its
        `face_id` and `group` are then set)."""
        from facenet.recognize import Recognizer  # loads TensorFlow: first use only
        from facenet.unknowns.collect import Collector

        collector = Collector(self.options, self.pipeline, self.retention) if collect else None
        return Recognizer(self.pipeline, self.database, self.threshold, collector=collector,
                          source=source).recognize(to_rgb(image))

    def fine_tune(self, **options) -> FineTuneResult:
        """`fine_tune` this gallery (its data_dir and database_dir, its settings), then sync with the result."""
        if self.database_dir is None:
            raise ValueError(f"{redact.mask_url(self.location)}: fine-tuning keeps its weights beside a gallery "
                             "folder; use a folder gallery (database_dir) to fine-tune")
        keep = {key: self.settings[key] for key in ("model", "detector", "weights_dir", "pretrained")
                if key in self.settings}
        result = fine_tune(self.data_dir, self.database_dir, **{**keep, **options})
        self.sync()
        return result

    def unknowns(self) -> list[Group]:
        """The strangers recognition collected (`recognize(..., collect=True)`, cameras), grouped by person, the
        most recently seen first."""
        with open_gallery(self.options) as gallery:
            return gallery.unknowns(self.retention).groups()

    def name_group(self, group_id: str, subject: str) -> Named:
        """Name a stranger: the group's best faces become photos of data_dir/<subject>/ (new or existing), he is
        enrolled (the gallery is synced), the group is forgotten."""
        with open_gallery(self.options) as gallery:
            return name_group(gallery.unknowns(self.retention), group_id, subject, self.data_dir, self._enrolled_now)

    def _enrolled_now(self) -> list[str]:
        """Sync, then the enrolled names (what naming a group checks its person against)."""
        self.sync()
        return self.people

    def not_person(self, image: Image, name: str, box: tuple[int, int, int, int] | None = None) -> Collected:
        """Mark a face wrongly named `name` as "not <name>": the face at `box` (default: the largest) becomes an
        unknown sighting and a negative example of `name`, and from now on faces nearer to it than to `name`'s
        own photos are not named `name`. NoFaceError when no face is found there."""
        from facenet.unknowns.collect import Collector

        kept = Collector(self.options, self.pipeline, self.retention).mark_not(to_rgb(image), name, box)
        with open_gallery(self.options) as gallery:
            self.database.negatives = gallery.unknowns(self.retention).negatives(self.pipeline.model_id)
        return kept

    def ignore_group(self, group_id: str, ignored: bool = True) -> Group:
        """Keep a stranger's group but raise no more alerts for him (a neighbour, the postman)."""
        with open_gallery(self.options) as gallery:
            return gallery.unknowns(self.retention).ignore_group(group_id, ignored)

    def forget_group(self, group_id: str) -> int:
        """Delete a stranger's group and faces; how many faces went."""
        with open_gallery(self.options) as gallery:
            return gallery.unknowns(self.retention).forget_group(group_id)

    def embeddings(self) -> dict[str, np.ndarray]:
        """Each enrolled person's centroid (unit vector)."""
        return dict(zip(*self.database.everyone(), strict=True))


def fine_tune(data_dir: str | Path = "data", database_dir: str | Path = "database", **options) -> FineTuneResult:
    """Fine-tune a gallery's embedding on its photos, exactly as `python main.py -t True` does: train (an adapter
    over the frozen model by default), keep the weights only if held-out photos verify better, save them beside the
    gallery's database, rebuild the gallery. Options: those of `facenet.train.fine_tune.fine_tune` (model,
    detector, weights_dir, tune, epochs, loss, margin, scale, batch_size, learning_rate, validation_split,
    pretrained, log_dir)."""
    from facenet.train.fine_tune import fine_tune as run  # loads TensorFlow: first use only

    return run(data_dir, database_dir, **options)


__all__ = ["Gallery", "ImageError", "NoFaceError", "Recognition", "Verification", "detect_faces",
           "embed_face", "embed_faces", "face_pipeline", "fine_tune", "load_image", "verify"]
