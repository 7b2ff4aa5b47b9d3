"""ResNet18 as in torchvision, for report 001 (`resnet18`).

Layer names: the 17 convolutions of the main path are `conv1` (stem) ... `conv17` in forward
order, each followed by `bnN` (same N); the three 1x1 downsampling shortcuts are
`shortcutK_conv` / `shortcutK_bn`; each BasicBlock ends in `blockM_add` -> `blockM_act`
(M = 1 ... 8). Then `avgpool` and `logits` (the 18th weight layer).
"""

from keras import layers

from keras_fer.classes import NUM_CLASSES
from keras_fer.errors import FerOptionError
from keras_fer.models import finish_model, register
from keras_fer.models.layers import ForwardGradConv2D, model_inputs

#: torchvision's BatchNorm (momentum 0.1 of the new batch = Keras 0.9, eps 1e-5).
_BATCH_NORM = {"momentum": 0.9, "epsilon": 1e-5}


def _conv_bn(x, filters, kernel_size, stride, index):
    """conv -> BatchNorm with PyTorch's symmetric padding (kernel_size // 2 on every side)."""
    pad = kernel_size // 2
    if stride > 1 and pad:
        # Keras "same" pads a stride-2 conv only at the bottom/right of an even input, which
        # would shift its sampling grid by one pixel from the 1x1 shortcut's; PyTorch pads both.
        x = layers.ZeroPadding2D(pad, name=f"conv{index}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    # Stride-1 convolutions of the 256- and 512-channel stages (3x3 and 2x2 maps) take the
    # faster input gradient of `ForwardGradConv2D` (same weights and outputs as Conv2D).
    conv = ForwardGradConv2D if stride == 1 and filters >= 256 else layers.Conv2D
    x = conv(
        filters, kernel_size, strides=stride, padding=padding, use_bias=False,
        kernel_initializer="he_normal", name=f"conv{index}",
    )(x)
    return layers.BatchNormalization(**_BATCH_NORM, name=f"bn{index}")(x)


@register("resnet18", report="001", description="torchvision ResNet18 (BasicBlock), 3-channel 48x48")
def resnet18(input_shape=(48, 48, 3), num_classes=NUM_CLASSES, *, softmax=False, preprocessing=None,
             stem="imagenet"):
    """ResNet18 with torchvision's layout: 11,180,103 trainable parameters for 3 channels.

    Stem: ZeroPadding2D(3) + conv1 7x7/2 (valid) -> bn1 -> ReLU -> ZeroPadding2D(1) + 3x3/2
    max-pool (torchvision's pad 3 and pad 1; zero padding equals PyTorch's -inf padding after a
    ReLU). Then 4 stages of 2 BasicBlocks (3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus the
    identity, -> ReLU) with 64/128/256/512 channels; the first block of stages 2-4 has stride 2
    and a 1x1/2 conv + BN shortcut. Global average pooling -> logits. Convs have no bias, as in
    torchvision, so Keras' trainable count equals torchvision's `resnet18(num_classes=7)`.
    At 48x48 the feature maps go 24 (stem) -> 12 (pool) -> 12 -> 6 -> 3 -> 2.

    `stem="small"` replaces that ImageNet stem, which leaves a 48x48 face at 12x12 before the
    first block, by the small-image one of the FER ResNets (conv1 3x3/1 -> bn1 -> ReLU -> 2x2/2
    max-pool): maps 48 -> 24 (pool) -> 24 -> 12 -> 6 -> 3, 3.2x the FLOPs (`count_flops`: 631
    MFLOPs a face against 196; `fervgg` 236, at width 1.5 529), 7,680 fewer parameters in conv1.

    Args:
        input_shape: `(height, width, channels)`; 48x48x3 as in the report (grey replicated);
            `(48, 48, 1)` builds a 1-channel variant (6,272 fewer parameters in conv1).
        num_classes: size of the `logits` layer.
        softmax: append a `probabilities` Softmax layer (default: output logits).
        preprocessing: `Preprocessing` options; the model then takes 48x48x1 faces and the
            layer replicates the grey channel to `input_shape[-1]`.
        stem: `"imagenet"` (torchvision's, the report's) or `"small"` (3x3/1 conv, 2x2 pool).

    Example:
    >>> model = resnet18(preprocessing={"normalize": "unit"})
    >>> model.input_shape
    (None, 48, 48, 1)
    """
    if stem not in ("imagenet", "small"):
        raise FerOptionError(f'Argument `stem` must be "imagenet" or "small". Received: stem={stem!r}')
    inputs, x = model_inputs(input_shape, preprocessing)
    if stem == "imagenet":
        x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
        x = layers.Conv2D(64, 7, strides=2, use_bias=False, kernel_initializer="he_normal", name="conv1")(x)
    else:
        x = layers.Conv2D(64, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name="conv1")(x)
    x = layers.BatchNormalization(**_BATCH_NORM, name="bn1")(x)
    x = layers.ReLU(name="conv1_act")(x)
    if stem == "imagenet":
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    else:
        x = layers.MaxPooling2D(2, name="pool1")(x)

    conv, block, shortcut = 1, 0, 0
    for stage, filters in enumerate((64, 128, 256, 512)):
        for position in range(2):
            stride = 2 if stage > 0 and position == 0 else 1
            block += 1
            identity = x
            x = _conv_bn(x, filters, 3, stride, conv + 1)
            x = layers.ReLU(name=f"conv{conv + 1}_act")(x)
            x = _conv_bn(x, filters, 3, 1, conv + 2)
            conv += 2
            if stride != 1 or identity.shape[-1] != filters:
                shortcut += 1
                identity = layers.Conv2D(
                    filters, 1, strides=stride, use_bias=False, kernel_initializer="he_normal",
                    name=f"shortcut{shortcut}_conv",
                )(identity)
                identity = layers.BatchNormalization(**_BATCH_NORM, name=f"shortcut{shortcut}_bn")(identity)
            x = layers.Add(name=f"block{block}_add")([x, identity])
            x = layers.ReLU(name=f"block{block}_act")(x)
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    return finish_model(inputs, x, num_classes, softmax, "resnet18")
