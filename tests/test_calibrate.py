"""Temperature scaling: keras_fer.metrics' fit, keras_fer.calibrate's command, and the
temperature a model's config.json records, applied by every predictor."""

import json
from pathlib import Path

import numpy as np
import pytest

from keras_fer import inference
from keras_fer.calibrate import main
from keras_fer.errors import FerModelError
from keras_fer.metrics import (
    calibration,
    cross_fitted_calibration,
    fit_temperature,
    scale_temperature,
    scaled_views,
)
from keras_fer.synthetic import generate

from conftest import save_run, tiny_model

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def honest(count, seed=0, classes=7):
    """Labels and the probabilities of a model calibrated by construction: labels drawn from them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(count, classes)) * 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in probabilities])
    return labels, probabilities


@pytest.mark.parametrize("distortion", [0.5, 1.0, 2.0])
def test_fit_temperature_undoes_a_known_distortion(distortion):
    labels, probabilities = honest(6000)
    distorted = scale_temperature(probabilities, distortion)  # over-confident below 1, under above
    assert fit_temperature(labels, distorted) == pytest.approx(1 / distortion, rel=0.08)
    fixed = scale_temperature(distorted, fit_temperature(labels, distorted))
    assert calibration(labels, fixed).ece < 0.03
    assert (fixed.argmax(axis=1) == distorted.argmax(axis=1)).all()  # the classes never change
    if distortion != 1.0:  # scaled on rows it was not fitted on, it still helps
        assert cross_fitted_calibration(labels, distorted).ece < calibration(labels, distorted).ece / 2


def test_scale_temperature_is_dividing_the_logits():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = np.exp(logits / 1.7) / np.exp(logits / 1.7).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scale_temperature(probabilities, 1.7), expected, rtol=1e-9)
    np.testing.assert_allclose(scale_temperature(probabilities, 1.0), probabilities, rtol=1e-9)
    with pytest.raises(ValueError, match="probabilities must be"):
        fit_temperature([0, 1], probabilities[:1])


def test_fit_temperature_of_tta_views_minimizes_the_nll_of_their_scaled_average():
    # Averaging views softens: the views' temperature is fitted for the average of scaled views.
    labels, probabilities = honest(3000, seed=3)
    rng = np.random.default_rng(4)
    noisy = np.log(probabilities)[None] + rng.normal(scale=1.0, size=(4, *probabilities.shape))
    views = scale_temperature(np.exp(noisy) / np.exp(noisy).sum(axis=2, keepdims=True), 2.0)  # under-confident
    fitted = fit_temperature(labels, views)

    def nll(temperature):
        averaged = scaled_views(views, temperature)
        return -np.mean(np.log(averaged[np.arange(len(labels)), labels]))

    grid = np.exp(np.linspace(np.log(0.3), np.log(1.2), 141))  # 1% steps
    assert fitted == pytest.approx(grid[np.argmin([nll(t) for t in grid])], rel=0.011)
    assert fitted != pytest.approx(fit_temperature(labels, views.mean(axis=0)), rel=0.005)  # not the average's T
    assert fit_temperature(labels, probabilities[None]) == pytest.approx(fit_temperature(labels, probabilities))
    np.testing.assert_allclose(scaled_views(views, 1.3), scale_temperature(views, 1.3).mean(axis=0))
    assert cross_fitted_calibration(labels, views).ece < calibration(labels, views.mean(axis=0)).ece / 2


@pytest.fixture
def run(tmp_path):
    """A run directory with a validation.npz of its own model's over-confident probabilities."""
    folder = save_run(tmp_path / "run", tiny_model(4))
    faces = generate(70, seed=5).images
    predictor = inference.load_predictor(folder, backend="keras")
    probabilities = predictor.probabilities(faces.pixels)
    rng = np.random.default_rng(1)
    labels = np.where(rng.random(len(faces)) < 0.5, probabilities.argmax(axis=1), rng.integers(0, 7, len(faces)))
    np.savez(folder / "validation.npz", labels=labels, probabilities=probabilities, ids=faces.ids.astype(str))
    return folder, faces, labels, probabilities


