"""Our own architecture, `fervgg`: a slim VGG for FER2013 on a 2-core CPU budget.

Layer names: `conv1` ... `conv8` with `bn1` ... `bn8` and `convN_act`, `pool1` ... `pool4`,
`drop1` ... `drop5`, `dense1`, `logits`.
"""

from keras import layers

from keras_fer.classes import IMAGE_SHAPE, NUM_CLASSES
from keras_fer.errors import FerOptionError
from keras_fer.models import check_number, check_positive_int, dropout_rates, finish_model, register
from keras_fer.models.layers import model_inputs

BASE_WIDTHS = (32, 64, 128, 256)


@register("fervgg", report="ours", description="slim VGG: 4 stages x 2 conv (32-256) + BN, flatten, dense 256")
def fervgg(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    *,
    softmax=False,
    preprocessing=None,
    width=1.0,
    dense_units=256,
    conv_dropout=(0.1, 0.2, 0.3, 0.4),
    dense_dropout=0.5,
    head="flatten",
):
    """A slim VGG for FER2013: 4 stages of 2 x (3x3 conv -> BatchNorm -> ReLU), 2x2 max-pool and
    dropout per stage, widths 32/64/128/256, then flatten (3x3x256) -> dense1 256 -> BatchNorm ->
    ReLU -> dropout -> logits. 1,764,775 trainable parameters, about 236 MFLOPs per 48x48 face.

    Why this shape: the strongest plain CNN on FER2013 (Khaireddin & Chen 2021, a VGG of 4
    stages x 2 convs with BatchNorm, 73.3% test) needs 64-512 channels and hundreds of epochs;
    at half the width a conv costs a quarter of the FLOPs, which on 2 CPU cores buys ~40
    epochs in 1.5-2 hours. Doubling the width at each halving of the map keeps every stage at
    ~59 MFLOPs, so no stage is a bottleneck. BatchNorm after every conv (report 002's ablation:
    0.68 with it, 0.56 without) lets a high learning rate train it fast; convs have no bias
    since BatchNorm's beta replaces it; He initialization suits the ReLUs. The head flattens the
    3x3 map instead of averaging it, so the classifier still knows where on the face a feature
    is (mouth below, brows above), for 590k parameters (`head="avg"` averages instead).
    Dropout rises with depth, as in report 002, and is light enough for a short schedule.

    Args:
        input_shape: `(height, width, channels)` the first conv reads.
        num_classes: size of the `logits` layer.
        softmax: append a `probabilities` Softmax layer (default: output logits).
        preprocessing: `Preprocessing` options to build around raw 48x48x1 faces, or None.
        width: multiplier of the conv widths 32/64/128/256 (2.0 gives Khaireddin & Chen's
            64-512 at 4x the FLOPs); FLOPs grow as its square.
        dense_units: width of `dense1`.
        conv_dropout: rate after each stage (one rate or four).
        dense_dropout: rate after `dense1`.
        head: `"flatten"` (keep the 3x3 layout) or `"avg"` (global average pooling).

    Example:
    >>> model = fervgg(preprocessing={"normalize": "unit"})
    >>> model.get_layer("conv8").filters
    256
    """
    if head not in ("flatten", "avg"):
        raise FerOptionError(f'Argument `head` must be "flatten" or "avg". Received: head={head!r}')
    width = check_number(width, "width", positive=True)
    stage_rates = dropout_rates(conv_dropout, 4, "conv_dropout")
    (dense_rate,) = dropout_rates(dense_dropout, 1, "dense_dropout")
    inputs, x = model_inputs(input_shape, preprocessing)
    conv = 0
    for stage, (base, rate) in enumerate(zip(BASE_WIDTHS, stage_rates), start=1):
        filters = max(1, round(base * width))
        for _ in range(2):
            conv += 1
            x = layers.Conv2D(
                filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"conv{conv}"
            )(x)
            x = layers.BatchNormalization(name=f"bn{conv}")(x)
            x = layers.ReLU(name=f"conv{conv}_act")(x)
        x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
        x = layers.Dropout(rate, name=f"drop{stage}")(x)
    if head == "flatten":
        x = layers.Flatten(name="flatten")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = layers.Dense(
        check_positive_int(dense_units, "dense_units"), use_bias=False, kernel_initializer="he_normal", name="dense1"
    )(x)
    # BatchNorm here too: without it, the first large updates kill every dense1 ReLU under
    # dropout 0.5 and the model collapses to constant logits (loss ln 7), measured with Adam 1e-3.
    x = layers.BatchNormalization(name="bn_dense1")(x)
    x = layers.ReLU(name="dense1_act")(x)
    x = layers.Dropout(dense_rate, name="drop5")(x)
    return finish_model(inputs, x, num_classes, softmax, "fervgg")
