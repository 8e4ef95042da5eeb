"""The enrollment database on real photos: enrollment, lookup, incremental sync, bad input, crash safety."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import facenet.gallery.file
import facenet.gallery.index
from facenet.config import UNKNOWN
from facenet.gallery.enroll import leave_out_mislabeled, nearest_other
from facenet.gallery.file import DATABASE_FILE, DATABASE_VERSION, ENROLLMENT_REPORT, read_database, sync_database
from facenet.gallery.index import FaceDatabase
from facenet.gallery.report import EnrollmentReport
from facenet.gallery.thresholds import calibration, comparison_far, gallery_threshold, match_score
from facenet.images import load_image
from facenet.models.vectors import normalize
from facenet.pipeline import FacePipeline

DATA = Path(__file__).parent / "data"
PEOPLE = DATA / "people"
MISC = DATA / "misc"

# enrolled name -> photos (the names test spaces and non-ASCII letters); each person keeps a held-out photo
GALLERY = {
    "Ada Lovelace": [PEOPLE / "Paul_Tagliabue" / f"Paul_Tagliabue_000{i}.jpg" for i in (1, 2, 3)],
    "José Ñúñez": [PEOPLE / "Juanes" / f"Juanes_000{i}.jpg" for i in (1, 2)],
    "Martha Burk": [PEOPLE / "Martha_Burk" / f"Martha_Burk_000{i}.jpg" for i in (2, 3, 4)],  # 0004: two faces
}
HELD_OUT = {
    "Ada Lovelace": PEOPLE / "Paul_Tagliabue" / "Paul_Tagliabue_0004.jpg",
    "José Ñúñez": PEOPLE / "Juanes" / "Juanes_0003.jpg",
    "Martha Burk": PEOPLE / "Martha_Burk" / "Martha_Burk_0001.jpg",
}
STRANGERS = [
    PEOPLE / "Mary_Carey" / "Mary_Carey_0001.jpg",
    PEOPLE / "Rebekah_Chantay_Revels" / "Rebekah_Chantay_Revels_0001.jpg",
]
PHOTOS = sum(len(photos) for photos in GALLERY.values())


def make_data(root: Path, gallery: dict[str, list[Path]]) -> Path:
    for name, photos in gallery.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for photo in photos:
            shutil.copy2(photo, root / name / photo.name)
    return root


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: its bytes and modification time."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}


VERIFY_THRESHOLD = calibration("dlib").verify_threshold
FIRST_LINE = re.compile(
    r"^Enrollment: (?P<people>\d+) people, (?P<used>\d+) of (?P<files>\d+) photos used \((?P<skipped>\d+) skipped, "
    r"(?P<duplicates>\d+) duplicates, (?P<left_out>\d+) left out as likely mislabeled\); (?P<examined>\d+) photos "
    r"examined now, (?P<reused>\d+) reused, (?P<pruned>\d+) pruned -> "
)


def face_embedding(path: Path, pipeline) -> np.ndarray:
    image = load_image(path)
    faces = pipeline.detect(image)
    assert faces, path
    return pipeline.embed(image, faces[:1])


def first_line(report) -> dict[str, int]:
    """The counts of the report's first line; they must add up to the photos in the people's folders."""
    match = FIRST_LINE.match(report.to_text().splitlines()[0])
    assert match, report.to_text().splitlines()[0]
    counts = {key: int(value) for key, value in match.groupdict().items()}
    assert counts["used"] + counts["skipped"] + counts["duplicates"] + counts["left_out"] == counts["files"], counts
    assert counts["used"] == sum(len(paths) for paths in report.people.values())
    assert (counts["examined"], counts["reused"], counts["pruned"]) == (report.examined, report.reused,
                                                                         report.pruned)
    return counts


def photos_in_folders(data_dir: Path) -> int:
    """Image files inside the people's folders (what the report's "of N photos" counts)."""
    from facenet.images import list_people

    return sum(len(files) for _, files in list_people(data_dir)[0])


@pytest.fixture(scope="module")
def base(tmp_path_factory, pipeline):
    """The GALLERY enrolled once: (data_dir, database_dir, database, report, data snapshot taken before)."""
    root = tmp_path_factory.mktemp("base")
    data_dir = make_data(root / "data", GALLERY)
    before = snapshot(data_dir)
    database, report = sync_database(data_dir, root / "database", pipeline)
    return data_dir, root / "database", database, report, before


@pytest.fixture
def copy(base, tmp_path):
    """A private copy of the enrolled data and database (mtimes kept) to change."""
    data_dir, database_dir = base[0], base[1]
    shutil.copytree(data_dir, tmp_path / "data")
    shutil.copytree(database_dir, tmp_path / "database")
    return tmp_path / "data", tmp_path / "database"


class OtherWeights:
    """The same network under another fingerprint: what a retrained model looks like to the database."""

    fingerprint = "0123456789abcdef"
    model_id = f"dlib:{fingerprint}"

    def __init__(self, embedder) -> None:
        self._embedder = embedder

    def __getattr__(self, name: str):
        return getattr(self._embedder, name)


# --------------------------------------------------------------------------- enrollment and lookup


def test_enrolls_and_names_held_out_photos(base, pipeline):
    _, database_dir, database, report, _ = base
    assert database.names == sorted(GALLERY)
    assert database.centroids.shape == (3, 128)
    assert np.allclose(np.linalg.norm(database.centroids, axis=1), 1.0, atol=1e-5)
    assert report.embedded == report.examined == PHOTOS and report.reused == 0
    assert {name: len(paths) for name, paths in report.people.items()} == {n: len(p) for n, p in GALLERY.items()}
    assert report.skipped == [] and report.not_enrolled == [] and report.duplicates == []
    assert first_line(report) == {"people": 3, "used": PHOTOS, "files": PHOTOS, "skipped": 0,
                                                  "duplicates": 0, "left_out": 0, "examined": PHOTOS, "reused": 0,
                                                  "pruned": 0}
    assert report.fingerprint == pipeline.model_id and report.fingerprint.startswith("dlib:")
    for name, photo in HELD_OUT.items():
        ((named, distance, score),) = database.identify(face_embedding(photo, pipeline))
        assert named == name, (photo, named)
        assert distance < database.threshold and score > 50
    for photo in STRANGERS:
        ((named, distance, score),) = database.identify(face_embedding(photo, pipeline))
        assert named == UNKNOWN, (photo, named)
        assert distance > database.threshold and score < 50


def test_several_faces_uses_the_largest_and_reports_it(base):
    report = base[3]
    assert report.several_faces == [{"path": "Martha Burk/Martha_Burk_0004.jpg", "faces": 2}]
    assert "Martha Burk/Martha_Burk_0004.jpg" in report.people["Martha Burk"]
    # the largest face is Martha herself: nothing looks mislabeled or out of place
    assert report.mislabeled == [] and report.far_from_own == []


def test_report_and_database_files_keep_unicode_names(base):
    database_dir, report = base[1], base[3]
    saved = json.loads((database_dir / f"{ENROLLMENT_REPORT}.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert sorted(saved["people"]) == sorted(GALLERY)
    text = (database_dir / f"{ENROLLMENT_REPORT}.txt").read_text(encoding="utf-8")
    assert "José Ñúñez (2)" in text and "Martha_Burk_0004.jpg: 2 faces" in text
    loaded = read_database(database_dir)
    assert loaded.names == sorted(GALLERY)
    assert np.allclose(loaded.centroids, base[2].centroids)
    assert (loaded.model, loaded.dim, loaded.model_id) == ("dlib", 128, report.fingerprint)


def test_manifest_records_the_model_its_dimension_and_the_data_folder(base, pipeline):
    data_dir, database_dir = base[0], base[1]
    with np.load(database_dir / DATABASE_FILE, allow_pickle=False) as stored:
        manifest = json.loads(stored["manifest"].tobytes().decode("utf-8"))
        assert stored["embeddings"].shape == (PHOTOS, 128) and stored["centroids"].shape == (3, 128)
    assert manifest["version"] == DATABASE_VERSION == 2
    assert (manifest["model"], manifest["dim"], manifest["fingerprint"]) == ("dlib", 128, pipeline.model_id)
    assert manifest["data_dir"] == str(data_dir.resolve())
    assert {r["detector"] for r in manifest["results"].values()} == {"hog"}
    assert {r["how"] for r in manifest["results"].values()} == {"detected"}


def test_data_dir_bytes_and_mtimes_unchanged(base, pipeline):
    data_dir, database_dir, _, _, before = base
    assert snapshot(data_dir) == before
    sync_database(data_dir, database_dir, pipeline)
    assert snapshot(data_dir) == before


# --------------------------------------------------------------------------- incremental sync


def test_unchanged_data_recomputes_nothing(base, copy, pipeline):
    data_dir, database_dir = copy
    # the copied data lives in another folder: the manifest records the new one, nothing is recomputed
    database, report = sync_database(data_dir, database_dir, pipeline)
    assert (report.embedded, report.examined, report.hashed, report.pruned) == (0, 0, 0, 0)
    assert report.reused == PHOTOS and report.saved
    assert np.array_equal(database.centroids, base[2].centroids)
    # and now nothing changed at all: the database file is not even rewritten
    written = (database_dir / DATABASE_FILE).read_bytes()
    database, report = sync_database(data_dir, database_dir, pipeline)
    assert (report.embedded, report.examined, report.hashed, report.pruned) == (0, 0, 0, 0)
    assert report.reused == PHOTOS and not report.saved
    assert (database_dir / DATABASE_FILE).read_bytes() == written
    assert np.array_equal(database.centroids, base[2].centroids)


def test_a_gallery_held_in_float16_still_saves_float32_centroids(base, copy, pipeline, monkeypatch):
    """A gallery past CLUSTER_INDEX_MIN holds its centroids in float16; the file keeps the float32 ones, so a
    smaller gallery later (or another machine) gets them unrounded. Here every gallery counts as big."""
    monkeypatch.setattr(facenet.gallery.index, "CLUSTER_INDEX_MIN", 1)
    data_dir, database_dir = copy
    (database_dir / DATABASE_FILE).unlink()
    database, report = sync_database(data_dir, database_dir, pipeline)
    assert report.saved and database.centroids.dtype == np.float16
    with np.load(database_dir / DATABASE_FILE) as saved:
        centroids = saved["centroids"]
    assert centroids.dtype == np.float32
    np.testing.assert_allclose(centroids, base[2].centroids, atol=1e-6)
    assert not np.array_equal(centroids, centroids.astype(np.float16).astype(np.float32))  # not the rounded ones


def test_added_photo_is_the_only_one_embedded(base, copy, pipeline):
    data_dir, database_dir = copy
    shutil.copy2(HELD_OUT["Ada Lovelace"], data_dir / "Ada Lovelace")
    database, report = sync_database(data_dir, database_dir, pipeline)
    assert (report.embedded, report.examined, report.reused) == (1, 1, PHOTOS)
    assert first_line(report)["files"] == PHOTOS + 1
    assert len(report.people["Ada Lovelace"]) == 4
    assert database.photo_counts[database.names.index("Ada Lovelace")] == 4
    row = database.names.index("Ada Lovelace")
    assert not np.allclose(database.centroids[row], base[2].centroids[row])
    # and the saved file now holds it: another sync embeds nothing
    assert sync_database(data_dir, database_dir, pipeline)[1].embedded == 0


def test_removed_photo_and_person_are_pruned(copy, pipeline):
    data_dir, database_dir = copy
    (data_dir / "Ada Lovelace" / "Paul_Tagliabue_0003.jpg").unlink()
    shutil.rmtree(data_dir / "José Ñúñez")
    database, report = sync_database(data_dir, database_dir, pipeline)
    assert database.names == ["Ada Lovelace", "Martha Burk"]
    assert report.embedded == 0 and report.pruned == 3
    assert report.people["Ada Lovelace"] == [f"Ada Lovelace/Paul_Tagliabue_000{i}.jpg" for i in (1, 2)]
    assert read_database(database_dir).names == ["Ada Lovelace", "Martha Burk"]


def test_renamed_and_moved_photos_are_not_recomputed(base, copy, pipeline):
    data_dir, database_dir = copy
    (data_dir / "Ada Lovelace").rename(data_dir / "Ada King")
    (data_dir / "Martha Burk" / "2003").mkdir()
    (data_dir / "Martha Burk" / "Martha_Burk_0002.jpg").rename(data_dir / "Martha Burk" / "2003" / "renamed.jpg")
    database, report = sync_database(data_dir, database_dir, pipeline)
    assert report.embedded == 0 and report.examined == 0 and report.reused == PHOTOS
    assert report.hashed == 4  # the three moved with their folder and the renamed one: read, not recomputed
    assert database.names == ["Ada King", "José Ñúñez", "Martha Burk"]
    old = base[2]
    assert np.allclose(database.centroids[0], old.centroids[old.names.index("Ada Lovelace")])
    assert "Martha Burk/2003/renamed.jpg" in report.people["Martha Burk"]


def test_changed_photo_is_embedded_again(copy, pipeline):
    data_dir, database_dir = copy
    target = data_dir / "Ada Lovelace" / "Paul_Tagliabue_0001.jpg"
    target.write_bytes(HELD_OUT["Ada Lovelace"].read_bytes())
    _, report = sync_database(data_dir, database_dir, pipeline)
    assert (report.embedded, report.reused, report.pruned) == (1, PHOTOS - 1, 1)


# --------------------------------------------------------------------------- rebuilds and crash safety


def test_other_weights_rebuild_everything(copy, embedder, detector, caplog):
    data_dir, database_dir = copy
    other = FacePipeline(detector, OtherWeights(embedder))
    with caplog.at_level(logging.INFO, logger="facenet.gallery.file"):
        database, report = sync_database(data_dir, database_dir, other)
    assert report.embedded == PHOTOS and report.reused == 0
    assert "other weights" in report.rebuilt and OtherWeights.model_id in report.rebuilt
    assert any("other weights" in r.getMessage() for r in caplog.records)
    assert database.model_id == OtherWeights.model_id == read_database(database_dir).model_id
    assert report.fingerprint == OtherWeights.model_id


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other version"])
def test_corrupt_database_is_rebuilt_with_one_warning(copy, pipeline, caplog, damage):
    data_dir, database_dir = copy
    path = database_dir / DATABASE_FILE
    if damage == "garbage":
        path.write_bytes(b"this is not a database")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        manifest = json.dumps({"format": "facenet-face-database", "version": 999}).encode()
        with open(path, "wb") as handle:
            np.savez(handle, manifest=np.frombuffer(manifest, np.uint8), embeddings=np.zeros((0, 128)),
                     centroids=np.zeros((0, 128)))
    with caplog.at_level(logging.WARNING):
        database, report = sync_database(data_dir, database_dir, pipeline)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and DATABASE_FILE in warnings[0].getMessage(), warnings
    assert report.rebuilt.startswith("unreadable") and report.embedded == PHOTOS
    assert read_database(database_dir).names == sorted(GALLERY)


def test_crash_mid_write_leaves_the_previous_database(base, copy, pipeline, monkeypatch):
    data_dir, database_dir = copy
    before = (database_dir / DATABASE_FILE).read_bytes()
    shutil.copy2(HELD_OUT["Ada Lovelace"], data_dir / "Ada Lovelace")

    class Killed(BaseException):
        pass

    def dies_half_way(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip file")
        raise Killed

    monkeypatch.setattr(facenet.gallery.file.np, "savez", dies_half_way)
    with pytest.raises(Killed):
        sync_database(data_dir, database_dir, pipeline)
    monkeypatch.undo()
    assert (database_dir / DATABASE_FILE).read_bytes() == before
    assert read_database(database_dir).names == sorted(GALLERY)
    # a temp file left by a harder crash (kill -9) is ignored too
    (database_dir / f".{Path(DATABASE_FILE).stem}.x1y2z3.npz").write_bytes(b"PK\x03\x04 half")
    _, report = sync_database(data_dir, database_dir, pipeline)
    assert (report.embedded, report.reused, report.rebuilt) == (1, PHOTOS, None)


def test_unwritable_database_dir_warns_and_goes_on(copy, pipeline, caplog, monkeypatch):
    data_dir, database_dir = copy
    shutil.copy2(HELD_OUT["Ada Lovelace"], data_dir / "Ada Lovelace")

    def disk_full(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(facenet.gallery.file, "atomic_write", disk_full)
    with caplog.at_level(logging.WARNING):
        database, report = sync_database(data_dir, database_dir, pipeline)
    assert len(database) == 3 and report.embedded == 1
    assert any("could not save" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- bad input


def test_bad_photos_are_skipped_with_reasons(tmp_path, pipeline, caplog):
    data_dir = make_data(tmp_path / "data", {"Ada Lovelace": GALLERY["Ada Lovelace"][:2]})
    broken = data_dir / "Broken Person"
    broken.mkdir()
    (broken / "empty.jpg").write_bytes(b"")
    shutil.copy2(MISC / "truncated.jpg", broken / "truncated.jpg")
    (broken / "notes.jpg").write_text("not a photo at all\n")
    (data_dir / "Dog").mkdir()
    shutil.copy2(MISC / "dogs.jpg", data_dir / "Dog" / "dogs.jpg")
    for junk in ("readme.txt", ".DS_Store", "Thumbs.db", "clip.mp4"):
        (data_dir / "Ada Lovelace" / junk).write_bytes(b"junk")
    shutil.copy2(GALLERY["Martha Burk"][0], data_dir / "loose.jpg")
    before = snapshot(data_dir)

    with caplog.at_level(logging.WARNING):
        database, report = sync_database(data_dir, tmp_path / "database", pipeline)
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert set(reasons) == {"Broken Person/empty.jpg", "Broken Person/truncated.jpg", "Broken Person/notes.jpg",
                            "Dog/dogs.jpg"}
    assert reasons["Broken Person/empty.jpg"] == "unreadable: empty file (0 bytes)"
    assert reasons["Broken Person/truncated.jpg"].startswith("unreadable: ")
    assert reasons["Broken Person/notes.jpg"].startswith("unreadable: ")
    assert reasons["Dog/dogs.jpg"] == "no face"
    assert report.not_enrolled == ["Broken Person", "Dog"] and database.names == ["Ada Lovelace"]
    assert report.ignored == ["loose.jpg"]
    counts = first_line(report)  # loose.jpg and the junk files are not photos of anyone: not counted
    assert (counts["used"], counts["skipped"], counts["files"]) == (2, 4, photos_in_folders(data_dir)) == (2, 4, 6)
    messages = "\n".join(r.getMessage() for r in caplog.records)
    for name in ("empty.jpg", "truncated.jpg", "notes.jpg", "dogs.jpg", "Broken Person", "data folder ignored"):
        assert name in messages
    assert "readme" not in json.dumps(report.to_dict()) and "junk" not in messages
    assert snapshot(data_dir) == before
    # their verdicts are remembered: a second sync reads nothing again
    _, again = sync_database(data_dir, tmp_path / "database", pipeline)
    assert again.examined == 0 and again.skipped == report.skipped
    assert again.reused == 6 and first_line(again)["files"] == 6


def test_mislabeled_photo_is_flagged_and_left_out_of_the_centroid(base, copy, pipeline):
    data_dir, database_dir = copy
    shutil.copy2(HELD_OUT["Martha Burk"], data_dir / "Ada Lovelace" / "holiday.jpg")  # Martha in Ada's folder
    database, report = sync_database(data_dir, database_dir, pipeline)
    assert [(s["path"], s["closer_to"]) for s in report.mislabeled] == [("Ada Lovelace/holiday.jpg", "Martha Burk")]
    (flag,) = report.mislabeled
    assert flag["distance_to_other"] < flag["distance"] and flag["excluded"] is True
    text = report.to_text()
    assert "Likely mislabeled (1):" in text and "holiday.jpg: closer to Martha Burk" in text
    assert "left out of the centroid" in text
    assert first_line(report) == {"people": 3, "used": PHOTOS, "files": PHOTOS + 1, "skipped": 0, "duplicates": 0,
                                  "left_out": 1, "examined": 1, "reused": PHOTOS, "pruned": 0}
    assert report.embedded == 1  # it was embedded (and kept in the database), just not averaged into Ada

    # Ada's centroid is the mean of her other three photos only
    ada = GALLERY["Ada Lovelace"]
    assert report.people["Ada Lovelace"] == [f"Ada Lovelace/{p.name}" for p in ada]
    row = database.names.index("Ada Lovelace")
    assert database.photo_counts[row] == 3
    others = pipeline.embed_photos([data_dir / "Ada Lovelace" / p.name for p in ada])
    expected = normalize(np.mean([v.vector for v in others.values()], axis=0))
    np.testing.assert_allclose(database.centroids[row], expected, atol=1e-5)
    np.testing.assert_allclose(database.centroids[row], base[2].centroids[row], atol=1e-6)
    with_holiday = normalize(np.mean([*[v.vector for v in others.values()],
                                      face_embedding(HELD_OUT["Martha Burk"], pipeline)[0]], axis=0))
    assert np.linalg.norm(database.centroids[row] - with_holiday) > 0.05  # so the comparison above can fail
    saved = read_database(database_dir)
    np.testing.assert_allclose(saved.centroids[row], expected, atol=1e-5)
    assert saved.photo_counts[row] == 3
    # the held-out photo of Ada is still named Ada, the mislabeled one is named Martha
    assert database.identify(face_embedding(HELD_OUT["Ada Lovelace"], pipeline)).names == ["Ada Lovelace"]
    assert database.identify(face_embedding(HELD_OUT["Martha Burk"], pipeline)).names == ["Martha Burk"]


def test_nearest_other_leaves_out_the_own_person_only_where_there_is_one():
    """Each photo's nearest centroid but its own person's; -1 (no own centroid) leaves nothing out."""
    centroids = np.eye(3, dtype=np.float32)
    vectors = normalize(np.array([[1.0, 0.5, 0.0], [1.0, 0.5, 0.0], [0.0, 0.2, 1.0]], np.float32))
    nearest, distance = nearest_other(vectors, np.array([0, -1, 2]), centroids, np.ones(3, bool))
    assert nearest.tolist() == [1, 0, 1]
    np.testing.assert_allclose(distance, np.sqrt(2 - 2 * vectors[[0, 1, 2], [1, 0, 1]]), atol=1e-6)


def test_every_photo_flagged_keeps_them_all():
    """A person whose photos all look like someone else keeps them (never enrolled with nothing); a person with one
    intruder among good photos loses only the intruder."""
    rng = np.random.default_rng(5)
    e0, e1 = np.eye(2, 128)

    def near(direction: np.ndarray, spread: float) -> np.ndarray:
        noise = rng.standard_normal(128)
        return unit((direction + spread * noise / np.linalg.norm(noise))[None])[0]

    used = [("A/1", 0, near(e0, 0.5)), ("A/2", 0, near(e0, 0.5)),
            *[(f"B/{i}", 1, near(e0, 0.05)) for i in range(3)],
            *[(f"C/{i}", 2, near(e1, 0.05)) for i in range(3)], ("C/intruder", 2, near(e0, 0.05))]
    names, counts = ["A", "B", "C"], [2, 3, 4]
    centroids = unit(np.stack([np.mean([v for _, p, v in used if p == i], axis=0) for i in range(3)]))
    report = EnrollmentReport("data", "db")
    report.people = {name: [path for path, p, _ in used if p == i] for i, name in enumerate(names)}
    kept_names, kept, kept_counts = leave_out_mislabeled(report, names, centroids.copy(), counts, used, far=10.0)
    assert {m["path"]: m["excluded"] for m in report.mislabeled} == {"A/1": False, "A/2": False, "C/intruder": True}
    assert kept_names == names and kept_counts == [2, 3, 3]
    np.testing.assert_allclose(kept[:2], centroids[:2])
    np.testing.assert_allclose(kept[2], unit(np.mean([v for path, _, v in used if path.startswith("C/") and
                                                       path != "C/intruder"], axis=0)[None])[0], atol=1e-6)
    assert report.people["A"] == ["A/1", "A/2"] and report.people["C"] == ["C/0", "C/1", "C/2"]
    lines = report.to_text().splitlines()
    assert [line for line in lines if "left out of the centroid" in line] == [
        next(line for line in lines if line.strip().startswith("C/intruder"))]
    assert first_line(report)["left_out"] == 1 and first_line(report)["files"] == len(used)


def test_duplicates_count_once_and_are_reported(base, copy, pipeline):
    data_dir, database_dir = copy
    original = data_dir / "Ada Lovelace" / "Paul_Tagliabue_0001.jpg"
    shutil.copy2(original, data_dir / "Ada Lovelace" / "zz_copy.jpg")
    shutil.copy2(original, data_dir / "José Ñúñez" / original.name)  # the same bytes enrolled as someone else
    database, report = sync_database(data_dir, database_dir, pipeline)
    assert report.duplicates == [
        {"path": "Ada Lovelace/zz_copy.jpg", "same_as": "Ada Lovelace/Paul_Tagliabue_0001.jpg"},
        {"path": f"José Ñúñez/{original.name}", "same_as": "Ada Lovelace/Paul_Tagliabue_0001.jpg",
         "kept_with": "Ada Lovelace"},
    ]
    assert (report.examined, report.embedded, report.reused, report.hashed) == (0, 0, PHOTOS, 2)
    assert {n: len(p) for n, p in report.people.items()} == {n: len(p) for n, p in GALLERY.items()}
    assert f"José Ñúñez/{original.name}" not in report.people["José Ñúñez"]
    assert list(database.photo_counts) == list(base[2].photo_counts)
    np.testing.assert_allclose(database.centroids, base[2].centroids, atol=1e-6)
    assert report.mislabeled == []
    assert first_line(report) == {"people": 3, "used": PHOTOS, "files": PHOTOS + 2, "skipped": 0, "duplicates": 2,
                                  "left_out": 0, "examined": 0, "reused": PHOTOS, "pruned": 0}
    assert "Duplicates (byte-identical, counted once) (2):" in report.to_text()
    saved = json.loads((database_dir / f"{ENROLLMENT_REPORT}.json").read_text(encoding="utf-8"))
    assert saved["duplicates"] == report.duplicates


def test_a_photo_copied_into_another_folder_stays_with_the_person_it_matches(base, copy, pipeline):
    """José's photo copied into Ada's folder (Ada is listed first): José keeps it, Ada's copy is the reported
    conflict; nobody loses a photo and no photo is left out as mislabeled."""
    data_dir, database_dir = copy
    original = data_dir / "José Ñúñez" / "Juanes_0001.jpg"
    shutil.copy2(original, data_dir / "Ada Lovelace" / "a_stray.jpg")
    database, report = sync_database(data_dir, database_dir, pipeline)
    assert report.duplicates == [{"path": "Ada Lovelace/a_stray.jpg", "same_as": "José Ñúñez/Juanes_0001.jpg",
                                  "kept_with": "José Ñúñez"}]
    assert report.people["José Ñúñez"] == [f"José Ñúñez/{p.name}" for p in GALLERY["José Ñúñez"]]
    assert "Ada Lovelace/a_stray.jpg" not in report.people["Ada Lovelace"] and report.mislabeled == []
    np.testing.assert_allclose(database.centroids, base[2].centroids, atol=1e-6)
    assert "a_stray.jpg: same as José Ñúñez/Juanes_0001.jpg (in another person's folder: kept with José Ñúñez" \
        in report.to_text()


def test_examined_counts_distinct_photos(tmp_path, pipeline):
    data_dir = make_data(tmp_path / "data", {"Ada Lovelace": GALLERY["Ada Lovelace"][:2]})
    shutil.copy2(GALLERY["Ada Lovelace"][0], data_dir / "Ada Lovelace" / "zz_again.jpg")
    (data_dir / "Dog").mkdir()
    shutil.copy2(MISC / "dogs.jpg", data_dir / "Dog" / "dogs.jpg")
    shutil.copy2(MISC / "dogs.jpg", data_dir / "Dog" / "dogs copy.jpg")
    database, report = sync_database(data_dir, tmp_path / "database", pipeline)
    assert (report.examined, report.embedded, report.reused) == (3, 2, 0)  # 5 files, 3 distinct photos
    assert [d["path"] for d in report.duplicates] == ["Ada Lovelace/zz_again.jpg"]
    assert sorted(s["path"] for s in report.skipped) == ["Dog/dogs copy.jpg", "Dog/dogs.jpg"]
    assert database.photo_counts.tolist() == [2]
    assert first_line(report) == {"people": 1, "used": 2, "files": 5, "skipped": 2, "duplicates": 1, "left_out": 0,
                                  "examined": 3, "reused": 0, "pruned": 0}
    _, again = sync_database(data_dir, tmp_path / "database", pipeline)
    assert (again.examined, again.reused) == (0, 3) and first_line(again)["files"] == 5


def test_photo_of_someone_else_is_far_from_own_centroid(tmp_path, pipeline):
    gallery = {"Ada Lovelace": [*GALLERY["Ada Lovelace"], STRANGERS[0]]}
    _, report = sync_database(make_data(tmp_path / "data", gallery), tmp_path / "db", pipeline)
    assert [s["path"] for s in report.far_from_own] == ["Ada Lovelace/Mary_Carey_0001.jpg"]
    assert report.far_from_own[0]["distance"] > VERIFY_THRESHOLD


def test_empty_or_missing_data_dir(tmp_path, pipeline, caplog):
    (tmp_path / "data").mkdir()
    database, report = sync_database(tmp_path / "data", tmp_path / "database", pipeline)
    assert len(database) == 0 and report.people == {} and report.embedded == 0
    matches = database.identify(np.eye(3, 128, dtype=np.float32))
    assert matches.names == [UNKNOWN] * 3 and all(matches.scores < 50)
    assert len(database.identify(np.zeros((0, 128), np.float32))) == 0
    assert read_database(tmp_path / "database").names == []
    with caplog.at_level(logging.WARNING):
        missing, _ = sync_database(tmp_path / "nowhere", tmp_path / "database", pipeline)
    assert len(missing) == 0 and "not found" in caplog.text
    assert not (tmp_path / "nowhere").exists()


def test_emptying_a_database_enrolled_from_another_folder_warns_loudly(base, copy, pipeline, tmp_path, caplog):
    _, database_dir = copy  # its manifest says it was enrolled from base's data folder
    enrolled_from = str(base[0].resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with caplog.at_level(logging.WARNING):
        database, report = sync_database(elsewhere, database_dir, pipeline)
    assert len(database) == 0 and report.people == {}
    loud = [r for r in caplog.records if "EMPTY" in r.getMessage()]
    assert len(loud) == 1 and loud[0].levelno == logging.WARNING
    message = loud[0].getMessage()
    assert "3 people" in message and enrolled_from in message and str(elsewhere) in message
    assert f"--data_dir {enrolled_from}" in message
    assert read_database(database_dir).names == []


def test_emptying_the_folder_the_database_came_from_is_not_the_loud_case(copy, pipeline, caplog):
    data_dir, database_dir = copy
    sync_database(data_dir, database_dir, pipeline)  # now enrolled from this very folder
    for person in list(data_dir.iterdir()):
        shutil.rmtree(person)
    with caplog.at_level(logging.WARNING):
        database, _ = sync_database(data_dir, database_dir, pipeline)
    assert len(database) == 0
    assert not [r for r in caplog.records if "EMPTY" in r.getMessage()]


# --------------------------------------------------------------------------- lookup maths


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_identify_matches_a_brute_force_loop():
    rng = np.random.default_rng(7)
    centroids = unit(rng.standard_normal((40, 128)))
    near = unit(centroids[rng.integers(0, 40, 15)] + 0.02 * rng.standard_normal((15, 128)))
    queries = np.concatenate([near, unit(rng.standard_normal((10, 128)))])
    database = FaceDatabase([f"person {i}" for i in range(40)], centroids, "test", rng.integers(1, 6, 40), model="dlib")
    for threshold in (None, 0.9, 1.3):
        matches = database.identify(queries, threshold)
        assert len(matches) == len(queries)
        for query, answer in zip(queries, matches, strict=True):
            distances = [float(np.linalg.norm(query - c)) for c in centroids]
            best = int(np.argmin(distances))
            limit = database.thresholds[best] if threshold is None else threshold
            expected = database.names[best] if distances[best] <= limit else UNKNOWN
            assert answer == (expected, pytest.approx(distances[best], abs=1e-5),
                              pytest.approx(match_score(distances[best], limit), abs=1e-3))
    assert set(database.identify(near).names) != {UNKNOWN}
    assert set(database.identify(queries[15:]).names) == {UNKNOWN}
    assert len(database.identify(np.zeros((0, 128), np.float32))) == 0



def test_nearest_people_are_the_k_nearest_with_each_ones_score():
    """The peer APIs' candidates: the k nearest people of each face, nearest first, each scored against his own
    threshold (or the override), the first one being whom `identify` names when it names anyone."""
    rng = np.random.default_rng(8)
    centroids = unit(rng.standard_normal((12, 128)))
    queries = np.concatenate([unit(centroids[:3] + 0.02 * rng.standard_normal((3, 128))),
                              unit(rng.standard_normal((2, 128)))])
    database = FaceDatabase([f"p{i}" for i in range(12)], centroids, "t", rng.integers(1, 6, 12), model="dlib")
    for threshold in (None, 0.9):
        for query, nearest, named in zip(queries, database.nearest_people(queries, 4, threshold),
                                         database.identify(queries, threshold).names, strict=True):
            distances = np.linalg.norm(centroids - query, axis=1)
            order = np.argsort(distances)[:4]
            assert [n for n, _, _ in nearest] == [f"p{i}" for i in order]
            for (_, distance, score), i in zip(nearest, order, strict=True):
                limit = database.thresholds[i] if threshold is None else threshold
                assert distance == pytest.approx(distances[i], abs=1e-5)
                assert score == pytest.approx(match_score(distances[i], limit), abs=1e-3)
            assert named in (UNKNOWN, nearest[0][0])
    assert len(database.nearest_people(queries, 50)[0]) == 12
    assert FaceDatabase([], np.zeros((0, 128)), "t", model="dlib").nearest_people(queries, 3) == [[]] * 5

def test_default_threshold_falls_as_the_gallery_grows():
    sizes = [1, 2, 5, 12, 50, 158, 1_000, 10_000, 100_000, 1_000_000]
    thresholds = [gallery_threshold(p, 1, "dlib") for p in sizes]
    assert all(a > b for a, b in zip(thresholds, thresholds[1:], strict=False)), thresholds
    assert 0.1 < thresholds[-1] < thresholds[0] < VERIFY_THRESHOLD + 0.05
    assert gallery_threshold(12, 3, model="resnet50") == gallery_threshold(12, 3, "dlib")  # borrows dlib's
    with pytest.raises(TypeError):
        gallery_threshold(12, 3)  # the model is required: thresholds differ by model (no silent dlib default)
    # more photos per person: a tighter centroid needs a tighter threshold
    assert gallery_threshold(50, 1, "dlib") > gallery_threshold(50, 3, "dlib") > gallery_threshold(50, 10, "dlib")
    # per-comparison rate keeps the chance of matching anyone at the target
    for people in (1, 12, 1_000_000):
        assert 1 - (1 - comparison_far(people, 0.01)) ** people == pytest.approx(0.01, rel=1e-6)
    rng = np.random.default_rng(1)
    databases = [FaceDatabase([str(i) for i in range(p)], unit(rng.standard_normal((p, 128))), "t", [3] * p,
                              model="dlib")
                 for p in (3, 30, 300)]
    assert databases[0].threshold > databases[1].threshold > databases[2].threshold


def test_a_big_gallery_still_names_a_clear_match():
    """At 5,000 people the size rule reads the stranger tail only where DevTrain measured it (>= 100 pairs) and
    extends it as a Gaussian: a 5-photo person's face at 0.49 (LFW genuine faces sit at 0.40-0.49) is named, one
    at 0.53 (strangers' nearest starts at ~0.55) is not. The old tail, read from LFW's label errors at 1e-6,
    put the threshold at 0.463 and lost such faces as Unknown."""
    for model in ("dlib", "sface", "fused"):
        assert calibration(model).impostor_z[-1][0] >= -4.5  # 10^-4.5 of 5.9 M DevTrain pairs: 187 pairs
    rng = np.random.default_rng(7)
    people = 5_000
    centroids = unit(rng.standard_normal((people, 256)))
    database = FaceDatabase([str(i) for i in range(people)], centroids, "fused:t", [5] * people, model="fused")
    assert 0.50 < database.threshold < 0.52

    def at(distance: float) -> np.ndarray:
        """A face at `distance` from person 0's centroid, orthogonal to it otherwise (far from everyone else)."""
        away = unit(rng.standard_normal((1, 256)))[0]
        away = unit((away - (away @ centroids[0]) * centroids[0])[None])[0]
        cos = 1 - distance**2 / 2
        return unit((cos * centroids[0] + np.sqrt(1 - cos**2) * away)[None])

    assert database.identify(at(0.49)).names == ["0"]
    assert database.identify(at(0.53)).names == [UNKNOWN]


def test_threshold_override_and_score():
    rng = np.random.default_rng(2)
    centroids = unit(rng.standard_normal((5, 128)))
    database = FaceDatabase(list("abcde"), centroids, "t", model="dlib")
    query = unit(centroids[:1] + 0.03 * rng.standard_normal((1, 128)))
    distance = float(np.linalg.norm(query[0] - centroids[0]))
    ((below, _, below_score),) = database.identify(query, threshold=distance + 1e-3)
    ((above, _, above_score),) = database.identify(query, threshold=distance - 1e-3)
    assert below == "a" and above == UNKNOWN
    assert below_score == pytest.approx(50, abs=0.5) and above_score == pytest.approx(50, abs=0.5)
    assert match_score(0.0, 0.4) == 100.0 and match_score(0.4, 0.4) == 50.0 and match_score(2.0, 0.4) < 1
    scores = match_score(np.linspace(0, 2, 50), 0.4)
    assert np.all(np.diff(scores) < 0)


def test_other_dimensions_and_models():
    rng = np.random.default_rng(4)
    centroids = unit(rng.standard_normal((2, 256)))
    fused = FaceDatabase(["a", "b"], centroids, "fused:x", [2, 2], model="fused")
    assert fused.dim == 256 and fused.model == "fused"
    assert fused.identify(centroids[::-1]).names == ["b", "a"]
    assert len(fused.identify(np.zeros((0, 256), np.float32))) == 0
    assert fused.threshold == pytest.approx(gallery_threshold(2, 2, model="fused"))
    empty = FaceDatabase([], np.zeros((0, 256)), "fused:x", model="fused", dim=256)
    assert empty.identify(centroids).names == [UNKNOWN, UNKNOWN]
    with pytest.raises(ValueError, match="2 names for 1 centroids"):
        FaceDatabase(["a", "b"], centroids[:1], "fused:x", model="fused")


def test_distance_scale_multiplies_every_threshold():
    rng = np.random.default_rng(3)
    centroids = rng.normal(size=(4, 128))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    plain = FaceDatabase(["a", "b", "c", "d"], centroids, "x", [1, 2, 3, 3], model="dlib")
    spread = FaceDatabase(["a", "b", "c", "d"], centroids, "x", [1, 2, 3, 3], model="dlib", distance_scale=2.0)
    np.testing.assert_allclose(spread.thresholds, 2.0 * plain.thresholds)
    assert spread.threshold == pytest.approx(2.0 * plain.threshold)
    # a face at 1.5x the plain threshold from "a": Unknown for the calibrated model, "a" for the spread one
    direction = rng.normal(size=128)
    direction -= direction @ centroids[0] * centroids[0]
    direction /= np.linalg.norm(direction)
    d = 1.5 * plain.thresholds[0]
    angle = 2 * np.arcsin(d / 2)
    face = (np.cos(angle) * centroids[0] + np.sin(angle) * direction)[None]
    assert plain.identify(face).names == [UNKNOWN]
    ((name, distance, _),) = spread.identify(face)
    assert name == "a" and distance == pytest.approx(d, abs=1e-4)


def test_a_database_written_by_the_previous_release_is_read_as_it_is(tmp_path, pipeline):
    """tests/data/release_0_3/faces.npz was written by the release before the gallery package (two people, dlib +
    HOG): the new code reuses every stored result (nothing examined again, nothing rebuilt) and names alike."""
    data_dir = tmp_path / "data"
    for person, numbers in (("Juanes", (1, 2)), ("Martha_Burk", (2, 3))):
        (data_dir / person).mkdir(parents=True)
        for n in numbers:
            shutil.copy2(PEOPLE / person / f"{person}_000{n}.jpg", data_dir / person)
    database_dir = tmp_path / "database"
    database_dir.mkdir()
    shutil.copy2(DATA / "release_0_3" / DATABASE_FILE, database_dir / DATABASE_FILE)
    before = read_database(database_dir, pipeline.model_id)
    assert before is not None and before.names == ["Juanes", "Martha_Burk"]
    database, report = sync_database(data_dir, database_dir, pipeline)
    assert report.rebuilt is None and (report.examined, report.reused, report.hashed) == (0, 4, 4)
    assert database.names == before.names and database.photo_counts.tolist() == [2, 2]
    np.testing.assert_allclose(database.centroids, before.centroids, atol=1e-6)
    probe = load_image(PEOPLE / "Juanes" / "Juanes_0003.jpg")
    assert database.identify(pipeline.embed(probe, [pipeline.subject(probe).face])).names == ["Juanes"]


# --------------------------------------------------------------------------- switching models (issue 23)


def weights_named(embedder, number: int):
    """Another model id for the same network (what other trained weights look like to the database)."""
    fingerprint = f"{number:016x}"
    return type(f"Weights{number}", (OtherWeights,), {"fingerprint": fingerprint,
                                                      "model_id": f"dlib:{fingerprint}"})(embedder)


def manifest_of(database_dir: Path) -> dict:
    with np.load(database_dir / DATABASE_FILE, allow_pickle=False) as stored:
        return json.loads(stored["manifest"].tobytes().decode("utf-8"))


def test_switching_back_to_a_model_embeds_nothing(base, copy, pipeline, embedder, detector, embedded_photos):
    data_dir, database_dir = copy
    other = FacePipeline(detector, weights_named(embedder, 1))
    first_b, report = sync_database(data_dir, database_dir, other)
    assert len(embedded_photos) == PHOTOS and report.embedded == PHOTOS and "other weights" in report.rebuilt
    assert report.hashed == 0  # the photo hashes are the folder's, whatever the model
    embedded_photos.clear()
    again_a, report = sync_database(data_dir, database_dir, pipeline)
    assert embedded_photos == [] and (report.embedded, report.examined, report.reused) == (0, 0, PHOTOS)
    assert report.rebuilt is None and report.saved and report.fingerprint == pipeline.model_id
    assert again_a.names == base[2].names and np.array_equal(again_a.centroids, base[2].centroids)
    assert read_database(database_dir, pipeline.model_id).names == base[2].names
    again_b, report = sync_database(data_dir, database_dir, other)
    assert embedded_photos == [] and (report.embedded, report.rebuilt) == (0, None)
    assert again_b.names == first_b.names and np.array_equal(again_b.centroids, first_b.centroids)
    assert [m["fingerprint"] for m in manifest_of(database_dir)["other_models"]] == [pipeline.model_id]


def test_the_file_keeps_the_vectors_of_the_last_models_only(copy, pipeline, embedder, detector, embedded_photos):
    data_dir, database_dir = copy  # synced with the pretrained model (a)
    b, c, d = (FacePipeline(detector, weights_named(embedder, n)) for n in (1, 2, 3))
    for other in (b, c, d):
        sync_database(data_dir, database_dir, other)
    assert len(embedded_photos) == 3 * PHOTOS
    manifest = manifest_of(database_dir)
    assert manifest["fingerprint"] == d.model_id
    assert [m["fingerprint"] for m in manifest["other_models"]] == [c.model_id, b.model_id]  # a, the oldest: gone
    embedded_photos.clear()
    _, report = sync_database(data_dir, database_dir, b)
    assert embedded_photos == [] and report.embedded == 0
    assert [m["fingerprint"] for m in manifest_of(database_dir)["other_models"]] == [d.model_id, c.model_id]
    _, report = sync_database(data_dir, database_dir, pipeline)
    assert len(embedded_photos) == PHOTOS and report.embedded == PHOTOS


def test_a_photo_that_left_leaves_every_models_vectors(copy, pipeline, embedder, detector):
    data_dir, database_dir = copy
    gone = data_dir / "Ada Lovelace" / "Paul_Tagliabue_0001.jpg"
    sha = next(p["sha256"] for p in manifest_of(database_dir)["photos"] if p["path"].endswith(gone.name))
    gone.unlink()
    sync_database(data_dir, database_dir, FacePipeline(detector, weights_named(embedder, 1)))
    (kept,) = manifest_of(database_dir)["other_models"]
    assert kept["fingerprint"] == pipeline.model_id and len(kept["embedded"]) == PHOTOS - 1
    assert sha not in kept["results"] and sha not in kept["embedded"]


def test_damaged_kept_vectors_are_dropped_alone(copy, pipeline, embedder, detector, embedded_photos, caplog):
    data_dir, database_dir = copy
    other = FacePipeline(detector, weights_named(embedder, 1))
    sync_database(data_dir, database_dir, other)
    path = database_dir / DATABASE_FILE
    with np.load(path, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    arrays["other_embeddings_0"] = arrays["other_embeddings_0"][::-1].copy()  # the vectors of other photos
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    embedded_photos.clear()
    with caplog.at_level(logging.WARNING):
        database, report = sync_database(data_dir, database_dir, other)
    assert embedded_photos == [] and report.rebuilt is None and len(database) == 3  # its own vectors still stand
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and pipeline.model_id in warnings[0] and "checksum" in warnings[0]
    assert "other_models" not in manifest_of(database_dir)
    _, report = sync_database(data_dir, database_dir, pipeline)
    assert len(embedded_photos) == PHOTOS and report.embedded == PHOTOS


def test_the_report_gives_the_threshold_of_each_photo_count():
    """A 1-photo person's threshold is looser than a 5-photo person's: the report says both, not one number that
    neither of them gets."""
    rng = np.random.default_rng(3)
    database = FaceDatabase(list("abc"), unit(rng.standard_normal((3, 256))), "fused:t", [1, 3, 5], model="fused")
    report = EnrollmentReport(data_dir="data", database="db")
    report.set_thresholds(database)
    assert report.thresholds_by_photos == {"1": round(gallery_threshold(3, 1, "fused"), 4),
                                           "5": round(gallery_threshold(3, 5, "fused"), 4)}
    assert report.threshold == round(gallery_threshold(3, 3, "fused"), 4)
    assert (f"Default threshold {gallery_threshold(3, 1, 'fused'):.3f} for people with 1 photo to "
            f"{gallery_threshold(3, 5, 'fused'):.3f} with 5 (at most 1% of strangers named)") in report.to_text()
    same = EnrollmentReport(data_dir="data", database="db")
    same.set_thresholds(FaceDatabase(["a"], database.centroids[:1], "fused:t", [2], model="fused"))
    assert same.thresholds_by_photos == {} and f"Default threshold {same.threshold:.3f} (at most" in same.to_text()
