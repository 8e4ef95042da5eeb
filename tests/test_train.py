"""Training: chip cache (memory-mapped), validation split and pairs, P x K batches, augmentation, the steps of every
loss, the guard, the plots, the CLI."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import facenet.train as training
import facenet.train.fine_tune as fine_tune_module
import facenet.train.loop as loop
import facenet.train.validation as validation
from facenet.cli.train_command import chosen_loss, train_command
from facenet.config import CHIP_SIZE
from facenet.detect.dlib import face_chip
from facenet.eval.visualize import pca_2d, save_pca_plot
from facenet.gallery.file import read_database
from facenet.gallery.thresholds import calibration, gallery_threshold
from facenet.images import load_image
from facenet.models.build import build_embedder
from facenet.models.cache import fingerprint
from facenet.models.embed import Embedder
from facenet.models.trained import distance_scale, read_trained, save_trained_weights, trained_weights_path
from facenet.train import (
    CHIPS_CACHE_FILE,
    LOSSES,
    TrainingError,
    augment_chip,
    load_chips,
    loss_settings,
    make_dataset,
    pk_batches,
    split_validation,
    validation_pairs,
    verification_metrics,
)
from facenet.train.margin import DEFAULTS, NormalizedClassifier

DATA = Path(__file__).parent / "data"
PEOPLE, MISC = DATA / "people", DATA / "misc"
ROOT = Path(__file__).parent.parent
TINY = ("Adel_Al-Jubeir", "Barbra_Streisand", "Jon_Voight", "Juanes")
VERIFY_THRESHOLD = calibration("dlib").verify_threshold
SINGLE = "Martha_Burk"


def make_data_dir(root: Path) -> Path:
    """4 people x 3 photos, and one person with a single photo."""
    data = root / "data"
    for name in TINY:
        shutil.copytree(PEOPLE / name, data / name)
    (data / SINGLE).mkdir(parents=True)
    shutil.copy(PEOPLE / SINGLE / f"{SINGLE}_0001.jpg", data / SINGLE)
    return data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, pipeline) -> tuple[Path, training.ChipSet]:
    """The tiny data folder and its chips, read back from a chip cache (memory maps, as training reads them)."""
    root = tmp_path_factory.mktemp("tiny")
    data = make_data_dir(root)
    return data, load_chips(data, pipeline, root / "db" / CHIPS_CACHE_FILE)


def test_the_package_keeps_the_names_of_the_single_module():
    """facenet.train became a package of stage modules: the old imports keep working."""
    for name in ("train", "load_chips", "ChipSet", "TrainingError", "split_validation", "validation_pairs",
                 "pk_batches", "make_dataset", "make_train_step", "verification_metrics", "augment_chip",
                 "TrainResult", "CHIPS_CACHE_FILE", "device_setup", "freeze_batch_norm", "scan_people"):
        assert hasattr(training, name), name
    assert training.make_train_step.__module__ == "facenet.train.step"


# --------------------------------------------------------------------------- chips and cache


def test_load_chips_skips_bad_photos_and_caches(tmp_path, pipeline, detector, caplog, monkeypatch):
    data = tmp_path / "data"
    for name in ("Juanes", "Jon_Voight"):
        shutil.copytree(PEOPLE / name, data / name)
    shutil.copy(MISC / "truncated.jpg", data / "Juanes" / "broken.jpg")
    shutil.copy(MISC / "dogs.jpg", data / "Jon_Voight" / "dogs.jpg")
    shutil.copy(PEOPLE / "Juanes" / "Juanes_0001.jpg", data / "loose.jpg")
    cache = tmp_path / "db" / CHIPS_CACHE_FILE

    with caplog.at_level(logging.WARNING):
        first = load_chips(data, pipeline, cache)
    assert len(first) == 6 and first.names == ["Jon_Voight", "Juanes"]
    assert set(first.chips) == {"dlib"}
    assert first.chips["dlib"].shape == (6, CHIP_SIZE, CHIP_SIZE, 3) and first.chips["dlib"].dtype == np.uint8
    assert sorted(np.bincount(first.labels).tolist()) == [3, 3]
    assert not any("broken" in p or "dogs" in p or "loose" in p for p in first.paths)
    text = caplog.text
    assert "broken.jpg: skipped, unreadable" in text and "dogs.jpg: skipped, no face" in text
    assert "1 photo(s) directly in the data folder ignored" in text
    path = Path(first.paths[0])
    image = load_image(path)
    np.testing.assert_array_equal(first.chips["dlib"][0], face_chip(image, detector.detect(image)[0]))
    np.testing.assert_array_equal(first.take(np.array([1, 0]))["dlib"], first.chips["dlib"][[1, 0]])
    assert cache.exists() and not [p for p in cache.parent.iterdir() if p.name.startswith(".")]
    # the chips are the cache's memory map, not a copy in memory
    (chips_file,) = cache.parent.glob("chips_cache.*.dlib.npy")
    assert isinstance(first.chips["dlib"], np.memmap) and Path(first.chips["dlib"].filename) == chips_file

    def no_detection(*_args, **_kwargs):
        raise AssertionError("a cached photo was detected again")

    monkeypatch.setattr(detector, "detect", no_detection)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = load_chips(data, pipeline, cache)
    np.testing.assert_array_equal(again.chips["dlib"], first.chips["dlib"])
    assert again.paths == first.paths and "dogs.jpg: skipped, no face" in caplog.text
    assert isinstance(again.chips["dlib"], np.memmap) and Path(again.chips["dlib"].filename) == chips_file
    # a removed photo: the cache is rewritten (a new generation, the old one deleted), still without detection
    removed = Path(first.paths[-1])
    removed.rename(tmp_path / removed.name)
    fewer = load_chips(data, pipeline, cache)
    assert len(fewer) == 5 and fewer.paths == first.paths[:-1]
    np.testing.assert_array_equal(fewer.chips["dlib"], first.chips["dlib"][:5])
    (newer,) = cache.parent.glob("chips_cache.*.dlib.npy")
    assert newer != chips_file and Path(fewer.chips["dlib"].filename) == newer
    (tmp_path / removed.name).rename(removed)
    monkeypatch.undo()

    cache.write_bytes(b"not a zip file")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rebuilt = load_chips(data, pipeline, cache)
    assert "corrupt or other-model chip cache" in caplog.text
    np.testing.assert_array_equal(rebuilt.chips["dlib"], first.chips["dlib"])
    with np.load(cache, allow_pickle=False) as stored:
        assert len(stored["keys"]) == 6 and len(stored["failed_keys"]) == 2
        assert all(key.endswith(":hog:dlib:150:0.25") for key in stored["keys"].tolist())
        (name,) = stored["chip_files"].tolist()
    assert np.load(cache.parent / name).shape == (6, CHIP_SIZE, CHIP_SIZE, 3)

    # a truncated chips file is a corrupt cache too
    chips_file = cache.parent / name
    chips_file.write_bytes(chips_file.read_bytes()[:-1000])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rebuilt = load_chips(data, pipeline, cache)
    assert "corrupt or other-model chip cache" in caplog.text
    np.testing.assert_array_equal(rebuilt.chips["dlib"], first.chips["dlib"])
    assert [p.name for p in cache.parent.glob("chips_cache.*.npy")] == [Path(rebuilt.chips["dlib"].filename).name]


def test_load_chips_reads_the_single_file_cache_of_earlier_versions(tiny, pipeline, detector, tmp_path, monkeypatch):
    data, chip_set = tiny
    with np.load(Path(chip_set.chips["dlib"].filename).parent / CHIPS_CACHE_FILE) as index:
        keys, failed, reasons = index["keys"], index["failed_keys"], index["failed_reasons"]
    cache = tmp_path / CHIPS_CACHE_FILE
    with open(cache, "wb") as handle:
        np.savez(handle, keys=keys, failed_keys=failed, failed_reasons=reasons, chips_dlib=chip_set.chips["dlib"])

    def no_detection(*_args, **_kwargs):
        raise AssertionError("a cached photo was detected again")

    monkeypatch.setattr(detector, "detect", no_detection)
    migrated = load_chips(data, pipeline, cache)
    assert isinstance(migrated.chips["dlib"], np.memmap) and migrated.paths == chip_set.paths
    np.testing.assert_array_equal(migrated.chips["dlib"], chip_set.chips["dlib"])
    with np.load(cache) as index:
        assert "chips_dlib" not in index.files and "chip_files" in index.files


# --------------------------------------------------------------------------- validation


def test_split_validation_holds_out_per_person_deterministically():
    labels = np.repeat(np.arange(5), [1, 2, 3, 10, 4])
    train, held = split_validation(labels, 0.2)
    assert np.array_equal(np.sort(np.r_[train, held]), np.arange(len(labels)))
    held_counts = np.bincount(labels[held], minlength=5)
    assert held_counts.tolist() == [0, 0, 1, 2, 1]
    assert np.all(np.bincount(labels[train], minlength=5) >= np.minimum(np.bincount(labels), 2))
    again = split_validation(labels, 0.2)
    assert np.array_equal(again[1], held)
    assert np.bincount(labels[split_validation(labels, 0.5)[1]], minlength=5).tolist() == [0, 0, 1, 5, 2]


def test_validation_pairs_are_capped_and_sampled_with_the_seed():
    labels = np.repeat(np.arange(40), np.arange(40) % 9 + 1)
    train, held = split_validation(labels, 0.3)
    a_all, b_all, same_all = validation_pairs(labels, held, train)
    assert same_all.sum() > 100  # the cap below really cuts
    a, b, same = validation_pairs(labels, held, train, max_pairs=100)
    assert len(a) == 100 and same.sum() == 50 and np.array_equal(same, labels[a] == labels[b])
    assert all(i in held or j in held for i, j in zip(a, b, strict=True))
    assert len({(min(i, j), max(i, j)) for i, j in zip(a, b, strict=True)}) == 100
    assert {*zip(a[same], b[same], strict=True)} <= {*zip(a_all[same_all], b_all[same_all], strict=True)}
    again = validation_pairs(labels, held, train, max_pairs=100)
    assert all(np.array_equal(x, y) for x, y in zip((a, b, same), again, strict=True))
    assert not np.array_equal(validation_pairs(labels, held, train, seed=5, max_pairs=100)[0], a)


def test_validation_pairs_of_a_big_data_folder_are_drawn_not_listed():
    """20,000 held-out x 80,000 training photos: 1.6e9 candidate pairs, never listed; the default cap holds."""
    labels = np.repeat(np.arange(5000), 20)
    train, held = split_validation(labels, 0.2)
    a, b, same = validation_pairs(labels, held, train)
    assert len(a) == validation.MAX_VALIDATION_PAIRS and same.sum() == len(a) // 2
    assert np.array_equal(same, labels[a] == labels[b])
    assert np.all(np.isin(a, held) | np.isin(b, held))
    assert len(np.unique(np.minimum(a, b) * len(labels) + np.maximum(a, b))) == len(a)


def test_validation_pairs_are_new_photo_against_known_and_balanced():
    labels = np.repeat(np.arange(4), [3, 3, 5, 1])
    train, held = split_validation(labels, 0.2)
    a, b, same = validation_pairs(labels, held, train)
    assert np.array_equal(same, labels[a] == labels[b])
    assert all(i in held or j in held for i, j in zip(a, b, strict=True))
    # every same-person pair that involves a held-out photo
    held_n, total = np.bincount(labels[held], minlength=4), np.bincount(labels)
    expected_pos = int(np.sum(held_n * (total - 1) - held_n * (held_n - 1) // 2))
    assert same.sum() == expected_pos and (~same).sum() == expected_pos
    assert len({(min(i, j), max(i, j)) for i, j in zip(a, b, strict=True)}) == len(a)


def test_verification_metrics_closed_forms():
    same = np.array([True, True, False, False])
    perfect = verification_metrics(np.array([0.1, 0.2, 0.5, 0.6]), same, VERIFY_THRESHOLD)
    assert perfect == pytest.approx({"accuracy": 1.0, "auc": 1.0, "threshold": 0.35, "deployed_accuracy": 1.0})
    reversed_ = verification_metrics(np.array([0.6, 0.5, 0.2, 0.1]), same, VERIFY_THRESHOLD)
    assert reversed_["auc"] == 0.0 and reversed_["accuracy"] == 0.5 and reversed_["deployed_accuracy"] == 0.0
    assert reversed_["threshold"] < 0.1  # accepting nothing is the best rule here
    # one mismatched pair closer than one matched pair: 3 of 4 orderings right; best threshold gets 3 of 4
    mixed = verification_metrics(np.array([0.1, 0.4, 0.3, 0.6]), same, VERIFY_THRESHOLD)
    assert mixed["auc"] == 0.75 and mixed["accuracy"] == 0.75 and mixed["deployed_accuracy"] == 0.75
    assert verification_metrics(np.full(4, 0.3), same, VERIFY_THRESHOLD)["auc"] == 0.5
    # the same ranking at twice the distances: AUC and best accuracy unchanged, the calibrated threshold fails
    spread = verification_metrics(2 * np.array([0.3, 0.35, 0.5, 0.6]), same, VERIFY_THRESHOLD)
    assert spread["auc"] == 1.0 and spread["accuracy"] == 1.0 and spread["deployed_accuracy"] == 0.5
    # ... and the threshold rescaled by the spread works again
    assert verification_metrics(2 * np.array([0.3, 0.35, 0.5, 0.6]), same, 2 * VERIFY_THRESHOLD)[
        "deployed_accuracy"] == 1.0
    with pytest.raises(TypeError):
        verification_metrics(np.full(4, 0.3), same)  # no default: the caller names the deployed threshold


# --------------------------------------------------------------------------- P x K batches


@pytest.mark.parametrize(
    ("counts", "batch_size"),
    [([3, 5, 2, 7, 1, 1, 4, 2, 9, 1, 3], 10), ([40, 2, 2, 2], 16), ([2, 2, 1], 32), ([6] * 9, 32)],
)
def test_pk_batches(counts, batch_size):
    labels = np.repeat(np.arange(len(counts)), counts)
    size = min(batch_size, len(labels))  # the batch size never has to divide the number of photos
    batches = pk_batches(labels, batch_size, rng=np.random.default_rng(0))
    assert batches.shape[1] == size
    singles = {p for p, c in enumerate(counts) if c == 1}
    for batch in batches:
        assert len(set(batch.tolist())) == size
        per_person = np.bincount(labels[batch], minlength=len(counts))
        assert np.sum(per_person >= 2) >= 2
        assert all(per_person[p] <= 1 for p in singles)
    seen = np.bincount(batches.ravel(), minlength=len(labels))
    multi = np.isin(labels, [p for p, c in enumerate(counts) if c >= 2])
    assert np.all(seen[multi] >= 1)
    if counts[0] != 40:  # "about once": no more batches than needed to see everything about twice
        assert len(batches) <= 2 * -(-len(labels) // size)


def test_pk_batches_refuses_too_few_people():
    with pytest.raises(TrainingError, match="at least 2 people"):
        pk_batches(np.array([0, 0, 0, 1, 2]), 8)


# --------------------------------------------------------------------------- augmentation


def test_augmentation_keeps_shape_dtype_range_and_the_face(tiny):
    chip = tiny[1].chips["dlib"][0]
    outputs = [augment_chip(tf.constant(chip), tf.constant([7, i])).numpy() for i in range(8)]
    for out in outputs:
        assert out.shape == (CHIP_SIZE, CHIP_SIZE, 3) and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 255.0
        # still the same face: correlates with the chip or its mirror
        best = max(np.corrcoef(out.ravel(), c.ravel())[0, 1] for c in (chip, chip[:, ::-1]))
        assert best > 0.6
    np.testing.assert_array_equal(outputs[0], augment_chip(tf.constant(chip), tf.constant([7, 0])).numpy())
    assert not np.allclose(outputs[0], outputs[1])
    assert not np.allclose(outputs[0], chip.astype(np.float32))

    chip_set = tiny[1]
    batches = pk_batches(chip_set.labels, 6, rng=np.random.default_rng(1))
    x, y = next(iter(make_dataset((chip_set.chips["dlib"],), chip_set.labels, batches, seed=1)))
    assert isinstance(x, tuple) and len(x) == 1  # one batch per chip kind of the model
    assert x[0].shape == (6, CHIP_SIZE, CHIP_SIZE, 3) and x[0].dtype == tf.float32
    assert np.array_equal(y.numpy(), chip_set.labels[batches[0]])
    # the same photos as the chips of the batch (up to the augmentation)
    for out, index in zip(x[0].numpy(), batches[0], strict=True):
        chip = chip_set.chips["dlib"][index]
        assert max(np.corrcoef(out.ravel(), c.ravel())[0, 1] for c in (chip, chip[:, ::-1])) > 0.6


def test_dataset_reads_each_batch_from_the_memory_map_not_a_constant_of_all_chips(tiny):
    chips = tiny[1].chips["dlib"]
    assert isinstance(chips, np.memmap)
    batches = pk_batches(tiny[1].labels, 6, rng=np.random.default_rng(1))
    dataset = make_dataset((chips,), tiny[1].labels, batches, seed=1)
    graph = dataset._as_serialized_graph().numpy()
    assert len(graph) < chips.nbytes / 20  # a graph holding the chips (tf.constant) would be bigger than them


# --------------------------------------------------------------------------- the step


def event_tags(run_dir: Path) -> set[str]:
    """The scalar tags of the TensorBoard event files in run_dir."""
    from tensorflow.core.util import event_pb2

    tags = set()
    for event_file in run_dir.glob("events.out.tfevents.*"):
        for record_bytes in tf.data.TFRecordDataset(str(event_file)):
            tags |= {v.tag for v in event_pb2.Event.FromString(record_bytes.numpy()).summary.value}
    return tags


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_trains_for_real_and_the_guard_decides(loss, tiny, weights, tmp_path):
    """One real epoch of each loss on the tiny folder's cached (memory-mapped) chips: every weight trained, finite
    losses, the plots, the scalars, and the guard's decision carried out (kept only when validation improved)."""
    chip_set = tiny[1]
    start_model = build_embedder("dlib", weights)
    start, start_weights = fingerprint(start_model), [w.numpy().copy() for w in start_model.trainable_weights]
    changed = []

    def on_epoch(epoch, model, _metrics):
        if epoch == 1:  # the weights the epoch trained, before the guard decides
            changed.extend(not np.array_equal(a, w.numpy())
                           for a, w in zip(start_weights, model.trainable_weights, strict=True))

    model, result = training.train(chip_set, weights, "dlib", epochs=1, batch_size=8, learning_rate=1e-4, loss=loss,
                                   log_dir=tmp_path / "logs", on_epoch=on_epoch)
    assert changed and all(changed)
    assert result.loss == loss and result.epochs_run == 1 and result.steps >= 1 and not result.interrupted
    assert len(result.losses) == 1 and all(np.isfinite(result.losses))
    second = result.head_accuracy if loss in DEFAULTS else result.active
    assert len(second) == 1 and 0.0 <= second[0] <= 1.0
    assert (result.active if loss in DEFAULTS else result.head_accuracy) == []
    assert result.improved == validation.is_better(result.val_after, result.val_before, result.val_before)
    assert (fingerprint(model) != start) == result.improved
    assert all(np.isfinite(v) for v in result.val_after.values())
    names = {f"{kind}_{stage}.png" for kind in ("pca", "tsne") for stage in ("before", "after")}
    assert {p.name for p in result.plots} == names and all(p.exists() for p in result.plots)
    expected = "train/head_accuracy" if loss in DEFAULTS else "train/active_fraction"
    assert {"train/loss", expected, "val/auc", "epoch/loss"} <= event_tags(result.run_dir)


