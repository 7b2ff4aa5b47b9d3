"""Tests of the model zoo (keras_fer.models): shapes, training, saving, exact parameter counts."""

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_fer.errors import FerOptionError  # noqa: E402
from keras_fer.models import (  # noqa: E402
    ModelInfo,
    build_model,
    count_flops,
    list_models,
    model_info,
    parameter_counts,
    registry_table,
    summary_table,
    weight_mismatch,
)
from keras_fer.models.dnn import dnn_parameter_count, matched_width  # noqa: E402
from keras_fer.models.layers import ForwardGradConv2D, RReLU  # noqa: E402

# Keras' convert_to_numpy calls np.array on TF tensors, which numpy 2 flags; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

MODELS = list_models()
CNNS = [name for name in MODELS if not name.startswith("dnn")]
_BUILT = {}


def built(name):
    """One default-built model per name, shared by the read-only tests (building costs time)."""
    if name not in _BUILT:
        _BUILT[name] = build_model(name)
    return _BUILT[name]


def to_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def random_images(model, count, seed=0):
    shape = model.input_shape[1:]
    return np.random.default_rng(seed).uniform(0.0, 1.0, (count, *shape)).astype("float32")


def test_registry_has_every_report():
    assert MODELS == sorted(MODELS)
    for name in ("cnn3", "cnn4", "cnn4d", "cnn39m", "dnn", "dnn-matched", "resnet18", "vgg12", "fervgg"):
        assert name in MODELS
    assert {model_info(name).report for name in MODELS} >= {"000", "001", "002", "003", "004", "ours"}


@pytest.mark.parametrize("name", MODELS)
def test_output_is_batch_by_seven_logits(name):
    model = built(name)
    assert model.name == name
    assert model.layers[-1].name == "logits"
    outputs = model(random_images(model, 2), training=False)
    assert tuple(outputs.shape) == (2, 7)
    assert np.all(np.isfinite(to_numpy(outputs)))


