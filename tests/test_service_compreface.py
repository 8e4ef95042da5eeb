"""CompreFace's REST API in the service (facenet/service/compreface.py) through FastAPI's TestClient: real photos,
the real HOG + dlib pipeline, a real data/ folder. Names, similarities and boxes are checked against the service's
own /api/v1 answers; image ids are global and stable; users' photos are never deleted or moved; every refusal is
CompreFace's {"message", "code"} and leaves data/ as it was."""

from __future__ import annotations

import base64
import shutil
import uuid
from pathlib import Path

import cv2
import pytest

from tests.conftest import MISC, PEOPLE
from tests.test_service import HELD_OUT, KEY, LFW, OTHER, STRANGER, files_of, make_data

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

NO_SUCH_ID = "0d1f5e2a-7c3b-4f6e-9a8d-2b4c6e8f0a1c"
"""An image id no photo has (fixed: test ids must be the same in every process that collects them)."""
CF = "/api/v1/recognition"
TWO = MISC / "two_people.jpg"
DOGS = MISC / "dogs.jpg"
NEW = PEOPLE / "Paul_Tagliabue"  # never enrolled by make_data


def upload(path: Path, field: str = "file") -> dict:
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


def new_service(root: Path, pipeline, threshold: float | None = None) -> tuple[TestClient, Path]:
    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore

    if not (root / "data").exists():
        make_data(root / "data")
    store = GalleryStore(root / "data", pipeline, root / "database", threshold=threshold)
    client = TestClient(create_app(store, frozenset({KEY}), max_upload=2 << 20), headers={"x-api-key": KEY})
    return client, root / "data"


@pytest.fixture(scope="module")
def service(tmp_path_factory, pipeline):
    """(client, data_dir): keys, a 2 MiB upload limit, 3 people enrolled from users' own photos."""
    return new_service(tmp_path_factory.mktemp("compreface"), pipeline)


def own_faces(client: TestClient, path: Path, **kwargs) -> list[dict]:
    """The faces the service's own /api/v1/recognize finds in a photo."""
    answer = client.post("/api/v1/recognize", files=upload(path), **kwargs)
    assert answer.status_code == 200, answer.text
    return answer.json()["faces"]


def box_of(face: dict) -> list[int]:
    box = face["box"]
    return [box["x_min"], box["y_min"], box["x_max"], box["y_max"]]


