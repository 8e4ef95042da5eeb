"""The default pipeline (YuNet + fused dlib/SFace) on real photos: identities, the fused geometry, model switching,
disagreeing branches, the TFLite copy, and the public API (`facenet.verify`, `facenet.Gallery`, verbs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import facenet
from facenet.config import FUSION_SFACE_WEIGHT, UNKNOWN
from facenet.gallery.file import DATABASE_FILE, sync_database
from facenet.gallery.index import FaceDatabase
from facenet.gallery.thresholds import calibration
from facenet.images import load_image
from facenet.models.embed import Embedder
from facenet.models.vectors import normalize
from facenet.pipeline import FacePipeline

DATA = Path(__file__).parent / "data"
PEOPLE, MISC = DATA / "people", DATA / "misc"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fused(weights_dir) -> FacePipeline:
    return facenet.face_pipeline(weights_dir=weights_dir)


def make_gallery(root: Path, people: dict[str, list[str]]) -> Path:
    for name, photos in people.items():
        (root / name).mkdir(parents=True)
        for photo in photos:
            shutil.copy2(PEOPLE / name / photo, root / name / photo)
    return root


GALLERY = {
    "Juanes": ["Juanes_0001.jpg", "Juanes_0002.jpg"],
    "Martha_Burk": ["Martha_Burk_0001.jpg", "Martha_Burk_0002.jpg", "Martha_Burk_0003.jpg"],
    "Paul_Tagliabue": ["Paul_Tagliabue_0001.jpg", "Paul_Tagliabue_0002.jpg"],
}


def test_default_pipeline_is_yunet_and_fused_256_d(fused):
    assert (fused.detector.kind, fused.model, fused.embedder.kinds, fused.embedder.dim) == \
        ("yunet", "fused", ("dlib", "sface"), 256)
    image = load_image(MISC / "2008_001322.jpg")
    faces = fused.detect(image)
    assert len(faces) == 3 and all(f.shape is not None and f.points is not None for f in faces)
    vectors = fused.embed(image, faces)
    assert vectors.shape == (3, 256) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_fused_vector_is_the_weighted_concatenation_of_the_branches(fused, weights_dir):
    image = load_image(PEOPLE / "Juanes" / "Juanes_0003.jpg")
    faces = fused.detect(image)
    chips = fused.chips(image, faces[:1])
    dlib = Embedder(facenet.face_pipeline(model="dlib", weights_dir=weights_dir).embedder.model, "dlib")
    sface = Embedder(facenet.face_pipeline(model="sface", weights_dir=weights_dir).embedder.model, "sface")
    expected = normalize(np.concatenate([dlib.embed(chips), FUSION_SFACE_WEIGHT * sface.embed(chips)], axis=1))
    assert np.abs(fused.embed(image, faces[:1]) - expected).max() < 1e-4


def test_tflite_copy_matches_the_keras_model(fused):
    image = load_image(MISC / "two_people.jpg")
    chips = fused.chips(image, fused.detect(image))
    keras_run = Embedder(fused.embedder.model, "fused").embed(chips)
    assert np.abs(fused.embedder.embed(chips) - keras_run).max() < 1e-4


def test_default_gallery_names_held_out_photos_and_rejects_strangers(fused, weights_dir, tmp_path):
    data = make_gallery(tmp_path / "data", GALLERY)
    database, report = sync_database(data, tmp_path / "db", fused)
    assert database.model == "fused" and database.dim == 256 and len(database) == 3
    held_out = {"Juanes": "Juanes_0003.jpg", "Martha_Burk": "Martha_Burk_0004.jpg",
                "Paul_Tagliabue": "Paul_Tagliabue_0003.jpg"}
    for name, photo in held_out.items():
        vector = facenet.embed_face(PEOPLE / name / photo, weights_dir=weights_dir)
        assert database.identify(vector).names == [name]
    for stranger in ("Mary_Carey/Mary_Carey_0001.jpg", "George_Clooney/George_Clooney_0001.jpg"):
        vector = facenet.embed_face(PEOPLE / stranger, weights_dir=weights_dir)
        assert database.identify(vector).names == [UNKNOWN]


def test_switching_model_rebuilds_the_database(fused, weights_dir, tmp_path):
    data = make_gallery(tmp_path / "data", {"Juanes": GALLERY["Juanes"]})
    first, report = sync_database(data, tmp_path / "db", fused)
    assert report.saved and report.examined == 2
    _, again = sync_database(data, tmp_path / "db", fused)
    assert not again.saved and again.examined == 0
    dlib = facenet.face_pipeline(model="dlib", weights_dir=weights_dir)
    switched, report = sync_database(data, tmp_path / "db", dlib)
    assert report.rebuilt and "other weights" in report.rebuilt and report.examined == 2
    assert switched.model == "dlib" and switched.dim == 128
    with np.load(tmp_path / "db" / DATABASE_FILE) as stored:
        manifest = json.loads(stored["manifest"].tobytes())
        assert manifest["model"] == "dlib" and stored["centroids"].shape == (1, 128)


def test_when_the_branches_disagree_the_fused_distance_decides():
    """docs/models.md: a face is named by the fused distance (dlib weighs 1, SFace FUSION_SFACE_WEIGHT), never by one
    branch's vote. Here dlib says A and SFace says B, equally strongly: the heavier dlib branch wins."""
    rng = np.random.default_rng(0)
    a_dlib, b_dlib, a_sface, b_sface = normalize(rng.standard_normal((4, 128)))
    centroids = normalize(np.stack([np.r_[a_dlib, FUSION_SFACE_WEIGHT * a_sface],
                                    np.r_[b_dlib, FUSION_SFACE_WEIGHT * b_sface]]))
    database = FaceDatabase(["A", "B"], centroids, "test", [5, 5], model="fused")
    query = normalize(np.r_[normalize(a_dlib + 0.3 * b_dlib), FUSION_SFACE_WEIGHT * normalize(b_sface + 0.3 * a_sface)])
    ((name, distance, _),) = database.identify(query, threshold=2.0)
    assert FUSION_SFACE_WEIGHT < 1 and name == "A"
    assert distance == pytest.approx(np.sqrt(2 - 2 * float(centroids[0] @ query)), abs=1e-5)