@pytest.mark.parametrize("name", MODELS)
def test_a_few_adam_steps_lower_the_loss(name):
    keras.utils.set_random_seed(1)
    model = build_model(name)
    # Dropout off: the test is about the gradient path, and 4 images with dropout make a noisy loss.
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    images = random_images(model, 4)
    labels = np.array([0, 3, 4, 6])
    optimizer = keras.optimizers.Adam(1e-4)
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    losses = []
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = loss_function(labels, model(images, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)
        losses.append(float(loss))
    assert min(losses[-2:]) < losses[0], losses


@pytest.mark.parametrize("name", MODELS)
def test_keras_file_round_trip_in_safe_mode(name, tmp_path):
    model = built(name)
    images = random_images(model, 2, seed=1)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.name == name
    np.testing.assert_array_equal(
        to_numpy(model(images, training=False)), to_numpy(loaded(images, training=False))
    )


@pytest.mark.parametrize("name", MODELS)
def test_preprocessing_makes_every_model_take_raw_48x48x1(name):
    model = build_model(name, preprocessing={"normalize": "unit"})
    assert model.input_shape == (None, 48, 48, 1)
    info = model_info(name)
    assert model.get_layer("preprocessing").output.shape[1:] == info.input_shape
    faces = np.random.default_rng(2).integers(0, 256, (2, 48, 48, 1)).astype("float32")
    assert tuple(model(faces, training=False).shape) == (2, 7)
    assert parameter_counts(model) == (info.trainable_params, info.total_params - info.trainable_params)


@pytest.mark.parametrize(
    "name, trainable, total",
    [
        ("cnn4", 538_759, 539_783),
        ("cnn39m", 39_569_799, 39_571_719),
        ("dnn", 3_755_015, 3_763_207),
        ("cnn4d", 4_075_783, 4_075_783),
        ("resnet18", 11_180_103, 11_189_703),
    ],
)
def test_report_parameter_counts_are_exact(name, trainable, total):
    info = model_info(name)
    assert (info.trainable_params, info.total_params) == (trainable, total)


def test_resnet18_one_channel_option():
    model = build_model("resnet18", input_shape=(48, 48, 1))
    # conv1 loses 2 of its 3 input channels: 7 * 7 * 64 * 2 weights.
    assert parameter_counts(model)[0] == 11_180_103 - 7 * 7 * 64 * 2


def test_resnet18_small_stem_keeps_four_times_the_map():
    imagenet, small = build_model("resnet18"), build_model("resnet18", stem="small")
    # A 3x3 conv1 instead of 7x7 over 3 channels; every other weight is the same.
    assert parameter_counts(small)[0] == parameter_counts(imagenet)[0] - (7 * 7 - 3 * 3) * 3 * 64
    assert small.get_layer("block1_add").output.shape[1:3] == (24, 24)
    assert imagenet.get_layer("block1_add").output.shape[1:3] == (12, 12)
    assert count_flops(small) > 3 * count_flops(imagenet)
    assert tuple(small(random_images(small, 2), training=False).shape) == (2, 7)
    with pytest.raises(FerOptionError, match="Received: stem='tiny'"):
        build_model("resnet18", stem="tiny")


def test_vgg12_batch_norm_ablation_drops_only_batch_norm():
    with_bn, without_bn = model_info("vgg12"), parameter_counts(build_model("vgg12", batch_norm=False))
    bn_channels = 3 * (64 + 128 + 256 + 512)
    assert without_bn == (with_bn.trainable_params - 2 * bn_channels, 0)


def test_weight_mismatch_names_the_first_weight_that_differs():
    model = built("cnn4")
    assert weight_mismatch(model, build_model("cnn4")) is None
    answer = weight_mismatch(build_model("cnn4", num_classes=8), model, "the reference")
    width = model.get_layer("logits").kernel.shape[0]
    assert re.fullmatch(rf"weight (\S+) has shape \({width}, 8\), the reference's \1 \({width}, 7\)", answer), answer
    assert weight_mismatch(build_model("cnn4", batch_norm=False), model).startswith("has ")


def test_flops_of_cnn4_by_hand():
    multiply_adds = (
        48 * 48 * 32 * 5 * 5 * 1
        + 24 * 24 * 64 * 3 * 3 * 32
        + 12 * 12 * 128 * 3 * 3 * 64
        + 6 * 6 * 128 * 3 * 3 * 128
        + 1152 * 256
        + 256 * 7
    )
    assert model_info("cnn4").flops == 2 * multiply_adds
    assert count_flops(built("cnn4")) == 2 * multiply_adds


@pytest.mark.parametrize("target", CNNS)
def test_dnn_matched_is_within_one_percent(target):
    model = build_model("dnn-matched", match=target)
    wanted = model_info(target).total_params
    assert abs(model.count_params() - wanted) <= 0.01 * wanted


def test_dnn_matched_defaults_to_cnn4d_and_takes_a_count():
    assert model_info("dnn-matched").total_params == pytest.approx(4_075_783, rel=0.01)
    assert build_model("dnn-matched", match=1_000_000).count_params() == pytest.approx(1_000_000, rel=0.01)
    assert dnn_parameter_count(1024) == 3_763_207
    assert dnn_parameter_count(1024, trainable_only=True) == 3_755_015
    assert matched_width(3_763_207) == 1024
    with pytest.raises(FerOptionError, match="match"):
        build_model("dnn-matched", match="no-such-model")


def test_softmax_appends_probabilities():
    model = build_model("cnn4", softmax=True)
    assert model.layers[-1].name == "probabilities"
    probabilities = to_numpy(model(random_images(model, 2), training=False))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_rrelu_is_random_in_training_and_fixed_at_inference():
    layer = RReLU(lower=0.125, upper=1.0 / 3.0, seed=3)
    negatives = -np.linspace(0.5, 2.0, 4000, dtype="float32").reshape(2, 2000)
    first = to_numpy(layer(negatives, training=True))
    second = to_numpy(layer(negatives, training=True))
    assert not np.array_equal(first, second)
    for output in (first, second):
        slopes = output / negatives
        assert slopes.min() >= 0.125 - 1e-6 and slopes.max() <= 1.0 / 3.0 + 1e-6
        assert slopes.std() > 0.03  # spread over the range, not one value
    at_inference = to_numpy(layer(negatives, training=False))
    np.testing.assert_allclose(at_inference, negatives * (0.125 + 1.0 / 3.0) / 2, rtol=1e-6)
    np.testing.assert_array_equal(at_inference, to_numpy(layer(negatives, training=False)))
    positives = -negatives
    np.testing.assert_array_equal(to_numpy(layer(positives, training=True)), positives)


@pytest.mark.parametrize("kernel_size, strides, applies", [(3, 1, True), (5, 1, True), (3, 2, False), (2, 1, False)])
def test_forward_grad_conv2d_matches_conv2d_and_its_gradients(kernel_size, strides, applies):
    options = dict(filters=6, kernel_size=kernel_size, strides=strides, padding="same", use_bias=True)
    inputs = tf.random.stateless_normal((3, 5, 4, 8), seed=(1, 2))
    stock, fast = keras.layers.Conv2D(**options), ForwardGradConv2D(**options)
    stock.build(inputs.shape)
    fast.build(inputs.shape)
    fast.set_weights([w + 0.1 for w in stock.get_weights()])  # a nonzero bias
    stock.set_weights(fast.get_weights())
    assert fast._forward_gradient_applies() is applies
    results = []
    for layer in (stock, fast):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs)
            loss = tf.reduce_sum(outputs * tf.sin(outputs))
        results.append([outputs, *tape.gradient(loss, [inputs, layer.kernel.value, layer.bias.value])])
    for expected, got in zip(*results):
        np.testing.assert_allclose(to_numpy(got), to_numpy(expected), rtol=1e-4, atol=1e-4)