def test_recognize_names_the_enrolled_with_our_scores_and_boxes(service):
    client, _ = service
    [own] = own_faces(client, HELD_OUT)
    answer = client.post(f"{CF}/recognize", files=upload(HELD_OUT), params={
        "prediction_count": 3, "face_plugins": "landmarks,calculator,undefined,age", "status": "true"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    [face] = body["result"]
    assert box_of(face) == own["box"] and 0.85 <= face["box"]["probability"] <= 1
    names = [s["subject"] for s in face["subjects"]]
    assert names[0] == own["name"] == "George_Clooney" and sorted(names) == sorted(ENROLLED_NAMES)
    assert abs(face["subjects"][0]["similarity"] * 100 - own["score"]) <= 0.05 + 1e-9
    assert face["subjects"][0]["similarity"] >= 0.5 > max(s["similarity"] for s in face["subjects"][1:])
    similarities = [s["similarity"] for s in face["subjects"]]
    assert similarities == sorted(similarities, reverse=True)
    assert len(face["landmarks"]) == 5 and all(len(p) == 2 and isinstance(p[0], int) for p in face["landmarks"])
    assert len(face["embedding"]) == 128 and abs(sum(v * v for v in face["embedding"]) - 1) < 1e-3
    assert set(face["execution_time"]) == {"detector", "calculator"} and "age" not in face
    assert body["plugins_versions"] == {"detector": "facenet.hog", "calculator": "facenet.dlib"}

    # the defaults: one prediction, no plugins, no status; base64 JSON answers the same
    plain = client.post(f"{CF}/recognize", files=upload(HELD_OUT)).json()
    as_json = client.post(f"{CF}/recognize", json={"file": base64.b64encode(HELD_OUT.read_bytes()).decode()}).json()
    assert plain == as_json and set(plain) == {"result"} and set(plain["result"][0]) == {"box", "subjects"}
    assert [s["subject"] for s in plain["result"][0]["subjects"]] == ["George_Clooney"]


ENROLLED_NAMES = ["George_Clooney", "Jon_Voight", "Barbra_Streisand"]


@pytest.mark.parametrize("photo", [STRANGER, LFW / "Al_Pacino" / "Al_Pacino_0001.jpg", OTHER, HELD_OUT,
                                   PEOPLE / "Juanes" / "Juanes_0001.jpg"])
def test_similarity_reaches_one_half_exactly_when_the_service_names_the_face(service, photo):
    """CompreFace has no "unknown": the nearest person is always listed, but only the one the service names reaches
    0.5; a stranger's nearest person stays below it (what Double Take and Viseron compare their threshold with)."""
    client, _ = service
    [own] = own_faces(client, photo)
    [face] = client.post(f"{CF}/recognize", files=upload(photo)).json()["result"]
    [best] = face["subjects"]
    assert (best["similarity"] >= 0.5) == (own["name"] != "Unknown")
    if own["name"] != "Unknown":
        assert best["subject"] == own["name"]
    expected = own["score"] if own["name"] != "Unknown" else min(own["score"], 49.99)
    assert abs(best["similarity"] * 100 - expected) <= 0.05 + 1e-9


def test_a_face_marked_not_this_person_stays_below_one_half(tmp_path, pipeline):
    """"Not this person" refuses a name whatever the distance: the person is still the nearest, listed first, but
    below 0.5, so that a client comparing similarities does not name him either (DeepStack: unknown, 0)."""
    client, _ = new_service(tmp_path, pipeline)
    assert client.post("/api/v1/subjects/George_Clooney/not", files=upload(HELD_OUT)).status_code == 200
    [own] = own_faces(client, HELD_OUT)
    assert own["name"] == "Unknown" and own["score"] > 50  # refused by the mark, not by the distance
    [face] = client.post(f"{CF}/recognize", files=upload(HELD_OUT), params={"prediction_count": 3}).json()["result"]
    assert face["subjects"][0] == {"subject": "George_Clooney", "similarity": 0.4999}
    assert all(s["similarity"] < 0.5 for s in face["subjects"])
    [named] = client.post("/v1/vision/face/recognize", files=upload(HELD_OUT, "image"),
                          data={"api_key": KEY}).json()["predictions"]
    assert (named["userid"], named["confidence"]) == ("unknown", 0)


def test_similarity_is_one_half_at_the_threshold(tmp_path, pipeline, service):
    """A store whose threshold is exactly a face's distance: score 50, similarity 0.5, named; a hair below: not."""
    client, data = service
    [own] = own_faces(client, HELD_OUT)
    shutil.copytree(data, tmp_path / "data")
    at, _ = new_service(tmp_path, pipeline, threshold=own["distance"] + 5e-5)
    [face] = at.post(f"{CF}/recognize", files=upload(HELD_OUT)).json()["result"]
    assert face["subjects"][0]["subject"] == "George_Clooney" and 0.5 <= face["subjects"][0]["similarity"] < 0.502
    below, _ = new_service(tmp_path, pipeline, threshold=own["distance"] - 5e-4)
    [face] = below.post(f"{CF}/recognize", files=upload(HELD_OUT)).json()["result"]
    assert face["subjects"][0]["subject"] == "George_Clooney" and 0.49 < face["subjects"][0]["similarity"] < 0.5


def test_limit_probability_threshold_and_whole_photo_faces(service, tmp_path):
    client, _ = service
    own = own_faces(client, TWO)
    both = client.post(f"{CF}/recognize", files=upload(TWO), params={"det_prob_threshold": 0.8}).json()["result"]
    assert [box_of(f) for f in both] == [f["box"] for f in own] and len(own) == 2
    [largest] = client.post(f"{CF}/recognize", files=upload(TWO), params={"limit": 1}).json()["result"]
    assert box_of(largest) == own[0]["box"]
    none = client.post(f"{CF}/recognize", files=upload(TWO), params={"det_prob_threshold": 1.0})
    assert none.status_code == 400 and none.json()["code"] == 28

    # detect_faces=false: the photo is one face crop (the held-out face, cut out with room around it)
    [face] = own_faces(client, HELD_OUT)
    left, top, right, bottom = face["box"]
    crop = cv2.imread(str(HELD_OUT))[max(0, top - 30):bottom + 20, max(0, left - 20):right + 20]
    cv2.imwrite(str(tmp_path / "crop.jpg"), crop)
    [whole] = client.post(f"{CF}/recognize", files=upload(tmp_path / "crop.jpg"),
                          params={"detect_faces": "false"}).json()["result"]
    assert box_of(whole) == [0, 0, crop.shape[1], crop.shape[0]] and whole["box"]["probability"] == 1.0
    assert whole["subjects"][0]["subject"] == "George_Clooney" and whole["subjects"][0]["similarity"] >= 0.5


def test_detection_and_verification_services(service):
    client, _ = service
    own = client.post("/api/v1/detect", files=upload(TWO)).json()["faces"]
    found = client.post("/api/v1/detection/detect", files=upload(TWO), params={"face_plugins": "landmarks"}).json()
    assert [box_of(f) for f in found["result"]] == [f["box"] for f in own]
    assert all(len(f["landmarks"]) == 5 and "subjects" not in f for f in found["result"])

    same = PEOPLE / "George_Clooney" / "George_Clooney_0001.jpg"
    ours = client.post("/api/v1/verify", files={**upload(HELD_OUT, "source_image"), **upload(same, "target_image")})
    answer = client.post("/api/v1/verification/verify",
                         files={**upload(HELD_OUT, "source_image"), **upload(same, "target_image")})
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["result"]
    [match] = result["face_matches"]
    assert ours.json()["same"] is True and match["similarity"] >= 0.5
    assert box_of(result["source_image_face"]) == own_faces(client, HELD_OUT)[0]["box"]
    other = client.post("/api/v1/verification/verify",
                        files={**upload(HELD_OUT, "source_image"), **upload(OTHER, "target_image")}).json()
    assert other["result"][0]["face_matches"][0]["similarity"] < 0.5
    # the target may hold several faces (each matched); the source must be one face
    group = client.post("/api/v1/verification/verify",
                        files={**upload(HELD_OUT, "source_image"), **upload(TWO, "target_image")}).json()
    assert len(group["result"][0]["face_matches"]) == 2
    several = client.post("/api/v1/verification/verify",
                          files={**upload(TWO, "source_image"), **upload(HELD_OUT, "target_image")})
    assert several.status_code == 400 and several.json()["code"] == 31
    dogs = client.post("/api/v1/verification/verify",
                       files={**upload(HELD_OUT, "source_image"), **upload(DOGS, "target_image")})
    assert dogs.status_code == 400 and dogs.json() == {"message": "No face is found in the target image", "code": 28}


def test_faces_and_subjects_with_global_ids(service):
    client, data = service
    users = files_of(data)
    assert client.get(f"{CF}/subjects").json() == {"subjects": ["Barbra_Streisand", "George_Clooney", "Jon_Voight"]}

    # adding a face creates the subject; the same bytes again give the same id
    photos = sorted(NEW.iterdir())
    added = client.post(f"{CF}/faces", params={"subject": "Paul T"}, files=upload(photos[0]))
    assert added.status_code == 201, added.text
    image_id = added.json()["image_id"]
    assert added.json()["subject"] == "Paul T" and uuid.UUID(image_id).version == 5
    assert client.post(f"{CF}/faces?subject=Paul T", files=upload(photos[0])).json()["image_id"] == image_id
    second = client.post(f"{CF}/faces", params={"subject": "Paul T", "det_prob_threshold": 0.8},
                         json={"file": base64.b64encode(photos[1].read_bytes()).decode()}).json()["image_id"]
    assert sorted(p.name for p in (data / "Paul T").iterdir()) == sorted(
        f"api-{__import__('hashlib').sha256(p.read_bytes()).hexdigest()[:20]}.jpg" for p in photos[:2])
    [face] = client.post(f"{CF}/recognize", files=upload(photos[2])).json()["result"]
    assert face["subjects"][0]["subject"] == "Paul T" and face["subjects"][0]["similarity"] >= 0.5
    assert client.get(f"{CF}/faces/{image_id}/img").content == photos[0].read_bytes()

    # listing: every photo (users' too), by subject, paged
    listed = client.get(f"{CF}/faces", params={"size": 5}).json()
    assert listed["total_elements"] == 14 + 2 and listed["total_pages"] == 4 and listed["page_size"] == 5
    assert len(listed["faces"]) == 5 and listed["faces"][0]["subject"] == "Barbra_Streisand"
    last = client.get(f"{CF}/faces", params={"size": 5, "page": 3}).json()
    assert [f["subject"] for f in last["faces"]] == ["Paul T"] and last["page_number"] == 3
    mine = client.get(f"{CF}/faces", params={"subject": "Paul T"}).json()["faces"]
    assert {f["image_id"] for f in mine} == {image_id, second}

    # ids are stable across a rename and a merge (CompreFace's rename into an existing name)
    assert client.put(f"{CF}/subjects/Paul T", json={"subject": "Paul", "api_endpoint": "Paul T"}).json() == {
        "updated": True}
    assert {f["image_id"] for f in client.get(f"{CF}/faces?subject=Paul").json()["faces"]} == {image_id, second}
    assert client.put(f"{CF}/subjects/Paul", json={"subject": "Paul"}).json() == {"updated": False}
    assert client.post(f"{CF}/subjects", json={"subject": "Tagliabue"}).status_code == 201
    assert client.post(f"{CF}/faces?subject=Tagliabue", files=upload(photos[0])).json()["image_id"] == image_id
    assert client.put(f"{CF}/subjects/Paul", json={"subject": "Tagliabue"}).json() == {"updated": True}
    assert not (data / "Paul").exists() and len(list((data / "Tagliabue").iterdir())) == 2
    moved = client.get(f"{CF}/faces?subject=Tagliabue").json()["faces"]
    assert {(f["image_id"], f["subject"]) for f in moved} == {(image_id, "Tagliabue"), (second, "Tagliabue")}

    # verify against one saved image
    [match] = client.post(f"{CF}/faces/{image_id}/verify", files=upload(photos[3])).json()["result"]
    assert match["similarity"] >= 0.5 and set(match) == {"box", "similarity"}
    [other] = client.post(f"{CF}/faces/{image_id}/verify", files=upload(OTHER)).json()["result"]
    assert other["similarity"] < 0.5

    # users' own photos: listed with ids, never deleted (nor moved), one at a time or in a batch
    jon = client.get(f"{CF}/faces?subject=Jon_Voight").json()["faces"]
    assert len(jon) == 3
    refused = client.delete(f"{CF}/faces/{jon[0]['image_id']}")
    assert refused.status_code == 403 and refused.json()["code"] == 32
    batch = client.post(f"{CF}/faces/delete", json=[second, jon[1]["image_id"]])
    assert batch.status_code == 403 and batch.json()["code"] == 32
    for path, body in (("/subjects/Jon_Voight", None), ("/subjects", None)):
        assert client.delete(CF + path).json()["code"] == 32, body
    assert client.put(f"{CF}/subjects/Jon_Voight", json={"subject": "Tagliabue"}).json()["code"] == 32
    assert {k: v for k, v in files_of(data).items() if not k.startswith("Tagliabue/")} == users

    # the service's own photos: deleted by id, in a batch (unknown ids ignored), by subject
    assert client.delete(f"{CF}/faces/{image_id}").json() == {"image_id": image_id, "subject": "Tagliabue"}
    assert client.get(f"{CF}/faces/{image_id}/img").json()["code"] == 11
    assert client.post(f"{CF}/faces/delete", json=[second, str(uuid.uuid4())]).json() == [
        {"image_id": second, "subject": "Tagliabue"}]
    assert client.post(f"{CF}/faces?subject=Tagliabue", files=upload(photos[2])).status_code == 201
    assert client.delete(f"{CF}/faces", params={"subject": "Tagliabue"}).json() == {"deleted": 1}
    assert client.delete(f"{CF}/faces", params={"subject": "Nobody"}).json() == {"deleted": 0}
    assert client.post(f"{CF}/subjects", json={"subject": "Empty"}).json() == {"subject": "Empty"}
    assert client.delete(f"{CF}/subjects/Empty").json() == {"subject": "Empty"}
    assert files_of(data) == users and sorted(p.name for p in data.iterdir()) == sorted(ENROLLED_NAMES)


def test_delete_all_subjects_when_all_photos_are_the_services(tmp_path, pipeline):
    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore

    store = GalleryStore(tmp_path / "data", pipeline, tmp_path / "database")
    client = TestClient(create_app(store, frozenset()))
    for name, photo in (("Ann", HELD_OUT), ("Bob", OTHER), ("Bob", STRANGER)):
        assert client.post(f"{CF}/faces", params={"subject": name}, files=upload(photo)).status_code == 201
    assert client.get(f"{CF}/subjects").json() == {"subjects": ["Ann", "Bob"]}
    assert client.delete(f"{CF}/subjects").json() == {"deleted": 2}
    assert list((tmp_path / "data").iterdir()) == [] and len(store.snapshot.database) == 0


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code", "says"), [
    ("post", f"{CF}/recognize", {"files": upload(HELD_OUT), "headers": {"x-api-key": "wrong"}}, 401, 10,
     "wrong API key"),
    ("get", f"{CF}/subjects", {"headers": {"x-api-key": ""}}, 401, 10, "wrong API key"),
    ("post", "/api/v1/detection/detect", {"files": upload(HELD_OUT), "headers": {"x-api-key": "x"}}, 401, 10, "key"),
    ("post", f"{CF}/recognize", {"files": upload(DOGS)}, 400, 28, "No face is found in the given image"),
    ("post", "/api/v1/detection/detect", {"files": upload(DOGS)}, 400, 28, "No face"),
    ("post", f"{CF}/faces?subject=Two", {"files": upload(TWO)}, 400, 31, "More than one face"),
    ("post", f"{CF}/faces?subject=Dogs", {"files": upload(DOGS)}, 400, 28, "No face"),
    ("post", f"{CF}/faces", {"files": upload(HELD_OUT)}, 400, 33, "'subject'"),
    ("post", f"{CF}/faces?subject=../x", {"files": upload(HELD_OUT)}, 400, 26, "cannot be a folder name"),
    ("post", f"{CF}/recognize?limit=-1", {"files": upload(HELD_OUT)}, 400, 26, "limit"),
    ("post", f"{CF}/recognize?prediction_count=0", {"files": upload(HELD_OUT)}, 400, 26, "prediction_count"),
    ("post", f"{CF}/recognize?det_prob_threshold=1.5", {"files": upload(HELD_OUT)}, 400, 26, "det_prob_threshold"),
    ("post", f"{CF}/recognize?status=maybe", {"files": upload(HELD_OUT)}, 400, 26, "status"),
    ("post", f"{CF}/recognize", {"files": {"image": ("g.jpg", b"x")}}, 400, 34, "'file'"),
    ("post", f"{CF}/recognize", {"json": {"file": "%% not base64"}}, 400, 34, "not valid base64"),
    ("post", f"{CF}/recognize", {"files": {"file": ("b.jpg", b"\xff\xd8 broken")}}, 400, 21, "b.jpg: "),
    ("post", f"{CF}/recognize", {"content": b"x" * (3 << 20), "headers": {"content-type": "image/jpeg"}}, 413, 26,
     "request body too large"),
    ("delete", f"{CF}/faces/{NO_SUCH_ID}", {}, 404, 11, "not found"),
    ("get", f"{CF}/faces/{NO_SUCH_ID}/img", {}, 404, 11, "not found"),
    ("post", f"{CF}/faces/{NO_SUCH_ID}/verify", {"files": upload(HELD_OUT)}, 404, 11, "not found"),
    ("delete", f"{CF}/subjects/Nobody", {}, 404, 42, "unknown subject 'Nobody'"),
    ("put", f"{CF}/subjects/Nobody", {"json": {"subject": "X"}}, 404, 42, "unknown subject"),
    ("post", f"{CF}/subjects", {"json": {"subject": "Jon_Voight"}}, 400, 43, "already exists"),
    ("post", f"{CF}/subjects", {"json": {"name": "x"}}, 400, 26, "subject"),
    ("delete", f"{CF}/faces", {}, 400, 26, "subject name is empty"),
    ("post", f"{CF}/faces/delete", {"json": {"ids": 1}}, 400, 26, "invalid request"),
    ("post", "/api/v1/verification/verify", {"files": upload(HELD_OUT, "source_image")}, 400, 34, "target_image"),
])
def test_refusals_are_compreface_errors_and_leave_data_alone(service, method, path, kwargs, status, code, says):
    client, data = service
    before = files_of(data)
    answer = getattr(client, method)(path, **kwargs)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"message", "code"} and body["code"] == code, body
    assert says in body["message"] and "\n" not in body["message"]
    assert files_of(data) == before


def test_the_services_own_api_is_unchanged(service):
    """The peer routes sit beside /api/v1, whose answers and errors keep their own shape."""
    client, _ = service
    assert client.get("/api/v1/subjects", headers={"x-api-key": "wrong"}).json() == {
        "detail": "missing or wrong API key (send it in the x-api-key header)"}
    assert "/api/v1/recognition/recognize" in client.get("/openapi.json").json()["paths"]
    assert own_faces(client, HELD_OUT)[0]["name"] == "George_Clooney"
