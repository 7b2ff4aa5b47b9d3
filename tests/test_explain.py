"""keras_fer.explain: gradients are right, and maps point at where the expression lives.

The demo faces carry their class only in the eyes, brows and mouth (`synthetic` masks), so a
model that learned them must put more saliency there than the masks' share of the image.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from keras_fer import explain, synthetic
from keras_fer.errors import FerOptionError
from keras_fer.models import build_model
from keras_fer.models.layers import Preprocessing

# Measured on this setup (seed 0, 840 training faces, 8 epochs): saliency 2.33, SmoothGrad
# 2.41, Grad-CAM (conv3) 1.94, validation accuracy 0.90. The bounds leave room for numerics.
SALIENCY_MIN_RATIO = 1.5
GRAD_CAM_MIN_RATIO = 1.3


def small_cnn(normalize="image"):
    """conv -> ReLU -> pool x3 (16/32/64), named like the zoo's models."""
    inputs = keras.Input((48, 48, 1), name="image")
    x = Preprocessing(normalize=normalize, name="preprocessing")(inputs)
    for index, width in enumerate((16, 32, 64), start=1):
        x = layers.Conv2D(width, 3, padding="same", name=f"conv{index}")(x)
        x = layers.ReLU(name=f"conv{index}_act")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="dense1")(x)
    return keras.Model(inputs, layers.Dense(7, name="logits")(x), name="small_cnn")


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained on 840 demo faces; 280 held-out faces with their masks."""
    keras.utils.set_random_seed(0)
    demo = synthetic.generate(1120, seed=1)
    pixels = demo.images.pixels.astype("float32")
    labels = demo.images.labels
    model = small_cnn()
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(pixels[:840], labels[:840], batch_size=32, epochs=8, verbose=0)
    return model, pixels[840:], labels[840:], demo.masks[840:]


def tiny_float64_model():
    inputs = keras.Input((8, 8, 1), dtype="float64")
    x = layers.Conv2D(3, 3, activation="tanh", dtype="float64", name="conv1")(inputs)
    x = layers.Flatten(dtype="float64")(x)
    return keras.Model(inputs, layers.Dense(4, dtype="float64", name="logits")(x))


def test_gradients_match_finite_differences():
    keras.utils.set_random_seed(1)
    model = tiny_float64_model()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 8, 8, 1))
    grads, classes = explain.gradients(model, images, class_index=[0, 2, 3])
    assert classes.tolist() == [0, 2, 3]
    eps = 1e-5
    for image, cls in enumerate(classes):
        for row, col in [(0, 0), (3, 4), (7, 7), (5, 1)]:
            plus, minus = images.copy(), images.copy()
            plus[image, row, col, 0] += eps
            minus[image, row, col, 0] -= eps
            # Call the model directly: predict() would cast the float64 input to float32.
            numeric = (float(model(tf.constant(plus[image:image + 1]))[0, cls])
                       - float(model(tf.constant(minus[image:image + 1]))[0, cls])) / (2 * eps)
            assert grads[image, row, col, 0] == pytest.approx(numeric, rel=1e-6, abs=1e-10)
    maps = explain.saliency(model, images, class_index=[0, 2, 3])
    expected = np.abs(grads[..., 0]) / np.abs(grads[..., 0]).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(maps, expected, rtol=1e-5)
    assert maps.shape == (3, 8, 8) and maps.max() == pytest.approx(1.0)


def test_default_class_is_the_predicted_one():
    keras.utils.set_random_seed(2)
    model = tiny_float64_model()
    images = np.random.default_rng(1).normal(size=(5, 8, 8, 1))
    predicted = model.predict(images, verbose=0).argmax(axis=1)
    _, classes = explain.gradients(model, images)
    assert classes.tolist() == predicted.tolist()
    np.testing.assert_allclose(explain.saliency(model, images), explain.saliency(model, images, predicted))
    with pytest.raises(FerOptionError, match="class_index"):
        explain.saliency(model, images, class_index=9)


@pytest.mark.parametrize("class_index, message", [
    ("bogus", r"class_index must be None, a class in 0-3, or one such class per image\. Received: class_index='bogus'"),
    (1.5, r"Received: class_index=1\.5"),
    ([[0, 1]], r"Received: class_index=\[\[0, 1\]\]"),
    (-1, r"class_index must be in 0-3\. Received: class_index=-1"),
    ([0, 1], r"one class per image: 5 images\. Received: 2 classes"),
])
@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "grad_cam", "score_cam"])
def test_a_bad_class_index_is_named(method, class_index, message):
    # -1 was read as "the predicted class" (an internal marker) and a string as a ValueError.
    model = tiny_float64_model()
    images = np.random.default_rng(1).normal(size=(5, 8, 8, 1))
    with pytest.raises(FerOptionError, match=message):
        getattr(explain, method)(model, images, class_index=class_index)


@pytest.mark.parametrize("call, message", [
    (lambda m, x: explain.saliency(m, x, batch_size=0), r"batch_size must be an integer >= 1\. Received: batch_size=0"),
    (lambda m, x: explain.logits(m, x, batch_size=1.5), r"Received: batch_size=1\.5"),
    (lambda m, x: explain.smoothgrad(m, x, samples="3"), r"samples must be an integer >= 1\. Received: samples='3'"),
    (lambda m, x: explain.smoothgrad(m, x, noise=float("nan")), r"noise must be a finite number >= 0"),
    (lambda m, x: explain.smoothgrad(m, x, seed=-1), r"seed must be an integer >= 0"),
    (lambda m, x: explain.score_cam(m, x, max_channels="a"), r"Received: max_channels='a'"),
    (lambda m, x: explain.filter_ascent(m, "conv1", 1.7), r"filters must be filter indices .* Received: filters=1\.7"),
    (lambda m, x: explain.filter_ascent(m, "conv1", [0], steps=1.5), r"Received: steps=1\.5"),
    (lambda m, x: explain.filter_ascent(m, "conv1", [0], jitter=-3), r"Received: jitter=-3"),
    (lambda m, x: explain.pick_filters(m, "conv1", -1), r"count must be an integer >= 1\. Received: count=-1"),
    (lambda m, x: explain.mask_ratio(np.ones((2, 8, 8)), np.ones((2, 4, 4))), r"Received: maps\.shape=\(2, 8, 8\)"),
])
def test_bad_numeric_arguments_are_named(call, message):
    # Each was a ValueError or TypeError from inside range(), numpy or TensorFlow, or used silently
    # (filter 1.7 ran as filter 1, noise=nan was accepted).
    model = tiny_float64_model()
    with pytest.raises(FerOptionError, match=message):
        call(model, np.random.default_rng(1).normal(size=(2, 8, 8, 1)))


def test_cams_reach_the_weight_free_layers_before_the_first_weights():
    # dnn's pool1 (max-pool, dropout, flatten, then the first Dense): the tape recorded nothing
    # before the first weights, so the gradient was None there and the layer was refused.
    import tensorflow as tf

    from keras_fer.models import build_model

    model = build_model("dnn", preprocessing={"normalize": "unit"})
    images = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 1)).astype(np.uint8)
    tap = keras.Model(model.inputs, [model.get_layer("pool1").output, model.output])
    inputs = tf.constant(images.astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        features, scores = tap(inputs)
        chosen = tf.argmax(scores, axis=1)
        total = tf.reduce_sum(tf.gather(scores, chosen, batch_dims=1))
    grads = tape.gradient(total, features).numpy()
    features = features.numpy()
    for method, weights in (("grad_cam", grads.mean(axis=(1, 2), keepdims=True)), ("layer_cam", np.maximum(grads, 0))):
        heat = np.maximum((weights * features).sum(axis=-1, keepdims=True), 0)
        expected = explain._normalize(tf.image.resize(heat, (48, 48), method="bilinear").numpy()[..., 0])
        np.testing.assert_allclose(getattr(explain, method)(model, images, layer="pool1"), expected, atol=1e-4)
    # With no conv layer there is no default; the error names the layers that work.
    with pytest.raises(FerOptionError, match=r"no convolution layers to explain by default: name a layer with 2-D "
                                             r"feature maps \(pool1, drop1; LayerCAM keeps its detail\)"):
        explain.layer_cam(model, images)


@pytest.mark.parametrize("method", ["grad_cam", "layer_cam"])
def test_a_layer_the_gradient_does_not_reach_is_named(method):
    # A stopped gradient: it was a TensorFlow "None values not supported" traceback.
    class StopGradient(layers.Layer):
        def call(self, x):
            return keras.ops.stop_gradient(x)

    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(2, 3, name="conv1")(inputs)
    x = StopGradient(name="stop")(x)
    x = layers.Conv2D(2, 3, name="conv2")(x)
    model = keras.Model(inputs, layers.Dense(3, name="logits")(layers.Flatten()(x)))
    with pytest.raises(FerOptionError, match=r"cannot follow the gradient .* layer 'conv1' .* use scorecam"):
        getattr(explain, method)(model, np.zeros((1, 8, 8, 1), np.float32), layer="conv1")
    assert getattr(explain, method)(model, np.ones((1, 8, 8, 1), np.float32), layer="conv2").shape == (1, 8, 8)


def test_the_defaults_that_mean_nothing_or_fresh_still_work():
    model = tiny_float64_model()
    images = np.random.default_rng(1).normal(size=(2, 8, 8, 1))
    assert explain.smoothgrad(model, images, samples=2, seed=None).shape == (2, 8, 8)  # fresh noise
    assert explain.filter_ascent(model, "conv1", [], steps=1).images.shape[0] == 0  # no filter: nothing to do


def test_an_empty_or_non_numeric_batch_is_named():
    model = tiny_float64_model()
    with pytest.raises(FerOptionError, match=r"at least one image\. Received: images\.shape=\(0, 8, 8, 1\)"):
        explain.saliency(model, np.zeros((0, 8, 8, 1)))
    with pytest.raises(FerOptionError, match=r"must be numbers.*Received: images\.dtype=<U"):
        explain.logits(model, np.full((1, 8, 8, 1), "x"))


def test_grey_faces_without_a_channel_axis_are_one_face_or_a_stack():
    model = tiny_float64_model()
    images = np.random.default_rng(2).normal(size=(3, 8, 8, 1))
    expected = explain.logits(model, images)
    # (N, H, W) was taken as one image of N rows (an error naming (1, 3, 8, 8), not the shape given),
    # and one grey (H, W) face was refused: predict_proba and recognize take both.
    np.testing.assert_allclose(explain.logits(model, images[..., 0]), expected)
    np.testing.assert_allclose(explain.saliency(model, images[1, :, :, 0]), explain.saliency(model, images[1:2]))
    np.testing.assert_allclose(explain.logits(model, images[0]), expected[:1])  # one (H, W, 1) face, as before
    with pytest.raises(FerOptionError, match=r"Received: images\.shape=\(3, 8, 9\)$"):
        explain.logits(model, np.zeros((3, 8, 9)))


def test_softmax_models_are_explained_on_logits():
    keras.utils.set_random_seed(3)
    plain = build_model("cnn3", preprocessing={"normalize": "unit"}, filters=(4, 4, 8), dense_units=8)
    with_softmax = build_model("cnn3", preprocessing={"normalize": "unit"}, filters=(4, 4, 8), dense_units=8,
                               softmax=True)
    with_softmax.set_weights(plain.get_weights())
    faces = synthetic.generate(4, seed=0).images.pixels.astype("float32")
    np.testing.assert_allclose(explain.logits(with_softmax, faces), plain.predict(faces, verbose=0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(explain.saliency(with_softmax, faces), explain.saliency(plain, faces), atol=1e-5)
    probabilities = explain.probabilities(with_softmax, faces)
    np.testing.assert_allclose(probabilities, with_softmax.predict(faces, verbose=0), rtol=1e-4, atol=1e-6)


def test_nested_models_are_looked_into():
    keras.utils.set_random_seed(4)
    inner = build_model("cnn3", preprocessing={"normalize": "unit"}, filters=(4, 8, 8), dense_units=8, softmax=True)
    inputs = keras.Input((48, 48, 1))
    outer = keras.Model(inputs, inner(inputs), name="outer")
    faces = synthetic.generate(3, seed=0).images.pixels.astype("float32")
    assert explain.conv_layers(outer) == ["conv1", "conv2", "conv3"]
    np.testing.assert_allclose(explain.grad_cam(outer, faces, "conv2"), explain.grad_cam(inner, faces, "conv2"),
                               atol=1e-5)
    np.testing.assert_allclose(explain.saliency(outer, faces), explain.saliency(inner, faces), atol=1e-5)
    assert explain.activation_maps(outer, faces[0], "conv3").shape == (12, 12, 8)


def test_a_sequential_model_loaded_from_a_file_has_its_class_maps(tmp_path):
    # Loaded, a Sequential's layers have several graph nodes and `layer.output` is not its graph's:
    # Grad-CAM, Grad-CAM++ and LayerCAM said the gradient could not reach its convolution layer.
    keras.utils.set_random_seed(5)
    built = keras.Sequential([keras.Input((48, 48, 1)), layers.Rescaling(1 / 255), layers.Conv2D(4, 3, name="conv"),
                              layers.Flatten(), layers.Dense(7)])
    built.save(tmp_path / "sequential.keras")
    loaded = keras.saving.load_model(tmp_path / "sequential.keras", compile=False, safe_mode=True)
    faces = synthetic.generate(3, seed=0).images.pixels.astype("float32")
    for method in (explain.grad_cam, explain.layer_cam):
        np.testing.assert_allclose(method(loaded, faces, "conv"), method(built, faces, "conv"), atol=1e-5)
    np.testing.assert_allclose(explain.grad_cam(loaded, faces, "conv", plus_plus=True),
                               explain.grad_cam(built, faces, "conv", plus_plus=True), atol=1e-5)
    assert explain.activation_maps(loaded, faces[0], "conv").shape == (46, 46, 4)


@pytest.mark.parametrize("name", ["resnet18", "cnn39m"])
def test_zoo_models_with_add_layers_or_resizing(name):
    model = build_model(name, preprocessing={"normalize": "unit"})
    faces = synthetic.generate(2, seed=0).images.pixels.astype("float32")
    cams = explain.grad_cam(model, faces)
    assert cams.shape == (2, 48, 48) and np.isfinite(cams).all()
    assert explain.find_layer(model).name == explain.conv_layers(model)[-1]


def test_unknown_layer_lists_the_conv_layers(trained):
    model, faces, _, _ = trained
    with pytest.raises(FerOptionError, match="conv1, conv2, conv3.*Received: layer='conv9'"):
        explain.grad_cam(model, faces[:1], layer="conv9")
    with pytest.raises(FerOptionError, match="no 2-D feature maps"):
        explain.activation_maps(model, faces[0], "dense1")
    with pytest.raises(FerOptionError, match="filters 0-15"):
        explain.filter_ascent(model, "conv1", [16])


def test_trained_model_learned_the_demo_faces(trained):
    model, faces, labels, _ = trained
    accuracy = (explain.logits(model, faces).argmax(axis=1) == labels).mean()
    assert accuracy > 0.6  # chance is 1/7


def test_saliency_lies_on_the_expression_regions(trained):
    model, faces, _, masks = trained
    maps = explain.saliency(model, faces[:140])
    assert maps.shape == (140, 48, 48) and maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1)
    assert explain.mask_ratio(maps, masks[:140]) > SALIENCY_MIN_RATIO


def test_smoothgrad_lies_on_the_expression_regions(trained):
    model, faces, _, masks = trained
    maps = explain.smoothgrad(model, faces[:70], samples=8, seed=0)
    assert explain.mask_ratio(maps, masks[:70]) > SALIENCY_MIN_RATIO
    np.testing.assert_array_equal(maps, explain.smoothgrad(model, faces[:70], samples=8, seed=0))
    # No noise and one sample is plain saliency.
    np.testing.assert_allclose(explain.smoothgrad(model, faces[:5], noise=0.0, samples=1),
                               explain.saliency(model, faces[:5]), atol=1e-6)


def test_grad_cam_lies_on_the_expression_regions(trained):
    model, faces, _, masks = trained
    cams = explain.grad_cam(model, faces[:140])  # default: the last conv layer, conv3
    assert cams.shape == (140, 48, 48) and cams.min() >= 0 and cams.max() <= 1
    assert explain.mask_ratio(cams, masks[:140]) > GRAD_CAM_MIN_RATIO


def test_grad_cam_plus_plus_lies_on_the_expression_regions_too(trained):
    model, faces, _, masks = trained
    assert explain.cam_layer(model, rectified=True).name == "conv3_act"  # rectified: alpha needs A >= 0
    assert explain.cam_layer(model, "conv3", rectified=True).name == "conv3"  # a named layer is kept
    # resnet18 has no conv17_act: its last conv ends its block through BatchNorm and the Add, into
    # block8_act, which Grad-CAM++, LayerCAM and Score-CAM now take (they took conv17's signed maps)
    from keras_fer.models import build_model

    resnet = build_model("resnet18", stem="small")
    assert explain.cam_layer(resnet).name == "conv17"
    assert explain.cam_layer(resnet, rectified=True).name == "block8_act"
    cams = explain.grad_cam(model, faces[:140], plus_plus=True)
    assert cams.shape == (140, 48, 48) and cams.min() >= 0 and cams.max() <= 1
    assert explain.mask_ratio(cams, masks[:140]) > GRAD_CAM_MIN_RATIO
    assert not np.allclose(cams, explain.grad_cam(model, faces[:140]), atol=1e-3)  # its own weights


def same_size_model(seed=7):
    """A conv layer `conv1` that keeps the 48x48 size (maps compare without resizing), then
    logits; four demo faces scaled to [0, 1]; and the layer's maps A and gradients g = d logit / d A
    (float64) for `classes` (default: each face's predicted class)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((48, 48, 1))
    features = layers.Conv2D(3, 3, padding="same", activation="relu", name="conv1")(inputs)
    logits = layers.Dense(7, name="logits")(layers.GlobalAveragePooling2D()(layers.Conv2D(5, 3)(features)))
    faces = synthetic.generate(4, seed=2).images.pixels.astype("float32") / 255.0
    tap = keras.Model(inputs, [features, logits])

    def maps_and_gradients(classes=None):
        with tf.GradientTape() as tape:
            maps, scores = tap(faces)
            tape.watch(maps)
            chosen = tf.argmax(scores, axis=1) if classes is None else tf.constant(classes)
            total = tf.reduce_sum(tf.gather(scores, chosen, axis=1, batch_dims=1))
        return maps.numpy().astype(np.float64), tape.gradient(total, maps).numpy().astype(np.float64)

    return keras.Model(inputs, logits), faces, maps_and_gradients


def test_grad_cam_plus_plus_is_the_papers_formula():
    model, faces, maps_and_gradients = same_size_model()
    a, g = maps_and_gradients()
    denominator = 2 * g**2 + a.sum(axis=(1, 2), keepdims=True) * g**3
    alpha = np.divide(g**2, denominator, out=np.zeros_like(g), where=denominator != 0)
    weights = (alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True)
    heat = np.maximum((weights * a).sum(axis=-1), 0)
    peak = heat.max(axis=(1, 2), keepdims=True)
    assert (peak > 0).all()
    expected = heat / peak
    np.testing.assert_allclose(explain.grad_cam(model, faces, "conv1", plus_plus=True), expected, atol=1e-4)


def test_layer_cam_lies_on_the_expression_regions_too(trained):
    model, faces, _, masks = trained
    cams = explain.layer_cam(model, faces[:140])  # default: conv3_act
    assert cams.shape == (140, 48, 48) and cams.min() >= 0 and cams.max() <= 1
    assert explain.mask_ratio(cams, masks[:140]) > SALIENCY_MIN_RATIO  # measured 2.36: as sharp as saliency
    assert not np.allclose(cams, explain.grad_cam(model, faces[:140], "conv3_act"), atol=1e-3)  # its own weights


def test_layer_cam_is_the_papers_formula():
    model, faces, maps_and_gradients = same_size_model()
    forced = np.array([1, 2, 3, 4])
    a, g = maps_and_gradients(forced)
    heat = np.maximum((np.maximum(g, 0) * a).sum(axis=-1), 0)
    expected = heat / heat.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(explain.layer_cam(model, faces, "conv1", class_index=forced), expected, atol=1e-4)


def test_score_cam_lies_on_the_expression_regions_too(trained):
    model, faces, _, masks = trained
    cams = explain.score_cam(model, faces[:40])  # default: conv3_act, 64 masked copies per face
    assert cams.shape == (40, 48, 48) and cams.min() >= 0 and np.allclose(cams.max(axis=(1, 2)), 1)
    assert explain.mask_ratio(cams, masks[:40]) > GRAD_CAM_MIN_RATIO


def softmax(scores):
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def test_score_cam_is_the_papers_formula():
    # A conv layer that keeps the 48x48 size (no resizing), one of its 4 channels constant (skipped).
    keras.utils.set_random_seed(9)
    inputs = keras.Input((48, 48, 1))
    conv = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")
    features = conv(inputs)
    logits = layers.Dense(7, name="logits")(layers.GlobalAveragePooling2D()(layers.Conv2D(5, 3)(features)))
    model = keras.Model(inputs, logits)
    kernel, bias = conv.get_weights()
    kernel[..., 3], bias[3] = 0.0, 0.5  # channel 3 is 0.5 everywhere
    conv.set_weights([kernel, bias])
    faces = synthetic.generate(3, seed=2).images.pixels.astype("float32") / 255.0
    maps = keras.Model(inputs, features)(faces).numpy().astype(np.float64)
    forced = np.array([4, 0, 6])
    expected = []
    for face, a, chosen in zip(faces, maps, forced):
        a = a[..., :3]
        masks = (a - a.min(axis=(0, 1))) / (a.max(axis=(0, 1)) - a.min(axis=(0, 1)))
        masked = face[None] * np.moveaxis(masks, -1, 0)[..., None]
        weights = softmax(model(masked.astype("float32")).numpy().astype(np.float64))[:, chosen]
        heat = np.maximum(a @ weights, 0)
        expected.append(heat / heat.max())
    np.testing.assert_allclose(explain.score_cam(model, faces, "conv1", class_index=forced), expected, atol=1e-4)
    # One feature map: its weight cancels in the normalization, leaving the map of largest variance.
    spread = maps.reshape(3, -1, 4).var(axis=1).argmax(axis=1)
    single = np.stack([a[..., k] / a[..., k].max() for a, k in zip(maps, spread)])
    np.testing.assert_allclose(explain.score_cam(model, faces, "conv1", max_channels=1), single, atol=1e-5)
    with pytest.raises(FerOptionError, match="max_channels must be an integer >= 1"):
        explain.score_cam(model, faces, max_channels=0)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "scorecam"])
