"""Custom layers shared by the model zoo, registered for `.keras` serialization."""

import numbers

import keras
from keras import ops

from keras_fer.classes import IMAGE_SIZE
from keras_fer.errors import FerOptionError, check_finite

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
            raise FerOptionError(
                f"normalize must be one of {', '.join(NORMALIZE_MODES)}. Received: normalize={normalize!r}"
            )
        if channels not in (1, 3):
            raise FerOptionError(f"channels must be 1 or 3. Received: channels={channels!r}")
        # a NaN std made every output NaN; a std of 0 or below divided by 1e-6
        check_finite(mean, "mean (grey levels)", received="mean")
        check_finite(std, "std (grey levels)", positive=True, received="std")
        if (isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2
                or any(isinstance(side, bool) or not isinstance(side, numbers.Integral) or side < 1 for side in size)):
            raise FerOptionError(f"size must be (height, width), two positive integers. Received: size={size!r}")
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


def _forward_input_gradient_conv(inputs, kernel):
    """A stride-1 'same' convolution whose input gradient is itself a forward convolution."""
    import tensorflow as tf

    @tf.custom_gradient
    def convolve(inputs, kernel):
        def gradient(upstream):
            flipped = tf.transpose(tf.reverse(kernel, axis=[0, 1]), perm=[0, 1, 3, 2])
            input_gradient = tf.nn.conv2d(upstream, flipped, strides=1, padding="SAME")
            kernel_gradient = tf.raw_ops.Conv2DBackpropFilter(
                input=inputs, filter_sizes=tf.shape(kernel), out_backprop=upstream,
                strides=[1, 1, 1, 1], padding="SAME",
            )
            return input_gradient, kernel_gradient

        return tf.nn.conv2d(inputs, kernel, strides=1, padding="SAME"), gradient

    return convolve(inputs, ops.cast(kernel, inputs.dtype))


@keras.saving.register_keras_serializable(package="keras_fer")
class ForwardGradConv2D(keras.layers.Conv2D):
    """`Conv2D` whose input gradient is computed as a forward convolution (flipped kernel).

    The same layer, weights and results as `Conv2D` (gradients agree to float rounding); only
    the backward pass differs. TensorFlow's own input gradient of a 3x3 convolution runs at
    ~3 GFLOP/s on 512-channel 2x2 maps on the AVX2 CPU of this project (20 CPU-ms a training
    image for one such layer, against 3 with this layer; `bench/stage_cost.py`), which made
    ResNet18's last stage 80% of its training time. Applies to stride 1, 'same' padding, odd
    square kernels, no dilation or groups, channels-last; any other setting is a plain `Conv2D`.
    """

    def _forward_gradient_applies(self):
        return (keras.config.backend() == "tensorflow" and self.padding == "same"
                and self.strides == (1, 1) and self.dilation_rate == (1, 1) and self.groups == 1
                and self.data_format == "channels_last" and self.kernel_size[0] == self.kernel_size[1]
                and self.kernel_size[0] % 2 == 1)

    def convolution_op(self, inputs, kernel):
        if not self._forward_gradient_applies():
            return super().convolution_op(inputs, kernel)
        return _forward_input_gradient_conv(inputs, kernel)


def find_preprocessing(model):
    """The `Preprocessing` layer of `model` (or of a model nested one level in it), or None."""
    for layer in model.layers:
        for candidate in (layer, *getattr(layer, "layers", ())):
            if isinstance(candidate, Preprocessing):
                return candidate
    return None


def model_inputs(input_shape, preprocessing=None):
    """The input tensor of a zoo model and the tensor its first layer reads.

    With `preprocessing` (a `Preprocessing` config dict), the model takes raw 48x48x1 faces and
    the layer maps them to `input_shape`; without, the model takes `input_shape` as is.
    """
    if preprocessing is None:
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        return inputs, inputs
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    known = ("normalize", "mean", "std", "size", "channels")
    if not isinstance(preprocessing, dict) or set(preprocessing) - set(known):
        raise FerOptionError(f"preprocessing must be a dict of {', '.join(known)} (the Preprocessing options). "
                             f"Received: preprocessing={preprocessing!r}")
    options = dict(preprocessing)
    options.setdefault("size", tuple(input_shape[:2]))
    options.setdefault("channels", input_shape[2])
    return inputs, Preprocessing(name="preprocessing", **options)(inputs)
