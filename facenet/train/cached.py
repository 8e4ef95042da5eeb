"""`train_cached`: fine-tune the top of the embedding on features the frozen bottom computes once per photo view.

`--tune adapter` (default): the frozen model's unit vectors, a residual adapter over them. `--tune top` / `top2`:
the feature maps before the last block(s) of each branch (`facenet/models/split.py`), the adapter plus those
blocks. Every photo is run through the frozen bottom once, training photos in several views (as they are,
mirrored, AUGMENTED_VIEWS altered copies); the top then trains with the chosen loss (online semi-hard triplet
mining by default, plus the keep loss that holds each view near its starting embedding) in a `tf.function` step
on P x K batches, one random view per photo and step, and the guard (`validation.is_better`) keeps the best epoch
only when it verifies held-out photos better.
"""

from __future__ import annotations

import logging
import tempfile
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
    DEFAULT_TUNE,
    DEFAULT_VALIDATION_SPLIT,
    GAIN_LEARNING_RATE,
    KEEP_WEIGHTS,
    PHOTOS_PER_PERSON,
    SPLIT_SEED,
    TOP_LEARNING_RATE,
)
from facenet.gallery.thresholds import calibration
from facenet.models.adapter import EmbeddingAdapter, adapter_of
from facenet.models.split import SplitEmbedder, split_embedder
from facenet.progress import progress
from facenet.train.augment import AUGMENTED_VIEWS, augment_view
from facenet.train.batches import pk_batches
from facenet.train.chips import ChipSet
from facenet.train.logs import TrainingLogs
from facenet.train.loop import GuardedRun, RunOptions, TrainResult, plan_run
from facenet.train.step import LossSettings, build_optimizer, make_head, make_step
from facenet.train.validation import MAX_VALIDATION_PAIRS, Validator

ADAPTER_HIDDEN = 512
"""Width of the adapter's hidden layer (a linear adapter measured the same on masks, slightly worse on clean)."""

EMBED_CHUNK = 256
"""Photos run through the frozen bottom per read of the chip cache."""

log = logging.getLogger(__name__)


@dataclass
class FeatureInput:
    """Cached features as the top's "chips": lets `Validator` run the top on them (kinds f0, f1, ...)."""

    model: keras.Model
    count: int

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(f"f{i}" for i in range(self.count))

    @property
    def dim(self) -> int:
        return int(self.model.output.shape[-1])

    def embed(self, chips: dict[str, np.ndarray]) -> np.ndarray:
        x = [np.asarray(chips[kind], np.float32) for kind in self.kinds]
        return np.asarray(self.model(x if len(x) > 1 else x[0], training=False))


@dataclass
class Features:
    """The frozen bottom's output: `plain[k]` (N, ...) of every photo as it is; `views[k]` (V, T, ...) of the
    training photos in V views. Memory maps in a scratch folder (a feature map is ~100 KB a view)."""

    plain: list[np.ndarray]
    views: list[np.ndarray]

    @property
    def megabytes(self) -> float:
        return sum(a.nbytes for a in self.plain + self.views) / 2**20


def compute_features(split: SplitEmbedder, chip_set: ChipSet, train_rows: np.ndarray, views: int,
                     scratch: Path, seed: int) -> Features:
    """Run every photo through the bottom once (training photos in `views` views: plain, mirrored, then altered
    copies), a chunk of the chip cache at a time."""
    kinds = [kind for kind in ("dlib", "sface") if kind in chip_set.chips]
    forward = tf.function(lambda *x: split.bottom([tf.cast(c, tf.float32) for c in x] if len(x) > 1
                                                  else tf.cast(x[0], tf.float32), training=False))
    shapes = split.feature_shapes
    dtype = np.float32 if len(shapes[0]) == 1 else np.float16
    plain = [np.lib.format.open_memmap(scratch / f"plain{k}.npy", "w+", dtype, (len(chip_set), *shape))
             for k, shape in enumerate(shapes)]
    viewed = [np.lib.format.open_memmap(scratch / f"views{k}.npy", "w+", dtype, (views, len(train_rows), *shape))
              for k, shape in enumerate(shapes)]
    where = np.full(len(chip_set), -1)
    where[train_rows] = np.arange(len(train_rows))

    def run(chips: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = forward(*[chips[kind] for kind in kinds])
        return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]

    chunks = range(0, len(chip_set), EMBED_CHUNK)
    for start in progress(chunks, "embedding photos", total=len(chunks), unit="chunk"):
        rows = np.arange(start, min(start + EMBED_CHUNK, len(chip_set)))
        chips = chip_set.take(rows)
        for k, array in enumerate(run(chips)):
            plain[k][rows] = array
        positions = where[rows][where[rows] >= 0]
        if not len(positions):
            continue
        own = {kind: c[where[rows] >= 0] for kind, c in chips.items()}
        for view in range(views):
            for k, array in enumerate(run(_view(own, view, positions, seed))):
                viewed[k][view, positions] = array
    return Features(plain, viewed)


