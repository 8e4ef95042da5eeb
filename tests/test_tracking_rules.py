"""The tracking rules (facenet/live/tracking.py) on a scripted camera: a fake pipeline whose detector returns the
boxes of a script and whose embedder returns each scripted person's vector. Fast, and no model or Debian package is
needed. What is checked: who each frame's face is named, when faces are embedded, and the events.
"""

from __future__ import annotations

import numpy as np
import pytest

from facenet.config import UNKNOWN
from facenet.detect.face import Face, Recognition
from facenet.gallery.index import FaceDatabase
from facenet.live.frames import FrameRecognizer
from facenet.live.tracking import (
    TRACK_CHECK_FRAMES,
    TRACK_DISAGREE,
    TRACK_NAME_CHECKS,
    TRACK_NAME_SAMPLES,
    TrackingRecognizer,
)
from facenet.sources import Frame

DIM = 128
BOX = (40, 30, 120, 110)
RNG = np.random.default_rng(7)
VECTORS = {who: v / np.linalg.norm(v) for who, v in ((w, RNG.normal(size=DIM)) for w in
                                                       ("ada", "bob", "cy", "stranger", "twin"))}
# "twin" looks like nobody else (its own texture); its vector is 0.45 from ada's: within the switch distance (0.6)
twin = VECTORS["ada"] * 0.9 + VECTORS["bob"] * 0.436
VECTORS["twin"] = twin / np.linalg.norm(twin)
# "near" is a stranger just beyond cy's distance 0.8 (0.85); one of its frames ("brush") lands at 0.63 from cy
away = VECTORS["stranger"] - (VECTORS["stranger"] @ VECTORS["cy"]) * VECTORS["cy"]
for who, (to_cy, to_away) in (("near", (0.64, 0.77)), ("brush", (0.8, 0.6)), ("hover", (0.695, 0.719))):
    mixed = to_cy * VECTORS["cy"] + to_away * away / np.linalg.norm(away)
    VECTORS[who] = mixed / np.linalg.norm(mixed)
TEXTURES = {who: np.random.default_rng(i).integers(0, 255, (80, 80, 3), dtype=np.uint8)
            for i, who in enumerate(VECTORS)}


