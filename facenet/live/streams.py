"""Live cameras: RTSP and MJPEG-over-HTTP streams and local webcams, each read on its own thread.

A camera never ends the run: when its stream drops (server gone, no frame within STREAM_READ_TIMEOUT_MS, end of
stream) it is reported once through `on_drop` and reopened with exponential back-off until it comes back. Only the
newest frame is kept, so a slow recogniser skips frames instead of falling behind the live picture.
Frames are RGB (converted from OpenCV's BGR here, at the boundary).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from facenet.redact import mask_url, split_url, url_host
from facenet.sources import Frame
from facenet.text import slug

# FFmpeg reads these once, when OpenCV first opens a stream: RTSP over TCP (no lost UDP packets, works through
# NAT and firewalls) and no log lines of its own on a bad stream (we report one line per drop).
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
"""An --input starting with one of these is a live camera stream (RTSP, or MJPEG over HTTP), not a file."""

WEBCAM_PREFIX = "webcam:"
"""`webcam:N` in --input is local webcam number N, read as a live camera like a stream."""

STREAM_OPEN_TIMEOUT_MS = 5000
STREAM_READ_TIMEOUT_MS = 5000
"""A stream that does not connect, or sends no frame, within this long is dropped and reconnected."""

RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 30.0
"""Back-off between reconnection attempts: doubles from the first delay up to the last, reset by a good frame."""

_NAME = re.compile(r"^([A-Za-z0-9_.-]+)=(.+)$")


@dataclass(frozen=True)
class Camera:
    """A live camera: its `name` (in events, MQTT topics, output names) and `url` (a stream URL or `webcam:N`)."""

    name: str
    url: str

    @property
    def webcam(self) -> int | None:
        """The local webcam index of a `webcam:N` camera, else None."""
        return int(self.url.removeprefix(WEBCAM_PREFIX)) if self.url.startswith(WEBCAM_PREFIX) else None

    @property
    def shown(self) -> str:
        """The URL with any password masked, for messages."""
        return mask_url(self.url)


def _spec_url(spec: str) -> str:
    match = _NAME.match(spec)
    return match.group(2) if match else spec


def _shown_spec(spec: str) -> str:
    """An --input item for messages: its URL's password masked."""
    match = _NAME.match(spec)
    return f"{match.group(1)}={mask_url(match.group(2))}" if match else mask_url(spec)


def is_camera_spec(spec: str) -> bool:
    """True for a stream URL or `webcam:N` (optionally `name=` before it); False for a file or folder path."""
    url = _spec_url(spec.strip())
    return url.lower().startswith(STREAM_SCHEMES) or url.startswith(WEBCAM_PREFIX)


def parse_cameras(specs: list[str]) -> list[Camera]:
    """Cameras from --input items `[name=]rtsp://…`, `[name=]http(s)://…` or `[name=]webcam:N`.

    Unnamed cameras are called cam1, cam2, … in the order given. Raises ValueError (one line) for a bad webcam
    index, a URL without a host or with a bad port, a name used twice, or two names with one slug (`Door`,
    `door`: one MQTT topic, one snapshot name).
    """
    cameras: list[Camera] = []
    for position, spec in enumerate(specs, start=1):
        spec = spec.strip()
        match = _NAME.match(spec)
        name, url = (match.group(1), match.group(2)) if match else (f"cam{position}", spec)
        if url.startswith(WEBCAM_PREFIX):
            index = url.removeprefix(WEBCAM_PREFIX)
            if not index.isdigit():
                raise ValueError(f"{_shown_spec(spec)}: a webcam is webcam:N with N a webcam index (0 or more)")
        else:
            _check_url(name, url)
            if not url_host(url):
                raise ValueError(f"{_shown_spec(spec)}: a stream URL needs a host (e.g. rtsp://192.168.1.20:554/stream1)")
        if any(camera.name == name for camera in cameras):
            raise ValueError(f"{_shown_spec(spec)}: the camera name {name!r} is used twice (name them: door=rtsp://…)")
        clash = next((camera.name for camera in cameras if slug(camera.name) == slug(name)), None)
        if clash is not None:
            raise ValueError(f"cameras {clash} and {name}: the same MQTT topic and snapshot name ({slug(name)}); "
                             "name them apart")
        cameras.append(Camera(name, url))
    return cameras


def _check_url(name: str, url: str) -> None:
    """Raises ValueError (`camera door: bad URL (Port out of range 0-65535)`) for a URL that cannot be opened as
    written (a bad port, a broken IPv6 address); the URL itself is not repeated (it may hold a password)."""
    parts = split_url(url)
    where = f"{parts[0]}://{parts[3]}" if parts is not None else url  # without the userinfo: a password may hold / ? #
    try:
        port = urlsplit(where).port
    except ValueError as problem:
        raise ValueError(f"camera {name}: bad URL ({problem})") from None
    if port == 0:
        raise ValueError(f"camera {name}: bad URL (port 0)")


