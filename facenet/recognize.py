"""Recognition: name every face of a frame (photo, video frame, webcam frame); and 1:1 verification of two photos.

Per frame: detect (video frames on a downscaled copy), embed all faces in one batch, one database lookup. A video or
camera stream is recognised frame by frame and its annotated copy written (`recognize_stream`). Returns values and
raises errors; the `facenet` command (facenet/cli/recognize_command.py, verify_command.py) prints them.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from facenet import config
from facenet.draw import Label, Window, annotate
from facenet.progress import progress
from facenet.sources import SourceError, VideoSource

if TYPE_CHECKING:
    from facenet.api import Verification
    from facenet.database import FaceDatabase
    from facenet.detect.face import Face
    from facenet.pipeline import FacePipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recognition:
    """One face of a frame: its box (left, top, right, bottom), name (config.UNKNOWN when rejected),
    distance to the nearest enrolled person and 0-100 match score (both None when nobody is enrolled), and its
    5 landmarks (x, y) in YuNet's order (`pipeline.five_points`; None when the detector gave none)."""

    box: tuple[int, int, int, int]
    name: str
    distance: float | None
    score: float | None
    points: tuple[tuple[float, float], ...] | None = None

    def record(self, source: str, frame: int | None) -> dict:
        """The JSON line of this face (non-finite numbers become null: JSON has no NaN)."""
        return {
            "source": source,
            "frame": frame,
            "box": [int(v) for v in self.box],
            "name": self.name,
            "distance": round(self.distance, 4) if _finite(self.distance) else None,
            "score": round(self.score, 1) if _finite(self.score) else None,
        }

    def label(self) -> Label:
        return Label(self.box, self.name, self.score)

    def scaled(self, scale: tuple[float, float]) -> Recognition:
        """The same face with its box in pixels scaled by (x, y): back to a downscaled photo's own pixels."""
        if scale == (1.0, 1.0):
            return self
        (sx, sy), (left, top, right, bottom) = scale, self.box
        box = (round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))
        points = None if self.points is None else tuple((x * sx, y * sy) for x, y in self.points)
        return replace(self, box=box, points=points)


def _points(face: Face) -> tuple[tuple[float, float], ...] | None:
    from facenet.pipeline import five_points

    points = five_points(face)
    return None if points is None else tuple((float(x), float(y)) for x, y in points)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class Recognizer:
    """Names every face of a frame with one batched embedding and one database lookup.

    Video frames (`video=True`) are detected as `FacePipeline.detect` does for video, and a frame that is
    unchanged since the last analysed one reuses its results (`reuse_still`).
    """

    def __init__(
        self,
        pipeline: FacePipeline,
        database: FaceDatabase,
        threshold: float | None = None,
        reuse_still: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self.database = database
        self.threshold = threshold
        self.reuse_still = reuse_still
        self.analysed = 0
        self.reused = 0
        self._thumb: np.ndarray | None = None
        self._last: list[Recognition] = []

    def reset(self) -> None:
        """Forget the previous frame (call between videos)."""
        self._thumb, self._last = None, []

    def _still(self, image: np.ndarray) -> bool:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        thumb = cv2.resize(grey, config.STILL_THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.int16)
        previous, self._thumb = self._thumb, thumb
        if previous is None or previous.shape != thumb.shape:
            return False
        if int(np.abs(thumb - previous).max()) <= config.STILL_MAX_DIFF:
            self._thumb = previous  # compare with the analysed frame, so slow drift cannot accumulate
            return True
        return False

    def recognize(self, image: np.ndarray, video: bool = False) -> list[Recognition]:
        """Every face of an RGB frame, largest first, named."""
        if video and self.reuse_still and self._still(image):
            self.reused += 1
            return self._last
        self.analysed += 1
        faces = self.pipeline.detect(image, video=video)
        results = []
        if faces and len(self.database) == 0:
            results = [Recognition(f.box, config.UNKNOWN, None, None, _points(f)) for f in faces]
        elif faces:
            matches = self.database.identify(self.pipeline.embed(image, faces), self.threshold)
            results = [Recognition(f.box, m.name, m.distance, m.score, _points(f))
                       for f, m in zip(faces, matches, strict=True)]
        self._last = results
        return results


@dataclass
class Summary:
    """Counts of a recognition run (the closing lines of the command: facenet/cli/recognize_output.py)."""

    photos: int = 0
    videos: int = 0
    frames: int = 0
    faces: int = 0
    names: Counter = field(default_factory=Counter)
    errors: int = 0
    interrupted: bool = False
    started: float = field(default_factory=time.perf_counter)
    stream_frames: int = 0
    stream_seconds: float = 0.0
    """Video/webcam frames and the seconds spent on them: the frame rate of the video loop alone."""

    def add(self, results: Iterable[Recognition]) -> None:
        self.frames += 1
        for result in results:
            self.faces += 1
            self.names[result.name] += 1


FrameHook = Callable[[int, list[Recognition]], None]
"""Called with (frame index, faces) for every recognised frame of a stream."""


class _StreamWriter:
    """The annotated mp4 of a stream, opened on its first frame (its size is known only then)."""

    def __init__(self, target: Path | None, video: VideoSource, shown: Path | None) -> None:
        self.target, self.video, self.shown = target, video, shown
        self._writer: cv2.VideoWriter | None = None

    def write(self, annotated: np.ndarray) -> None:
        if self.target is None:
            return
        if self._writer is None:
            height, width = annotated.shape[:2]
            self._writer = cv2.VideoWriter(str(self.target), cv2.VideoWriter_fourcc(*"mp4v"), self.video.fps,
                                           (width, height))
            if not self._writer.isOpened():
                raise SourceError(self.video.source, f"cannot write the annotated video {self.shown}")
        self._writer.write(cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))

    def release(self) -> None:
        if self._writer is not None:
            self._writer.release()


