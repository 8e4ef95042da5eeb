"""A PostgreSQL gallery searched where its vectors are: from NO_COPY_MIN_PEOPLE people on, `PgGallery.load` gives a
FaceDatabase that asks PgSearcher (SQL) instead of holding every centroid. On real photos (the limit lowered) it
answers exactly as the in-memory one (names, distances, scores, thresholds, negatives, nearest_people), and a
client that only reads creates nothing; the IVFFlat index is built by sync, rebuilt when the gallery outgrew it,
and agrees with the exact scan."""

from __future__ import annotations

import hashlib
import shutil
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("psycopg", reason="psycopg[binary] is in requirements.txt")

from facenet.gallery import GalleryOptions, open_gallery  # noqa: E402
from facenet.gallery.pg import GalleryError, PgGallery, PgSearcher  # noqa: E402
from facenet.gallery.pg import gallery as pg_gallery_module  # noqa: E402
from facenet.gallery.pg import queries as pg_queries  # noqa: E402
from facenet.gallery.pg import schema as pg_schema  # noqa: E402
from facenet.images import load_image  # noqa: E402
from facenet.unknowns.sighting import Quality, Sighting  # noqa: E402

PEOPLE = Path(__file__).parent / "data" / "people"
FOLDER = {
    "Ada": ["Paul_Tagliabue/Paul_Tagliabue_0001.jpg", "Paul_Tagliabue/Paul_Tagliabue_0002.jpg"],
    "José": ["Juanes/Juanes_0001.jpg", "Juanes/Juanes_0002.jpg"],
    "Martha": ["Martha_Burk/Martha_Burk_0002.jpg"],
}
PROBES = ["Paul_Tagliabue/Paul_Tagliabue_0004.jpg", "Juanes/Juanes_0003.jpg", "Martha_Burk/Martha_Burk_0003.jpg",
          "Mary_Carey/Mary_Carey_0001.jpg"]
MODEL, DIM = "test:ivf", 8


@pytest.fixture(scope="module")
def shared(pipeline, pg_database, tmp_path_factory) -> tuple[str, np.ndarray]:
    """A gallery of FOLDER's real photos and the embeddings of PROBES."""
    data_dir = tmp_path_factory.mktemp("search") / "data"
    for name, photos in FOLDER.items():
        (data_dir / name).mkdir(parents=True)
        for photo in photos:
            shutil.copy2(PEOPLE / photo, data_dir / name)
    url = pg_database()
    with open_gallery(GalleryOptions.at(url, cache_dir=data_dir.parent / "cache")) as gallery:
        gallery.sync(data_dir, pipeline)
    probes = np.stack([pipeline.embed(load_image(PEOPLE / p), [pipeline.subject(load_image(PEOPLE / p)).face])[0]
                       for p in PROBES])
    return url, probes


def load(url: str, pipeline, monkeypatch, no_copy: bool):
    monkeypatch.setattr(pg_gallery_module, "NO_COPY_MIN_PEOPLE", 1 if no_copy else 10**9)
    with PgGallery(url) as gallery:
        return gallery.load(pipeline)


def test_the_no_copy_client_answers_like_the_in_memory_one(shared, pipeline, monkeypatch):
    url, probes = shared
    memory, searching = (load(url, pipeline, monkeypatch, no_copy) for no_copy in (False, True))
    assert memory.searcher is None and isinstance(searching.searcher, PgSearcher)
    assert len(searching.centroids) == 0 and len(searching) == len(memory) == 3
    assert searching.threshold == memory.threshold
    mine, theirs = memory.identify(probes), searching.identify(probes)
    assert mine.names == theirs.names == ["Ada", "José", "Martha", "Unknown"]
    np.testing.assert_allclose(theirs.distances, mine.distances, atol=1e-5)
    np.testing.assert_allclose(theirs.scores, mine.scores, atol=1e-3)
    fixed = 0.3  # a threshold given for everyone replaces each person's own, as in memory
    assert searching.identify(probes, fixed).names == memory.identify(probes, fixed).names
    for count in (1, 3, 5):
        near_mine, near_theirs = memory.nearest_people(probes, count), searching.nearest_people(probes, count)
        assert [[n for n, _, _ in row] for row in near_theirs] == [[n for n, _, _ in row] for row in near_mine]
        np.testing.assert_allclose([[d for _, d, s in row] + [s for _, d, s in row] for row in near_theirs],
                                   [[d for _, d, s in row] + [s for _, d, s in row] for row in near_mine], atol=1e-3)
    assert list(searching.names) == memory.names and searching.names[1] == "José"
    assert "Martha" in searching.names and "Mary" not in searching.names
    assert searching.enrolled(["Ada", "Mary", "José"]) == {"Ada", "José"}
    names, centroids = searching.everyone()
    assert names == memory.names
    np.testing.assert_allclose(centroids, memory.centroids, atol=1e-6)