def test_calibrate_records_the_temperature_every_predictor_applies(run, capsys):
    folder, faces, labels, probabilities = run
    config_before = json.loads((folder / "config.json").read_text())
    assert main([str(folder), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    expected = fit_temperature(labels, probabilities)
    assert f"temperature {expected:.3f}: ECE " in printed and "--dry-run: nothing written" in printed
    assert f"as it is: ECE {calibration(labels, probabilities).ece:.4f}" in printed
    assert json.loads((folder / "config.json").read_text()) == config_before

    assert main([str(folder)]) == 0
    assert f"wrote \"temperature\": {expected:.6g} into {folder / 'config.json'}" in capsys.readouterr().out
    config = json.loads((folder / "config.json").read_text())
    assert config == {**config_before, "temperature": pytest.approx(expected, abs=1e-6)}
    for backend in ("keras", "auto"):  # auto: the LiteRT copy, where this machine has LiteRT
        predictor = inference.load_predictor(folder, backend=backend)
        assert predictor.temperature == pytest.approx(expected, abs=1e-6)
        np.testing.assert_allclose(predictor.probabilities(faces.pixels),
                                   scale_temperature(probabilities, config["temperature"]), atol=2e-5)
    # Fitted again, it starts from the model's own probabilities, not from the scaled ones.
    assert main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"temperature {expected:.3f}" in out and f"(it recorded {config['temperature']!r})" in out
    # visualize.py calibration draws validation.npz (the model's own) and says what the temperature gives.
    from keras_fer.cli.visualize import main as visualize

    assert visualize(["calibration", str(folder), "--out", str(folder.parent / "figures")]) == 0
    scaled = calibration(labels, scale_temperature(probabilities, config["temperature"]))
    assert (f"with the temperature {config['temperature']:g} its config.json records (what predict.py applies): "
            f"ECE {scaled.ece:.4f}") in capsys.readouterr().out


def test_calibrate_on_labelled_data_and_its_refusals(run, tmp_path, capsys):
    from test_inference import write_fer_csv

    folder, faces, labels, probabilities = run
    data = write_fer_csv(tmp_path / "val.csv", faces.pixels, labels=labels)
    assert main([str(folder / "best.keras"), "--data", str(data), "--dry-run", "--backend", "keras"]) == 0
    assert f"fitted on {data} (70 rows)" in capsys.readouterr().out
    # The data it was trained on is refused; unlabelled data too; a bare model file has nowhere to keep it.
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "data": str(data)}))
    assert main([str(folder), "--data", str(data)]) == 2
    assert "the model was trained on this data" in capsys.readouterr().err
    # ... by another path or copy too: the config records the training faces' fingerprint.
    from keras_fer.data import read

    copy = tmp_path / "copy.csv"
    copy.write_bytes(data.read_bytes())
    (folder / "config.json").write_text(json.dumps({**config, "data": "elsewhere/train.csv",
                                                    "data_fingerprint": read(data).fingerprint()}))
    assert main([str(folder), "--data", str(copy), "--backend", "keras"]) == 2
    assert f"error: {copy}: the model was trained on these faces (its config.json records" in capsys.readouterr().err
    # ... and its training split written out (data split --out-train), or most of it: the split is rebuilt.
    from keras_fer.data import main as data_main

    whole = write_fer_csv(tmp_path / "whole.csv", generate(200, seed=8).images.pixels,
                          labels=np.arange(200) % 7)
    (folder / "config.json").write_text(json.dumps({**config, "data": str(whole),
                                                    "data_fingerprint": read(whole).fingerprint(),
                                                    "options": {"val": "fraction:0.5", "split_seed": 3}}))
    assert data_main(["split", str(whole), "--val", "fraction:0.5", "--split-seed", "3", "--out-val",
                      str(tmp_path / "v.csv"), "--out-train", str(tmp_path / "t.csv")]) == 0
    capsys.readouterr()
    assert main([str(folder), "--data", str(tmp_path / "t.csv"), "--backend", "keras"]) == 2
    rows = len(read(tmp_path / "t.csv"))
    assert (f"error: {tmp_path / 't.csv'}: the model was trained on {rows} of these {rows} faces (its training split "
            f"of {whole}, rebuilt as its config.json records): a temperature fitted on faces it has seen makes it "
            f"over-confident on new ones; give its validation split (python -m keras_fer.data split {whole} "
            "--out-val val.csv.gz") in capsys.readouterr().err
    assert main([str(folder), "--data", str(tmp_path / "v.csv"), "--backend", "keras", "--dry-run"]) == 0  # held out
    (folder / "config.json").write_text(json.dumps(config))
    unlabelled = write_fer_csv(tmp_path / "test.csv", faces.pixels)
    assert main([str(folder), "--data", str(unlabelled)]) == 2
    assert f"error: {unlabelled}: has no labels" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    tiny_model(6).save(bare / "model.keras")
    assert main([str(bare / "model.keras")]) == 2
    assert "no validation.npz beside it to fit the temperature on: give --data" in capsys.readouterr().err
    assert main([str(bare / "model.keras"), "--data", str(data), "--backend", "keras"]) == 2
    assert "no config.json beside it, where the temperature is kept" in capsys.readouterr().err
    assert sorted(path.name for path in bare.iterdir()) == ["model.keras"]
    assert main([str(folder), "--data", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: no such file or folder" in capsys.readouterr().err


@pytest.mark.parametrize("value", [0, -1.5, "2", None, float("nan"), True, 10**400])
def test_a_bad_recorded_temperature_is_a_model_error_naming_the_config(tmp_path, value):
    folder = save_run(tmp_path / "run", tiny_model(3))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "temperature": value}))
    with pytest.raises(FerModelError, match=r"config.json: \"temperature\" must be a positive number"):
        inference.load_predictor(folder, backend="keras")


