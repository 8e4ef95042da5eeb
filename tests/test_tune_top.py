"""Partial fine-tuning (`--tune top|top2`): the cut embedder, the cached views, the guard on whole people, the
verdict line, and a real top run whose saved weights recognition reproduces."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_adapter import PEOPLE, chips, make_data  # noqa: F401 - the chips fixture

import facenet
from facenet.cli.train_command import verdict
from facenet.config import CACHED_TUNES, TOP_LEARNING_RATE, TUNE_MODES
from facenet.eval.metrics import auc
from facenet.gallery.thresholds import gallery_threshold
from facenet.models.build import build_embedder
from facenet.models.split import CutError, split_embedder
from facenet.models.trained import read_trained, save_trained_weights, trained_weights_path
from facenet.models.vectors import normalize
from facenet.pipeline import FacePipeline
from facenet.train.augment import augment_view
from facenet.train.cached import CachedOptions
from facenet.train.chips import TrainingError
from facenet.train.loop import RunOptions, plan_run
from facenet.train.validation import (
    GUARD_PEOPLE,
    SPREAD_EXPONENT,
    Strangers,
    Validator,
    gain_holds,
    is_better,
    split_people,
    split_validation,
    strangers_rejected,
)

BATCH = np.random.default_rng(0).uniform(0, 255, (3, 150, 150, 3)).astype(np.float32)


@pytest.mark.parametrize("tune", ["adapter", "top", "top2"])
def test_the_cut_embedder_computes_what_the_whole_does(weights, chips, tune):  # noqa: F811
    model = build_embedder("dlib", weights)
    split = split_embedder(model, tune, 16)
    whole = model(chips).numpy()
    np.testing.assert_allclose(split.top(split.bottom(chips)).numpy(), whole, atol=1e-5)
    np.testing.assert_allclose(split.joined()(chips).numpy(), whole, atol=1e-5)
    assert split.feature_shapes == ([(128,)] if tune == "adapter" else [(4, 4, 256)])
    blocks = {"adapter": 0, "top": 1, "top2": 2}[tune]
    convs = [w for w in split.top.trainable_weights if "kernel" in w.path and "conv" in w.path]
    assert len(convs) == 2 * blocks  # two convolutions a residual block


def test_training_the_top_trains_the_embedder_itself(weights, chips):  # noqa: F811
    """The top's layers are the embedder's: a changed block changes what the joined model computes."""
    model = build_embedder("dlib", weights)
    before = model(chips).numpy()
    split = split_embedder(model, "top", 16)
    kernel = next(w for w in split.top.trainable_weights if "kernel" in w.path and "conv" in w.path)
    kernel.assign(kernel.numpy() * 1.5)
    after = split.joined()(chips).numpy()
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(model(chips).numpy(), after, atol=1e-5)  # the adapter is still the identity


def test_fused_model_is_cut_in_both_branches(weights):
    model = build_embedder("fused", weights)
    split = split_embedder(model, "top", 16)
    assert sorted(split.feature_shapes) == [(4, 4, 256), (7, 7, 1024)]
    sface = np.random.default_rng(1).uniform(0, 255, (3, 112, 112, 3)).astype(np.float32)
    np.testing.assert_allclose(split.joined()([BATCH, sface]).numpy(), model([BATCH, sface]).numpy(), atol=1e-5)


def test_augmented_views_are_seeded_and_altered(chips):  # noqa: F811
    chip = chips[0].astype(np.uint8)
    one = augment_view(chip, np.random.default_rng([4, 2, 7]))
    assert one.shape == chip.shape and one.dtype == np.uint8
    assert np.array_equal(one, augment_view(chip, np.random.default_rng([4, 2, 7])))
    assert not np.array_equal(one, chip)
    assert not np.array_equal(one, augment_view(chip, np.random.default_rng([4, 3, 7])))


def test_the_guard_holds_out_whole_people_when_there_are_enough():
    labels = np.repeat(np.arange(120), 3)  # 120 people of 3 photos: 24 held out whole
    train, held = split_people(labels, 0.2)
    assert len(np.unique(labels[held])) == 24 and len(held) == 72
    assert not set(labels[held]) & set(labels[train])
    assert sorted(np.r_[train, held].tolist()) == list(range(len(labels)))
    assert split_people(np.repeat(np.arange(97), 3), 0.2) is None  # 19 would be held out: fewer than GUARD_PEOPLE
    assert GUARD_PEOPLE == 20 and split_people(np.repeat(np.arange(100), 3), 0.2) is not None
    # a person with one photo is never held out (no same-person pair)
    one_photo = np.r_[np.repeat(np.arange(100), 2), np.arange(100, 200)]
    _, held = split_people(one_photo, 0.2)
    assert set(one_photo[held]) <= set(range(100))


def test_plan_says_whom_the_guard_measures():
    from facenet.train.chips import ChipSet

    def plan(people: int):
        labels = np.repeat(np.arange(people), 3).astype(np.int32)
        chip_set = ChipSet({"dlib": np.zeros((len(labels), 2, 2, 3), np.uint8)}, labels,
                           [str(i) for i in range(people)], [str(i) for i in range(len(labels))])
        return plan_run(chip_set, 0.2, RunOptions("dlib", "", None, 1e-4, 8, 2, 4, False, None), 2000)

    many, few = plan(150), plan(10)
    assert many.by_person and many.held_people == 30
    assert not set(many.classes[many.held]) & set(many.classes[many.train_idx]) or many.by_person
    assert not few.by_person and few.held_people == 10  # a photo of each person of 3: photos, not people
    assert np.array_equal(few.held, split_validation(np.repeat(np.arange(10), 3), 0.2)[1])


def test_the_distance_scale_is_the_spread_damped_for_other_photos():
    """Thresholds grow by the held-out pairs' spread ** SPREAD_EXPONENT: 1 when nothing moved."""
    pairs = (np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([True, False, False]))
    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], np.float32)

    class Fixed:
        kinds, dim = ("x",), 2

        def __init__(self) -> None:
            self.factor = 1.0

        def embed(self, given):
            return given["x"] * self.factor

    fixed = Fixed()
    validate = Validator(fixed, {"x": vectors}, pairs, np.array([], np.int64), 1.0, 0.6)
    assert validate()[0]["distance_scale"] == 1.0
    fixed.factor = 2.0  # every distance doubles
    metrics = validate()[0]
    assert metrics["distance_scale"] == pytest.approx(2.0 ** SPREAD_EXPONENT)
    assert metrics["deployed_threshold"] == pytest.approx(0.6 * 2.0 ** SPREAD_EXPONENT)
    assert 0.9 < SPREAD_EXPONENT < 1.0


