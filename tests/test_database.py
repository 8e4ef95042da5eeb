"""The enrollment database on real photos: enrollment, lookup, incremental sync, bad input, crash safety."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import facenet.database
from facenet.config import DATABASE_FILE, ENROLLMENT_REPORT, UNKNOWN, VERIFY_THRESHOLD
from facenet.database import (
    FaceDatabase,
    Match,
    comparison_far,
    gallery_threshold,
    load_database,
    match_score,
    sync_database,
)
from facenet.images import load_image

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


def face_embedding(path: Path, embedder, detector) -> np.ndarray:
    image = load_image(path)
    faces = detector.detect(image)
    assert faces, path
    return embedder.embed_faces(image, faces[:1])


@pytest.fixture(scope="module")
def base(tmp_path_factory, embedder, detector):
    """The GALLERY enrolled once: (data_dir, database_dir, database, report, data snapshot taken before)."""
    root = tmp_path_factory.mktemp("base")
    data_dir = make_data(root / "data", GALLERY)
    before = snapshot(data_dir)
    database, report = sync_database(data_dir, root / "database", embedder, detector)
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

    def __init__(self, embedder) -> None:
        self._embedder = embedder

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return self._embedder.embed(chips)


# --------------------------------------------------------------------------- enrollment and lookup


def test_enrolls_and_names_held_out_photos(base, embedder, detector):
    _, database_dir, database, report, _ = base
    assert database.names == sorted(GALLERY)
    assert database.centroids.shape == (3, 128)
    assert np.allclose(np.linalg.norm(database.centroids, axis=1), 1.0, atol=1e-5)
    assert report.embedded == report.examined == PHOTOS and report.reused == 0
    assert {name: len(paths) for name, paths in report.people.items()} == {n: len(p) for n, p in GALLERY.items()}
    assert report.skipped == [] and report.not_enrolled == []
    for name, photo in HELD_OUT.items():
        (match,) = database.identify(face_embedding(photo, embedder, detector))
        assert match.name == name, (photo, match)
        assert match.distance < database.threshold and match.score > 50
    for photo in STRANGERS:
        (match,) = database.identify(face_embedding(photo, embedder, detector))
        assert match.name == UNKNOWN, (photo, match)
        assert match.distance > database.threshold and match.score < 50


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
    loaded = load_database(database_dir)
    assert loaded.names == sorted(GALLERY)
    assert np.allclose(loaded.centroids, base[2].centroids)


def test_data_dir_bytes_and_mtimes_unchanged(base, embedder, detector):
    data_dir, database_dir, _, _, before = base
    assert snapshot(data_dir) == before
    sync_database(data_dir, database_dir, embedder, detector)
    assert snapshot(data_dir) == before


# --------------------------------------------------------------------------- incremental sync


def test_unchanged_data_recomputes_nothing(base, copy, embedder, detector):
    data_dir, database_dir = copy
    written = (database_dir / DATABASE_FILE).read_bytes()
    database, report = sync_database(data_dir, database_dir, embedder, detector)
    assert (report.embedded, report.examined, report.hashed, report.pruned) == (0, 0, 0, 0)
    assert report.reused == PHOTOS and not report.saved
    assert (database_dir / DATABASE_FILE).read_bytes() == written
    assert np.array_equal(database.centroids, base[2].centroids)


def test_added_photo_is_the_only_one_embedded(base, copy, embedder, detector):
    data_dir, database_dir = copy
    shutil.copy2(HELD_OUT["Ada Lovelace"], data_dir / "Ada Lovelace")
    database, report = sync_database(data_dir, database_dir, embedder, detector)
    assert (report.embedded, report.reused) == (1, PHOTOS)
    assert len(report.people["Ada Lovelace"]) == 4
    assert database.photo_counts[database.names.index("Ada Lovelace")] == 4
    row = database.names.index("Ada Lovelace")
    assert not np.allclose(database.centroids[row], base[2].centroids[row])
    # and the saved file now holds it: another sync embeds nothing
    assert sync_database(data_dir, database_dir, embedder, detector)[1].embedded == 0


def test_removed_photo_and_person_are_pruned(copy, embedder, detector):
    data_dir, database_dir = copy
    (data_dir / "Ada Lovelace" / "Paul_Tagliabue_0003.jpg").unlink()
    shutil.rmtree(data_dir / "José Ñúñez")
    database, report = sync_database(data_dir, database_dir, embedder, detector)
    assert database.names == ["Ada Lovelace", "Martha Burk"]
    assert report.embedded == 0 and report.pruned == 3
    assert report.people["Ada Lovelace"] == [f"Ada Lovelace/Paul_Tagliabue_000{i}.jpg" for i in (1, 2)]
    assert load_database(database_dir).names == ["Ada Lovelace", "Martha Burk"]


def test_renamed_and_moved_photos_are_not_recomputed(base, copy, embedder, detector):
    data_dir, database_dir = copy
    (data_dir / "Ada Lovelace").rename(data_dir / "Ada King")
    (data_dir / "Martha Burk" / "2003").mkdir()
    (data_dir / "Martha Burk" / "Martha_Burk_0002.jpg").rename(data_dir / "Martha Burk" / "2003" / "renamed.jpg")
    database, report = sync_database(data_dir, database_dir, embedder, detector)
    assert report.embedded == 0 and report.examined == 0 and report.reused == PHOTOS
    assert report.hashed == 4  # the three moved with their folder and the renamed one: read, not recomputed
    assert database.names == ["Ada King", "José Ñúñez", "Martha Burk"]
    old = base[2]
    assert np.allclose(database.centroids[0], old.centroids[old.names.index("Ada Lovelace")])
    assert "Martha Burk/2003/renamed.jpg" in report.people["Martha Burk"]


def test_changed_photo_is_embedded_again(copy, embedder, detector):
    data_dir, database_dir = copy
    target = data_dir / "Ada Lovelace" / "Paul_Tagliabue_0001.jpg"
    target.write_bytes(HELD_OUT["Ada Lovelace"].read_bytes())
    _, report = sync_database(data_dir, database_dir, embedder, detector)
    assert (report.embedded, report.reused, report.pruned) == (1, PHOTOS - 1, 1)


# --------------------------------------------------------------------------- rebuilds and crash safety


def test_other_weights_rebuild_everything(copy, embedder, detector, caplog):
    data_dir, database_dir = copy
    with caplog.at_level(logging.INFO, logger="facenet.database"):
        database, report = sync_database(data_dir, database_dir, OtherWeights(embedder), detector)
    assert report.embedded == PHOTOS and report.reused == 0
    assert "other weights" in report.rebuilt
    assert any("other weights" in r.getMessage() for r in caplog.records)
    assert database.fingerprint == OtherWeights.fingerprint == load_database(database_dir).fingerprint


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other version"])
def test_corrupt_database_is_rebuilt_with_one_warning(copy, embedder, detector, caplog, damage):
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
        database, report = sync_database(data_dir, database_dir, embedder, detector)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and DATABASE_FILE in warnings[0].getMessage(), warnings
    assert report.rebuilt.startswith("unreadable") and report.embedded == PHOTOS
    assert load_database(database_dir).names == sorted(GALLERY)


def test_crash_mid_write_leaves_the_previous_database(base, copy, embedder, detector, monkeypatch):
    data_dir, database_dir = copy
    before = (database_dir / DATABASE_FILE).read_bytes()
    shutil.copy2(HELD_OUT["Ada Lovelace"], data_dir / "Ada Lovelace")

    class Killed(BaseException):
        pass

    def dies_half_way(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip file")
        raise Killed

    monkeypatch.setattr(facenet.database.np, "savez", dies_half_way)
    with pytest.raises(Killed):
        sync_database(data_dir, database_dir, embedder, detector)
    monkeypatch.undo()
    assert (database_dir / DATABASE_FILE).read_bytes() == before
    assert load_database(database_dir).names == sorted(GALLERY)
    # a temp file left by a harder crash (kill -9) is ignored too
    (database_dir / f".{Path(DATABASE_FILE).stem}.x1y2z3.npz").write_bytes(b"PK\x03\x04 half")
    _, report = sync_database(data_dir, database_dir, embedder, detector)
    assert (report.embedded, report.reused, report.rebuilt) == (1, PHOTOS, None)


def test_unwritable_database_dir_warns_and_goes_on(copy, embedder, detector, caplog, monkeypatch):
    data_dir, database_dir = copy
    shutil.copy2(HELD_OUT["Ada Lovelace"], data_dir / "Ada Lovelace")

    def disk_full(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(facenet.database, "atomic_write", disk_full)
    with caplog.at_level(logging.WARNING):
        database, report = sync_database(data_dir, database_dir, embedder, detector)
    assert len(database) == 3 and report.embedded == 1
    assert any("could not save" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- bad input


def test_bad_photos_are_skipped_with_reasons(tmp_path, embedder, detector, caplog):
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
        database, report = sync_database(data_dir, tmp_path / "database", embedder, detector)
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert set(reasons) == {"Broken Person/empty.jpg", "Broken Person/truncated.jpg", "Broken Person/notes.jpg",
                            "Dog/dogs.jpg"}
    assert reasons["Broken Person/empty.jpg"] == "unreadable: empty file (0 bytes)"
    assert reasons["Broken Person/truncated.jpg"].startswith("unreadable: ")
    assert reasons["Broken Person/notes.jpg"].startswith("unreadable: ")
    assert reasons["Dog/dogs.jpg"] == "no face"
    assert report.not_enrolled == ["Broken Person", "Dog"] and database.names == ["Ada Lovelace"]
    assert report.ignored == ["loose.jpg"]
    messages = "\n".join(r.getMessage() for r in caplog.records)
    for name in ("empty.jpg", "truncated.jpg", "notes.jpg", "dogs.jpg", "Broken Person", "data folder ignored"):
        assert name in messages
    assert "readme" not in json.dumps(report.to_dict()) and "junk" not in messages
    assert snapshot(data_dir) == before
    # their verdicts are remembered: a second sync reads nothing again
    _, again = sync_database(data_dir, tmp_path / "database", embedder, detector)
    assert again.examined == 0 and again.skipped == report.skipped


def test_mislabeled_photo_is_flagged(copy, embedder, detector):
    data_dir, database_dir = copy
    shutil.copy2(HELD_OUT["Martha Burk"], data_dir / "Ada Lovelace" / "holiday.jpg")
    _, report = sync_database(data_dir, database_dir, embedder, detector)
    assert [(s["path"], s["closer_to"]) for s in report.mislabeled] == [("Ada Lovelace/holiday.jpg", "Martha Burk")]
    (flag,) = report.mislabeled
    assert flag["distance_to_other"] < flag["distance"]
    assert "Likely mislabeled" in report.to_text()


def test_photo_of_someone_else_is_far_from_own_centroid(tmp_path, embedder, detector):
    gallery = {"Ada Lovelace": [*GALLERY["Ada Lovelace"], STRANGERS[0]]}
    _, report = sync_database(make_data(tmp_path / "data", gallery), tmp_path / "db", embedder, detector)
    assert [s["path"] for s in report.far_from_own] == ["Ada Lovelace/Mary_Carey_0001.jpg"]
    assert report.far_from_own[0]["distance"] > VERIFY_THRESHOLD


def test_empty_or_missing_data_dir(tmp_path, embedder, detector, caplog):
    (tmp_path / "data").mkdir()
    database, report = sync_database(tmp_path / "data", tmp_path / "database", embedder, detector)
    assert len(database) == 0 and report.people == {} and report.embedded == 0
    matches = database.identify(np.eye(3, 128, dtype=np.float32))
    assert [m.name for m in matches] == [UNKNOWN] * 3 and all(m.score < 50 for m in matches)
    assert database.identify(np.zeros((0, 128), np.float32)) == []
    assert load_database(tmp_path / "database").names == []
    with caplog.at_level(logging.WARNING):
        missing, _ = sync_database(tmp_path / "nowhere", tmp_path / "database", embedder, detector)
    assert len(missing) == 0 and "not found" in caplog.text
    assert not (tmp_path / "nowhere").exists()


# --------------------------------------------------------------------------- lookup maths


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_identify_matches_a_brute_force_loop():
    rng = np.random.default_rng(7)
    centroids = unit(rng.standard_normal((40, 128)))
    near = unit(centroids[rng.integers(0, 40, 15)] + 0.02 * rng.standard_normal((15, 128)))
    queries = np.concatenate([near, unit(rng.standard_normal((10, 128)))])
    database = FaceDatabase([f"person {i}" for i in range(40)], centroids, "test", rng.integers(1, 6, 40))
    for threshold in (None, 0.9, 1.3):
        matches = database.identify(queries, threshold)
        assert len(matches) == len(queries)
        for query, match in zip(queries, matches, strict=True):
            distances = [float(np.linalg.norm(query - c)) for c in centroids]
            best = int(np.argmin(distances))
            limit = database.thresholds[best] if threshold is None else threshold
            expected = database.names[best] if distances[best] <= limit else UNKNOWN
            assert match == Match(expected, pytest.approx(distances[best], abs=1e-5),
                                  pytest.approx(match_score(distances[best], limit), abs=1e-3))
    assert {m.name for m in database.identify(near)} != {UNKNOWN}
    assert {m.name for m in database.identify(queries[15:])} == {UNKNOWN}
    assert database.identify(np.zeros((0, 128), np.float32)) == []


def test_default_threshold_falls_as_the_gallery_grows():
    sizes = [1, 2, 5, 12, 50, 158, 1_000, 10_000, 100_000, 1_000_000]
    thresholds = [gallery_threshold(p) for p in sizes]
    assert all(a > b for a, b in zip(thresholds, thresholds[1:], strict=False)), thresholds
    assert 0.1 < thresholds[-1] < thresholds[0] < VERIFY_THRESHOLD + 0.05
    # more photos per person: a tighter centroid needs a tighter threshold
    assert gallery_threshold(50, 1) > gallery_threshold(50, 3) > gallery_threshold(50, 10)
    # per-comparison rate keeps the chance of matching anyone at the target
    for people in (1, 12, 1_000_000):
        assert 1 - (1 - comparison_far(people, 0.01)) ** people == pytest.approx(0.01, rel=1e-6)
    rng = np.random.default_rng(1)
    databases = [FaceDatabase([str(i) for i in range(p)], unit(rng.standard_normal((p, 128))), "t", [3] * p)
                 for p in (3, 30, 300)]
    assert databases[0].threshold > databases[1].threshold > databases[2].threshold


def test_threshold_override_and_score():
    rng = np.random.default_rng(2)
    centroids = unit(rng.standard_normal((5, 128)))
    database = FaceDatabase(list("abcde"), centroids, "t")
    query = unit(centroids[:1] + 0.03 * rng.standard_normal((1, 128)))
    distance = float(np.linalg.norm(query[0] - centroids[0]))
    (below,) = database.identify(query, threshold=distance + 1e-3)
    (above,) = database.identify(query, threshold=distance - 1e-3)
    assert below.name == "a" and above.name == UNKNOWN
    assert below.score == pytest.approx(50, abs=0.5) and above.score == pytest.approx(50, abs=0.5)
    assert match_score(0.0, 0.4) == 100.0 and match_score(0.4, 0.4) == 50.0 and match_score(2.0, 0.4) < 1
    scores = match_score(np.linspace(0, 2, 50), 0.4)
    assert np.all(np.diff(scores) < 0)


def test_distance_scale_multiplies_every_threshold():
    rng = np.random.default_rng(3)
    centroids = rng.normal(size=(4, 128))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    plain = FaceDatabase(["a", "b", "c", "d"], centroids, "x", [1, 2, 3, 3])
    spread = FaceDatabase(["a", "b", "c", "d"], centroids, "x", [1, 2, 3, 3], distance_scale=2.0)
    np.testing.assert_allclose(spread.thresholds, 2.0 * plain.thresholds)
    assert spread.threshold == pytest.approx(2.0 * plain.threshold)
    # a face at 1.5x the plain threshold from "a": Unknown for the calibrated model, "a" for the spread one
    direction = rng.normal(size=128)
    direction -= direction @ centroids[0] * centroids[0]
    direction /= np.linalg.norm(direction)
    d = 1.5 * plain.thresholds[0]
    angle = 2 * np.arcsin(d / 2)
    face = (np.cos(angle) * centroids[0] + np.sin(angle) * direction)[None]
    assert plain.identify(face)[0].name == UNKNOWN
    match = spread.identify(face)[0]
    assert match.name == "a" and match.distance == pytest.approx(d, abs=1e-4)
