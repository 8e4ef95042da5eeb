"""The service over the PostgreSQL + pgvector gallery (a real server from pgserver): subjects and example faces
still live in data/, the shared gallery follows them (add, rename, delete), and people enrolled by other sites are
never touched."""

from __future__ import annotations

import pytest

from tests.test_service import HELD_OUT, KEY, STRANGER, make_data

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402


@pytest.fixture
def url(pg_url) -> str:
    """This test's own empty database on the run's one server (tests/conftest.py)."""
    return pg_url


def people_in(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM facenet_people")}


def test_the_shared_gallery_follows_the_service(tmp_path, url, pipeline):
    from facenet.gallery.pg import HASH_CACHE, PgGallery
    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore

    other_site = tmp_path / "other"
    (other_site / "Zach_Safrin").mkdir(parents=True)
    (other_site / "Zach_Safrin" / "z.jpg").write_bytes(STRANGER.read_bytes())
    with PgGallery(url) as gallery:  # another site's person: the service must leave them alone
        gallery.sync(other_site, pipeline)

    make_data(tmp_path / "data")
    store = GalleryStore(tmp_path / "data", pipeline, tmp_path / "local", database_url=url)
    client = TestClient(create_app(store, frozenset({KEY})), headers={"x-api-key": KEY})
    assert people_in(url) == {"Zach_Safrin", "George_Clooney", "Jon_Voight", "Barbra_Streisand"}
    # the local folder holds only the photo-hash cache of the shared gallery's syncs: no file gallery
    assert [p.name for p in (tmp_path / "local").iterdir()] == [HASH_CACHE]

    def names(photo) -> list[str]:
        answer = client.post("/api/v1/recognize", content=photo.read_bytes(), headers={"content-type": "image/jpeg"})
        return [f["name"] for f in answer.json()["faces"]]

    assert names(HELD_OUT) == ["George_Clooney"] and names(STRANGER) == ["Zach_Safrin"]
    assert client.post("/api/v1/subjects", json={"subject": "Ada"}).status_code == 201
    added = client.post("/api/v1/subjects/Ada/faces", files={"file": ("g.jpg", HELD_OUT.read_bytes())})
    assert added.status_code == 201 and added.json()["used"] is True
    assert "Ada" in people_in(url)
    assert client.put("/api/v1/subjects/Ada", json={"subject": "Ada L"}).status_code == 200
    assert "Ada" not in people_in(url) and "Ada L" in people_in(url)
    assert client.delete("/api/v1/subjects/Ada L").json()["deleted_photos"] == 1
    assert people_in(url) == {"Zach_Safrin", "George_Clooney", "Jon_Voight", "Barbra_Streisand"}
    assert names(HELD_OUT) == ["George_Clooney"]


def test_changes_while_postgresql_is_down_leave_data_and_gallery_as_they_were(tmp_path, pipeline, pg_server,
                                                                            pg_database):
    """Issue 22: with the database stopped, deleting a subject (or adding, renaming, deleting a photo) answers 503
    and leaves data/ exactly as it was (folders, bytes, times) and the gallery too; once the database is back the
    delete works and the person is gone from both. The run's one server is stopped, so it is started again
    whatever happens."""
    import os
    import time

    from pgserver._commands import pg_ctl
    from pgserver.utils import ensure_prefix_permissions

    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore
    from tests.test_service import files_of

    server = pg_server
    url = pg_database("down_gallery")
    data = tmp_path / "data"
    make_data(data)
    store = GalleryStore(data, pipeline, tmp_path / "local", database_url=url)
    client = TestClient(create_app(store, frozenset({KEY})), headers={"x-api-key": KEY})

    def names(photo) -> list[str]:
        answer = client.post("/api/v1/recognize", content=photo.read_bytes(), headers={"content-type": "image/jpeg"})
        return [f["name"] for f in answer.json()["faces"]]

    assert client.post("/api/v1/subjects", json={"subject": "Temp Person"}).status_code == 201
    added = client.post("/api/v1/subjects/Temp Person/faces", files={"file": ("t.jpg", STRANGER.read_bytes())})
    assert added.status_code == 201, added.text
    image_id = added.json()["image_id"]
    enrolled = {"George_Clooney", "Jon_Voight", "Barbra_Streisand", "Temp Person"}
    assert people_in(url) == enrolled and names(STRANGER) == ["Temp Person"]

    def state() -> tuple:
        return (files_of(data), sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_dir()),
                {p.relative_to(data).as_posix(): p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()})

    before = state()
    ensure_prefix_permissions(server.pgdata)  # another pytest run may have closed /tmp/pytest-of-<user> again
    pg_ctl(["-w", "stop"], pgdata=server.pgdata, user=server.system_user)
    try:
        for method, path, kwargs in (
            ("delete", "/api/v1/subjects/Temp Person", {}),
            ("delete", f"/api/v1/subjects/Temp Person/faces/{image_id}", {}),
            ("put", "/api/v1/subjects/Temp Person", {"json": {"subject": "Temp P2"}}),
            ("post", "/api/v1/subjects", {"json": {"subject": "Ada"}}),
            ("post", "/api/v1/subjects/Jon_Voight/faces", {"files": {"file": ("g.jpg", HELD_OUT.read_bytes())}}),
        ):
            answer = getattr(client, method)(path, **kwargs)
            detail = answer.json()["detail"]
            assert answer.status_code == 503 and "down_gallery" in detail and "\n" not in detail, (path, answer.text)
            assert state() == before, path  # data/ exactly as it was
        assert names(STRANGER) == ["Temp Person"]  # the snapshot too
    finally:  # the run's one server: started again whatever happened
        time.sleep(0.1)
        ensure_prefix_permissions(server.pgdata)
        with server._lock:
            server.ensure_postgres_running()
    assert make_conninfo(server.get_uri(), dbname="down_gallery") == url
    assert people_in(url) == enrolled  # the gallery as it was
    deleted = client.delete("/api/v1/subjects/Temp Person")
    assert deleted.status_code == 200 and deleted.json() == {"subject": "Temp Person", "deleted_photos": 1}
    assert not (data / "Temp Person").exists() and os.listdir(data) and people_in(url) == enrolled - {"Temp Person"}
    assert names(STRANGER) != ["Temp Person"]


