"""The model zoo: one builder per architecture, looked up by name.

Every builder has the signature
`build(input_shape=..., num_classes=7, *, softmax=False, preprocessing=None, **options)` and
returns a Functional `keras.Model` named after its registry name, whose final `Dense` layer is
called `logits`. Models output logits (pre-softmax scores) unless `softmax=True`, so saliency
maps and gradient ascent work on the class scores directly.

Example:
>>> from keras_fer.models import build_model, list_models
>>> "cnn4" in list_models()
True
>>> model = build_model("cnn4", softmax=True)
>>> model.output_shape
(None, 7)

Adding a model is adding one decorated builder in a module imported at the bottom of this file:

    @register("mynet", report="ours", description="what it is in a few words")
    def mynet(input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES, *, softmax=False,
              preprocessing=None, width=1.0):
        inputs, x = model_inputs(input_shape, preprocessing)
        ...
        return finish_model(inputs, x, num_classes, softmax, "mynet")
"""

import contextlib
import dataclasses
import functools
import gc
import inspect
import math
import numbers
import re
from collections.abc import Sequence

import keras
import numpy as np

from keras_fer.errors import FerOptionError, check_finite, check_integer

__all__ = [
    "ModelInfo",
    "build_model",
    "check_model_options",
    "config_mismatch",
    "count_flops",
    "default_input_shape",
    "finish_model",
    "list_models",
    "model_info",
    "parameter_counts",
    "preprocessing_mismatch",
    "register",
    "registry_table",
    "summary_table",
    "weight_mismatch",
]


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str
    builder: object
    report: str
    description: str


_REGISTRY = {}


def register(name, *, report, description):
    """Class the decorated builder under `name` in the zoo.

    Args:
        name: the registry name (`build_model(name)`, `train.py --arch name`); it is also the
            built model's `name`.
        report: which report the architecture reproduces (`"000"` ... `"004"`, or `"ours"`).
        description: one line for `registry_table()`.
    """

    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"Model name {name!r} is registered twice.")
        _REGISTRY[name] = _Entry(name, builder, str(report), description)
        builder.registry_name = name
        return builder

    return decorate


def list_models():
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def _entry(name):
    if name not in _REGISTRY:
        raise FerOptionError(
            f"Argument `name` must be one of the registered models: {', '.join(list_models())}. "
            f"Received: name={name!r}"
        )
    return _REGISTRY[name]


def _options(builder):
    """The keyword options of a builder, with their defaults."""
    return {
        key: parameter.default
        for key, parameter in inspect.signature(builder).parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }


def default_input_shape(name):
    """The input shape model `name` is built for when none is given."""
    return tuple(_options(_entry(name).builder)["input_shape"])


def check_model_options(name, options):
    """Refuse, without building anything, option names model `name`'s builder does not take.

    Raises:
        FerOptionError: for an unknown model name or option name, listing the options it takes.

    Example:
    >>> check_model_options("cnn4", {"batch_norm": False})
    """
    taken = _options(_entry(name).builder)
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise FerOptionError(
            f"Model {name!r} takes the options {', '.join(taken)}. "
            f"Received: {', '.join(f'{key}={options[key]!r}' for key in unknown)}"
        )


def build_model(name, **kwargs):
    """Build the registered model `name`.

    Args:
        name: one of `list_models()`.
        **kwargs: passed to the builder: `input_shape`, `num_classes`, `softmax`,
            `preprocessing` and the architecture's own options (see its docstring).

    Raises:
        FerOptionError: for an unknown name or an option the builder does not take.

    Example:
    >>> model = build_model("cnn4", preprocessing={"normalize": "unit"})
    >>> model.get_layer("logits").units
    7
    """
    entry = _entry(name)
    check_model_options(name, kwargs)
    options = _options(entry.builder)
    if "input_shape" in kwargs:
        shape = kwargs["input_shape"]
        if not isinstance(shape, Sequence) or len(shape) != 3 or shape[2] not in (1, 3):
            raise FerOptionError(
                "Argument `input_shape` must be (height, width, channels) with 1 or 3 channels. "
                f"Received: input_shape={shape!r}"
            )
        kwargs["input_shape"] = tuple(check_positive_int(size, "input_shape") for size in shape)
    for key, value in kwargs.items():
        if isinstance(options[key], bool):
            if not isinstance(value, (bool, np.bool_)):  # "maybe" or 1 was taken for True by the builder's `if`
                raise FerOptionError(f"Argument `{key}` must be True or False. Received: {key}={value!r}")
            kwargs[key] = bool(value)
    try:
        return entry.builder(**kwargs)
    except FerOptionError:
        raise
    except ValueError as error:  # Keras on an input too small for the pooling ("output size ... negative")
        if "input_shape" not in kwargs:
            raise
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
        reason = next((line for line in lines if "output size" in line), lines[0] if lines else type(error).__name__)
        raise FerOptionError(f"Model {name!r} cannot take this input shape ({reason}). "
                             f"Received: input_shape={kwargs['input_shape']!r}") from None
    except Exception as error:  # TensorFlow's ResourceExhaustedError ("OOM when allocating") or MemoryError
        if not isinstance(error, MemoryError) and type(error).__name__ != "ResourceExhaustedError":
            raise
        raise FerOptionError(f"Model {name!r} with these options does not fit in memory ({type(error).__name__}). "
                             f"Received: {', '.join(f'{key}={value!r}' for key, value in kwargs.items())}") from None