def test_verify_api_same_and_different(weights_dir):
    same = facenet.verify(PEOPLE / "Juanes" / "Juanes_0001.jpg", PEOPLE / "Juanes" / "Juanes_0003.jpg",
                          weights_dir=weights_dir)
    other = facenet.verify(PEOPLE / "Juanes" / "Juanes_0001.jpg", PEOPLE / "Mary_Carey" / "Mary_Carey_0001.jpg",
                           weights_dir=weights_dir)
    assert same.same and not other.same
    assert same.threshold == pytest.approx(calibration("fused").verify_threshold)
    assert same.distance < same.threshold < other.distance


def test_verify_api_accepts_arrays_and_raises_for_no_face(weights_dir):
    array = load_image(PEOPLE / "Juanes" / "Juanes_0002.jpg")
    assert facenet.verify(array, PEOPLE / "Juanes" / "Juanes_0001.jpg", weights_dir=weights_dir).same
    with pytest.raises(facenet.NoFaceError, match="rocket.jpg"):
        facenet.verify(MISC / "rocket.jpg", array, weights_dir=weights_dir)
    with pytest.raises(facenet.ImageError, match="truncated.jpg"):
        facenet.verify(MISC / "truncated.jpg", array, weights_dir=weights_dir)


def test_gallery_api_recognizes_every_face_largest_first(weights_dir, tmp_path):
    data = make_gallery(tmp_path / "data", GALLERY)
    gallery = facenet.Gallery(data, tmp_path / "db", weights_dir=weights_dir)
    assert gallery.people == sorted(GALLERY) and gallery.report.examined == 7
    photo = PEOPLE / "Martha_Burk" / "Martha_Burk_0004.jpg"  # Martha and a bystander
    matches = gallery.recognize(photo)
    assert all(type(m) is facenet.Recognition and m.track is None for m in matches)  # the one face record
    assert matches[0].name == "Martha_Burk" and matches[0].score > 50
    assert [m.box for m in matches] == [f.box for f in facenet.detect_faces(photo, weights_dir=weights_dir)]
    areas = [(m.box[2] - m.box[0]) * (m.box[3] - m.box[1]) for m in matches]
    assert areas == sorted(areas, reverse=True)
    assert [m.name for m in gallery.recognize(MISC / "dogs.jpg")] == []
    assert set(gallery.embeddings()) == set(GALLERY)


def test_lower_level_verbs_share_one_pipeline(weights_dir):
    faces = facenet.detect_faces(MISC / "two_people.jpg", weights_dir=weights_dir)
    assert len(faces) == 2
    vectors = facenet.embed_faces(MISC / "two_people.jpg", faces, weights_dir=weights_dir)
    assert vectors.shape == (2, 256)
    assert facenet.face_pipeline(weights_dir=weights_dir) is facenet.face_pipeline(weights_dir=weights_dir)


def test_cli_defaults_name_the_person_from_another_folder(tmp_path):
    """`python /elsewhere/main.py … --json` with the default model, detector and weights folder (the checkout's),
    run from another folder: names the person and creates no weights/ there."""
    data = make_gallery(tmp_path / "data", {"Juanes": GALLERY["Juanes"], "Martha_Burk": GALLERY["Martha_Burk"]})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "-t", "False", "-wc", "False", "--data_dir", str(data),
         "--database_dir", str(tmp_path / "db"), "--input", str(PEOPLE / "Juanes" / "Juanes_0003.jpg"), "--json",
         "--output_dir", str(tmp_path / "out")],
        cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (record,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert record["name"] == "Juanes" and record["score"] > 50
    assert list(elsewhere.iterdir()) == []
