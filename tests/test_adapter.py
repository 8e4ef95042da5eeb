"""The residual adapter (what `-t True` trains by default), per-gallery trained weights, and `facenet.fine_tune`."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import facenet
import facenet.train.loop as loop
import facenet.train.validation as validation
from facenet.config import ADAPTER_LEARNING_RATE, KEEP_WEIGHTS, LEARNING_RATES, learning_rate
from facenet.detect.dlib import face_chip
from facenet.images import load_image
from facenet.models.adapter import EmbeddingAdapter, adapter_of, with_adapter
from facenet.models.build import build_embedder
from facenet.models.cache import fingerprint
from facenet.models.embed import load_embedder
from facenet.models.trained import read_trained, save_trained_weights, trained_weights_path
from facenet.pipeline import FacePipeline
from facenet.train.cached import CachedOptions, adapter_model
from facenet.train.keep import keep_loss, kept
from facenet.train.step import LossSettings, build_optimizer, loss_settings, make_head, make_step
from facenet.train.triplet import pairwise_distances

DATA = Path(__file__).parent / "data"
PEOPLE = DATA / "people"
ROOT = Path(__file__).parent.parent
TINY = ("Adel_Al-Jubeir", "Barbra_Streisand", "Jon_Voight", "Juanes", "Martha_Burk")


@pytest.fixture(scope="module")
def chips(detector) -> np.ndarray:
    """Real dlib chips of 6 photos of 2 people."""
    photos = sorted((PEOPLE / "Juanes").glob("*.jpg")) + sorted((PEOPLE / "Jon_Voight").glob("*.jpg"))
    out = []
    for photo in photos:
        image = load_image(photo)
        out.append(face_chip(image, detector.detect(image)[0]))
    return np.stack(out).astype(np.float32)


def make_data(root: Path, people=TINY) -> Path:
    data = root / "data"
    for name in people:
        shutil.copytree(PEOPLE / name, data / name)
    return data


# --------------------------------------------------------------------------- the layer


def test_an_untrained_adapter_is_the_identity(embedder, chips):
    base = embedder.model
    adapted = with_adapter(base, 32)
    np.testing.assert_allclose(adapted(chips).numpy(), base(chips).numpy(), atol=1e-6)
    assert adapted.name == base.name and isinstance(adapter_of(adapted), EmbeddingAdapter)
    assert adapter_of(base) is None
    assert fingerprint(adapted) != fingerprint(base)  # its weights count: a gallery made without it is rebuilt


def test_the_adapter_output_is_the_closed_form(embedder, chips):
    """unit(x + W2 gelu(W1 x + b1) + b2), with random weights set."""
    adapted = with_adapter(embedder.model, 8)
    layer = adapter_of(adapted)
    rng = np.random.default_rng(0)
    layer.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()])
    w1, b1, w2, b2 = layer.get_weights()
    x = embedder.model(chips).numpy()
    hidden = x @ w1 + b1
    gelu = 0.5 * hidden * (1 + np.tanh(np.sqrt(2 / np.pi) * (hidden + 0.044715 * hidden ** 3)))
    y = x + gelu @ w2 + b2
    expected = y / np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(adapted(chips).numpy(), expected, atol=2e-3)  # keras' gelu is the exact erf form
    np.testing.assert_allclose(np.linalg.norm(adapted(chips).numpy(), axis=1), 1.0, atol=1e-5)


def test_adapter_weights_live_beside_the_gallery_and_apply_only_there(weights, tmp_path, chips, caplog):
    adapted = with_adapter(build_embedder("dlib", weights), 16)
    layer = adapter_of(adapted)
    layer.set_weights([w + 0.05 for w in layer.get_weights()])
    gallery, other = tmp_path / "gallery_a", tmp_path / "gallery_b"
    gallery.mkdir()
    path = save_trained_weights(adapted, gallery, "dlib", distance_scale=1.3, backbone=False)
    assert path == trained_weights_path(gallery, "dlib") == gallery / "dlib_trained.weights.npz"
    trained = read_trained(path)
    assert trained.model_weights is None and len(trained.adapter_weights) == 4
    assert trained.record["backbone"] is False and trained.record["adapter_hidden"] == 16
    assert path.stat().st_size < 200_000  # the adapter alone, not the 22 MB model
    reloaded = build_embedder("dlib", weights, gallery)
    np.testing.assert_allclose(reloaded(chips).numpy(), adapted(chips).numpy(), atol=1e-6)
    assert fingerprint(reloaded) == fingerprint(adapted)
    # another gallery, and no gallery at all, keep the pretrained model
    pretrained = build_embedder("dlib", weights)
    assert fingerprint(build_embedder("dlib", weights, other)) == fingerprint(pretrained)
    assert load_embedder("dlib", weights, other, runtime="tf").distance_scale == 1.0
    assert load_embedder("dlib", weights, gallery, runtime="tf").distance_scale == pytest.approx(1.3)
    # a file left in the weights folder by release 0.2 is not used, and says so
    shutil.copy(path, weights / path.name)
    with caplog.at_level(logging.WARNING):
        legacy = load_embedder("dlib", weights, other, runtime="tf")
    assert legacy.fingerprint == fingerprint(pretrained) and "no longer used" in caplog.text


def test_the_pipeline_with_an_adapter_equals_the_adapter_on_pretrained_vectors(weights, tmp_path, chips):
    """What bench/bench_domain.py relies on: adapter weights act on the frozen model's vectors, TFLite included."""
    adapted = with_adapter(build_embedder("dlib", weights), 16)
    layer = adapter_of(adapted)
    rng = np.random.default_rng(1)
    layer.set_weights([w + rng.normal(0, 0.05, w.shape).astype(np.float32) for w in layer.get_weights()])
    save_trained_weights(adapted, tmp_path, "dlib", backbone=False)
    uint8 = {"dlib": chips.astype(np.uint8)}
    trained = load_embedder("dlib", weights, tmp_path).embed(uint8)  # TFLite, as recognition runs it
    plain = load_embedder("dlib", weights).embed(uint8)
    alone = adapter_model(plain.shape[1], 16, read_trained(trained_weights_path(tmp_path, "dlib")).adapter_weights)
    np.testing.assert_allclose(trained, alone(plain).numpy(), atol=2e-4)
    assert np.abs(trained - plain).max() > 1e-2