def test_resnet18_uses_forward_grad_convolutions_only_where_they_apply():
    model = built("resnet18")
    fast = [layer for layer in model.layers if isinstance(layer, ForwardGradConv2D)]
    assert [layer.name for layer in fast] == ["conv11", "conv12", "conv13", "conv15", "conv16", "conv17"]
    assert all(layer._forward_gradient_applies() for layer in fast)


def test_cnn39m_uses_rrelu_where_the_report_does():
    model = built("cnn39m")
    rrelus = [layer.name for layer in model.layers if isinstance(layer, RReLU)]
    assert rrelus == ["conv1_act", "dense1_act", "dense2_act", "dense3_act"]
    images = random_images(model, 2)
    np.testing.assert_array_equal(to_numpy(model(images)), to_numpy(model(images)))


def test_unknown_name_and_option_raise_fer_option_error():
    with pytest.raises(FerOptionError, match=r"Received: name='lenet'") as error:
        build_model("lenet")
    assert "cnn4" in str(error.value)
    with pytest.raises(FerOptionError, match="no_such_option"):
        build_model("cnn4", no_such_option=1)
    with pytest.raises(FerOptionError, match="conv_dropout"):
        build_model("vgg12", conv_dropout=1.5)
    with pytest.raises(FerOptionError):
        model_info("lenet")


@pytest.mark.parametrize("name, option, value, message", [
    # Each of these raised a TypeError or OverflowError from inside Keras, or was taken for True.
    ("cnn4", "negative_slope", "x", "must be a finite number >= 0"),
    ("dnn", "negative_slope", float("nan"), "must be a finite number >= 0"),
    ("vgg12", "width", "x", "must be a finite number > 0"),
    ("fervgg", "width", float("inf"), "must be a finite number > 0"),
    ("cnn39m", "seed", "x", "must be an integer >= 0"),
    ("cnn4", "batch_norm", "maybe", "must be True or False"),
    ("vgg12", "batch_norm", 1, "must be True or False"),
    ("dnn-matched", "trainable_only", "no", "must be True or False"),
])
def test_an_option_of_the_wrong_type_is_named(name, option, value, message):
    with pytest.raises(FerOptionError, match=rf"^Argument `{option}` {message}\. Received: {option}="):
        build_model(name, **{option: value})
    if message == "must be True or False":  # a NumPy bool is a bool
        assert build_model(name, **{option: np.False_}) is not None