def test_loss_settings_defaults_and_checks():
    assert loss_settings("semi_hard") == training.LossSettings("semi_hard", 0.5)
    assert loss_settings("batch_hard", 0.3) == training.LossSettings("batch_hard", 0.3)
    for loss, defaults in DEFAULTS.items():
        settings = loss_settings(loss)
        assert (settings.margin, settings.scale) == (defaults["margin"], defaults["scale"]) and settings.is_margin
    assert loss_settings("arcface", 0.3, 64.0) == training.LossSettings("arcface", 0.3, 64.0)
    with pytest.raises(TrainingError, match="SphereFace margin is an integer"):
        loss_settings("sphereface", 2.5)
    with pytest.raises(TrainingError, match="unknown loss"):
        loss_settings("normface")
    with pytest.raises(TrainingError, match="margin must be more than 0"):
        loss_settings("semi_hard", 0.0)
    with pytest.raises(TrainingError, match="scale must be more than 0"):
        loss_settings("cosface", scale=0.0)
    # --loss supersedes the older --strategy, which stays an alias of the triplet losses
    assert chosen_loss(None, None) == "semi_hard" and chosen_loss(None, "batch_hard") == "batch_hard"
    assert chosen_loss("cosface", "batch_hard") == "cosface"


# --------------------------------------------------------------------------- the guard


