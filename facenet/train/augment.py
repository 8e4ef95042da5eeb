"""Augmentation and the tf.data pipeline of training: each batch's chips read from the cache's memory maps."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import tensorflow as tf

JITTER_PIXELS = 4
"""Augmentation: the chip is reflect-padded by this much and randomly cropped back (a shift of +-4 px)."""

BRIGHTNESS_DELTA = 20.0
CONTRAST_RANGE = (0.8, 1.2)
"""Augmentation: brightness shift (0..255 scale) and contrast factor ranges."""


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
    chips: Sequence[np.ndarray], labels: np.ndarray, batches: np.ndarray, seed: int
) -> tf.data.Dataset:
    """Augmented (x, y int32 (B,)) batches in the order of `batches` (n, B) indices; x is one float32 batch per
    chip kind (a tuple, in the model's input order), each augmented with the photo's own seed.

    `chips` (one (N, side, side, 3) uint8 array per kind, typically the chip cache's memory maps) stay outside the
    graph: each batch's rows are gathered by a `tf.numpy_function`, so only a batch is in memory at a time.
    """
    arrays = tuple(chips)
    size = batches.shape[1]
    flat = batches.reshape(-1).astype(np.int64)
    seeds = np.stack([np.full(len(flat), seed), np.arange(len(flat))], axis=1).astype(np.int64)
    labels = tf.constant(np.asarray(labels), tf.int32)

    def read(index: np.ndarray) -> list[np.ndarray]:
        order = np.argsort(index)  # sorted rows: the memory maps read forward
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return [np.ascontiguousarray(array[index[order]])[inverse] for array in arrays]

    def gather(index: tf.Tensor, item_seeds: tf.Tensor):
        x = tf.numpy_function(read, [index], [tf.uint8] * len(arrays), stateful=False)
        x = tuple(tf.ensure_shape(c, (None, *a.shape[1:])) for c, a in zip(x, arrays, strict=True))
        return x, tf.gather(labels, index), item_seeds

    def augment(x: tuple[tf.Tensor, ...], y: tf.Tensor, item_seed: tf.Tensor):
        return tuple(augment_chip(c, item_seed) for c in x), y

    dataset = tf.data.Dataset.from_tensor_slices((flat, seeds)).batch(size, drop_remainder=True)
    dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


AUGMENTED_VIEWS = 2
"""Training photos beside their plain and mirrored views: this many randomly altered copies each (crop, blur,
brightness, JPEG), made before the one-off pass, so cached training sees a cheap camera's and a dim room's faults."""


def augment_view(chip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uint8 chip altered in image space: mirror, small rotation/scale/shift, sometimes blur or a low-resolution
    round trip, brightness and contrast, sometimes JPEG compression. The same rng state gives the same result."""
    side = chip.shape[1]
    out = chip[:, ::-1] if rng.random() < 0.5 else chip
    turn = cv2.getRotationMatrix2D((side / 2 + rng.uniform(-4, 4), side / 2 + rng.uniform(-4, 4)),
                                   rng.uniform(-8, 8), rng.uniform(0.9, 1.1))
    out = cv2.warpAffine(np.ascontiguousarray(out), turn, (side, side), borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.4:
        size = int(rng.choice([3, 5]))
        out = cv2.GaussianBlur(out, (size, size), 0)
    if rng.random() < 0.3:
        small = int(side * rng.uniform(0.3, 0.6))
        out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (side, side))
    out = np.clip(out.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25), 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        _, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 70))])
        out = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return out
