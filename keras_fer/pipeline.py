"""tf.data pipelines: raw uint8 faces -> augmented, batched, prefetched float32 batches.

Images stay raw grey levels (0-255, float32) in the pipeline; normalization, resizing and
channel replication happen inside the model (`keras_fer.models.layers.Preprocessing`), so a
saved model takes raw faces and training and inference cannot disagree.

Augmentation works on whole batches with stateless random ops seeded per batch: one projective
transform per image covers shift, rotation, zoom and perspective; flip, noise, blur and random
erasing are batched tensor ops. Nothing runs in Python per image, and the same seed gives the
same batches.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from keras_fer.classes import NUM_CLASSES
from keras_fer.errors import FerOptionError

AUGMENTATIONS = ("shift", "flip", "rotate", "zoom", "perspective", "noise", "blur", "erase")
AUGMENT_PRESETS = {
    "none": (),
    "basic": ("shift", "flip", "rotate"),
    "strong": AUGMENTATIONS,
}


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run and how strong they are.

    Args:
        ops: names from `AUGMENTATIONS`.
        shift: largest shift, in pixels (integer shifts: pixels move but keep their values).
        rotation: largest rotation, in degrees.
        zoom: largest relative zoom in or out (random resized crop when > 0).
        perspective: largest corner displacement, as a fraction of the image size.
        noise: standard deviation of gaussian noise, in grey levels.
        blur_probability: share of images blurred with a 3x3 gaussian.
        erase_probability: share of images with a random rectangle erased (random erasing).
        erase_area: largest erased area, as a fraction of the image.
    """

    ops: tuple = ()
    shift: int = 5
    rotation: float = 12.0
    zoom: float = 0.12
    perspective: float = 0.06
    noise: float = 6.0
    blur_probability: float = 0.25
    erase_probability: float = 0.4
    erase_area: float = 0.15

    @classmethod
    def parse(cls, spec, **overrides):
        """`"none"`, `"basic"`, `"strong"` or a comma-separated list such as `"shift,flip"`."""
        spec = (spec or "none").strip()
        if spec in AUGMENT_PRESETS:
            ops = AUGMENT_PRESETS[spec]
        else:
            ops = tuple(name.strip() for name in spec.split(",") if name.strip())
            unknown = [name for name in ops if name not in AUGMENTATIONS]
            if unknown:
                raise FerOptionError(
                    f"--augment takes {', '.join(AUGMENT_PRESETS)} or a comma-separated list of "
                    f"{', '.join(AUGMENTATIONS)}. Received: augment={spec!r}"
                )
        return cls(ops=tuple(ops), **overrides)

    def __contains__(self, name):
        return name in self.ops


def _uniform(seed, shape, low, high):
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def _transform_matrices(batch, height, width, config, seeds):
    """Per-image projective transforms (output pixel -> input pixel), as TF's 8-vectors."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    ones, zeros = tf.ones([batch]), tf.zeros([batch])
    angle = _uniform(seeds[0], [batch], -1.0, 1.0) * (config.rotation * math.pi / 180.0) if "rotate" in config else zeros
    scale = 1.0 + _uniform(seeds[1], [batch], -config.zoom, config.zoom) if "zoom" in config else ones
    if "shift" in config:
        shift = tf.round(_uniform(seeds[2], [batch, 2], -config.shift - 0.5, config.shift + 0.5))
        dx, dy = shift[:, 0], shift[:, 1]
    else:
        dx = dy = zeros
    if "perspective" in config:
        warp = _uniform(seeds[3], [batch, 2], -1.0, 1.0) * config.perspective / max(width, height)
        px, py = warp[:, 0], warp[:, 1]
    else:
        px = py = zeros
    # Input coordinate = R(angle) * (output - center) / scale + center - shift, then perspective.
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1 = cos, -sin
    b0, b1 = sin, cos
    a2 = cx - a0 * cx - a1 * cy - dx
    b2 = cy - b0 * cx - b1 * cy - dy
    return tf.stack([a0, a1, a2, b0, b1, b2, px, py], axis=1)


def _needs_transform(config):
    return any(name in config for name in ("shift", "rotate", "zoom", "perspective"))


def augment_batch(images, seed, config):
    """Augment a batch of raw faces.

    Args:
        images: float32 `(batch, height, width, 1)` grey levels 0-255.
        seed: int `[2]` tensor: the same seed gives the same output.
        config: an `AugmentConfig`.

    Returns:
        The augmented batch, same shape, clipped to 0-255.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    if not config.ops:
        return images
    shape = tf.shape(images)
    batch, height, width = shape[0], images.shape[1], images.shape[2]
    seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=10))
    if "flip" in config:
        flip = _uniform(seeds[4], [batch, 1, 1, 1], 0.0, 1.0) < 0.5
        images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    if _needs_transform(config):
        matrices = _transform_matrices(batch, height, width, config, seeds)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=matrices, output_shape=[height, width],
            interpolation="BILINEAR", fill_mode="REFLECT", fill_value=0.0,
        )
    if "blur" in config:
        kernel = tf.constant([1.0, 2.0, 1.0])
        kernel = tf.tensordot(kernel, kernel, axes=0) / 16.0
        blurred = tf.nn.depthwise_conv2d(
            tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC"),
            tf.reshape(kernel, [3, 3, 1, 1]), strides=[1, 1, 1, 1], padding="VALID",
        )
        chosen = _uniform(seeds[5], [batch, 1, 1, 1], 0.0, 1.0) < config.blur_probability
        images = tf.where(chosen, blurred, images)
    if "noise" in config:
        images = images + tf.random.stateless_normal(shape, seed=seeds[6], stddev=config.noise)
    if "erase" in config:
        area = _uniform(seeds[7], [batch, 1], 0.02, config.erase_area) * float(height * width)
        aspect = tf.exp(_uniform(seeds[8], [batch, 1], math.log(0.3), math.log(3.3)))
        box_h = tf.minimum(tf.sqrt(area * aspect), float(height))
        box_w = tf.minimum(tf.sqrt(area / aspect), float(width))
        corner = _uniform(seeds[9], [batch, 3], 0.0, 1.0)
        top = corner[:, :1] * (float(height) - box_h)
        left = corner[:, 1:2] * (float(width) - box_w)
        rows = tf.range(height, dtype=tf.float32)[None, :]
        cols = tf.range(width, dtype=tf.float32)[None, :]
        inside_rows = (rows >= top) & (rows < top + box_h)
        inside_cols = (cols >= left) & (cols < left + box_w)
        inside = inside_rows[:, :, None] & inside_cols[:, None, :]
        chosen = corner[:, 2:] < config.erase_probability
        inside = inside & chosen[:, :, None]
        fill = tf.random.stateless_uniform(shape, seed=seeds[9] + 1, minval=0.0, maxval=255.0)
        images = tf.where(inside[..., None], fill, images)
    return tf.clip_by_value(images, 0.0, 255.0)


