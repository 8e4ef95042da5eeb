"""Tracking faces across the frames of one camera or video: one id per person, and a name that is checked all along.

Each frame is detected; faces are matched to the live tracks by box overlap (Hungarian assignment on 1 - IoU, with
a centre-distance gate for fast moves). A track never trusts its past: its face is embedded again

- on each of its first TRACK_NAME_SAMPLES frames (a new track is named from its own first face),
- after a frame it was missed in (`gap`),
- when its look changed since its last embedding (`look`: a 16x16 normalised grey thumbnail of the face; someone
  stepping into the same box changes it at once),
- when the face is clearly better (TRACK_BETTER times the quality) than any it kept,
- on the frame after a check whose own answer disagreed with the track's name,
- and in any case every TRACK_CHECK_FRAMES frames.

An embedding farther from the track's mean than the 1:1 verify threshold is someone else, and so is a face whose own
answer (the gallery's name for that embedding alone) differs from a named track's TRACK_DISAGREE checks in a row: the
track ends (`left`) and the face starts a new track, named from its own embeddings. A track's name is the gallery's
answer for the quality-weighted mean of its last TRACK_SAMPLES embeddings: Unknown at once; an enrolled name at once
by a new track when well within that person's threshold (TRACK_RENAME_RATIO), else only after TRACK_NAME_CHECKS
checks agree (Unknown meanwhile), and by a track that had its answer already only well within and once checks agree:
one blurred frame cannot flip it, and a stranger never inherits, nor brushes past, an enrolled person's name.

A frame unchanged since the last analysed one (recognize.StillFrames: a still picture) keeps that frame's faces and
tracks, as plain recognition does, once every track in it has its answer.

A track emits events: `appeared` (seen in TRACK_CONFIRM_HITS frames), `named` (TRACK_NAME_SAMPLES embeddings, or a
changed name), `left` (not seen for TRACK_LOST_S, or replaced by someone else). Returns values; the one frame loop
(facenet/live/frames.py) and the outputs send them on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from facenet import config
from facenet.detect.face import Recognition
from facenet.gallery.pg.urls import GalleryError
from facenet.gallery.thresholds import match_score, verify_threshold
from facenet.recognize import StillFrames, face_points
from facenet.unknowns.sighting import FaceCut

if TYPE_CHECKING:
    from facenet.detect.face import Face
    from facenet.gallery.index import FaceDatabase
    from facenet.pipeline import FacePipeline
    from facenet.unknowns.collect import Collector
    from facenet.unknowns.store import Collected

log = logging.getLogger(__name__)

TRACK_MIN_IOU = 0.2
"""A face continues a track when its box overlaps the track's last box at least this much (intersection over union),
or when its centre is within TRACK_MAX_CENTRE_SHIFT of the track's box width (fast moves at a low frame rate)."""

TRACK_MAX_CENTRE_SHIFT = 0.5

TRACK_LOST_S = 1.0
"""A track not seen for this long has left (its `left` event is sent)."""

TRACK_CONFIRM_HITS = 2
"""Frames a face must be seen in before its track counts (`appeared`): one-frame false detections never do."""

TRACK_SAMPLES = 5
"""The last embeddings a track keeps: its name comes from their quality-weighted mean."""

TRACK_NAME_SAMPLES = 3
"""Embeddings a track needs before its name is announced (`named`); its first frames are all embedded."""

TRACK_CHECK_FRAMES = 3
"""A track's face is embedded again at least every this many frames, whatever else happens: who it is stays checked."""

TRACK_SAME_LOOK = 0.7
"""Correlation of the face's 16x16 normalised grey thumbnail with the one at its last embedding below which the
face looks changed and is embedded again now (measured on the swap videos of tests/swap_videos.py: the same face
3-9 frames later >= 0.72, a new person in its place <= 0.61)."""

TRACK_DISAGREE = 2
"""Checks in a row whose own answer differs from the track's name before the face starts a new track."""

TRACK_RENAME_RATIO = 0.9
"""A distance of at most this share of a person's threshold is "well within" it. A new track takes such a name at
once; a name nearer the threshold only once TRACK_NAME_CHECKS checks in a row agree (Unknown meanwhile). A track that
already has its answer (TRACK_NAME_SAMPLES checks) takes another, enrolled, name only well within and once checks
agree: a stranger's mean hovering at someone's threshold (measured: 0.571-0.578 for a threshold of ~0.58 on
bench/bench_swaps.py) never turns into them. Enrolled people facing the camera sit at ~0.5-0.8 of their threshold."""

