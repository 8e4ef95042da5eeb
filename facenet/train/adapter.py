"""`train_adapter`: fine-tune the embedding to the user's domain with a residual adapter over the frozen model.

The frozen model embeds every photo once (training photos also mirrored); the adapter then trains on those
vectors with the chosen loss (online semi-hard triplet mining by default) in a `tf.function` step, P x K batches,
one random view (as is or mirrored) per photo and step. The guard is the one of backbone training
(`validation.is_better` on held-out photos of the user's own people), so weights are kept only when they verify
held-out photos better. An epoch costs milliseconds; the one-off embedding pass dominates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facenet.config import (
    ADAPTER_LEARNING_RATE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_VALIDATION_SPLIT,
    PHOTOS_PER_PERSON,
    SPLIT_SEED,
)
from facenet.gallery.thresholds import calibration
from facenet.models.adapter import EmbeddingAdapter, adapter_of, with_adapter
from facenet.models.embed import Embedder
from facenet.progress import progress
from facenet.train.batches import pk_batches
from facenet.train.chips import ChipSet
from facenet.train.logs import TrainingLogs
from facenet.train.loop import RunOptions, TrainResult, plan_run
from facenet.train.step import LossSettings, build_optimizer, make_head, make_step
from facenet.train.validation import (
    MAX_VALIDATION_PAIRS,
    Validator,
    fmt_metrics,
    is_better,
    ranks_better,
    short_metrics,
)

ADAPTER_HIDDEN = 512
"""Width of the adapter's hidden layer (a linear adapter measured the same on masks, slightly worse on clean)."""

log = logging.getLogger(__name__)

EMBED_CHUNK = 256
"""Photos embedded per read of the chip cache."""


@dataclass
class VectorInput:
    """The frozen model's vectors as the adapter's "chips": lets `Validator` and `embed_rows` run the adapter."""

    model: keras.Model
    kinds: tuple[str, ...] = ("vector",)

    @property
    def dim(self) -> int:
        return int(self.model.output.shape[-1])

    def embed(self, chips: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.model(np.asarray(chips["vector"], np.float32), training=False))


