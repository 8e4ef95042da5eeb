"""facenet.gallery.pg (PgGallery) on a real PostgreSQL 16 + pgvector (the pgserver wheel), one database per test."""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg[binary] is in requirements.txt")

from psycopg.conninfo import make_conninfo  # noqa: E402

from facenet.gallery import pg as pg_gallery  # noqa: E402
from facenet.gallery.pg import GalleryError, PgGallery  # noqa: E402

DIM = 128
MODEL = "fused:3fa2c0ffee"


@pytest.fixture
def url(pg_url) -> str:
    """This test's own empty database on the run's one server (tests/conftest.py)."""
    return pg_url


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def vector_of(key: str, dim: int = DIM, person: str = "") -> np.ndarray:
    """The fake embedding of a photo: its person's direction plus noise seeded by its hash, as a unit vector (a
    person's photos cluster, as real ones do, so the enrollment core flags none as mislabeled)."""
    noise = np.random.default_rng(int(key[:12], 16)).standard_normal(dim)
    direction = np.random.default_rng(int(sha(person)[:12], 16)).standard_normal(dim)
    vector = (3.0 * direction / np.linalg.norm(direction) + noise / np.linalg.norm(noise)).astype(np.float32)
    return vector / np.linalg.norm(vector)


class FakeExamine:
    """examine(): random unit vectors keyed by sha; paths ending in 'noface.jpg' have no face. Records calls."""

    def __init__(self, dim: int = DIM, fail_on_call: int | None = None) -> None:
        self.dim, self.fail_on_call, self.calls = dim, fail_on_call, []

    def __call__(self, pending):
        self.calls.append(dict(pending))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("killed mid-way")
        results = {s: {"reason": "no face" if str(p).endswith("noface.jpg") else None, "faces": 1}
                   for s, p in pending.items()}
        return results, {s: vector_of(s, self.dim, str(pending[s]).split("/")[0]) for s, r in results.items()
                         if r["reason"] is None}

    @property
    def examined(self) -> set[str]:
        return {s for call in self.calls for s in call}


def folder(people: dict[str, int], tag: str = "") -> list[tuple[str, list[tuple[str, str]]]]:
    """{name: photo count} -> people_photos with content hashes unique to (name, index, tag)."""
    return [(name, [(f"{name}/{i}.jpg", sha(f"{name}/{i}{tag}")) for i in range(n)]) for name, n in people.items()]


def expected_centroid(photos: list[tuple[str, str]]) -> np.ndarray:
    distinct = dict((s, p) for p, s in photos)
    mean = np.mean([vector_of(s, DIM, p.split("/")[0]).astype(np.float64) for s, p in distinct.items()], 0)
    return mean / np.linalg.norm(mean)


def snapshot(url: str) -> tuple:
    with PgGallery(url) as gallery:
        names, centroids, counts = gallery.load_centroids(MODEL, DIM)
        photos = gallery.conn.execute("SELECT person_id, path, sha256 FROM facenet_photos ORDER BY path").fetchall()
    return names, centroids.round(6).tolist(), counts.tolist(), photos


def test_schema_is_created_versioned_and_checked(url):
    with PgGallery(url) as gallery:
        assert gallery.meta() is None
        names, centroids, counts = gallery.load_centroids(MODEL, DIM)  # a reader creates nothing
        assert names == [] and centroids.shape == (0, DIM) and gallery.meta() is None
        gallery.sync_photos(folder({"ann": 2}), FakeExamine(), MODEL, DIM)
        meta = gallery.meta()
        assert (meta["schema_version"], meta["model_id"], meta["dim"]) == (pg_gallery.SCHEMA_VERSION, MODEL, DIM)
        gallery.conn.execute("UPDATE facenet_meta SET schema_version = 99")
        with pytest.raises(GalleryError, match="schema version 99 is newer than this facenet"):
            gallery.load_centroids(MODEL, DIM)
        gallery.conn.execute("UPDATE facenet_meta SET schema_version = 0")
        with pytest.raises(GalleryError, match="schema version 0 is unknown"):
            gallery.sync_photos(folder({"ann": 2}), FakeExamine(), MODEL, DIM)


