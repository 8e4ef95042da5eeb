"""Who is in Frigate's person events: each `new` / `update` message of an event is one attempt (its snapshot and the
camera's latest frame, cut to the person's box, fetched and recognised); the enrolled name is written back as the
event's sub label; a stranger leaves one sighting per event.

Per event: at most `attempts` attempts; none once it is named with a GOOD_SCORE, nor after its `end`. A sub label is
written only for an enrolled name, and only when its score is better than the one the event holds (ours, or one set
by someone else; a sub label without a score, set by hand, is never overwritten). An event that ends (or runs out of
attempts) with faces but no name is Unknown: its best face (largest of each image, best quality of the event) is
offered once to the collector. The events sent are the live cameras' (facenet.live.tracking.TrackEvent, `track` =
Frigate's event id): `named` when the event's name changes, `unknown_seen` for the sighting, `left` at its end.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from facenet.config import UNKNOWN
from facenet.gallery.pg.urls import GalleryError
from facenet.images import ImageError, decode_image
from facenet.live.frigate.api import SUB_LABEL_MAX, FrigateApi, FrigateError
from facenet.live.frigate.messages import Box, FrigateEvent
from facenet.live.tracking import RENAME_SCORE, TrackEvent
from facenet.unknowns.sighting import FaceCut

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline
    from facenet.unknowns.collect import Collector
    from facenet.unknowns.store import Collected

log = logging.getLogger(__name__)

PERSON = "person"
ATTEMPTS = 5
"""Attempts per event by default (each: its snapshot and the camera's latest frame)."""
GOOD_SCORE = RENAME_SCORE
"""A name this sure (the face at most 0.9 of the person's threshold, score ~60) ends an event's attempts."""
EVENTS_KEPT = 1000
"""Events remembered at once (the oldest forgotten first: an event whose `end` never came)."""
BOX_MARGIN = 0.2
"""The latest frame is cut to the person's box grown by this share of its size on every side (he moves)."""


class Gallery(Protocol):
    """What recognition reads: a FaceDatabase, or the service's current one."""

    def __len__(self) -> int: ...

    def identify(self, vectors: np.ndarray, threshold: float | None = None) -> Iterable[tuple[str, float, float]]: ...


@dataclass(frozen=True)
class Sight:
    """The largest face of one fetched image: its cut, its unit vector and the gallery's answer for it."""

    cut: FaceCut
    vector: np.ndarray = field(repr=False)
    name: str
    distance: float
    score: float


@dataclass
class EventState:
    """What is known of one Frigate event: its last message, attempts made, its best enrolled match and best
    stranger's face, the sub label score it holds (0-1) and the name last announced."""

    event: FrigateEvent
    attempts: int = 0
    best: Sight | None = None
    stranger: Sight | None = None
    stranger_rank: float = -1.0
    held: float = 0.0
    announced: Sight | None = None
    finished: bool = False


@dataclass
class FrigateCount:
    """What a run did: messages read, person events followed, images fetched, sub labels written, sightings kept."""

    messages: int = 0
    """Messages handled (a batch's superseded `update`s are not: FrigateEvents.received counts every one)."""
    events: int = 0
    fetched: int = 0
    written: int = 0
    sightings: int = 0


class FrigateWatcher:
    """Recognises the people of Frigate's events (see the module doc); `handle` one message at a time."""

    def __init__(self, api: FrigateApi, pipeline: FacePipeline, database: Gallery, threshold: float | None = None,
                 collector: Collector | None = None, cameras: Iterable[str] | None = None,
                 attempts: int = ATTEMPTS) -> None:
        """`cameras`: Frigate's cameras to follow (None: all); `collector`: keeps strangers' faces."""
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.api, self.pipeline, self.database, self.threshold = api, pipeline, database, threshold
        self.collector, self.attempts = collector, attempts
        self.cameras = None if cameras is None else frozenset(cameras)
        self.states: OrderedDict[str, EventState] = OrderedDict()
        self.count = FrigateCount()
        self._failing = False

    def follows(self, event: FrigateEvent) -> bool:
        """A person (not a false positive) on a followed camera."""
        return (event.label == PERSON and not event.false_positive
                and (self.cameras is None or event.camera in self.cameras))

    def handle(self, event: FrigateEvent) -> list[TrackEvent]:
        """One message: an attempt for `new` / `update` while the event has some left, the last events at `end`."""
        self.count.messages += 1
        if not self.follows(event):
            return []
        if event.type == "end":
            state = self.states.get(event.id)  # None: an event that began before we listened
            return [] if state is None else self._end(self._state(event))
        state = self._state(event)
        return [] if state.finished else self._attempt(state)

    def _state(self, event: FrigateEvent) -> EventState:
        state = self.states.get(event.id)
        if state is None:
            state = self.states[event.id] = EventState(event)
            self.count.events += 1
            while len(self.states) > EVENTS_KEPT:
                self.states.popitem(last=False)
        state.event = event
        if event.sub_label is not None:  # ours, or someone else's: only a better one is written
            state.held = max(state.held, 1.0 if event.sub_label_score is None else event.sub_label_score)
        return state

    # ------------------------------------------------------------------ an attempt

    def _attempt(self, state: EventState) -> list[TrackEvent]:
        state.attempts += 1
        for image in self._images(state.event):
            self._look(state, image)
        events = self._named(state)
        good = state.best is not None and state.best.score >= GOOD_SCORE
        return events + (self._conclude(state) if good or state.attempts >= self.attempts else [])

    def _images(self, event: FrigateEvent) -> list[np.ndarray]:
        """The event's snapshot and the camera's latest frame cut to the person, those Frigate has."""
        images = []
        for what, fetch in (("snapshot", lambda: self.api.snapshot(event.id)),
                            ("latest frame", lambda: self.api.latest(event.camera))):
            data = self._fetch(fetch)
            if data is None:
                continue
            self.count.fetched += 1
            try:
                image = decode_image(data, f"Frigate's {what} of event {event.id}")
            except ImageError as error:
                log.warning("%s", error)
                continue
            image = image if what == "snapshot" else person_cut(image, event.box)
            if image is not None:
                images.append(image)
        return images

    def _fetch(self, fetch: Callable[[], bytes | None]) -> bytes | None:
        try:
            data = fetch()
        except FrigateError as error:
            self._problem(str(error))
            return None
        self._failing = False
        return data

    def _look(self, state: EventState, image: np.ndarray) -> None:
        """The image's largest face, named: kept as the event's best match, or its best stranger's face."""
        faces = self.pipeline.detect(image)[:1]
        if not faces:
            return
        face = faces[0]
        vector = self.pipeline.embed(image, faces)[0]
        name, distance, score = next(iter(self.database.identify(vector[None], self.threshold)))
        sight = Sight(FaceCut.of(image, face.box, face.score, face.points), vector, name, distance, score)
        if name != UNKNOWN:
            if state.best is None or score > state.best.score:
                state.best = sight
        elif (rank := sight.cut.quality().rank) > state.stranger_rank:
            state.stranger, state.stranger_rank = sight, rank

    def _named(self, state: EventState) -> list[TrackEvent]:
        """The sub label written when the best match beats the one held; `named` when the name is new."""
        best = state.best
        if best is None:
            return []
        if best.score / 100 > state.held and self._write(state.event, best):
            state.held = best.score / 100
        if state.announced is not None and state.announced.name == best.name:
            return []
        state.announced = best
        return [self._event("named", state, best)]

    def _write(self, event: FrigateEvent, best: Sight) -> bool:
        if len(best.name) > SUB_LABEL_MAX:
            log.warning("%s: Frigate takes sub labels of at most %d characters: not written", best.name, SUB_LABEL_MAX)
            return False
        try:
            written = self.api.set_sub_label(event.id, best.name, round(min(best.score / 100, 1.0), 3))
        except FrigateError as error:
            self._problem(str(error))
            return False
        self._failing = False
        self.count.written += written
        return written

    # ------------------------------------------------------------------ the end of an event

    def _conclude(self, state: EventState) -> list[TrackEvent]:
        """No more attempts: an event with faces but no name is Unknown, its best face offered to the collector."""
        state.finished = True
        if state.best is not None or state.stranger is None:
            return []
        state.announced = state.stranger
        return [self._event("named", state, state.stranger), *self._collect(state)]

    def _collect(self, state: EventState) -> list[TrackEvent]:
        """The stranger's one sighting of this event; `unknown_seen` unless his group is ignored."""
        if self.collector is None or state.stranger is None:
            return []
        try:
            kept = self.collector.collect(state.stranger.cut, state.stranger.vector, state.event.camera)
        except (OSError, GalleryError) as error:
            log.warning("%s: cannot keep an unknown face: %s", state.event.camera, error)
            return []
        if kept is None:
            return []
        self.count.sightings += 1
        return [] if kept.ignored else [self._event("unknown_seen", state, state.stranger, kept)]

    def _end(self, state: EventState) -> list[TrackEvent]:
        events = [] if state.finished else self._conclude(state)
        del self.states[state.event.id]
        if state.announced is not None:
            events.append(self._event("left", state, state.announced))
        return events

    def _event(self, kind: str, state: EventState, sight: Sight, unknown: Collected | None = None) -> TrackEvent:
        event = state.event
        return TrackEvent(kind, event.camera, event.id, time.time(), None, sight.name, sight.distance, sight.score,
                          event.start_time or time.time(), sight.cut.image, unknown)

    def _problem(self, text: str) -> None:
        """One line per outage of Frigate's API."""
        if not self._failing:
            log.warning("%s; events are skipped until it answers", text)
        self._failing = True


def person_cut(image: np.ndarray, box: Box | None) -> np.ndarray | None:
    """The person's box (grown by BOX_MARGIN) of a camera frame; the whole frame without a box; None when the box
    is not inside the frame (a frame of another size than the detect resolution)."""
    if box is None:
        return image
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    if x2 > width or y2 > height:
        return None
    mx, my = round((x2 - x1) * BOX_MARGIN), round((y2 - y1) * BOX_MARGIN)
    return image[max(0, y1 - my): min(height, y2 + my), max(0, x1 - mx): min(width, x2 + mx)]
