"""Fine-tuning the embedder on data/<person>/ photos: online triplet mining on P x K batches, guarded by validation.

Stages, each a function so that tests and benchmarks can drive them one by one:
`load_chips` (detect once, cache the aligned chips) -> `split_validation` (hold out photos per person) ->
`pk_batches` + `make_dataset` (P identities x K photos, augmented, as tf.data) -> `make_train_step`
(the tf.function step) -> `train` (epochs, validation after each, best weights kept in memory) ->
`train_command` (saves the best weights only if they beat the starting point, rebuilds the database).

The validation guard compares verification on held-out pairs: the trained weights are saved only when the AUC is
strictly higher than before training (or equal with a strictly higher best-threshold accuracy) AND the accuracy
at the calibrated threshold recognition uses (the model's verify threshold) is not lower: see `_better`.
Ctrl-C stops after the current step; only completed (validated) epochs count. TensorBoard scalars and the
PCA plots (pca_before.png, pca_after.png) go to <log_dir>/<timestamp>/.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from facenet.config import (
    BRIGHTNESS_DELTA,
    CHIP_PADDING,
    CHIP_SIZE,
    CHIPS_CACHE_FILE,
    CONTRAST_RANGE,
    DEFAULT_MODEL,
    JITTER_PIXELS,
    LEARNING_RATES,
    MIN_BATCH,
    PHOTOS_PER_PERSON,
    SPLIT_SEED,
    calibration,
)
from facenet.console import emit_json
from facenet.embed import Embedder
from facenet.evaluate import accuracy_at, auc, best_threshold
from facenet.files import atomic_write, file_sha256
from facenet.images import list_people
from facenet.model import (
    WeightsError,
    build_embedder,
    distance_scale,
    model_name,
    pretrained_embedder,
    save_trained_weights,
    trained_weights_path,
)
from facenet.pipeline import FacePipeline, empty_chips
from facenet.triplet import STRATEGIES, triplet_loss
from facenet.zoo import ZooError

log = logging.getLogger(__name__)

INTERRUPTED_EXIT = 130


class TrainingError(ValueError):
    """Training cannot start (too few people or photos, bad settings): one line for the user, exit code 2."""


# --------------------------------------------------------------------------- chips of data/


@dataclass
class ChipSet:
    """The aligned chips of data/: one set per usable photo, with its person's index into `names`."""

    chips: dict[str, np.ndarray]
    """Per chip kind of the model: (N, side, side, 3) uint8 RGB."""
    labels: np.ndarray
    """(N,) int32 person index."""
    names: list[str]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {kind: chips[index] for kind, chips in self.chips.items()}


def scan_people(data_dir: str | Path) -> list[tuple[str, list[Path]]]:
    """(person, photos) per immediate subfolder of data_dir, sorted; photos lying directly in it are ignored."""
    people, loose = list_people(data_dir)
    if loose:
        log.warning("%s: %d photo(s) directly in the data folder ignored; put them in %s/<person name>/",
                    data_dir, len(loose), data_dir)
    return people


Cached = dict[str, dict[str, np.ndarray]]
"""{photo key: {chip kind: chip}}."""


def _read_cache(path: Path, kinds: tuple[str, ...]) -> tuple[Cached, dict[str, str]]:
    """Chips by photo key and {key: reason the photo gave no chip}; empty when missing, rebuilt if corrupt."""
    if not path.exists():
        return {}, {}
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, failed, reasons = data["keys"], data["failed_keys"], data["failed_reasons"]
            arrays = {kind: data[f"chips_{kind}"] for kind in kinds}
            for kind, chips in arrays.items():
                side = empty_chips(kind).shape[1]
                if chips.shape != (len(keys), side, side, 3) or chips.dtype != np.uint8:
                    raise ValueError(f"{kind} chips of shape {chips.shape} and type {chips.dtype}")
            if len(failed) != len(reasons):
                raise ValueError("failed keys and reasons differ in length")
            found = {key: {kind: arrays[kind][i] for kind in kinds} for i, key in enumerate(keys.tolist())}
            return found, dict(zip(failed.tolist(), reasons.tolist(), strict=True))
    except Exception as error:  # noqa: BLE001 - any unreadable cache is rebuilt
        log.warning("%s: corrupt or other-model chip cache (%s); detecting faces again", path, error)
        return {}, {}