def test_sync_enrolls_centroids_and_reports(url):
    people = folder({"ann": 3, "bob": 2, "cid": 1})
    people[0][1].append(("ann/noface.jpg", sha("ann-noface")))
    people.append(("dan", [("dan/noface.jpg", sha("dan-noface"))]))
    examine = FakeExamine()
    with PgGallery(url) as gallery:
        report = gallery.sync_photos(people, examine, MODEL, DIM)
        names, centroids, counts = gallery.load_centroids(MODEL, DIM)
    assert (report["examined"], report["embedded"], report["reused"]) == (8, 6, 0)
    assert report["not_enrolled"] == ["dan"]
    assert sorted(s["path"] for s in report["skipped"]) == ["ann/noface.jpg", "dan/noface.jpg"]
    assert names == ["ann", "bob", "cid"] and counts.tolist() == [3, 2, 1]
    for name, row in zip(names, centroids, strict=True):
        photos = [p for n, items in people if n == name for p in items if not p[0].endswith("noface.jpg")]
        np.testing.assert_allclose(row, expected_centroid(photos), atol=1e-6)


def test_resync_examines_only_new_photos_and_prunes_removed_ones(url):
    examine = FakeExamine()
    people = folder({"ann": 3, "bob": 2})
    with PgGallery(url) as gallery:
        gallery.sync_photos(people, examine, MODEL, DIM)
        report = gallery.sync_photos(people, examine, MODEL, DIM)
        assert len(examine.calls) == 1 and report["examined"] == 0 and report["reused"] == 5
        assert report["touched"] == 0
        # ann gets a new photo, bob loses one: only the new one is examined, the removed one pruned
        people[0][1].append(("ann/new.jpg", sha("ann-new")))
        gone = people[1][1].pop()
        report = gallery.sync_photos(people, examine, MODEL, DIM)
        assert examine.calls[-1] == {sha("ann-new"): "ann/new.jpg"}
        assert report["pruned"] == 1 and report["examined"] == 1
        names, centroids, counts = gallery.load_centroids(MODEL, DIM)
        assert counts.tolist() == [4, 1]
        np.testing.assert_allclose(centroids[1], expected_centroid(people[1][1]), atol=1e-6)
        stored = {r[0] for r in gallery.conn.execute("SELECT sha256 FROM facenet_embeddings")}
        assert gone[1] not in stored  # the pruned photo's embedding is gone too
        # a stored failure is examined again only when retry says so
        people[0][1].append(("ann/noface.jpg", sha("ann-noface")))
        gallery.sync_photos(people, examine, MODEL, DIM)
        calls = len(examine.calls)
        gallery.sync_photos(people, examine, MODEL, DIM)
        assert len(examine.calls) == calls
        gallery.sync_photos(people, examine, MODEL, DIM, retry=lambda result: result["reason"] == "no face")
        assert examine.calls[-1] == {sha("ann-noface"): "ann/noface.jpg"}


def test_a_client_never_prunes_people_it_does_not_have(url):
    with PgGallery(url) as gallery:
        gallery.sync_photos(folder({"ann": 2, "bob": 2}), FakeExamine(), MODEL, DIM)
        gallery.sync_photos(folder({"cid": 1}), FakeExamine(), MODEL, DIM)
        assert gallery.load_centroids(MODEL, DIM)[0] == ["ann", "bob", "cid"]
        assert gallery.remove_person("bob") and not gallery.remove_person("bob")
        assert gallery.load_centroids(MODEL, DIM)[0] == ["ann", "cid"]
        assert gallery.stats()["photos"] == 3


