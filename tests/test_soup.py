"""Model soups: weight averaging and BatchNorm re-estimation (keras_fer/soup.py, train.py --soup)."""

import json

import keras
import numpy as np
import pytest

from keras_fer.cli.train import main
from keras_fer.errors import FerModelError
from keras_fer.models import build_model
from keras_fer.soup import average_models, recalibrate_batch_norm

SMALL = dict(width=0.125, dense_units=16, preprocessing={"normalize": "unit"})


def small_fervgg(seed, **options):
    keras.utils.set_random_seed(seed)
    return build_model("fervgg", **{**SMALL, **options})


def faces(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 48, 48, 1)).astype(np.uint8)


def test_average_models_takes_the_mean_of_every_weight():
    models = [small_fervgg(seed) for seed in (1, 2, 3)]
    for model in models:  # distinct BatchNorm statistics too, as after training
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.moving_mean.assign(np.random.default_rng(len(layer.name)).normal(size=layer.moving_mean.shape))
    soup = average_models(models)
    assert soup is not models[0] and len(soup.weights) == len(models[0].weights)
    for index, variable in enumerate(soup.weights):
        expected = np.mean([np.asarray(model.weights[index]) for model in models], axis=0)
        np.testing.assert_allclose(np.asarray(variable), expected, rtol=1e-6, atol=1e-7)
    # The inputs are left as they were.
    assert not np.allclose(np.asarray(models[0].get_layer("conv1").kernel), np.asarray(soup.get_layer("conv1").kernel))


def test_average_models_refuses_models_that_do_not_match(tmp_path):
    narrow, wide = small_fervgg(0), small_fervgg(1, width=0.25)
    with pytest.raises(FerModelError, match=r"^wide\.keras: weight .*conv1.* has shape"):
        average_models([narrow, wide], names=["narrow.keras", "wide.keras"])
    with pytest.raises(FerModelError, match="at least two models"):
        average_models([narrow])
    # Weights that fit one for one but were trained on faces normalized otherwise do not average.
    image = small_fervgg(2, preprocessing={"normalize": "image"})
    with pytest.raises(FerModelError, match=r"^image\.keras: prepares its faces with normalize='image', "
                                            r"narrow\.keras with normalize='unit'"):
        average_models([narrow, image], names=["narrow.keras", "image.keras"])


def test_average_models_refuses_weight_free_options_that_differ():
    # The soup ran with the first member's settings, without a word.
    def dnn(seed, **options):
        keras.utils.set_random_seed(seed)
        return build_model("dnn", width=8, preprocessing={"normalize": "unit"}, **options)

    base = dnn(0)
    for other, words in ((dnn(1, negative_slope=0.1), r"layer dense1_act has negative_slope=0\.1, a\.keras's "
                                                       r"dense1_act 0\.3"),
                         (dnn(1, softmax=True), "has 17 layers acting at inference, a.keras has 16")):
        with pytest.raises(FerModelError, match=f"^b.keras: {words}; a soup needs models of one architecture"):
            average_models([base, other], names=["a.keras", "b.keras"])
    # Dropout passes faces through at inference, and other seeds are other runs: both average.
    assert len(average_models([base, dnn(2, dropout=0.2, input_dropout=0.0)]).weights) == len(base.weights)


def test_recalibrated_statistics_are_those_of_the_training_images():
    model = small_fervgg(0, conv_dropout=0.0, dense_dropout=0.0)
    x = faces(64).astype(np.float32)
    # Fresh statistics (mean 0, variance 1) are far from the data's: inference and training
    # mode disagree.
    assert np.abs(np.asarray(model(x, training=False)) - np.asarray(model(x, training=True))).max() > 1e-2

    # Pooled over batches of 16, the first BatchNorm's statistics are exactly those of conv1's
    # outputs over all 64 images (conv1 does not depend on any BatchNorm).
    assert recalibrate_batch_norm(model, x, batch_size=16) == 9
    conv1 = np.asarray(keras.Model(model.inputs[0], model.get_layer("conv1").output)(x))
    bn1 = model.get_layer("bn1")
    np.testing.assert_allclose(np.asarray(bn1.moving_mean), conv1.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(bn1.moving_variance), conv1.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-5)

    # In one batch of all the images, every layer's statistics are the batch's own: inference
    # mode then computes what training mode does on that batch.
    recalibrate_batch_norm(model, x, batch_size=64)
    inference = np.asarray(model(x, training=False))
    training = np.asarray(model(x, training=True))
    np.testing.assert_allclose(inference, training, atol=2e-3)


