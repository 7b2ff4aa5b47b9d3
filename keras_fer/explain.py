"""Why a model says what it says: saliency, SmoothGrad, Grad-CAM(++), LayerCAM, Score-CAM,
filter ascent, the first layer's kernels, feature maps.

The gradient methods are written directly with `tf.GradientTape` on the model's *logits*
(pre-softmax scores: when a model ends in a Softmax, the layer before it is used; Score-CAM uses
the softmax of those logits and no gradient). Everything is batched and compiled with
`tf.function`, and works for any Functional (or Sequential) Keras model, nested sub-models
included: layers are looked up inside them too. Images are raw faces as the model takes them
(float grey levels 0-255, `(N, 48, 48, 1)` for the zoo's models); maps come back as numpy
arrays with the input's height and width, normalized per image to [0, 1].

Example:
>>> from keras_fer import explain
>>> maps = explain.saliency(model, faces.pixels[:8])            # doctest: +SKIP
>>> cams = explain.grad_cam(model, faces.pixels[:8], layer="conv4")  # doctest: +SKIP
>>> found = explain.filter_ascent(model, "conv4", [0, 1, 2])    # doctest: +SKIP
>>> found.images.shape, found.activations.shape                 # doctest: +SKIP
((3, 48, 48, 1), (3, 65))
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from keras_fer.errors import FerOptionError, check_finite, check_integer

#: Images per compiled batch: memory stays bounded whatever N is.
BATCH_SIZE = 64
#: SmoothGrad's defaults: the paper's 50 noisy copies, noise 0.15 of the pixel range.
SMOOTHGRAD_SAMPLES, SMOOTHGRAD_NOISE = 50, 0.15
#: Occlusion's defaults: an 8x8 grey square every 4 pixels (121 forward passes a 48x48 face).
OCCLUSION_PATCH, OCCLUSION_STRIDE = 8, 4
CONV_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
              keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
# The activations that make feature maps (nearly) non-negative, for Grad-CAM++ and Score-CAM.
RECTIFIERS = (keras.layers.ReLU, keras.layers.LeakyReLU)


# --------------------------------------------------------------------------------------------
# Layers


def _is_graph_model(layer):
    """True for Functional and Sequential models: their layers can be looked into."""
    return isinstance(layer, keras.Model) and hasattr(_functional_of(layer), "_run_through_graph")


def _check_model(model):
    """FerOptionError for anything but a Keras model (a run directory or `.keras` path, say)."""
    if not isinstance(model, keras.Model):
        given = f"model={model!r}"
        if not (model is None or isinstance(model, (str, os.PathLike))):  # images swapped in: many lines
            shape = getattr(model, "shape", None)
            given = f"model of type {type(model).__name__}" + ("" if shape is None else f" (shape {tuple(shape)})")
        raise FerOptionError("model must be a Keras model: load a file or run directory with "
                             f"keras_fer.loading.load_keras_model(path). Received: {given}")


def _functional_of(model):
    """The Functional graph of a Functional model, or of a built Sequential model."""
    _check_model(model)
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model


def walk_layers(model):
    """Every layer of `model` in forward order, looking into nested models (which are not
    themselves listed)."""
    _check_model(model)
    for layer in model.layers:
        if _is_graph_model(layer):
            yield from walk_layers(layer)
        else:
            yield layer


def _output_rank(layer):
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):
        return None


def conv_layers(model):
    """Names of the convolution layers of `model`, in forward order (nested ones included)."""
    return [layer.name for layer in walk_layers(model) if isinstance(layer, CONV_TYPES)]


def feature_layers(model):
    """Names of the layers whose output is a stack of 2-D feature maps `(batch, H, W, C)`:
    convolutions, activations, pooling, BatchNorm, additions..."""
    from keras_fer.models.layers import Preprocessing

    return [
        layer.name for layer in walk_layers(model)
        if _output_rank(layer) == 4 and not isinstance(layer, (keras.layers.InputLayer, Preprocessing))
    ]


def find_layer(model, name=None, *, rank4=True):
    """The layer called `name` (nested models included); None picks the last conv layer.

    Raises:
        FerOptionError: for an unknown name (listing the conv layers), a layer without 2-D
            feature maps, or a model without conv layers.
    """
    convs = conv_layers(model)
    if name is None:
        if not convs:
            spatial = feature_layers(model)
            hint = (f": name a layer with 2-D feature maps ({', '.join(spatial)}; LayerCAM keeps its detail), or "
                    "use saliency" if spatial else ": use saliency, which needs no layer")
            raise FerOptionError(f"model {model.name!r} has no convolution layers to explain by default{hint}")
        name = convs[-1]
    for layer in walk_layers(model):
        if layer.name == name:
            if rank4 and _output_rank(layer) != 4:
                raise FerOptionError(
                    f"layer {name!r} has no 2-D feature maps (output {layer.output.shape}): choose one "
                    f"of the conv layers {', '.join(convs)}"
                )
            return layer
    raise FerOptionError(
        f"no layer {name!r} in model {model.name!r}: the conv layers are "
        f"{', '.join(convs) or '(none)'} (any layer with 2-D feature maps also works). Received: layer={name!r}"
    )


# --------------------------------------------------------------------------------------------
# Tapping: one model that returns some layers' outputs and the logits


def _producer(tensor):
    """The (operation, node index) that produced a symbolic tensor."""
    history = tensor._keras_history
    return history.operation, history.node_index


def _is_softmax(layer):
    if isinstance(layer, keras.layers.Softmax):
        return True
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", "") == "softmax"
    return False


def _dense_softmax(layer):
    return isinstance(layer, keras.layers.Dense) and getattr(layer.activation, "__name__", "") == "softmax"


def _final_operation(model):
    """The layer computing `model`'s (single) output, looking into nested models."""
    operation, _ = _producer(_functional_of(model).outputs[0])
    while _is_graph_model(operation):
        operation, _ = _producer(_functional_of(operation).outputs[0])
    return operation