def test_negatives_apply_to_the_no_copy_client(shared, pipeline, pg_database, monkeypatch):
    url, probes = shared
    with PgGallery(url) as gallery:
        gallery.unknowns().collect(Sighting("a1b2c3d4e5f6", time.time(), "api", probes[0], b"jpeg",
                                            Quality(100, 0.95, 300.0, 0.05), not_of="Ada"),
                                   pipeline.model_id, 0.4)
    try:
        for no_copy in (False, True):
            database = load(url, pipeline, monkeypatch, no_copy)
            assert set(database.negatives) == {"Ada"}
            assert database.identify(probes).names == ["Unknown", "José", "Martha", "Unknown"]
    finally:
        with PgGallery(url) as gallery:
            gallery.unknowns().forget_all()


def relations(url: str) -> set[str]:
    with PgGallery(url) as gallery:
        return {r[0] for r in gallery.conn.execute(
            "SELECT relname FROM pg_class JOIN pg_namespace n ON n.oid = relnamespace WHERE nspname = 'public'")}


def test_a_no_copy_client_creates_nothing(shared, pipeline, monkeypatch):
    url, probes = shared
    before = relations(url)
    database = load(url, pipeline, monkeypatch, no_copy=True)
    database.identify(probes)
    database.nearest_people(probes, 2)
    list(database.names)
    database.searcher.close()
    assert relations(url) == before
    database.identify(probes[:1])  # a closed searcher opens a connection again


def fake_people(prefix: str, n: int, rng: np.random.Generator) -> tuple[list, object]:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    people, found = [], {}
    for i, vector in enumerate(vectors):
        sha = hashlib.sha256(f"{prefix}{i}".encode()).hexdigest()
        people.append((f"{prefix}{i:04d}", [(f"{prefix}{i}.jpg", sha)]))
        found[sha] = vector

    def examine(pending):
        return {s: {"reason": None, "faces": 1} for s in pending}, {s: found[s] for s in pending}

    return people, examine


def test_sync_builds_the_ivfflat_index_and_rebuilds_it_when_outgrown(pg_url, monkeypatch):
    monkeypatch.setattr(pg_schema, "HNSW_MIN_PEOPLE", 50)
    rng = np.random.default_rng(3)
    first, examine = fake_people("a", 100, rng)
    with PgGallery(pg_url) as gallery:
        assert gallery.sync_photos(first, examine, MODEL, DIM)["index"] == "ivfflat (built)"
        assert gallery._ivf_lists() == 10 and gallery.stats()["ivfflat"] and not gallery.stats()["hnsw"]
        more, examine = fake_people("b", 20, rng)
        assert gallery.sync_photos(more, examine, MODEL, DIM)["index"] == "ivfflat"  # one more person: no rebuild
        more, examine = fake_people("c", 300, rng)
        assert gallery.sync_photos(more, examine, MODEL, DIM)["index"] == "ivfflat (rebuilt)"
        assert gallery._ivf_lists() == 20
        names, centroids, _ = gallery.load_centroids(MODEL, DIM)
        queries = centroids[:40] + 0.05 * rng.standard_normal((40, DIM)).astype(np.float32)
        exact = gallery.nearest(queries, MODEL, k=2, exact=True)
        indexed = gallery.nearest(queries, MODEL, k=2, exact=False, probes=20)  # every list: exact
        assert indexed[0] == exact[0]
        np.testing.assert_allclose(indexed[1], exact[1], atol=1e-6)
        assert gallery.create_index("hnsw") > 0 and gallery.stats()["hnsw"] and not gallery.stats()["ivfflat"]
        assert gallery.nearest(queries, MODEL, k=2, exact=False)[0] == exact[0]


def test_the_python_api_works_on_a_no_copy_gallery(shared, pipeline, tmp_path, weights_dir, monkeypatch):
    """facenet.Gallery's people, embeddings() (the full copy, fetched on request) and recognize over PgSearcher."""
    import facenet

    url, _ = shared
    memory = load(url, pipeline, monkeypatch, no_copy=False)
    monkeypatch.setattr(pg_gallery_module, "NO_COPY_MIN_PEOPLE", 1)
    data_dir = tmp_path / "data"
    for name, photos in FOLDER.items():
        (data_dir / name).mkdir(parents=True)
        for photo in photos:
            shutil.copy2(PEOPLE / photo, data_dir / name)
    gallery = facenet.Gallery(data_dir, url, model="dlib", detector="hog", weights_dir=weights_dir,
                              cache_dir=tmp_path / "cache")
    assert gallery.database.searcher is not None and gallery.people == memory.names
    embeddings = gallery.embeddings()
    assert list(embeddings) == memory.names
    np.testing.assert_allclose(np.stack(list(embeddings.values())), memory.centroids, atol=1e-6)
    (match,) = gallery.recognize(PEOPLE / PROBES[1])
    assert match.name == "José"