def test_recalibration_can_measure_augmented_faces():
    from keras_fer.pipeline import AugmentConfig

    model = small_fervgg(0)
    x = faces(48)

    def bn1_mean(**options):
        recalibrate_batch_norm(model, x, batch_size=16, **options)
        return np.asarray(model.get_layer("bn1").moving_mean).copy()

    plain = bn1_mean()
    shifted = bn1_mean(augment=AugmentConfig.parse("shift,rotate"), seed=3)
    assert not np.allclose(plain, shifted, rtol=1e-3)
    np.testing.assert_allclose(bn1_mean(augment=AugmentConfig.parse("shift,rotate"), seed=3), shifted, rtol=1e-5)
    np.testing.assert_allclose(bn1_mean(augment=AugmentConfig.parse("none")), plain, rtol=1e-5)


def test_train_soup_writes_a_validated_run_directory(tmp_path, capsys, monkeypatch):
    paths = []
    for seed in (1, 2):
        path = tmp_path / f"tuned-{seed}.keras"
        small_fervgg(seed).save(path)
        paths.append(path)
    # The first ingredient's config.json is the soup's starting point, but not its temperature
    # (keras_fer.calibrate's, fitted on that ingredient's logits): a soup inherited 20.0 from one.
    (tmp_path / "config.json").write_text(json.dumps({"arch": "fervgg", "normalize": "unit", "temperature": 20.0,
                                                       "tta_temperatures": {"flip": 3.0}}))
    out = tmp_path / "soup"
    code = main(["--soup", *map(str, paths), "--demo-faces", "140", "--max-images", "64", "--out", str(out),
                 "--verbose", "0"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "soup, BatchNorm statistics re-estimated on 64 training images" in printed
    assert f"run directory: {out}" in printed
    for name in ("best.keras", "config.json", "metrics.json", "confusion.png", "summary.txt", "validation.npz"):
        assert (out / name).is_file(), name
    soup = keras.saving.load_model(out / "best.keras", compile=False, safe_mode=True)
    donors = [keras.saving.load_model(path, compile=False) for path in paths]
    expected = np.mean([np.asarray(d.get_layer("conv5").kernel) for d in donors], axis=0)
    np.testing.assert_allclose(np.asarray(soup.get_layer("conv5").kernel), expected, rtol=1e-6)
    # The statistics were measured again, not averaged.
    averaged = np.mean([np.asarray(d.get_layer("bn5").moving_mean) for d in donors], axis=0)
    assert not np.allclose(np.asarray(soup.get_layer("bn5").moving_mean), averaged)
    config = json.loads((out / "config.json").read_text())
    assert [item["model"] for item in config["soup"]["ingredients"]] == [str(p) for p in paths]
    assert config["soup"]["recalibrated_on"] == 64 and config["class_names"][3] == "Happy"
    assert config["arch"] == "fervgg" and not {"temperature", "tta_temperatures"} & set(config)
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"{metrics['accuracy']:.4f}  soup, BatchNorm statistics re-estimated" in printed

    # The soup is a run directory like any other: prediction takes it, with its class prior.
    from keras_fer.inference import load_predictor, predict_proba

    probabilities = predict_proba([load_predictor(out, backend="keras")], faces(5), prior_correction=True)
    assert probabilities.shape == (5, 7) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)

    # A second soup into the same folder is refused; nothing there changes.
    before = (out / "best.keras").read_bytes()
    assert main(["--soup", *map(str, paths), "--demo-faces", "140", "--out", str(out), "--verbose", "0"]) == 2
    assert "already holds a model" in capsys.readouterr().err
    assert (out / "best.keras").read_bytes() == before
    # A folder of the user's files is not replaced by a soup's config.json, summary.txt, metrics.json.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.txt").write_text("my notes")
    assert main(["--soup", *map(str, paths), "--demo-faces", "140", "--out", str(mine), "--verbose", "0"]) == 2
    assert "holds files that are not an earlier soup's (summary.txt)" in capsys.readouterr().err
    assert (mine / "summary.txt").read_text() == "my notes"
    # Nor does training go into it: a soup's folder looked like a run killed before its first epoch.
    assert main(["--arch", "cnn4", "--demo-faces", "140", "--epochs", "1", "--out", str(out), "--verbose", "0"]) == 2
    assert "choose a new or empty folder for --out" in capsys.readouterr().err
    assert (out / "best.keras").read_bytes() == before
    # Stopped while its report is written (Ctrl-C, a full disk): no best.keras, so the retry works.
    import keras_fer.training

    real_finish = keras_fer.training.finish_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_fer.training, "finish_run", interrupted)
    again = tmp_path / "again"
    assert main(["--soup", *map(str, paths), "--demo-faces", "140", "--out", str(again), "--verbose", "0"]) == 130
    assert not (again / "best.keras").exists()
    monkeypatch.setattr(keras_fer.training, "finish_run", real_finish)
    capsys.readouterr()
    assert main(["--soup", *map(str, paths), "--demo-faces", "140", "--out", str(again), "--verbose", "0"]) == 0
    assert (again / "best.keras").is_file() and (again / "metrics.json").is_file()
    printed = capsys.readouterr().out  # each ingredient by its name, not by the earlier soup's file names
    assert all(f"  {path}\n" in printed for path in paths) and "  config.json\n" not in printed
    # A file where the folder would go fails before the members load.
    (tmp_path / "afile").write_text("x")
    assert main(["--soup", *map(str, paths), "--demo-faces", "140", "--out", str(tmp_path / "afile" / "soup"),
                 "--verbose", "0"]) == 2
    assert f"--out {tmp_path / 'afile' / 'soup'}: {tmp_path / 'afile'} is a file" in capsys.readouterr().err