class ScriptedPipeline:
    """Frame i shows `script[i]`: a list of (who, box, score); `texture` says whose face pixels are drawn. The frame
    number is written in the image's first pixel, so the detector knows which frame it is given."""

    model = "dlib"

    class embedder:  # noqa: N801 - what verify_threshold reads of a pipeline's embedder
        distance_scale = 1.0

    def __init__(self, script: list[list[tuple[str, tuple, float]]], texture: dict[int, str] | None = None) -> None:
        self.script, self.texture = script, texture or {}
        self.frame = -1
        self.embedded: list[int] = []
        """The frame number of every face embedded."""

    def image(self, i: int) -> np.ndarray:
        image = np.full((200, 200, 3), 90, np.uint8)
        for who, (left, top, right, bottom), _ in self.script[i]:
            face = TEXTURES[self.texture.get(i, who)]
            image[top:bottom, left:right] = face[: bottom - top, : right - left]
        image[0, 0, :2] = i % 256, i // 256
        return image

    def detect(self, image: np.ndarray, video: bool = False) -> list[Face]:
        self.frame = int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])
        return [Face(box, score) for _, box, score in self.script[self.frame]]

    def embed(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        people = {box: who for who, box, _ in self.script[self.frame]}
        self.embedded.extend([self.frame] * len(faces))
        return np.stack([VECTORS[people[face.box]] for face in faces]).astype(np.float32)


def database() -> FaceDatabase:
    names = ["ada", "bob", "cy"]
    return FaceDatabase(names, np.stack([VECTORS[n] for n in names]), "test", [3, 3, 3], model="dlib")


def run(script, texture=None, threshold=None, switch=0.6):
    """(labels per frame, track ids per frame, events as (kind, track, name), embedded frames) of the script."""
    pipeline = ScriptedPipeline(script, texture)
    tracker = TrackingRecognizer(pipeline, database(), "door", threshold, switch=switch, reuse_still=False)
    labels, ids, events = [], [], []
    for i in range(len(script)):
        faces, new = tracker.recognize(pipeline.image(i), i, i / 10)
        labels.append([f.name for f in faces])
        ids.append([f.track for f in faces])
        events += [(e.kind, e.track, e.name) for e in new]
    events += [(e.kind, e.track, e.name) for e in tracker.finish(len(script) - 1)]
    return labels, ids, events, pipeline.embedded


def named(who: str, frames: int) -> list[list[str]]:
    """A track's labels over its frames: the scripted faces are their people's centroids, well within: named at once."""
    return [[who]] * frames


def shown(*people: tuple[str, int], box=BOX, score=0.9):
    """A script of one face at `box`: each (who, frames) in turn, no empty frame between."""
    return [[(who, box, score)] for who, frames in people for _ in range(frames)]


def test_a_different_person_stepping_into_the_box_is_named_at_once_with_a_new_track():
    labels, ids, events, _ = run(shown(("ada", 8), ("bob", 8), ("stranger", 8)))
    assert labels == named("ada", 8) + named("bob", 8) + named(UNKNOWN, 8)
    assert ids == [[1]] * 8 + [[2]] * 8 + [[3]] * 8
    assert events == [("appeared", 1, "ada"), ("named", 1, "ada"), ("left", 1, "ada"),
                      ("appeared", 2, "bob"), ("named", 2, "bob"), ("left", 2, "bob"),
                      ("appeared", 3, UNKNOWN), ("named", 3, UNKNOWN), ("left", 3, UNKNOWN)]


def test_a_swap_that_keeps_the_look_is_caught_by_the_regular_check():
    """Bob's face pixels look like Ada's (the same texture): only the regular check can tell, within its period."""
    script = shown(("ada", 10), ("bob", 10))
    labels, ids, _, embedded = run(script, texture={i: "ada" for i in range(20)})
    first_bob = labels.index(["bob"])
    assert 10 <= first_bob <= 10 + TRACK_CHECK_FRAMES - 1
    assert labels[first_bob:] == [["bob"]] * (20 - first_bob) and ids[first_bob][0] == 2
    assert labels[:10] == named("ada", 10)


def test_a_stranger_whose_answer_brushes_past_a_name_once_is_never_shown_named():
    """A regular check of a stranger's track (0.85 from Cy, beyond the threshold 0.8) gives a face 0.63 from Cy,
    which pulls the track's mean within 0.8 of Cy for one check: the track stays Unknown."""
    distance = {who: np.linalg.norm(VECTORS[who] - VECTORS["cy"]) for who in ("near", "brush")}
    assert 0.84 < distance["near"] < 0.86 and 0.62 < distance["brush"] < 0.64
    script = shown(("near", 12))
    brushed = TRACK_NAME_SAMPLES + TRACK_CHECK_FRAMES - 1
    script[brushed] = [("brush", BOX, 0.9)]
    labels, ids, _, embedded = run(script, texture={i: "near" for i in range(12)}, threshold=0.8)
    assert brushed in embedded
    assert labels == [[UNKNOWN]] * 12 and ids == [[1]] * 12


def test_a_new_track_near_a_threshold_is_named_only_once_two_checks_agree():
    """A new track whose face sits just within Cy's threshold (0.78 of 0.8: not well within) is Unknown on its first
    frame and named from its second (two checks agree); a face well within is named at once."""
    labels, _, _, _ = run(shown(("hover", 4), ("cy", 4)), texture={i: "hover" for i in range(4)}, threshold=0.8)
    assert labels == [[UNKNOWN]] * (TRACK_NAME_CHECKS - 1) + [["cy"]] * (8 - TRACK_NAME_CHECKS + 1)


def test_a_stranger_hovering_at_a_threshold_is_never_named():
    """A stranger's track (Unknown) whose faces then sit just within Cy's threshold (0.78 of 0.8), check after check:
    a track that has its answer takes a name only well within the threshold (TRACK_RENAME_RATIO)."""
    assert 0.77 < np.linalg.norm(VECTORS["hover"] - VECTORS["cy"]) < 0.79
    labels, ids, _, _ = run(shown(("near", 6), ("hover", 18)), texture={i: "near" for i in range(24)}, threshold=0.8)
    assert labels == [[UNKNOWN]] * 24 and ids == [[1]] * 24


def test_a_stranger_stepping_in_never_carries_the_name():
    labels, _, _, _ = run(shown(("cy", 12), ("stranger", 12)))
    assert labels[12:] == [[UNKNOWN]] * 12


def test_a_track_is_checked_all_along_but_not_on_every_frame():
    _, ids, _, embedded = run(shown(("ada", 30)))
    assert ids == [[1]] * 30
    assert embedded[:TRACK_NAME_SAMPLES] == list(range(TRACK_NAME_SAMPLES)), "its first frames are all embedded"
    gaps = np.diff(embedded)
    assert gaps.max() <= TRACK_CHECK_FRAMES, "never longer than TRACK_CHECK_FRAMES without a check"
    assert len(embedded) <= TRACK_NAME_SAMPLES + 30 // TRACK_CHECK_FRAMES + 1


def test_a_missed_frame_and_a_better_face_are_embedded_at_once():
    script = shown(("ada", 6)) + [[]] + shown(("ada", 2)) + shown(("ada", 1), score=0.9 * 1.5) + shown(("ada", 1))
    _, ids, _, embedded = run(script)
    assert ids[7] == [1] and 7 in embedded, "the frame after a gap is embedded"
    assert 9 in embedded, "a clearly better face is embedded"


def test_two_people_side_by_side_keep_their_tracks_and_names():
    left, right = (10, 30, 80, 100), (120, 30, 190, 100)
    script = [[("ada", left, 0.9), ("bob", right, 0.9)] for _ in range(10)]
    labels, ids, _, _ = run(script)
    assert labels == [["ada", "bob"]] * 10 and ids == [[1, 2]] * 10


def test_answers_that_keep_disagreeing_with_the_track_start_a_new_one():
    """'twin' is within the switch distance of Ada's track, but beyond the gallery's threshold (0.4) of Ada: the
    answers of two checks in a row say it is someone else."""
    assert 0.4 < np.linalg.norm(VECTORS["twin"] - VECTORS["ada"]) < 0.6
    labels, ids, _, _ = run(shown(("ada", 8), ("twin", 16)), threshold=0.4)
    assert labels[:8] == named("ada", 8)
    assert labels[8 + TRACK_DISAGREE - 1:] == [[UNKNOWN]] * (16 - TRACK_DISAGREE + 1) and ids[-1] == [2]


@pytest.mark.parametrize("track", [True, False])
def test_the_frame_recognizer_is_the_same_door_with_and_without_tracks(track):
    script = shown(("ada", 4), ("bob", 4))
    pipeline = ScriptedPipeline(script)
    frames = FrameRecognizer(pipeline, database(), "door", track=track, reuse_still=False)
    names = [[frames.recognize(Frame("door", i, pipeline.image(i)), i / 10).faces[0].name] for i in range(8)]
    assert names == (named("ada", 4) + named("bob", 4) if track else [["ada"]] * 4 + [["bob"]] * 4)
    assert bool(frames.finish()) == track


def test_a_still_picture_keeps_its_faces_and_tracks_without_detecting_again():
    """Frames equal to the last analysed one (a still picture) keep its answer once its track has one; the next
    change is analysed."""
    script = shown(("ada", 6), ("bob", 6))
    pipeline = ScriptedPipeline(script)
    tracker = TrackingRecognizer(pipeline, database(), "door", switch=0.6)
    images = [pipeline.image(0)] * 6 + [pipeline.image(6)] * 6  # the frame number pixel stays that of the first
    labels, ids, events = [], [], []
    for i, image in enumerate(images):
        faces, new = tracker.recognize(image, i, i / 10)
        labels.append([f.name for f in faces])
        ids.append([f.track for f in faces])
        events += [(e.kind, e.name) for e in new]
    assert labels == named("ada", 6) + named("bob", 6), "a still picture is checked until its track has its answer"
    assert pipeline.embedded == [0, 0, 0, 6, 6, 6] and tracker.reused == 6
    assert ids == [[1]] * 6 + [[2]] * 6
    assert events == [("appeared", "ada"), ("named", "ada"), ("left", "ada"), ("appeared", "bob"), ("named", "bob")]


def test_the_same_picture_after_a_drop_is_a_new_track():
    """A camera showing a still picture drops for longer than TRACK_LOST_S (its track leaves), then shows the same
    picture again: that is analysed afresh, as a new track, not the answer of the track that left."""
    pipeline = ScriptedPipeline(shown(("ada", 1)))
    tracker = TrackingRecognizer(pipeline, database(), "door", switch=0.6)
    image, kinds = pipeline.image(0), []
    for t in (0.0, 0.1, 0.2, 0.3):
        kinds += [(e.kind, e.track) for e in tracker.recognize(image, None, t)[1]]
    kinds += [(e.kind, e.track) for e in tracker.idle(5.0)]
    for t in (5.1, 5.2, 5.3, 5.4):
        faces, new = tracker.recognize(image, None, t)
        kinds += [(e.kind, e.track) for e in new]
    assert faces[0].track == 2 and faces[0].name == "ada"
    assert kinds == [("appeared", 1), ("named", 1), ("left", 1), ("appeared", 2), ("named", 2)]


@pytest.mark.parametrize("track", [True, False])
def test_a_face_is_one_recognition_record_whose_track_is_set_only_by_tracking(track):
    """Tracked or not, a face is the one `Recognition` record: tracking sets its `track` (the track id, also in its
    JSON form); plain recognition leaves it None and its JSON form without "track"."""
    pipeline = ScriptedPipeline(shown(("ada", 3)))
    frames = FrameRecognizer(pipeline, database(), "door", track=track, reuse_still=False)
    for i in range(3):
        (face,) = frames.recognize(Frame("door", i, pipeline.image(i)), i / 10).faces
    assert type(face) is Recognition and (face.name, face.box) == ("ada", BOX)
    assert face.track == (1 if track else None)
    assert face.face_record().get("track", "absent") == (1 if track else "absent")


@pytest.mark.parametrize("box", [(60, 50, 140, 150), (-10, 5, 70, 90), (150, 120, 205, 165)],
                         ids=["inside", "past the left edge", "at the corner"])
def test_a_tracks_snapshot_is_its_best_face_grown_by_a_quarter_and_its_cut_by_a_half(box):
    """The snapshot (events) and the sighting's chip (unknown faces) come from one cut of the frame: the face box
    grown by SNAPSHOT_MARGIN and CHIP_MARGIN of its size, clipped to the frame, pixel for pixel."""
    from facenet.live.tracking import SNAPSHOT_MARGIN, Track
    from facenet.unknowns.sighting import CHIP_MARGIN, FaceCut

    frame = np.random.default_rng(0).integers(0, 255, (180, 210, 3), dtype=np.uint8)

    def grown(margin: float) -> np.ndarray:
        left, top, right, bottom = box
        mx, my = round((right - left) * margin), round((bottom - top) * margin)
        return frame[max(0, top - my):min(180, bottom + my), max(0, left - mx):min(210, right + mx)]

    track = Track(1, box, 0.0, 0.0, cut=FaceCut.of(frame, box, 0.9, None))
    assert np.array_equal(track.crop, grown(SNAPSHOT_MARGIN)) and np.array_equal(track.cut.image, grown(CHIP_MARGIN))
    assert Track(2, box, 0.0, 0.0).crop is None
