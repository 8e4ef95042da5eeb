"""Strangers on a camera become sightings: one per track (never one per frame), grouped by stranger across his
visits, an `unknown_seen` event each time (none once his group is ignored), never a sighting of an enrolled person.
The default pipeline, real LFW photos (tests/data), the one frame loop as cameras drive it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from swap_videos import swap_frames

from facenet.config import UNKNOWN
from facenet.gallery import GalleryOptions
from facenet.images import load_image
from facenet.live.frames import FrameRecognizer
from facenet.sources import Frame
from facenet.unknowns.collect import Collector
from facenet.unknowns.file_store import FileUnknowns

DATA = Path(__file__).parent / "data"
PEOPLE = DATA / "swap" / "people"
FRAMES_EACH, FPS = 20, 25.0


@pytest.fixture(scope="module")
def default_pipeline():
    from facenet.config import default_weights_dir
    from facenet.pipeline import FacePipeline

    return FacePipeline(weights_dir=default_weights_dir())


@pytest.fixture
def gallery(tmp_path, default_pipeline):
    """Three swap people enrolled (2 photos each) in a file gallery of this test."""
    from facenet.gallery.file import sync_database

    for person in sorted(PEOPLE.iterdir())[:3]:
        (tmp_path / "data" / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:2]:
            shutil.copy2(photo, tmp_path / "data" / person.name)
    database, _ = sync_database(tmp_path / "data", tmp_path / "db", default_pipeline)
    return database, tmp_path / "db"


def _visit(pipeline, database, db_dir, photos: list[Path], seed: int):
    """Run a camera over the photos in turn (each FRAMES_EACH frames); the events."""
    collector = Collector(GalleryOptions(db_dir), pipeline)
    recognizer = FrameRecognizer(pipeline, database, "door", collector=collector)
    events = []
    for i, image in enumerate(swap_frames([load_image(p) for p in photos], FRAMES_EACH, seed)):
        events += recognizer.recognize(Frame("door", i, image), i / FPS).events
    return events + recognizer.finish()


def test_a_strangers_visits_are_one_group_and_enrolled_people_leave_nothing(default_pipeline, gallery):
    database, db_dir = gallery
    enrolled = [sorted(p.iterdir())[2] for p in sorted(PEOPLE.iterdir())[:2]]
    gul = sorted((DATA / "lfw_small" / "Abdullah_Gul").iterdir())
    costa = sorted((DATA / "lfw_small" / "Albert_Costa").iterdir())
    events = _visit(default_pipeline, database, db_dir, [enrolled[0], costa[0], enrolled[1], costa[1], gul[0]], 0)

    seen = [e for e in events if e.kind == "unknown_seen"]
    assert [e.name for e in seen] == [UNKNOWN] * 3
    first, again, other = (e.unknown for e in seen)
    assert first.new and not again.new and again.group == first.group and again.sightings == 2
    assert other.new and other.group != first.group
    store = FileUnknowns(db_dir)
    groups = {g.id: len(g.faces) for g in store.groups()}
    assert groups == {first.group: 2, other.group: 1}  # one sighting per track, none of the enrolled two
    final = {e.track: e.name for e in events if e.kind == "named"}  # each track's last answer
    assert {e.track for e in seen} <= {track for track, name in final.items() if name == UNKNOWN}
    # (a small background face in one photo is Unknown too, but the quality gate keeps it out)

    store.ignore_group(first.group)
    later = _visit(default_pipeline, database, db_dir, [costa[2], gul[1]], 1)
    seen = [e.unknown for e in later if e.kind == "unknown_seen"]
    assert [(s.group, s.new, s.sightings) for s in seen] == [(other.group, False, 2)]  # Costa: kept, but silent
    assert {g.id: len(g.faces) for g in store.groups()} == {first.group: 3, other.group: 2}


def test_not_this_person_stops_a_look_alike_being_named_and_keeps_her_own_photos(tmp_path):
    """A stranger named Albert_Costa (a loose threshold makes him a look-alike) is marked "not Albert_Costa" on one
    photo: his other photos are no longer named so, Albert's own still are, and it holds for a new Gallery too."""
    import facenet

    costa, gul = sorted((DATA / "lfw_small" / "Albert_Costa").iterdir()), sorted(
        (DATA / "lfw_small" / "Abdullah_Gul").iterdir())
    (tmp_path / "data" / "Albert_Costa").mkdir(parents=True)
    for photo in costa[:2]:
        shutil.copy2(photo, tmp_path / "data" / "Albert_Costa")
    gallery = facenet.Gallery(tmp_path / "data", tmp_path / "db", threshold=1.25)
    assert [f.name for f in gallery.recognize(gul[1])][:1] == ["Albert_Costa"]  # the look-alike, before
    marked = gallery.not_person(gul[0], "Albert_Costa")
    assert marked.new and gallery.unknowns()[0].faces[0].not_of == "Albert_Costa"
    again = facenet.Gallery(tmp_path / "data", tmp_path / "db", threshold=1.25)
    for g in (gallery, again):
        assert [f.name for f in g.recognize(gul[1])][:1] == [UNKNOWN]
        assert [f.name for f in g.recognize(gul[2])][:1] == [UNKNOWN]
        assert [f.name for f in g.recognize(costa[2])][:1] == ["Albert_Costa"]
        assert [f.name for f in g.recognize(costa[3])][:1] == ["Albert_Costa"]


def test_the_python_api_collects_a_stranger_and_naming_his_group_enrolls_him(tmp_path):
    import facenet

    costa = sorted((DATA / "lfw_small" / "Albert_Costa").iterdir())
    shutil.copytree(PEOPLE / "Bernard_Law", tmp_path / "data" / "Bernard_Law")
    gallery = facenet.Gallery(tmp_path / "data", tmp_path / "db")
    faces = [gallery.recognize(photo, collect=True)[0] for photo in costa[:2]]
    assert [f.name for f in faces] == [UNKNOWN] * 2 and faces[0].group == faces[1].group and faces[0].face_id
    [group] = gallery.unknowns()
    assert group.id == faces[0].group and {f.face_id for f in group.faces} == {f.face_id for f in faces}
    named = gallery.name_group(group.id, "Albert Costa")
    assert named.enrolled and named.new_subject and sorted(named.photos) == sorted(
        p.name for p in (tmp_path / "data" / "Albert Costa").iterdir())
    assert gallery.unknowns() == [] and "Albert Costa" in gallery.people
    assert gallery.recognize(costa[2])[0].name == "Albert Costa"
