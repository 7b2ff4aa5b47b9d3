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
        perspective: largest corner displacement along an axis, as a fraction of the image
            size (the warp is about the centre, which stays in place).
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
        """`"none"`, `"basic"`, `"strong"` or a comma-separated list such as `"shift,flip"`.

        Empty items and spaces around a name are dropped, and a name given twice counts once
        (`"shift,,flip,flip"` is `"shift,flip"`): each augmentation runs at most once anyway.
        """
        spec = (spec or "none").strip()
        if spec in AUGMENT_PRESETS:
            ops = AUGMENT_PRESETS[spec]
        else:
            ops = tuple(dict.fromkeys(name.strip() for name in spec.split(",") if name.strip()))
            unknown = [name for name in ops if name not in AUGMENTATIONS]
            if unknown:
                raise FerOptionError(
                    f"--augment takes {', '.join(AUGMENT_PRESETS)} or a comma-separated list of "
                    f"{', '.join(AUGMENTATIONS)}. Received: augment={spec!r}"
                )
        return cls(ops=tuple(ops), **overrides)

    def __contains__(self, name):
        return name in self.ops

    @property
    def spec(self):
        """The one `--augment` text of these augmentations: a preset's name when they are its
        list, else the names in `AUGMENTATIONS` order (the order they run in, whatever order they
        were given in), so equivalent specs compare equal (`"flip, shift"`, `"shift,,flip"`).

        Example:
        >>> AugmentConfig.parse(" flip,,shift,flip ").spec
        'shift,flip'
        >>> AugmentConfig.parse("rotate,flip,shift").spec
        'basic'
        """
        chosen = set(self.ops)
        for name, ops in AUGMENT_PRESETS.items():
            if chosen == set(ops):
                return name
        return ",".join(name for name in AUGMENTATIONS if name in chosen)


