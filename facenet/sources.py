"""Frames to recognise: photos, folders of photos and videos, video files and the webcam, as RGB uint8.

Knows nothing of models. OpenCV reads BGR; frames are converted to RGB here, at the boundary.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from facenet.images import is_image_file, load_image_scaled

# FFmpeg reads this once, when OpenCV first opens a video: keep it from printing its own lines on a bad file.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})

DEFAULT_FPS = 25.0
"""Frame rate assumed when a video or camera does not report one."""


class SourceError(Exception):
    """A video or camera that cannot be read; the message names it and the reason."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    """One RGB image to recognise: `index` is the frame number in a video, None for a photo.

    `scale` (x, y) maps pixels of `image` back to the file's own (upright) pixels: above 1 when a huge photo
    was downscaled on load.
    """

    source: str
    index: int | None
    image: np.ndarray
    scale: tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True)
class Input:
    """A photo or video found in the inputs: `source` is the path as given or found, `relative` mirrors it."""

    path: Path
    source: str
    kind: str
    relative: Path


def is_video_file(path: str | Path) -> bool:
    """True for a regular, non-hidden file with a video extension."""
    path = Path(path)
    return path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file() and not path.name.startswith(".")


def _kind(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "photo"


def _resolved(path: Path) -> Path | None:
    """The real path, or None when it cannot be resolved (a symlink loop, a permission error on the way)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return None


def _is_loop(path: Path) -> bool:
    """True for a symlink loop (a link to itself, or links pointing at each other)."""
    return _resolved(path) is None or _loops_on_stat(path)


def _loops_on_stat(path: Path) -> bool:
    try:
        path.stat()
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def collect_inputs(
    paths: Iterable[str | Path], exclude: Iterable[str | Path] = ()
) -> tuple[list[Input], list[SourceError]]:
    """Expand files and folders into the photos and videos to recognise, in the order given.

    Folders are walked recursively (sorted; symlinked folders are not followed); files that are neither photos nor
    videos are skipped quietly, and so is anything under `exclude` (the output folder, so results are never re-read
    as inputs). A file named explicitly is read as a photo unless its extension says video: the decoder then says
    what is wrong with it. Returns the inputs and one error per path that does not exist or is a symlink loop.
    """
    excluded = [Path(folder).resolve() for folder in exclude]
    found: list[Input] = []
    errors: list[SourceError] = []
    for given in paths:
        path = Path(given)
        if _is_loop(path):
            errors.append(SourceError(str(given), "symlink loop (skipped)"))
        elif path.is_dir():
            root = Path(path.resolve().name)
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(path)
                if any(part.startswith(".") for part in relative.parts):
                    continue
                if _is_loop(file):
                    errors.append(SourceError(str(file), "symlink loop (skipped)"))
                elif any(file.resolve().is_relative_to(folder) for folder in excluded):
                    continue
                elif is_image_file(file) or is_video_file(file):
                    found.append(Input(file, str(file), _kind(file), root / relative))
        elif path.exists():
            found.append(Input(path, str(given), _kind(path), Path(path.name)))
        else:
            errors.append(SourceError(str(given), "no such file or folder"))
    return found, errors


def read_photo(item: Input) -> Frame:
    """The photo as a Frame (EXIF-upright RGB, huge ones downscaled); raises images.ImageError naming the file."""
    image, scale = load_image_scaled(item.path)
    return Frame(item.source, None, image, scale)


def _silence_opencv() -> None:
    """OpenCV prints its own multi-line warnings on a bad file or camera; we report one line instead."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class VideoSource:
    """Frames of a video file or a webcam, RGB, numbered from 0. Use `open_file` or `open_camera`."""

    def __init__(self, capture: cv2.VideoCapture, source: str, live: bool) -> None:
        self._capture = capture
        self.source = source
        self.live = live
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and 1.0 <= fps <= 240.0 else DEFAULT_FPS
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and not live else None
        self.frames_read = 0

    @classmethod
    def open_file(cls, path: str | Path, source: str | None = None) -> VideoSource:
        """Open a video file; SourceError when OpenCV cannot open or decode it."""
        source = str(path) if source is None else source
        if not Path(path).is_file():
            raise SourceError(source, "no such video file")
        _silence_opencv()
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            capture.release()
            raise SourceError(source, "cannot open video (unknown or corrupt format)")
        return cls(capture, source, live=False)

    @classmethod
    def open_camera(cls, index: int) -> VideoSource:
        """Open webcam number `index`; SourceError when there is no such camera or it gives no frame."""
        source = f"camera {index}"
        if index < 0:  # cv2.VideoCapture(-1) means "any camera" and can crash inside OpenCV's backends
            raise SourceError(source, "a webcam index must be 0 or more")
        _silence_opencv()
        capture = cv2.VideoCapture(index)
        if not capture.isOpened():
            capture.release()
            raise SourceError(source, "cannot open the webcam (no such camera, or it is in use)")
        ok, _ = capture.read()
        if not ok:
            capture.release()
            raise SourceError(source, "the webcam opened but gives no frames")
        return cls(capture, source, live=True)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            ok, bgr = self._capture.read()
            if not ok or bgr is None:
                return
            index = self.frames_read
            self.frames_read += 1
            yield Frame(self.source, index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