def _write_cache(path: Path, chips: Cached, failed: dict[str, str], kinds: tuple[str, ...]) -> None:
    def write(tmp: Path) -> None:
        arrays = {f"chips_{kind}": np.stack([c[kind] for c in chips.values()]) if chips else empty_chips(kind)
                  for kind in kinds}
        with open(tmp, "wb") as handle:
            np.savez(handle, keys=np.array(list(chips), dtype=str), failed_keys=np.array(list(failed), dtype=str),
                     failed_reasons=np.array(list(failed.values()), dtype=str), **arrays)

    try:
        atomic_write(path, write)
    except OSError as error:
        log.warning("%s: could not write the chip cache (%s); faces will be detected again next time", path, error)


def _photo_keys(people: list[tuple[str, list[Path]]], suffix: str) -> list[tuple[int, Path, str]]:
    photos = []
    for person, (_, files) in enumerate(people):
        for file in files:
            try:
                photos.append((person, file, file_sha256(file) + suffix))
            except OSError as error:
                log.warning("%s: skipped, unreadable (%s)", file, error.strerror or error)
    return photos


def _detect_pending(pending: dict[str, Path], pipeline: FacePipeline) -> tuple[Cached, dict[str, str]]:
    found: Cached = {}
    failed: dict[str, str] = {}
    keys = {file: key for key, file in pending.items()}
    for file, subject, image in pipeline.read_subjects(list(pending.values()), "largest", desc="detecting faces"):
        if subject.face is None:
            failed[keys[file]] = subject.reason
        else:
            found[keys[file]] = {kind: chips[0] for kind, chips in pipeline.chips(image, [subject.face]).items()}
    return found, failed