def test_calibrate_refuses_what_it_cannot_fit_or_write(run, tmp_path, capsys):
    from test_inference import write_fer_csv

    folder, faces, labels, probabilities = run
    # Another model file of the run: validation.npz holds best.keras' probabilities, not its own.
    tiny_model(8).save(folder / "last-0002.keras")
    assert main([str(folder / "last-0002.keras")]) == 2
    assert "validation.npz holds best.keras' probabilities, not this file's" in capsys.readouterr().err
    # Too few rows; rows that push the temperature to the end of its range (every prediction right).
    few = tmp_path / "few"
    save_run(few, tiny_model(4))
    np.savez(few / "validation.npz", labels=labels[:30], probabilities=probabilities[:30],
             ids=faces.ids[:30].astype(str))
    assert main([str(few)]) == 2
    assert "30 labelled rows are too few to fit a temperature (at least 50" in capsys.readouterr().err
    np.savez(few / "validation.npz", labels=probabilities.argmax(axis=1), probabilities=probabilities,
             ids=faces.ids.astype(str))
    before = (few / "config.json").read_text()
    assert main([str(few)]) == 2
    assert "sits at the end of the range searched (0.05-20.0)" in capsys.readouterr().err
    assert (few / "config.json").read_text() == before
    # The packaged model's config is inside the installed package: --dry-run only.
    from keras_fer.loading import default_model_path

    packaged_config = default_model_path().parent / "config.json"
    kept = packaged_config.read_bytes()
    data = write_fer_csv(tmp_path / "val.csv", faces.pixels, labels=labels)
    assert main(["packaged", "--data", str(data), "--backend", "keras"]) == 2
    assert "the packaged model's config, inside the installed package: not written" in capsys.readouterr().err
    assert packaged_config.read_bytes() == kept
    # An invalid recorded temperature stops predictions, but calibrate replaces it.
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "temperature": "0.8"}))
    from keras_fer.cli.visualize import main as visualize

    assert visualize(["calibration", str(folder), "--out", str(tmp_path / "figures")]) == 2
    assert "\"temperature\" must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "figures").exists()  # refused before the figure, not after
    assert main([str(folder)]) == 0
    assert "(it recorded '0.8')" in capsys.readouterr().out
    assert isinstance(json.loads((folder / "config.json").read_text())["temperature"], float)