TRACK_NAME_CHECKS = 2
"""Checks in a row that must agree on a name that is not taken at once (see TRACK_RENAME_RATIO)."""

RENAME_SCORE = match_score(TRACK_RENAME_RATIO, 1.0)

TRACK_BETTER = 1.15
"""A face this many times better (quality) than every one the track kept is embedded at once."""

LOOK_SIDE = 16

SNAPSHOT_MARGIN = 0.25
"""The best-face snapshot is the face box grown by this share of its size on every side."""

Box = tuple[int, int, int, int]

_NO_MATCH = 1e6


@dataclass(frozen=True)
class TrackEvent:
    """Something that happened to a track: `kind` is appeared, named, left or unknown_seen (a stranger's track was
    kept as a sighting: `unknown` says of which group); `crop` its best face so far (RGB)."""

    kind: str
    camera: str
    track: int | str
    """The track's id (a Frigate event's id, a string, for the events of facenet.live.frigate)."""
    time: float
    frame: int | None
    name: str | None
    distance: float | None
    score: float | None
    first_seen: float
    """Wall-clock time the track started."""
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)
    unknown: Collected | None = field(default=None, compare=False)


@dataclass
class Track:
    """One face followed across frames: its last embeddings (quality, vector), its look, and its current answer."""

    id: int
    box: Box
    first_seen: float
    last_seen: float
    hits: int = 1
    since_embed: int = 0
    samples: list[tuple[float, np.ndarray]] = field(default_factory=list)
    """The last TRACK_SAMPLES embeddings, oldest first."""
    embedded: int = 0
    look: np.ndarray | None = None
    """The face's thumbnail (see `look`) at its last embedding."""
    disagree: int = 0
    candidate: str | None = None
    """An enrolled name the track's mean gave but that is not yet confirmed (TRACK_NAME_CHECKS)."""
    candidate_checks: int = 0
    cut: FaceCut | None = None
    """The best face so far, cut out with room around it: what a stranger's sighting is made of, and (closer
    around it) the events' snapshot (`crop`)."""
    cut_quality: float = 0.0
    cut_new: bool = False
    """The cut changed since the track last tried to leave a sighting."""
    collected: bool = False
    """The track left its sighting (one per track)."""
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

    @property
    def crop(self) -> np.ndarray | None:
        """The best face so far for snapshots: its box grown by SNAPSHOT_MARGIN on every side, clipped to the frame."""
        return None if self.cut is None else self.cut.around(SNAPSHOT_MARGIN)


def face_quality(face: Face) -> float:
    """How good a face is to embed: detector score x the shorter side of its box (bigger, surer faces first)."""
    left, top, right, bottom = face.box
    return float(face.score) * max(0, min(right - left, bottom - top))


