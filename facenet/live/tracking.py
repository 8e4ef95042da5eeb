"""Tracking faces across the frames of one camera or video, so that a person keeps one id and one steady name.

Each frame is detected; faces are matched to the live tracks by box overlap (Hungarian assignment on
1 - IoU, with a centre-distance gate for fast moves). A track's face is embedded only a few times (its first
frame, then every TRACK_REEMBED_FRAMES frames while it has fewer than TRACK_SAMPLES embeddings, or when the face is
clearly better than the worst one kept, or again after a frame it was missed in), and its name is the gallery's
answer for the normalised mean of its best-quality embeddings (quality = detector score x face size): one blurred
frame cannot flip the label. An embedding far from its track's mean (beyond the 1:1 verify threshold) is another
person: that track ends and a new one starts.

A track emits events: `appeared` (seen in TRACK_CONFIRM_HITS frames), `named` (TRACK_NAME_SAMPLES embeddings, or a
changed name), `left` (not seen for TRACK_LOST_S). Returns values; facenet/live/events.py and the CLI send them on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import linear_sum_assignment

from facenet import config
from facenet.gallery.thresholds import verify_threshold
from facenet.recognize import Recognition

if TYPE_CHECKING:
    from facenet.detect.face import Face
    from facenet.gallery.index import FaceDatabase
    from facenet.pipeline import FacePipeline


TRACK_MIN_IOU = 0.2
"""A face continues a track when its box overlaps the track's last box at least this much (intersection over union),
or when its centre is within TRACK_MAX_CENTRE_SHIFT of the track's box width (fast moves at a low frame rate)."""

TRACK_MAX_CENTRE_SHIFT = 0.5

TRACK_LOST_S = 1.0
"""A track not seen for this long has left (its `left` event is sent)."""

TRACK_CONFIRM_HITS = 2
"""Frames a face must be seen in before its track counts (`appeared`): one-frame false detections never do."""

TRACK_SAMPLES = 5
"""Embeddings kept per track (its best-quality faces): the track's name comes from their normalised mean."""

TRACK_NAME_SAMPLES = 3
"""Embeddings a track needs before its name is announced (`named`), unless it leaves first."""

TRACK_REEMBED_FRAMES = 5
"""A track's face is embedded again at most every this many frames: while it has fewer than TRACK_SAMPLES, or
when the face is better (TRACK_BETTER times the quality) than the worst one kept."""

TRACK_BETTER = 1.15

SNAPSHOT_MARGIN = 0.25
"""The best-face snapshot is the face box grown by this share of its size on every side."""

Box = tuple[int, int, int, int]

_NO_MATCH = 1e6


@dataclass(frozen=True)
class TrackedRecognition(Recognition):
    """A face of a frame named from its track's evidence; `track` is the track id (per camera, from 1)."""

    track: int = 0

    def record(self, source: str, frame: int | None) -> dict:
        return {**super().record(source, frame), "track": self.track}


@dataclass(frozen=True)
class TrackEvent:
    """Something that happened to a track: `kind` is appeared, named or left; `crop` its best face so far (RGB)."""

    kind: str
    camera: str
    track: int
    time: float
    frame: int | None
    name: str | None
    distance: float | None
    score: float | None
    first_seen: float
    """Wall-clock time the track started."""
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass
class Track:
    """One face followed across frames, with its best embeddings (quality, vector) and its current answer."""

    id: int
    box: Box
    first_seen: float
    last_seen: float
    hits: int = 1
    since_embed: int = 0
    samples: list[tuple[float, np.ndarray]] = field(default_factory=list)
    crop: np.ndarray | None = None
    crop_quality: float = 0.0
    name: str = config.UNKNOWN
    distance: float | None = None
    score: float | None = None
    confirmed: bool = False
    announced: str | None = None
    last_frame: int = 0
    gap: bool = False
    """True when the track was missed in the frame before this one: its face is embedded again to check it."""
    born: float = field(default_factory=time.time)
    """Wall-clock time the track started (names its snapshot)."""


