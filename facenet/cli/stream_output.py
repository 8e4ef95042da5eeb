"""Recognising streams for the command line: a video file or the webcam through the one frame loop's recogniser
(facenet/live/frames.py), its annotated copy written and shown in a window, and the counts of a run (`Summary`) that
the command's closing lines print."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facenet.detect.face import Recognition
from facenet.draw import Window, annotate
from facenet.files import atomic_write
from facenet.live.frames import FrameRecognizer
from facenet.live.tracking import TrackEvent
from facenet.progress import progress
from facenet.sources import SourceError, VideoSource

log = logging.getLogger(__name__)


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

EventHook = Callable[[list[TrackEvent]], None]
"""Called with the track events of a frame, and with the last ones when the stream ends."""


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
    recognizer: FrameRecognizer,
    summary: Summary,
    writer: _StreamWriter,
    window: Window | None,
    max_frames: int | None,
    on_frame: FrameHook | None,
    on_events: EventHook | None,
) -> None:
    """Recognise, annotate, write and show frames until the end, `max_frames`, q/Esc, or Ctrl-C; then every track
    leaves."""
    frames = progress(video, desc=Path(video.source).name or video.source, total=video.frame_count, unit="frame")
    try:
        for frame in frames:
            recognized = recognizer.recognize(frame, stream_time(video, frame.index))
            summary.add(recognized.faces)
            if on_frame is not None:
                on_frame(frame.index, recognized.faces)
            if recognized.events and on_events is not None:
                on_events(recognized.events)
            annotated = annotate(frame.image, [r.label() for r in recognized.faces])
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
        leaving = recognizer.finish()
        if leaving and on_events is not None:
            on_events(leaving)
    if video.frames_read == 0:
        raise SourceError(video.source, "no frame could be decoded")


def stream_time(video: VideoSource, index: int) -> float:
    """A frame's time in seconds: its number / fps in a file, the clock for a live source."""
    return time.monotonic() if video.live else index / video.fps


def recognize_stream(
    video: VideoSource,
    recognizer: FrameRecognizer,
    summary: Summary,
    out: Path | None = None,
    window: Window | None = None,
    max_frames: int | None = None,
    on_frame: FrameHook | None = None,
    on_events: EventHook | None = None,
) -> None:
    """Recognise every frame of a video or the webcam with `recognizer` (made for this stream); write the annotated
    stream to `out` (atomically) and/or show it.

    Stops at the end, at `max_frames`, on q/Esc in the window, or on Ctrl-C (what was written is kept).
    `on_frame(index, faces)` sees every frame's results (the command prints them as JSON lines), `on_events` the
    track events (those of the end included). Counts go to `summary`. Raises SourceError when no frame can be
    decoded or the output cannot be opened, OSError when it cannot be written.
    """
    started, first_frame = time.perf_counter(), summary.frames

    def loop(target: Path | None) -> None:
        _stream_loop(video, recognizer, summary, _StreamWriter(target, video, out), window, max_frames, on_frame,
                     on_events)

    try:
        if out is None:
            loop(None)
        else:
            atomic_write(out, loop)
    finally:
        summary.stream_frames += summary.frames - first_frame
        summary.stream_seconds += time.perf_counter() - started