def look(image: np.ndarray, box: Box) -> np.ndarray | None:
    """The face's LOOK_SIDE x LOOK_SIDE grey thumbnail, zero mean and unit norm (None for an empty box)."""
    height, width = image.shape[:2]
    left, top, right, bottom = max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3])
    if right - left < 2 or bottom - top < 2:
        return None
    grey = cv2.cvtColor(np.ascontiguousarray(image[top:bottom, left:right]), cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(grey, (LOOK_SIDE, LOOK_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return thumb / norm if norm > 1e-6 else None


def looks_alike(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Two thumbnails of `look` correlate at least TRACK_SAME_LOOK (a missing one never does)."""
    return a is not None and b is not None and float(a @ b) >= TRACK_SAME_LOOK


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


def wants_embedding(track: Track, quality: float, seen: np.ndarray | None) -> bool:
    """Embed this frame's face of the track? See the module doc: first frames, a gap, a disagreement to confirm, a
    changed look, a clearly better face, or TRACK_CHECK_FRAMES since the last check."""
    if track.embedded < TRACK_NAME_SAMPLES or track.gap or track.since_embed >= TRACK_CHECK_FRAMES:
        return True
    if track.disagree:
        return True
    if not looks_alike(seen, track.look):
        return True
    return quality > TRACK_BETTER * max(kept for kept, _ in track.samples)


def _settle(track: Track, name: str, distance: float, score: float) -> None:
    """The track's answer after a check (the gallery's name, distance and score for its mean; see TRACK_NAME_CHECKS
    and TRACK_RENAME_RATIO): Unknown or its own name at once; another, enrolled, name at once by a new track when
    well within that person's threshold, else once TRACK_NAME_CHECKS checks agree; by a track that had its answer
    already, only well within and once checks agree."""
    track.distance, track.score = distance, score
    well_within = score >= RENAME_SCORE
    established = track.embedded > TRACK_NAME_SAMPLES
    if name in (config.UNKNOWN, track.name) or (well_within and not established):
        track.name, track.candidate, track.candidate_checks = name, None, 0
        return
    if established and not well_within:
        track.name, track.candidate, track.candidate_checks = config.UNKNOWN, None, 0
        return
    track.candidate_checks = track.candidate_checks + 1 if track.candidate == name else 1
    track.candidate = name
    if track.candidate_checks >= TRACK_NAME_CHECKS:
        track.name, track.candidate, track.candidate_checks = name, None, 0
    else:
        track.name = config.UNKNOWN


def _settled(last: tuple[Recognition, Track]) -> bool:
    """Has the track its answer (its first checks done, no name or disagreement waiting to be confirmed)?"""
    track = last[1]
    return track.embedded >= TRACK_NAME_SAMPLES and track.candidate is None and not track.disagree


def mean_vector(samples: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """The unit quality-weighted mean of (quality, vector) samples."""
    weights = np.array([max(quality, 1e-6) for quality, _ in samples])
    mean = np.average([vector for _, vector in samples], axis=0, weights=weights)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


class TrackingRecognizer:
    """Names the faces of one camera's frames through tracks (see the module doc); one per camera or video.

    `switch`: the distance from a track's mean beyond which a face is someone else (default: the pipeline's 1:1
    verify threshold).
    """

    def __init__(
        self, pipeline: FacePipeline, database: FaceDatabase, camera: str, threshold: float | None = None,
        switch: float | None = None, reuse_still: bool = True, collector: Collector | None = None,
    ) -> None:
        """`collector`: each track that ends Unknown leaves one sighting of its best face (facenet.unknowns)."""
        self.pipeline, self.database, self.camera, self.threshold = pipeline, database, camera, threshold
        self.collector = collector
        self._collect_failed = False
        self.tracks: list[Track] = []
        self._next_id = 1
        self.frames = 0
        self.embedded = 0
        self.reused = 0
        self._switch = verify_threshold(pipeline) if switch is None else switch
        self._still = StillFrames() if reuse_still else None
        self._last: list[tuple[Recognition, Track]] = []

    def recognize(self, image: np.ndarray, frame: int | None, t: float) -> tuple[list[Recognition], list[TrackEvent]]:
        """Every face of an RGB frame (at stream time `t` seconds), named by its track (`Recognition.track` is its
        id, per camera from 1); and the events it caused.

        A frame unchanged since the last analysed one (recognize.StillFrames) keeps that frame's faces and tracks once
        they have their answers.
        """
        self.frames += 1
        if self._still is not None and self._still.still(image) and all(map(_settled, self._last)):
            return self._reuse(t, frame)
        faces = self.pipeline.detect(image, video=True)
        pairs = dict((j, i) for i, j in associate([track.box for track in self.tracks], [f.box for f in faces]))
        seen = [self._continue(self.tracks[pairs[j]], face, t) if j in pairs else self._start(face, t)
                for j, face in enumerate(faces)]
        self._check(image, faces, seen, t)
        events: list[TrackEvent] = []
        for track in seen:
            events.extend(self._announce(track, frame))
            events.extend(self._collect(track, frame))
        events.extend(self._expire(t, frame))
        results = [Recognition(face.box, track.name, track.distance, track.score, face_points(face), track.id)
                   for face, track in zip(faces, seen, strict=True)]
        self._last = list(zip(results, seen, strict=True))
        return results, events

    def _reuse(self, t: float, frame: int | None) -> tuple[list[Recognition], list[TrackEvent]]:
        """The last analysed frame's faces, seen again now (nothing in the picture changed)."""
        self.reused += 1
        events: list[TrackEvent] = []
        for _, track in self._last:
            track.last_seen, track.last_frame = t, self.frames
            track.hits += 1
            events.extend(self._announce(track, frame))
        events.extend(self._expire(t, frame))
        return [result for result, _ in self._last], events

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

    def _continue(self, track: Track, face: Face, t: float) -> Track:
        track.box, track.last_seen = face.box, t
        track.gap, track.last_frame = self.frames - track.last_frame > 1, self.frames
        track.hits += 1
        track.since_embed += 1
        return track

    def _check(self, image: np.ndarray, faces: list[Face], tracks: list[Track], t: float) -> None:
        """Embed, in one batch, the faces whose tracks want a check; end the tracks whose face is someone else;
        name the checked tracks (`tracks` is updated in place)."""
        if len(self.database) == 0 and self.collector is None:
            return
        looks = [look(image, face.box) for face in faces]
        chosen = [j for j, (face, track) in enumerate(zip(faces, tracks, strict=True))
                  if wants_embedding(track, face_quality(face), looks[j])]
        if not chosen:
            return
        vectors = self.pipeline.embed(image, [faces[j] for j in chosen])
        self.embedded += len(chosen)
        own = (self.database.identify(vectors, self.threshold).names if len(self.database)
               else [config.UNKNOWN] * len(chosen))
        for j, vector, own_name in zip(chosen, vectors, own, strict=True):
            if self._someone_else(tracks[j], vector, own_name):
                tracks[j].last_seen = -float("inf")  # leaves at this frame's expiry
                tracks[j] = self._start(faces[j], t)
            self._add_sample(tracks[j], faces[j], image, vector, looks[j])
        checked = [tracks[j] for j in chosen]
        if len(self.database) == 0:  # embedded for the collector only: nobody to name
            return
        means = np.stack([mean_vector(track.samples) for track in checked])
        for track, answer in zip(checked, self.database.identify(means, self.threshold), strict=True):
            _settle(track, *answer)

    def _someone_else(self, track: Track, vector: np.ndarray, own_name: str) -> bool:
        """Is this embedding another person than the track so far: far from its mean, or named otherwise again?"""
        if not track.samples:
            return False
        if float(np.linalg.norm(vector - mean_vector(track.samples))) > self._switch:
            return True
        # Only a named track is split on disagreement: an Unknown one changes its name by its mean, with the margin
        # (a stranger hovering at a threshold must not restart as a fresh track that takes the name)
        named = track.name != config.UNKNOWN
        track.disagree = track.disagree + 1 if named and own_name != track.name else 0
        return track.disagree >= TRACK_DISAGREE

    @staticmethod
    def _add_sample(track: Track, face: Face, image: np.ndarray, vector: np.ndarray, seen: np.ndarray | None) -> None:
        quality = face_quality(face)
        track.samples.append((quality, vector))
        del track.samples[:-TRACK_SAMPLES]
        track.embedded += 1
        track.since_embed = 0
        track.look = seen
        if quality > track.cut_quality or track.cut is None:
            track.cut, track.cut_quality = FaceCut.of(image, face.box, face.score, face.points), quality
            track.cut_new = True

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
        ready = track.embedded >= TRACK_NAME_SAMPLES or (leaving and track.samples)
        if track.confirmed and (ready or len(self.database) == 0) and track.name != track.announced:
            track.announced = track.name
            events.append(self._event("named", track, frame))
        return events

    def _collect(self, track: Track, frame: int | None, leaving: bool = False) -> list[TrackEvent]:
        """A track announced as Unknown leaves one sighting of its best face (its mean embedding), tried again
        whenever a better face comes while the gate refuses; `unknown_seen` unless the stranger's group is ignored.
        A store that cannot be written is logged once and recognition goes on."""
        if (self.collector is None or track.collected or not track.cut_new or track.cut is None
                or track.announced != config.UNKNOWN or track.name != config.UNKNOWN
                or not (track.embedded >= TRACK_NAME_SAMPLES or (leaving and track.samples))):
            return []
        track.cut_new = False
        try:
            kept = self.collector.collect(track.cut, mean_vector(track.samples), self.camera)
        except (OSError, GalleryError) as problem:
            if not self._collect_failed:
                log.warning("%s: cannot keep an unknown face: %s", self.camera, problem)
            self._collect_failed = True
            return []
        if kept is None:
            return []
        track.collected = True
        return [] if kept.ignored else [replace(self._event("unknown_seen", track, frame), unknown=kept)]

    def _expire(self, t: float, frame: int | None) -> list[TrackEvent]:
        """`left` for every confirmed track not seen for TRACK_LOST_S; those tracks are dropped, and the last frame's
        answer is no longer reused (the next frame is analysed)."""
        events, kept = [], []
        for track in self.tracks:
            if t - track.last_seen <= TRACK_LOST_S:
                kept.append(track)
            elif track.confirmed:
                events.extend(self._announce(track, frame, leaving=True))
                events.extend(self._collect(track, frame, leaving=True))
                events.append(self._event("left", track, frame))
        if len(kept) < len(self.tracks) and self._still is not None:
            self._still.reset()
        self.tracks = kept
        return events