def _view(chips: dict[str, np.ndarray], view: int, positions: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """View 0: the chips as they are; 1: mirrored; 2+: `augment_view` with a seed per photo and view."""
    if view == 0:
        return chips
    if view == 1:
        return {kind: c[:, :, ::-1] for kind, c in chips.items()}
    return {kind: np.stack([augment_view(chip, np.random.default_rng([seed, view, int(p)]))
                            for chip, p in zip(c, positions, strict=True)]) for kind, c in chips.items()}


def adapter_model(dim: int, hidden: int, weights: list[np.ndarray] | None = None) -> keras.Model:
    """The adapter alone, over (N, dim) vectors."""
    inputs = keras.Input((dim,), name="vector")
    adapter = EmbeddingAdapter(hidden, name="adapter", dtype="float32")
    model = keras.Model(inputs, adapter(inputs), name="adapter_model")
    if weights is not None:
        adapter.set_weights(weights)
    return model


@dataclass
class CachedOptions:
    """Settings of a cached run beside the loss: see `train_cached`."""

    tune: str = DEFAULT_TUNE
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = ADAPTER_LEARNING_RATE
    """The adapter's; the top blocks train at TOP_LEARNING_RATE (`top_learning_rate`)."""
    top_learning_rate: float = TOP_LEARNING_RATE
    validation_split: float = DEFAULT_VALIDATION_SPLIT
    photos_per_person: int = PHOTOS_PER_PERSON
    seed: int = SPLIT_SEED
    hidden: int = ADAPTER_HIDDEN
    max_pairs: int = MAX_VALIDATION_PAIRS
    start_scale: float = 1.0
    views: int = 2 + AUGMENTED_VIEWS
    keep: float | None = None
    """Weight of the keep loss (`facenet.train.keep`: each view's embedding held near its starting one); None: the
    tune's own (`config.KEEP_WEIGHTS`)."""
    scratch_dir: str | Path | None = None
    """Where the feature memory maps live during the run (a temporary folder in it; None: the system's)."""

    @property
    def keep_weight(self) -> float:
        return KEEP_WEIGHTS[self.tune] if self.keep is None else self.keep


class _Groups:
    """Adam per group of variables (the adapter's and the top blocks' learning rates), one optimizer to the step."""

    built = True
    """Each Adam is built on its own variables here (the margin step builds an optimizer that is not)."""

    def __init__(self, groups: list[tuple[float, list[tf.Variable]]]) -> None:
        self.optimizers = [(build_optimizer(rate, variables), {id(v) for v in variables}) for rate, variables in groups
                           if variables]

    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        return loss

    def apply_gradients(self, pairs) -> None:
        pairs = list(pairs)
        for optimizer, ids in self.optimizers:
            optimizer.apply_gradients([(g, v) for g, v in pairs if id(v) in ids])


def train_cached(chip_set: ChipSet, model: keras.Model, name: str, settings: LossSettings,
                 options: CachedOptions, log_dir: str | Path | None = None) -> tuple[keras.Model, TrainResult]:
    """Train the top of `model` (`options.tune`: adapter, top, top2; an adapter it already has is trained
    further) on `chip_set`. Returns the model with the best validated top when an epoch beat the starting point
    (`result.improved`), else the model as it came. Ctrl-C ends the run after the current step."""
    plan = plan_run(chip_set, options.validation_split, RunOptions(
        name, "", None, options.learning_rate, options.batch_size, options.photos_per_person, options.seed, False,
        None), options.max_pairs)
    existing = adapter_of(model)
    split = split_embedder(model, options.tune, existing.hidden if existing is not None else options.hidden)
    start_weights = split.top.get_weights()
    with tempfile.TemporaryDirectory(prefix=".features-", dir=options.scratch_dir) as scratch:
        started = time.perf_counter()
        features = compute_features(split, chip_set, plan.train_idx, options.views, Path(scratch), options.seed)
        embed_seconds = time.perf_counter() - started
        log.info("features of %d photos (%d training photos in %d views): %.0f MB, %.0f s", len(chip_set),
                 len(plan.train_idx), options.views, features.megabytes, embed_seconds)
        inputs = FeatureInput(split.top, len(features.plain))
        validate = Validator(inputs, dict(zip(inputs.kinds, features.plain, strict=True)), plan.pairs, plan.plotted,
                             options.start_scale, calibration(name).verify_threshold, plan.strangers,
                             chip_set.labels)
        logs = TrainingLogs(log_dir)
        try:
            run = _CachedRun(chip_set, plan, settings, options, split, validate, features, logs)
            result = run.train()
        finally:
            logs.close()
    result.embed_seconds = round(embed_seconds, 2)
    result.feature_megabytes = round(features.megabytes, 1)
    if not result.improved:
        split.top.set_weights(start_weights)
        return model, result
    split.top.set_weights(run.best_weights)
    return split.joined(), result


class _CachedRun(GuardedRun):
    """One cached run: the guarded epochs of `GuardedRun`, each a pass of steps over the cached views."""

    def __init__(self, chip_set: ChipSet, plan, settings: LossSettings, options: CachedOptions, split: SplitEmbedder,
                 validate: Validator, features: Features, logs: TrainingLogs) -> None:
        super().__init__(chip_set, plan, settings, validate, logs, options.epochs)
        self.options, self.split, self.features = options, split, features
        self.rng = np.random.default_rng(options.seed)
        self.classes = plan.classes[plan.train_idx]
        self.start: np.ndarray | None = None
        """(V, T, dim) every training view's embedding by the top as the run started: the keep loss's targets (None
        without the keep loss)."""

    def weights(self) -> list[np.ndarray]:
        return self.split.top.get_weights()

    def make_step(self, embeddings: np.ndarray):
        """The compiled step over the top (and, for margin losses, a cosine head started at the classes' means)."""
        top = self.split.top
        head = None
        if self.options.keep_weight:
            self.start = np.stack([self.embed_view(view) for view in range(self.options.views)])
        if self.settings.is_margin:
            plain = self.start[0] if self.start is not None else self.embed_view(0)
            head = make_head(self.plan.num_classes, int(top.output.shape[-1]), plain, self.classes)
        adapter = self.split.adapter.trainable_variables
        gains = [v for gain in self.split.gains for v in gain.trainable_variables]
        blocks = [v for v in top.trainable_variables if all(v is not a for a in adapter + gains)]
        groups = [(self.options.learning_rate, adapter + (head.trainable_variables if head else [])),
                  (GAIN_LEARNING_RATE, gains), (self.options.top_learning_rate, blocks)]
        return make_step(top, head, _Groups(groups), self.settings, keep=self.options.keep_weight)

    def embed_view(self, view: int) -> np.ndarray:
        """Every training photo's embedding in `view` by the top as it is now."""
        inputs = FeatureInput(self.split.top, len(self.features.views))
        return np.concatenate([inputs.embed({f"f{k}": v[view, i:i + EMBED_CHUNK] for k, v in
                                             enumerate(self.features.views)})
                               for i in range(0, len(self.classes), EMBED_CHUNK)])

    def run_epoch(self, epoch: int, step, result: TrainResult) -> tuple[float, float, int]:
        """One pass of P x K batches over the training photos, each photo in a random view."""
        batches = pk_batches(self.classes, self.options.batch_size, self.options.photos_per_person, self.rng)
        losses, seconds = [], []
        for batch in batches:
            view = self.rng.integers(self.options.views, size=len(batch))
            order = np.argsort(batch)
            x = tuple(tf.constant(np.asarray(v[view[order], batch[order]], np.float32)) for v in self.features.views)
            start = () if self.start is None else (tf.constant(self.start[view[order], batch[order]]),)
            loss, second = (float(v) for v in step(x, tf.constant(self.classes[batch[order]]), *start))
            result.steps += 1
            losses.append(loss)
            seconds.append(second)
            self.logs.scalars(result.steps, {"train/loss": loss, f"train/{self.settings.second_output}": second})
        return float(np.mean(losses)), float(np.mean(seconds)), batches.size
