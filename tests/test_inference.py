"""keras_fer.loading (safe loading), keras_fer.export (the LiteRT path, export) and
keras_fer.inference (probabilities, TTA, ensembles, streaming submissions, metrics).
Models are tiny Functional CNNs built here (fast)."""

import csv
import json
import os
import re
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from keras_fer import export, files, inference, loading
from keras_fer.classes import CLASS_NAMES, NUM_CLASSES
from keras_fer.errors import FerDataError, FerModelError, FerOptionError
from keras_fer.metrics import calibration
from keras_fer.synthetic import generate

from conftest import PRIOR, save_run, tiny_model

# TensorFlow 2.21 tensors lack NumPy 2's __array__(copy=...): Keras-internal noise.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def write_fer_csv(path, pixels, labels=None, ids=None, usage=None):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        header = (["id"] if ids is not None else []) + (["emotion"] if labels is not None else []) + ["pixels"]
        header += ["Usage"] if usage is not None else []
        writer.writerow(header)
        for i, face in enumerate(pixels):
            row = ([ids[i]] if ids is not None else []) + ([int(labels[i])] if labels is not None else [])
            row.append(" ".join(map(str, face.reshape(-1).tolist())))
            row += [usage[i]] if usage is not None else []
            writer.writerow(row)
    return path


@pytest.fixture(scope="module")
def demo():
    return generate(40, seed=3).images


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {
        "a": save_run(base / "a", tiny_model(1), PRIOR),
        "b": save_run(base / "b", tiny_model(2), PRIOR),
    }


@pytest.fixture(scope="module")
def keras_predictors(runs):
    return {name: inference.load_predictor(path, backend="keras") for name, path in runs.items()}


# --------------------------------------------------------------------------------------------
# Loading


def test_missing_model_file_names_it(tmp_path):
    with pytest.raises(FerModelError, match="nope.keras: no such model file"):
        loading.resolve_model(tmp_path / "nope.keras")


def test_folder_without_best_keras(tmp_path):
    with pytest.raises(FerModelError, match="no best.keras"):
        loading.resolve_model(tmp_path)


def test_text_file_is_not_a_model(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("hello")
    with pytest.raises(FerModelError, match="model.keras: not a Keras model file") as caught:
        inference.load_predictor(path)
    assert "\n" not in str(caught.value)


def test_zip_that_is_not_a_keras_model(tmp_path):
    path = tmp_path / "fake.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{not json")
    with pytest.raises(FerModelError, match="fake.keras: not a loadable Keras model") as caught:
        loading.load_keras_model(path)
    assert "\n" not in str(caught.value)