def scripted_metrics(monkeypatch, aucs: list[float], deployed: list[float] | None = None,
                     rejected: list[float] | None = None) -> list[float]:
    """Replace the validation metrics: call i returns AUC aucs[i] (before training, then each epoch), and the
    accuracy at the rescaled threshold and the strangers rejected given (else the same every time)."""
    calls: list[float] = []

    def fake(distances, same, deployed_threshold):
        i = len(calls)
        calls.append(aucs[i])
        at_threshold = deployed[i] if deployed else 0.9
        return {"accuracy": 0.9, "auc": aucs[i], "threshold": 0.4, "deployed_accuracy": at_threshold}

    def fake_strangers(*_args) -> float:
        return rejected[len(calls) - 1] if rejected else 0.99

    monkeypatch.setattr(validation, "verification_metrics", fake)
    monkeypatch.setattr(validation, "strangers_rejected", fake_strangers)
    monkeypatch.setattr(loop, "gain_holds", lambda *_args: (True, 1.0))  # the scripted AUCs are the gain
    return calls


def fake_step(monkeypatch, raise_at: int | None = None) -> list[tuple]:
    """A step without tracing: nudges the last weights, or raises KeyboardInterrupt at call `raise_at`.
    Returns the arguments the step was made with."""
    calls, made = [], []

    def factory(model, *args, **_kwargs):
        made.append(args)

        def step(x, y):
            calls.append(1)
            if raise_at is not None and len(calls) >= raise_at:
                raise KeyboardInterrupt
            model.trainable_variables[-1].assign_add(tf.fill(model.trainable_variables[-1].shape, 0.001))
            return tf.constant(0.3), tf.constant(0.5)

        return step

    monkeypatch.setattr(loop, "make_step", factory)
    return made