def embed_views(embedder: Embedder, chip_set: ChipSet, train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vectors of every photo as it is (N, dim), vectors of the training photos as they are and mirrored
    (2, T, dim)), a chunk of the chip cache at a time."""
    plain = np.zeros((len(chip_set), embedder.dim), np.float32)
    mirrored = np.zeros((len(train_rows), embedder.dim), np.float32)
    where = np.full(len(chip_set), -1)
    where[train_rows] = np.arange(len(train_rows))
    chunks = range(0, len(chip_set), EMBED_CHUNK)
    for start in progress(chunks, "embedding photos", total=len(chunks), unit="chunk"):
        rows = np.arange(start, min(start + EMBED_CHUNK, len(chip_set)))
        chips = chip_set.take(rows)
        plain[rows] = embedder.embed(chips)
        mine = where[rows] >= 0
        if mine.any():
            mirrored[where[rows[mine]]] = embedder.embed({kind: c[mine][:, :, ::-1] for kind, c in chips.items()})
    return plain, np.stack([plain[train_rows], mirrored])


def adapter_model(dim: int, hidden: int, weights: list[np.ndarray] | None = None) -> keras.Model:
    """The adapter alone, over (N, dim) vectors: what the step trains."""
    inputs = keras.Input((dim,), name="vector")
    adapter = EmbeddingAdapter(hidden, name="adapter", dtype="float32")
    model = keras.Model(inputs, adapter(inputs), name="adapter_model")
    if weights is not None:
        adapter.set_weights(weights)
    return model


@dataclass
class AdapterOptions:
    """Settings of an adapter run beside the loss: see `train_adapter`."""

    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = ADAPTER_LEARNING_RATE
    validation_split: float = DEFAULT_VALIDATION_SPLIT
    photos_per_person: int = PHOTOS_PER_PERSON
    seed: int = SPLIT_SEED
    hidden: int = ADAPTER_HIDDEN
    max_pairs: int = MAX_VALIDATION_PAIRS
    start_scale: float = 1.0


def train_adapter(chip_set: ChipSet, model: keras.Model, name: str, settings: LossSettings,
                  options: AdapterOptions, log_dir: str | Path | None = None) -> tuple[keras.Model, TrainResult]:
    """Train an adapter over `model` (frozen; an adapter it already has is trained further) on `chip_set`.

    Returns the model with the best validated adapter when an epoch beat the starting point (`result.improved`),
    else the model as it came. Ctrl-C ends the run after the current step; only completed epochs count.
    """
    existing = adapter_of(model)
    base = keras.Model(model.inputs, existing.input, name=model.name) if existing is not None else model
    plan_options = RunOptions(name, "", None, options.learning_rate, options.batch_size, options.photos_per_person,
                            options.seed, False, None)
    plan = plan_run(chip_set, options.validation_split, plan_options, options.max_pairs)
    embedder = Embedder(base, name)
    started = time.perf_counter()
    plain, views = embed_views(embedder, chip_set, plan.train_idx)
    embed_seconds = time.perf_counter() - started
    trainee = adapter_model(embedder.dim, existing.hidden if existing is not None else options.hidden,
                            existing.get_weights() if existing is not None else None)
    vectors = VectorInput(trainee)
    validate = Validator(vectors, {"vector": plain}, plan.pairs, plan.plotted, options.start_scale,
                         calibration(name).verify_threshold)
    logs = TrainingLogs(log_dir)
    try:
        run = _AdapterRun(chip_set, plan, settings, options, trainee, validate, views, logs)
        result = run.train()
    finally:
        logs.close()
    result.embed_seconds = round(embed_seconds, 2)
    hidden = adapter_of(trainee).hidden
    if not result.improved:
        return model, result
    return with_adapter(base, hidden, run.best_weights), result


class _AdapterRun:
    """One adapter run: validation before, epochs of steps on cached vectors, the guard after each epoch."""

    def __init__(self, chip_set: ChipSet, plan, settings: LossSettings, options: AdapterOptions,
                 trainee: keras.Model, validate: Validator, views: np.ndarray, logs: TrainingLogs) -> None:
        self.chip_set, self.plan, self.settings, self.options = chip_set, plan, settings, options
        self.trainee, self.validate, self.views, self.logs = trainee, validate, views, logs
        self.best_weights: list[np.ndarray] | None = None
        self.best_embeddings: np.ndarray | None = None
        self.rng = np.random.default_rng(options.seed)

    def train(self) -> TrainResult:
        before, embeddings = self.validate()
        plan = self.plan
        log.info("validation before training (%d pairs, %d held-out photos): %s", len(plan.pairs[2]),
                 len(plan.held), fmt_metrics(before))
        result = TrainResult(before, dict(before), False, 0, 0, False, self.logs.run_dir, len(plan.pairs[2]),
                             len(plan.held), loss=self.settings.loss)
        result.plots += self._plots("before", embeddings, f"before training: {short_metrics(before)}")
        step = self._step()
        last = (before, embeddings)
        started, images = time.perf_counter(), 0
        try:
            for epoch in range(1, self.options.epochs + 1):
                epoch_started = time.perf_counter()
                loss, second, count = self._epoch(step, result)
                result.epoch_seconds.append(round(time.perf_counter() - epoch_started, 3))
                images += count
                last = self._after_epoch(epoch, result, loss, second)
        except KeyboardInterrupt:
            result.interrupted = True
            log.warning("interrupted during epoch %d; only completed epochs count", result.epochs_run + 1)
        seconds = time.perf_counter() - started
        result.images_per_second = images / seconds if seconds else 0.0
        if not result.improved:
            result.val_after = last[0]
        title = f"after epoch {result.best_epoch} (kept)" if result.improved else \
            f"after epoch {result.epochs_run} (not kept)"
        shown = self.best_embeddings if result.improved else last[1]
        result.plots += self._plots("after", shown, f"{title}: {short_metrics(result.val_after)}")
        return result

    def _step(self):
        """The compiled step over the adapter (and, for margin losses, a cosine head started at the classes'
        mean vectors)."""
        head = None
        if self.settings.is_margin:
            train_idx = self.plan.train_idx
            head = make_head(self.plan.num_classes, self.views.shape[-1], self.views[0],
                             self.plan.classes[train_idx])
        variables = self.trainee.trainable_variables + (head.trainable_variables if head else [])
        optimizer = build_optimizer(self.options.learning_rate, variables)
        return make_step(self.trainee, head, optimizer, self.settings)

    def _epoch(self, step, result: TrainResult) -> tuple[float, float, int]:
        """One pass of P x K batches over the training photos, each photo in a random view."""
        plan = self.plan
        batches = pk_batches(plan.classes[plan.train_idx], self.options.batch_size, self.options.photos_per_person,
                             self.rng)
        losses, seconds = [], []
        for batch in batches:
            view = self.rng.integers(len(self.views), size=len(batch))
            x = tf.constant(self.views[view, batch])
            loss, second = (float(v) for v in step((x,), tf.constant(plan.classes[plan.train_idx][batch])))
            result.steps += 1
            losses.append(loss)
            seconds.append(second)
            self.logs.scalars(result.steps, {"train/loss": loss, f"train/{self.settings.second_output}": second})
        return float(np.mean(losses)), float(np.mean(seconds)), batches.size

    def _after_epoch(self, epoch: int, result: TrainResult, loss: float, second: float):
        metrics, embeddings = self.validate()
        result.epochs_run = epoch
        result.losses.append(loss)
        (result.head_accuracy if self.settings.is_margin else result.active).append(second)
        self.logs.scalars(epoch, {**{f"val/{key}": value for key, value in metrics.items()}, "epoch/loss": loss})
        log.info("epoch %d/%d: loss %.4f, validation %s", epoch, self.options.epochs, loss, fmt_metrics(metrics))
        if is_better(metrics, result.val_after, result.val_before):
            result.val_after, result.best_epoch, result.improved = metrics, epoch, True
            self.best_weights, self.best_embeddings = adapter_of(self.trainee).get_weights(), embeddings
        elif ranks_better(metrics, result.val_before) and \
                metrics["deployed_accuracy"] < result.val_before["deployed_accuracy"]:
            result.off_threshold = True
        return metrics, embeddings

    def _plots(self, stage: str, embeddings: np.ndarray, title: str) -> list[Path]:
        rows = self.plan.plotted
        held = np.flatnonzero(np.isin(rows, self.plan.held))
        return self.logs.plots(stage, embeddings[self.validate.positions(rows)], self.chip_set.labels[rows],
                               self.chip_set.names, held, title)