def test_the_guards_open_set_counts_held_out_photos_named_as_someone_else():
    """A held-out photo is a stranger to the gallery of training people (its own person left out): rejected when
    its nearest centroid is beyond that person's default threshold times the scale; a larger scale names more."""
    labels = np.array([0, 0, 1, 1, 2, 2, 3])
    rng = np.random.default_rng(1)
    directions = normalize(rng.standard_normal((3, 256)))
    gallery = directions[[0, 0, 1, 1, 2, 2]].astype(np.float32)  # rows 0-5: people 0, 1, 2 (two photos each)
    limit = gallery_threshold(3, 2, "fused")
    side = rng.standard_normal(256)
    side -= directions[0] * (directions[0] @ side)
    side /= np.linalg.norm(side)
    angle = 2 * np.arcsin(0.75 / 2)  # a stranger 0.75 from person 0, > the threshold, < 1.5 times it
    near = np.cos(angle) * directions[0] + np.sin(angle) * side

    def distance_to_person_0(v):
        return float(np.linalg.norm(v - directions[0]))

    strangers = Strangers(labels, np.arange(6), np.array([0, 6]), "fused", 3)
    queries = np.stack([near, near]).astype(np.float32)  # row 0 is person 0 itself: its own centroid is left out
    d = distance_to_person_0(near)
    assert d < limit * 1.5 and d > limit  # beyond the threshold at scale 1, within it at 1.5
    assert strangers_rejected(strangers, gallery, queries, 1.0) == 1.0
    assert strangers_rejected(strangers, gallery, queries, 1.5) == 0.5  # row 6 now named person 0; row 0 cannot be
    # the thresholds are those of the whole training gallery: with 100,000 people enrolled, 0.74 < 0.75 at 1.5
    assert strangers_rejected(replace(strangers, people=100_000), gallery, queries, 1.5) == 1.0


def test_an_auc_gain_must_hold_across_resamples_of_the_held_out_people():
    """A gain every person shares holds; a gain that two people's pairs make (the others a little worse) does not."""
    rng = np.random.default_rng(0)
    people = np.repeat(np.arange(40), 20)
    same = np.tile(np.r_[np.ones(10, bool), np.zeros(10, bool)], 40)
    before = np.where(same, 0.6, 0.8) + 0.15 * rng.standard_normal(len(same))
    everyone = np.where(same, before - 0.05, before + 0.05)  # every person's pairs separate a little more
    holds, share = gain_holds(before, everyone, same, people)
    assert holds and share >= 0.99
    two = np.where(people < 2, np.where(same, 0.0, 2.0), np.where(same, before + 0.003, before - 0.003))
    assert auc(two, same) > auc(before, same) + 0.005  # better overall, carried by two people
    holds, share = gain_holds(before, two, same, people)
    assert not holds and share < 0.9


def test_the_guard_refuses_weights_that_name_more_strangers():
    start = {"auc": 0.95, "accuracy": 0.9, "deployed_accuracy": 0.9, "strangers_rejected": 0.95}
    better = {"auc": 0.97, "accuracy": 0.92, "deployed_accuracy": 0.91, "strangers_rejected": 0.95}
    assert is_better(better, start, start)
    assert not is_better({**better, "strangers_rejected": 0.94}, start, start)
    assert not is_better({**better, "deployed_accuracy": 0.89}, start, start)