def run_command(data: Path, weights: Path, tmp_path: Path, epochs: int = 1, learning_rate: float = 1e-3,
                pretrained: bool = False, loss: str | None = None, tune: str = "backbone") -> int:
    return train_command(
        data_dir=str(data), weights_dir=str(weights), database_dir=str(tmp_path / "db"), model="dlib",
        imagenet_weights=None, epochs=epochs, margin=None if loss else 0.5, batch_size=32,
        learning_rate=learning_rate, strategy="semi_hard", detector="hog", log_dir=str(tmp_path / "logs"),
        validation_split=0.2, as_json=True, pretrained=pretrained, loss=loss, tune=tune,
    )


def saved_path(tmp_path: Path) -> Path:
    """Where training saves the trained weights of the test's gallery (beside its database, tmp_path/db)."""
    return trained_weights_path(tmp_path / "db", "dlib")


def save_pretrained_as_trained(weights: Path, tmp_path: Path) -> Path:
    (tmp_path / "db").mkdir(exist_ok=True)
    return save_trained_weights(build_embedder("dlib", weights), tmp_path / "db", "dlib")


def last_json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[-1])


def test_guard_saves_better_weights_rebuilds_database_and_logs(tiny, weights, tmp_path, monkeypatch, capsys):
    calls = scripted_metrics(monkeypatch, [0.90, 0.95])
    fake_step(monkeypatch)  # real steps: test_training_step_smoke and the CLI test
    assert run_command(tiny[0], weights, tmp_path) == 0
    record = last_json(capsys)
    assert len(calls) == 2
    saved = saved_path(tmp_path)
    assert record["saved"] is True and record["weights"] == str(saved) and saved.exists()
    assert saved.name == "dlib_trained.weights.npz"
    assert record["val_before"]["auc"] == 0.9 and record["val_after"]["auc"] == 0.95
    assert record["val_before"]["deployed_threshold"] == pytest.approx(VERIFY_THRESHOLD, abs=1e-4)
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # atomic: no temp file left
    assert not (weights / saved.name).exists()  # per gallery, never global
    trained = build_embedder("dlib", weights, tmp_path / "db")
    assert fingerprint(trained) != fingerprint(build_embedder("dlib", weights))
    assert (tmp_path / "db" / CHIPS_CACHE_FILE).exists()

    model_id = Embedder(trained, "dlib").model_id
    database = read_database(tmp_path / "db", model_id)
    assert database is not None and len(database) == 5 and database.model_id == model_id
    # the saved weights carry their spread relative to the start (in the same file); the rebuilt database's
    # thresholds follow it
    scale = record["val_after"]["distance_scale"]
    assert record["val_before"]["distance_scale"] == 1.0 and scale > 0
    assert record["val_after"]["deployed_threshold"] == pytest.approx(VERIFY_THRESHOLD * scale, abs=1e-3)
    assert read_trained(saved).distance_scale == pytest.approx(scale, abs=1e-4)
    assert distance_scale(tmp_path / "db", "dlib") == pytest.approx(scale, abs=1e-4)
    assert distance_scale(None, "dlib") == 1.0
    assert database.distance_scale == pytest.approx(scale, abs=1e-4)
    expected = database.distance_scale * gallery_threshold(5, int(np.median(database.photo_counts)), model="dlib")
    assert database.threshold == pytest.approx(expected)

    run_dir = next((tmp_path / "logs").iterdir())
    assert {"pca_before.png", "pca_after.png", "tsne_before.png", "tsne_after.png"} <= {
        p.name for p in run_dir.iterdir()}
    from tensorflow.core.util import event_pb2

    tags = set()
    for event_file in run_dir.glob("events.out.tfevents.*"):
        for record_bytes in tf.data.TFRecordDataset(str(event_file)):
            tags |= {v.tag for v in event_pb2.Event.FromString(record_bytes.numpy()).summary.value}
    assert {"train/loss", "train/active_fraction", "val/auc", "val/accuracy"} <= tags