def face_quality(face: Face) -> float:
    """How good a face is to embed: detector score x the shorter side of its box (bigger, surer faces first)."""
    left, top, right, bottom = face.box
    return float(face.score) * max(0, min(right - left, bottom - top))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, width) * max(0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre_shift(a: Box, b: Box) -> float:
    """Distance between the boxes' centres, in widths of `a`."""
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    return float(np.hypot(dx, dy)) / max(1, a[2] - a[0])


def associate(tracks: list[Box], faces: list[Box]) -> list[tuple[int, int]]:
    """(track index, face index) pairs: the assignment of least total 1 - IoU (+ centre shift) among allowed pairs.

    A pair is allowed when IoU >= TRACK_MIN_IOU or the centres are within TRACK_MAX_CENTRE_SHIFT track widths.
    """
    if not tracks or not faces:
        return []
    cost = np.full((len(tracks), len(faces)), _NO_MATCH)
    for i, track in enumerate(tracks):
        for j, face in enumerate(faces):
            overlap, shift = iou(track, face), _centre_shift(track, face)
            if overlap >= TRACK_MIN_IOU or shift <= TRACK_MAX_CENTRE_SHIFT:
                cost[i, j] = 1.0 - overlap + shift
    rows, cols = linear_sum_assignment(cost)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if cost[i, j] < _NO_MATCH]


def _crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The face box grown by SNAPSHOT_MARGIN on every side, clipped to the image (a copy)."""
    left, top, right, bottom = box
    mx, my = round((right - left) * SNAPSHOT_MARGIN), round((bottom - top) * SNAPSHOT_MARGIN)
    height, width = image.shape[:2]
    return image[max(0, top - my): min(height, bottom + my), max(0, left - mx): min(width, right + mx)].copy()


def _wants_embedding(track: Track, quality: float) -> bool:
    """Embed this frame's face of the track? First face; then every few frames while samples are few or it is better."""
    if not track.samples or track.gap:
        return True
    if track.since_embed < TRACK_REEMBED_FRAMES:
        return False
    if len(track.samples) < TRACK_SAMPLES:
        return True
    return quality > TRACK_BETTER * track.samples[-1][0]


