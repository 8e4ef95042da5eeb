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
    compute_in_global_policy,
    device_setup,
    freeze_batch_norm,
    loss_settings,
    make_head,
    make_step,
)
from facenet.train.validation import (
    MAX_VALIDATION_PAIRS,
    Strangers,
    Validator,
    embed_rows,
    fmt_metrics,
    gain_holds,
    holds_thresholds,
    is_better,
    ranks_better,
    short_metrics,
    split_people,
    split_validation,
    stranger_plan,
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
    gain_share: float | None = None
    """The share of resamples of the held-out people in which the best epoch's AUC beat the start's
    (`validation.gain_holds`); below GAIN_CONFIDENCE nothing is kept. None when no epoch beat the start."""
    loss: str = DEFAULT_LOSS
    head_accuracy: list[float] = field(default_factory=list)
    """Per epoch, margin losses: the mean share of the batch the head classified right."""
    epoch_seconds: list[float] = field(default_factory=list)
    """Per epoch: seconds of training steps (validation excluded)."""
    embed_seconds: float = 0.0
    """Cached training: seconds of the one-off pass of the frozen bottom over every photo view."""
    feature_megabytes: float = 0.0
    """Cached training: size of the cached features (memory maps in a scratch folder during the run)."""
    held_people: int = 0
    """People the held-out photos belong to."""
    by_person: bool = False
    """The guard held out whole people, never trained on (it measures transfer); else photos of trained people."""
    split: float = 0.2
    """The validation split the run was given."""


@dataclass
class RunPlan:
    """What the data decides before any model exists: the split, the pairs, the classes, the first batches."""

    train_idx: np.ndarray
    held: np.ndarray
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray]
    strangers: Strangers
    """The guard's open set (`validation.stranger_plan`)."""
    classes: np.ndarray
    """(N,) int32: each photo's training identity, 0..num_classes-1 (the head's class; labels of the batches)."""
    num_classes: int
    first_batches: np.ndarray
    plotted: np.ndarray
    held_people: int = 0
    by_person: bool = False
    split: float = 0.2


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
    whole = split_people(chip_set.labels, validation_split, options.seed)
    train_idx, held = whole if whole is not None else split_validation(chip_set.labels, validation_split,
                                                                         options.seed)
    if len(held) == 0:
        raise TrainingError("validation needs at least one person with 3 or more usable photos (one is held out)")
    pairs = validation_pairs(chip_set.labels, held, train_idx, options.seed, max_pairs)
    people = np.unique(chip_set.labels[train_idx])  # held-out rows' classes are never used
    classes = np.minimum(np.searchsorted(people, chip_set.labels), len(people) - 1).astype(np.int32)
    first = pk_batches(classes[train_idx], options.batch_size, options.photos_per_person,
                       np.random.default_rng(options.seed))
    return RunPlan(train_idx, held, pairs,
                   stranger_plan(chip_set.labels, held, options.name, options.seed), classes, len(people),
                   first, plot_rows(len(chip_set), options.seed),
                   len(np.unique(chip_set.labels[held])), whole is not None, validation_split)