def test_hdf5_and_bad_tflite_are_refused(tmp_path):
    (tmp_path / "old.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(FerModelError, match="legacy HDF5"):
        loading.resolve_model(tmp_path / "old.h5")
    (tmp_path / "x.tflite").write_bytes(b"garbage!")
    with pytest.raises(FerModelError, match="not a TensorFlow Lite model"):
        loading.resolve_model(tmp_path / "x.tflite")


@pytest.mark.parametrize(
    "tail, outputs",
    [("none", "logits"), ("layer", "probabilities"), ("activation", "probabilities"), ("hidden", "probabilities")],
)
def test_keras_predictor_tells_logits_from_probabilities(tmp_path, tail, outputs):
    import keras

    base = tiny_model(3)
    x = base.output
    if tail == "layer":
        x = keras.layers.Softmax()(x)
    elif tail == "activation":
        x = keras.layers.Activation("softmax")(x)
    elif tail == "hidden":  # a softmax that the last layer does not show: found by probing
        x = keras.layers.Reshape((NUM_CLASSES,))(keras.layers.Softmax()(x))
    run = save_run(tmp_path / tail, keras.Model(base.input, x), PRIOR)
    predictor = inference.load_predictor(run, backend="keras")
    assert predictor.outputs == outputs
    faces = export.verification_sample(8)
    probabilities = loading.softmax(predictor.run(faces)) if outputs == "logits" else predictor.run(faces)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(probabilities >= 0)


def test_default_model_path_is_clear_when_absent():
    if (loading.WEIGHTS_DIR / "best.keras").exists() or list(loading.WEIGHTS_DIR.glob("*.keras")):
        assert loading.default_model_path().is_file()
    else:
        with pytest.raises(FerModelError, match="--model"):
            loading.default_model_path()


def test_prior_correction_needs_config(tmp_path, runs):
    lone = tmp_path / "lone.keras"
    lone.write_bytes((runs["a"] / "best.keras").read_bytes())
    predictor = inference.load_predictor(lone, backend="keras")
    with pytest.raises(FerModelError, match="config.json"):
        predictor.prior  # noqa: B018


@pytest.mark.parametrize("prior, words", [
    ([0.2, 0.0, 0.2, 0.2, 0.2, 0.1, 0.1], "is 0 for Disgust: prior correction is undefined"),
    ([-1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], "is negative for Angry (-1): not a prior"),  # was "is 0 for Angry"
    ([0.5] * 6, "must be a list of 7 numbers"),
    ([10**400] + [0.1] * 6, "must be a list of 7 numbers"),  # JSON's unbounded integer: an OverflowError
])
def test_a_bad_class_prior_is_named(tmp_path, runs, prior, words):
    from keras_fer import loading

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes((runs["a"] / "best.keras").read_bytes())
    (run / "config.json").write_text(json.dumps({"class_prior": prior}))
    with pytest.raises(FerModelError, match=re.escape(words)):
        loading.class_prior(loading.resolve_model(run))


@pytest.mark.parametrize(
    "content, reason",
    [(b"{not json", "not valid JSON"), (b"\xff\xfe{}", "not valid JSON"), (b"[1, 2]", "expected a JSON object")],
)
def test_unreadable_run_config_is_one_line_naming_it(tmp_path, runs, content, reason):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes((runs["a"] / "best.keras").read_bytes())
    (run / "config.json").write_bytes(content)
    with pytest.raises(FerModelError) as caught:
        loading.resolve_model(run)
    message = str(caught.value)
    assert message.startswith(f"{run / 'config.json'}: unreadable run config: ") and reason in message
    assert "\n" not in message and message.count(str(run / "config.json")) == 1


# --------------------------------------------------------------------------------------------
# Probabilities, TTA, ensembles


def test_softmax_and_prior_correction_are_logit_adjustment():
    logits = np.random.default_rng(0).normal(size=(5, NUM_CLASSES)) * 3
    probabilities = loading.softmax(logits)
    assert np.allclose(probabilities.sum(axis=1), 1)
    adjusted = inference.prior_correct(probabilities, PRIOR)
    expected = loading.softmax(logits - np.log(np.array(PRIOR) / sum(PRIOR)))
    assert np.allclose(adjusted, expected)


def test_predictions_equal_keras_softmax(keras_predictors, runs, demo):
    model = loading.load_keras_model(runs["a"])
    expected = loading.softmax(model.predict(demo.pixels.astype("float32"), verbose=0))
    got = inference.predict_proba([keras_predictors["a"]], demo.pixels)
    assert got.shape == (len(demo), NUM_CLASSES)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_ensemble_is_mean_of_softmaxes(keras_predictors, demo):
    a, b = keras_predictors["a"], keras_predictors["b"]
    both = inference.predict_proba([a, b], demo.pixels)
    expected = (a.probabilities(demo.pixels) + b.probabilities(demo.pixels)) / 2
    np.testing.assert_allclose(both, expected, atol=1e-12)
    assert not np.allclose(a.probabilities(demo.pixels), b.probabilities(demo.pixels))


def test_flip_tta_of_symmetric_face_equals_plain(keras_predictors, demo):
    half = demo.pixels[:6, :, :24, :]
    symmetric = np.concatenate([half, half[:, :, ::-1, :]], axis=2)
    predictor = keras_predictors["a"]
    plain = inference.predict_proba([predictor], symmetric)
    flipped = inference.predict_proba([predictor], symmetric, tta="flip")
    np.testing.assert_allclose(flipped, plain, atol=1e-6)
    # and on ordinary faces flip-TTA is the mean of the face and its mirror
    mirror = demo.pixels[:, :, ::-1, :]
    expected = (predictor.probabilities(demo.pixels) + predictor.probabilities(mirror)) / 2
    np.testing.assert_allclose(inference.predict_proba([predictor], demo.pixels, tta="flip"), expected, atol=1e-9)


def test_ten_crop_views():
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype(np.uint8)
    views = inference.tta_views(faces, "crops")
    assert len(views) == 10 and all(view.shape == (3, 48, 48, 1) for view in views)
    flat = np.full((2, 48, 48, 1), 77, np.uint8)
    assert all(np.allclose(view, 77) for view in inference.tta_views(flat, "crops"))
    # the top-left crop's top-left pixel is the face's, and mirrored views mirror the plain ones
    assert np.isclose(views[0][0, 0, 0, 0], faces[0, 0, 0, 0])
    np.testing.assert_array_equal(views[1], views[0][:, :, ::-1, :])
    with pytest.raises(FerOptionError, match="--tta"):
        inference.tta_views(faces, "rotate")


def test_prior_correction_in_predict_proba(keras_predictors, demo):
    predictor = keras_predictors["a"]
    plain = inference.predict_proba([predictor], demo.pixels)
    corrected = inference.predict_proba([predictor], demo.pixels, prior_correction=True)
    np.testing.assert_allclose(corrected, inference.prior_correct(plain, PRIOR), atol=1e-12)


def test_softmax_output_is_not_applied_twice(tmp_path, demo):
    model = tiny_model(4, softmax=True)
    save_run(tmp_path / "soft", model)
    predictor = inference.load_predictor(tmp_path / "soft", backend="keras")
    assert predictor.outputs == "probabilities"
    expected = model.predict(demo.pixels.astype("float32"), verbose=0)
    np.testing.assert_allclose(predictor.probabilities(demo.pixels), expected, atol=1e-6)


def test_predict_proba_takes_one_predictor_and_names_bad_faces_and_models(keras_predictors, demo):
    one = keras_predictors["a"]
    expected = inference.predict_proba([one], demo.pixels[:3])
    np.testing.assert_allclose(inference.predict_proba(one, demo.pixels[:3]), expected)  # was "not iterable"
    np.testing.assert_allclose(inference.predict_proba([one], demo.pixels[:3, :, :, 0]), expected)
    assert inference.predict_proba([one], []).shape == (0, 7)  # no faces found: nothing to run
    for faces, words in [(demo.pixels[0], r"faces\.shape=\(48, 48, 1\)"),  # one face without its batch axis
                         (np.zeros((2, 64, 64, 1)), r"faces\.shape=\(2, 64, 64, 1\)"),
                         (np.full((1, 48, 48, 1), np.nan), "finite grey levels")]:
        with pytest.raises(FerOptionError, match=words):
            inference.predict_proba([one], faces)
    with pytest.raises(FerOptionError, match=r"Predictor objects .* Received: 'runs/a'"):
        inference.predict_proba(["runs/a"], demo.pixels[:3])
    with pytest.raises(FerOptionError, match="Received: tta='bad'"):  # even with no faces to run
        inference.predict_proba([one], np.zeros((0, 48, 48, 1)), tta="bad")
    with pytest.raises(FerOptionError, match=r"--batch-size must be an integer >= 1\. Received: batch_size=-1"):
        inference.load_predictor(one.source.path, backend="keras", batch_size=-1)  # failed at the first batch


def test_a_model_with_nan_weights_is_refused_not_turned_into_nan_probabilities(tmp_path, demo):
    model = tiny_model(4)
    model.layers[-1].kernel.assign(np.full(model.layers[-1].kernel.shape, np.nan, "float32"))
    save_run(tmp_path / "diverged", model)
    predictor = inference.load_predictor(tmp_path / "diverged", backend="keras")
    out = tmp_path / "sub.csv"
    with pytest.raises(FerModelError, match=r"diverged: outputs NaN or infinity for 3 of 3 faces"):
        inference.predict_csv(write_fer_csv(tmp_path / "t.csv", demo.pixels[:3]), [predictor], out)
    assert not out.exists()


@pytest.mark.parametrize("shape", [(64, 64, 1), (48, 48, 3)])
def test_foreign_models_are_fed_resized_replicated_unit_faces(tmp_path, demo, shape):
    import keras

    from keras_fer.models.layers import Preprocessing

    model = tiny_model(5, input_shape=shape, preprocessing=False)
    path = tmp_path / "foreign.keras"
    model.save(path)
    predictor = inference.load_predictor(path, backend="keras")
    prepare = Preprocessing(normalize="unit", size=shape[:2], channels=shape[2])
    expected = loading.softmax(model.predict(np.asarray(prepare(keras.ops.convert_to_tensor(
        demo.pixels.astype("float32")))), verbose=0))
    np.testing.assert_allclose(predictor.probabilities(demo.pixels), expected, atol=1e-5)
    for fmt, tolerance in (("keras", 1e-5), ("keras-float16", export.FLOAT16_TOLERANCE)):  # stored as they are
        result = export.export_model(path, fmt)
        copy = keras.saving.load_model(result.path, safe_mode=True)
        assert tuple(copy.inputs[0].shape[1:]) == shape and result.max_abs_diff <= tolerance
        np.testing.assert_allclose(inference.load_predictor(result.path, backend="keras").probabilities(demo.pixels),
                                   expected, atol=tolerance)


@pytest.mark.parametrize("augmented", [False, True])
def test_a_foreign_model_that_rescales_its_input_itself_gets_raw_grey_levels(tmp_path, demo, augmented):
    # keras-io's examples start a model with Rescaling(1 / 255) (after inactive augmentation
    # layers): the default "unit" divided by 255 a second time, and every face came out at about
    # 1/7 for each class, without a word.
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((48, 48, 1))
    x = inputs
    if augmented:
        x = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)])(x)
    x = keras.layers.Rescaling(1.0 / 255)(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Dense(16)(x) * 40.0))
    path = tmp_path / "rescaling.keras"
    model.save(path)
    assert loading.normalizes_itself(model) and not loading.normalizes_itself(tiny_model(5, preprocessing=False))
    expected = model.predict(demo.pixels.astype("float32"), verbose=0)
    assert expected.max(axis=1).min() > 0.2  # far from 1/7 each: what a second /255 flattened
    backends = ("keras", "auto") if export.litert_available() else ("keras",)
    for backend in backends:
        predictor = inference.load_predictor(path, backend=backend)
        np.testing.assert_allclose(predictor.probabilities(demo.pixels), expected, atol=1e-4, err_msg=backend)
    # Asked for, /255 is still what it gets, and the LiteRT copy of the default is not reused for it.
    unit = inference.load_predictor(path, backend=backends[-1], normalize="unit").probabilities(demo.pixels)
    assert np.abs(unit - expected).max() > 0.05 and unit.max(axis=1).max() < expected.max(axis=1).min()
    np.testing.assert_allclose(inference.load_predictor(path, backend=backends[-1]).probabilities(demo.pixels),
                               expected, atol=1e-4)