@contextlib.contextmanager
def dtype_policy(name):
    """Build (or load) models under the global Keras dtype policy `name` (e.g. `"mixed_bfloat16"`),
    and put the previous policy back afterwards: the policy is global, and a model keeps the one
    it was built under.

    Example:
    >>> with dtype_policy("mixed_bfloat16"):
    ...     model = build_model("cnn4")
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def finish_model(inputs, features, num_classes, softmax, name):
    """Append the `logits` Dense layer (and `probabilities` Softmax if asked) and make the Model.

    The output layers compute in float32 so logits stay float32 under a mixed-precision policy.
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    outputs = keras.layers.Dense(num_classes, name="logits", dtype="float32")(features)
    if softmax:
        outputs = keras.layers.Softmax(name="probabilities", dtype="float32")(outputs)
    return keras.Model(inputs, outputs, name=name)


def check_positive_int(value, argument):
    """`value` as an int if it is a positive integer, else FerOptionError naming `argument`."""
    return check_integer(value, f"Argument `{argument}`", 1, received=argument)


def check_number(value, argument, *, positive=False):
    """`value` as a float if it is a finite number >= 0 (> 0 when `positive`), else
    FerOptionError naming `argument`."""
    return check_finite(value, f"Argument `{argument}`", 0, positive=positive, received=argument)


def dropout_rates(value, count, argument):
    """A tuple of `count` dropout rates from one rate or a sequence of `count` rates."""
    rates = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else (value,) * count
    if len(rates) != count or not all(
        isinstance(rate, numbers.Real) and not isinstance(rate, bool) and 0.0 <= rate < 1.0 for rate in rates
    ):
        raise FerOptionError(
            f"Argument `{argument}` must be a rate in [0, 1) or {count} such rates. Received: {argument}={value!r}"
        )
    return tuple(float(rate) for rate in rates)


# --------------------------------------------------------------------------------------------
# Counting


def parameter_counts(model):
    """`(trainable, non_trainable)` parameter counts of a built model."""
    trainable = sum(math.prod(weight.shape) for weight in model.trainable_weights)
    non_trainable = sum(math.prod(weight.shape) for weight in model.non_trainable_weights)
    return int(trainable), int(non_trainable)


def weight_mismatch(model, reference, reference_name="the other"):
    """Why `model`'s weights do not fit `reference`'s one for one, or None when they do.

    Args:
        model: a built Keras model.
        reference: the built Keras model it should match (same architecture and options).
        reference_name: what to call `reference` in the answer.

    Returns:
        None, or a short phrase such as "weight conv1/kernel has shape (3, 3, 1, 8),
        the other's conv1/kernel (3, 3, 1, 16)".
    """
    given, wanted = model.weights, reference.weights
    if len(given) != len(wanted):
        return f"has {len(given)} weights, {reference_name} has {len(wanted)}"
    for mine, theirs in zip(given, wanted):
        if tuple(mine.shape) != tuple(theirs.shape):
            return (
                f"weight {mine.path} has shape {tuple(mine.shape)}, "
                f"{reference_name}'s {theirs.path} {tuple(theirs.shape)}"
            )
    return None


# Layer settings that do not change what a model computes at inference, or that follow the
# training data or run rather than the architecture.
_INFERENCE_NEUTRAL_KEYS = frozenset({"name", "dtype", "seed", "trainable", "mean", "std"})
_INFERENCE_IDENTITY_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                              "GaussianNoise", "GaussianDropout", "AlphaDropout")


