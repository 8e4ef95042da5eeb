"""The service over the PostgreSQL + pgvector gallery (a real server from pgserver): subjects and example faces
still live in data/, the shared gallery follows them (add, rename, delete), and people enrolled by other sites are
never touched."""

from __future__ import annotations

import pytest

from tests.test_service import HELD_OUT, KEY, STRANGER, make_data

pgserver = pytest.importorskip("pgserver", reason="pgserver (requirements-dev.txt) bundles PostgreSQL + pgvector")
psycopg = pytest.importorskip("psycopg")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> str:
    server = pgserver.get_server(tmp_path_factory.mktemp("pgserve") / "data", cleanup_mode="delete")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE serve_gallery")
    yield make_conninfo(server.get_uri(), dbname="serve_gallery")
    server.cleanup()


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