def test_margin_loss_head_is_trained_then_discarded(tiny, weights, tmp_path, monkeypatch, capsys):
    """cosface: a head over the 5 training identities, initialised from their centroids, handed to the step with
    an optimizer built on model + head; the saved file holds exactly the embedding's weights."""
    scripted_metrics(monkeypatch, [0.90, 0.95])
    made = fake_step(monkeypatch)
    monkeypatch.setattr(fine_tune_module, "_rebuild", lambda *_args: "not rebuilt (test)")  # the guard test does
    assert run_command(tiny[0], weights, tmp_path, loss="cosface") == 0
    assert last_json(capsys)["saved"] is True
    ((head, optimizer, settings, *_),) = made
    assert isinstance(head, NormalizedClassifier) and head.num_classes == 5
    assert settings == training.LossSettings("cosface", DEFAULTS["cosface"]["margin"], DEFAULTS["cosface"]["scale"])
    assert optimizer.built and len(optimizer.variables) > 2 * len(head.trainable_variables)
    columns = np.linalg.norm(head.kernel.numpy(), axis=0)
    np.testing.assert_allclose(columns, 1.0, atol=1e-5)  # centroids of unit vectors, normalised
    arrays = read_trained(saved_path(tmp_path)).model_weights
    embedding = build_embedder("dlib", weights).get_weights()
    assert [a.shape for a in arrays] == [w.shape for w in embedding]