def _inference_layers(model):
    """The layers that act at inference, nested models expanded, in order."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _inference_layers(layer)
        elif type(layer).__name__ not in _INFERENCE_IDENTITY_LAYERS and not isinstance(layer, keras.layers.InputLayer):
            found.append(layer)
    return found


def config_mismatch(model, reference, reference_name="the other"):
    """Why `model` computes otherwise than `reference` with the same weights, or None when alike.

    Weights that fit one for one (`weight_mismatch`) can still sit in models built with other
    weight-free options: another activation or LeakyReLU slope, a final Softmax. Each layer that
    acts at inference is compared with its counterpart by class and configuration, leaving out
    names, dtypes, seeds, trainability and `Preprocessing`'s dataset statistics; dropout and
    noise layers, which pass faces through at inference, are skipped.

    Returns:
        None, or a short phrase such as "layer dense1_act has negative_slope=0.1, the other's
        dense1_act 0.3".
    """
    mine, theirs = _inference_layers(model), _inference_layers(reference)
    for layer, other in zip(mine, theirs):
        if type(layer) is not type(other):
            return (f"layer {layer.name} is a {type(layer).__name__}, {reference_name}'s {other.name} a "
                    f"{type(other).__name__}")
        given, wanted = layer.get_config(), other.get_config()
        for key in sorted(set(given) | set(wanted)):
            if key not in _INFERENCE_NEUTRAL_KEYS and given.get(key) != wanted.get(key):
                return (f"layer {layer.name} has {key}={given.get(key)!r}, {reference_name}'s {other.name} "
                        f"{wanted.get(key)!r}")
    if len(mine) != len(theirs):
        return f"has {len(mine)} layers acting at inference, {reference_name} has {len(theirs)}"
    return None


def preprocessing_mismatch(model, reference, reference_name="the other"):
    """Why `model` prepares its input faces otherwise than `reference`, or None when alike.

    Weights that fit one for one can still have been trained on differently prepared faces
    (`--normalize unit` against `image`): averaging them, or fine-tuning one under the other's
    preprocessing, starts from a model that no longer sees what it learned on. The modes, sizes
    and channels of their `Preprocessing` layers are compared (`"dataset"` means and deviations
    are not: they follow the training data). Models without one are not compared.

    Args:
        model: a built Keras model.
        reference: the built Keras model it should match.
        reference_name: what to call `reference` in the answer.

    Returns:
        None, or a short phrase such as
        "prepares its faces with normalize='image', the other with normalize='unit'".

    Example:
    >>> unit = build_model("dnn", preprocessing={"normalize": "unit"})
    >>> preprocessing_mismatch(unit, build_model("dnn", preprocessing={"normalize": "image"}))
    "prepares its faces with normalize='unit', the other with normalize='image'"
    """
    mine, theirs = _preprocessing_options(model), _preprocessing_options(reference)
    if mine is None or theirs is None:
        return None
    for key in ("normalize", "size", "channels"):
        if mine[key] != theirs[key]:
            return f"prepares its faces with {key}={mine[key]!r}, {reference_name} with {key}={theirs[key]!r}"
    return None


def _preprocessing_options(model):
    from keras_fer.models.layers import find_preprocessing

    layer = find_preprocessing(model)
    return None if layer is None else {"normalize": layer.normalize, "size": tuple(layer.size),
                                       "channels": layer.channels}


def _output_shapes(layer):
    """The output shape of every call of `layer` in its model (usually one)."""
    try:
        return [layer.output.shape]
    except (AttributeError, ValueError):
        # A layer called more than once has no single `output`; read each call's node.
        return [tensor.shape for node in getattr(layer, "_inbound_nodes", []) for tensor in node.output_tensors]


def _layer_macs(layer):
    """Multiply-adds of one forward pass of one image through `layer` (convolutions and dense)."""
    if isinstance(layer, keras.Model):
        return sum(_layer_macs(inner) for inner in layer.layers)
    if isinstance(layer, keras.layers.SeparableConv2D):
        # Depthwise taps at every output position, then a 1x1 pointwise convolution.
        kernel_h, kernel_w, channels_in, multiplier = layer.depthwise_kernel.shape
        total = 0
        for shape in _output_shapes(layer):
            positions = math.prod(shape[1:-1])
            total += positions * channels_in * multiplier * (kernel_h * kernel_w + shape[-1])
        return total
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        taps = math.prod(layer.kernel.shape[:2])
        return sum(math.prod(shape[1:]) * taps for shape in _output_shapes(layer))
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)) and not isinstance(
        layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
    ):
        # Each output value is a dot product over the kernel's window and input channels
        # (kernel shape: spatial..., input channels per group, output channels).
        window = math.prod(layer.kernel.shape[:-1])
        return sum(math.prod(shape[1:]) * window for shape in _output_shapes(layer))
    if isinstance(layer, keras.layers.Dense):
        fan_in = layer.kernel.shape[0]
        return sum(math.prod(shape[1:]) * fan_in for shape in _output_shapes(layer))
    return 0


def count_flops(model):
    """Forward FLOPs for one image: 2 x the multiply-adds of every convolution and Dense layer.

    Bias adds, normalization, activations and pooling are left out: they are a few percent at
    most and the convention (as in most papers' FLOP counts) keeps figures comparable.
    """
    return 2 * sum(_layer_macs(layer) for layer in model.layers)


# --------------------------------------------------------------------------------------------
# Information and tables


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What `model_info(name)` reports about a registered model, built with its defaults.

    Attributes:
        name: the registry name.
        report: the report it reproduces (`"000"` ... `"004"`) or `"ours"`.
        description: one line.
        input_shape: the default input shape `(height, width, channels)`.
        trainable_params: trainable parameters (the PyTorch-comparable count).
        total_params: all parameters, including BatchNorm moving statistics.
        flops: forward FLOPs per image (2 x conv/dense multiply-adds).
        conv_layers: names of the convolution layers in order (for filter visualization and
            Grad-CAM: the last one is the usual Grad-CAM target).
    """

    name: str
    report: str
    description: str
    input_shape: tuple
    trainable_params: int
    total_params: int
    flops: int
    conv_layers: tuple

    @property
    def non_trainable_params(self):
        return self.total_params - self.trainable_params

    @property
    def mflops(self):
        return self.flops / 1e6


@functools.cache
def model_info(name):
    """A `ModelInfo` for the registered model `name` (built once with its defaults, then cached)."""
    entry = _entry(name)
    model = entry.builder()
    trainable, non_trainable = parameter_counts(model)
    info = ModelInfo(
        name=name,
        report=entry.report,
        description=entry.description,
        input_shape=tuple(model.input_shape[1:]),
        trainable_params=trainable,
        total_params=trainable + non_trainable,
        flops=count_flops(model),
        conv_layers=tuple(layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)),
    )
    del model
    gc.collect()  # cnn39m alone holds 160 MB of weights
    return info