@dataclass(frozen=True)
class Drop:
    """A camera's stream was lost (or could not be opened): why, how many drops so far, and the next retry."""

    camera: Camera
    reason: str
    count: int
    retry_in: float

    def text(self) -> str:
        return (f"{self.camera.name} ({self.camera.shown}): {self.reason}; reconnecting with back-off "
                f"(first retry in {self.retry_in:g} s, drop {self.count})")


def open_capture(camera: Camera) -> cv2.VideoCapture | None:
    """An opened capture of the camera that has given a first frame, or None."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if camera.webcam is not None:
        capture = cv2.VideoCapture(camera.webcam)
    else:
        capture = cv2.VideoCapture(camera.url, cv2.CAP_FFMPEG, [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_OPEN_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_READ_TIMEOUT_MS,
        ])
    if capture.isOpened():
        return capture
    capture.release()
    return None


class CameraStream:
    """One camera read on a background thread: `latest()` is its newest RGB frame; drops reconnect with back-off.

    `on_drop(Drop)` is called once per lost stream (from the reader thread), never for each retry.
    """

    def __init__(
        self,
        camera: Camera,
        on_drop: Callable[[Drop], None] | None = None,
        opener: Callable[[Camera], cv2.VideoCapture | None] = open_capture,
    ) -> None:
        self.camera = camera
        self._on_drop = on_drop
        self._open = opener
        self._stop = threading.Event()
        self._fresh = threading.Condition()
        self._frame: Frame | None = None
        self._taken = -1
        self.frames_read = 0
        self.drops = 0
        self.connected = False
        self.wake: threading.Event | None = None
        """Set whenever a frame arrives (CameraSet waits on one event for all its cameras)."""
        self._thread = threading.Thread(target=self._run, name=f"camera {camera.name}", daemon=True)

    def start(self) -> CameraStream:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading (the thread ends after its current read, at most STREAM_READ_TIMEOUT_MS)."""
        self._stop.set()
        with self._fresh:
            self._fresh.notify_all()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def latest(self) -> Frame | None:
        """The newest frame not taken yet (RGB), or None."""
        with self._fresh:
            frame = self._frame
            if frame is None or frame.index == self._taken:
                return None
            self._taken = frame.index
        return Frame(frame.source, frame.index, cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB))

    def _publish(self, frame: Frame) -> None:
        with self._fresh:
            self._frame = frame
            self._fresh.notify_all()
        if self.wake is not None:
            self.wake.set()

    def _drop(self, reason: str, delay: float) -> None:
        self.drops += 1
        self.connected = False
        if self._on_drop is not None:
            self._on_drop(Drop(self.camera, reason, self.drops, delay))

    def _read_until_lost(self, capture: cv2.VideoCapture) -> str:
        """Read frames until the stream fails; returns why it stopped ("" when asked to stop)."""
        while not self._stop.is_set():
            ok, bgr = capture.read()
            if not ok or bgr is None:
                return "stream lost (no frame within the timeout, or the server closed it)"
            self.connected = True
            index = self.frames_read
            self.frames_read += 1
            self._publish(Frame(self.camera.name, index, bgr))  # BGR until taken: skipped frames cost no conversion
        return ""

    def _run(self) -> None:
        delay, reported = RECONNECT_FIRST_S, False
        while not self._stop.is_set():
            before = self.frames_read
            try:
                reason = self._attempt()
            except Exception as problem:  # noqa: BLE001 - a camera thread never dies: the error is a drop, retried
                reason = f"unexpected error ({type(problem).__name__}: {problem})"
            if not reason:
                return
            if self.frames_read > before:
                delay, reported = RECONNECT_FIRST_S, False
            if not reported:
                self._drop(reason, delay)
                reported = True
            self._stop.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _attempt(self) -> str:
        """Open the camera and read it until the stream fails; why it stopped ("" when asked to stop)."""
        capture = self._open(self.camera)
        if capture is None:
            return "cannot connect"
        try:
            return self._read_until_lost(capture)
        finally:
            capture.release()


class CameraSet:
    """Several cameras read at once; `next_frames` waits for the newest frame of any of them."""

    def __init__(self, streams: list[CameraStream]) -> None:
        self.streams = streams
        self._wake = threading.Event()
        for stream in streams:
            stream.wake = self._wake

    def start(self) -> CameraSet:
        for stream in self.streams:
            stream.start()
        return self

    def next_frames(self, timeout: float = 0.2) -> list[tuple[CameraStream, Frame]]:
        """Each camera's newest untaken frame; waits up to `timeout` s for one when none has one yet."""
        deadline = time.monotonic() + timeout
        while True:
            self._wake.clear()
            found = [(stream, frame) for stream in self.streams if (frame := stream.latest()) is not None]
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            self._wake.wait(remaining)

    def stop(self) -> None:
        for stream in self.streams:
            stream.stop()
        for stream in self.streams:
            stream.join(STREAM_READ_TIMEOUT_MS / 1000 + 1)
