"""Fully connected networks of report 004: `dnn` and its parameter-matched `dnn-matched`.

Layer names: `pool1` (2x2 max-pool on the image), `drop1`, `flatten`, then per hidden layer
`denseN` -> `denseN_act` (LeakyReLU) -> `bnN` -> `drop{N+1}`, and `logits`.
"""

import math

from keras import layers

from keras_fer.classes import IMAGE_SHAPE, NUM_CLASSES
from keras_fer.errors import FerOptionError
from keras_fer.models import check_number, check_positive_int, dropout_rates, finish_model, register
from keras_fer.models.layers import model_inputs


def _dnn(inputs, x, num_classes, softmax, name, *, width, depth, input_dropout, dropout, negative_slope):
    (input_rate,) = dropout_rates(input_dropout, 1, "input_dropout")
    negative_slope = check_number(negative_slope, "negative_slope")
    hidden_rates = dropout_rates(dropout, depth, "dropout")
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Dropout(input_rate, name="drop1")(x)
    x = layers.Flatten(name="flatten")(x)
    for index, rate in enumerate(hidden_rates, start=1):
        x = layers.Dense(width, name=f"dense{index}")(x)
        x = layers.LeakyReLU(negative_slope=negative_slope, name=f"dense{index}_act")(x)
        x = layers.BatchNormalization(name=f"bn{index}")(x)
        x = layers.Dropout(rate, name=f"drop{index + 1}")(x)
    return finish_model(inputs, x, num_classes, softmax, name)


@register("dnn", report="004", description="MaxPool 2x2 -> 4 x Dense 1024 (LeakyReLU, BN, dropout)")
def dnn(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    *,
    softmax=False,
    preprocessing=None,
    width=1024,
    depth=4,
    input_dropout=0.2,
    dropout=0.5,
    negative_slope=0.3,
):
    """The DNN of report 004 (Keras 2): 3,763,207 parameters, 3,755,015 trainable.

    pool1 2x2 max-pool (48x48x1 -> 24x24x1) -> drop1 -> flatten (576) -> 4 x [Dense 1024 ->
    LeakyReLU -> BatchNorm -> Dropout] -> logits. The report's table gives the layers and counts
    but not the rates; `input_dropout` 0.2 and `dropout` 0.5 are ours, and LeakyReLU keeps Keras'
    default slope 0.3, which the report's Keras 2 code would have had. It barely trains
    (accuracy ~0.30 in the report): the point of the comparison with `cnn4d`.

    Args:
        input_shape: `(height, width, channels)` of the input.
        num_classes: size of the `logits` layer.
        softmax: append a `probabilities` Softmax layer (default: output logits).
        preprocessing: `Preprocessing` options to build around raw 48x48x1 faces, or None.
        width: units of each hidden Dense layer.
        depth: number of hidden Dense layers.
        input_dropout: rate on the pooled image.
        dropout: rate after each hidden layer (one rate or `depth`).
        negative_slope: LeakyReLU slope.

    Example:
    >>> dnn().count_params()
    3763207
    """
    inputs, x = model_inputs(input_shape, preprocessing)
    return _dnn(
        inputs, x, num_classes, softmax, "dnn",
        width=check_positive_int(width, "width"), depth=check_positive_int(depth, "depth"),
        input_dropout=input_dropout, dropout=dropout, negative_slope=negative_slope,
    )


def dnn_parameter_count(width, *, depth=4, features=576, num_classes=NUM_CLASSES, trainable_only=False):
    """Parameters of the `dnn` shape: `features` inputs, `depth` hidden layers of `width`.

    Each hidden layer has a Dense (weights and bias) and a BatchNorm (2 trainable and 2
    non-trainable values per unit).
    """
    per_unit_norm = 2 if trainable_only else 4
    return (
        (features + 1) * width
        + (depth - 1) * (width + 1) * width
        + depth * per_unit_norm * width
        + (width + 1) * num_classes
    )


def matched_width(target, *, depth=4, features=576, num_classes=NUM_CLASSES, trainable_only=False):
    """The hidden width whose `dnn_parameter_count` is nearest to `target` (closed form).

    The count is `a w^2 + b w + c` with `a = depth - 1`: solve for the real root, then take
    the better of its floor and ceiling.
    """
    per_unit_norm = 2 if trainable_only else 4
    a = depth - 1
    b = (features + 1) + (depth - 1) + depth * per_unit_norm + num_classes
    c = num_classes - target
    root = -c / b if a == 0 else (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    candidates = {max(1, math.floor(root)), max(1, math.ceil(root))}

    def error(width):
        count = dnn_parameter_count(
            width, depth=depth, features=features, num_classes=num_classes, trainable_only=trainable_only
        )
        return abs(count - target)

    return min(sorted(candidates), key=error)


@register("dnn-matched", report="004", description="the dnn shape, width solved to match a model's count")
def dnn_matched(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    *,
    softmax=False,
    preprocessing=None,
    match="cnn4d",
    depth=4,
    input_dropout=0.2,
    dropout=0.5,
    negative_slope=0.3,
    trainable_only=False,
):
    """The `dnn` shape with its hidden width solved so its parameter count matches a model's.

    Report 004 asks for a DNN "with a parameter count close to the CNN"; this answers for any
    registered model. The target is that model's count when built with its defaults (from
    `model_info`, cached), the width comes from a closed-form solution of the quadratic count
    (`matched_width`), and the result lands within a fraction of a percent of the target
    (e.g. width 1,069 and 4,072,897 parameters for `cnn4d`'s 4,075,783).

    Args:
        input_shape: `(height, width, channels)` of the input.
        num_classes: size of the `logits` layer (the target is counted with its own default).
        softmax: append a `probabilities` Softmax layer (default: output logits).
        preprocessing: `Preprocessing` options to build around raw 48x48x1 faces, or None.
        match: a registered model name, or a parameter count (int).
        depth: number of hidden Dense layers.
        input_dropout: rate on the pooled image.
        dropout: rate after each hidden layer (one rate or `depth`).
        negative_slope: LeakyReLU slope.
        trainable_only: match trainable counts (PyTorch-style) instead of total counts.

    Example:
    >>> model = dnn_matched(match="cnn4")
    >>> model.get_layer("dense1").units
    335
    """
    from keras_fer.models import list_models, model_info

    if isinstance(match, str):
        if match not in list_models() or match == "dnn-matched":
            valid = [name for name in list_models() if name != "dnn-matched"]
            raise FerOptionError(
                f"Argument `match` must be a parameter count or one of: {', '.join(valid)}. Received: match={match!r}"
            )
        info = model_info(match)
        target = info.trainable_params if trainable_only else info.total_params
    else:
        target = check_positive_int(match, "match")
    depth = check_positive_int(depth, "depth")
    num_classes = check_positive_int(num_classes, "num_classes")
    inputs, x = model_inputs(input_shape, preprocessing)
    features = (int(x.shape[1]) // 2) * (int(x.shape[2]) // 2) * int(x.shape[3])
    width = matched_width(
        target, depth=depth, features=features, num_classes=num_classes, trainable_only=trainable_only
    )
    return _dnn(
        inputs, x, num_classes, softmax, "dnn-matched",
        width=width, depth=depth, input_dropout=input_dropout, dropout=dropout, negative_slope=negative_slope,
    )
