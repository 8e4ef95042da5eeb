"""LFW evaluation: metrics on hand-built distances, pairs files, and the real pipeline on 20 LFW pairs."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facenet.cli.lfw_command import lfw_command
from facenet.eval.lfw import PairsError, evaluate_pairs, parse_pairs, read_pairs
from facenet.eval.metrics import auc, best_threshold, eer, kfold_accuracy, roc, stratified_folds, tar_at_far

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
LFW_SMALL = DATA / "lfw_small"
SMALL_PAIRS = LFW_SMALL / "pairs.txt"
JSON_KEYS = {"accuracy", "accuracy_std", "auc", "eer", "tar_at_far_1e-3", "threshold", "images", "no_face"}


def labelled(same_d: list[float], diff_d: list[float]) -> tuple[np.ndarray, np.ndarray]:
    distances = np.array(same_d + diff_d)
    return distances, np.array([True] * len(same_d) + [False] * len(diff_d))


# --------------------------------------------------------------------------- metrics, closed form


def test_perfectly_separable_pairs_score_perfectly():
    distances, same = labelled([0.1, 0.2, 0.3], [0.5, 0.6, 0.7])
    threshold, accuracy = best_threshold(distances, same)
    assert threshold == pytest.approx(0.4)  # midway in the gap 0.3 .. 0.5
    assert accuracy == 1.0
    assert auc(distances, same) == 1.0
    assert eer(distances, same) == 0.0
    assert tar_at_far(distances, same, 1e-3) == 1.0
    cv = kfold_accuracy(distances, same, [0, 1, 2, 0, 1, 2])
    assert cv.accuracy == 1.0 and cv.std == 0.0


def test_reversed_distances_give_auc_zero():
    distances, same = labelled([0.5, 0.6, 0.7], [0.1, 0.2, 0.3])
    assert auc(distances, same) == 0.0
    assert eer(distances, same) == 1.0
    assert tar_at_far(distances, same, 0.5) == 0.0
    assert best_threshold(distances, same)[1] == 0.5  # accepting all or none: half right


def test_known_overlap_by_hand():
    # ascending: .1S .2S .3S .4D .5D .6S .7D .8D -> cutting between .3 and .4 gets 7 of 8 right
    distances, same = labelled([0.1, 0.2, 0.3, 0.6], [0.4, 0.5, 0.7, 0.8])
    assert best_threshold(distances, same) == (pytest.approx(0.35), 0.875)
    assert auc(distances, same) == pytest.approx(14 / 16)  # 3 matched beat all 4, 0.6 beats 2
    assert eer(distances, same) == pytest.approx(0.25)  # at t=0.4: FAR 1/4, FRR 1/4
    far, tar, thresholds = roc(distances, same)
    np.testing.assert_allclose(far, [0, 0, 0, 0, 0.25, 0.5, 0.5, 0.75, 1])
    np.testing.assert_allclose(tar, [0, 0.25, 0.5, 0.75, 0.75, 0.75, 1, 1, 1])
    assert thresholds[0] == -np.inf and thresholds[-1] == pytest.approx(0.8)
    assert tar_at_far(distances, same, 0.0) == 0.75  # top of the vertical segment at FAR 0
    assert tar_at_far(distances, same, 0.375) == pytest.approx(0.875)  # halfway (0.25, .75) -> (0.5, 1)
    assert tar_at_far(distances, same, 0.375, interpolate=False) == 0.75
    assert tar_at_far(distances, same, 0.5, interpolate=False) == 1.0


def test_best_threshold_takes_the_middle_of_equally_good_cuts():
    # .1S .2D .3S .4D .5S .6D: cutting after .1, .3 or .5 each gets 4 of 6 right
    distances, same = labelled([0.1, 0.3, 0.5], [0.2, 0.4, 0.6])
    assert best_threshold(distances, same) == (pytest.approx(0.35), pytest.approx(4 / 6))


def test_eer_interpolates_between_roc_points_and_ties_count_half():
    # tie at 0.3: the ROC's diagonal step (0, .5) -> (.5, 1) crosses FAR = FRR at (.25, .75)
    distances, same = labelled([0.1, 0.3], [0.3, 0.5])
    assert eer(distances, same) == pytest.approx(0.25)
    assert auc(distances, same) == pytest.approx(3.5 / 4)
    # unequal classes: FAR = FRR = 1/4 halfway up the vertical step at FAR 1/4
    distances, same = labelled([0.1, 0.3], [0.2, 0.4, 0.5, 0.6])
    assert eer(distances, same) == pytest.approx(0.25)


def test_kfold_threshold_comes_from_the_other_folds_only():
    # each fold alone is separable, but at the other fold's threshold each gets one pair wrong
    distances = np.array([0.1, 0.3, 0.5, 0.7])
    same = np.array([True, False, True, False])
    cv = kfold_accuracy(distances, same, [0, 0, 1, 1])
    np.testing.assert_allclose(cv.thresholds, [0.6, 0.2])
    np.testing.assert_allclose(cv.accuracies, [0.5, 0.5])
    assert best_threshold(distances, same)[1] == 0.75  # what a leaky (all-pairs) threshold would claim


def test_kfold_mean_and_population_std():
    distances = np.array([0.1, 0.9, 0.2, 0.8, 0.5, 0.4])
    same = np.array([True, False, True, False, True, False])
    cv = kfold_accuracy(distances, same, [0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(cv.accuracies, [1.0, 1.0, 0.5])
    assert cv.accuracy == pytest.approx(5 / 6)
    assert cv.std == pytest.approx(math.sqrt(1 / 18))


def test_metrics_reject_a_single_class():
    with pytest.raises(ValueError):
        auc([0.1, 0.2], [True, True])


def test_roc_png_and_the_text_report(tmp_path):
    from facenet.cli.lfw_command import format_report
    from facenet.eval.metrics import verification_metrics
    from facenet.eval.plot import save_roc_png

    distances, same = labelled([0.1, 0.2, 0.3, 0.6], [0.4, 0.5, 0.7, 0.8])
    save_roc_png(tmp_path / "roc.png", distances, same, "test")
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = verification_metrics(distances, same, [0, 1, 0, 1, 0, 1, 0, 1])
    report.update(pairs_file="p.txt", matched=4, mismatched=4, images=8, flip=False, fallback={"sensitive": 0,
                  "centre": 1}, threshold_from="cross-validation", protocol="folds of the file", no_face=1,
                  unreadable=0, excluded_pairs=0, roc_png=str(tmp_path / "roc.png"), seconds=1.0, embedded=8,
                  images_per_second=8.0)
    text = format_report(report)
    assert text.startswith("LFW verification on p.txt: 4 matched + 4 mismatched pairs, 8 images\n")
    assert "  AUC            0.8750" in text and f"  ROC curve      {tmp_path / 'roc.png'}" in text
    assert "no face        1 of 8 images: 1 used a centre box" in text


# --------------------------------------------------------------------------- pairs files


def write(tmp_path: Path, text: str, name: str = "pairs.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_view1_file_is_split_into_stratified_folds(tmp_path):
    path = write(tmp_path, "2\nAl_Gore\t1\t2\nBo_Li\t1\t13\nAl_Gore\t1\tBo_Li\t2\nCy_Twombly\t4\tDi\t10\n")
    pairs, folds = read_pairs(path, "/lfw")
    assert [(str(p.a), str(p.b), p.same) for p in pairs] == [
        ("/lfw/Al_Gore/Al_Gore_0001.jpg", "/lfw/Al_Gore/Al_Gore_0002.jpg", True),
        ("/lfw/Bo_Li/Bo_Li_0001.jpg", "/lfw/Bo_Li/Bo_Li_0013.jpg", True),
        ("/lfw/Al_Gore/Al_Gore_0001.jpg", "/lfw/Bo_Li/Bo_Li_0002.jpg", False),
        ("/lfw/Cy_Twombly/Cy_Twombly_0004.jpg", "/lfw/Di/Di_0010.jpg", False),
    ]
    assert folds.tolist() == [0, 1, 0, 1]  # 2 pairs per class -> 2 folds, each with both classes


def test_view2_file_keeps_its_own_folds(tmp_path):
    text = "2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t2\nC\t1\tD\t3\n"
    pairs, folds = read_pairs(write(tmp_path, text), "d")
    assert [p.same for p in pairs] == [True, False, True, False]
    assert folds.tolist() == [0, 0, 1, 1]
    assert parse_pairs(write(tmp_path, text), "d")[2] == 2


def test_stratified_folds_balance_both_classes():
    same = np.array([True] * 25 + [False] * 25)
    folds = stratified_folds(same, 10)
    for fold in range(10):
        assert 2 <= (same & (folds == fold)).sum() <= 3
        assert 2 <= (~same & (folds == fold)).sum() <= 3


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("2\nA\t1\t2\nA\t1\tB\t2\nA\t1\tB\t2\nC\t1\tD\t1\n", 3, "matched"),  # mismatched line among matched
        ("1\nA\t1\tx\nA\t1\tB\t2\n", 2, "positive integer"),
        ("1\nA\t1\t2\nA\t1\tB\n", 3, "mismatched"),
        ("ten\nA\t1\t2\n", 1, "header"),
        ("1\nA\t1\t2\nA\t1\tB\t2\nC\t1\t2\n", 4, "extra line"),
    ],
)
def test_malformed_pairs_file_names_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(PairsError, match=rf"pairs\.txt:{line}: .*{words}"):
        parse_pairs(path)


def test_truncated_pairs_file_is_an_error(tmp_path):
    with pytest.raises(PairsError, match="promises 4 pair lines, the file has 3"):
        parse_pairs(write(tmp_path, "2\nA\t1\t2\nB\t1\t2\nA\t1\tB\t1\n"))


def test_command_exits_2_with_one_line_on_bad_input(tmp_path, capsys):
    bad = write(tmp_path, "1\nA\t1\t2\nA\t1\n")
    common = {"flip": False, "as_json": True, "detector": "hog", "model": "dlib",
              "weights_dir": str(tmp_path / "w"), "roc_png": None}
    cases = [
        (dict(pairs=str(bad), lfw_dir=str(tmp_path)), f"{bad}:3:"),
        (dict(pairs=str(tmp_path / "nope.txt"), lfw_dir=str(tmp_path)), "pairs file not found"),
        (dict(pairs=str(SMALL_PAIRS), lfw_dir=str(tmp_path / "missing")), "LFW image folder not found"),
        (dict(pairs=str(SMALL_PAIRS), lfw_dir=None), "--lfw_dir is required"),
        (dict(pairs=str(SMALL_PAIRS), lfw_dir=str(tmp_path)), "none of the 35 images"),
        (dict(pairs=str(SMALL_PAIRS), lfw_dir=str(LFW_SMALL), train_pairs=str(bad)), f"{bad}:3:"),
    ]
    for args, message in cases:
        assert lfw_command(**args, **common) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert len(err.strip().splitlines()) == 1 and message in err, err


# --------------------------------------------------------------------------- real photos


def test_centre_choice_prefers_the_centre_face_to_the_larger_bystander(pipeline, detector):
    from facenet.images import load_image

    subject = load_image(LFW_SMALL / "Al_Pacino/Al_Pacino_0001.jpg")
    bystander = np.kron(load_image(LFW_SMALL / "Adel_Al-Jubeir/Adel_Al-Jubeir_0001.jpg"), np.ones((2, 2, 1), np.uint8))
    canvas = np.full((500, 1250, 3), 255, np.uint8)
    canvas[:, :500] = bystander  # 500x500, its face twice the size of the subject's
    canvas[125:375, 500:750] = subject  # 250x250 in the middle
    faces = detector.detect(canvas)
    assert len(faces) == 2
    chosen = pipeline.subject(canvas, "centre", last_resort=True)
    assert chosen.how == "detected" and chosen.faces == 2
    centre_x = (chosen.face.box[0] + chosen.face.box[2]) / 2
    assert 500 <= centre_x < 750
    assert faces[0].box != chosen.face.box  # the largest face is the bystander's
    assert pipeline.subject(canvas).face.box == faces[0].box  # what enrollment ("largest") would take


def test_batched_flip_embeddings_equal_per_image_tta(pipeline):
    from facenet.eval.lfw import embed_images
    from facenet.images import load_image

    paths = sorted(LFW_SMALL.glob("Albert_Costa/*.jpg"))[:3]
    batched = pipeline.embed_photos(paths, "centre", last_resort=True, tta=True, chunk=2)  # two flushes
    found = embed_images(paths, pipeline, flip=True)
    assert set(found.vectors) == set(paths) and found.recovered == {} and found.failed == {}
    for path in paths:
        image = load_image(path)
        face = pipeline.subject(image, "centre", last_resort=True).face
        expected = pipeline.embed(image, [face], tta=True)[0]
        np.testing.assert_allclose(batched[path].vector, expected, atol=1e-5)
        np.testing.assert_allclose(found.vectors[path], expected, atol=1e-5)
        assert np.linalg.norm(found.vectors[path]) == pytest.approx(1.0, abs=1e-5)
        plain = pipeline.embed(image, [face])[0]
        assert not np.allclose(plain, expected, atol=1e-4)  # flip really averaged something


def test_unreadable_image_excludes_its_pairs(tmp_path, pipeline, caplog):
    lfw = tmp_path / "lfw"
    shutil.copytree(LFW_SMALL, lfw)
    broken = lfw / "Albert_Costa/Albert_Costa_0006.jpg"
    broken.write_bytes(broken.read_bytes()[:300])  # a truncated JPEG
    pairs, folds = read_pairs(lfw / "pairs.txt", lfw)
    uses_broken = sum(broken in (p.a, p.b) for p in pairs)
    assert uses_broken == 3
    report, distances, same = evaluate_pairs(pairs, folds, pipeline)
    assert report["unreadable"] == 1 and report["images"] == 34
    assert report["excluded_pairs"] == uses_broken and report["pairs"] == len(pairs) - uses_broken
    assert len(distances) == report["pairs"] == len(same)
    assert any("Albert_Costa_0006.jpg" in r.getMessage() for r in caplog.records)
    # Alan_Greenspan_0001 is missed by HOG's first pass and found by its sensitive pass (one more upsampling)
    assert report["no_face"] == 1 and report["fallback"] == {"sensitive": 1, "centre": 0}
    assert report["accuracy"] >= 0.9
    assert np.median(distances[same]) < report["threshold"] < np.median(distances[~same])
    assert (report["detector"], report["model"], report["model_id"]) == ("hog", "dlib", pipeline.model_id)
    assert report["model_id"].startswith("dlib:")


def test_a_faceless_image_gets_the_centre_box(tmp_path, pipeline, caplog):
    from facenet.eval.lfw import embed_images

    caplog.set_level("INFO", logger="facenet.eval.lfw")
    faceless = tmp_path / "rocket.jpg"
    shutil.copy2(DATA / "misc" / "rocket.jpg", faceless)
    found = embed_images([faceless, LFW_SMALL / "Alan_Greenspan/Alan_Greenspan_0001.jpg"], pipeline)
    assert len(found.vectors) == 2 and found.failed == {}
    assert found.recovered == {faceless: "centre", LFW_SMALL / "Alan_Greenspan/Alan_Greenspan_0001.jpg": "sensitive"}
    assert "rocket.jpg: no face found by hog; used a centre box" in caplog.text


def test_threshold_from_train_pairs_is_applied_to_the_test_pairs(pipeline):
    pairs, folds = read_pairs(SMALL_PAIRS, LFW_SMALL)
    train, test = pairs[:5] + pairs[10:15], pairs[5:10] + pairs[15:]  # 5 + 5 pairs each
    report, distances, same = evaluate_pairs(test, stratified_folds([p.same for p in test], 5), pipeline,
                                             train_pairs=train)
    train_report, train_distances, train_same = evaluate_pairs(train, stratified_folds([p.same for p in train], 5),
                                                               pipeline)
    assert report["threshold"] == pytest.approx(train_report["best_threshold"])
    assert report["accuracy"] == pytest.approx(np.mean((distances <= report["threshold"]) == same))
    assert report["train_pairs"] == 10 and report["pairs"] == 10
    assert report["images"] == len({p for pair in test for p in pair[:2]})


def test_command_with_unusable_trained_weights_exits_1_with_one_line(tmp_path, weights_dir, embedder, capsys):
    from facenet.models.trained import trained_weights_path

    folder = tmp_path / "w"
    shutil.copytree(weights_dir, folder)
    corrupt = trained_weights_path(tmp_path, "dlib")  # the gallery tmp_path's trained weights
    corrupt.write_bytes(b"garbage")
    code = lfw_command(pairs=str(SMALL_PAIRS), lfw_dir=str(LFW_SMALL), flip=False, as_json=True, detector="hog",
                       model="dlib", weights_dir=str(folder), roc_png=None, trained_dir=str(tmp_path))
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and str(corrupt) in line and "--pretrained" in line


def test_cli_json_report_on_real_pairs(tmp_path, weights_dir, embedder):
    assert (weights_dir / "dlib_resnet_pretrained.keras").exists()  # converted once by the session fixture
    roc_png = tmp_path / "roc.png"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--lfw_pairs", str(SMALL_PAIRS), "--lfw_dir", str(LFW_SMALL),
         "--json", "--flip", "--weights_path", str(weights_dir), "--roc_png", str(roc_png), "--model", "dlib",
         "-d", "hog"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # stdout carries exactly one JSON object
    report = json.loads(lines[0])
    assert report.keys() >= JSON_KEYS
    assert report["images"] == 35 and report["pairs"] == 20 and report["flip"] is True
    assert report["no_face"] == 1 and report["fallback"] == {"sensitive": 1, "centre": 0}
    assert (report["model"], report["detector"]) == ("dlib", "hog") and report["model_id"] == embedder.model_id
    assert report["accuracy"] >= 0.9
    assert 0 <= report["accuracy_std"] <= 0.5
    assert report["auc"] >= 0.95 and report["eer"] <= 0.1
    assert 0.2 < report["threshold"] < 0.7
    assert 0 <= report["tar_at_far_1e-3"] <= 1
    assert roc_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy" in result.stderr and "AUC" in result.stderr  # the human report went to stderr