class _Tap:
    """`model` rewired to return `[outputs of the tapped layers..., logits]`.

    Flat models use `keras.Model(model.inputs, [layer.output, ...])`; when a tapped layer (or
    the final softmax) sits inside a nested model, the graph is re-run symbolically with the
    nested models expanded in place, so every layer is reachable from the outer inputs. The
    rewired model shares the original's layers and weights.
    """

    def __init__(self, model, layers, logits=True):
        if not _is_graph_model(model):
            raise FerOptionError("explanations need a Functional or Sequential Keras model. "
                                 f"Received: {type(model).__name__}")
        self.model = model
        self.layers = list(layers)
        self.with_logits = logits
        final = _final_operation(model)
        # The logits are the input of a final Softmax; a Dense with a softmax activation is
        # recomputed without it; anything else is taken to output logits already.
        self.final = final if (_is_softmax(final) or _dense_softmax(final)) else None
        top = set(id(layer) for layer in _functional_of(model).layers)
        # A Sequential model's layers have several graph nodes once it is loaded from a file (its
        # build and its graph): `layer.output` is the first one's, outside the graph the flat
        # rewiring follows, and the gradient to it was None. Re-running its graph finds the right one.
        nested = isinstance(model, keras.Sequential) or any(id(layer) not in top for layer in self.layers) or (
            self.final is not None and id(self.final) not in top
        )
        self.tap_model = self._build_nested() if nested else self._build_flat()

    def _logits_source(self):
        functional = _functional_of(self.model)
        if self.final is None:
            return functional.outputs[0]
        return self.final.input

    def _build_flat(self):
        functional = _functional_of(self.model)
        outputs = [layer.output for layer in self.layers]
        if self.with_logits:
            outputs.append(self._logits_source())
        return keras.Model(functional.inputs, outputs)

    def _build_nested(self):
        functional = _functional_of(self.model)
        wanted = {id(layer) for layer in self.layers}
        captured = {}

        def operation_fn(operation):
            if _is_graph_model(operation):
                inner = _functional_of(operation)

                def run_nested(*args, **kwargs):
                    return inner._run_through_graph(args[0] if len(args) == 1 else list(args), operation_fn)

                return run_nested

            def run(*args, **kwargs):
                if self.final is not None and operation is self.final and "logits" not in captured:
                    captured["logits"] = args[0]
                outputs = operation(*args, **kwargs)
                if id(operation) in wanted and id(operation) not in captured:
                    captured[id(operation)] = outputs
                return outputs

            return run

        inputs = [keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype) for tensor in functional.inputs]
        outputs = functional._run_through_graph(inputs if len(inputs) > 1 else inputs[0], operation_fn)
        result = [captured[id(layer)] for layer in self.layers]
        if self.with_logits:
            result.append(captured["logits"] if self.final is not None else keras.tree.flatten(outputs)[0])
        return keras.Model(inputs, result)

    def __call__(self, images):
        """`[tapped outputs..., logits]` for a batch, in inference mode."""
        outputs = self.tap_model(images, training=False)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        if self.with_logits and self.final is not None and _dense_softmax(self.final):
            features = outputs[-1]
            logits = tf.matmul(features, self.final.kernel)
            if self.final.use_bias:
                logits = logits + self.final.bias
            outputs[-1] = logits
        return outputs


_CACHE_ATTRIBUTE = "_keras_fer_explain_cache"


def _cached(model, key, build):
    """Compiled functions kept on the model itself, so repeated calls do not retrace and they
    are freed with the model (a module-level dict keyed by model would keep every model alive).
    `object.__setattr__` keeps the cache out of Keras' attribute tracking and saving."""
    functions = model.__dict__.get(_CACHE_ATTRIBUTE)
    if functions is None:
        functions = {}
        object.__setattr__(model, _CACHE_ATTRIBUTE, functions)
    if key not in functions:
        functions[key] = build()
    return functions[key]


def _input_dtype(model):
    dtype = _functional_of(model).inputs[0].dtype
    return tf.as_dtype(getattr(dtype, "name", dtype) if not isinstance(dtype, str) else dtype)


def _image_spec(model):
    """The `tf.function` signature of an image batch: any batch size, the model's image shape."""
    functional = _functional_of(model)
    return tf.TensorSpec((None,) + tuple(functional.inputs[0].shape[1:]), _input_dtype(model))


CLASSES_SPEC = tf.TensorSpec((None,), tf.int32)


