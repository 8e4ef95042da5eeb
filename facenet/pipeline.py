"""The one face pipeline: detector -> landmarks -> aligned chip(s) -> embedding model -> unit vectors.

Every path that turns a photo into a vector (enrollment, recognition, verify, training, the LFW command,
calibration, benchmarks) goes through `FacePipeline`, so a threshold calibrated on it holds everywhere. What
differs between purposes is named, not re-implemented:

- face choice (CHOICES): `"largest"` for people's photos (enrollment, training, verify) or `"centre"` (the face
  nearest the image centre, for LFW crops, which are centred on the named person);
- one fallback chain for a photo's subject: the detector, then its sensitive pass (HOG upsampled once more,
  YuNet at a low score, CNN upsampled), then - only where a vector is required for every image (evaluation) - a
  centre box;
- recognition (`detect`) lists every face and never falls back: a low-score pass would name patterns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from facenet.config import (
    CHIP_PADDING,
    CHIP_SIDES,
    DEFAULT_DETECTOR,
    DEFAULT_MODEL,
    TTA_PADDINGS,
)
from facenet.detect import align
from facenet.detect.dlib import face_chip, fit_shape
from facenet.detect.face import Detector, Face
from facenet.detect.registry import make_detector
from facenet.images import ImageError, load_image
from facenet.models.embed import Chips, Embedder, load_embedder
from facenet.progress import progress

VIDEO_DETECT_SIDE = 320
"""Video frames are detected at this longest side by HOG/CNN (boxes mapped back): the fast path for 640x480 streams."""

YUNET_VIDEO_SIDE = 800
"""Video frames are read by YuNet at this longest side at most: a 640x480 stream at full size (its ~36 px faces are
found), a 1280x720 camera at 800x450 (measured: 25 ms a frame instead of 104 ms, every face of 24-96 px of a test
frame still found; a 36 px face there is ~22 px, which YuNet finds 99% of the time, see detect/yunet.py)."""

log = logging.getLogger(__name__)

CHOICES = ("largest", "centre")


@dataclass(frozen=True)
class Subject:
    """The chosen face of one photo, or why there is none.

    `how`: "detected", "sensitive" or "centre" (see config.HOW_TEXT); `faces`: how many faces the pass that found
    it saw; `reason`: why there is no face ("unreadable: …", "no face"), else None.
    """

    face: Face | None
    how: str = ""
    faces: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class PhotoVector:
    """A photo's subject and its embedding (None when the photo gave no face)."""

    subject: Subject
    vector: np.ndarray | None