def test_exports_away_from_the_config_keep_the_temperature(tmp_path):
    from keras_fer import export
    from keras_fer.export import litert_available

    folder = save_run(tmp_path / "run", tiny_model(4))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "temperature": 2.5, "tta_temperatures": {"crops": 0.5}}))
    faces = generate(14, seed=5).images.pixels
    own = inference.load_predictor(folder, backend="keras", temperature=1.0).probabilities(faces)
    saved = export.export_model(folder, "savedmodel", tmp_path / "served")
    assert json.loads((saved.path / "keras_fer.json").read_text())["temperature"] == 2.5
    if not litert_available():
        return
    lite = export.export_model(folder, "tflite", tmp_path / "elsewhere" / "model.tflite")
    predictor = inference.load_predictor(lite.path)  # no config.json beside it: the sidecar's temperature
    assert predictor.temperature == 2.5 and predictor.temperature_for("crops") == 0.5
    np.testing.assert_allclose(predictor.probabilities(faces), scale_temperature(own, 2.5), atol=1e-4)
    # A config.json beside a .tflite governs: a run resumed after calibrating has dropped it there.
    (tmp_path / "elsewhere" / "config.json").write_text(json.dumps(config))
    assert inference.load_predictor(lite.path).temperature == 1.0


def test_a_sidecar_keeps_each_valid_record():
    # A broken "tta_temperatures" made the sidecar drop a valid "temperature" too.
    from pathlib import Path

    from keras_fer.export import _recorded_temperatures
    from keras_fer.loading import ModelSource

    def source(**config):
        return ModelSource(Path("run/best.keras"), config, Path("run/config.json"))

    assert _recorded_temperatures(source(temperature=0.8, tta_temperatures={"crops": "x"}), strict=False) == {
        "temperature": 0.8, "tta_temperatures": {}}
    assert _recorded_temperatures(source(temperature=-1, tta_temperatures={"crops": 0.7}), strict=False) == {
        "temperature": None, "tta_temperatures": {"crops": 0.7}}
    with pytest.raises(FerModelError, match="tta_temperatures"):
        _recorded_temperatures(source(temperature=0.8, tta_temperatures={"crops": "x"}))


def test_an_invalid_recorded_temperature_leaves_no_litert_copy_without_its_record(run, tmp_path, capsys):
    # The .tflite was renamed into place before its sidecar was built, and building it checked the
    # temperature: the copy stayed without a record, and later exports refused it as foreign.
    from test_inference import write_fer_csv

    from keras_fer.export import litert_available

    if not litert_available():
        pytest.skip("ai-edge-litert is not installed")
    folder, faces, labels, _ = run
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "temperature": -1}))
    data = write_fer_csv(tmp_path / "val.csv", faces.pixels, labels=labels)
    assert main([str(folder), "--data", str(data), "--backend", "litert", "--dry-run"]) == 0  # calibrate replaces it
    capsys.readouterr()
    sidecar = json.loads((folder / "best.tflite.json").read_text())
    assert sidecar["temperature"] is None and sidecar["max_abs_diff"] is not None
    from keras_fer.cli.predict import main as predict

    assert predict(["--model", str(folder), "--export", "tflite"]) == 0  # the copy is keras-fer's own
    assert "\"temperature\" must be a positive number" not in capsys.readouterr().err
    # Copied away from its config, a copy with no recorded temperature predicts with none.
    away = tmp_path / "away"
    away.mkdir()
    for name in ("best.tflite", "best.tflite.json"):
        (away / name).write_bytes((folder / name).read_bytes())
    assert inference.load_predictor(away / "best.tflite").temperature == 1.0


def test_figures_show_the_probabilities_predict_gives(run):
    # visualize.py titled a face with the model's own softmax (packaged: 0.57) where predict.py,
    # with the recorded temperature, said 0.65.
    from keras_fer import report

    folder, faces, labels, probabilities = run
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "temperature": 0.5}))
    model = report.load_model(folder)
    assert model.fer_temperature == 0.5
    shown = report.class_probabilities(model, faces.pixels[:3].astype(np.float32))
    expected = inference.load_predictor(folder, backend="keras").probabilities(faces.pixels[:3])
    np.testing.assert_allclose(shown, expected, atol=1e-5)
    pick = report.pick_row(report.Faces(faces, None, "demo"), 0)
    figure = report.explanation_figure(model, [pick], "saliency")
    top = int(expected[0].argmax())
    assert f"{expected[0, top]:.2f}" in figure.axes[0].get_ylabel()  # the row's title