def test_normalize_for_a_model_that_normalizes_itself_is_noted(tmp_path, demo):
    # keras-fer models scale their faces in their Preprocessing layer: --normalize was ignored
    # without a word. Foreign models take it, and get no note.
    run = save_run(tmp_path / "run", tiny_model(6), PRIOR)
    foreign = tmp_path / "foreign.keras"
    tiny_model(6, preprocessing=False).save(foreign)
    backends = ("keras", "auto", "auto") if export.litert_available() else ("keras",)  # auto twice: made, cached
    for backend in backends:
        noted = inference.load_predictor(run, backend=backend, normalize="image")
        assert "--normalize image does not apply: the model normalizes its faces itself" in " ".join(noted.notes)
        plain = inference.load_predictor(run, backend=backend).probabilities(demo.pixels[:4])
        np.testing.assert_allclose(noted.probabilities(demo.pixels[:4]), plain, atol=1e-6)
        taken = inference.load_predictor(foreign, backend=backend, normalize="image")
        assert not any("does not apply" in note for note in taken.notes), backend


@pytest.mark.filterwarnings("ignore:You are saving a model that has not yet been built")
def test_model_with_wrong_outputs_is_refused(tmp_path):
    import keras

    inputs = keras.Input((48, 48, 1))
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(inputs))
    path = tmp_path / "three.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(FerModelError, match="expected 7 class scores"):
        inference.load_predictor(path, backend="keras")
    # An unbuilt Sequential and outputs in a dict were tracebacks from deep inside.
    logits = keras.layers.Dense(7)(keras.layers.Flatten()(inputs))
    for name, model, words in [
        ("unbuilt", keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(7)]), "has no defined input"),
        ("dict", keras.Model(inputs, {"scores": logits}), r"outputs a dict of tensors \(scores\)"),
        ("two", keras.Model(inputs, [logits, logits]), "outputs 2; expected 7 class scores"),
    ]:
        model.save(tmp_path / f"{name}.keras")
        with pytest.raises(FerModelError, match=f"{name}.keras: {words}"):
            inference.load_predictor(tmp_path / f"{name}.keras", backend="keras")
    # A list of one output, as other tools save models, is one output.
    keras.Model(inputs, [logits]).save(tmp_path / "listed.keras")
    predictor = inference.load_predictor(tmp_path / "listed.keras", backend="keras")
    assert predictor.probabilities(np.zeros((3, 48, 48, 1))).shape == (3, 7)
    # A Sequential built on an Input (keras-io's style) is a model like any other: its `output`
    # raises in Keras 3, which was a traceback, saved or in memory.
    sequential = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(), keras.layers.Dense(7)])
    sequential.save(tmp_path / "sequential.keras")
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype("float32")
    expected = loading.softmax(sequential.predict(faces / 255.0, verbose=0))
    for predictor in (inference.load_predictor(tmp_path / "sequential.keras", backend="keras"),
                      inference.keras_predictor(sequential)):
        np.testing.assert_allclose(predictor.probabilities(faces), expected, atol=1e-5)


# --------------------------------------------------------------------------------------------
# LiteRT path and export