def _prepare(model, images):
    """Images as a float array of the model's input dtype, with a batch axis and channels: a batch
    or one image, and for a one-channel model also without the channel axis (a grey `(H, W)` face
    or an `(N, H, W)` stack, as `inference.predict_proba` takes them)."""
    given = np.asarray(images)
    expected = tuple(_functional_of(model).inputs[0].shape[1:])
    images = given
    if expected[-1] == 1 and images.ndim in (len(expected) - 1, len(expected)) \
            and tuple(images.shape[images.ndim - len(expected) + 1:]) == expected[:-1]:
        images = images[..., None]
    if images.ndim == len(expected):
        images = images[None]
    if images.ndim != len(expected) + 1 or tuple(images.shape[1:]) != expected:
        raise FerOptionError(f"images must be a batch of {expected} images (or one), as model {model.name!r} "
                             f"takes. Received: images.shape={given.shape}")
    if not len(images):
        raise FerOptionError(f"images must hold at least one image. Received: images.shape={given.shape}")
    if images.dtype.kind not in "biuf":
        raise FerOptionError(f"images must be numbers (pixel values). Received: images.dtype={images.dtype}")
    return images.astype(_input_dtype(model).as_numpy_dtype)


def _class_array(class_index, count, model):
    """Per-image class indices, checked against the model's classes; -1 (made here only for
    `class_index=None`) means "the predicted class"."""
    if class_index is None:
        return np.full(count, -1, np.int32)
    num_classes = int(_functional_of(model).outputs[0].shape[-1])
    values = np.asarray(class_index)
    if values.dtype.kind not in "iu" or values.ndim > 1:
        raise FerOptionError(
            f"class_index must be None, a class in 0-{num_classes - 1}, or one such class per image. "
            f"Received: class_index={class_index!r}"
        )
    if values.ndim == 1 and len(values) != count:
        raise FerOptionError(
            f"class_index must give one class per image: {count} images. Received: {len(values)} classes"
        )
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise FerOptionError(f"class_index must be in 0-{num_classes - 1}. Received: class_index={int(bad[0])}")
    return np.broadcast_to(values, (count,)).astype(np.int32)


def _chunks(count, size=BATCH_SIZE):
    size = check_integer(size, "batch_size", 1)
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def _pick(logits, classes):
    """The logit of each image's class (its argmax where the class is -1), and those classes."""
    predicted = tf.argmax(logits, axis=1, output_type=tf.int32)
    chosen = tf.where(classes < 0, predicted, classes)
    return tf.gather(logits, chosen, axis=1, batch_dims=1), chosen


def _normalize(maps):
    """Scale each map of `(N, H, W)` to [0, 1] by its maximum (all-zero maps stay zero)."""
    maps = np.asarray(maps, dtype=np.float64)
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, *([1] * (maps.ndim - 1)))
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Predictions