def test_predict_temperature_option_overrides_the_recorded_one(run, tmp_path, capsys):
    from test_inference import write_fer_csv

    from keras_fer.cli.predict import main as predict

    folder, faces, labels, probabilities = run
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "temperature": 3.0}))
    data = write_fer_csv(tmp_path / "val.csv", faces.pixels, labels=labels)
    read = lambda path: np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(2, 9))  # noqa: E731
    for given, expected in ((None, scale_temperature(probabilities, 3.0)), ("1", probabilities),
                            ("0.5", scale_temperature(probabilities, 0.5))):
        out = tmp_path / f"out-{given}.csv"
        argv = [str(data), "--model", str(folder), "--proba", "--backend", "keras", "--out", str(out)]
        assert predict(argv + (["--temperature", given] if given else [])) == 0
        np.testing.assert_allclose(read(out), expected, atol=2e-6)
    for bad in ("0", "-1", "nan"):
        assert predict([str(data), "--model", str(folder), "--temperature", bad, "--out", str(tmp_path / "x.csv")]) == 2
        assert "--temperature must be a finite number > 0" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_calibrate_tta_records_a_temperature_that_predictions_with_that_tta_apply(run, tmp_path, capsys):
    from test_inference import write_fer_csv

    from keras_fer.cli.predict import main as predict
    from keras_fer.export import export_model

    folder, faces, labels, _ = run
    data = write_fer_csv(tmp_path / "val.csv", faces.pixels, labels=labels)
    assert main([str(folder), "--tta", "crops"]) == 2  # validation.npz has no TTA
    assert "--tta crops needs --data: the run's validation.npz holds its probabilities without TTA" in (
        capsys.readouterr().err)
    config = json.loads((folder / "config.json").read_text())
    # "temperature" 0.5 over-sharpens: the crops temperature is weighed against it (what crops would use without one)
    (folder / "config.json").write_text(json.dumps({**config, "temperature": 0.5, "tta_temperatures": {"flip": "x"}}))
    assert main([str(folder), "--data", str(data), "--tta", "crops", "--backend", "keras"]) == 0
    printed = capsys.readouterr().out
    assert f"fitted on {data} (70 rows, --tta crops: 10 views each)" in printed
    recorded = json.loads((folder / "config.json").read_text())
    assert recorded["temperature"] == 0.5 and set(recorded["tta_temperatures"]) == {"crops"}  # the invalid flip goes
    crops = recorded["tta_temperatures"]["crops"]
    assert f'wrote "tta_temperatures": {{"crops": {crops:.6g}}}' in printed and "with --tta crops now" in printed
    own = inference.load_predictor(folder, backend="keras", temperature=1.0)
    views = np.stack([own.probabilities(view) for view in inference.tta_views(faces.pixels, "crops")])
    assert crops == pytest.approx(fit_temperature(labels, views), abs=1e-5)
    # Each TTA mode's predictions divide the logits by its own temperature; --temperature overrides them all.
    predictor = inference.load_predictor(folder, backend="keras")
    assert [predictor.temperature_for(mode) for mode in ("none", "flip", "crops")] == [0.5, 0.5, crops]
    np.testing.assert_allclose(inference.predict_proba(predictor, faces.pixels, "crops"),
                               scaled_views(views, crops), atol=1e-6)
    flips = np.stack([own.probabilities(view) for view in inference.tta_views(faces.pixels, "flip")])
    np.testing.assert_allclose(inference.predict_proba(predictor, faces.pixels, "flip"), scaled_views(flips, 0.5),
                               atol=1e-6)
    read = lambda path: np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(2, 9))  # noqa: E731
    argv = [str(data), "--model", str(folder), "--proba", "--backend", "keras", "--tta", "crops"]
    assert predict([*argv, "--out", str(tmp_path / "a.csv")]) == 0
    np.testing.assert_allclose(read(tmp_path / "a.csv"), scaled_views(views, crops), atol=2e-6)
    assert predict([*argv, "--temperature", "2", "--out", str(tmp_path / "b.csv")]) == 0
    np.testing.assert_allclose(read(tmp_path / "b.csv"), scaled_views(views, 2.0), atol=2e-6)
    # A second mode joins the first; exports away from the config keep both.
    assert main([str(folder), "--data", str(data), "--tta", "flip", "--backend", "keras"]) == 0
    capsys.readouterr()
    recorded = json.loads((folder / "config.json").read_text())["tta_temperatures"]
    assert set(recorded) == {"flip", "crops"} and recorded["crops"] == crops
    saved = export_model(folder, "savedmodel", tmp_path / "served")
    assert json.loads((saved.path / "keras_fer.json").read_text())["tta_temperatures"] == recorded
    # A bad record stops predictions with one line naming the config.
    (folder / "config.json").write_text(json.dumps({**config, "tta_temperatures": {"ten-crop": 0.7}}))
    with pytest.raises(FerModelError, match=r"config.json: \"tta_temperatures\" must map flip and crops to positive"):
        inference.load_predictor(folder, backend="keras")