class FacePipeline:
    """Detector + embedding model as one object; models load once and are reused across calls."""

    def __init__(
        self,
        detector: str | Detector = DEFAULT_DETECTOR,
        model: str | Embedder = DEFAULT_MODEL,
        weights_dir: str | Path = "weights",
        trained_dir: str | Path | None = None,
    ) -> None:
        """`trained_dir`: the gallery (database folder) whose fine-tuned weights to use; None: the pretrained model."""
        self.detector = make_detector(detector) if isinstance(detector, str) else detector
        self.embedder = load_embedder(model, weights_dir, trained_dir) if isinstance(model, str) else model

    @property
    def model(self) -> str:
        return self.embedder.name

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    # ------------------------------------------------------------------ faces

    def detect(self, image: np.ndarray, video: bool = False, sensitive: bool = False) -> list[Face]:
        """Every face of an RGB image, largest first, with the landmarks the model's chips need.

        Video frames with HOG/CNN are detected on a VIDEO_DETECT_SIDE copy (their cost grows with the pixels);
        YuNet reads them up to YUNET_VIDEO_SIDE, so ~36 px faces in a 640x480 stream are found and an HD camera keeps
        up.
        """
        max_side = None
        if video:
            max_side = YUNET_VIDEO_SIDE if self.detector.kind == "yunet" else VIDEO_DETECT_SIDE
        return self.complete(image, self.detector.detect(image, max_side=max_side, sensitive=sensitive))

    def complete(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        """Add the landmarks each chip kind needs: dlib's shape for YuNet faces, YuNet-order points for dlib ones."""
        done = []
        for face in faces:
            if "dlib" in self.embedder.kinds and face.shape is None:
                face = replace(face, shape=fit_shape(image, face.box) if face.points is None
                               else align.dlib_shape(image, face))
            if "sface" in self.embedder.kinds and face.points is None:
                face = replace(face, points=align.points_from_dlib(face.landmarks))
            done.append(face)
        return done

    def subject(self, image: np.ndarray, choice: str = "largest", last_resort: bool = False) -> Subject:
        """The one face of a photo that stands for it (`choice`), through the one fallback chain."""
        if choice not in CHOICES:
            raise ValueError(f"unknown face choice {choice!r}; choose one of {', '.join(CHOICES)}")
        for how, sensitive in (("detected", False), ("sensitive", True)):
            faces = self.detector.detect(image, sensitive=sensitive)
            if faces:
                face = nearest_centre(faces, image) if choice == "centre" else faces[0]
                return Subject(self.complete(image, [face])[0], how, len(faces))
        if last_resort:
            return Subject(self.complete(image, [Face(box=centre_box(image), score=0.0)])[0], "centre", 0)
        return Subject(None, reason="no face")

    # ------------------------------------------------------------------ chips and vectors

    def chips(self, image: np.ndarray, faces: list[Face], padding: float = CHIP_PADDING) -> Chips:
        """The aligned chips of `faces` (completed) for every chip kind of the model."""
        cut = {"dlib": lambda f: face_chip(image, f, padding), "sface": lambda f: align.sface_chip(image, f.points)}
        return {kind: np.stack([cut[kind](f) for f in faces]) if faces else empty_chips(kind)
                for kind in self.embedder.kinds}

    def tta_chips(self, image: np.ndarray, faces: list[Face]) -> list[Chips]:
        """The chip sets flip TTA averages (each is mirrored too): dlib chips at TTA_PADDINGS."""
        return [self.chips(image, faces, padding) for padding in TTA_PADDINGS]

    def embed(self, image: np.ndarray, faces: list[Face], tta: bool = False) -> np.ndarray:
        """Unit vectors of the given (completed) faces of one image; `tta` averages paddings and mirrors."""
        if not faces:
            return np.zeros((0, self.embedder.dim), np.float32)
        if tta:
            return self.embedder.embed_tta(self.tta_chips(image, faces))
        return self.embedder.embed(self.chips(image, faces))

    def read_subjects(
        self, paths: Iterable[Path], choice: str = "largest", last_resort: bool = False, desc: str | None = "photos"
    ) -> Iterator[tuple[Path, Subject, np.ndarray | None]]:
        """(path, subject, image) per photo; an unreadable photo or one without a face gives a reason, once."""
        paths = list(paths)
        for path in progress(paths, desc, total=len(paths), unit="photo"):
            try:
                image = load_image(path)
            except ImageError as error:
                yield path, Subject(None, reason=f"unreadable: {error.reason}"), None
                continue
            yield path, self.subject(image, choice, last_resort), image

    def embed_photos(
        self,
        paths: Iterable[Path],
        choice: str = "largest",
        last_resort: bool = False,
        tta: bool = False,
        chunk: int = 64,
        desc: str | None = "photos",
    ) -> dict[Path, PhotoVector]:
        """Each photo's subject and its vector, chips batched `chunk` photos at a time."""
        paths = list(paths)
        results: dict[Path, PhotoVector] = {}
        waiting: list[tuple[Path, Subject]] = []
        sets: list[list[Chips]] = []

        def flush() -> None:
            if not waiting:
                return
            stacked = [{kind: np.concatenate([s[i][kind] for s in sets]) for kind in self.embedder.kinds}
                       for i in range(len(sets[0]))]
            vectors = self.embedder.embed_tta(stacked) if tta else self.embedder.embed(stacked[0])
            results.update((p, PhotoVector(s, v)) for (p, s), v in zip(waiting, vectors, strict=True))
            waiting.clear()
            sets.clear()

        for path, subject, image in self.read_subjects(paths, choice, last_resort, desc):
            if subject.face is None:
                results[path] = PhotoVector(subject, None)
                continue
            waiting.append((path, subject))
            sets.append(self.tta_chips(image, [subject.face]) if tta else [self.chips(image, [subject.face])])
            if len(waiting) >= chunk:
                flush()
        flush()
        return {path: results[path] for path in paths}


def five_points(face: Face) -> np.ndarray | None:
    """A face's 5 landmarks (5, 2) in YuNet's order (right eye, left eye, nose tip, right and left mouth corners):
    YuNet's own, else estimated from dlib's shape; None when the face has neither."""
    if face.points is not None:
        return face.points
    return None if face.shape is None else align.points_from_dlib(face.landmarks)


def empty_chips(kind: str) -> np.ndarray:
    side = CHIP_SIDES[kind]
    return np.zeros((0, side, side, 3), np.uint8)


def nearest_centre(faces: list[Face], image: np.ndarray) -> Face:
    """The face whose box centre is nearest the image centre."""
    height, width = image.shape[:2]

    def off_centre(face: Face) -> float:
        left, top, right, bottom = face.box
        return ((left + right) / 2 - width / 2) ** 2 + ((top + bottom) / 2 - height / 2) ** 2

    return min(faces, key=off_centre)


def centre_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """A square box of half the image's shorter side at its centre: the last resort for a centred crop."""
    height, width = image.shape[:2]
    side = min(height, width) // 2
    cx, cy = width // 2, height // 2
    return (cx - side // 2, cy - side // 2, cx + side - side // 2, cy + side - side // 2)
