"""DeepStack's face API in the service (facenet/service/deepstack.py) through FastAPI's TestClient: real photos, the
real HOG + dlib pipeline, a real data/ folder. Names, confidences and boxes are checked against the service's own
/api/v1 answers; register adds photos, never replaces; min_confidence only makes naming stricter; the key travels
in the `api_key` form field; every refusal is DeepStack's {"success": false, "error"} and leaves data/ alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PEOPLE
from tests.test_service import HELD_OUT, KEY, OTHER, STRANGER, files_of
from tests.test_service_compreface import DOGS, NEW, TWO, new_service, own_faces

pytest.importorskip("fastapi")

FACE = "/v1/vision/face"
KEYED = {"api_key": KEY}


def image(path: Path, field: str = "image") -> dict:
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


@pytest.fixture(scope="module")
def service(tmp_path_factory, pipeline):
    """(client, data_dir): the service with one key (sent here only in the form), 3 people from users' photos."""
    client, data = new_service(tmp_path_factory.mktemp("deepstack"), pipeline)
    client.headers.pop("x-api-key")
    return client, data


def box_of(prediction: dict) -> list[int]:
    return [prediction["x_min"], prediction["y_min"], prediction["x_max"], prediction["y_max"]]


def test_recognize_names_with_our_score_and_a_stranger_is_unknown_with_0(service):
    client, _ = service
    [own] = own_faces(client, HELD_OUT, headers={"x-api-key": KEY})
    answer = client.post(f"{FACE}/recognize", files=image(HELD_OUT), data=KEYED)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    [face] = body["predictions"]
    assert body["success"] is True and isinstance(body["duration"], float)
    assert face["userid"] == own["name"] == "George_Clooney" and box_of(face) == own["box"]
    assert face["confidence"] >= 0.5 and abs(face["confidence"] * 100 - own["score"]) <= 0.05 + 1e-9

    [stranger] = client.post(f"{FACE}/recognize", files=image(STRANGER), data=KEYED).json()["predictions"]
    assert stranger["userid"] == "unknown" and stranger["confidence"] == 0
    assert box_of(stranger) == own_faces(client, STRANGER, headers={"x-api-key": KEY})[0]["box"]
    group = client.post(f"{FACE}/recognize", files=image(TWO), data=KEYED).json()["predictions"]
    assert [box_of(p) for p in group] == [f["box"] for f in own_faces(client, TWO, headers={"x-api-key": KEY})]


def test_min_confidence_only_makes_naming_stricter(service):
    client, _ = service
    [named] = client.post(f"{FACE}/recognize", files=image(HELD_OUT), data=KEYED).json()["predictions"]
    stricter = {**KEYED, "min_confidence": str(named["confidence"] + 0.01)}
    [refused] = client.post(f"{FACE}/recognize", files=image(HELD_OUT), data=stricter).json()["predictions"]
    assert refused["userid"] == "unknown" and refused["confidence"] == 0
    at = {**KEYED, "min_confidence": str(named["confidence"])}
    assert client.post(f"{FACE}/recognize", files=image(HELD_OUT), data=at).json()["predictions"] == [named]
    # looser than the service's threshold changes nothing: the stranger (score just below 50) stays unknown
    for looser in ("0", "0.1", "0.45", "-1"):
        [face] = client.post(f"{FACE}/recognize", files=image(STRANGER),
                             data={**KEYED, "min_confidence": looser}).json()["predictions"]
        assert face["userid"] == "unknown" and face["confidence"] == 0


def test_detect_and_match(service):
    client, _ = service
    own = client.post("/api/v1/detect", files={"file": ("t.jpg", TWO.read_bytes())},
                      headers={"x-api-key": KEY}).json()["faces"]
    for path in (FACE, FACE + "/"):
        found = client.post(path, files=image(TWO), data=KEYED).json()
        assert [box_of(p) for p in found["predictions"]] == [f["box"] for f in own]
        assert all(0.85 <= p["confidence"] <= 1 and "userid" not in p for p in found["predictions"])
    least = min(p["confidence"] for p in found["predictions"])
    fewer = client.post(FACE, files=image(TWO), data={**KEYED, "min_confidence": str(least + 1e-4)}).json()
    assert len(fewer["predictions"]) == 1
    assert client.post(FACE, files=image(DOGS), data=KEYED).json()["predictions"] == []

    same = PEOPLE / "George_Clooney" / "George_Clooney_0001.jpg"
    matched = client.post(f"{FACE}/match", files={**image(HELD_OUT, "image1"), **image(same, "image2")}, data=KEYED)
    assert matched.status_code == 200 and matched.json()["similarity"] >= 0.5
    other = client.post(f"{FACE}/match", files={**image(HELD_OUT, "image1"), **image(OTHER, "image2")}, data=KEYED)
    assert other.json()["similarity"] < 0.5 and other.json()["success"] is True


