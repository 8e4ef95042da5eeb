"""The `Gallery` contract, run against both backends (a folder of files, PostgreSQL + pgvector started from the
pgserver wheel) with the real pipeline on real photos: one data folder gives the same people, centroids (to 1e-6),
enrollment report and names whichever backend stores it, also after an incremental sync (a photo removed, one
added). The folder holds the cases where the two backends used to disagree: a likely-mislabeled photo (left out of
the centroid) and one photo copied into two people's folders (counted once, kept with the person it matches).

One difference is by design: a shared gallery never drops a person whose folder is gone (it cannot tell them from
another site's people; `remove_person` does), where a file gallery follows its one folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from facenet.gallery import (
    EnrollmentReport,
    FaceDatabase,
    FileGallery,
    GalleryOptions,
    PgGallery,
    is_url,
    open_gallery,
)
from facenet.gallery.pg import HASH_CACHE
from facenet.images import load_image

DATA = Path(__file__).parent / "data"
PEOPLE = DATA / "people"
MISC = DATA / "misc"

FOLDER = {
    "Ada Lovelace": [PEOPLE / "Paul_Tagliabue" / f"Paul_Tagliabue_000{i}.jpg" for i in (1, 2, 3)],
    "José Ñúñez": [PEOPLE / "Juanes" / f"Juanes_000{i}.jpg" for i in (1, 2)],
    "Martha Burk": [PEOPLE / "Martha_Burk" / f"Martha_Burk_000{i}.jpg" for i in (2, 3, 4)],
}
PROBES = {
    "Ada Lovelace": PEOPLE / "Paul_Tagliabue" / "Paul_Tagliabue_0004.jpg",
    "José Ñúñez": PEOPLE / "Juanes" / "Juanes_0003.jpg",
    "Mary Carey (stranger)": PEOPLE / "Mary_Carey" / "Mary_Carey_0001.jpg",
}
BACKENDS = ("file", "postgresql")


def make_folder(root: Path) -> Path:
    """FOLDER, plus: Martha in Ada's folder (mislabeled), José's photo copied into Ada's (shared), a rocket
    (no face), a truncated file, a photo lying loose in the data folder, and a person without a usable photo."""
    for name, photos in FOLDER.items():
        (root / name).mkdir(parents=True)
        for photo in photos:
            shutil.copy2(photo, root / name / photo.name)
    shutil.copy2(PEOPLE / "Martha_Burk" / "Martha_Burk_0001.jpg", root / "Ada Lovelace" / "holiday.jpg")
    shutil.copy2(PEOPLE / "Juanes" / "Juanes_0001.jpg", root / "Ada Lovelace" / "a_stray.jpg")
    shutil.copy2(MISC / "rocket.jpg", root / "José Ñúñez" / "rocket.jpg")
    (root / "Nobody").mkdir()
    shutil.copy2(MISC / "truncated.jpg", root / "Nobody" / "broken.jpg")
    shutil.copy2(PEOPLE / "Jon_Voight" / "Jon_Voight_0001.jpg", root / "loose.jpg")
    return root


def fresh_target(kind: str, pg_database, tmp_path: Path) -> str:
    """Where a new, empty gallery of `kind` lives: a folder, or a new database on the run's one server."""
    return str(tmp_path / "database") if kind == "file" else pg_database()


def sync(target: str, data_dir: Path, pipeline) -> tuple[EnrollmentReport, FaceDatabase]:
    with open_gallery(GalleryOptions.at(target, cache_dir=data_dir.parent / "cache")) as gallery:
        report = gallery.sync(data_dir, pipeline)
        return report, gallery.load(pipeline)


def contract(report: EnrollmentReport, database: FaceDatabase, probes: dict[str, np.ndarray]) -> dict:
    """Everything both backends must agree on."""
    return {
        "people": report.people, "skipped": report.skipped, "duplicates": report.duplicates,
        "mislabeled": report.mislabeled, "far_from_own": report.far_from_own, "several_faces": report.several_faces,
        "not_enrolled": report.not_enrolled, "ignored": report.ignored, "model_id": report.fingerprint,
        "threshold": report.threshold, "names": database.names, "counts": database.photo_counts.tolist(),
        "named": dict(zip(probes, database.identify(np.stack(list(probes.values()))).names, strict=True)),
    }