def test_tune_modes_and_rates():
    assert TUNE_MODES == ("adapter", "top", "top2", "backbone") and CACHED_TUNES == ("adapter", "top", "top2")
    assert CachedOptions().top_learning_rate == TOP_LEARNING_RATE == 1e-5 and CachedOptions().views == 4


def test_real_top_training_saves_what_recognition_then_computes(weights, tmp_path):
    """`--tune top` on real photos: when the guard keeps the weights, the gallery's pipeline embeds with them
    (the whole model's weights and the adapter, one file); the verdict line says what it measured."""
    data = make_data(tmp_path)
    done = facenet.fine_tune(data, tmp_path / "db", model="dlib", detector="hog", weights_dir=weights, tune="top",
                             epochs=3, log_dir=None)
    run = done.run
    assert done.tune == "top" and run.epochs_run == 3 and run.embed_seconds > 0 and run.feature_megabytes > 0
    assert not run.by_person and run.held_people == 5
    assert not list((tmp_path / "db").glob(".features-*"))  # the scratch features are gone
    line = verdict(done)
    assert line.startswith("verdict: helped: " if done.saved else "verdict: did not help: ")
    assert f"accuracy on {run.held_out} held-out photos: {100 * run.val_before['accuracy']:.1f}% -> " in line
    assert "a weak verdict" in line
    path = trained_weights_path(tmp_path / "db", "dlib")
    assert done.saved == path.exists()
    if not done.saved:
        return
    trained = read_trained(path)
    assert trained.model_weights is not None and trained.adapter_weights is not None
    photo = PEOPLE / "Juanes" / "Juanes_0001.jpg"
    pretrained = FacePipeline("hog", "dlib", weights)
    tuned = FacePipeline("hog", "dlib", weights, tmp_path / "db")
    assert tuned.model_id != pretrained.model_id
    vectors = [p.embed_photos([photo])[photo].vector for p in (pretrained, tuned)]
    assert np.linalg.norm(vectors[0] - vectors[1]) > 1e-4


def test_top_weights_are_saved_in_their_cut_and_recognition_rebuilds_it(weights, chips, tmp_path):  # noqa: F811
    """A `top` file holds the cut model's weights (gains included) and its cut; the gallery's embedder is rebuilt in
    that shape and computes exactly what training left; another cut is refused with one line."""
    split = split_embedder(build_embedder("dlib", weights), "top", 16)
    split.gains[0].gain.assign(np.linspace(-0.5, 0.5, 16).reshape(4, 4, 1))
    kernel = next(w for w in split.top.trainable_weights if "kernel" in w.path and "conv" in w.path)
    kernel.assign(kernel.numpy() * 1.2)
    split.adapter.set_weights([w + 0.01 for w in split.adapter.get_weights()])
    trained = split.joined()
    expected = trained(chips).numpy()
    path = save_trained_weights(trained, tmp_path, "dlib", 1.3, backbone=True, cut="top")
    record = read_trained(path).record
    assert record["cut"] == "top" and record["adapter_hidden"] == 16
    rebuilt = build_embedder("dlib", weights, tmp_path)
    np.testing.assert_allclose(rebuilt(chips).numpy(), expected, atol=1e-5)
    assert abs(rebuilt(chips).numpy() - build_embedder("dlib", weights)(chips).numpy()).max() > 1e-3
    split_embedder(rebuilt, "top")  # the same cut again: trained further
    with pytest.raises(CutError, match="another --tune than top2"):
        split_embedder(rebuilt, "top2")


def test_backbone_training_from_top_weights_is_refused_with_one_line(weights, chips, tmp_path):  # noqa: F811
    """Weights saved in the `top` cut cannot be trained as the whole backbone; nothing is changed."""
    split = split_embedder(build_embedder("dlib", weights), "top", 16)
    path = save_trained_weights(split.joined(), tmp_path / "db", "dlib", 1.0, backbone=True, cut="top")
    before = path.read_bytes()
    with pytest.raises(TrainingError, match=r"cannot train --tune backbone from .*: its weights were trained with "
                                            r"--tune top; train with that --tune again, or start over"):
        facenet.fine_tune(make_data(tmp_path), tmp_path / "db", model="dlib", detector="hog", weights_dir=weights,
                          tune="backbone", epochs=1, log_dir=None)
    assert path.read_bytes() == before


@pytest.mark.parametrize("tune", ["adapter", "top"])
def test_a_cached_margin_loss_run_starts_its_head_at_the_peoples_means(weights, tmp_path, tune):
    """cosface on cached features (adapter: no keep loss; top: with it): the head's class vectors start at each
    person's mean plain-view embedding, so its nearest-class accuracy on the training photos is high from the first
    epoch; the run is guarded like any other."""
    done = facenet.fine_tune(make_data(tmp_path), tmp_path / "db", model="dlib", detector="hog", weights_dir=weights,
                             tune=tune, epochs=1, loss="cosface", log_dir=None)
    run = done.run
    assert run.loss == "cosface" and run.epochs_run == 1 and len(run.head_accuracy) == 1
    assert run.head_accuracy[0] >= 0.75, run.head_accuracy