class GuardedRun:
    """What every training run shares: validation before, epochs of steps, the guard after each epoch (the best
    weights kept in memory), the plots. A run supplies `weights`, `make_step` and `run_epoch`."""

    def __init__(self, chip_set: ChipSet, plan: RunPlan, settings: LossSettings, validate: Validator,
                 logs: TrainingLogs, epochs: int, on_epoch: OnEpoch | None = None) -> None:
        self.chip_set, self.plan, self.settings, self.validate = chip_set, plan, settings, validate
        self.logs, self.epochs, self.on_epoch = logs, epochs, on_epoch
        self.best_weights: list[np.ndarray] | None = None
        self.best_embeddings: np.ndarray | None = None
        self.model: keras.Model | None = None
        """What `on_epoch` is given (the backbone run's model)."""

    def weights(self) -> list[np.ndarray]:
        raise NotImplementedError

    def make_step(self, embeddings: np.ndarray):
        raise NotImplementedError

    def run_epoch(self, epoch: int, step, result: TrainResult) -> tuple[float, float, int]:
        """(mean loss, mean active fraction or head accuracy, images stepped over)."""
        raise NotImplementedError

    def train(self) -> TrainResult:
        """Validate, train epoch after epoch (Ctrl-C ends the run after the current step; only completed epochs
        count), and leave the best validated weights in `best_weights` when an epoch beat the start."""
        before, embeddings = self.validate()
        plan = self.plan
        log.info("validation before training (%d pairs, %d held-out photos of %d %s): %s", len(plan.pairs[2]),
                 len(plan.held), plan.held_people, "people never trained on" if plan.by_person else "people",
                 fmt_metrics(before))
        self.logs.scalars(0, {f"val/{key}": value for key, value in before.items()})
        if self.on_epoch:
            self.on_epoch(0, self.model, before)
        result = TrainResult(before, dict(before), False, 0, 0, False, self.logs.run_dir, len(plan.pairs[2]),
                             len(plan.held), loss=self.settings.loss, held_people=plan.held_people,
                             by_person=plan.by_person, split=plan.split)
        result.plots += self.plots("before", embeddings, f"before training: {short_metrics(before)}")
        self.best_embeddings = start_embeddings = embeddings
        step = self.make_step(embeddings)
        last = (before, embeddings)
        images = 0
        try:
            for epoch in range(1, self.epochs + 1):
                started = time.perf_counter()
                loss, second, count = self.run_epoch(epoch, step, result)
                result.epoch_seconds.append(round(time.perf_counter() - started, 3))
                images += count
                last = self.after_epoch(epoch, result, loss, second)
        except KeyboardInterrupt:
            result.interrupted = True
            log.warning("interrupted during epoch %d; only completed epochs count", result.epochs_run + 1)
        seconds = sum(result.epoch_seconds)
        result.images_per_second = images / seconds if seconds else 0.0
        if result.improved:
            validate = self.validate
            holds, result.gain_share = gain_holds(validate.pair_distances(start_embeddings),
                                                  validate.pair_distances(self.best_embeddings), validate.same,
                                                  validate.pair_people)
            if not holds:
                log.info("the best epoch's AUC gain held in %.0f%% of resamples of the held-out people: within "
                         "chance, not kept", 100 * result.gain_share)
                result.improved = False
        if result.epochs_run:
            if not result.improved:
                result.val_after = last[0]
            title = f"after epoch {result.best_epoch} (kept)" if result.improved else \
                f"after epoch {result.epochs_run} (not kept)"
            shown = self.best_embeddings if result.improved else last[1]
            result.plots += self.plots("after", shown, f"{title}: {short_metrics(result.val_after)}")
        return result

    def after_epoch(self, epoch: int, result: TrainResult, loss: float, second: float):
        """Validate, record, log, and keep the weights when the guard says they are better."""
        metrics, embeddings = self.validate()
        result.epochs_run = epoch
        result.losses.append(loss)
        (result.head_accuracy if self.settings.is_margin else result.active).append(second)
        name = self.settings.second_output
        self.logs.scalars(epoch, {**{f"val/{key}": value for key, value in metrics.items()},
                                  "epoch/loss": loss, f"epoch/{name}": second})
        what = "head accuracy" if self.settings.is_margin else "active triplets"
        log.info("epoch %d/%d: loss %.4f, %s %.2f, validation %s", epoch, self.epochs, loss, what, second,
                 fmt_metrics(metrics))
        if self.on_epoch:
            self.on_epoch(epoch, self.model, metrics)
        if is_better(metrics, result.val_after, result.val_before):
            result.val_after, result.best_epoch, result.improved = metrics, epoch, True
            self.best_weights, self.best_embeddings = self.weights(), embeddings
        elif ranks_better(metrics, result.val_before) and not holds_thresholds(metrics, result.val_before):
            result.off_threshold = True
        return metrics, embeddings

    def plots(self, stage: str, embeddings: np.ndarray, title: str) -> list[Path]:
        rows = self.plan.plotted
        held = np.flatnonzero(np.isin(rows, self.plan.held))
        return self.logs.plots(stage, embeddings[self.validate.positions(rows)], self.chip_set.labels[rows],
                               self.chip_set.names, held, title)