def _uniform(seed, shape, low, high):
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def _transform_matrices(batch, height, width, config, seeds):
    """Per-image projective transforms (output pixel -> input pixel), as TF's 8-vectors."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    ones, zeros = tf.ones([batch]), tf.zeros([batch])
    angle = (_uniform(seeds[0], [batch], -1.0, 1.0) * (config.rotation * math.pi / 180.0)
             if "rotate" in config else zeros)
    scale = 1.0 + _uniform(seeds[1], [batch], -config.zoom, config.zoom) if "zoom" in config else ones
    if "shift" in config:
        shift = tf.round(_uniform(seeds[2], [batch, 2], -config.shift - 0.5, config.shift + 0.5))
        dx, dy = shift[:, 0], shift[:, 1]
    else:
        dx = dy = zeros
    if "perspective" in config:
        # k - 1 = px (x - cx) + py (y - cy) is at most 2 * perspective at a corner, which moves
        # the corner by about cx * 2 * perspective ~ perspective * size along each axis.
        warp = _uniform(seeds[3], [batch, 2], -1.0, 1.0) * config.perspective
        px, py = warp[:, 0] / cx, warp[:, 1] / cy
    else:
        px = py = zeros
    # Input coordinate u = R(angle) * (output - center) / scale + center - shift (the affine
    # part A), then the perspective about the centre: center + (u - center) / k, with
    # k = 1 + px (x - cx) + py (y - cy). TF takes (a0 x + a1 y + a2) / (c0 x + c1 y + 1): the
    # numerators gain the centre times k's slopes, and all 8 terms are divided by k's constant.
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1 = cos, -sin
    b0, b1 = sin, cos
    a2 = cx - a0 * cx - a1 * cy - dx
    b2 = cy - b0 * cx - b1 * cy - dy
    offset = px * cx + py * cy
    constant = 1.0 - offset
    terms = [a0 + cx * px, a1 + cx * py, a2 - cx * offset, b0 + cy * px, b1 + cy * py, b2 - cy * offset, px, py]
    return tf.stack([term / constant for term in terms], axis=1)


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


def _options(autotune):
    options = tf.data.Options()
    options.autotune.enabled = bool(autotune)
    options.deterministic = True
    # Multi-worker training shards batches by data, as the dataset is built from tensors.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def steps_per_epoch(num_images, batch_size):
    """Batches in one training epoch (the last one may be smaller)."""
    return max(1, math.ceil(num_images / batch_size))


def _epoch_indices(labels, epoch, seed, balanced, steps, batch_size):
    """The image indices of one epoch, a pure function of `(seed, epoch)`."""
    num_images = tf.shape(labels, out_type=tf.int64)[0]
    epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
    if not balanced:
        return tf.random.experimental.stateless_shuffle(tf.range(num_images), seed=epoch_seed)
    # Balanced: draw a class uniformly, then a member of it uniformly (with replacement).
    order = tf.argsort(labels, stable=True)
    counts = tf.math.bincount(tf.cast(labels, tf.int32), minlength=NUM_CLASSES, dtype=tf.int64)
    present = tf.boolean_mask(tf.range(NUM_CLASSES, dtype=tf.int64), counts > 0)
    starts = tf.cumsum(counts, exclusive=True)
    draws = steps * batch_size
    which = tf.random.stateless_uniform([draws], seed=epoch_seed, maxval=tf.size(present, tf.int64), dtype=tf.int64)
    chosen = tf.gather(present, which)
    offset = tf.random.stateless_uniform([draws], seed=epoch_seed + 1, minval=0.0, maxval=1.0)
    member = tf.cast(offset * tf.cast(tf.gather(counts, chosen), tf.float32), tf.int64)
    return tf.gather(order, tf.gather(starts, chosen) + member)


def make_dataset(
    images, labels=None, batch_size=64, *, training=False, augment=None, seed=0, balanced=False,
    num_classes=NUM_CLASSES, first_epoch=0, epochs=1, autotune=False, targets=None, class_weight=None,
):
    """Build a batched, prefetched `tf.data.Dataset` of `(images, one-hot labels)`.

    For training, the dataset holds the batches of epochs `first_epoch .. epochs - 1` back to
    back (`steps_per_epoch(len(images), batch_size)` each, to pass to `fit(steps_per_epoch=...)`),
    and each epoch's order and augmentation are a pure function of `(seed, epoch)`: a run resumed
    at epoch k sees exactly the batches an uninterrupted run would.

    Args:
        images: uint8 `(N, 48, 48, 1)`.
        labels: int `(N,)`, or None for prediction (the dataset then yields images only).
        batch_size: images per batch.
        training: shuffle every epoch and augment.
        augment: an `AugmentConfig`, or None for none.
        seed: seeds the shuffle and the augmentation.
        balanced: sample every class equally often (report 003, Q4); needs `training`.
        first_epoch, epochs: the epochs the training dataset covers.
        targets: float `(N, num_classes)` training targets to yield instead of one-hot labels
            (soft labels from a teacher, `keras_fer.distill`); the labels still drive `balanced`.
        class_weight: `num_classes` loss weights, one per class (`data.class_weights`); the
            training dataset then yields `(images, targets, weights)`, each image weighted by
            its own label. (Keras' `fit(class_weight=...)` weights by the argmax of the targets,
            which for a teacher's soft targets is often the teacher's class, not the label.)
        autotune: tf.data autotuning. Off by default: with it, `fit` stalled 0.6-14 s on return
            in 10 of 33 fits while tf.data tore down its iterator (none of 17 without), and the
            pipeline runs 16x faster than cnn4 trains either way (docs/performance.md).

    Example:
    >>> from keras_fer import synthetic
    >>> faces = synthetic.generate(140).images  # demo faces; FER2013 from data.read(...) alike
    >>> dataset = make_dataset(faces.pixels, faces.labels, 64, training=True,
    ...                        augment=AugmentConfig.parse("basic"), epochs=30)
    >>> images, targets = next(iter(dataset))
    >>> tuple(images.shape), tuple(targets.shape), steps_per_epoch(len(faces), 64)
    ((64, 48, 48, 1), (64, 7), 3)
    """
    images = np.asarray(images)
    parallel = tf.data.AUTOTUNE if autotune else 2
    if labels is None:
        dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
        dataset = dataset.map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=parallel)
        return dataset.prefetch(2).with_options(_options(autotune))
    labels = np.asarray(labels, dtype=np.int64)
    if targets is not None and not training:
        raise ValueError("`targets` are training targets: pass `training=True`. Received: training=False")
    if not training:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
        dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes)),
                              num_parallel_calls=parallel)
        return dataset.prefetch(2).with_options(_options(autotune))

    image_tensor = tf.constant(images)
    label_tensor = tf.constant(labels)
    if targets is not None:
        targets = np.asarray(targets, np.float32)
        if targets.shape != (len(labels), num_classes):
            raise ValueError(f"`targets` must be one row of {num_classes} per image. Received: "
                             f"targets.shape={targets.shape} for {len(labels)} images")
        target_tensor = tf.constant(targets)
    if class_weight is not None:
        weight_tensor = tf.constant(np.asarray(class_weight, np.float32).reshape(num_classes))
    steps = steps_per_epoch(len(labels), batch_size)
    augment = augment if (augment is not None and augment.ops) else None

    # No tensor-dependent Python control flow below: AutoGraph's conversion (about 2 s at each
    # process's first dataset) has nothing to convert.
    @tf.autograph.experimental.do_not_convert
    def epoch_batches(epoch):
        indices = _epoch_indices(label_tensor, epoch, seed, balanced, steps, batch_size)
        batches = tf.data.Dataset.from_tensor_slices(indices).batch(batch_size).take(steps)
        return tf.data.Dataset.zip((batches, tf.data.Dataset.range(steps))).map(
            tf.autograph.experimental.do_not_convert(lambda batch, step: (batch, epoch, step))
        )

    @tf.autograph.experimental.do_not_convert
    def prepare(indices, epoch, step):
        x = tf.cast(tf.gather(image_tensor, indices), tf.float32)
        if targets is None:
            y = tf.one_hot(tf.gather(label_tensor, indices), num_classes)
        else:
            y = tf.gather(target_tensor, indices)
        if augment is not None:
            x = augment_batch(x, tf.stack([tf.constant(seed, tf.int64) + 7919, epoch * 1_000_003 + step]), augment)
        if class_weight is not None:
            return x, y, tf.gather(weight_tensor, tf.gather(label_tensor, indices))
        return x, y

    dataset = tf.data.Dataset.range(first_epoch, max(epochs, first_epoch)).flat_map(epoch_batches)
    dataset = dataset.map(prepare, num_parallel_calls=parallel)
    return dataset.prefetch(2 if not autotune else tf.data.AUTOTUNE).with_options(_options(autotune))


def dataset_statistics(images):
    """Mean and standard deviation of the grey levels, for `normalize="dataset"`."""
    pixels = np.asarray(images, dtype=np.float64)
    return float(pixels.mean()), float(pixels.std())