def _nuisance_domain(seed: int = 0):
    """Closed form of what masks do to an embedding: identities live in 8 dimensions, the domain adds a random
    per-photo push along 8 others. Returns (train vectors, their labels, held-out vectors, an AUC of vectors)."""
    rng = np.random.default_rng(seed)
    dim, people, photos = 32, 40, 6
    identity = np.zeros((people, dim))
    identity[:, :8] = rng.normal(size=(people, 8))

    def domain(ids: np.ndarray) -> np.ndarray:
        x = identity[ids] * 0.6
        x[:, 8:16] += rng.normal(size=(len(ids), 8)) * 1.2
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    labels = np.repeat(np.arange(30), photos)
    held_labels = np.repeat(np.arange(30, people), photos)
    same = held_labels[:, None] == held_labels[None, :]
    off = ~np.eye(len(held_labels), dtype=bool)

    def auc_of(vectors: np.ndarray) -> float:
        d = pairwise_distances(tf.constant(vectors)).numpy()
        return validation.auc(d[off], same[off])
    return domain(labels), labels, domain(held_labels), auc_of


def _train_adapter(model, train: np.ndarray, labels: np.ndarray, steps: int, keep: float = 0.0,
                   loss: str = "semi_hard") -> float:
    """`steps` P x K steps of `loss` on `model` (keep > 0: with the keep loss toward the starting embeddings)."""
    rng = np.random.default_rng(1)
    start = model(train).numpy()
    optimizer = build_optimizer(1e-3, model.trainable_variables)
    settings = LossSettings(loss, 0.5) if loss == "semi_hard" else loss_settings(loss)
    head = None
    if settings.is_margin:
        head = make_head(int(labels.max()) + 1, start.shape[1], start, labels)
        optimizer = build_optimizer(1e-3, model.trainable_variables + head.trainable_variables)
    step = make_step(model, head, optimizer, settings, keep=keep)
    for _ in range(steps):
        batch = np.concatenate([rng.choice(np.flatnonzero(labels == p), 4, replace=False)
                                for p in rng.choice(int(labels.max()) + 1, 8, replace=False)])
        value, _ = step((tf.constant(train[batch]),), tf.constant(labels[batch]), tf.constant(start[batch]))
    return float(value)


def test_the_adapter_learns_to_ignore_a_domain_nuisance():
    """Semi-hard triplet steps on the adapter make held-out people of the nuisance domain separable again."""
    train, labels, held, auc_of = _nuisance_domain()
    model = adapter_model(train.shape[1], 64)
    before = auc_of(model(held).numpy())
    loss = _train_adapter(model, train, labels, 300)
    after = auc_of(model(held).numpy())
    assert np.isfinite(loss) and before < 0.85 and after > before + 0.08, (before, after)