def logits(model, images, batch_size=BATCH_SIZE):
    """The model's logits `(N, classes)` (pre-softmax, even for a model ending in Softmax)."""
    images = _prepare(model, images)
    tap = _cached(model, ("tap",), lambda: _Tap(model, []))
    forward = _cached(model, ("logits",),
                      lambda: tf.function(lambda x: tap(x)[-1], input_signature=[_image_spec(model)]))
    parts = [forward(tf.constant(images[part])).numpy() for part in _chunks(len(images), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def probabilities(model, images, batch_size=BATCH_SIZE, temperature=1.0):
    """Softmax of `logits(model, images)`, divided by `temperature` first (a calibrated model's,
    `keras_fer.calibrate`: what `predict.py` shows)."""
    scores = logits(model, images, batch_size).astype(np.float64) / float(temperature)
    scores -= scores.max(axis=1, keepdims=True)
    exp = np.exp(scores)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Gradients of a class logit with respect to the input


def _gradient_function(model):
    tap = _cached(model, ("tap",), lambda: _Tap(model, []))

    @tf.function(input_signature=[_image_spec(model), CLASSES_SPEC])
    def gradient(images, classes):
        with tf.GradientTape() as tape:
            tape.watch(images)
            score, chosen = _pick(tap(images)[-1], classes)
            # Images do not interact in inference mode, so the gradient of the sum holds each
            # image's own d logit / d pixel.
            total = tf.reduce_sum(score)
        return tape.gradient(total, images), chosen

    return gradient


def gradients(model, images, class_index=None, batch_size=BATCH_SIZE):
    """Raw gradients d logit[class] / d pixel, shape of `images` (with channels).

    Args:
        model: a Keras model taking `images`.
        images: `(N, H, W, C)` (or one image `(H, W, C)` / `(H, W)`) as the model takes them.
        class_index: None (each image's predicted class), one class for all, or one per image.

    Returns:
        `(gradients (N, H, W, C), classes (N,))`: the classes used.
    """
    images = _prepare(model, images)
    classes = _class_array(class_index, len(images), model)
    function = _cached(model, ("gradient",), lambda: _gradient_function(model))
    grads, chosen = [], []
    for part in _chunks(len(images), batch_size):
        g, c = function(tf.constant(images[part]), tf.constant(classes[part]))
        grads.append(g.numpy())
        chosen.append(c.numpy())
    return np.concatenate(grads), np.concatenate(chosen)


def saliency(model, images, class_index=None, batch_size=BATCH_SIZE):
    """Saliency maps (Simonyan et al. 2014): |d logit / d pixel|, the maximum over channels,
    normalized per image to [0, 1].

    Args:
        images: `(N, H, W, C)` raw faces as the model takes them (or one image).
        class_index: None for each image's predicted class, an int for all, or one per image.

    Returns:
        float32 `(N, H, W)`.
    """
    grads, _ = gradients(model, images, class_index, batch_size)
    return _normalize(np.abs(grads).max(axis=-1))


def smoothgrad(model, images, class_index=None, noise=SMOOTHGRAD_NOISE, samples=SMOOTHGRAD_SAMPLES, seed=0,
               batch_size=BATCH_SIZE):
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over `samples` noisy copies of
    each image, then |.|, maximum over channels, normalized per image to [0, 1].

    Args:
        noise: standard deviation of the gaussian noise as a fraction of each image's pixel
            range (max - min; 255 for a flat image); the paper finds 0.1-0.2 best.
        samples: noisy copies per image (the paper's 50). The maps of two noise seeds agree
            more as it grows (mean correlation on 40 real faces, the packaged model, noise 0.15:
            0.40 at 25 samples, 0.53 at 50, 0.67 at 100; the cost grows with it).
        seed: seed of the noise: the same seed gives the same maps.
        class_index: None keeps each image's predicted class (on the clean image) for every
            noisy copy; or an int, or one per image.

    Returns:
        float32 `(N, H, W)`.
    """
    samples = check_integer(samples, "samples", 1)
    noise = check_finite(noise, "noise", 0)
    seed = None if seed is None else check_integer(seed, "seed", 0)  # None: fresh noise each call
    images = _prepare(model, images)
    classes = _class_array(class_index, len(images), model)
    if (classes < 0).any():
        predicted = logits(model, images, batch_size).argmax(axis=1)
        classes = np.where(classes < 0, predicted, classes).astype(np.int32)
    axes = tuple(range(1, images.ndim))
    spread = images.max(axis=axes, keepdims=True) - images.min(axis=axes, keepdims=True)
    sigma = noise * np.where(spread > 0, spread, 255.0)
    rng = np.random.default_rng(seed)
    total = np.zeros(images.shape, np.float64)
    for _ in range(samples):
        noisy = (images + rng.normal(size=images.shape) * sigma).astype(images.dtype)
        grads, _ = gradients(model, noisy, classes, batch_size)
        total += grads
    return _normalize(np.abs(total / samples).max(axis=-1))


def occlusion(model, images, class_index=None, patch=OCCLUSION_PATCH, stride=OCCLUSION_STRIDE, batch_size=BATCH_SIZE):
    """Occlusion sensitivity (Zeiler & Fergus 2014), without gradients: a `patch` x `patch`
    square of the face is replaced by the face's mean grey level at every position of a
    `stride` grid (the last row and column reach the border), and each pixel gets the mean drop
    of the class probability over the squares that cover it; ReLU, normalized per image to
    [0, 1]. What the model needs to see rather than where its gradient is steep: a check on the
    gradient methods, at one forward pass per square (121 for 48x48 faces at the defaults).

    Args:
        images: `(N, H, W, C)` raw faces as the model takes them (or one image).
        class_index: None for each image's predicted class (on the clean image), an int for
            all, or one per image.
        patch: side of the grey square, in pixels.
        stride: step between squares, in pixels (at most `patch`, so every pixel is covered).

    Returns:
        float32 `(N, H, W)`.

    Example:
    >>> import keras
    >>> inputs = keras.Input((48, 48, 1))
    >>> model = keras.Model(inputs, keras.layers.Dense(7)(keras.layers.Flatten()(inputs)))
    >>> occlusion(model, np.full((2, 48, 48, 1), 128.0), patch=8, stride=8).shape
    (2, 48, 48)
    """
    images = _prepare(model, images)
    height, width = images.shape[1:3]
    patch = check_integer(patch, "patch", 1)
    stride = check_integer(stride, "stride", 1)
    if patch > min(height, width) or stride > patch:
        raise FerOptionError(f"patch must be at most the image side ({min(height, width)}) and stride at most patch, "
                             f"so every pixel is covered. Received: patch={patch}, stride={stride}")
    classes = _class_array(class_index, len(images), model)
    clean = probabilities(model, images, batch_size)
    classes = np.where(classes < 0, clean.argmax(axis=1), classes).astype(np.int32)

    def starts(size):
        return sorted(set(range(0, size - patch + 1, stride)) | {size - patch})

    squares = [(top, left) for top in starts(height) for left in starts(width)]
    maps = np.zeros((len(images), height, width), np.float64)
    covered = np.zeros((height, width), np.float64)
    for top, left in squares:
        covered[top:top + patch, left:left + patch] += 1
    for index, image in enumerate(images):
        fill = image.mean(axis=(0, 1), keepdims=True)
        hidden = np.repeat(image[None], len(squares), axis=0)
        for copy, (top, left) in zip(hidden, squares):
            copy[top:top + patch, left:left + patch] = fill
        drops = clean[index, classes[index]] - probabilities(model, hidden, batch_size)[:, classes[index]]
        for drop, (top, left) in zip(drops, squares):
            maps[index, top:top + patch, left:left + patch] += drop
    return _normalize(np.maximum(maps / covered, 0.0))


# --------------------------------------------------------------------------------------------
# Grad-CAM


def _grad_cam_function(model, layer, weighting="gradcam"):
    tap = _cached(model, ("tap", layer.name), lambda: _Tap(model, [layer]))

    # No autograph: its branches are on Python values, and an error raised while tracing stays ours.
    @tf.function(input_signature=[_image_spec(model), CLASSES_SPEC], autograph=False)
    def cam(images, classes):
        with tf.GradientTape() as tape:
            # Watched from the images: a tape records only operations on watched tensors, so the
            # weight-free layers between the input and the first weights (dnn's pool1, drop1 and
            # flatten) would be missing from it, and the gradient would stop at the first Dense.
            tape.watch(images)
            features, scores = tap(images)
            score, chosen = _pick(scores, classes)
            total = tf.reduce_sum(score)
        grads = tape.gradient(total, features)
        if grads is None:  # known at tracing: the scores do not depend on the layer (a stopped gradient)
            raise FerOptionError(
                f"{weighting} cannot follow the gradient from the class scores back to layer {layer.name!r} of "
                f"model {model.name!r}; choose a convolution layer, or use scorecam, which needs no gradient. "
                f"Received: layer={layer.name!r}"
            )
        if weighting == "gradcam++":  # in float32, applied in the layer's own dtype (bfloat16 under mixed precision)
            weights = tf.cast(_plus_plus_weights(features, grads), features.dtype)
        elif weighting == "layercam":  # each position by its own positive gradient
            weights = tf.nn.relu(grads)
        else:
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        heat = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        size = tf.shape(images)[1:3]
        return tf.image.resize(tf.cast(heat, tf.float32), size, method="bilinear")[..., 0], chosen

    return cam


def _plus_plus_weights(features, grads):
    """Grad-CAM++'s channel weights (Chattopadhay et al. 2018, eq. 19 with an exponential
    score, whose factor cancels in the normalized map): sum over positions of
    alpha * ReLU(g), alpha = g^2 / (2 g^2 + sum_ab(A) g^3), g = d logit / d A."""
    features = tf.cast(features, tf.float32)
    grads = tf.cast(grads, tf.float32)
    squared = tf.square(grads)
    denominator = 2.0 * squared + tf.reduce_sum(features, axis=(1, 2), keepdims=True) * squared * grads
    alpha = tf.math.divide_no_nan(squared, denominator)
    return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2), keepdims=True)


def cam_layer(model, layer=None, rectified=False):
    """The layer a class activation map (`grad_cam`, `score_cam`) uses: `layer`, or by default
    the last conv layer; with `rectified` (Grad-CAM++, Score-CAM) its activation output
    (`convN_act`, in the zoo's models: a ReLU, or cnn4's LeakyReLU, nearly non-negative), else
    the first `RECTIFIERS` layer after it (resnet18's `block8_act`), since those methods assume
    non-negative feature maps (Grad-CAM++ on a pre-activation conv layer gave a fifth of the
    demo faces an all-zero map)."""
    target = find_layer(model, layer)
    if rectified and layer is None:
        layers = list(walk_layers(model))
        named = [candidate for candidate in layers if candidate.name == f"{target.name}_act"]
        # resnet18's last conv goes through BatchNorm and the shortcut's Add into `block8_act`:
        # without a `conv17_act`, the next rectifier (it took conv17's raw, signed maps)
        after = layers[next(i for i, candidate in enumerate(layers) if candidate is target) + 1:]
        following = [candidate for candidate in after if isinstance(candidate, RECTIFIERS)]
        for candidate in named + following[:1]:
            if _output_rank(candidate) == 4:
                return candidate
    return target


def grad_cam(model, images, layer=None, class_index=None, batch_size=BATCH_SIZE, plus_plus=False):
    """Grad-CAM (Selvaraju et al. 2017): the feature maps of `layer` weighted by the spatial
    mean of d logit / d feature map, summed, ReLU, upsampled (bilinear) to the input size,
    normalized per image to [0, 1].

    Args:
        layer: a layer name (nested models included); None = the last conv layer (for
            Grad-CAM++ its rectified output, `cam_layer`).
        class_index: None for each image's predicted class, an int for all, or one per image.
        plus_plus: Grad-CAM++ (Chattopadhay et al. 2018) instead: each position's gradient
            weighted by its own alpha and only positive gradients counted, which spreads the map
            over every region that raises the class (several faces, both eyes) rather than
            the strongest one.

    Returns:
        float32 `(N, H, W)` with the input's H and W.

    Raises:
        FerOptionError: for an unknown layer (listing the conv layers).
    """
    return _gradient_cam(model, images, layer, class_index, batch_size, "gradcam++" if plus_plus else "gradcam")


def layer_cam(model, images, layer=None, class_index=None, batch_size=BATCH_SIZE):
    """LayerCAM (Jiang et al. 2021; tf-keras-vis' `Layercam`): ReLU(sum over channels of
    ReLU(d logit / d A) x A), each position weighted by its own positive gradient rather than by
    the channel's mean, so it keeps fine detail and works on shallow layers too; upsampled
    (bilinear) and normalized per image to [0, 1].

    Args:
        layer: a layer name; None = the last conv layer's rectified output (`cam_layer`).
        class_index: None for each image's predicted class, an int for all, or one per image.

    Returns:
        float32 `(N, H, W)` with the input's H and W.
    """
    return _gradient_cam(model, images, layer, class_index, batch_size, "layercam")


def _gradient_cam(model, images, layer, class_index, batch_size, weighting):
    target = cam_layer(model, layer, rectified=weighting != "gradcam")
    images = _prepare(model, images)
    classes = _class_array(class_index, len(images), model)
    function = _cached(model, ("grad_cam", target.name, weighting),
                       lambda: _grad_cam_function(model, target, weighting))
    maps = [function(tf.constant(images[part]), tf.constant(classes[part]))[0].numpy()
            for part in _chunks(len(images), batch_size)]
    return _normalize(np.concatenate(maps))


def score_cam(model, images, layer=None, class_index=None, batch_size=BATCH_SIZE, max_channels=None):
    """Score-CAM (Wang et al. 2020), without gradients: each feature map of `layer`, upsampled to
    the input size and scaled to [0, 1], masks the image; the map's weight is the class's softmax
    probability on that masked image (as the authors' released code; tf-keras-vis' `Scorecam`).
    The map is ReLU(sum of weight x feature map), upsampled (bilinear) and normalized per image to
    [0, 1]. Constant feature maps (no mask) are skipped.

    It costs one forward pass per feature map and image (`max_channels` caps it: tf-keras-vis'
    Faster-ScoreCAM `max_N`, keeping the maps of largest variance).

    Args:
        layer: a layer name (nested models included); None = the last conv layer's rectified
            output (`cam_layer`).
        class_index: None for each image's predicted class, an int for all, or one per image.
        max_channels: use only this many feature maps per image (None = all).

    Returns:
        float32 `(N, H, W)` with the input's H and W.

    Raises:
        FerOptionError: for an unknown layer or a `max_channels` below 1.

    Example:
    >>> import keras
    >>> inputs = keras.Input((48, 48, 1))
    >>> x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(x)))
    >>> score_cam(model, np.full((2, 48, 48, 1), 128.0), max_channels=4).shape
    (2, 48, 48)
    """
    if max_channels is not None:
        max_channels = check_integer(max_channels, "max_channels", 1)
    target = cam_layer(model, layer, rectified=True)
    images = _prepare(model, images)
    classes = _class_array(class_index, len(images), model)
    tap = _cached(model, ("tap", target.name), lambda: _Tap(model, [target]))
    forward = _cached(model, ("tap_fn", target.name),
                      lambda: tf.function(lambda x: tap(x), input_signature=[_image_spec(model)]))
    size = images.shape[1:3]
    maps = np.zeros(images.shape[:3], np.float32)
    for index, image in enumerate(images):
        features, scores = forward(tf.constant(image[None]))
        features = tf.cast(features[0], tf.float32)  # (h, w, K)
        upsampled = tf.image.resize(features, size, method="bilinear").numpy()  # (H, W, K)
        features = features.numpy()
        low, high = upsampled.min(axis=(0, 1)), upsampled.max(axis=(0, 1))
        channels = np.flatnonzero(high > low)
        if max_channels is not None and len(channels) > int(max_channels):
            spread = features.reshape(-1, features.shape[-1]).var(axis=0)[channels]
            channels = np.sort(channels[np.argsort(-spread, kind="stable")[:int(max_channels)]])
        if not len(channels):
            continue
        masks = (upsampled[..., channels] - low[channels]) / (high[channels] - low[channels])
        masked = image[None] * np.moveaxis(masks, -1, 0)[..., None]  # (k, H, W, C)
        chosen = classes[index] if classes[index] >= 0 else int(np.argmax(scores[0]))
        weights = probabilities(model, masked, batch_size)[:, chosen]
        heat = np.maximum(features[..., channels] @ weights, 0.0)
        maps[index] = tf.image.resize(heat[..., None], size, method="bilinear").numpy()[..., 0]
    return _normalize(maps)


# --------------------------------------------------------------------------------------------
# Feature maps


def activation_maps(model, image, layer):
    """The feature maps of `layer` for one image, float32 `(H, W, C)` (the layer's own size).

    Raises:
        FerOptionError: for an unknown layer or one without 2-D feature maps.
    """
    target = find_layer(model, layer)
    images = _prepare(model, image)
    if len(images) != 1:
        raise FerOptionError(f"activation_maps takes one image. Received {len(images)}")
    tap = _cached(model, ("features", target.name), lambda: _Tap(model, [target], logits=False))
    forward = _cached(model, ("features_fn", target.name),
                      lambda: tf.function(lambda x: tap(x)[0], input_signature=[_image_spec(model)]))
    return np.asarray(forward(tf.constant(images))[0], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# The first conv layer's kernels


@dataclasses.dataclass
class Kernels:
    """The kernels of the conv layer that reads the image.

    Attributes:
        layer: the layer name.
        filters: int `(F,)` filter (output channel) indices.
        weights: float32 `(F, kh, kw)`: each filter's weights on a grey image.
        channels: the layer's input channels (3: `weights` is their sum).
        total: the layer's number of filters.
        scale: the largest absolute weight over all of them, so that a few filters drawn on
            their own keep the colours they have among all.
    """

    layer: str
    filters: np.ndarray
    weights: np.ndarray
    channels: int
    total: int
    scale: float


def _filter_indices(filters, layer, channels):
    """`filters` as checked int64 indices of a layer with `channels` filters."""
    given = np.asarray(filters)
    if (given.size and given.dtype.kind not in "iu") or given.ndim > 1:  # 1.7 was filter 1, "a" a ValueError
        raise FerOptionError(f"filters must be filter indices (integers) of layer {layer!r}. "
                             f"Received: filters={filters!r}")
    filters = np.atleast_1d(given.astype(np.int64))
    bad = filters[(filters < 0) | (filters >= channels)]
    if bad.size:
        raise FerOptionError(f"layer {layer!r} has filters 0-{channels - 1}. Received: filter={int(bad[0])}")
    return filters


def conv_kernels(model, layer=None, filters=None):
    """The weights of the first conv layer, the one that reads the image, one `(kh, kw)` kernel
    per filter: what a first layer learned is its kernels (gradient ascent on a layer so close
    to the pixels only finds each kernel's sign pattern). A layer reading three channels (resnet18,
    fed the grey face as three equal channels) has its kernels summed over them: their effect
    on a grey face.

    Args:
        model: the model.
        layer: the first conv layer's name (default: it); any other layer is refused, as it reads
            feature maps, not the image.
        filters: filter indices (default all; one given twice is drawn once).

    Returns:
        A `Kernels`.

    Raises:
        FerOptionError: for a model without conv layers, another layer than the first conv
            layer, a layer without a plain kernel (depthwise, separable), or a filter index
            that is not one of the layer's.

    Example:
    >>> import keras
    >>> inputs = keras.Input((48, 48, 1))
    >>> x = keras.layers.Conv2D(32, 5, name="conv1")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(x)))
    >>> kernels = conv_kernels(model)
    >>> kernels.layer, kernels.weights.shape, kernels.total
    ('conv1', (32, 5, 5), 32)
    >>> conv_kernels(model, filters=[3, 7]).filters.tolist()
    [3, 7]
    """
    convs = conv_layers(model)
    if not convs:
        raise FerOptionError(f"model {model.name!r} has no convolution layers: it has no kernels to draw")
    target = find_layer(model, layer or convs[0], rank4=False)
    if target.name != convs[0]:
        raise FerOptionError(
            f"layer {target.name!r} reads the feature maps of the layers before it, not the image: kernels are "
            f"drawn for the first conv layer, {convs[0]!r} (what excites {target.name!r}: filter ascent). "
            f"Received: layer={layer!r}"
        )
    kernel = getattr(target, "kernel", None)
    if not isinstance(target, keras.layers.Conv2D) or kernel is None or len(kernel.shape) != 4:
        raise FerOptionError(f"layer {target.name!r} ({type(target).__name__}) has no (height, width, in, out) "
                             "kernel to draw")
    weights = np.asarray(keras.ops.convert_to_numpy(kernel), np.float32)  # (kh, kw, in, out)
    total = int(weights.shape[-1])
    if filters is None:
        chosen = np.arange(total)
    else:
        chosen = np.array(list(dict.fromkeys(_filter_indices(filters, target.name, total).tolist())), np.int64)
        if not chosen.size:
            raise FerOptionError(f"filters must name at least one filter of layer {target.name!r} "
                                 f"(0-{total - 1}). Received: filters={filters!r}")
    summed = np.moveaxis(weights.sum(axis=2), -1, 0)  # (out, kh, kw): one channel's kernels as they are
    return Kernels(layer=target.name, filters=chosen, weights=summed[chosen], channels=int(weights.shape[2]),
                   total=total, scale=float(np.abs(summed).max()))


# --------------------------------------------------------------------------------------------
# Filter visualization by gradient ascent


@dataclasses.dataclass
class FilterAscent:
    """Inputs that excite filters, found by gradient ascent.

    Attributes:
        layer: the layer name.
        filters: int `(F,)` filter (channel) indices.
        images: float32 `(F, H, W, C)` the inputs found, grey levels 0-255.
        activations: float32 `(F, steps + 1)`: each filter's mean activation (border
            excluded) on its input, at the start and after every step.
    """

    layer: str
    filters: np.ndarray
    images: np.ndarray
    activations: np.ndarray

    @property
    def final(self):
        """The activation each filter reached, `(F,)`."""
        return self.activations[:, -1]

    @property
    def start(self):
        return self.activations[:, 0]


def _border(size):
    """Feature-map border left out of the objective: edge effects of padding dominate there."""
    return min(2, size // 6)


def _blur(images):
    kernel = tf.constant([1.0, 2.0, 1.0], images.dtype)
    kernel = tf.tensordot(kernel, kernel, axes=0) / 16.0
    channels = images.shape[-1]
    kernel = tf.tile(tf.reshape(kernel, [3, 3, 1, 1]), [1, 1, channels, 1])
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    return tf.nn.depthwise_conv2d(padded, kernel, strides=[1, 1, 1, 1], padding="VALID")


def _ascent_functions(model, layer):
    tap = _cached(model, ("features", layer.name), lambda: _Tap(model, [layer], logits=False))
    height, width = layer.output.shape[1], layer.output.shape[2]
    top, left = _border(height), _border(width)

    def objective(images, filters):
        maps = tap(images)[0]
        maps = maps[:, top:height - top, left:width - left, :]
        chosen = tf.gather(tf.transpose(maps, [0, 3, 1, 2]), filters, axis=1, batch_dims=1)
        return tf.reduce_mean(tf.cast(chosen, tf.float32), axis=[1, 2])

    image_spec = _image_spec(model)
    scalar = tf.TensorSpec((), image_spec.dtype)

    @tf.function(input_signature=[image_spec, CLASSES_SPEC])
    def measure(images, filters):
        return objective(images, filters)

    @tf.function(input_signature=[image_spec, CLASSES_SPEC, tf.TensorSpec((2,), tf.int32), scalar, scalar])
    def step(images, filters, shift, lr, tv_weight):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(images)
            jittered = tf.roll(images, shift=shift, axis=[1, 2])
            activation = tf.reduce_sum(objective(jittered, filters))
            dy = images[:, 1:, :, :] - images[:, :-1, :, :]
            dx = images[:, :, 1:, :] - images[:, :, :-1, :]
            variation = tf.reduce_sum(tf.sqrt(dy[:, :, :-1, :] ** 2 + dx[:, :-1, :, :] ** 2 + 1.0))
        grad = tape.gradient(activation, images)
        tv_grad = tape.gradient(variation, images)
        del tape
        # Normalized gradients: a fixed step size in grey levels whatever the layer's scale. In
        # float32 whatever the model's dtype: in float16 the squares underflow and 1e-8 is 0 (0/0).
        axes = [1, 2, 3]
        grad, tv_grad = tf.cast(grad, tf.float32), tf.cast(tv_grad, tf.float32)
        grad = grad / (tf.sqrt(tf.reduce_mean(grad**2, axis=axes, keepdims=True)) + 1e-8)
        tv_grad = tv_grad / (tf.sqrt(tf.reduce_mean(tv_grad**2, axis=axes, keepdims=True)) + 1e-8)
        move = tf.cast(lr, tf.float32) * (grad - tf.cast(tv_weight, tf.float32) * tv_grad)
        return images + tf.cast(move, images.dtype)

    return measure, step


def filter_ascent(model, layer, filters, steps=64, lr=3.0, seed=0, *, start_noise=8.0, jitter=2,
                  blur_every=4, l2_decay=0.01, tv_weight=0.1):
    """Gradient ascent on the input to maximize each filter's mean activation (border excluded).

    Every filter starts from mid-grey (128) plus gaussian noise (`start_noise` grey levels).
    Each step rolls the image by a random jitter of up to `jitter` pixels, moves it by `lr` grey
    levels (RMS) along the normalized gradient of the activation minus `tv_weight` times the
    normalized gradient of its total variation, pulls it towards grey by `l2_decay` (L2
    regularization), blurs it with a 3x3 gaussian every `blur_every` steps, and clips to 0-255.
    All filters run as one batch.

    Args:
        model: the model (input raw faces, grey levels 0-255).
        layer: a layer name with 2-D feature maps (nested models included).
        filters: filter (channel) indices of that layer.
        steps: ascent steps.
        lr: step size in grey levels.
        seed: seed of the start noise and the jitter.

    Returns:
        A `FilterAscent` with the images and the activation at the start and after each step.

    Raises:
        FerOptionError: for an unknown layer, a filter index that is not one of the layer's, or
            a step count, jitter or rate that is not a number in range.
    """
    target = find_layer(model, layer)
    filters = _filter_indices(filters, target.name, int(target.output.shape[-1]))
    steps, jitter, blur_every = (check_integer(value, name, 0) for value, name in (
        (steps, "steps"), (jitter, "jitter"), (blur_every, "blur_every")))
    lr, start_noise, l2_decay, tv_weight = (check_finite(value, name, 0) for value, name in (
        (lr, "lr"), (start_noise, "start_noise"), (l2_decay, "l2_decay"), (tv_weight, "tv_weight")))
    measure, step = _cached(model, ("ascent", target.name), lambda: _ascent_functions(model, target))
    shape = tuple(int(d) for d in _functional_of(model).inputs[0].shape[1:])
    dtype = _input_dtype(model)
    rng = np.random.default_rng(seed)
    images = tf.constant((128.0 + rng.normal(0.0, start_noise, (len(filters),) + shape)).clip(0, 255), dtype)
    picks = tf.constant(filters, tf.int32)
    history = [measure(images, picks).numpy()]
    for index in range(steps):
        shift = tf.constant(rng.integers(-jitter, jitter + 1, size=2) if jitter else [0, 0], tf.int32)
        images = step(images, picks, shift, tf.constant(lr, dtype), tf.constant(tv_weight, dtype))
        images = 128.0 + (images - 128.0) * (1.0 - l2_decay)
        if blur_every and (index + 1) % blur_every == 0 and index + 1 < steps:
            images = _blur(images)
        images = tf.clip_by_value(images, 0.0, 255.0)
        history.append(measure(images, picks).numpy())
    return FilterAscent(
        layer=target.name,
        filters=filters,
        images=np.asarray(images, dtype=np.float32),
        activations=np.stack(history, axis=1).astype(np.float32),
    )


def pick_filters(model, layer, count, seed=0):
    """`count` distinct random filter indices of `layer` (all of them if it has fewer), sorted."""
    target = find_layer(model, layer)
    channels = int(target.output.shape[-1])
    rng = np.random.default_rng(check_integer(seed, "seed", 0))
    return np.sort(rng.choice(channels, size=min(check_integer(count, "count", 1), channels), replace=False))


def mask_ratio(maps, masks):
    """How much more of a map's mass lies inside `masks` than their area: (mass share inside) /
    (area share), averaged over images. 1 is no better than uniform.

    Args:
        maps: `(N, H, W)` non-negative maps; masks: bool `(N, H, W)`.
    """
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise FerOptionError(f"maps and masks must both be (N, H, W) of one shape. Received: maps.shape={maps.shape}, "
                             f"masks.shape={masks.shape}")
    mass = maps.reshape(len(maps), -1).sum(axis=1)
    inside = (maps * masks).reshape(len(maps), -1).sum(axis=1)
    area = masks.reshape(len(masks), -1).mean(axis=1)
    valid = (mass > 0) & (area > 0)
    return float(np.mean(inside[valid] / mass[valid] / area[valid])) if valid.any() else float("nan")