def test_guard_keeps_previous_weights_when_not_better(tiny, weights, tmp_path, monkeypatch, capsys):
    previous = save_pretrained_as_trained(weights, tmp_path)
    original = previous.read_bytes()
    scripted_metrics(monkeypatch, [0.95, 0.94, 0.95])
    fake_step(monkeypatch)
    assert run_command(tiny[0], weights, tmp_path, epochs=2) == 0
    record = last_json(capsys)
    assert record["saved"] is False and record["weights"] == str(previous)
    assert record["val_after"]["auc"] == 0.95  # the last epoch's, equal to the start: not strictly better
    assert previous.read_bytes() == original
    assert not (tmp_path / "db" / "faces.npz").exists()


def test_guard_refuses_better_ranking_that_breaks_the_calibrated_threshold(tiny, weights, tmp_path, monkeypatch,
                                                                            capsys):
    scripted_metrics(monkeypatch, [0.95, 0.99], deployed=[0.9, 0.6])
    record, err = refused_run(tiny, weights, tmp_path, monkeypatch, capsys)
    assert record["val_after"]["auc"] == 0.99 and record["val_after"]["deployed_accuracy"] == 0.6
    assert "at the rescaled thresholds it lost accuracy or named more held-out people" in err


def refused_run(tiny, weights, tmp_path, monkeypatch, capsys) -> tuple[dict, str]:
    """A scripted training run that must save nothing: (its JSON record, its stderr)."""
    fake_step(monkeypatch)
    assert run_command(tiny[0], weights, tmp_path) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["saved"] is False and not saved_path(tmp_path).exists()
    return record, captured.err