def test_a_soup_of_runs_that_started_apart_gets_a_note(tmp_path, capsys):
    # Runs trained from different starts do not average; a soup of them was made without a word.
    parent = tmp_path / "parent" / "best.keras"
    parent.parent.mkdir()
    small_fervgg(0).save(parent)
    (parent.parent / "config.json").write_text(json.dumps({"options": {"val": "fraction:0.1", "seed": 0}}))
    runs = []
    for name, seed, started in (("child-a", 1, parent), ("child-b", 2, parent), ("apart", 3, None)):
        run = tmp_path / name
        run.mkdir()
        small_fervgg(seed).save(run / "best.keras")
        config = {"options": {"val": "fraction:0.1", "seed": seed, "split_seed": 0, "demo_faces": 210,
                              "out": str(run), "resume": True, "arch": "fervgg"}, "data": None}
        if started is not None:
            config["init_from"] = {"model": str(started), "run": str(started.parent), "epoch": 1}
        (run / "config.json").write_text(json.dumps(config))
        runs.append(str(run))

    def soup(*members):
        out = tmp_path / f"soup-{len(list(tmp_path.glob('soup-*')))}"
        assert main(["--soup", *members, "--demo-faces", "140", "--max-images", "32", "--out", str(out),
                     "--verbose", "0"]) == 0
        return capsys.readouterr().err

    assert "did not start from one model" not in soup(runs[0], runs[1], str(parent.parent))  # a parent and its two
    err = soup(runs[0], runs[2])
    assert f"note: these models did not start from one model ({runs[0]} from {parent}; {runs[2]} from" in err
    # The soup's config.json records the data it was validated on and its own folder, not its
    # first ingredient's (210 demo faces, that run's folder, --resume): visualize rebuilt those.
    from keras_fer.synthetic import generate

    config = json.loads((tmp_path / "soup-1" / "config.json").read_text())
    options = config["options"]
    assert (options["demo_faces"], options["max_images"], options["resume"]) == (140, 32, False)
    assert options["out"] == str(tmp_path / "soup-1") and options["arch"] == "fervgg"
    assert (options["val"], options["split_seed"]) == ("fraction:0.1", 0) and config["data"] is None
    assert config["data_fingerprint"] == generate(140, seed=options["seed"]).images.fingerprint()


