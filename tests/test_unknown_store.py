"""The store of unknown faces, the same contract over both galleries (files beside the file gallery, tables in the
PostgreSQL gallery): collect, group, list, ignore, merge, forget, retention, damage."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from facenet.gallery import GalleryOptions, open_gallery
from facenet.unknowns.sighting import Quality, Sighting, chip, new_id, quality
from facenet.unknowns.store import Retention, UnknownGroupError

PHOTO = Path(__file__).parent / "data" / "lfw_small" / "Al_Pacino"
MODEL, THRESHOLD, DIM = "test-model", 0.6, 64
GOOD = Quality(100, 0.95, 300.0, 0.05)


def _unit(seed: int, near: np.ndarray | None = None, spread: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vector = rng.normal(size=DIM) if near is None else near + rng.normal(scale=spread, size=DIM)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def _sighting(vector: np.ndarray, when: float | None = None, source: str = "door", rank: int = 100) -> Sighting:
    return Sighting(new_id(), time.time() if when is None else when, source, vector,
                    f"jpeg-{rank}".encode(), Quality(rank, 0.95, 300.0, 0.05))


@pytest.fixture(params=["files", "postgresql"])
def gallery(request, tmp_path):
    if request.param == "files":
        options = GalleryOptions(tmp_path / "db")
    else:
        options = GalleryOptions(tmp_path / "cache", database_url=request.getfixturevalue("pg_url"))
    with open_gallery(options) as opened:
        yield opened


def test_a_strangers_sightings_form_one_group_and_another_stranger_his_own(gallery):
    store = gallery.unknowns()
    ada, bob = _unit(1), _unit(2)
    first = store.collect(_sighting(_unit(10, ada)), MODEL, THRESHOLD)
    assert first.new and first.sightings == 1 and not first.ignored
    again = [store.collect(_sighting(_unit(11 + i, ada)), MODEL, THRESHOLD) for i in range(4)]
    assert {c.group for c in again} == {first.group} and not any(c.new for c in again)
    assert [c.sightings for c in again] == [2, 3, 4, 5]
    other = store.collect(_sighting(_unit(20, bob), source="yard"), MODEL, THRESHOLD)
    assert other.new and other.group != first.group
    groups = store.groups()
    assert [g.id for g in groups] == [other.group, first.group]  # most recently seen first
    assert [len(g.faces) for g in groups] == [1, 5] and groups[0].sources == ["yard"]
    assert store.group(first.group).faces[0].face_id == again[-1].face_id  # newest first


def test_other_models_faces_are_never_grouped_with_these(gallery):
    store = gallery.unknowns()
    vector = _unit(3)
    a = store.collect(_sighting(vector), MODEL, THRESHOLD)
    b = store.collect(_sighting(vector), "another-model", THRESHOLD)
    assert b.new and a.group != b.group


def test_ignore_merge_and_forget(gallery):
    store = gallery.unknowns()
    a = store.collect(_sighting(_unit(4)), MODEL, THRESHOLD)
    b = store.collect(_sighting(_unit(5)), MODEL, THRESHOLD)
    assert store.ignore_group(b.group).ignored
    returning = store.collect(_sighting(_unit(6, _unit(5))), MODEL, THRESHOLD)
    assert returning.group == b.group and returning.ignored and not returning.new
    merged = store.merge_groups(a.group, b.group)
    assert merged.id == a.group and len(merged.faces) == 3 and merged.ignored  # an ignored half stays silent
    with pytest.raises(UnknownGroupError):
        store.group(b.group)
    assert store.forget_group(a.group) == 3
    assert store.groups() == []
    with pytest.raises(UnknownGroupError):
        store.chip(a.face_id)


def test_chips_come_back_byte_for_byte_best_first(gallery):
    store = gallery.unknowns()
    base = _unit(7)
    got = [store.collect(_sighting(_unit(70 + rank, base), rank=rank), MODEL, THRESHOLD) for rank in (60, 120, 90)]
    assert store.chip(got[1].face_id) == b"jpeg-120"
    assert store.best_chips(got[0].group, 2) == [b"jpeg-120", b"jpeg-90"]


def test_retention_forgets_the_oldest_and_the_expired(gallery):
    store = gallery.unknowns(Retention(days=1, faces=3))
    now = time.time()
    old = store.collect(_sighting(_unit(8), when=now - 2 * 86400), MODEL, THRESHOLD)
    kept = [store.collect(_sighting(_unit(80 + i), when=now - 10 + i), MODEL, THRESHOLD) for i in range(4)]
    ids = {f.face_id for g in store.groups() for f in g.faces}
    assert ids == {c.face_id for c in kept[1:]} and old.face_id not in ids
    assert store.forget_all() == 3 and store.groups() == []


def test_a_damaged_store_file_is_reported_and_replaced_not_trusted(tmp_path, caplog):
    with open_gallery(GalleryOptions(tmp_path)) as gallery:
        store = gallery.unknowns()
        store.collect(_sighting(_unit(9)), MODEL, THRESHOLD)
        path = tmp_path / "unknowns" / "unknowns.npz"
        data = bytearray(path.read_bytes())
        data[-200:-100] = bytes(100)
        path.write_bytes(bytes(data))
        fresh = gallery.unknowns()
        assert fresh.groups() == []
        assert "unreadable store of unknown faces" in caplog.text
        fresh.collect(_sighting(_unit(9)), MODEL, THRESHOLD)
        assert len(gallery.unknowns().groups()) == 1
        assert sorted(p.name for p in (tmp_path / "unknowns" / "faces").iterdir()) == [
            f"{gallery.unknowns().groups()[0].faces[0].face_id}.jpg"]  # the lost face's chip went too


def test_the_quality_gate_and_chip_of_a_real_face(pipeline):
    photo = sorted(PHOTO.glob("*.jpg"))[0]
    image = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    face = pipeline.detect(image)[0]
    good = quality(image, face.box, 0.95, None)
    assert good.ok() == (True, "") and good.size >= 80
    blurred = quality(cv2.GaussianBlur(image, (0, 0), 3.0), face.box, 0.95, None)
    assert blurred.ok()[0] is False and "blurred" in blurred.ok()[1]
    small = cv2.resize(image, (60, 60), interpolation=cv2.INTER_AREA)
    scale = 60 / image.shape[1]
    tiny = quality(small, tuple(round(v * scale) for v in face.box), 0.95, None)
    assert tiny.ok()[0] is False and "too small" in tiny.ok()[1]
    turned = np.array([[100, 100], [140, 100], [140, 125], [105, 140], [135, 140]], np.float32)
    assert quality(image, face.box, 0.95, turned).ok()[1].startswith("face turned aside")
    data = chip(image, face.box)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    side = face.box[2] - face.box[0]
    assert abs(decoded.shape[1] - min(image.shape[1], 2 * side)) <= 2  # the box grown by half its size each side
    again = pipeline.detect(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))
    assert len(again) == 1  # the chip still holds a face enrollment finds


def test_negatives_are_the_marked_faces_of_the_model_by_name(gallery):
    store = gallery.unknowns()
    ada, bob = _unit(30), _unit(31)
    store.collect(_sighting(_unit(32)), MODEL, THRESHOLD)  # an unmarked stranger: no negative
    marks = [(ada, "Ada"), (bob, "Ada"), (_unit(33), "Bob")]
    for vector, name in marks:
        store.collect(replace(_sighting(vector), not_of=name), MODEL, THRESHOLD)
    store.collect(replace(_sighting(_unit(34)), not_of="Ada"), "another-model", THRESHOLD)
    found = store.negatives(MODEL)
    assert sorted(found) == ["Ada", "Bob"] and found["Ada"].shape == (2, DIM) and found["Bob"].shape == (1, DIM)
    assert {tuple(np.round(v, 5)) for v in found["Ada"]} == {tuple(np.round(v, 5)) for v in (ada, bob)}
    assert list(store.negatives("another-model")) == ["Ada"]