@pytest.fixture(scope="module")
def probes(pipeline) -> dict[str, np.ndarray]:
    return {who: pipeline.embed(load_image(path), [pipeline.subject(load_image(path)).face])[0]
            for who, path in PROBES.items()}


@pytest.fixture(scope="module")
def both(pipeline, pg_database, probes, tmp_path_factory) -> dict[str, tuple]:
    """Each backend synced with its own copy of the same folder, then again after the same changes."""
    runs = {}
    for kind in BACKENDS:
        root = tmp_path_factory.mktemp(kind)
        data_dir = make_folder(root / "data")
        target = fresh_target(kind, pg_database, root)
        first = sync(target, data_dir, pipeline)
        (data_dir / "Martha Burk" / "Martha_Burk_0003.jpg").unlink()  # a photo leaves ...
        shutil.copy2(PEOPLE / "Juanes" / "Juanes_0003.jpg", data_dir / "José Ñúñez" / "new.jpg")  # ... a photo comes
        second = sync(target, data_dir, pipeline)
        runs[kind] = (target, first, second)
    return runs


def test_open_gallery_picks_the_backend_from_the_location(tmp_path):
    assert isinstance(open_gallery(GalleryOptions(tmp_path / "db")), FileGallery)
    assert GalleryOptions.at(tmp_path / "db", tmp_path / "cache") == GalleryOptions(tmp_path / "db")
    assert GalleryOptions.at("host=h dbname=faces", tmp_path / "cache") == GalleryOptions(tmp_path / "cache",
                                                                                          "host=h dbname=faces")
    assert is_url("postgresql://u@h/db") and is_url("postgres://h/db") and is_url("host=h dbname=faces")
    assert not is_url(tmp_path / "db") and not is_url("database") and not is_url("C:/galleries/db=1")


@pytest.mark.parametrize("sync_round", [1, 2], ids=["first sync", "after a photo left and one came"])
def test_both_backends_give_the_same_people_report_and_names(both, probes, sync_round):
    agreed = {kind: contract(*both[kind][sync_round], probes) for kind in BACKENDS}
    assert agreed["file"] == agreed["postgresql"]


@pytest.mark.parametrize("sync_round", [1, 2], ids=["first sync", "after a photo left and one came"])
def test_both_backends_give_the_same_centroids(both, sync_round):
    (_, file_db), (_, pg_db) = both["file"][sync_round], both["postgresql"][sync_round]
    assert file_db.names == pg_db.names and len(file_db) >= 2
    np.testing.assert_allclose(file_db.centroids, pg_db.centroids, atol=1e-6)


def test_the_agreed_answer_is_the_right_one(both, probes):
    """What both backends agree on is also correct: the mislabeled photo and the stray copy are handled as the
    file gallery always did, and the probes are named."""
    report, database = both["postgresql"][1]
    assert [(m["path"], m["closer_to"], m["excluded"]) for m in report.mislabeled] == [
        ("Ada Lovelace/holiday.jpg", "Martha Burk", True)]
    assert {"path": "Ada Lovelace/a_stray.jpg", "same_as": "José Ñúñez/Juanes_0001.jpg",
            "kept_with": "José Ñúñez"} in report.duplicates
    assert sorted(report.people) == ["Ada Lovelace", "José Ñúñez", "Martha Burk"]
    assert report.people["Ada Lovelace"] == ["Ada Lovelace/Paul_Tagliabue_0001.jpg",
                                             "Ada Lovelace/Paul_Tagliabue_0002.jpg",
                                             "Ada Lovelace/Paul_Tagliabue_0003.jpg"]
    assert database.photo_counts.tolist() == [3, 2, 3]
    assert report.not_enrolled == ["Nobody"] and report.ignored == ["loose.jpg"]
    assert {s["path"] for s in report.skipped} == {"José Ñúñez/rocket.jpg", "Nobody/broken.jpg"}
    named = dict(zip(PROBES, database.identify(np.stack(list(probes.values()))).names, strict=True))
    assert named["Ada Lovelace"] == "Ada Lovelace" and named["José Ñúñez"] == "José Ñúñez"
    assert named["Mary Carey (stranger)"] == "Unknown"