def test_train_soup_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    narrow, wide = tmp_path / "narrow.keras", tmp_path / "wide.keras"
    small_fervgg(0).save(narrow)
    small_fervgg(1, width=0.25).save(wide)

    def error(*argv):
        out = tmp_path / "out"
        code = main([*argv, "--demo-faces", "70", "--out", str(out), "--verbose", "0"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
        assert not out.exists()
        return lines[0]

    assert str(wide) in error("--soup", str(narrow), str(wide))
    assert "no such model file" in error("--soup", str(narrow), str(tmp_path / "missing.keras"))
    assert "at least two models" in error("--soup", str(narrow))
    assert "drop --resume" in error("--soup", str(narrow), str(narrow), "--resume")
    # Training options were accepted and ignored; --max-images -1 measured BatchNorm on no image.
    assert "drop --lr. Received: lr=-1.0" in error("--soup", str(narrow), str(wide), "--lr", "-1")
    assert "drop --class-weight" in error("--soup", str(narrow), str(wide), "--class-weight")
    assert "drop --epochs" in error("--soup", str(narrow), str(wide), "--epochs", "0")
    assert "drop --batch-size" in error("--soup", str(narrow), str(wide), "--batch-size", "8")
    assert "--max-images must be an integer >= 1" in error("--soup", str(narrow), str(wide), "--max-images", "-1")
    # A model given twice, by one path or two, is refused before anything is loaded.
    assert "the same model as" in error("--soup", str(narrow), str(wide), str(narrow))
    assert "the same model as" in error("--soup", str(narrow), str(tmp_path / "." / "narrow.keras"))

    # Runs validated on different splits cannot make a validated soup.
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"run-{seed}"
        run.mkdir()
        small_fervgg(seed).save(run / "best.keras")
        (run / "config.json").write_text(json.dumps({"options": {"val": "fraction:0.1", "seed": seed}}))
        runs.append(str(run))
    assert "different splits" in (text := error("--soup", *runs)) and "train them with one --split-seed" in text
    # ... and a soup of runs is validated on their split, not on another one.
    (tmp_path / "run-1" / "config.json").write_text(json.dumps({"options": {"val": "fraction:0.1", "seed": 0}}))
    assert "must be too" in error("--soup", *runs, "--val", "fraction:0.2")


def test_runs_on_the_same_rows_are_one_split_however_spelled():
    # --val usage ignores the seed and fraction:0.10 is fraction:0.1: soups of such runs were refused.
    from pathlib import Path

    from keras_fer.errors import FerOptionError
    from keras_fer.loading import ModelSource, validation_split

    def source(name, **options):
        return ModelSource(Path(name) / "best.keras", {"options": options}, Path(name) / "config.json")

    names = ["a", "b"]
    assert validation_split([source("a", val="usage", seed=1), source("b", val="usage", seed=2)], names, "") == (
        "usage", 1)
    assert validation_split([source("a", val="fraction:0.10", split_seed=0), source("b", val="fraction:0.1", seed=0)],
                            names, "") == ("fraction:0.10", 0)
    with pytest.raises(FerOptionError, match=r"different splits \(a: fraction:0.1 seed 1; b: fraction:0.1 seed 2\)"):
        validation_split([source("a", val="fraction:0.1", seed=1), source("b", val="fraction:0.1", seed=2)], names, "")
    with pytest.raises(FerOptionError, match="different splits"):
        validation_split([source("a", val="first:100", seed=0), source("b", val="first:200", seed=0)], names, "")