def test_two_clients_enrolling_different_people_at_once_lose_nothing(url):
    """Both examine at the same time (a barrier) and commit in whatever order; every person and photo is there."""
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    class Meeting(FakeExamine):
        def __call__(self, pending):
            barrier.wait()
            return super().__call__(pending)

    def client(people: dict[str, int]) -> None:
        try:
            with PgGallery(url) as gallery:
                gallery.sync_photos(folder(people), Meeting(), MODEL, DIM)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    with PgGallery(url) as gallery:  # the schema exists before: the two race on data, not on CREATE TABLE
        gallery.sync_photos(folder({"zed": 1}), FakeExamine(), MODEL, DIM)
    threads = [threading.Thread(target=client, args=({f"a{i}": 2 for i in range(30)},)),
               threading.Thread(target=client, args=({f"b{i}": 3 for i in range(30)},))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    with PgGallery(url) as gallery:
        names, _, counts = gallery.load_centroids(MODEL, DIM)
        assert len(names) == 61 and sum(counts) == 30 * 2 + 30 * 3 + 1
        assert gallery.stats()["photos"] == 151


def test_concurrent_syncs_of_the_same_person_are_serialized(url):
    """Two folders disagree about ann: the result is exactly one of them, never a mix."""
    with PgGallery(url) as gallery:
        gallery.sync_photos(folder({"ann": 1}), FakeExamine(), MODEL, DIM)
    left, right = folder({"ann": 3}, "L"), folder({"ann": 2}, "R")

    def client(people) -> None:
        with PgGallery(url) as gallery:
            gallery.sync_photos(people, FakeExamine(), MODEL, DIM)

    threads = [threading.Thread(target=client, args=(p,)) for p in (left, right)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    names, centroids, counts, photos = snapshot(url)
    shas = sorted(p[2] for p in photos)
    assert shas in (sorted(s for _, s in left[0][1]), sorted(s for _, s in right[0][1]))
    chosen = left if len(shas) == 3 else right
    np.testing.assert_allclose(centroids[0], expected_centroid(chosen[0][1]), atol=1e-5)


def test_a_sync_that_fails_midway_leaves_the_previous_state(url, monkeypatch):
    examine = FakeExamine()
    with PgGallery(url) as gallery:
        gallery.sync_photos(folder({"ann": 2, "bob": 2}), examine, MODEL, DIM)
    before = snapshot(url)
    changed = folder({"ann": 3, "bob": 1, "cid": 4}, "v2")
    with PgGallery(url) as gallery, pytest.raises(KeyboardInterrupt):
        gallery.sync_photos(changed, FakeExamine(fail_on_call=2), MODEL, DIM, batch=2)
    assert snapshot(url) == before
    with PgGallery(url) as gallery:  # killed inside the gallery transaction: rolled back as a whole
        monkeypatch.setattr(PgGallery, "_update_centroids", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError):
            gallery.sync_photos(changed, FakeExamine(), MODEL, DIM)
    assert snapshot(url) == before
    monkeypatch.undo()
    with PgGallery(url) as gallery:  # what was examined before the failure is not examined again
        again = FakeExamine()
        gallery.sync_photos(changed, again, MODEL, DIM)
        assert not again.calls
        assert gallery.load_centroids(MODEL, DIM)[2].tolist() == [3, 1, 4]


def test_another_model_or_dimension_is_refused_unless_rebuilt(url):
    with PgGallery(url) as gallery:
        gallery.sync_photos(folder({"ann": 2}), FakeExamine(), MODEL, DIM)
        for model, dim in (("dlib:0000", DIM), (MODEL, 256)):
            with pytest.raises(GalleryError, match="made by model") as caught:
                gallery.sync_photos(folder({"ann": 2}), FakeExamine(dim), model, dim)
            assert "\n" not in str(caught.value)
        with pytest.raises(GalleryError, match="made by model"):
            gallery.load_centroids("dlib:0000", DIM)
        with pytest.raises(GalleryError, match="made by model"):
            gallery.nearest(np.zeros(DIM, np.float32), "dlib:0000")
        assert gallery.load_centroids(MODEL, DIM)[0] == ["ann"]  # nothing was written
        report = gallery.sync_photos(folder({"bob": 1}), FakeExamine(256), "fused:new", 256, rebuild=True)
        assert report["examined"] == 1
        assert gallery.meta()["dim"] == 256 and gallery.load_centroids("fused:new", 256)[0] == ["bob"]


def test_unreachable_server_and_wrong_password_give_one_clean_line(pg_server):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the with ends
    with pytest.raises(GalleryError) as caught:
        PgGallery(f"postgresql://alice:s3cretpw@127.0.0.1:{port}/faces")
    message = str(caught.value)
    assert "cannot connect" in message and "s3cretpw" not in message and "\n" not in message
    assert message.startswith(f"postgresql://alice@127.0.0.1:{port}/faces")

    pgdata = Path(pg_server.pgdata)
    hba = pgdata / "pg_hba.conf"
    if "pwuser" not in hba.read_text():
        hba.write_text("local all pwuser scram-sha-256\n" + hba.read_text())
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pwuser")
        conn.execute("CREATE ROLE pwuser LOGIN PASSWORD 'right-pw'")
        conn.execute("SELECT pg_reload_conf()")
    good = make_conninfo(pg_server.get_uri(), user="pwuser", password="right-pw")
    PgGallery(good).close()
    with pytest.raises(GalleryError) as caught:
        PgGallery(make_conninfo(pg_server.get_uri(), user="pwuser", password="wrong-pw-123"))
    message = str(caught.value)
    assert "password authentication failed" in message
    assert "wrong-pw-123" not in message and "\n" not in message


def test_database_without_vector_and_no_right_to_create_it(pg_server):
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS novector")
        conn.execute("CREATE DATABASE novector")
        conn.execute("DROP ROLE IF EXISTS plain")
        conn.execute("CREATE ROLE plain LOGIN")
    url = make_conninfo(pg_server.get_uri(), dbname="novector", user="plain")
    with PgGallery(url) as gallery:
        with pytest.raises(GalleryError, match="lacks the pgvector extension") as caught:
            gallery.sync_photos(folder({"ann": 1}), FakeExamine(), MODEL, DIM)
        assert "\n" not in str(caught.value)
        assert gallery.load_centroids(MODEL, DIM)[0] == []  # a reader finds no gallery, creates nothing
        assert not gallery.conn.execute("SELECT count(*) FROM pg_extension WHERE extname='vector'").fetchone()[0]


def test_hnsw_nearest_matches_exact_on_2k_people(url):
    rng = np.random.default_rng(7)
    people = folder({f"p{i:04d}": 1 for i in range(2000)})
    with PgGallery(url) as gallery:
        gallery.sync_photos(people, FakeExamine(), MODEL, DIM, batch=4096)
        names, centroids, _ = gallery.load_centroids(MODEL, DIM)
        probes = centroids[rng.choice(len(names), 50, replace=False)]
        probes = probes + 0.02 * rng.standard_normal(probes.shape).astype(np.float32)
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        truth = [names[i] for i in (probes @ centroids.T).argmax(1)]
        exact, exact_sims, _ = gallery.nearest(probes, MODEL, k=3, exact=True)
        assert [row[0] for row in exact] == truth
        np.testing.assert_allclose(exact_sims[:, 0], (probes @ centroids.T).max(1), atol=1e-5)
        with pytest.raises(GalleryError, match="no HNSW index"):
            gallery.nearest(probes, MODEL, exact=False)
        assert gallery.create_index("hnsw") > 0 and gallery.stats()["hnsw"]
        plan = gallery.conn.execute(
            "EXPLAIN SELECT name FROM facenet_people WHERE centroid IS NOT NULL ORDER BY centroid <#> %s LIMIT 1",
            (pg_gallery._vector_text(probes[0]),)).fetchall()
        assert "facenet_people_centroid_hnsw" in " ".join(r[0] for r in plan)
        approx, approx_sims, counts = gallery.nearest(probes, MODEL, k=3, exact=False)
        assert [row[0] for row in approx] == truth
        np.testing.assert_allclose(approx_sims[:, 0], exact_sims[:, 0], atol=1e-6)
        assert counts.shape == (50, 3) and np.all(counts == 1)
        padded, sims, _ = gallery.nearest(probes[:1], MODEL, k=2001, exact=True)
        assert padded[0][-1] == "" and np.isneginf(sims[0, -1])