def class_weights(labels):
    """Inverse-frequency class weights for `fit(class_weight=...)`."""
    from keras_fer.data import class_weights as weights

    return weights(labels)


def _options(autotune):
    options = tf.data.Options()
    options.autotune.enabled = bool(autotune)
    options.experimental_deterministic = True
    return options


def make_dataset(
    images, labels=None, batch_size=64, *, training=False, augment=None, seed=0, balanced=False,
    num_classes=NUM_CLASSES, steps_per_epoch=None, autotune=True,
):
    """Build a batched, prefetched `tf.data.Dataset` of `(images, one-hot labels)`.

    Args:
        images: uint8 `(N, 48, 48, 1)`.
        labels: int `(N,)`, or None for prediction (the dataset then yields images only).
        batch_size: images per batch.
        training: shuffle (reshuffled every epoch) and augment.
        augment: an `AugmentConfig`, or None for none.
        seed: seeds the shuffle and the augmentation: the same seed gives the same batches.
        balanced: sample every class equally often (report 003, Q4); needs `training`.
        steps_per_epoch: with `balanced`, the batches an epoch holds (default N / batch_size).
        autotune: tf.data autotuning; off gives fixed parallelism and a faster iterator
            tear-down, which matters for many short fits.

    Example:
    >>> dataset = make_dataset(faces.pixels, faces.labels, 64, training=True,
    ...                        augment=AugmentConfig.parse("basic"))  # doctest: +SKIP
    """
    images = np.asarray(images)
    parallel = tf.data.AUTOTUNE if autotune else 2
    if labels is None:
        dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
        dataset = dataset.map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=parallel)
        return dataset.prefetch(2).with_options(_options(autotune))
    labels = np.asarray(labels, dtype=np.int64)
    if balanced and training:
        per_class = []
        for label in range(num_classes):
            members = np.flatnonzero(labels == label)
            if len(members) == 0:
                continue
            part = tf.data.Dataset.from_tensor_slices((images[members], labels[members]))
            per_class.append(part.shuffle(len(members), seed=seed + label, reshuffle_each_iteration=True).repeat())
        dataset = tf.data.Dataset.sample_from_datasets(per_class, seed=seed, rerandomize_each_iteration=True)
        steps = steps_per_epoch or max(1, len(labels) // batch_size)
        dataset = dataset.batch(batch_size, drop_remainder=True).take(steps)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        if training:
            dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
    augment = augment if (training and augment is not None and augment.ops) else None
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds))

        def prepare(batch, seed_pair):
            x, y = batch
            x = augment_batch(tf.cast(x, tf.float32), seed_pair, augment)
            return x, tf.one_hot(y, num_classes)
    else:

        def prepare(x, y):
            return tf.cast(x, tf.float32), tf.one_hot(y, num_classes)

    dataset = dataset.map(prepare, num_parallel_calls=parallel)
    return dataset.prefetch(2 if not autotune else tf.data.AUTOTUNE).with_options(_options(autotune))


def dataset_statistics(images):
    """Mean and standard deviation of the grey levels, for `normalize="dataset"`."""
    pixels = np.asarray(images, dtype=np.float64)
    return float(pixels.mean()), float(pixels.std())