@pytest.mark.parametrize("name, options, message", [
    ("cnn4", dict(input_shape=(8, 8, 1)), r"cannot take this input shape \(Computed output size would be zero"),
    ("dnn", dict(input_shape=(1, 1, 1)), r"Received: input_shape=\(1, 1, 1\)"),
    ("cnn4", dict(preprocessing={"normalize": "zscore"}), r"Received: normalize='zscore'"),
    ("cnn4", dict(preprocessing="unit"), r"preprocessing must be a dict"),
    ("cnn4", dict(preprocessing={"normalize": "unit", "scale": 2}), r"Received: preprocessing=\{"),
    ("cnn4", dict(preprocessing={"normalize": "dataset", "std": float("nan")}), r"Received: std=nan"),
    # A std of 0 or below was divided by 1e-6; a side alone, or filters as one width, were TypeErrors.
    ("cnn4", dict(preprocessing={"normalize": "dataset", "std": 0}), r"std \(grey levels\) must be a finite .* > 0"),
    ("cnn4", dict(preprocessing={"size": 64}), r"size must be \(height, width\), two positive integers"),
    ("cnn3", dict(filters=64), r"Argument `filters` must hold 3 conv widths. Received: filters=64"),
    ("cnn3", dict(filters="abc"), r"Argument `filters` must hold 3 conv widths. Received: filters='abc'"),
])
def test_an_input_or_preprocessing_the_model_cannot_take_is_named(name, options, message):
    # Plain ValueErrors from Keras' pooling or the Preprocessing layer; a NaN std built a model of NaNs.
    with pytest.raises(FerOptionError, match=message):
        build_model(name, **options)


@pytest.mark.parametrize("error", [tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"),
                                   MemoryError()])
def test_a_model_too_big_for_memory_is_named(error, monkeypatch):
    # fervgg at width=1e6 raised ResourceExhaustedError from its first weights. A real one costs
    # TensorFlow's allocator 10 s of retries, so the conv layers' build raises it here.
    def build(self, input_shape):
        raise error

    monkeypatch.setattr(keras.layers.Conv2D, "build", build)
    with pytest.raises(FerOptionError, match=rf"^Model 'fervgg' with these options does not fit in memory "
                       rf"\({type(error).__name__}\)\. Received: width=1000000\.0$"):
        build_model("fervgg", width=1e6)


@pytest.mark.parametrize("name", MODELS)
def test_model_info_is_sane(name):
    info = model_info(name)
    assert isinstance(info, ModelInfo) and info.name == name
    assert info.description and info.report
    assert len(info.input_shape) == 3
    assert 0 < info.trainable_params <= info.total_params
    assert info.flops > 0 and info.mflops == info.flops / 1e6
    assert all(layer.startswith(("conv", "shortcut")) for layer in info.conv_layers)
    assert bool(info.conv_layers) == (name in CNNS)


def test_tables_list_every_model_and_the_totals():
    table = registry_table()
    for name in MODELS:
        assert f"\n{name} " in table
    summary = summary_table(built("cnn4"))
    assert "conv1 (Conv2D)" in summary
    assert "Trainable params: 538,759" in summary
    assert "Non-trainable params: 1,024" in summary


OPTIONS_TABLE = re.compile(r"^\| `(?P<name>[a-z0-9-]+)` \| (?P<options>`\w+=.*) \|$", re.MULTILINE)


@pytest.mark.parametrize("name", list_models())
def test_the_models_doc_lists_each_builders_options_with_their_defaults(name):
    # docs/models.md gave only fervgg's options; the others were in their docstrings alone.
    import inspect
    from pathlib import Path

    from keras_fer.models import _entry

    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    rows = {match["name"]: match["options"] for match in OPTIONS_TABLE.finditer(text)}
    documented = dict(re.findall(r"`(\w+)=([^`]+)`", rows[name]))
    common = {"input_shape", "num_classes", "softmax", "preprocessing"}
    parameters = inspect.signature(_entry(name).builder).parameters
    expected = {key: repr(parameter.default).replace("'", '"') for key, parameter in parameters.items()
                if key not in common}
    assert documented == expected
