"""Custom layers shared by the model zoo, registered for `.keras` serialization."""

import keras
from keras import ops

from keras_fer.classes import IMAGE_SIZE

NORMALIZE_MODES = ("none", "unit", "image", "dataset")


def normalize(images, mode="unit", mean=0.0, std=1.0):
    """Normalize float images holding raw 0-255 grey levels.

    Args:
        images: tensor `(batch, height, width, channels)` of grey levels 0-255.
        mode: `"none"` (as is), `"unit"` ([0, 1]), `"image"` (per-image (x - mean) / std,
            report 002) or `"dataset"` ((x - mean) / std with the training set's `mean`, `std`).
        mean, std: the training-set statistics for `"dataset"`, in grey levels.
    """
    if mode == "none":
        return images
    if mode == "unit":
        return images / 255.0
    if mode == "image":
        image_mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
        image_std = ops.std(images, axis=(1, 2, 3), keepdims=True)
        return (images - image_mean) / ops.maximum(image_std, 1.0)
    if mode == "dataset":
        return (images - mean) / max(float(std), 1e-6)
    raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}. Received: normalize={mode!r}")


@keras.saving.register_keras_serializable(package="keras_fer")
class Preprocessing(keras.layers.Layer):
    """Turns raw 48x48x1 faces (grey levels 0-255) into what an architecture expects.

    It normalizes, resizes (report 003 trains at 64x64) and replicates the grey channel (report
    001's 3-channel ResNet). It has no weights, so it does not change parameter counts, and it
    travels inside the `.keras` file: a saved model takes raw faces, whatever it was trained on.

    Args:
        normalize: one of `NORMALIZE_MODES`.
        mean, std: training-set statistics for `normalize="dataset"`.
        size: `(height, width)` the architecture wants.
        channels: 1 or 3.

    Example:
    >>> layer = Preprocessing(normalize="unit", size=(64, 64), channels=3)
    >>> tuple(layer(keras.ops.zeros((2, 48, 48, 1))).shape)
    (2, 64, 64, 3)
    """

    def __init__(self, normalize="unit", mean=0.0, std=1.0, size=(IMAGE_SIZE, IMAGE_SIZE), channels=1, **kwargs):
        super().__init__(**kwargs)
        if normalize not in NORMALIZE_MODES:
            raise ValueError(
                f"normalize must be one of {', '.join(NORMALIZE_MODES)}. Received: normalize={normalize!r}"
            )
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3. Received: channels={channels!r}")
        self.normalize = normalize
        self.mean = float(mean)
        self.std = float(std)
        self.size = (int(size[0]), int(size[1]))
        self.channels = int(channels)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        x = normalize(x, self.normalize, self.mean, self.std)
        if tuple(x.shape[1:3]) != self.size:
            x = ops.image.resize(x, self.size, interpolation="bilinear")
        if self.channels == 3 and x.shape[-1] == 1:
            x = ops.repeat(x, 3, axis=-1)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size[0], self.size[1], self.channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            normalize=self.normalize, mean=self.mean, std=self.std, size=list(self.size), channels=self.channels
        )
        return config


@keras.saving.register_keras_serializable(package="keras_fer")
class RReLU(keras.layers.Layer):
    """Randomized leaky ReLU, as PyTorch's `nn.RReLU` (report 003).

    While training, each element's negative slope is drawn uniformly from `[lower, upper]`; at
    inference the slope is fixed at their mean.

    Args:
        lower, upper: the slope range, PyTorch's defaults 1/8 and 1/3.
        seed: seed of the slope draws.
    """

    def __init__(self, lower=1.0 / 8.0, upper=1.0 / 3.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= lower <= upper:
            raise ValueError(f"RReLU needs 0 <= lower <= upper. Received: lower={lower}, upper={upper}")
        self.lower = float(lower)
        self.upper = float(upper)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if training:
            slope = keras.random.uniform(
                ops.shape(inputs), minval=self.lower, maxval=self.upper, dtype=inputs.dtype,
                seed=self.seed_generator,
            )
        else:
            slope = (self.lower + self.upper) / 2.0
        return ops.where(inputs >= 0, inputs, inputs * slope)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(lower=self.lower, upper=self.upper, seed=self.seed)
        return config


def model_inputs(input_shape, preprocessing=None):
    """The input tensor of a zoo model and the tensor its first layer reads.

    With `preprocessing` (a `Preprocessing` config dict), the model takes raw 48x48x1 faces and
    the layer maps them to `input_shape`; without, the model takes `input_shape` as is.
    """
    if preprocessing is None:
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        return inputs, inputs
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    options = dict(preprocessing)
    options.setdefault("size", tuple(input_shape[:2]))
    options.setdefault("channels", input_shape[2])
    return inputs, Preprocessing(name="preprocessing", **options)(inputs)