def _stream_loop(
    video: VideoSource,
    recognizer: Recognizer,
    summary: Summary,
    writer: _StreamWriter,
    window: Window | None,
    max_frames: int | None,
    on_frame: FrameHook | None,
) -> None:
    """Recognise, annotate, write and show frames until the end, `max_frames`, q/Esc, or Ctrl-C."""
    frames = progress(video, desc=Path(video.source).name or video.source, total=video.frame_count, unit="frame")
    try:
        for frame in frames:
            results = recognizer.recognize(frame.image, video=True)
            summary.add(results)
            if on_frame is not None:
                on_frame(frame.index, results)
            annotated = annotate(frame.image, [r.label() for r in results])
            writer.write(annotated)
            if window is not None and not window.show(annotated):
                log.info("%s: stopped from the window", video.source)
                break
            if window is not None and window.failed and writer.target is None:
                break
            if max_frames is not None and video.frames_read >= max_frames:
                log.info("%s: stopped after %d frames", video.source, max_frames)
                break
    except KeyboardInterrupt:
        summary.interrupted = not video.live
        log.info("%s: stopped (Ctrl-C)", video.source)
    finally:
        writer.release()
    if video.frames_read == 0:
        raise SourceError(video.source, "no frame could be decoded")


def recognize_stream(
    video: VideoSource,
    recognizer: Recognizer,
    summary: Summary,
    out: Path | None = None,
    window: Window | None = None,
    max_frames: int | None = None,
    on_frame: FrameHook | None = None,
) -> None:
    """Recognise every frame of a video or camera; write the annotated stream to `out` (atomically) and/or show it.

    Stops at the end, at `max_frames`, on q/Esc in the window, or on Ctrl-C (what was written is kept).
    `on_frame(index, faces)` sees every frame's results (the command prints them as JSON lines). Counts go to
    `summary`. Raises SourceError when no frame can be decoded or the output cannot be opened, OSError when it
    cannot be written.
    """
    from facenet.files import atomic_write

    recognizer.reset()
    started, first_frame = time.perf_counter(), summary.frames
    try:
        if out is None:
            _stream_loop(video, recognizer, summary, _StreamWriter(None, video, None), window, max_frames, on_frame)
        else:
            atomic_write(out, lambda tmp: _stream_loop(video, recognizer, summary, _StreamWriter(tmp, video, out),
                                                       window, max_frames, on_frame))
    finally:
        summary.stream_frames += summary.frames - first_frame
        summary.stream_seconds += time.perf_counter() - started


class UnverifiablePhotos(ValueError):
    """A photo of a verification that is unreadable or has no face; `problems`: one line per such photo."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def verify_threshold(pipeline: FacePipeline) -> float:
    """The calibrated 1:1 threshold of the pipeline's model, in its distance scale (rounded to 4 places)."""
    return round(config.calibration(pipeline.model).verify_threshold * pipeline.embedder.distance_scale, 4)


def verify_photos(pipeline: FacePipeline, paths: Sequence[str | Path], threshold: float | None = None) -> Verification:
    """Are the largest faces of two photos the same person? (threshold default: `verify_threshold`)

    Raises UnverifiablePhotos naming every photo that is unreadable or has no face.
    """
    from facenet.api import Verification

    if len(paths) != 2:
        raise ValueError(f"verification compares exactly two photos, got {len(paths)}")
    found = pipeline.embed_photos([Path(p) for p in paths], "largest", desc="verifying")
    problems = [f"{path}: {result.subject.reason}" for path, result in found.items() if result.vector is None]
    for path, result in found.items():
        if result.subject.faces > 1:
            log.info("%s: %d faces, comparing the largest", path, result.subject.faces)
    if problems:
        raise UnverifiablePhotos(problems)
    if threshold is None:
        threshold = verify_threshold(pipeline)
    first, second = (found[Path(p)].vector for p in paths)
    distance = float(np.linalg.norm(first - second))
    return Verification(distance <= threshold, distance, threshold)