def test_a_big_gallery_client_shortlists_by_its_codes_and_reranks_exactly(pg_url, monkeypatch):
    """From CODES_MIN_PEOPLE on, PgSearcher keeps compact codes (no centroid), shortlists locally and re-ranks the
    shortlist with the centroids it fetches: the same top-k as the exact SQL scan; people enrolled after it opened
    are found, people removed since are not."""
    from facenet.gallery.pg import searcher as searcher_module

    monkeypatch.setattr(searcher_module, "CODES_MIN_PEOPLE", 100)
    rng = np.random.default_rng(5)
    people, examine = fake_people("s", 400, rng)
    with PgGallery(pg_url) as gallery:
        gallery.sync_photos(people, examine, MODEL, DIM)
        searcher = PgSearcher(gallery, MODEL, DIM)
        assert searcher._codes is not None and len(searcher._codes) == 400 == searcher.people
        _, centroids, _ = gallery.load_centroids(MODEL, DIM)
        queries = centroids[:40] + 0.05 * rng.standard_normal((40, DIM)).astype(np.float32)
        exact = gallery.nearest(queries, MODEL, k=3, exact=True)
        found = searcher.nearest(queries, 1)  # RERANK_SHORTLIST people fetched per face
        assert [row[0] for row in found[0]] == [row[0] for row in exact[0]]
        np.testing.assert_allclose(found[1][:, 0], exact[1][:, 0], atol=1e-5)
        np.testing.assert_array_equal(found[2][:, 0], exact[2][:, 0])
        monkeypatch.setattr(searcher_module, "RERANK_SHORTLIST", 64)  # 8-d codes order a top 3 too roughly for 8
        found = searcher.nearest(queries, 3)
        assert found[0] == exact[0]
        np.testing.assert_allclose(found[1], exact[1], atol=1e-5)
        np.testing.assert_array_equal(found[2], exact[2])
        later, examine = fake_people("t", 2, rng)
        gallery.sync_photos(later, examine, MODEL, DIM)
        _, now, _ = gallery.load_centroids(MODEL, DIM)
        newcomers = now[-2:]  # names sort "t..." after "s...": the two enrolled after the searcher opened
        assert [row[0] for row in searcher.nearest(newcomers, 1)[0]] == ["t0000", "t0001"]
        gallery.remove_person(exact[0][0][0])
        assert searcher.nearest(queries[:1], 1)[0][0][0] == exact[0][0][1]
        gallery.sync_photos(later, examine, "test:other", DIM, rebuild=True)  # ids begin again: never mixed up
        with pytest.raises(GalleryError, match="made by model 'test:other'"):
            searcher.nearest(queries[:1], 1)
        searcher.close()


def test_a_reload_carries_the_codes_on_and_reads_only_what_changed(pg_url, monkeypatch):
    """The next searcher of the same gallery copies the newest one's codes and reads only the rows changed since (a
    reload after a sync at 1 M people: ~0.6 s instead of ~13 s): a person whose centroid moved is found where it is
    now, a newcomer is found, a removed person is not; a rebuilt gallery's searcher reads everything again."""
    from facenet.gallery.pg import queries as queries_module
    from facenet.gallery.pg import searcher as searcher_module

    monkeypatch.setattr(searcher_module, "CODES_MIN_PEOPLE", 100)
    monkeypatch.setattr(queries_module, "CODES_OVERLAP", timedelta(0))  # else every row here is an hour young
    rng = np.random.default_rng(11)
    people, examine = fake_people("s", 400, rng)
    with PgGallery(pg_url) as gallery:
        gallery.sync_photos(people, examine, MODEL, DIM)
        first = PgSearcher(gallery, MODEL, DIM)
        assert first.codes_rows_read == 400
        _, centroids, _ = gallery.load_centroids(MODEL, DIM)
        moved = -centroids[5]  # s0005's new photo: as far from the old one as can be
        sha = hashlib.sha256(b"moved").hexdigest()
        gallery.sync_photos([("s0005", [("moved.jpg", sha)])],
                            lambda pending: ({s: {"reason": None, "faces": 1} for s in pending}, {sha: moved}),
                            MODEL, DIM)
        newcomer, examine_new = fake_people("t", 1, rng)
        gallery.sync_photos(newcomer, examine_new, MODEL, DIM)
        gallery.remove_person("s0007")
        second = PgSearcher(gallery, MODEL, DIM)
        assert second.codes_rows_read == 2  # s0005 and t0000
        queries = np.stack([moved, gallery.load_centroids(MODEL, DIM)[1][-1], centroids[7]])
        names = [row[0] for row in second.nearest(queries, 1)[0]]
        assert names[:2] == ["s0005", "t0000"] and names[2] != "s0007"
        assert [row[0] for row in first.nearest(queries[:1], 1)[0]] != ["s0005"]  # its stale codes miss him
        gallery.sync_photos(people[:300], examine, "test:other", DIM, rebuild=True)
        assert PgSearcher(gallery, "test:other", DIM).codes_rows_read == 300
        first.close()
        second.close()