def test_class_activation_maps_of_a_bfloat16_model(method):
    keras.utils.set_random_seed(8)
    inputs = keras.Input((48, 48, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1", dtype="mixed_bfloat16")(inputs)
    x = layers.GlobalAveragePooling2D(dtype="mixed_bfloat16")(x)
    model = keras.Model(inputs, layers.Dense(7, name="logits", dtype="float32")(x))
    faces = synthetic.generate(3, seed=3).images.pixels.astype("float32")
    if method == "scorecam":
        cams = explain.score_cam(model, faces, "conv1")
    elif method == "layercam":
        cams = explain.layer_cam(model, faces, "conv1")
    else:
        cams = explain.grad_cam(model, faces, "conv1", plus_plus=method == "gradcam++")
    assert cams.shape == (3, 48, 48) and np.isfinite(cams).all() and cams.max() == pytest.approx(1.0)


def region_model():
    """Class 3's logit is 0.05 x the mean grey level of rows 8-15, columns 24-39; the others 0."""
    inputs = keras.Input((48, 48, 1))
    region = layers.Cropping2D(((8, 32), (24, 8)))(inputs)
    pooled = layers.GlobalAveragePooling2D()(region)
    weights = np.zeros((1, 7), np.float32)
    weights[0, 3] = 0.05
    dense = layers.Dense(7, name="logits")
    model = keras.Model(inputs, dense(pooled))
    dense.set_weights([weights, np.zeros(7, np.float32)])
    return model


def test_occlusion_marks_what_the_class_needs_to_see():
    model = region_model()
    faces = np.full((2, 48, 48, 1), 100.0, np.float32)
    faces[:, 8:16, 24:40] = 250.0
    maps = explain.occlusion(model, faces, class_index=3)
    assert maps.shape == (2, 48, 48) and maps.max() == pytest.approx(1.0)
    inside = np.zeros((48, 48), bool)
    inside[8:16, 24:40] = True
    # Squares (8 px, stride 4) that touch no pixel of the region change nothing.
    reach = np.zeros((48, 48), bool)
    reach[1:23, 17:47] = True
    assert (maps[:, ~reach] == 0).all() and maps[:, inside].mean() > 0.5
    # By hand at patch 16, stride 16: 9 squares, each pixel covered once: its square's drop.
    probability = explain.probabilities(model, faces[:1])[0, 3]
    expected = np.zeros((48, 48))
    for top in (0, 16, 32):
        for left in (0, 16, 32):
            hidden = faces[:1].copy()
            hidden[0, top:top + 16, left:left + 16] = faces[0].mean()
            expected[top:top + 16, left:left + 16] = probability - explain.probabilities(model, hidden)[0, 3]
    expected = np.maximum(expected, 0) / np.maximum(expected, 0).max()
    np.testing.assert_allclose(explain.occlusion(model, faces[:1], 3, patch=16, stride=16)[0], expected, atol=1e-5)
    # The last row and column of squares reach the border (48 is no multiple of 10's grid).
    assert explain.occlusion(model, faces[:1], 3, patch=10, stride=10)[0, 47, 47] == 0.0
    for options, words in (({"patch": 49}, "patch must be at most the image side"),
                           ({"patch": 8, "stride": 9}, "stride at most patch"), ({"patch": 0}, "patch")):
        with pytest.raises(FerOptionError, match=words):
            explain.occlusion(model, faces, 3, **options)


def test_activation_maps_have_the_layer_shape(trained):
    model, faces, _, _ = trained
    for name in explain.feature_layers(model):
        maps = explain.activation_maps(model, faces[0], name)
        assert maps.shape == tuple(model.get_layer(name).output.shape[1:]), name
    expected = keras.Model(model.inputs, model.get_layer("conv2").output).predict(faces[:1], verbose=0)[0]
    np.testing.assert_allclose(explain.activation_maps(model, faces[0], "conv2"), expected, rtol=1e-4, atol=1e-5)


def interior_mean(maps, channel):
    """A filter's mean activation without the border, as filter_ascent measures it."""
    border = min(2, maps.shape[-3] // 6)
    return maps[..., border:maps.shape[-3] - border, border:maps.shape[-2] - border, channel].mean(axis=(-2, -1))


def test_filter_ascent_raises_its_own_filter(trained):
    model, faces, _, _ = trained
    filters = explain.pick_filters(model, "conv3", 4, seed=0)
    found = explain.filter_ascent(model, "conv3", filters, steps=48, seed=0)
    assert found.images.shape == (4, 48, 48, 1) and found.activations.shape == (4, 49)
    assert found.images.min() >= 0 and found.images.max() <= 255
    assert (found.final > found.start + 0.5).all()  # every filter gains
    best = int(np.argmax(found.final - found.start))
    target, other = int(found.filters[best]), int(found.filters[(best + 1) % 4])
    # The input found for `target` excites it more than any of the 280 held-out faces does...
    real = keras.Model(model.inputs, model.get_layer("conv3").output).predict(faces, verbose=0)
    assert found.final[best] > interior_mean(real, target).max()
    # ...and far more than it excites another filter (gains over a grey start image).
    grey = np.full((48, 48, 1), 128.0, np.float32)
    start_maps = explain.activation_maps(model, grey, "conv3")
    end_maps = explain.activation_maps(model, found.images[best], "conv3")
    own_gain = interior_mean(end_maps, target) - interior_mean(start_maps, target)
    other_gain = interior_mean(end_maps, other) - interior_mean(start_maps, other)
    assert own_gain > 2 * max(other_gain, 0.0) and own_gain > 0.5
    assert found.final[best] == pytest.approx(interior_mean(end_maps, target), rel=1e-3, abs=1e-4)


def test_filter_ascent_of_a_float16_model_matches_float32(trained):
    # The packaged model's weights are float16, and a model loaded as stored computes in float16:
    # the gradient's normalization underflowed there (0/0), and every image came back NaN.
    from keras_fer.loading import model_in_dtype

    model, _, _, _ = trained
    half = model_in_dtype(model, "float16")
    filters = explain.pick_filters(model, "conv1", 4, seed=0)
    found = explain.filter_ascent(half, "conv1", filters, steps=16, seed=0)
    assert np.isfinite(found.images).all() and np.isfinite(found.activations).all()
    assert (found.final > found.start).all()
    reference = explain.filter_ascent(model, "conv1", filters, steps=16, seed=0)
    assert np.abs(found.images.astype(float) - reference.images).mean() < 2.0  # grey levels


def test_filter_ascent_multiplies_a_rectified_activation(trained):
    model, faces, _, _ = trained
    filters = explain.pick_filters(model, "conv3", 4, seed=0)
    found = explain.filter_ascent(model, "conv3_act", filters, steps=48, seed=0)  # after the ReLU: >= 0
    best = int(np.argmax(found.final))
    real = keras.Model(model.inputs, model.get_layer("conv3_act").output).predict(faces, verbose=0)
    real_best = interior_mean(real, int(found.filters[best])).max()
    assert found.final[best] > 10 * found.start[best]  # many-fold over the grey start
    assert found.final[best] > 3 * real_best  # and over the most exciting real face
    assert np.all(np.diff(found.activations[best][::8]) > -0.2)  # it climbs, give or take the jitter


def test_a_model_path_is_refused_naming_it_and_how_to_load_it():
    faces = np.zeros((1, 8, 8, 1))
    calls = (lambda model: explain.saliency(model, faces), lambda model: explain.grad_cam(model, faces),
             lambda model: explain.logits(model, faces), explain.conv_layers,
             lambda model: explain.filter_ascent(model, "conv1", [0], steps=1),
             lambda model: explain.activation_maps(model, faces[0], "conv1"))
    for call in calls:  # each was an AttributeError ('str' object has no attribute 'inputs' / 'layers')
        with pytest.raises(FerOptionError, match=r"load_keras_model\(path\)\. Received: model='runs/cnn4'$"):
            call("runs/cnn4")


def test_images_given_for_the_model_are_named_in_one_line():
    # explain.saliency(faces, model), the arguments swapped: the error printed the whole array
    # (dozens of lines) as Received: model=array([[[[0.], ...
    with pytest.raises(FerOptionError, match=r"Received: model of type ndarray \(shape \(2, 8, 8, 1\)\)$") as caught:
        explain.saliency(np.zeros((2, 8, 8, 1)), tiny_float64_model())
    assert "\n" not in str(caught.value)


def test_conv_kernels_are_the_first_layers_weights_on_a_grey_face():
    keras.utils.set_random_seed(0)
    model = small_cnn()
    found = explain.conv_kernels(model)
    kernel = model.get_layer("conv1").kernel.numpy()  # (3, 3, 1, 16)
    assert found.layer == "conv1" and found.channels == 1 and found.filters.tolist() == list(range(16))
    np.testing.assert_array_equal(found.weights, np.moveaxis(kernel[:, :, 0, :], -1, 0))
    assert found.total == 16 and found.scale == np.abs(kernel).max()
    chosen = explain.conv_kernels(model, "conv1", [5, 2, 5])  # one given twice is drawn once
    np.testing.assert_array_equal(chosen.weights, found.weights[[5, 2]])
    assert chosen.filters.tolist() == [5, 2] and (chosen.total, chosen.scale) == (16, found.scale)
    with pytest.raises(FerOptionError, match=r"filters must name at least one filter of layer 'conv1' \(0-15\)"):
        explain.conv_kernels(model, filters=[])
    # A layer that reads feature maps has no kernel on the image; a model without conv layers none.
    with pytest.raises(FerOptionError, match=r"'conv2' reads the feature maps .* first conv layer, 'conv1'"):
        explain.conv_kernels(model, "conv2")
    with pytest.raises(FerOptionError, match=r"layer 'conv1' has filters 0-15\. Received: filter=16"):
        explain.conv_kernels(model, filters=[16])
    with pytest.raises(FerOptionError, match="has no convolution layers"):
        explain.conv_kernels(build_model("dnn"))


def test_three_channel_kernels_are_summed_to_their_effect_on_a_grey_face():
    # resnet18 takes the grey face as three equal channels: its 7x7x3 kernels act as their sum.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, layers.Conv2D(4, 5, use_bias=False, name="conv1")(inputs))
    found = explain.conv_kernels(model)
    assert found.channels == 3 and found.weights.shape == (4, 5, 5)
    grey = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 1)).astype("float32")
    through_model = model.predict(np.repeat(grey, 3, axis=-1), verbose=0)
    through_sum = tf.nn.conv2d(grey, np.moveaxis(found.weights, 0, -1)[:, :, None, :], 1, "VALID").numpy()
    np.testing.assert_allclose(through_model, through_sum, rtol=1e-4, atol=1e-3)
