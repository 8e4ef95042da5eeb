"""`train`: epochs of P x K batches, validation after each, the best validated weights kept in memory.

The loss is a triplet loss (semi-hard or batch-hard mining) or a margin loss (CosFace, ArcFace, SphereFace)
through a `NormalizedClassifier` head over the training identities, initialised from their mean embeddings,
trained together with the embedding and thrown away after: the model returned (and saved by the command) is the
embedding alone. Ctrl-C stops after the current step; only completed (validated) epochs count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facenet.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LOSS,
    DEFAULT_MODEL,
    DEFAULT_VALIDATION_SPLIT,
    PHOTOS_PER_PERSON,
    SPLIT_SEED,
)
from facenet.config import learning_rate as default_learning_rate
from facenet.gallery.thresholds import calibration
from facenet.models.build import build_embedder, pretrained_embedder
from facenet.models.embed import Embedder
from facenet.models.trained import distance_scale
from facenet.progress import ProgressBar, progress_bar
from facenet.settings import training_problems
from facenet.train.augment import make_dataset
from facenet.train.batches import pk_batches
from facenet.train.chips import ChipSet, TrainingError
from facenet.train.logs import TrainingLogs, plot_rows
from facenet.train.step import (
    LossSettings,
    build_optimizer,
    device_setup,
    freeze_batch_norm,
    loss_settings,
    make_head,
    make_step,
)
from facenet.train.validation import (
    MAX_VALIDATION_PAIRS,
    Validator,
    embed_rows,
    fmt_metrics,
    is_better,
    ranks_better,
    short_metrics,
    split_validation,
    validation_pairs,
)

log = logging.getLogger(__name__)

OnEpoch = Callable[[int, keras.Model, dict[str, float]], None]


@dataclass
class TrainResult:
    """What a training run did.

    `val_after`: the best epoch's validation when it beat `val_before` (`improved`; the model holds those
    weights), else the last completed epoch's (the model holds the starting weights).
    """

    val_before: dict[str, float]
    val_after: dict[str, float]
    improved: bool
    best_epoch: int
    epochs_run: int
    interrupted: bool
    run_dir: Path | None
    pairs: int
    held_out: int
    steps: int = 0
    images_per_second: float = 0.0
    losses: list[float] = field(default_factory=list)
    active: list[float] = field(default_factory=list)
    """Per epoch, triplet losses: the mean share of active triplets."""
    plots: list[Path] = field(default_factory=list)
    off_threshold: bool = False
    """An epoch ranked pairs better than the start but was refused: the rescaled threshold lost accuracy."""
    loss: str = DEFAULT_LOSS
    head_accuracy: list[float] = field(default_factory=list)
    """Per epoch, margin losses: the mean share of the batch the head classified right."""
    epoch_seconds: list[float] = field(default_factory=list)
    """Per epoch: seconds of training steps (validation excluded)."""
    embed_seconds: float = 0.0
    """Adapter training: seconds of the one-off pass of the frozen model over every photo (and its mirror)."""


@dataclass
class RunPlan:
    """What the data decides before any model exists: the split, the pairs, the classes, the first batches."""

    train_idx: np.ndarray
    held: np.ndarray
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray]
    classes: np.ndarray
    """(N,) int32: each photo's training identity, 0..num_classes-1 (the head's class; labels of the batches)."""
    num_classes: int
    first_batches: np.ndarray
    plotted: np.ndarray


@dataclass
class RunOptions:
    name: str
    weights_dir: str | Path
    imagenet_weights: str | Path | None
    learning_rate: float
    batch_size: int
    photos_per_person: int
    seed: int
    jit_compile: bool
    trained_dir: str | Path | None


def check_settings(epochs: int, batch_size: int, learning_rate: float, validation_split: float) -> None:
    """TrainingError for the first setting that cannot work (`settings.training_problems`, the command line's
    rules too; the loss's own: `step.loss_settings`)."""
    for setting, problem in training_problems(epochs, batch_size, learning_rate, validation_split):
        raise TrainingError(f"{setting} {problem}")


def plan_run(chip_set: ChipSet, validation_split: float, options: RunOptions, max_pairs: int) -> RunPlan:
    usable = int(np.sum(np.bincount(chip_set.labels) >= 2)) if len(chip_set) else 0
    if usable < 2:
        raise TrainingError(f"training needs at least 2 people with 2 or more usable photos; found {usable}")
    train_idx, held = split_validation(chip_set.labels, validation_split, options.seed)
    if len(held) == 0:
        raise TrainingError("validation needs at least one person with 3 or more usable photos (one is held out)")
    pairs = validation_pairs(chip_set.labels, held, train_idx, options.seed, max_pairs)
    people = np.unique(chip_set.labels[train_idx])  # every held-out photo's person has training photos too
    classes = np.searchsorted(people, chip_set.labels).astype(np.int32)
    first = pk_batches(classes[train_idx], options.batch_size, options.photos_per_person,
                       np.random.default_rng(options.seed))
    return RunPlan(train_idx, held, pairs, classes, len(people), first, plot_rows(len(chip_set), options.seed))


class _Run:
    """The moving parts of one run (model, head, optimizer, step, validation, logs), one short method a stage."""

    def __init__(self, chip_set: ChipSet, plan: RunPlan, settings: LossSettings, options: RunOptions,
                 distribution: tf.distribute.Strategy, logs: TrainingLogs) -> None:
        self.chip_set, self.plan, self.settings, self.options = chip_set, plan, settings, options
        self.distribution, self.logs = distribution, logs
        with distribution.scope():
            self.model = build_embedder(options.name, options.weights_dir, options.trained_dir,
                                        imagenet_weights=options.imagenet_weights)
            freeze_batch_norm(self.model)
        self.embedder = Embedder(self.model, options.name)
        self.chips = tuple(chip_set.chips[kind] for kind in self.embedder.kinds)
        start_scale = distance_scale(options.trained_dir, options.name)
        self.validate = Validator(self.embedder, chip_set.chips, plan.pairs, plan.plotted, start_scale,
                                  calibration(options.name).verify_threshold)
        self.step = None
        self.start_weights = self.model.get_weights()
        self.best_weights: list[np.ndarray] | None = None
        self.best_embeddings: np.ndarray | None = None
        self.last: tuple[dict[str, float], np.ndarray] | None = None
        self.step_seconds, self.step_images = 0.0, 0

    def start(self, on_epoch: OnEpoch | None) -> TrainResult:
        """Validation and plots before training; then the head (margin losses), the optimizer and the step."""
        before, embeddings = self.validate()
        same = self.plan.pairs[2]
        log.info("validation before training (%d pairs, %d held-out photos): %s", len(same), len(self.plan.held),
                 fmt_metrics(before))
        self.logs.scalars(0, {f"val/{key}": value for key, value in before.items()})
        if on_epoch:
            on_epoch(0, self.model, before)
        result = TrainResult(before, dict(before), False, 0, 0, False, self.logs.run_dir, len(same),
                             len(self.plan.held), loss=self.settings.loss)
        result.plots += self.plots("before", embeddings, f"before training: {short_metrics(before)}")
        self.best_embeddings = embeddings
        head = self.make_head(embeddings) if self.settings.is_margin else None
        with self.distribution.scope():
            variables = self.model.trainable_variables + (head.trainable_variables if head else [])
            optimizer = build_optimizer(self.options.learning_rate, variables)
        self.step = make_step(self.model, head, optimizer, self.settings, self.distribution, self.options.jit_compile)
        return result

    def make_head(self, embeddings: np.ndarray) -> keras.layers.Layer:
        """The cosine head, each class vector the mean embedding of its identity's training photos."""
        train_idx = self.plan.train_idx
        if np.isin(train_idx, self.validate.rows).all():
            train_embeddings = embeddings[self.validate.positions(train_idx)]
        else:
            train_embeddings = embed_rows(self.embedder, self.chip_set.chips, train_idx)
        with self.distribution.scope():
            return make_head(self.plan.num_classes, self.embedder.dim, train_embeddings, self.plan.classes[train_idx])

    def plots(self, stage: str, embeddings: np.ndarray, title: str) -> list[Path]:
        rows = self.plan.plotted
        held = np.flatnonzero(np.isin(rows, self.plan.held))
        return self.logs.plots(stage, embeddings[self.validate.positions(rows)], self.chip_set.labels[rows],
                               self.chip_set.names, held, title)

    def epochs(self, result: TrainResult, epochs: int, on_epoch: OnEpoch | None) -> None:
        """Train and validate epoch after epoch; Ctrl-C ends the run after the current step."""
        steps = -(-len(self.plan.first_batches) // self.distribution.num_replicas_in_sync)
        # a bar updated by hand: it shows the loss and the step's second figure via set_postfix
        bar = progress_bar(total=epochs * steps, desc="training", unit="batch")
        try:
            for epoch in range(1, epochs + 1):
                loss, second = self.run_epoch(epoch, result, bar)
                self.after_epoch(epoch, epochs, result, loss, second, on_epoch)
        except KeyboardInterrupt:
            result.interrupted = True
            log.warning("interrupted during epoch %d; only completed epochs count", result.epochs_run + 1)
        finally:
            bar.close()

    def global_batches(self, epoch: int) -> np.ndarray:
        """The epoch's P x K batches as photo indices; a global batch is one whole P x K batch per replica."""
        plan, options = self.plan, self.options
        rng = np.random.default_rng([options.seed, epoch])
        batches = plan.first_batches if epoch == 1 else pk_batches(
            plan.classes[plan.train_idx], options.batch_size, options.photos_per_person, rng)
        replicas = self.distribution.num_replicas_in_sync
        batches = np.resize(batches, (-(-len(batches) // replicas) * replicas, batches.shape[1]))
        return plan.train_idx[batches].reshape(-1, batches.shape[1] * replicas)

    def run_epoch(self, epoch: int, result: TrainResult, bar: ProgressBar) -> tuple[float, float]:
        """One pass over the epoch's batches: (mean loss, mean active fraction or head accuracy)."""
        batches = self.global_batches(epoch)
        dataset = make_dataset(self.chips, self.plan.classes, batches, self.options.seed * 1_000_003 + epoch)
        losses, seconds = [], []
        short = "acc" if self.settings.is_margin else "active"
        for x, y in self.distribution.experimental_distribute_dataset(dataset):
            started = time.perf_counter()
            loss, second = (float(v) for v in self.step(x, y))
            if result.steps > 0:  # the first step includes tracing
                self.step_seconds += time.perf_counter() - started
                self.step_images += batches.shape[1]
            result.steps += 1
            losses.append(loss)
            seconds.append(second)
            self.logs.scalars(result.steps, {"train/loss": loss, f"train/{self.settings.second_output}": second})
            bar.set_postfix({"epoch": epoch, "loss": f"{loss:.4f}", short: f"{second:.2f}"})
            bar.update()
        return float(np.mean(losses)), float(np.mean(seconds))

    def after_epoch(self, epoch: int, epochs: int, result: TrainResult, loss: float, second: float,
                    on_epoch: OnEpoch | None) -> None:
        """Validate, record, log, and keep the weights when the guard says they are better."""
        metrics, embeddings = self.last = self.validate()
        result.epochs_run = epoch
        result.losses.append(loss)
        (result.head_accuracy if self.settings.is_margin else result.active).append(second)
        name = self.settings.second_output
        self.logs.scalars(epoch, {**{f"val/{key}": value for key, value in metrics.items()},
                                  "epoch/loss": loss, f"epoch/{name}": second})
        what = "head accuracy" if self.settings.is_margin else "active triplets"
        log.info("epoch %d/%d: loss %.4f, %s %.2f, validation %s", epoch, epochs, loss, what, second,
                 fmt_metrics(metrics))
        if on_epoch:
            on_epoch(epoch, self.model, metrics)
        before = result.val_before
        if is_better(metrics, result.val_after, before):
            result.val_after, result.best_epoch, result.improved = metrics, epoch, True
            self.best_weights, self.best_embeddings = self.model.get_weights(), embeddings
        elif ranks_better(metrics, before) and metrics["deployed_accuracy"] < before["deployed_accuracy"]:
            result.off_threshold = True

    def finish(self, result: TrainResult) -> None:
        """The after plots; the model back to the best validated weights, or to the starting ones."""
        result.images_per_second = self.step_images / self.step_seconds if self.step_seconds else 0.0
        if self.last is not None:
            if result.improved:
                shown, title = self.best_embeddings, f"after epoch {result.best_epoch} (kept)"
            else:
                result.val_after = self.last[0]
                shown, title = self.last[1], f"after epoch {result.epochs_run} (not kept)"
            result.plots += self.plots("after", shown, f"{title}: {short_metrics(result.val_after)}")
        self.model.set_weights(self.best_weights if result.improved else self.start_weights)


def train(
    chip_set: ChipSet,
    weights_dir: str | Path,
    name: str = DEFAULT_MODEL,
    imagenet_weights: str | Path | None = None,
    epochs: int = DEFAULT_EPOCHS,
    margin: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float | None = None,
    strategy: str = DEFAULT_LOSS,
    log_dir: str | Path | None = None,
    validation_split: float = DEFAULT_VALIDATION_SPLIT,
    photos_per_person: int = PHOTOS_PER_PERSON,
    seed: int = SPLIT_SEED,
    jit_compile: bool = False,
    on_epoch: OnEpoch | None = None,
    trained_dir: str | Path | None = None,
    loss: str | None = None,
    scale: float | None = None,
    max_pairs: int = MAX_VALIDATION_PAIRS,
) -> tuple[keras.Model, TrainResult]:
    """Fine-tune the embedding model's own weights on `chip_set` (the backbone; `fine_tune` is the whole contract:
    guard, save, gallery rebuild); save nothing. Starts from the trained weights of the gallery in `trained_dir`
    when it has some, else the pretrained model. `learning_rate` None: the model's default (config.LEARNING_RATES).

    `loss`: semi_hard | batch_hard (triplet mining) | cosface | arcface | sphereface (margin losses); None: the
    older name `strategy`. `margin` is the chosen loss's margin and `scale` the margin losses' logit scale, each
    from the loss's defaults when None (step.loss_settings). Returns the embedding model and what happened: the
    model holds the best validated weights when an epoch beat the starting point (`result.improved`), else the
    starting weights. Ctrl-C stops after the current step: `result.interrupted`, and only completed epochs
    count. `on_epoch(epoch, model, metrics)` is called after each epoch's validation (epoch 0: before training),
    e.g. for a benchmark's own held-out people. At most `max_pairs` held-out pairs are validated.
    """
    settings = loss_settings(loss or strategy, margin, scale)
    learning_rate = default_learning_rate(name, "backbone") if learning_rate is None else learning_rate
    check_settings(epochs, batch_size, learning_rate, validation_split)
    options = RunOptions(name, weights_dir, imagenet_weights, learning_rate, batch_size, photos_per_person, seed,
                       jit_compile, trained_dir)
    plan = plan_run(chip_set, validation_split, options, max_pairs)
    log.info("%s loss, margin %g%s; %d training identities", settings.loss, settings.margin,
             f", scale {settings.scale:g}" if settings.is_margin else "", plan.num_classes)
    if name != "resnet50" and tf.config.list_physical_devices("GPU"):
        # Convert and cache under float32 first: converted under mixed_float16 the cached models would keep
        # float16 layers, and every later recognition run would compute in float16.
        pretrained_embedder(name, weights_dir)
    logs = TrainingLogs(log_dir)
    try:
        with device_setup() as distribution:
            run = _Run(chip_set, plan, settings, options, distribution, logs)
            result = run.start(on_epoch)
            run.epochs(result, epochs, on_epoch)
            run.finish(result)
    finally:
        logs.close()
    return run.model, result