def _format_table(header, rows, right_align=()):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(
            str(cell).rjust(width) if index in right_align else str(cell).ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    return [line(header), "  ".join("-" * width for width in widths)] + [line(row) for row in rows]


def registry_table():
    """A plain-text table of every registered model (for `train.py --arch list`)."""
    rows = []
    for name in list_models():
        info = model_info(name)
        rows.append(
            (
                name,
                info.report,
                "x".join(str(size) for size in info.input_shape),
                f"{info.trainable_params:,}",
                f"{info.total_params:,}",
                f"{info.mflops:,.1f}",
                info.description,
            )
        )
    header = ("name", "report", "input", "trainable", "params", "MFLOPs", "description")
    return "\n".join(_format_table(header, rows, right_align=(3, 4, 5)))


def summary_table(model):
    """A report-style per-layer table of `model` (for `train.py --arch X --summary`).

    One row per layer (name and type, output shape, parameters), then the total, trainable and
    non-trainable parameter counts and the forward FLOPs per image.
    """
    rows = []
    for layer in model.layers:
        shapes = _output_shapes(layer)
        shape_text = ", ".join(str(tuple(shape)) for shape in shapes) or "?"
        rows.append((f"{layer.name} ({type(layer).__name__})", shape_text, f"{layer.count_params():,}"))
    lines = _format_table(("Layer (type)", "Output shape", "Param #"), rows, right_align=(2,))
    trainable, non_trainable = parameter_counts(model)
    rule = "=" * len(lines[1])
    lines = [f'Model: "{model.name}"', rule] + lines + [
        rule,
        f"Total params: {trainable + non_trainable:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {non_trainable:,}",
        f"Forward FLOPs per image: {count_flops(model) / 1e6:,.1f} M",
    ]
    return "\n".join(lines)


# The builders register themselves on import; they import the helpers above, so they come last.
from keras_fer.models import cnn, dnn, fernet, resnet, vgg  # noqa: E402,F401