@pytest.mark.parametrize(("loss", "keep"), [("semi_hard", 2.0), ("cosface", 20.0)])
def test_the_keep_loss_holds_unseen_embeddings_near_where_they_started(loss, keep):
    """The same training with the keep loss moves held-out people's embeddings far less, and still gains (a
    margin loss at scale 30 is ~10x a triplet loss, so it takes a heavier keep weight for the same hold)."""
    train, labels, held, auc_of = _nuisance_domain()
    free = adapter_model(train.shape[1], 64)
    held_back = adapter_model(train.shape[1], 64, free.get_weights())
    start = free(held).numpy()
    before = auc_of(start)
    _train_adapter(free, train, labels, 200, loss=loss)
    _train_adapter(held_back, train, labels, 200, keep=keep, loss=loss)

    def moved(model) -> float:
        return float(np.mean(np.sum((model(held).numpy() - start) ** 2, axis=1)))
    assert moved(held_back) < 0.5 * moved(free), (moved(held_back), moved(free))
    assert auc_of(held_back(held).numpy()) > before + 0.03, (before, auc_of(held_back(held).numpy()))


def test_the_keep_loss_is_the_mean_squared_move():
    a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    b = np.array([[0.0, 0.0], [0.0, -1.0]], np.float32)
    assert float(keep_loss(tf.constant(a), tf.constant(b))) == pytest.approx((1.0 + 4.0) / 2)
    assert kept(tf.constant(a), (), 1.0) == 0.0
    assert CachedOptions(tune="top2").keep_weight == KEEP_WEIGHTS["top2"] > 0
    assert CachedOptions(tune="adapter").keep_weight == 0.0 and CachedOptions(keep=0.5).keep_weight == 0.5


def test_default_learning_rates_are_per_model_and_mode():
    assert learning_rate("fused") == learning_rate("dlib", "adapter") == ADAPTER_LEARNING_RATE
    assert learning_rate("dlib", "backbone") == LEARNING_RATES["dlib"] == 1e-6
    assert learning_rate("resnet50", "adapter") == LEARNING_RATES["resnet50"]


def test_backbone_training_defaults_to_the_models_learning_rate(monkeypatch, tmp_path):
    """train() without a learning rate uses the per-model one (1e-4 wrecks the dlib branch)."""
    import facenet.train.loop as loop
    from facenet.train import ChipSet, TrainingError

    seen = []

    def record_and_stop(_epochs, _batch, rate, _split):
        seen.append(rate)
        raise TrainingError("stop")

    monkeypatch.setattr(loop, "check_settings", record_and_stop)
    chip_set = ChipSet({"dlib": np.zeros((6, 150, 150, 3), np.uint8)}, np.array([0, 0, 0, 1, 1, 1]), ["a", "b"],
                       [str(i) for i in range(6)])
    with pytest.raises(TrainingError):
        loop.train(chip_set, tmp_path, name="dlib")
    assert seen == [1e-6]


# --------------------------------------------------------------------------- fine_tune: the library contract


def scripted_auc(monkeypatch, aucs: list[float]) -> None:
    """Validation metrics in the given order (the guard's decisions are what these tests check)."""
    calls = iter(aucs)

    def fake(distances, same, deployed_threshold):
        return {"accuracy": 0.9, "auc": next(calls), "threshold": 0.4, "deployed_accuracy": 0.9}

    monkeypatch.setattr(validation, "verification_metrics", fake)
    monkeypatch.setattr(validation, "strangers_rejected", lambda *_args: 0.99)  # no real open set to sway it
    monkeypatch.setattr(loop, "gain_holds", lambda *_args: (True, 1.0))  # the scripted AUCs are the gain