def test_the_second_sync_reuses_what_it_examined(both):
    for kind in BACKENDS:
        report, database = both[kind][2]
        assert report.examined == 1 and report.embedded == 1, kind  # only the new photo
        assert database.names[2] == "Martha Burk" and database.photo_counts.tolist() == [3, 3, 2], kind
        assert report.pruned == 1, kind


def test_postgresql_keeps_photo_hashes_in_the_cache_folder(pipeline, pg_database, tmp_path):
    """A shared gallery hashes a photo once: later syncs read size + mtime from the cache folder's file."""
    data_dir = tmp_path / "data"
    (data_dir / "Ada").mkdir(parents=True)
    for photo in FOLDER["Ada Lovelace"][:2]:
        shutil.copy2(photo, data_dir / "Ada" / photo.name)
    target, cache = fresh_target("postgresql", pg_database, tmp_path), tmp_path / "cache"
    with open_gallery(GalleryOptions(cache, target)) as gallery:
        first = gallery.sync(data_dir, pipeline)
        again = gallery.sync(data_dir, pipeline)
    with PgGallery(target) as gallery:
        without = gallery.sync(data_dir, pipeline)
    assert (first.hashed, again.hashed, without.hashed) == (2, 0, 2)
    assert (cache / HASH_CACHE).exists() and again.examined == 0 and again.people == first.people


def test_the_api_gallery_takes_a_postgresql_url_too(both, pg_database, tmp_path, weights_dir):
    """`facenet.Gallery(data_dir, url)` enrolls into a shared gallery and names faces like the folder gallery."""
    import facenet

    data_dir = make_folder(tmp_path / "data")
    url = fresh_target("postgresql", pg_database, tmp_path)
    gallery = facenet.Gallery(data_dir, url, model="dlib", detector="hog", weights_dir=weights_dir,
                              cache_dir=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [HASH_CACHE]
    report, database = both["file"][1]
    assert gallery.people == database.names and gallery.report.people == report.people
    np.testing.assert_allclose(np.stack(list(gallery.embeddings().values())), database.centroids, atol=1e-6)
    (match,) = gallery.recognize(PROBES["José Ñúñez"])
    assert match.name == "José Ñúñez"
    with pytest.raises(ValueError, match="fine-tuning keeps its weights beside a gallery folder"):
        gallery.fine_tune(epochs=1)


def test_a_second_api_sync_of_a_postgresql_gallery_hashes_and_embeds_nothing(pg_database, tmp_path, weights_dir,
                                                                             monkeypatch):
    """Issue 23: the API opened a shared gallery without a hash cache, so every sync read every photo again."""
    import facenet
    import facenet.gallery.enroll as enroll

    hashed: list[str] = []

    def counted_sha256(path):
        hashed.append(Path(path).relative_to(data_dir).as_posix())
        return real_sha256(path)

    real_sha256 = enroll.file_sha256
    monkeypatch.setattr(enroll, "file_sha256", counted_sha256)
    data_dir = make_folder(tmp_path / "data")
    url = fresh_target("postgresql", pg_database, tmp_path)
    gallery = facenet.Gallery(data_dir, url, model="dlib", detector="hog", weights_dir=weights_dir,
                              cache_dir=tmp_path / "cache")
    in_folders = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.glob("*/*"))
    assert len(in_folders) == 12 and sorted(hashed) == in_folders and gallery.report.hashed == 12
    assert gallery.report.examined == 11  # the 12 files hold 11 distinct photos (one copied into two folders)
    embedded: list[int] = []
    real_embed = gallery.pipeline.embed_photos
    monkeypatch.setattr(gallery.pipeline, "embed_photos", lambda paths, *a, **k: embedded.append(len(paths))
                        or real_embed(paths, *a, **k))
    hashed.clear()
    again = gallery.sync()
    assert hashed == [] and embedded == [] and (again.hashed, again.examined, again.embedded) == (0, 0, 0)
    assert again.reused == 11 and again.people == gallery.report.people and sorted(again.people) == [
        "Ada Lovelace", "José Ñúñez", "Martha Burk"]
    # a photo added by hand: only it is hashed and embedded
    shutil.copy2(PEOPLE / "Martha_Burk" / "Martha_Burk_0001.jpg", data_dir / "Martha Burk" / "new.jpg")
    third = gallery.sync()
    assert hashed == ["Martha Burk/new.jpg"] and third.hashed == 1 and (third.examined, third.embedded) == (0, 0)