def load_chips(data_dir: str | Path, pipeline: FacePipeline, cache_path: str | Path | None = None) -> ChipSet:
    """The largest face of every photo of data/<person>/ as aligned chips (the pipeline's face choice and fallback
    chain, as enrollment uses); detection runs once per photo.

    Unreadable photos and photos without a face are skipped with one warning line each (also when the
    verdict comes from the cache). The cache holds exactly the current photos and is rewritten atomically
    when anything changed.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TrainingError(f"{data_dir}: data folder not found (expected {data_dir}/<person name>/*.jpg)")
    kinds = pipeline.embedder.kinds
    cached, cached_failed = _read_cache(Path(cache_path), kinds) if cache_path else ({}, {})
    people = scan_people(data_dir)
    photos = _photo_keys(people, f":{pipeline.detector.kind}:{'+'.join(kinds)}:{CHIP_SIZE}:{CHIP_PADDING}")
    pending = {key: file for _, file, key in photos if key not in cached and key not in cached_failed}
    found, failed = _detect_pending(pending, pipeline)
    keep_chips, keep_failed = {**cached, **found}, {**cached_failed, **failed}
    labels, paths = [], []
    used_chips: Cached = {}
    used_failed: dict[str, str] = {}
    for person, file, key in photos:
        if key in keep_chips:
            used_chips[key] = keep_chips[key]
            labels.append(person)
            paths.append(str(file))
        else:
            used_failed[key] = keep_failed[key]
            log.warning("%s: skipped, %s", file, keep_failed[key])
    if cache_path and (found or failed or len(used_chips) != len(cached) or len(used_failed) != len(cached_failed)):
        _write_cache(Path(cache_path), used_chips, used_failed, kinds)
    order = [key for _, _, key in photos if key in keep_chips]
    chips = {kind: np.stack([keep_chips[key][kind] for key in order]) if order else empty_chips(kind)
             for kind in kinds}
    return ChipSet(chips, np.array(labels, np.int32), [name for name, _ in people], paths)


# --------------------------------------------------------------------------- validation


def split_validation(
    labels: np.ndarray, validation_split: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): `validation_split` of each person's photos, at least one from
    every person with 3+ photos, always leaving 2 to train on; people with 1 or 2 photos are not held out."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for person in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == person))
        hold = min(max(1, round(len(idx) * validation_split)), len(idx) - 2) if len(idx) >= 3 else 0
        held.extend(idx[:hold])
        train.extend(idx[hold:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(held, dtype=np.int64))


def validation_pairs(
    labels: np.ndarray, held: np.ndarray, train: np.ndarray, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, same) index pairs, each with at least one held-out photo: a new photo against the known ones.

    Same-person pairs: every held-out photo with every other photo of its person (held-out or training).
    Different-person pairs: as many, sampled among held-out photos first, then held-out x training photos.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    ha, hb = np.triu_indices(len(held), 1)
    ha, hb = held[ha], held[hb]
    ta, tb = np.repeat(held, len(train)), np.tile(train, len(held))
    same_held, same_train = labels[ha] == labels[hb], labels[ta] == labels[tb]
    pos_a, pos_b = np.r_[ha[same_held], ta[same_train]], np.r_[hb[same_held], tb[same_train]]
    neg_a, neg_b = [], []
    for a, b in ((ha[~same_held], hb[~same_held]), (ta[~same_train], tb[~same_train])):
        pick = rng.choice(len(a), min(len(pos_a) - sum(map(len, neg_a)), len(a)), replace=False)
        neg_a.append(a[np.sort(pick)])
        neg_b.append(b[np.sort(pick)])
    neg_a, neg_b = np.concatenate(neg_a), np.concatenate(neg_b)
    same = np.r_[np.ones(len(pos_a), bool), np.zeros(len(neg_a), bool)]
    return np.r_[pos_a, neg_a].astype(np.int64), np.r_[pos_b, neg_b].astype(np.int64), same


def verification_metrics(
    distances: np.ndarray, same: np.ndarray, deployed_threshold: float
) -> dict[str, float]:
    """Verification figures of `distance <= t` on (distances, same) pairs, with the LFW protocol's metrics.

    accuracy and threshold: the best-accuracy threshold (`evaluate.best_threshold`); auc: the chance that a
    same-person pair is closer than a different-person pair; deployed_accuracy: at `deployed_threshold`, the
    threshold recognition would use (the model's calibrated verify threshold times the weights' distance scale).
    """
    threshold, accuracy = best_threshold(distances, same)
    return {
        "accuracy": accuracy,
        "auc": auc(distances, same),
        "threshold": threshold,
        "deployed_accuracy": accuracy_at(distances, same, deployed_threshold),
    }


def _better(candidate: dict[str, float], best: dict[str, float], start: dict[str, float]) -> bool:
    """The guard: a strictly higher AUC than the best so far (or the same AUC and a strictly higher best-threshold
    accuracy), and no lower accuracy than at the start at the calibrated threshold recognition uses.

    AUC and best-threshold accuracy do not see the scale of distances; fine-tuning spreads the embeddings (with
    -m 0.5 distances about double). Saved weights carry their distance scale (median different-person distance
    relative to the start), which rescales every calibrated threshold; the last condition checks the rescaled
    threshold really works on the held-out pairs.
    """
    return _ranks_better(candidate, best) and candidate["deployed_accuracy"] >= start["deployed_accuracy"]


def _ranks_better(candidate: dict[str, float], reference: dict[str, float]) -> bool:
    return (candidate["auc"], candidate["accuracy"]) > (reference["auc"], reference["accuracy"])


# --------------------------------------------------------------------------- P x K batches


def pk_batches(
    labels: np.ndarray, batch_size: int, k: int = PHOTOS_PER_PERSON, rng: np.random.Generator | None = None
) -> np.ndarray:
    """One epoch of P x K batches: an (n_batches, B) array of indices into `labels`.

    Every photo of a person with 2+ photos appears about once, in groups of K of the same person (at most
    one group per person per batch, so each batch has positives for P identities; never fewer than 2).
    People with one photo fill a proportional share of each batch as negatives; leftover slots get extra
    groups or single photos of people not yet in the batch. B = min(batch_size, photos): every batch has
    the same size (one trace of the step) and no photo twice.
    """
    rng = rng or np.random.default_rng()
    labels = np.asarray(labels)
    by_person = {int(p): np.flatnonzero(labels == p) for p in np.unique(labels)}
    anchors = {p: idx for p, idx in by_person.items() if len(idx) >= 2}
    singles = [int(idx[0]) for idx in by_person.values() if len(idx) == 1]
    if len(anchors) < 2:
        raise TrainingError("training needs at least 2 people with 2 or more photos each")
    size = min(batch_size, len(labels))
    if size < MIN_BATCH:
        raise TrainingError(f"batch size {batch_size} is too small: at least {MIN_BATCH} (2 people x 2 photos)")
    k = max(2, min(k, size // 2))
    single_quota = min(len(singles), round(size * len(singles) / len(labels)), max(0, size - 2 * k))

    groups = []
    for person, idx in anchors.items():
        idx = rng.permutation(idx)
        for start in range(0, len(idx), k):
            chunk = idx[start : start + k]
            if len(chunk) < 2:  # a lone leftover photo gets a partner of the same person
                chunk = np.r_[chunk, rng.choice(idx[:start])]
            groups.append((person, chunk))
    pending = [groups[i] for i in rng.permutation(len(groups))]
    single_queue = [singles[i] for i in rng.permutation(len(singles))]

    def fresh_group(batch: list[int], people: set[int], room: int) -> bool:
        """Add k (or fewer) random photos of a random 2+-photo person not yet in the batch."""
        others = [p for p in anchors if p not in people]
        if room < 2 or not others:
            return False
        person = others[rng.integers(len(others))]
        take = min(k, room, len(anchors[person]))
        batch.extend(rng.choice(anchors[person], take, replace=False).tolist())
        people.add(person)
        return True

    batches = []
    while pending:
        batch: list[int] = []
        people: set[int] = set()
        rest = []
        for person, chunk in pending:
            if person not in people and len(batch) + len(chunk) <= size - single_quota:
                batch.extend(chunk.tolist())
                people.add(person)
            else:
                rest.append((person, chunk))
        pending = rest
        while len(people) < 2 and fresh_group(batch, people, size - len(batch)):
            pass
        for _ in range(single_quota):
            if not single_queue:
                single_queue = [singles[i] for i in rng.permutation(len(singles))]
            candidate = single_queue.pop()
            if candidate not in batch:
                batch.append(candidate)
        while fresh_group(batch, people, size - len(batch)):
            pass
        if len(batch) < size:
            taken = set(batch)
            free = np.array([i for i in range(len(labels)) if i not in taken])
            outside = free[~np.isin(labels[free], list(people))]
            pool = outside if len(outside) >= size - len(batch) else free
            batch.extend(rng.choice(pool, size - len(batch), replace=False).tolist())
        batches.append(batch)
    return np.array(batches, dtype=np.int64)


# --------------------------------------------------------------------------- augmentation and dataset


def augment_chip(chip: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A uint8 (side, side, 3) chip -> float32 0..255: random mirror, shift of a few pixels, brightness, contrast.

    Stateless: the same seed (shape (2,) int) gives the same result.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    x = tf.image.stateless_random_flip_left_right(chip, seeds[0])
    pad = [[JITTER_PIXELS, JITTER_PIXELS], [JITTER_PIXELS, JITTER_PIXELS], [0, 0]]
    x = tf.image.stateless_random_crop(tf.pad(x, pad, mode="REFLECT"), tf.shape(chip), seeds[1])
    x = tf.cast(x, tf.float32)
    x = tf.image.stateless_random_brightness(x, BRIGHTNESS_DELTA, seeds[2])
    x = tf.image.stateless_random_contrast(x, *CONTRAST_RANGE, seeds[3])
    return tf.clip_by_value(x, 0.0, 255.0)


def make_dataset(
    chips: tuple[tf.Tensor, ...], labels: np.ndarray, batches: np.ndarray, seed: int
) -> tf.data.Dataset:
    """Augmented (x, y int32 (B,)) batches in the order of `batches` (n, B) indices; x is one float32 batch per
    chip kind (a tuple, in the model's input order), each augmented with the photo's own seed."""
    flat = batches.reshape(-1)
    seeds = np.stack([np.full(len(flat), seed), np.arange(len(flat))], axis=1).astype(np.int64)
    labels = tf.constant(labels, tf.int32)

    def load(index: tf.Tensor, item_seed: tf.Tensor) -> tuple[tuple[tf.Tensor, ...], tf.Tensor]:
        x = tuple(augment_chip(tf.gather(kind, index), item_seed) for kind in chips)
        return x, tf.gather(labels, index)

    dataset = tf.data.Dataset.from_tensor_slices((flat, seeds)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batches.shape[1], drop_remainder=True).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- the step


def make_train_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    margin: float,
    strategy: str = "semi_hard",
    distribution: tf.distribute.Strategy | None = None,
    jit_compile: bool = False,
):
    """`step(x, y) -> (loss, active_fraction)`: one compiled update on a batch (per replica under a distribution).

    The loss is computed in float32 whatever the compute dtype; the optimizer's `scale_loss` applies the
    loss scale of a LossScaleOptimizer (mixed precision) and is the identity otherwise. Under
    MirroredStrategy each replica's batch is its own P x K batch; gradients are summed, so each replica's
    loss is divided by the number of replicas.
    """
    distribution = distribution or tf.distribute.get_strategy()
    replicas = distribution.num_replicas_in_sync

    def replica_step(x: tuple[tf.Tensor, ...], y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            embeddings = tf.cast(model(list(x) if len(x) > 1 else x[0], training=True), tf.float32)
            loss, active = triplet_loss(y, embeddings, margin, strategy)
            scaled = optimizer.scale_loss(loss / replicas)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, active

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def step(x: tuple[tf.Tensor, ...], y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        loss, active = distribution.run(replica_step, args=(x, y))
        mean = tf.distribute.ReduceOp.MEAN
        return distribution.reduce(mean, loss, axis=None), distribution.reduce(mean, active, axis=None)

    return step


@contextlib.contextmanager
def device_setup() -> Iterator[tf.distribute.Strategy]:
    """GPUs: mixed float16 (set before the model is built) and MirroredStrategy for 2+; CPU: float32 as is.

    The previous dtype policy is restored afterwards, so models built later (the database's) are float32.
    """
    gpus = tf.config.list_physical_devices("GPU")
    previous = keras.mixed_precision.global_policy()
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    distribution = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    log.info("training on %s", f"{len(gpus)} GPU(s), mixed float16" if gpus else "the CPU, float32")
    try:
        yield distribution
    finally:
        keras.mixed_precision.set_global_policy(previous)


# --------------------------------------------------------------------------- training


def freeze_batch_norm(model: keras.Model) -> None:
    """Batch-norm layers keep their pretrained statistics and scales: P x K batches of a few people would
    otherwise overwrite statistics learnt on millions of faces (SFace has them; the dlib twin has fixed affines)."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


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
    plots: list[Path] = field(default_factory=list)
    off_threshold: bool = False
    """An epoch ranked pairs better than the start but was refused: the rescaled threshold lost accuracy."""


def _scalar_metadata() -> bytes:
    """TensorBoard's scalar plugin tag, so that scalars are written without the tensorboard package."""
    from tensorflow.core.framework import summary_pb2

    plugin = summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    return summary_pb2.SummaryMetadata(plugin_data=plugin).SerializeToString()


class _Logs:
    """log_dir/<timestamp>/: TensorBoard scalars and the PCA plots; a folder that cannot be written is skipped."""

    def __init__(self, log_dir: str | Path | None) -> None:
        self.run_dir: Path | None = None
        self.writer = tf.summary.create_noop_writer()
        self.metadata = _scalar_metadata()
        if log_dir is None:
            return
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for attempt in range(100):
            candidate = Path(log_dir) / (stamp if attempt == 0 else f"{stamp}-{attempt}")
            try:
                candidate.mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                continue
            except OSError as error:
                log.warning("%s: cannot write training logs (%s); continuing without them", log_dir, error)
                return
            self.run_dir = candidate
            self.writer = tf.summary.create_file_writer(str(candidate))
            return

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with self.writer.as_default():
            for tag, value in values.items():
                tf.summary.write(tag, float(value), step=step, metadata=self.metadata)

    def plot(self, name: str, embeddings: np.ndarray, chip_set: ChipSet, held: np.ndarray, title: str) -> Path | None:
        if self.run_dir is None:
            return None
        from facenet.visualize import save_pca_plot

        path = self.run_dir / name
        try:
            save_pca_plot(path, embeddings, chip_set.labels, chip_set.names, title, highlight=held)
        except (OSError, ValueError) as error:
            log.warning("%s: PCA plot not written (%s)", path, error)
            return None
        return path

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _distances(embeddings: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(embeddings[a] - embeddings[b], axis=1)


def train(
    chip_set: ChipSet,
    weights_dir: str | Path,
    name: str = DEFAULT_MODEL,
    imagenet_weights: str | Path | None = None,
    epochs: int = 20,
    margin: float = 0.5,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    strategy: str = "semi_hard",
    log_dir: str | Path | None = None,
    validation_split: float = 0.2,
    photos_per_person: int = PHOTOS_PER_PERSON,
    seed: int = SPLIT_SEED,
    jit_compile: bool = False,
    on_epoch: Callable[[int, keras.Model, dict[str, float]], None] | None = None,
    pretrained: bool = False,
) -> tuple[keras.Model, TrainResult]:
    """Fine-tune the embedder (the current one: trained weights when present) on `chip_set`; save nothing.

    Returns the model and what happened. The model holds the best validated weights when an epoch beat the
    starting point (`result.improved`), else the starting weights. Ctrl-C stops after the current step:
    `result.interrupted`, and only completed epochs count. `on_epoch(epoch, model, metrics)` is called after
    each epoch's validation (epoch 0: before training), e.g. for a benchmark's own held-out people.
    """
    usable = int(np.sum(np.bincount(chip_set.labels) >= 2)) if len(chip_set) else 0
    if usable < 2:
        raise TrainingError(f"training needs at least 2 people with 2 or more usable photos; found {usable}")
    train_idx, held = split_validation(chip_set.labels, validation_split, seed)
    if len(held) == 0:
        raise TrainingError("validation needs at least one person with 3 or more usable photos (one is held out)")
    pair_a, pair_b, same = validation_pairs(chip_set.labels, held, train_idx, seed)
    train_labels = chip_set.labels[train_idx]
    first_batches = pk_batches(train_labels, batch_size, photos_per_person, np.random.default_rng(seed))
    logs = _Logs(log_dir)
    if name != "resnet50" and tf.config.list_physical_devices("GPU"):
        # Convert and cache under float32 first: converted under mixed_float16 the cached models would keep
        # float16 layers, and every later recognition run would compute in float16.
        pretrained_embedder(name, weights_dir)
    with device_setup() as distribution:
        replicas = distribution.num_replicas_in_sync
        with distribution.scope():
            model = build_embedder(name, weights_dir, trained=not pretrained, imagenet_weights=imagenet_weights)
            freeze_batch_norm(model)
            optimizer = keras.optimizers.Adam(learning_rate)
            if keras.mixed_precision.global_policy().name == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)  # slots made here, not inside the traced step
        embedder = Embedder(model, name)
        start_scale = distance_scale(weights_dir, name, pretrained)
        verify_threshold = calibration(name).verify_threshold
        step = make_train_step(model, optimizer, margin, strategy, distribution, jit_compile)
        reference: dict[str, float] = {}

        def validate() -> tuple[dict[str, float], np.ndarray]:
            """Metrics on the held-out pairs, at the threshold rescaled by how far the embedding has spread."""
            embeddings = embedder.embed(chip_set.chips)
            distances = _distances(embeddings, pair_a, pair_b)
            median = float(np.median(distances[~same]))
            scale = start_scale * median / reference.setdefault("median", median)
            metrics = verification_metrics(distances, same, verify_threshold * scale)
            return {**metrics, "distance_scale": scale, "deployed_threshold": verify_threshold * scale}, embeddings

        before, embeddings = validate()
        log.info("validation before training (%d pairs, %d held-out photos): %s", len(same), len(held), _fmt(before))
        logs.scalars(0, {f"val/{key}": value for key, value in before.items()})
        if on_epoch:
            on_epoch(0, model, before)
        result = TrainResult(before, dict(before), False, 0, 0, False, logs.run_dir, len(same), len(held))
        title = f"before training: {_short(before)}"
        result.plots.append(logs.plot("pca_before.png", embeddings, chip_set, held, title))
        start_weights, best_weights, best_embeddings = model.get_weights(), None, embeddings
        last: tuple[dict[str, float], np.ndarray] | None = None
        chips = tuple(tf.constant(chip_set.chips[kind]) for kind in embedder.kinds)
        steps_per_epoch = -(-len(first_batches) // replicas)
        # tqdm itself, not console.progress: the bar shows the loss and active fraction via set_postfix.
        bar = tqdm(total=epochs * steps_per_epoch, desc="training", unit="batch", file=sys.stderr,
                   dynamic_ncols=True, leave=False)
        step_seconds, step_images = 0.0, 0
        try:
            for epoch in range(1, epochs + 1):
                rng = np.random.default_rng([seed, epoch])
                batches = first_batches if epoch == 1 else pk_batches(train_labels, batch_size, photos_per_person, rng)
                # Each replica trains on its own whole P x K batch: a global batch is `replicas` of them.
                batches = np.resize(batches, (-(-len(batches) // replicas) * replicas, batches.shape[1]))
                global_batches = train_idx[batches].reshape(-1, batches.shape[1] * replicas)
                dataset = make_dataset(chips, chip_set.labels, global_batches, seed * 1_000_003 + epoch)
                epoch_loss, epoch_active = [], []
                for x, y in distribution.experimental_distribute_dataset(dataset):
                    started = time.perf_counter()
                    loss, active = (float(v) for v in step(x, y))
                    if result.steps > 0:  # the first step includes tracing
                        step_seconds += time.perf_counter() - started
                        step_images += global_batches.shape[1]
                    result.steps += 1
                    epoch_loss.append(loss)
                    epoch_active.append(active)
                    logs.scalars(result.steps, {"train/loss": loss, "train/active_fraction": active})
                    bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", active=f"{active:.2f}")
                    bar.update()
                last = validate()
                metrics = last[0]
                result.epochs_run = epoch
                result.losses.append(float(np.mean(epoch_loss)))
                result.active.append(float(np.mean(epoch_active)))
                logs.scalars(epoch, {**{f"val/{key}": value for key, value in metrics.items()},
                                     "epoch/loss": result.losses[-1], "epoch/active_fraction": result.active[-1]})
                log.info("epoch %d/%d: loss %.4f, active triplets %.2f, validation %s",
                         epoch, epochs, result.losses[-1], result.active[-1], _fmt(metrics))
                if on_epoch:
                    on_epoch(epoch, model, metrics)
                if _better(metrics, result.val_after, before):
                    result.val_after, result.best_epoch, result.improved = metrics, epoch, True
                    best_weights, best_embeddings = model.get_weights(), last[1]
                elif _ranks_better(metrics, before) and metrics["deployed_accuracy"] < before["deployed_accuracy"]:
                    result.off_threshold = True
        except KeyboardInterrupt:
            result.interrupted = True
            log.warning("interrupted during epoch %d; only completed epochs count", result.epochs_run + 1)
        finally:
            bar.close()
        result.images_per_second = step_images / step_seconds if step_seconds else 0.0
        if last is not None:
            if result.improved:
                shown, title = best_embeddings, f"after epoch {result.best_epoch} (kept)"
            else:
                result.val_after = last[0]
                shown, title = last[1], f"after epoch {result.epochs_run} (not kept)"
            title = f"{title}: {_short(result.val_after)}"
            result.plots.append(logs.plot("pca_after.png", shown, chip_set, held, title))
        model.set_weights(best_weights if result.improved else start_weights)
        result.plots = [plot for plot in result.plots if plot is not None]
        logs.close()
    return model, result


# --------------------------------------------------------------------------- the command


def _check_settings(epochs: int, margin: float, batch_size: int, learning_rate: float, strategy: str,
                    validation_split: float) -> None:
    if epochs < 1:
        raise TrainingError(f"epochs must be at least 1, got {epochs}")
    if margin <= 0:
        raise TrainingError(f"the margin must be positive, got {margin}")
    if batch_size < MIN_BATCH:
        raise TrainingError(f"batch size must be at least {MIN_BATCH} (2 people x 2 photos), got {batch_size}")
    if learning_rate < 0:
        raise TrainingError(f"the learning rate must not be negative, got {learning_rate}")
    if strategy not in STRATEGIES:
        raise TrainingError(f"unknown mining strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not 0 <= validation_split < 1:
        raise TrainingError(f"validation_split must be in [0, 1), got {validation_split}")


def _current_weights(weights_dir: str | Path, model: str, imagenet_weights: str | None) -> str:
    """The weights recognition uses when nothing new is saved: trained, else pretrained/ImageNet ('' for none)."""
    trained = trained_weights_path(weights_dir, model)
    if trained.exists():
        return str(trained)
    if model != "resnet50":
        return f"the pretrained {model} model"
    return str(imagenet_weights or "")


def _rebuild_database(data_dir: str | Path, database_dir: str | Path, weights_dir: str | Path, model: str,
                      detector: str) -> str:
    """Re-enroll data/ with the saved weights (a fresh float32 model: the fingerprint recognition will see)."""
    try:
        from facenet.database import sync_database

        database, _ = sync_database(data_dir, database_dir, FacePipeline(detector, model, weights_dir))
    except Exception as error:  # noqa: BLE001 - the weights are saved; recognition rebuilds a stale database
        log.warning("database not rebuilt (%s); the next recognition run rebuilds it", error)
        return "not rebuilt (see the warning above)"
    return f"rebuilt with the new weights ({len(database)} people)"


_OFF_THRESHOLD = " (some ranked pairs better, but the rescaled threshold lost accuracy: try a lower -lr)"


def _short(metrics: dict[str, float]) -> str:
    return f"AUC {metrics['auc']:.4f}, accuracy {metrics['accuracy']:.4f} (held-out pairs)"


def _fmt(metrics: dict[str, float]) -> str:
    return (f"accuracy {metrics['accuracy']:.4f} (threshold {metrics['threshold']:.3f}), AUC {metrics['auc']:.4f}, "
            f"accuracy at the rescaled threshold {metrics['deployed_threshold']:.3f} "
            f"{metrics['deployed_accuracy']:.4f}")


def train_command(
    data_dir: str,
    weights_dir: str,
    database_dir: str,
    model: str,
    imagenet_weights: str | None,
    epochs: int,
    margin: float,
    batch_size: int,
    learning_rate: float | None,
    strategy: str,
    detector: str,
    log_dir: str,
    validation_split: float,
    as_json: bool,
    pretrained: bool = False,
) -> int:
    """`main.py -t True`: train, save only if validation improved, rebuild the database; returns the exit code.

    Exit codes: 0 done (saved or not), 2 cannot train (one line on stderr), 130 interrupted by Ctrl-C
    (the validated best of the completed epochs is saved if it beat the start; the database is left for the
    next run to rebuild). With `as_json` the last stdout line is {val_before, val_after, saved, weights, seconds}.
    """
    started = time.monotonic()
    if learning_rate is None:
        learning_rate = LEARNING_RATES.get(model_name(model), 1e-4)
    try:
        _check_settings(epochs, margin, batch_size, learning_rate, strategy, validation_split)
        pipeline = FacePipeline(detector, model, weights_dir, pretrained)
        chip_set = load_chips(data_dir, pipeline, Path(database_dir) / CHIPS_CACHE_FILE)
        log.info("%d chips of %d people from %s", len(chip_set), len(set(chip_set.labels.tolist())), data_dir)
        trained, result = train(
            chip_set, weights_dir, pipeline.model, imagenet_weights, epochs, margin, batch_size, learning_rate,
            strategy, log_dir, validation_split, pretrained=pretrained,
        )
        weights = _current_weights(weights_dir, pipeline.model, imagenet_weights)
        database = "unchanged"
        if result.improved:
            weights = str(save_trained_weights(trained, weights_dir, pipeline.model,
                                               result.val_after["distance_scale"]))
            if result.interrupted:
                database = "will be rebuilt by the next recognition run"
            else:
                database = _rebuild_database(data_dir, database_dir, weights_dir, pipeline.model, detector)
    except (WeightsError, ZooError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: cannot save the trained weights ({error}); the previous weights are unchanged",
              file=sys.stderr)
        return 1
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing saved, the previous weights are unchanged", file=sys.stderr)
        return INTERRUPTED_EXIT
    seconds = round(time.monotonic() - started, 1)
    lines = [
        f"validation ({result.pairs} pairs, {result.held_out} held-out photos): before {_fmt(result.val_before)}; "
        f"after {_fmt(result.val_after)}" + (f" (epoch {result.best_epoch})" if result.improved else ""),
        f"saved {weights} (better than the starting point); database {database}" if result.improved else
        f"not saved: no epoch beat the starting point{_OFF_THRESHOLD if result.off_threshold else ''}; "
        f"recognition keeps using {weights or 'the untrained model'}",
        f"{result.epochs_run} epoch(s), {result.steps} steps, {result.images_per_second:.0f} images/s, {seconds} s",
    ]
    if result.run_dir:
        lines.append(f"logs: tensorboard --logdir {result.run_dir}  plots: "
                     + ", ".join(str(p) for p in result.plots))
    if result.interrupted:
        lines.insert(0, f"interrupted after {result.epochs_run} complete epoch(s)")
    if as_json:
        for line in lines:
            print(line, file=sys.stderr)
        emit_json({"val_before": _rounded(result.val_before), "val_after": _rounded(result.val_after),
                   "saved": result.improved, "weights": weights, "seconds": seconds})
    else:
        print("\n".join(lines))
    return INTERRUPTED_EXIT if result.interrupted else 0


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 4) for key, value in metrics.items()}