def test_a_damaged_litert_copy_is_made_again(tmp_path, demo, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = save_run(tmp_path / "run", tiny_model(8), PRIOR)
    expected = inference.load_predictor(run, backend="keras").probabilities(demo.pixels)
    assert inference.load_predictor(run).backend == "litert"  # makes best.tflite and its sidecar
    (run / "best.tflite").write_bytes(b"TFL3" + b"\x00" * 60)  # damaged after it was verified
    predictor = inference.load_predictor(run)  # its SHA-256 is not the record's: made again before any use
    assert predictor.backend == "litert" and any("made a verified LiteRT copy" in note for note in predictor.notes)
    np.testing.assert_allclose(predictor.probabilities(demo.pixels), expected, atol=1e-4)
    assert inference.load_predictor(run).notes == []  # the copy is whole again
    # A record written before the copy's SHA-256 was kept: the damage shows when the copy is loaded.
    record = json.loads((run / "best.tflite.json").read_text())
    del record["tflite_sha256"]
    (run / "best.tflite.json").write_text(json.dumps(record))
    (run / "best.tflite").write_bytes(b"TFL3" + b"\x00" * 60)
    predictor = inference.load_predictor(run)
    assert predictor.backend == "litert" and any("could not be loaded" in note for note in predictor.notes)
    np.testing.assert_allclose(predictor.probabilities(demo.pixels), expected, atol=1e-4)
    assert inference.load_predictor(run).notes == []
    # Damaged again, in a folder that is not ours to write: the copy goes to the user cache, once.
    (run / "best.tflite").write_bytes(b"TFL3" + b"\x00" * 60)
    monkeypatch.setattr(export.os, "access", lambda path, mode: Path(path) != run)
    notes = [inference.load_predictor(run).notes for _ in range(2)]
    assert any("made a verified LiteRT copy" in note for note in notes[0])
    assert not any("made a verified LiteRT copy" in note for note in notes[1])  # the cache's copy is used
    assert len(list((tmp_path / "cache").rglob("model.tflite"))) == 1


@pytest.mark.parametrize("softmax, outputs", [(False, "logits"), (True, "probabilities")])
def test_tflite_without_its_sidecar_is_probed_for_its_outputs(tmp_path, softmax, outputs):
    run = save_run(tmp_path / "run", tiny_model(8, softmax=softmax), PRIOR)
    inference.load_predictor(run)  # exports best.tflite and its sidecar
    (run / "best.tflite.json").unlink()
    predictor = inference.load_predictor(run / "best.tflite")
    assert predictor.backend == "litert" and predictor.outputs == outputs


def test_litert_copy_agrees_with_keras_and_is_reused(tmp_path, demo):
    run = save_run(tmp_path / "run", tiny_model(6), PRIOR)
    first = inference.load_predictor(run)  # backend auto: exports best.tflite on first use
    assert first.backend == "litert"
    assert (run / "best.tflite").is_file() and (run / "best.tflite.json").is_file()
    meta = json.loads((run / "best.tflite.json").read_text())
    assert meta["verified"] and meta["max_abs_diff"] <= 1e-4
    keras_predictor = inference.load_predictor(run, backend="keras")
    faces = np.concatenate([demo.pixels, np.random.default_rng(1).integers(0, 256, (300, 48, 48, 1)).astype(np.uint8)])
    np.testing.assert_allclose(first.probabilities(faces), keras_predictor.probabilities(faces), atol=1e-4)
    # the cached copy is found without re-exporting (no note, same file)
    mtime = (run / "best.tflite").stat().st_mtime_ns
    again = inference.load_predictor(run)
    assert again.backend == "litert" and not again.notes
    assert (run / "best.tflite").stat().st_mtime_ns == mtime
    # a new best.keras makes the copy stale: it is re-exported
    tiny_model(7).save(run / "best.keras")
    fresh = inference.load_predictor(run)
    assert fresh.notes and "LiteRT copy" in fresh.notes[0]
    np.testing.assert_allclose(fresh.probabilities(demo.pixels),
                               inference.load_predictor(run, backend="keras").probabilities(demo.pixels), atol=1e-4)


def test_foreign_litert_file_is_not_overwritten(tmp_path, monkeypatch):
    run = save_run(tmp_path / "run", tiny_model(8))
    (run / "best.tflite").write_bytes(b"someone else's file")
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    predictor = inference.load_predictor(run)
    assert predictor.backend == "litert"
    assert (run / "best.tflite").read_bytes() == b"someone else's file"
    assert list(cache.rglob("model.tflite"))
    # Nor by an explicit export (the keras and savedmodel exports refused already).
    for target in (run / "best.tflite", tmp_path / "foreign.tflite"):
        target.write_bytes(b"someone else's file")
        with pytest.raises(FerOptionError, match="already exists and is not an earlier keras-fer LiteRT export"):
            export.export_model(run, "tflite", target)
        assert target.read_bytes() == b"someone else's file"


def test_a_litert_copy_that_does_not_load_is_named_by_its_destination(tmp_path, monkeypatch):
    run = save_run(tmp_path / "run", tiny_model(10))

    def broken(path, *args, **kwargs):
        raise FerModelError(f"{path}: LiteRT cannot load it (boom)")

    monkeypatch.setattr(export, "LiteRTRunner", broken)
    target = tmp_path / "out.tflite"
    with pytest.raises(FerModelError, match=rf"^{re.escape(str(target))}: LiteRT cannot load it \(boom\)$"):
        export.export_model(run, "tflite", target)  # it named the hidden temporary file
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_export_that_disagrees_leaves_the_earlier_export(tmp_path, monkeypatch):
    run = save_run(tmp_path / "run", tiny_model(10))
    target = tmp_path / "copy.tflite"
    export.export_model(run, "tflite", target)
    earlier = target.read_bytes()
    monkeypatch.setattr(export, "TOLERANCE", -1.0)
    with pytest.raises(FerModelError, match="differs from the Keras model"):
        export.export_model(run, "tflite", target)
    assert target.read_bytes() == earlier  # it was deleted after the new copy had replaced it
    assert sorted(path.name for path in tmp_path.iterdir()) == ["copy.tflite", "copy.tflite.json", "run"]


def test_an_export_stopped_between_its_record_and_its_copy_is_neither_used_nor_foreign(tmp_path, demo, monkeypatch):
    # The copy landed first and its record after: a stop between left a .tflite with no record, which
    # later exports refused as someone else's file. Now the record (with the copy's SHA-256) lands first.
    run = save_run(tmp_path / "run", tiny_model(10))
    target = tmp_path / "copy.tflite"
    export.export_model(run, "tflite", target)
    earlier = target.read_bytes()
    assert export.read_sidecar(target)["tflite_sha256"] == files.file_sha256(target)
    tiny_model(12).save(run / "best.keras")  # another model: another copy
    real_replace = files.os.replace

    def stop(source, destination):
        if Path(destination) == target:
            raise KeyboardInterrupt
        real_replace(source, destination)

    monkeypatch.setattr(files.os, "replace", stop)
    with pytest.raises(KeyboardInterrupt):
        export.export_model(run, "tflite", target)
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert target.read_bytes() == earlier  # the earlier copy, beside the new model's record
    assert export.read_sidecar(target) is None  # a record that is not its own: not used as a cache
    direct = inference.load_predictor(target)  # named directly, the copy runs, without the other copy's record
    assert direct.notes == [f"{target}.json describes another copy (an export stopped before it replaced this one): "
                            "what it records (temperatures, outputs) is not used; export again"]
    expected = inference.load_predictor(run, backend="keras").probabilities(demo.pixels)
    export.export_model(run, "tflite", target)  # not refused as foreign: replaced, with its record
    assert target.read_bytes() != earlier and export.read_sidecar(target) is not None
    np.testing.assert_allclose(inference.load_predictor(target).probabilities(demo.pixels), expected, atol=1e-4)


def test_the_packaged_folder_gets_no_litert_copy(tmp_path, monkeypatch):
    weights = save_run(tmp_path / "weights", tiny_model(11))
    monkeypatch.setattr(loading, "WEIGHTS_DIR", weights)
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    before = sorted(path.name for path in weights.iterdir())
    predictor = inference.load_predictor(loading.default_model_path())
    assert predictor.backend == "litert"
    assert sorted(path.name for path in weights.iterdir()) == before
    (copy,) = cache.rglob("model.tflite")
    # ... and later runs find the cached copy.
    again = inference.load_predictor(loading.default_model_path())
    assert again.backend == "litert" and not again.notes and copy.is_file()


def test_exports_of_the_packaged_model_go_to_the_current_folder_not_the_package(tmp_path, monkeypatch):
    weights = save_run(tmp_path / "weights", tiny_model(11))
    monkeypatch.setattr(loading, "WEIGHTS_DIR", weights)
    monkeypatch.chdir(tmp_path)
    before = sorted(path.name for path in weights.iterdir())
    result = export.export_model(loading.default_model_path(), "keras")
    assert result.path == tmp_path / "keras-fer-packaged" / "best-inference.keras"
    assert (tmp_path / "keras-fer-packaged" / "config.json").is_file()  # how to feed it goes with it
    assert sorted(path.name for path in weights.iterdir()) == before
    expected = tmp_path / "keras-fer-packaged" / "best.tflite"
    assert export.default_export_path(loading.default_model_path(), "tflite") == expected
    other = save_run(tmp_path / "run", tiny_model(12))
    assert export.default_export_path(other, "tflite") == other / "best.tflite"  # other models: beside them


@pytest.mark.parametrize("out, stem", [("sub.csv", "sub"), ("sub.csv.gz", "sub"), ("sub.v1.csv", "sub.v1"),
                                       ("dir.x/sub", "dir.x/sub"), ("sub.v2.csv.gz", "sub.v2")])
def test_metrics_files_keep_everything_of_the_name_but_its_type(out, stem):
    paths = inference.metrics_paths(out)
    assert paths == {"json": Path(f"{stem}_metrics.json"), "csv": Path(f"{stem}_confusion.csv"),
                     "png": Path(f"{stem}_confusion.png"), "calibration": Path(f"{stem}_calibration.png")}


def test_export_savedmodel_and_tflite_agree(tmp_path, demo):
    run = save_run(tmp_path / "run", tiny_model(9))
    result = export.export_model(run, "savedmodel")
    assert result.path == run / "best_savedmodel" and (result.path / "saved_model.pb").is_file()
    assert result.max_abs_diff <= 1e-4
    import tensorflow as tf

    loaded = tf.saved_model.load(str(result.path))  # keep a reference while calling it
    served = loaded.serve(tf.constant(demo.pixels.astype("float32"))).numpy()
    expected = loading.load_keras_model(run).predict(demo.pixels.astype("float32"), verbose=0)
    np.testing.assert_allclose(served, expected, atol=1e-4)
    assert stat.S_IMODE(os.stat(result.path).st_mode) == files.default_mode(folder=True)  # as mkdir makes it
    assert export.export_model(run, "savedmodel").path == result.path  # an earlier export is replaced
    # Stopped between moving the earlier export aside and moving the new one in: the earlier one is put back.
    real_replace, calls = os.replace, []

    def stopped_second(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_replace(source, target)

    before = sorted(path.name for path in result.path.iterdir())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export.os, "replace", stopped_second)
        with pytest.raises(KeyboardInterrupt):
            export.export_model(run, "savedmodel")
    assert sorted(path.name for path in result.path.iterdir()) == before
    assert not [path.name for path in run.iterdir() if path.name.startswith(".")]
    with pytest.raises(FerModelError, match="a TensorFlow SavedModel, which keras-fer does not load"):
        inference.load_predictor(result.path)  # it said "no best.keras in this folder"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("mine")
    for target in (run, tmp_path / "notes", run / "best.keras"):  # anything else is refused, and kept
        with pytest.raises(FerOptionError, match=f"{target} already exists and is not an earlier SavedModel export"):
            export.export_model(run, "savedmodel", target)
    assert (tmp_path / "notes" / "notes.txt").read_text() == "mine" and (run / "best.keras").is_file()
    (tmp_path / "empty").mkdir()  # a folder made for it
    assert (export.export_model(run, "savedmodel", tmp_path / "empty").path / "saved_model.pb").is_file()
    assert not [path.name for path in run.iterdir() if path.name.startswith(".")]
    lite = export.export_model(run, "tflite", tmp_path / "elsewhere.tflite")
    assert lite.path.is_file() and lite.max_abs_diff <= 1e-4
    predictor = inference.load_predictor(lite.path)
    np.testing.assert_allclose(predictor.probabilities(demo.pixels), loading.softmax(expected), atol=1e-4)
    huge = inference.load_predictor(lite.path, batch_size=10**11)  # padded to the faces given, not to 10**11
    np.testing.assert_allclose(huge.probabilities(demo.pixels[:5]), loading.softmax(expected[:5]), atol=1e-4)


def test_export_keras_drops_the_optimizer_state_and_keeps_the_run_config(tmp_path, demo):
    model = tiny_model(12)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(demo.pixels.astype("float32"), demo.labels, epochs=1, verbose=0)  # Adam's moments now exist
    run = save_run(tmp_path / "run", model, PRIOR)
    result = export.export_model(run, "keras")
    assert result.path == run / "best-inference.keras" and result.format == "keras" and result.max_abs_diff == 0
    with zipfile.ZipFile(run / "best.keras") as full, zipfile.ZipFile(result.path) as slim:
        assert json.loads(full.read("config.json")).get("compile_config")
        assert not json.loads(slim.read("config.json")).get("compile_config")
        assert slim.getinfo("model.weights.h5").file_size < full.getinfo("model.weights.h5").file_size
    exported = loading.load_keras_model(result.path)
    expected = loading.load_keras_model(run).predict(demo.pixels.astype("float32"), verbose=0)
    np.testing.assert_array_equal(exported.predict(demo.pixels.astype("float32"), verbose=0), expected)
    # Stopped as the model lands: its config.json is there alone, and the retry completes the pair
    # (a model without its config.json was left, and every retry refused).
    real_replace = os.replace

    def stopped_at_the_model(source, target):
        if str(target).endswith("deployed.keras"):
            raise KeyboardInterrupt
        return real_replace(source, target)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files.os, "replace", stopped_at_the_model)
        with pytest.raises(KeyboardInterrupt):
            export.export_model(run, "keras", tmp_path / "pair" / "deployed.keras")
    assert sorted(path.name for path in (tmp_path / "pair").iterdir()) == ["config.json"]
    assert export.export_model(run, "keras", tmp_path / "pair" / "deployed.keras").max_abs_diff == 0
    assert sorted(path.name for path in (tmp_path / "pair").iterdir()) == ["config.json", "deployed.keras"]
    # A killed export's hidden temporary is no other model: it refused every retry.
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / f".fer.keras.99999@{files._host_tag()}-abcdefgh.keras").write_bytes(b"half")
    assert export.export_model(run, "keras", tmp_path / "deploy" / "fer.keras").path.is_file()
    # Elsewhere, the run config goes beside it, so the copy predicts as the run does (its class prior).
    elsewhere = export.export_model(run, "keras", tmp_path / "package" / "model.keras").path
    assert json.loads((elsewhere.parent / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    corrected = inference.load_predictor(elsewhere, backend="keras")
    assert loading.class_prior(corrected.source) == pytest.approx(PRIOR)
    # An equal config there (however formatted) is fine; an earlier export is replaced, nothing else.
    (elsewhere.parent / "config.json").write_text(json.dumps(json.loads((run / "config.json").read_text())))
    assert export.export_model(run, "keras", tmp_path / "package" / "second.keras").max_abs_diff == 0
    assert export.export_model(run, "keras").path == run / "best-inference.keras"
    # `elsewhere` is this very export, under a name that does not say so: the error must not call it
    # "not an earlier export" (it did), but say which files are replaced.
    with pytest.raises(FerOptionError, match=r"already exists, and only an earlier export named \*-inference.keras"):
        export.export_model(run, "keras", elsewhere)
    with pytest.raises(FerOptionError, match="replace the model it reads"):
        export.export_model(run, "keras", run / "best.keras")
    # A config.json describes every model in its folder: never another model's, never over other models.
    other = save_run(tmp_path / "other", tiny_model(13))
    bare = tmp_path / "bare"
    bare.mkdir()
    tiny_model(14).save(bare / "model.keras")
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    tiny_model(15).save(crowded / "someone.keras")
    for source, target, message in [(run, other / "slim.keras", "describes another model"),
                                    (bare, other / "bare.keras", "describes another model"),
                                    (run, crowded / "slim.keras", "holds other models"),
                                    (run, tmp_path / "model.h5", "must end in .keras"),
                                    (run, tmp_path / "MODEL.KERAS", "must end in .keras"),
                                    (run, other, "is a folder")]:
        with pytest.raises(FerOptionError, match=message):
            export.export_model(source / "model.keras" if source == bare else source, "keras", target)
    assert sorted(path.name for path in other.iterdir()) == ["best.keras", "config.json"]
    assert sorted(path.name for path in crowded.iterdir()) == ["someone.keras"]


def test_export_keras_float16_halves_the_file_and_loads_back_in_float32(tmp_path, demo):
    import h5py
    import keras

    from keras_fer.models import build_model

    keras.utils.set_random_seed(3)
    model = build_model("fervgg", width=0.5, dense_units=64, preprocessing={"normalize": "unit"})
    run = save_run(tmp_path / "run", model)
    full = export.export_model(run, "keras")
    half = export.export_model(run, "keras-float16")
    assert half.path == run / "best-float16-inference.keras" and half.format == "keras-float16"
    assert 0 < half.max_abs_diff <= export.FLOAT16_TOLERANCE  # rounded, so not identical
    dtypes = set()
    with zipfile.ZipFile(half.path) as archive, h5py.File(archive.open("model.weights.h5"), "r") as weights:
        weights.visititems(lambda name, item: dtypes.add(str(item.dtype)) if isinstance(item, h5py.Dataset) else None)
    assert dtypes == {"float16"}
    assert half.path.stat().st_size < 0.6 * full.path.stat().st_size
    # Loaded, it computes in float32 with the rounded weights, within the tolerance of the original.
    loaded = loading.load_keras_model(half.path)
    assert {weight.dtype for weight in loaded.weights} == {"float32"}
    assert {layer.dtype_policy.name for layer in loaded.layers} == {"float32"}
    faces = demo.pixels.astype("float32")
    expected = loading.softmax(model.predict(faces, verbose=0))
    got = loading.softmax(loaded.predict(faces, verbose=0))
    np.testing.assert_allclose(got, expected, atol=export.FLOAT16_TOLERANCE)
    # ... and predict.py's fast path (a verified LiteRT copy) takes it like any model.
    predictor = inference.load_predictor(half.path)
    assert predictor.backend == "litert"
    np.testing.assert_allclose(predictor.probabilities(demo.pixels), got, atol=1e-4)


@pytest.mark.parametrize("fmt, target", [("tflite", "copy.tflite"), ("savedmodel", "copy_savedmodel"),
                                         ("keras", "copy.keras"), ("keras-float16", "copy.keras")])
def test_an_export_that_disagrees_is_not_left_behind(tmp_path, monkeypatch, fmt, target):
    run = save_run(tmp_path / "run", tiny_model(10))
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # any difference, even 0, now disagrees
    monkeypatch.setattr(export, "FLOAT16_TOLERANCE", -1.0)
    with pytest.raises(FerModelError, match="differs from the Keras model"):
        export.export_model(run, fmt, tmp_path / "out" / target)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------------------------
# Streaming submissions and metrics


def test_predict_csv_streams_in_input_order(tmp_path, keras_predictors, demo):
    ids = [f"x{i}" for i in range(len(demo))][::-1]
    path = write_fer_csv(tmp_path / "test.csv", demo.pixels, ids=ids)
    out = tmp_path / "sub.csv"
    chunks = []
    result = inference.predict_csv(path, [keras_predictors["a"]], out, chunk_rows=7, on_chunk=chunks.append)
    assert result.rows == len(demo) and not result.labelled and sum(chunks) == len(demo) and len(chunks) == 6
    with open(out) as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", "label"]
    assert [row[0] for row in rows[1:]] == ids
    expected = inference.predict_proba([keras_predictors["a"]], demo.pixels).argmax(axis=1)
    assert [int(row[1]) for row in rows[1:]] == expected.tolist()


def test_metrics_match_scikit_learn(tmp_path, keras_predictors, demo):
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    usage = np.array(["PublicTest", "PrivateTest"] * (len(demo) // 2), dtype=object)
    path = write_fer_csv(tmp_path / "fer.csv", demo.pixels, labels=demo.labels, usage=usage)
    result = inference.predict_csv(path, [keras_predictors["b"]], tmp_path / "sub.csv", chunk_rows=9, proba=True)
    probabilities = inference.predict_proba([keras_predictors["b"]], demo.pixels)
    predictions = probabilities.argmax(axis=1)
    evaluations = result.evaluations()
    assert set(evaluations) == {"all", "PublicTest", "PrivateTest"}
    for split, mask in [("all", np.ones(len(demo), bool)), ("PublicTest", usage == "PublicTest"),
                        ("PrivateTest", usage == "PrivateTest")]:
        truth, guess = demo.labels[mask], predictions[mask]
        evaluation = evaluations[split]
        labels = list(range(NUM_CLASSES))
        assert evaluation.accuracy == pytest.approx(accuracy_score(truth, guess))
        # macro-F1 over the classes that occur, as f1_score does without labels=
        assert evaluation.macro_f1 == pytest.approx(f1_score(truth, guess, average="macro", zero_division=0))
        precision, recall, _, support = precision_recall_fscore_support(truth, guess, labels=labels, zero_division=0)
        np.testing.assert_allclose(evaluation.precision, precision)
        np.testing.assert_allclose(evaluation.recall, recall)
        np.testing.assert_array_equal(evaluation.confusion, confusion_matrix(truth, guess, labels=labels))
        # the calibration counted chunk by chunk (9 rows) is that of the split's whole probabilities
        whole = calibration(truth, probabilities[mask])
        assert evaluation.calibration.ece == pytest.approx(whole.ece, abs=1e-6)
        assert evaluation.calibration.nll == pytest.approx(whole.nll, rel=1e-5)
        np.testing.assert_array_equal(evaluation.calibration.counts, whole.counts)
    paths = inference.save_evaluations(evaluations, tmp_path / "sub.csv")
    assert paths["json"].name == "sub_metrics.json" and paths["png"].stat().st_size > 1000
    assert paths["calibration"].read_bytes()[:4] == b"\x89PNG"
    saved = json.loads(paths["json"].read_text())
    assert saved["splits"]["all"]["accuracy"] == pytest.approx(evaluations["all"].accuracy)
    public = evaluations["PublicTest"].calibration
    assert saved["splits"]["PublicTest"]["calibration"]["ece"] == pytest.approx(public.ece)
    with open(paths["csv"]) as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["split", "true", *CLASS_NAMES] and len(table) == 1 + 3 * NUM_CLASSES
    with open(tmp_path / "sub.csv") as handle:
        header = next(csv.reader(handle))
    assert header == ["id", "label", *CLASS_NAMES]


def test_saved_confusion_png_has_one_panel_per_split(tmp_path, monkeypatch):
    from keras_fer import plots

    drawn = []
    real_save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda figure, path, dpi=100: drawn.append(
        [axes.get_title() for axes in figure.axes if axes.images]) or real_save(figure, path, dpi))
    matrix = np.diag([5, 1, 4, 6, 3, 2, 5]) + 1
    evaluations = {split: inference.evaluation_from_confusion(matrix) for split in ("PrivateTest", "all")}
    paths = inference.save_evaluations(evaluations, tmp_path / "sub.csv")
    assert paths["png"].name == "sub_confusion.png" and paths["png"].read_bytes()[:4] == b"\x89PNG"
    accuracy, macro_f1 = evaluations["all"].accuracy, evaluations["all"].macro_f1
    scores = f"accuracy {accuracy:.4f}, macro-F1 {macro_f1:.4f}"  # the format of training's and visualize's
    rows = int(matrix.sum())
    assert drawn == [[f"All rows: {rows} images\n{scores}", f"PrivateTest: {rows} images\n{scores}"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub_confusion.csv", "sub_confusion.png", "sub_metrics.json"]


def test_evaluation_from_confusion_with_missing_classes():
    from sklearn.metrics import f1_score, precision_score

    rng = np.random.default_rng(0)
    for _ in range(5):
        truth = rng.choice([0, 2, 3, 6], size=50)
        guess = rng.choice([0, 1, 3, 6], size=50)
        matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
        np.add.at(matrix, (truth, guess), 1)
        evaluation = inference.evaluation_from_confusion(matrix)
        labels = list(range(NUM_CLASSES))
        # macro-F1 over the classes that occur, as f1_score does without labels=
        assert evaluation.macro_f1 == pytest.approx(f1_score(truth, guess, average="macro", zero_division=0))
        np.testing.assert_allclose(evaluation.precision,
                                   precision_score(truth, guess, labels=labels, average=None, zero_division=0))


def test_malformed_row_leaves_no_partial_submission(tmp_path, keras_predictors, demo):
    path = write_fer_csv(tmp_path / "bad.csv", demo.pixels[:20])
    lines = path.read_text().splitlines()
    lines[15] = "14,1 2 3"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "sub.csv"
    out.write_text("previous\n")
    with pytest.raises(FerDataError, match="line 16"):
        inference.predict_csv(path, [keras_predictors["a"]], out, chunk_rows=4)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "sub.csv"]


def test_keras_predict_joins_batches_of_every_output():
    # predict_on_batch per batch: a model with two heads came out (4, 3, 7) for 6 faces in
    # batches of 3 instead of predict's (2, 6, 7).
    import keras

    from keras_fer.loading import keras_predict

    inputs = keras.Input((48, 48, 1))
    flat = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(7)(flat), keras.layers.Dense(7)(flat)])
    faces = np.random.default_rng(0).random((7, 48, 48, 1), np.float32)  # small logits: round-off stays small
    expected = np.asarray(model.predict(faces, verbose=0))
    for batch_size in (1, 3, 7, 256):
        np.testing.assert_allclose(keras_predict(model, faces, batch_size), expected, rtol=1e-5, atol=1e-5)
    single = keras.Model(inputs, keras.layers.Dense(7)(flat))
    np.testing.assert_allclose(keras_predict(single, faces, 3), single.predict(faces, verbose=0), rtol=1e-5, atol=1e-5)
    assert keras_predict(single, faces[:0], 3).shape == (0, 7)


def test_predict_csv_refuses_a_labelled_csv_with_a_repeated_id(tmp_path, keras_predictors, demo):
    # Its --proba output was written with the id twice, and --saved-proba then refused that file.
    path = write_fer_csv(tmp_path / "val.csv", demo.pixels[:3], labels=demo.labels[:3], ids=["7", "8", "007"])
    out = tmp_path / "val_proba.csv"
    with pytest.raises(FerDataError, match=r"val\.csv, line 4, field 'id': id '007' is id '7' again "
                                           r"\(first at line 2\): ids must be unique"):
        inference.predict_csv(path, [keras_predictors["a"]], out, proba=True)
    assert not out.exists()
    path = write_fer_csv(tmp_path / "ok.csv", demo.pixels[:3], labels=demo.labels[:3], ids=["7", "8", "9"])
    assert inference.predict_csv(path, [keras_predictors["a"]], out, proba=True).rows == 3


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_saved_probabilities_skip_blank_lines_but_not_short_rows(tmp_path, ending):
    # A --proba file with a blank last line was refused: "line 7: expected 9 fields, found 0".
    header = ",".join(["id", "label", *CLASS_NAMES])
    rows = [f"{i},{i % 7}," + ",".join("1" if c == i % 7 else "0" for c in range(NUM_CLASSES)) for i in range(5)]
    path = tmp_path / "p.csv"
    path.write_bytes(ending.join([header, *rows[:2], "", "  ", *rows[2:], "", ""]).encode())
    saved = inference.read_saved_probabilities(path)
    assert saved.ids.tolist() == ["0", "1", "2", "3", "4"]
    np.testing.assert_array_equal(saved.probabilities.argmax(axis=1), [0, 1, 2, 3, 4])
    # Rows after a blank line are named by their own line in later errors too.
    with pytest.raises(FerDataError, match=r"p\.csv, line 6, field 'id': id '2' where the input has '9'"):
        saved.take(["0", "1", "9"])
    saved.position = 0
    saved.take(["0", "1", "2"])
    with pytest.raises(FerDataError, match=r"p\.csv, line 7: has 5 rows but the input only 3"):
        saved.check_consumed()
    with pytest.raises(FerDataError, match=r"p\.csv, line 9: ends after 5 rows, but the input goes on"):
        saved.take(["3", "4", "5"])
    path.write_bytes(ending.join([header, rows[0], "", "3,3", rows[1], ""]).encode())  # a short row is no blank
    with pytest.raises(FerDataError, match=r"p\.csv, line 4: expected 9 fields, found 2"):
        inference.read_saved_probabilities(path)


def test_the_python_api_names_its_own_arguments_not_the_cli_options(tmp_path):
    # predict.py's argparse choices catch these first, so only Python callers saw '--export', '--backend'.
    for call, words in ((lambda: export.export_model(tmp_path / "none.keras", "onnx"), "fmt must be one of "
                         "tflite, savedmodel, keras, keras-float16. Received: fmt='onnx'"),
                        (lambda: inference.load_predictor(tmp_path, backend="onnx"), "backend must be one of "
                         "auto, litert, keras. Received: backend='onnx'"),
                        (lambda: inference.load_predictor(tmp_path, normalize="z"), "normalize must be one of "
                         "none, unit, image. Received: normalize='z'")):
        with pytest.raises(FerOptionError, match="^" + re.escape(words) + "$"):
            call()


def test_predict_proba_warns_about_faces_scaled_to_0_1(keras_predictors, demo):
    import warnings

    faces = demo.pixels[:4].astype(np.float32)
    with pytest.warns(UserWarning, match=r"faces look scaled to \[0, 1\].*pass the raw pixels") as caught:
        inference.predict_proba(keras_predictors["a"], faces / 255.0)
    assert caught[0].filename == __file__  # pointed at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inference.predict_proba(keras_predictors["a"], faces)


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), True])
def test_an_explicit_temperature_must_be_positive(runs, temperature):
    # -1 reversed the predicted classes and 0 or NaN gave NaN probabilities, without a word.
    with pytest.raises(FerOptionError, match=r"temperature must be a finite number > 0"):
        inference.load_predictor(runs["a"], backend="keras", temperature=temperature)


def test_prior_correction_of_an_in_memory_model_is_a_model_error():
    predictor = inference.keras_predictor(tiny_model(3))
    with pytest.raises(FerModelError, match="an in-memory model has no training run recording its class prior"):
        inference.predict_proba(predictor, np.zeros((2, 48, 48, 1)), prior_correction=True)
