"""Plain convolutional networks: reports 000 (`cnn4`, `cnn3`), 003 (`cnn39m`) and 004 (`cnn4d`).

Layer names: `convN`, `bnN`, `poolN`, `dropN` and `denseN` count from 1 in forward order;
an activation is named after the layer it follows (`conv1_act`, `dense1_act`); the last Dense
is `logits`.
"""


from keras import layers

from keras_fer.classes import IMAGE_SHAPE, NUM_CLASSES
from keras_fer.errors import FerOptionError, check_integer
from keras_fer.models import check_number, check_positive_int, dropout_rates, finish_model, register
from keras_fer.models.layers import RReLU, model_inputs

#: PyTorch's BatchNorm defaults (momentum 0.1 of the new batch = Keras momentum 0.9, eps 1e-5),
#: for the architectures that come from PyTorch reports.
TORCH_BATCH_NORM = {"momentum": 0.9, "epsilon": 1e-5}


@register("cnn4", report="000", description="4-block CNN, LeakyReLU(0.05), BatchNorm in blocks 3-4")
def cnn4(input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES, *, softmax=False, preprocessing=None, negative_slope=0.05,
         batch_norm=True):
    """The 4-block CNN of report 000 (PyTorch): 538,759 trainable parameters.

    conv1 32 5x5 -> LeakyReLU -> pool1; conv2 64 3x3 -> LeakyReLU -> pool2; conv3 128 3x3 ->
    LeakyReLU -> bn1 -> pool3; conv4 128 3x3 -> LeakyReLU -> bn2 -> pool4 (3x3x128 = 1152) ->
    dense1 256 -> ReLU -> bn3 -> logits. `padding="same"` reproduces the report's PyTorch pads
    (2 for 5x5, 1 for 3x3) at stride 1. Keras counts 539,783 parameters in all: BatchNorm's
    moving mean and variance (1,024 values) are non-trainable weights that PyTorch does not count.

    Args:
        input_shape: `(height, width, channels)` the first conv reads; 48x48x1 in the report.
        num_classes: size of the `logits` layer.
        softmax: append a `probabilities` Softmax layer (default: output logits).
        preprocessing: `Preprocessing` options (e.g. `{"normalize": "unit"}`) to build the
            model around raw 48x48x1 faces, or None.
        negative_slope: LeakyReLU slope for negative inputs (0.05 in the report).
        batch_norm: keep the report's three BatchNorm layers; False drops them all (the
            BatchNorm ablation of report 002, run on this cheaper network).

    Example:
    >>> model = cnn4()
    >>> sum(int(w.numpy().size) for w in model.trainable_weights)
    538759
    """
    negative_slope = check_number(negative_slope, "negative_slope")
    inputs, x = model_inputs(input_shape, preprocessing)
    blocks = [(32, 5, False), (64, 3, False), (128, 3, True), (128, 3, True)]
    bn = 0
    for index, (filters, kernel_size, block_norm) in enumerate(blocks, start=1):
        x = layers.Conv2D(filters, kernel_size, padding="same", name=f"conv{index}")(x)
        x = layers.LeakyReLU(negative_slope=negative_slope, name=f"conv{index}_act")(x)
        if block_norm and batch_norm:
            bn += 1
            x = layers.BatchNormalization(**TORCH_BATCH_NORM, name=f"bn{bn}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, name="dense1")(x)
    x = layers.ReLU(name="dense1_act")(x)
    if batch_norm:
        x = layers.BatchNormalization(**TORCH_BATCH_NORM, name=f"bn{bn + 1}")(x)
    return finish_model(inputs, x, num_classes, softmax, "cnn4")


@register("cnn3", report="000", description="simple 3-block CNN [64, 128, 512] for saliency")
def cnn3(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    *,
    softmax=False,
    preprocessing=None,
    filters=(64, 128, 512),
    dense_units=256,
    dropout=0.5,
):
    """The "simple 3-layer CNN [64, 128, 512]" report 000 mentions for its saliency question.

    Each block is conv (3x3, same) -> BatchNorm -> ReLU -> 2x2 max-pool (48 -> 24 -> 12 -> 6);
    then global average pooling -> dense1 -> ReLU -> dropout -> logits. The report gives only
    the widths: the classifier is our choice, kept small (global pooling, not a 18,432-wide
    flatten) so the convolutions carry the model, which is what a saliency map should show.

    Args:
        input_shape: `(height, width, channels)` the first conv reads.
        num_classes: size of the `logits` layer.
        softmax: append a `probabilities` Softmax layer (default: output logits).
        preprocessing: `Preprocessing` options to build around raw 48x48x1 faces, or None.
        filters: the three conv widths.
        dense_units: width of the hidden Dense layer.
        dropout: rate before `logits`.

    Example:
    >>> cnn3().get_layer("conv3").filters
    512
    """
    inputs, x = model_inputs(input_shape, preprocessing)
    if isinstance(filters, (str, bytes)) or not hasattr(filters, "__len__") or len(filters) != 3:
        raise FerOptionError(f"Argument `filters` must hold 3 conv widths. Received: filters={filters!r}")
    (rate,) = dropout_rates(dropout, 1, "dropout")
    for index, width in enumerate(filters, start=1):
        x = layers.Conv2D(check_positive_int(width, "filters"), 3, padding="same", name=f"conv{index}")(x)
        x = layers.BatchNormalization(name=f"bn{index}")(x)
        x = layers.ReLU(name=f"conv{index}_act")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dense(check_positive_int(dense_units, "dense_units"), name="dense1")(x)
    x = layers.ReLU(name="dense1_act")(x)
    x = layers.Dropout(rate, name="drop1")(x)
    return finish_model(inputs, x, num_classes, softmax, "cnn3")


@register("cnn39m", report="003", description="64x64 CNN, RReLU, 39,569,799 trainable parameters")
def cnn39m(
    input_shape=(64, 64, 1),
    num_classes=NUM_CLASSES,
    *,
    softmax=False,
    preprocessing=None,
    conv_dropout=0.25,
    dense_dropout=0.5,
    seed=None,
):
    """The 39.6M-parameter CNN of report 003 (PyTorch, faces resized to 64x64).

    Four blocks conv (3x3, same) -> BatchNorm -> activation -> 2x2 max-pool -> dropout, widths
    64/128/256/512, RReLU after the first BatchNorm and ReLU after the others (64 -> 4, so
    4x4x512 = 8192 features); then dropout -> dense1 4096 -> RReLU -> dropout -> dense2 1024 ->
    RReLU -> dense3 256 -> RReLU -> logits. Trainable parameters: exactly 39,569,799, as the
    report's torchsummary table (Keras adds 3,840 non-trainable BatchNorm statistics).
    The report's dropout rates are not printed; `conv_dropout` and `dense_dropout` are ours.

    Args:
        input_shape: `(height, width, channels)`; 64x64x1 in the report (with `preprocessing`,
            the model takes 48x48x1 faces and resizes them itself).
        num_classes: size of the `logits` layer.
        softmax: append a `probabilities` Softmax layer (default: output logits).
        preprocessing: `Preprocessing` options to build around raw 48x48x1 faces, or None.
        conv_dropout: rate after each conv block (one rate or four).
        dense_dropout: rate before dense1 and after its RReLU (one rate or two).
        seed: seed of the RReLU slope draws (each layer gets `seed + index`), or None.

    Example:
    >>> model = cnn39m(preprocessing={"normalize": "unit"})
    >>> model.input_shape, model.get_layer("conv1").input.shape
    ((None, 48, 48, 1), (None, 64, 64, 1))
    """
    if seed is not None:
        seed = check_integer(seed, "Argument `seed`", 0, received="seed")  # or None
    inputs, x = model_inputs(input_shape, preprocessing)
    conv_rates = dropout_rates(conv_dropout, 4, "conv_dropout")
    dense_rates = dropout_rates(dense_dropout, 2, "dense_dropout")
    rrelu_count = 0

    def rrelu(name):
        nonlocal rrelu_count
        rrelu_count += 1
        return RReLU(seed=None if seed is None else seed + rrelu_count, name=name)

    for index, (filters, rate) in enumerate(zip((64, 128, 256, 512), conv_rates), start=1):
        x = layers.Conv2D(filters, 3, padding="same", name=f"conv{index}")(x)
        x = layers.BatchNormalization(**TORCH_BATCH_NORM, name=f"bn{index}")(x)
        x = rrelu(f"conv{index}_act")(x) if index == 1 else layers.ReLU(name=f"conv{index}_act")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
        x = layers.Dropout(rate, name=f"drop{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dense_rates[0], name="drop5")(x)
    x = layers.Dense(4096, name="dense1")(x)
    x = rrelu("dense1_act")(x)
    x = layers.Dropout(dense_rates[1], name="drop6")(x)
    x = layers.Dense(1024, name="dense2")(x)
    x = rrelu("dense2_act")(x)
    x = layers.Dense(256, name="dense3")(x)
    x = rrelu("dense3_act")(x)
    return finish_model(inputs, x, num_classes, softmax, "cnn39m")


@register("cnn4d", report="004", description="4-conv CNN + 3 dense, dropout everywhere (~4.1M params)")
def cnn4d(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    *,
    softmax=False,
    preprocessing=None,
    batch_norm=False,
    conv_dropout=(0.2, 0.3, 0.4, 0.5),
    dense_dropout=0.5,
):
    """The CNN of report 004 (Keras 2): 4,075,783 parameters without BatchNorm.

    conv1 64 5x5, conv2 128, conv3 256, conv4 512 (3x3, same), each -> ReLU -> 2x2 max-pool ->
    dropout (0.2 rising to 0.5), flatten (3x3x512 = 4608) -> dense1 512 -> dense2 256 ->
    dense3 128 (each ReLU -> dropout 0.5) -> logits. The report names no normalization;
    `batch_norm=True` puts a BatchNormalization between each conv and its ReLU.

    Args:
        input_shape: `(height, width, channels)` the first conv reads.
        num_classes: size of the `logits` layer.
        softmax: append a `probabilities` Softmax layer (default: output logits).
        preprocessing: `Preprocessing` options to build around raw 48x48x1 faces, or None.
        batch_norm: add BatchNorm after every conv (`bn1` ... `bn4`).
        conv_dropout: rate after each conv block (one rate or four).
        dense_dropout: rate after each hidden dense layer (one rate or three).

    Example:
    >>> cnn4d().count_params()
    4075783
    """
    inputs, x = model_inputs(input_shape, preprocessing)
    conv_rates = dropout_rates(conv_dropout, 4, "conv_dropout")
    dense_rates = dropout_rates(dense_dropout, 3, "dense_dropout")
    for index, (filters, kernel_size, rate) in enumerate(zip((64, 128, 256, 512), (5, 3, 3, 3), conv_rates), start=1):
        x = layers.Conv2D(filters, kernel_size, padding="same", name=f"conv{index}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"bn{index}")(x)
        x = layers.ReLU(name=f"conv{index}_act")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
        x = layers.Dropout(rate, name=f"drop{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    for index, (units, rate) in enumerate(zip((512, 256, 128), dense_rates), start=1):
        x = layers.Dense(units, name=f"dense{index}")(x)
        x = layers.ReLU(name=f"dense{index}_act")(x)
        x = layers.Dropout(rate, name=f"drop{4 + index}")(x)
    return finish_model(inputs, x, num_classes, softmax, "cnn4d")