class _BackboneRun(GuardedRun):
    """Backbone training: chips through the whole model, augmented by tf.data, under the device's strategy."""

    def __init__(self, chip_set: ChipSet, plan: RunPlan, settings: LossSettings, options: RunOptions,
                 distribution: tf.distribute.Strategy, logs: TrainingLogs, epochs: int,
                 on_epoch: OnEpoch | None) -> None:
        with distribution.scope():
            model = build_embedder(options.name, options.weights_dir, options.trained_dir,
                                   imagenet_weights=options.imagenet_weights)
            freeze_batch_norm(model)
            compute_in_global_policy(model)
        embedder = Embedder(model, options.name)
        validate = Validator(embedder, chip_set.chips, plan.pairs, plan.plotted,
                             distance_scale(options.trained_dir, options.name),
                             calibration(options.name).verify_threshold, plan.strangers,
                             chip_set.labels)
        super().__init__(chip_set, plan, settings, validate, logs, epochs, on_epoch)
        self.options, self.distribution, self.model, self.embedder = options, distribution, model, embedder
        self.chips = tuple(chip_set.chips[kind] for kind in embedder.kinds)
        self.start_weights = model.get_weights()
        self.bar: ProgressBar | None = None

    def weights(self) -> list[np.ndarray]:
        return self.model.get_weights()

    def make_step(self, embeddings: np.ndarray):
        """The head (margin losses: each class vector its identity's mean embedding), the optimizer, the step."""
        head = self.make_head(embeddings) if self.settings.is_margin else None
        with self.distribution.scope():
            variables = self.model.trainable_variables + (head.trainable_variables if head else [])
            optimizer = build_optimizer(self.options.learning_rate, variables)
        steps = -(-len(self.plan.first_batches) // self.distribution.num_replicas_in_sync)
        # a bar updated by hand: it shows the loss and the step's second figure via set_postfix
        self.bar = progress_bar(total=self.epochs * steps, desc="training", unit="batch")
        return make_step(self.model, head, optimizer, self.settings, self.distribution, self.options.jit_compile)

    def make_head(self, embeddings: np.ndarray) -> keras.layers.Layer:
        train_idx = self.plan.train_idx
        if np.isin(train_idx, self.validate.rows).all():
            train_embeddings = embeddings[self.validate.positions(train_idx)]
        else:
            train_embeddings = embed_rows(self.embedder, self.chip_set.chips, train_idx)
        with self.distribution.scope():
            return make_head(self.plan.num_classes, self.embedder.dim, train_embeddings, self.plan.classes[train_idx])

    def global_batches(self, epoch: int) -> np.ndarray:
        """The epoch's P x K batches as photo indices; a global batch is one whole P x K batch per replica."""
        plan, options = self.plan, self.options
        rng = np.random.default_rng([options.seed, epoch])
        batches = plan.first_batches if epoch == 1 else pk_batches(
            plan.classes[plan.train_idx], options.batch_size, options.photos_per_person, rng)
        replicas = self.distribution.num_replicas_in_sync
        batches = np.resize(batches, (-(-len(batches) // replicas) * replicas, batches.shape[1]))
        return plan.train_idx[batches].reshape(-1, batches.shape[1] * replicas)

    def run_epoch(self, epoch: int, step, result: TrainResult) -> tuple[float, float, int]:
        batches = self.global_batches(epoch)
        dataset = make_dataset(self.chips, self.plan.classes, batches, self.options.seed * 1_000_003 + epoch)
        losses, seconds = [], []
        short = "acc" if self.settings.is_margin else "active"
        for x, y in self.distribution.experimental_distribute_dataset(dataset):
            loss, second = (float(v) for v in step(x, y))
            result.steps += 1
            losses.append(loss)
            seconds.append(second)
            self.logs.scalars(result.steps, {"train/loss": loss, f"train/{self.settings.second_output}": second})
            self.bar.set_postfix({"epoch": epoch, "loss": f"{loss:.4f}", short: f"{second:.2f}"})
            self.bar.update()
        return float(np.mean(losses)), float(np.mean(seconds)), batches.size

    def finish(self) -> None:
        """Close the progress bar (`train` then sets the best validated weights, or the starting ones)."""
        if self.bar is not None:
            self.bar.close()


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
    devices: list[str] | None = None,
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
    e.g. for a benchmark's own held-out people. At most `max_pairs` held-out pairs are validated. `devices`: the
    GPU path (mixed float16, MirroredStrategy) on those devices instead of the GPUs found (`step.device_setup`).
    """
    settings = loss_settings(loss or strategy, margin, scale)
    learning_rate = default_learning_rate(name, "backbone") if learning_rate is None else learning_rate
    check_settings(epochs, batch_size, learning_rate, validation_split)
    options = RunOptions(name, weights_dir, imagenet_weights, learning_rate, batch_size, photos_per_person, seed,
                       jit_compile, trained_dir)
    plan = plan_run(chip_set, validation_split, options, max_pairs)
    log.info("%s loss, margin %g%s; %d training identities", settings.loss, settings.margin,
             f", scale {settings.scale:g}" if settings.is_margin else "", plan.num_classes)
    if name != "resnet50" and (devices or tf.config.list_physical_devices("GPU")):
        # Convert and cache under float32 first: converted under mixed_float16 the cached models would keep
        # float16 layers, and every later recognition run would compute in float16.
        pretrained_embedder(name, weights_dir)
    logs = TrainingLogs(log_dir)
    try:
        with device_setup(devices) as distribution:
            run = _BackboneRun(chip_set, plan, settings, options, distribution, logs, epochs, on_epoch)
            try:
                result = run.train()
            finally:
                run.finish()
            run.model.set_weights(run.best_weights if result.improved else run.start_weights)
    finally:
        logs.close()
    return run.model, result