def test_guard_refuses_a_gain_within_chance(tiny, weights, tmp_path, monkeypatch, capsys):
    """A higher AUC that does not hold across resamples of the held-out people: nothing saved, and the verdict says
    in how many resamples it held."""
    scripted_metrics(monkeypatch, [0.95, 0.99])
    monkeypatch.setattr(loop, "gain_holds", lambda *_args: (False, 0.62))
    _, err = refused_run(tiny, weights, tmp_path, monkeypatch, capsys)
    assert "the AUC gain held in 62% of 200 resamples of the held-out people (under 95%: within chance)" in err


def test_guard_refuses_better_ranking_that_names_more_strangers(tiny, weights, tmp_path, monkeypatch, capsys):
    """Better ranked pairs, the same accuracy at the rescaled threshold, but a gallery of held-out people names more
    held-out photos of the others as one of them: nothing saved."""
    scripted_metrics(monkeypatch, [0.95, 0.99], rejected=[0.97, 0.96])
    record, err = refused_run(tiny, weights, tmp_path, monkeypatch, capsys)
    assert record["val_before"]["strangers_rejected"] == 0.97 and record["val_after"]["strangers_rejected"] == 0.96
    assert "named more held-out people as someone else" in err
    assert "rejected as strangers by the other held-out people 97.0% -> 96.0%" in err


def test_interrupt_leaves_previous_weights(tiny, weights, tmp_path, monkeypatch, capsys):
    previous = save_pretrained_as_trained(weights, tmp_path)
    original = previous.read_bytes()
    scripted_metrics(monkeypatch, [0.90, 0.99])
    fake_step(monkeypatch, raise_at=1)
    assert run_command(tiny[0], weights, tmp_path, epochs=3) == 130
    assert last_json(capsys)["saved"] is False and previous.read_bytes() == original


def test_interrupt_after_a_better_epoch_saves_it(tiny, weights, tmp_path, monkeypatch, capsys):
    scripted_metrics(monkeypatch, [0.90, 0.99])
    fake_step(monkeypatch, raise_at=2)  # epoch 1 is one batch; epoch 2's first step is interrupted
    assert run_command(tiny[0], weights, tmp_path, epochs=3) == 130
    record = last_json(capsys)
    assert record["saved"] is True and Path(record["weights"]).exists()
    assert record["val_after"]["auc"] == 0.99


def test_too_few_people_fails_with_one_line(tmp_path, weights, detector, capsys):
    data = tmp_path / "data"
    shutil.copytree(PEOPLE / "Juanes", data / "Juanes")
    (data / "Jon_Voight").mkdir()
    shutil.copy(PEOPLE / "Jon_Voight" / "Jon_Voight_0001.jpg", data / "Jon_Voight")
    code = run_command(data, weights, tmp_path)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error")]
    assert code == 2 and not captured.out
    assert errors == ["error: training needs at least 2 people with 2 or more usable photos; found 1"]
    assert run_command(tmp_path / "missing", weights, tmp_path) == 2
    assert "missing: data folder not found" in capsys.readouterr().err


def test_failing_to_save_exits_1_with_one_line(tiny, weights, tmp_path, monkeypatch, capsys):
    previous = save_pretrained_as_trained(weights, tmp_path)
    original = previous.read_bytes()
    scripted_metrics(monkeypatch, [0.90, 0.95])
    fake_step(monkeypatch)

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fine_tune_module, "save_trained_weights", disk_full)
    assert run_command(tiny[0], weights, tmp_path) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error")]
    assert errors == ["error: cannot save the trained weights ([Errno 28] No space left on device); the previous "
                      "weights are unchanged"]
    assert captured.out == "" and "Traceback" not in captured.err
    assert previous.read_bytes() == original


def test_corrupt_trained_weights_stop_training_with_one_line(tiny, weights, tmp_path, capsys):
    corrupt = saved_path(tmp_path)
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"PK\x03\x04 half a zip file")
    assert run_command(tiny[0], weights, tmp_path) == 1
    captured = capsys.readouterr()
    (line,) = [line for line in captured.err.splitlines() if line.strip()]
    assert line.startswith("error: ") and str(corrupt) in line and "--pretrained" in line
    assert captured.out == "" and corrupt.read_bytes() == b"PK\x03\x04 half a zip file"


def test_pretrained_training_ignores_the_trained_file(tiny, weights, tmp_path, monkeypatch, capsys):
    """--pretrained ignores the gallery's fine-tuned weights for training too: training starts from the
    pretrained model and an unusable trained file is no obstacle."""
    corrupt = saved_path(tmp_path)
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"garbage")
    scripted_metrics(monkeypatch, [0.95, 0.94])
    fake_step(monkeypatch)
    code = run_command(tiny[0], weights, tmp_path, pretrained=True)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["saved"] is False and corrupt.read_bytes() == b"garbage"