def test_a_reload_reads_by_indexes_that_a_writer_adds_to_an_older_gallery(pg_url):
    """A reload's size and the rows changed since a client's codes come from indexes (PEOPLE_INDEXES), not from
    reading every row (at 1 M people each read ~0.2-0.7 s); a gallery made without them gets them at its next sync."""
    rng = np.random.default_rng(12)
    people, examine = fake_people("x", 200, rng)
    with PgGallery(pg_url) as gallery:
        gallery.sync_photos(people, examine, MODEL, DIM)
        assert all(gallery._table_exists(name) for name in pg_schema.PEOPLE_INDEXES)
        for name in pg_schema.PEOPLE_INDEXES:  # as a gallery of an earlier facenet
            gallery.conn.execute(f"DROP INDEX {name}")
        newcomer, examine_new = fake_people("y", 1, rng)
        gallery.sync_photos(newcomer, examine_new, MODEL, DIM)
        assert all(gallery._table_exists(name) for name in pg_schema.PEOPLE_INDEXES)
        gallery.conn.execute("VACUUM ANALYZE facenet_people")
        gallery.conn.execute("SET enable_seqscan = off")  # 201 rows would be read whole: can an index answer?
        since = gallery.conn.execute("SELECT now()").fetchone()[0]
        size_plan = [row[0] for row in gallery.conn.execute("EXPLAIN " + pg_queries.SIZE_SQL)]
        changed_plan = [row[0] for row in gallery.conn.execute("EXPLAIN " + pg_queries.CHANGED_SQL,
                                                               (200, since, 100))]
        assert "Index Only Scan using facenet_people_enrolled" in "\n".join(size_plan)
        assert "facenet_people_updated_at" in "\n".join(changed_plan) and "pkey" in "\n".join(changed_plan)
        assert not any("Seq Scan" in line for line in size_plan + changed_plan)
        assert gallery.size(MODEL, DIM) == (201, 1)
        changed = gallery.conn.execute(pg_queries.CHANGED_SQL, (200, since - timedelta(hours=1), 500)).fetchall()
        assert len(changed) == 201  # everyone was stamped within the hour
        assert [row[0] for row in gallery.conn.execute(pg_queries.CHANGED_SQL, (200, since, 500))] == [201]


def test_a_writer_that_may_not_own_the_table_syncs_without_the_indexes(pg_url, caplog):
    """A role granted rows but not the table's ownership cannot build PEOPLE_INDEXES on an older gallery: its syncs
    still enroll, with one warning naming the indexes; the owner's next sync builds them."""
    import logging

    from psycopg.conninfo import make_conninfo

    rng = np.random.default_rng(13)
    people, examine = fake_people("o", 20, rng)
    with PgGallery(pg_url) as owner:
        owner.sync_photos(people, examine, MODEL, DIM)
        for name in pg_schema.PEOPLE_INDEXES:  # as a gallery of an earlier facenet
            owner.conn.execute(f"DROP INDEX {name}")
        owner.conn.execute("DO $$ BEGIN CREATE ROLE rows_only LOGIN; EXCEPTION WHEN duplicate_object THEN END $$")
        owner.conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO rows_only")
        owner.conn.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO rows_only")
    newcomer, examine_new = fake_people("p", 1, rng)
    with PgGallery(make_conninfo(pg_url, user="rows_only")) as writer, caplog.at_level(logging.WARNING):
        writer.sync_photos(newcomer, examine_new, MODEL, DIM)
        writer.sync_photos(people + newcomer, examine, MODEL, DIM)
        assert writer.names(MODEL) == sorted(name for name, _ in people + newcomer)
    warnings = [r.getMessage() for r in caplog.records if "not built" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "must be owner" in warnings[0]
    assert "facenet_people_updated_at, facenet_people_enrolled" in warnings[0]
    with PgGallery(pg_url) as owner:
        assert not any(owner._table_exists(name) for name in pg_schema.PEOPLE_INDEXES)
        owner.sync_photos(people[:1], examine, MODEL, DIM)
        assert all(owner._table_exists(name) for name in pg_schema.PEOPLE_INDEXES)
