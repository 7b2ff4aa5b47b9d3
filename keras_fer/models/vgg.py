"""The VGG-like 12-conv network of report 002 (`vgg12`).

Layer names: `conv1` ... `conv12`, `bn1` ... `bn12` (one per conv), `pool1` ... `pool4`,
`dense1`, `dense2`, `dropN` in forward order, activations `<layer>_act`, and `logits`.
"""

from keras import layers

from keras_fer.classes import IMAGE_SHAPE, NUM_CLASSES
from keras_fer.models import check_number, dropout_rates, finish_model, register
from keras_fer.models.layers import model_inputs


@register("vgg12", report="002", description="VGG-like, 4 units x 3 conv (64-512) + BN, dense 1024-512")
def vgg12(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    *,
    softmax=False,
    preprocessing=None,
    batch_norm=True,
    conv_dropout=(0.2, 0.3, 0.4, 0.5),
    dense_dropout=0.5,
    width=1.0,
):
    """The VGG-like network of report 002 (Keras 2): 12 conv layers in 4 units, 3 dense layers.

    Each unit is 3 x [conv 3x3 same -> ReLU -> BatchNorm] -> 2x2 max-pool -> dropout
    (48 -> 24 -> 12 -> 6 -> 3), then flatten (3x3x512) -> dense1 1024 -> ReLU -> dropout ->
    dense2 512 -> ReLU -> dropout -> logits. The report's code is gone and its text gives no
    filter counts or rates: the widths 64/128/256/512, the dense sizes 1024/512 and the dropout
    rates (rising with depth, as the report chose them "by tensor size") are our choice.

    Args:
        input_shape: `(height, width, channels)` the first conv reads.
        num_classes: size of the `logits` layer.
        softmax: append a `probabilities` Softmax layer (default: output logits).
        preprocessing: `Preprocessing` options to build around raw 48x48x1 faces, or None.
        batch_norm: BatchNorm after every conv; False is the report's ablation (0.563 public
            score against 0.681 with it).
        conv_dropout: rate after each unit (one rate or four).
        dense_dropout: rate after each hidden dense layer (one rate or two).
        width: multiplier of every conv and dense width (the report's network is 1.0; 0.25
            costs about 1/16 of the compute, for ablations that must fit a CPU).

    Example:
    >>> model = vgg12(batch_norm=False)
    >>> [layer.name for layer in model.layers if layer.name.startswith("bn")]
    []
    """
    width = check_number(width, "width", positive=True)
    inputs, x = model_inputs(input_shape, preprocessing)
    unit_rates = dropout_rates(conv_dropout, 4, "conv_dropout")
    dense_rates = dropout_rates(dense_dropout, 2, "dense_dropout")
    conv = 0
    for unit, (filters, rate) in enumerate(zip((64, 128, 256, 512), unit_rates), start=1):
        for _ in range(3):
            conv += 1
            x = layers.Conv2D(max(1, round(filters * width)), 3, padding="same", name=f"conv{conv}")(x)
            x = layers.ReLU(name=f"conv{conv}_act")(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"bn{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{unit}")(x)
        x = layers.Dropout(rate, name=f"drop{unit}")(x)
    x = layers.Flatten(name="flatten")(x)
    for index, (units, rate) in enumerate(zip((1024, 512), dense_rates), start=1):
        x = layers.Dense(max(1, round(units * width)), name=f"dense{index}")(x)
        x = layers.ReLU(name=f"dense{index}_act")(x)
        x = layers.Dropout(rate, name=f"drop{4 + index}")(x)
    return finish_model(inputs, x, num_classes, softmax, "vgg12")