def test_a_temperature_that_does_not_help_is_not_written(tmp_path, capsys, monkeypatch):
    # A calibrated model's fitted temperature only follows its rows' noise: calibrate wrote one
    # that raised the ECE on rows it was not fitted on (a soup: 0.0807 -> 0.0837).
    folder = save_run(tmp_path / "run", tiny_model(3))
    labels, probabilities = honest(2000, seed=0)  # calibrated by construction
    assert cross_fitted_calibration(labels, probabilities).ece > calibration(labels, probabilities).ece
    np.savez(folder / "validation.npz", labels=labels, probabilities=probabilities,
             ids=np.arange(len(labels)).astype(str))
    before = (folder / "config.json").read_bytes()
    assert main([str(folder)]) == 0
    assert "not written: on rows it was not fitted on, the temperature does not lower the ECE" in (
        capsys.readouterr().out)
    assert (folder / "config.json").read_bytes() == before
    # A temperature recorded before (even an invalid one) would stay in force: it is taken out.
    config = json.loads(before)
    for recorded in (1.6, -1):
        (folder / "config.json").write_text(json.dumps({**config, "temperature": recorded}))
        assert main([str(folder)]) == 0
        assert f"removed the temperature it recorded ({recorded!r})" in capsys.readouterr().out
        assert json.loads((folder / "config.json").read_text()) == config
    # A read-only config keeps the one recorded in force, and the error says so (not "not written").
    import os

    (folder / "config.json").write_text(json.dumps({**config, "temperature": 1.6}))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: Path(path).name != "config.json"
                        and real_access(path, mode, *a, **k))
    assert main([str(folder)]) == 2
    assert "read-only: the temperature it records (1.6) could not be taken out and is still used" in (
        capsys.readouterr().err)


def test_a_tta_temperature_is_weighed_against_the_temperature_its_predictions_fall_back_to(tmp_path, capsys,
                                                                                          monkeypatch):
    # Without a record of its own, a TTA mode's predictions use "temperature", not the own softmax:
    # calibrate compared with the own softmax, took out a helpful record and said "own softmax".
    import keras_fer.calibrate

    folder = save_run(tmp_path / "run", tiny_model(3))
    labels, probabilities = honest(2000, seed=1)  # calibrated by construction: T = 1 is right
    views = np.stack([probabilities, probabilities])  # two views, as --tta flip gives
    monkeypatch.setattr(keras_fer.calibrate, "_predicted", lambda *args: (labels, views, "val.csv (2,000 rows)"))
    data = tmp_path / "val.csv"
    data.write_text("label,pixels\n")  # read by the stand-in above, not by calibrate
    config = json.loads((folder / "config.json").read_text())
    # "temperature" 0.5 over-sharpens: a fitted flip temperature near 1 helps against it, and is written.
    (folder / "config.json").write_text(json.dumps({**config, "temperature": 0.5, "tta_temperatures": {"flip": 0.9}}))
    assert main([str(folder), "--data", str(data), "--tta", "flip"]) == 0
    out = capsys.readouterr().out
    assert f"at its \"temperature\" 0.500: ECE {calibration(labels, scaled_views(views, 0.5)).ece:.4f}" in out
    flip = json.loads((folder / "config.json").read_text())["tta_temperatures"]["flip"]
    assert abs(flip - 1) < 0.1 and "wrote \"tta_temperatures\"" in out
    # Against a "temperature" as good as the fit, the flip record is taken out, and the message says what is used.
    (folder / "config.json").write_text(json.dumps({**config, "temperature": 1.001, "tta_temperatures": {"flip": 0.9}}))
    assert main([str(folder), "--data", str(data), "--tta", "flip"]) == 0
    out = capsys.readouterr().out
    assert "removed the temperature it recorded (0.9)" in out and "--tta flip use its \"temperature\" (1.001)" in out
    assert json.loads((folder / "config.json").read_text()) == {**config, "temperature": 1.001}