def test_validation_needs_a_person_with_three_photos(tmp_path):
    chips = {"dlib": np.zeros((4, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)}
    chip_set = training.ChipSet(chips, np.array([0, 0, 1, 1], np.int32), ["a", "b"], ["1", "2", "3", "4"])
    with pytest.raises(TrainingError, match="3 or more usable photos"):
        training.train(chip_set, tmp_path, name="dlib")


# --------------------------------------------------------------------------- PCA plot


def test_pca_and_plot(tmp_path):
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    points = np.outer(rng.normal(size=30), direction) + 1e-3 * rng.normal(size=(30, 16))
    coords, share = pca_2d(points)
    assert share[0] > 0.99 and np.std(coords[:, 1]) < 1e-2 * np.std(coords[:, 0])
    labels = np.repeat(np.arange(3), 10)
    path = save_pca_plot(tmp_path / "p.png", points, labels, ["a", "b", "c"], "test", highlight=np.array([0, 10]))
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300
    with pytest.raises(ValueError):
        pca_2d(points[:1])


# --------------------------------------------------------------------------- CLI


def test_cli_trains_with_a_margin_loss_and_prints_one_json_line(tmp_path, weights):
    """`--loss cosface` without -m: CosFace's own margin (0.35), not the triplet default 0.5 of -m."""
    data = make_data_dir(tmp_path)
    command = [sys.executable, "main.py", "-t", "True", "-e", "1", "--json", "--data_dir", str(data),
               "--database_dir", str(tmp_path / "db"), "-wp", str(weights), "--tensorboard_dir", str(tmp_path / "l"),
               "--model", "dlib", "-d", "hog", "--loss", "cosface", "-bs", "8", "--tune", "backbone"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[-1])
    assert set(record) == {"val_before", "val_after", "saved", "weights", "seconds", "start", "tune"}
    assert (record["start"], record["tune"]) == ("pretrained", "backbone")
    assert isinstance(record["saved"], bool) and record["seconds"] > 0
    assert "epoch 1/1" in done.stderr and "head accuracy" in done.stderr
    assert "cosface loss, margin 0.35, scale 30" in done.stderr
    assert record["saved"] == trained_weights_path(tmp_path / "db", "dlib").exists()
    if record["saved"]:
        assert record["weights"] == str(trained_weights_path(tmp_path / "db", "dlib"))
    else:  # nothing trained before and nothing saved now: recognition keeps the pretrained model
        assert record["weights"] == "the pretrained dlib model"


GPU_PATH = """
import json, logging, sys
import numpy as np
logging.basicConfig(level=logging.INFO, format="%(message)s")
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from facenet.train import load_chips
from facenet.train.loop import train
from facenet.pipeline import FacePipeline
data, weights, cache = sys.argv[1:4]
chips = load_chips(data, FacePipeline("hog", "dlib", weights), cache)
rows = np.flatnonzero(chips.labels < 3)  # 3 people of 3 photos: one global batch an epoch, float16 is slow on a CPU
chips = type(chips)({k: np.asarray(v[rows]) for k, v in chips.chips.items()}, chips.labels[rows], chips.names,
                    [chips.paths[i] for i in rows])
seen = {}
def on_epoch(epoch, model, metrics):
    branch = model.get_layer("dlib_resnet")
    seen[epoch] = [branch.get_layer("conv_stem").compute_dtype, branch.get_layer("conv_stem").kernel.dtype,
                   branch.get_layer("dlib_preprocess").compute_dtype, keras.mixed_precision.global_policy().name]
model, result = train(chips, weights, "dlib", epochs=1, batch_size=8, learning_rate=1e-6, log_dir=None,
                      devices=["/cpu:0", "/cpu:1"], on_epoch=on_epoch)
print(json.dumps({"seen": seen, "steps": result.steps, "losses": result.losses, "epochs": result.epochs_run,
                  "after": keras.mixed_precision.global_policy().name, "dtype": model.layers[1].compute_dtype}))
"""


def test_the_gpu_path_runs_on_two_logical_cpus(tiny, weights, tmp_path):
    """The card's GPU path (mixed float16 and MirroredStrategy over 2 devices) trains for real without a GPU:
    two logical CPUs in a process of its own (devices are fixed when TensorFlow starts)."""
    data, _ = tiny
    cache = data.parent / "db" / training.CHIPS_CACHE_FILE  # the tiny chips, detected once already
    done = subprocess.run([sys.executable, "-c", GPU_PATH, str(data), str(weights), str(cache)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    # float16 compute, float32 variables, the input scaling in float32
    assert record["seen"]["1"] == ["float16", "float32", "float32", "mixed_float16"]
    assert record["epochs"] == 1 and record["steps"] >= 1 and all(np.isfinite(record["losses"]))
    assert record["after"] == "float32"  # the policy is restored: the gallery's models compute in float32
    assert "training on 2 device(s), mixed float16" in done.stderr