def test_used_names_exactly_the_photos_enrollment_used_in_both_backends(tmp_path, url, pipeline):
    """Issue 23: over PostgreSQL every photo of an enrolled subject was "used" (the report's people had become a
    count). A photo without a face and a byte-identical copy are not used, in either backend."""
    import shutil

    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore
    from tests.conftest import MISC, PEOPLE

    answers = {}
    for backend, database_url in (("file", None), ("postgresql", url)):
        data = tmp_path / backend / "data"
        make_data(data)
        shutil.copy2(MISC / "rocket.jpg", data / "Jon_Voight" / "rocket.jpg")
        shutil.copy2(PEOPLE / "Jon_Voight" / "Jon_Voight_0001.jpg", data / "Jon_Voight" / "copy.jpg")
        store = GalleryStore(data, pipeline, tmp_path / backend / "local", database_url=database_url)
        client = TestClient(create_app(store, frozenset({KEY})), headers={"x-api-key": KEY})
        faces = client.get("/api/v1/subjects/Jon_Voight/faces").json()["faces"]
        answers[backend] = {face["image_id"]: face["used"] for face in faces}
        report = client.get("/api/v1/report").json()["report"]
        used = [f"Jon_Voight/Jon_Voight_000{n}.jpg" for n in (1, 2, 3)]
        if database_url is None:  # the report as it always was: the shared gallery's facts plus "enrollment"
            assert report["people"]["Jon_Voight"] == used
        else:
            assert report["people"] == 3 and report["enrollment"]["people"]["Jon_Voight"] == used
    assert answers["postgresql"] == answers["file"] == {
        "Jon_Voight_0001.jpg": True, "Jon_Voight_0002.jpg": True, "Jon_Voight_0003.jpg": True,
        "copy.jpg": False, "rocket.jpg": False}