def test_register_adds_photos_list_and_delete(service):
    client, data = service
    users = files_of(data)
    photos = sorted(NEW.iterdir())
    first = client.post(f"{FACE}/register", files=image(photos[0]), data={**KEYED, "userid": "Paul"})
    assert first.json()["success"] is True and first.json()["message"] == "face added"
    assert len(list((data / "Paul").iterdir())) == 1
    # any number of image fields of any name (deepstack-sdk names them image<uuid>); a photo without a face is
    # skipped; registering again adds, never replaces
    more = {**image(photos[1], "image-a"), **image(photos[2], "second"), **image(DOGS, "image-dogs")}
    again = client.post(f"{FACE}/register", files=more, data={**KEYED, "userid": "Paul"}).json()
    assert again["success"] is True and again["message"] == "face updated"
    saved = list((data / "Paul").iterdir())
    assert len(saved) == 3 and all(p.name.startswith("api-") for p in saved)
    [face] = client.post(f"{FACE}/recognize", files=image(photos[3]), data=KEYED).json()["predictions"]
    assert face["userid"] == "Paul" and face["confidence"] >= 0.5
    assert client.post(f"{FACE}/list", data=KEYED).json()["faces"] == [
        "Barbra_Streisand", "George_Clooney", "Jon_Voight", "Paul"]

    refused = client.post(f"{FACE}/delete", data={**KEYED, "userid": "Jon_Voight"})
    assert refused.status_code == 403 and refused.json()["success"] is False
    assert "never deletes your own photos" in refused.json()["error"]
    assert client.post(f"{FACE}/delete", data={**KEYED, "userid": "Nobody"}).json()["success"] is True
    assert client.post(f"{FACE}/delete", data={**KEYED, "userid": "Paul"}).json()["success"] is True
    assert not (data / "Paul").exists() and files_of(data) == users
    [face] = client.post(f"{FACE}/recognize", files=image(photos[3]), data=KEYED).json()["predictions"]
    assert face["userid"] == "unknown"


def test_the_key_is_a_form_field_when_the_service_has_keys(service, tmp_path, pipeline):
    client, _ = service
    for data in ({}, {"api_key": "wrong"}, {"api_key": ""}):
        answer = client.post(f"{FACE}/recognize", files=image(HELD_OUT), data=data)
        assert answer.status_code == 401 and answer.json() == {
            "success": False, "error": "Incorrect api key", "duration": 0}
    assert client.post(f"{FACE}/list").status_code == 401
    assert client.post(f"{FACE}/list", headers={"x-api-key": KEY}).status_code == 200  # the header works too

    from fastapi.testclient import TestClient

    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore

    open_service = TestClient(create_app(GalleryStore(tmp_path / "data", pipeline, tmp_path / "db"), frozenset()))
    assert open_service.post(f"{FACE}/list").json()["faces"] == []
    assert open_service.post(f"{FACE}/list", data={"api_key": "anything"}).json()["success"] is True


@pytest.mark.parametrize(("path", "kwargs", "status", "says"), [
    (f"{FACE}/recognize", {"files": image(HELD_OUT), "data": {**KEYED, "min_confidence": "2"}}, 400,
     "min_confidence cannot be greater than 1"),
    (f"{FACE}/recognize", {"files": image(HELD_OUT), "data": {**KEYED, "min_confidence": "high"}}, 400,
     "Invalid value for min_confidence"),
    (f"{FACE}/recognize", {"files": image(HELD_OUT, "photo"), "data": KEYED}, 400, "No valid image file found"),
    (f"{FACE}/recognize", {"data": KEYED}, 400, "No valid image file found"),
    (f"{FACE}/recognize", {"files": {"image": ("b.jpg", b"\xff\xd8 broken")}, "data": KEYED}, 400, "b.jpg: "),
    (FACE, {"files": {"image": ("e.jpg", b"")}, "data": KEYED}, 400, "e.jpg: empty file"),
    (f"{FACE}/register", {"files": image(HELD_OUT), "data": KEYED}, 400, "userid not specified"),
    (f"{FACE}/register", {"data": {**KEYED, "userid": "X"}}, 400, "No valid image file found"),
    (f"{FACE}/register", {"files": image(DOGS), "data": {**KEYED, "userid": "Dogs"}}, 400, "no face detected"),
    (f"{FACE}/register", {"files": {**image(HELD_OUT), "b": ("b.jpg", b"GIF89a")}, "data": {**KEYED, "userid": "X"}},
     400, "b.jpg: "),
    (f"{FACE}/register", {"files": image(HELD_OUT), "data": {**KEYED, "userid": "../up"}}, 400,
     "cannot be a folder name"),
    (f"{FACE}/delete", {"data": KEYED}, 400, "userid not specified"),
    (f"{FACE}/match", {"files": image(HELD_OUT, "image1"), "data": KEYED}, 400, "only one found"),
    (f"{FACE}/match", {"files": {**image(HELD_OUT, "image1"), **image(DOGS, "image2")}, "data": KEYED}, 400,
     "dogs.jpg: no face found"),
    (f"{FACE}/recognize", {"content": b"x" * (3 << 20), "headers": {"content-type": "multipart/form-data; boundary=x"}},
     413, "request body too large"),
    (f"{FACE}/recognize", {"files": image(HELD_OUT), "data": {"api_key": "nope"}}, 401, "Incorrect api key"),
])
def test_refusals_are_deepstack_errors_and_leave_data_alone(service, path, kwargs, status, says):
    client, data = service
    before = files_of(data)
    answer = client.post(path, **kwargs)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is False and set(body) == {"success", "error", "duration"}
    assert says in body["error"] and "\n" not in body["error"]
    assert files_of(data) == before