class TrackingRecognizer:
    """Names the faces of one camera's frames through tracks (see the module doc); one per camera or video."""

    def __init__(
        self, pipeline: FacePipeline, database: FaceDatabase, camera: str, threshold: float | None = None
    ) -> None:
        self.pipeline, self.database, self.camera, self.threshold = pipeline, database, camera, threshold
        self.tracks: list[Track] = []
        self._next_id = 1
        self.frames = 0
        self.embedded = 0
        self._switch = verify_threshold(pipeline)

    def recognize(
        self, image: np.ndarray, frame: int | None, t: float
    ) -> tuple[list[TrackedRecognition], list[TrackEvent]]:
        """Every face of an RGB frame (at stream time `t` seconds), named by its track; and the events it caused."""
        self.frames += 1
        faces = self.pipeline.detect(image, video=True)
        pairs = dict((j, i) for i, j in associate([track.box for track in self.tracks], [f.box for f in faces]))
        events: list[TrackEvent] = []
        seen: list[Track] = []
        for j, face in enumerate(faces):
            track = self._continue(self.tracks[pairs[j]], face, t, self.frames) if j in pairs else self._start(face, t)
            seen.append(track)
        self._embed(image, faces, seen, t)
        for track in seen:
            events.extend(self._announce(track, frame))
        events.extend(self._expire(t, frame))
        results = [TrackedRecognition(face.box, track.name, track.distance, track.score, track=track.id)
                   for face, track in zip(faces, seen, strict=True)]
        return results, events

    def finish(self, frame: int | None = None) -> list[TrackEvent]:
        """The end of the stream: every track leaves (named first if it never was)."""
        return self._expire(float("inf"), frame)

    def idle(self, t: float) -> list[TrackEvent]:
        """No frame came (a dropped stream): tracks not seen for TRACK_LOST_S by stream time `t` leave."""
        return self._expire(t, None)

    def _start(self, face: Face, t: float) -> Track:
        track = Track(self._next_id, face.box, t, t, last_frame=self.frames)
        self._next_id += 1
        self.tracks.append(track)
        return track

    @staticmethod
    def _continue(track: Track, face: Face, t: float, frame_number: int) -> Track:
        track.box, track.last_seen = face.box, t
        track.gap, track.last_frame = frame_number - track.last_frame > 1, frame_number
        track.hits += 1
        track.since_embed += 1
        return track

    def _embed(self, image: np.ndarray, faces: list[Face], tracks: list[Track], t: float) -> None:
        """Embed, in one batch, the faces whose tracks want it; then update those tracks' names.

        A face whose embedding is farther from its track's mean than the 1:1 verify threshold is someone else
        (two people crossing, or a new person where one just left): that track ends and the face starts a new one
        (`tracks` is updated in place).
        """
        if len(self.database) == 0:
            return
        chosen = [j for j, (face, track) in enumerate(zip(faces, tracks, strict=True))
                  if _wants_embedding(track, face_quality(face))]
        if not chosen:
            return
        vectors = self.pipeline.embed(image, [faces[j] for j in chosen])
        self.embedded += len(chosen)
        for j, vector in zip(chosen, vectors, strict=True):
            track = tracks[j]
            if track.samples and float(np.linalg.norm(vector - _mean_vector(track))) > self._switch:
                track.last_seen = -float("inf")  # leaves at this frame's expiry
                tracks[j] = track = self._start(faces[j], t)
            self._add_sample(track, faces[j], image, vector)
        updated = [tracks[j] for j in chosen]
        means = np.stack([_mean_vector(track) for track in updated])
        for track, match in zip(updated, self.database.identify(means, self.threshold), strict=True):
            track.name, track.distance, track.score = match.name, match.distance, match.score

    @staticmethod
    def _add_sample(track: Track, face: Face, image: np.ndarray, vector: np.ndarray) -> None:
        quality = face_quality(face)
        track.samples.append((quality, vector))
        track.samples.sort(key=lambda sample: -sample[0])
        del track.samples[TRACK_SAMPLES:]
        track.since_embed = 0
        if quality > track.crop_quality or track.crop is None:
            track.crop, track.crop_quality = _crop(image, face.box), quality

    def _event(self, kind: str, track: Track, frame: int | None) -> TrackEvent:
        return TrackEvent(kind, self.camera, track.id, time.time(), frame, track.name if track.samples or
                          len(self.database) == 0 else None, track.distance, track.score, track.born,
                          track.crop)

    def _announce(self, track: Track, frame: int | None, leaving: bool = False) -> list[TrackEvent]:
        """`appeared` once the track is confirmed; `named` once it has enough evidence, or when its name changes."""
        events = []
        if not track.confirmed and (track.hits >= TRACK_CONFIRM_HITS or leaving):
            track.confirmed = True
            events.append(self._event("appeared", track, frame))
        ready = len(track.samples) >= TRACK_NAME_SAMPLES or (leaving and track.samples)
        if track.confirmed and (ready or len(self.database) == 0) and track.name != track.announced:
            track.announced = track.name
            events.append(self._event("named", track, frame))
        return events

    def _expire(self, t: float, frame: int | None) -> list[TrackEvent]:
        """`left` for every confirmed track not seen for TRACK_LOST_S; those tracks are dropped."""
        events, kept = [], []
        for track in self.tracks:
            if t - track.last_seen <= TRACK_LOST_S:
                kept.append(track)
            elif track.confirmed:
                events.extend(self._announce(track, frame, leaving=True))
                events.append(self._event("left", track, frame))
        self.tracks = kept
        return events


def _mean_vector(track: Track) -> np.ndarray:
    """The unit mean of the track's kept embeddings."""
    mean = np.mean([vector for _, vector in track.samples], axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


class VideoTracker:
    """A TrackingRecognizer with the Recognizer interface that `recognize_stream` drives, for video files.

    Stream time is the frame number / `fps`; the events of each frame wait in `events` (take them with `drain`).
    `reset` (called by recognize_stream before each video) starts fresh tracks named after `source`.
    """

    def __init__(self, pipeline: FacePipeline, database: FaceDatabase, threshold: float | None = None) -> None:
        self.pipeline, self.database, self.threshold = pipeline, database, threshold
        self.source, self.fps = "video", 25.0
        self.tracker = TrackingRecognizer(pipeline, database, self.source, threshold)
        self.events: list[TrackEvent] = []
        self._frame = 0

    def start(self, source: str, fps: float) -> None:
        """The next video's name (its events' camera) and frame rate."""
        self.source, self.fps = source, fps

    def reset(self) -> None:
        self.tracker = TrackingRecognizer(self.pipeline, self.database, self.source, self.threshold)
        self._frame = 0

    def recognize(self, image: np.ndarray, video: bool = True) -> list[TrackedRecognition]:
        results, events = self.tracker.recognize(image, self._frame, self._frame / self.fps)
        self.events.extend(events)
        self._frame += 1
        return results

    def finish(self) -> None:
        """The video ended: every track leaves."""
        self.events.extend(self.tracker.finish(self._frame - 1 if self._frame else None))

    def drain(self) -> list[TrackEvent]:
        events, self.events = self.events, []
        return events