def test_fine_tune_guard_weights_gallery_and_a_second_run(weights, tmp_path, monkeypatch):
    data = make_data(tmp_path)
    gallery, other = tmp_path / "db", tmp_path / "other_db"
    scripted_auc(monkeypatch, [0.90, 0.93, 0.95])
    done = facenet.fine_tune(data, gallery, model="dlib", detector="hog", weights_dir=weights, epochs=2,
                             log_dir=None)
    assert done.saved and done.run.improved and done.run.best_epoch == 2 and done.start == "pretrained"
    assert done.tune == "adapter" and len(done.run.epoch_seconds) == 2 and done.run.embed_seconds > 0
    saved = trained_weights_path(gallery, "dlib")
    assert done.weights == str(saved) and read_trained(saved).model_weights is None
    assert not (weights / saved.name).exists()
    assert done.gallery.startswith("rebuilt with the new weights (5 people)")
    # the rebuilt gallery records the trained model; another gallery stays pretrained
    trained_id = FacePipeline("hog", "dlib", weights, gallery).model_id
    assert json.loads((gallery / "enrollment_report.json").read_text())["fingerprint"] == trained_id
    assert FacePipeline("hog", "dlib", weights, other).model_id == FacePipeline("hog", "dlib", weights).model_id
    before = saved.read_bytes()
    # a second run starts from the gallery's trained weights and says so; not better: nothing changes
    scripted_auc(monkeypatch, [0.95, 0.94])
    again = facenet.fine_tune(data, gallery, model="dlib", detector="hog", weights_dir=weights, epochs=1,
                              log_dir=None)
    assert again.start == "trained" and not again.saved and saved.read_bytes() == before
    assert again.weights == str(saved) and again.gallery == "unchanged"
    # --pretrained picks the pretrained start
    scripted_auc(monkeypatch, [0.95, 0.94])
    fresh = facenet.fine_tune(data, gallery, model="dlib", detector="hog", weights_dir=weights, epochs=1,
                              pretrained=True, log_dir=None)
    assert fresh.start == "pretrained" and not fresh.saved


def test_gallery_fine_tune_then_recognizes_with_the_new_weights(weights, tmp_path, monkeypatch):
    data = make_data(tmp_path)
    gallery = facenet.Gallery(data, tmp_path / "db", model="dlib", detector="hog", weights_dir=weights)
    pretrained_id = gallery.pipeline.model_id
    scripted_auc(monkeypatch, [0.90, 0.95])
    done = gallery.fine_tune(epochs=1, log_dir=None)
    assert done.saved and gallery.pipeline.model_id != pretrained_id
    assert gallery.report.fingerprint == gallery.pipeline.model_id
    photo = PEOPLE / "Juanes" / "Juanes_0001.jpg"
    assert gallery.recognize(photo)[0].name == "Juanes"


def test_real_adapter_training_runs_its_guard(weights, tmp_path):
    """No scripted metrics: real steps on real chips; whatever the guard decides, files follow it."""
    data = make_data(tmp_path)
    done = facenet.fine_tune(data, tmp_path / "db", model="dlib", detector="hog", weights_dir=weights, epochs=3,
                             log_dir=tmp_path / "logs")
    run = done.run
    assert run.epochs_run == 3 and all(np.isfinite(run.losses)) and run.steps >= 3
    assert done.saved == run.improved == trained_weights_path(tmp_path / "db", "dlib").exists()
    if run.improved:
        assert (run.val_after["auc"], run.val_after["accuracy"]) > (run.val_before["auc"], run.val_before["accuracy"])
    plots = {p.name for p in run.plots}
    assert {"pca_before.png", "pca_after.png"} <= plots


def test_cli_trains_the_adapter_by_default_and_explains_the_guard(tmp_path, weights, run_in_process):
    """In-process (the training command's subprocess smoke test is in tests/test_train.py)."""
    data = make_data(tmp_path)
    done = run_in_process("-t", "True", "-e", "2", "-m", "0.5", "--json", "--data_dir", str(data),
                          "--database_dir", str(tmp_path / "db"), "-wp", str(weights), "--tensorboard_dir",
                          str(tmp_path / "l"), "--model", "dlib", "-d", "hog", "-bs", "8", cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["tune"] == "adapter" and record["start"] == "pretrained"
    assert "trained the adapter of the model, starting from the pretrained weights" in done.stderr
    guard = next(line for line in done.stderr.splitlines() if line.startswith("guard: "))
    assert "photos of 5 of the 5 people (held-out photos, never trained on); before accuracy" in guard
    assert record["saved"] == trained_weights_path(tmp_path / "db", "dlib").exists()
    verdict = next(line for line in done.stderr.splitlines() if line.startswith("verdict: "))
    before, after = (100 * record[key]["accuracy"] for key in ("val_before", "val_after"))
    assert verdict.startswith("verdict: helped: " if record["saved"] else "verdict: did not help: ")
    assert f"held-out photos: {before:.1f}% -> {after:.1f}% (AUC " in verdict
    assert "a weak verdict: it measured photos of people it trained on" in verdict
