"""The REST service (facenet/service) through FastAPI's TestClient: real photos, the real HOG + dlib pipeline, a real
data/ folder. Subjects and example faces end up in data/<person>/; users' photos are never deleted; every bad
request is a 4xx with one JSON message and leaves data/ as it was."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import pytest

from tests.conftest import MISC, PEOPLE

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

LFW = Path(__file__).parent / "data" / "lfw_small"
ENROLLED = {"George_Clooney": range(1, 9), "Jon_Voight": range(1, 4), "Barbra_Streisand": range(1, 4)}
HELD_OUT = PEOPLE / "George_Clooney" / "George_Clooney_0009.jpg"
STRANGER = LFW / "Zach_Safrin" / "Zach_Safrin_0001.jpg"
OTHER = PEOPLE / "Barbra_Streisand" / "Barbra_Streisand_0001.jpg"
KEY = "test-key-1"


def make_data(data: Path) -> None:
    """data/<person>/ with real photos (one of George Clooney's held out for recognition)."""
    for name, numbers in ENROLLED.items():
        (data / name).mkdir(parents=True)
        for n in numbers:
            shutil.copy2(PEOPLE / name / f"{name}_{n:04d}.jpg", data / name)


def files_of(folder: Path) -> dict[str, str]:
    """Every file below `folder` with its sha256: what "nothing in data/ changed" compares."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def service(tmp_path_factory, pipeline):
    """(client, data_dir) of a service with keys, a 2 MiB upload limit, 3 people enrolled."""
    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore

    root = tmp_path_factory.mktemp("service")
    make_data(root / "data")
    store = GalleryStore(root / "data", pipeline, root / "database")
    client = TestClient(create_app(store, frozenset({KEY}), max_upload=2 << 20), headers={"x-api-key": KEY})
    return client, root / "data"


def test_recognize_multipart_base64_and_raw_name_the_enrolled_and_reject_a_stranger(service):
    client, _ = service
    data = HELD_OUT.read_bytes()
    answers = [
        client.post("/api/v1/recognize", files={"file": ("g.jpg", data, "image/jpeg")}),
        client.post("/api/v1/recognize", json={"file": base64.b64encode(data).decode()}),
        client.post("/api/v1/recognize", json={"file": "data:image/jpeg;base64," + base64.b64encode(data).decode()}),
        client.post("/api/v1/recognize", content=data, headers={"content-type": "image/jpeg"}),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["width"], body["height"]) == (250, 250)
        [face] = body["faces"]
        assert face["name"] == "George_Clooney" and face["score"] > 50 and 0 < face["distance"] < 0.6
        left, top, right, bottom = face["box"]
        assert 0 <= left < right <= 250 and 0 <= top < bottom <= 250
        assert len(face["landmarks"]) == 5
        assert all(left - 5 <= x <= right + 5 and top - 5 <= y <= bottom + 5 for x, y in face["landmarks"])
    assert answers[0].json() == answers[1].json() == answers[3].json()
    stranger = client.post("/api/v1/recognize", files={"file": ("z.jpg", STRANGER.read_bytes())}).json()
    assert [f["name"] for f in stranger["faces"]] == ["Unknown"]
    assert stranger["faces"][0]["score"] < 50
    group = client.post("/api/v1/recognize", files={"file": ("t.jpg", (MISC / "two_people.jpg").read_bytes())})
    assert len(group.json()["faces"]) == 2


def test_verify_and_detect(service):
    client, _ = service
    same = client.post("/api/v1/verify", files={
        "source_image": ("a.jpg", HELD_OUT.read_bytes()),
        "target_image": ("b.jpg", (PEOPLE / "George_Clooney" / "George_Clooney_0001.jpg").read_bytes())}).json()
    other = client.post("/api/v1/verify", json={
        "source_image": base64.b64encode(HELD_OUT.read_bytes()).decode(),
        "target_image": base64.b64encode(OTHER.read_bytes()).decode()}).json()
    assert same["same"] is True and other["same"] is False
    assert same["distance"] < same["threshold"] < other["distance"]
    no_face = client.post("/api/v1/verify", files={"source_image": ("dogs.jpg", (MISC / "dogs.jpg").read_bytes()),
                                                   "target_image": ("g.jpg", HELD_OUT.read_bytes())})
    assert no_face.status_code == 400 and no_face.json() == {"detail": "dogs.jpg: no face found"}
    faces = client.post("/api/v1/detect", files={"file": ("t.jpg", (MISC / "two_people.jpg").read_bytes())}).json()
    assert len(faces["faces"]) == 2 and all(len(f["landmarks"]) == 5 and f["score"] is not None
                                            for f in faces["faces"])


def test_subjects_and_example_faces_live_in_data(service):
    client, data = service
    users_photos = files_of(data)
    assert {s["subject"]: (s["photos"], s["enrolled"]) for s in client.get("/api/v1/subjects").json()["subjects"]} \
        == {"Barbra_Streisand": (3, True), "George_Clooney": (8, True), "Jon_Voight": (3, True)}

    assert client.post("/api/v1/subjects", json={"subject": "Zach Safrin"}).status_code == 201
    assert (data / "Zach Safrin").is_dir()
    added = client.post("/api/v1/subjects/Zach Safrin/faces", files={"file": ("z.jpg", STRANGER.read_bytes())})
    assert added.status_code == 201, added.text
    image_id = added.json()["image_id"]
    assert added.json()["used"] is True and image_id.startswith("api-") and image_id.endswith(".jpg")
    assert (data / "Zach Safrin" / image_id).read_bytes() == STRANGER.read_bytes()  # saved whole, byte for byte
    again = client.post("/api/v1/subjects/Zach Safrin/faces", content=STRANGER.read_bytes(),
                        headers={"content-type": "image/jpeg"})
    assert again.status_code == 201 and again.json()["created"] is False
    recognised = client.post("/api/v1/recognize", files={"file": ("z.jpg", STRANGER.read_bytes())}).json()
    assert recognised["faces"][0]["name"] == "Zach Safrin"

    assert client.put("/api/v1/subjects/Zach Safrin", json={"subject": "Zach"}).json() == {"subject": "Zach"}
    assert not (data / "Zach Safrin").exists() and (data / "Zach" / image_id).is_file()
    assert client.post("/api/v1/recognize", content=STRANGER.read_bytes(),
                       headers={"content-type": "image/jpeg"}).json()["faces"][0]["name"] == "Zach"
    faces = client.get("/api/v1/subjects/Zach/faces").json()["faces"]
    assert faces == [{"image_id": image_id, "added_by_service": True, "used": True}]
    assert client.get(f"/api/v1/subjects/Zach/faces/{image_id}").content == STRANGER.read_bytes()
    report = client.get("/api/v1/report").json()
    assert f"Zach/{image_id}" in report["report"]["people"]["Zach"] and "Enrollment:" in report["text"]

    # users' photos: never deleted, nor the subjects holding them
    user_photo = client.delete("/api/v1/subjects/Jon_Voight/faces/Jon_Voight_0001.jpg")
    assert user_photo.status_code == 403 and "never deletes your own photos" in user_photo.json()["detail"]
    user_subject = client.delete("/api/v1/subjects/Jon_Voight")
    assert user_subject.status_code == 403
    assert "3 file(s) not added through the service" in user_subject.json()["detail"]

    assert client.delete(f"/api/v1/subjects/Zach/faces/{image_id}").status_code == 200
    assert not (data / "Zach" / image_id).exists()
    assert client.delete("/api/v1/subjects/Zach").json() == {"subject": "Zach", "deleted_photos": 0}
    assert not (data / "Zach").exists()
    assert files_of(data) == users_photos
    assert client.post("/api/v1/recognize", content=STRANGER.read_bytes(),
                       headers={"content-type": "image/jpeg"}).json()["faces"][0]["name"] == "Unknown"


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "says"), [
    ("post", "/api/v1/recognize", {"files": {"file": ("broken.jpg", b"\xff\xd8 not a jpeg")}}, 400,
     "broken.jpg: not a readable image"),
    ("post", "/api/v1/recognize", {"files": {"file": ("t.jpg", (MISC / "truncated.jpg").read_bytes())}}, 400,
     "t.jpg: cannot decode image"),
    ("post", "/api/v1/recognize", {"files": {"file": ("e.jpg", b"")}}, 400, "e.jpg: empty file"),
    ("post", "/api/v1/recognize", {"json": {"file": "%%% not base64"}}, 400, "not valid base64"),
    ("post", "/api/v1/recognize", {"json": {"image": "x"}}, 400, "JSON field 'file' with a base64 photo is missing"),
    ("post", "/api/v1/recognize", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415,
     "send multipart/form-data"),
    ("post", "/api/v1/recognize", {"content": b"x" * (3 << 20), "headers": {"content-type": "image/jpeg"}}, 413,
     "request body too large"),
    ("post", "/api/v1/recognize", {"files": {"file": ("big.jpg", b"x" * (3 << 20))}}, 413, "the limit is 2.0 MiB"),
    ("post", "/api/v1/subjects/Nobody/faces", {"files": {"file": ("g.jpg", HELD_OUT.read_bytes())}}, 404,
     "unknown subject 'Nobody'"),
    ("post", "/api/v1/subjects/Jon_Voight/faces", {"files": {"file": ("dogs.jpg", (MISC / "dogs.jpg").read_bytes())}},
     400, "dogs.jpg: no face found"),
    ("post", "/api/v1/subjects/Jon_Voight/faces", {"files": {"file": ("b.jpg", b"GIF89a broken")}}, 400,
     "b.jpg: "),
    ("post", "/api/v1/subjects", {"json": {"subject": "../escape"}}, 400, "cannot be a folder name"),
    ("post", "/api/v1/subjects", {"json": {"subject": ".hidden"}}, 400, "cannot be a folder name"),
    ("post", "/api/v1/subjects", {"json": {"subject": "Eve\u202eliv"}}, 400, "invisible character U+202E"),
    ("put", "/api/v1/subjects/Jon_Voight", {"json": {"subject": "Jon\nVoight"}}, 400, "invisible character U+000A"),
    ("post", "/api/v1/subjects", {"json": {"name": "x"}}, 422, "invalid request: body.subject"),
    ("post", "/api/v1/subjects", {"json": {"subject": "Jon_Voight"}}, 409, "already exists"),
    ("put", "/api/v1/subjects/Jon_Voight", {"json": {"subject": "George_Clooney"}}, 409, "already exists"),
    ("put", "/api/v1/subjects/Nobody", {"json": {"subject": "X"}}, 404, "unknown subject"),
    ("delete", "/api/v1/subjects/Nobody", {}, 404, "unknown subject"),
    ("delete", "/api/v1/subjects/Jon_Voight/faces/nope.jpg", {}, 404, "has no photo 'nope.jpg'"),
    ("get", "/api/v1/subjects/Jon_Voight/faces/../../../etc/passwd", {}, 404, ""),
    ("get", "/api/v1/subjects", {"headers": {"x-api-key": "wrong"}}, 401, "missing or wrong API key"),
    ("get", "/api/v1/subjects", {"headers": {"x-api-key": ""}}, 401, "missing or wrong API key"),
])
def test_bad_requests_get_one_clear_4xx_and_leave_data_alone(service, method, path, kwargs, status, says):
    client, data = service
    before = files_of(data)
    answer = getattr(client, method)(path, **kwargs)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and says in detail and "\n" not in detail
    assert files_of(data) == before


def test_a_name_with_a_joiner_that_its_script_needs_is_a_subject(service):
    """Persian writes U+200C (zero-width non-joiner) inside names: it is not one of the hidden characters refused."""
    client, data = service
    name = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647"
    assert client.post("/api/v1/subjects", json={"subject": name}).status_code == 201
    assert (data / name).is_dir()


def test_health_and_docs_need_no_key(service):
    client, _ = service
    health = TestClient(client.app).get("/api/v1/health").json()
    assert health["key_required"] is True and health["people"] == 3 and health["max_upload_bytes"] == 2 << 20
    assert "/api/v1/recognize" in TestClient(client.app).get("/openapi.json").json()["paths"]
    docs = TestClient(client.app).get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    page = TestClient(client.app).get("/")
    assert page.status_code == 200 and "recognize-file" in page.text


def test_keys_from_env_and_file(tmp_path):
    from facenet.service.keys import KeyFileError, key_accepted, load_keys

    key_file = tmp_path / "keys"
    key_file.write_text("# service keys\nalpha\n\n beta \n")
    keys = load_keys(key_file, {"FACENET_API_KEYS": "gamma, delta"})
    assert keys == {"alpha", "beta", "gamma", "delta"}
    assert key_accepted("beta", keys) and not key_accepted("bet", keys) and not key_accepted(None, keys)
    assert key_accepted(None, frozenset())
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(KeyFileError, match="holds no key"):
        load_keys(tmp_path / "empty", {})
    with pytest.raises(KeyFileError, match="cannot read"):
        load_keys(tmp_path / "missing", {})


def test_readers_recognise_while_a_sync_embeds(tmp_path, pipeline):
    """One writer, many readers: recognitions keep completing while a sync embeds a folder of new photos (they wait
    for one detection or embedding call at a time, never for the whole sync)."""
    import threading

    from facenet.images import load_image
    from facenet.service.store import GalleryStore

    make_data(tmp_path / "data")
    store = GalleryStore(tmp_path / "data", pipeline, tmp_path / "db")
    for photo in sorted(LFW.rglob("*.jpg")):
        (tmp_path / "data" / photo.parent.name).mkdir(exist_ok=True)
        shutil.copy2(photo, tmp_path / "data" / photo.parent.name)
    rgb = load_image(HELD_OUT)
    syncing = threading.Thread(target=store.sync)
    syncing.start()
    during = 0
    while syncing.is_alive():
        names = [r.name for r in store.recognize(rgb)]
        assert names == ["George_Clooney"]
        during += syncing.is_alive()
    syncing.join()
    assert during >= 3, f"only {during} recognitions completed during the sync"
    assert len(store.snapshot.database) > 20
