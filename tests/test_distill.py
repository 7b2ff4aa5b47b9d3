"""Knowledge distillation (keras_fer/distill.py, train.py --teacher)."""

import json
import math

import numpy as np
import pytest

from keras_fer.cli.train import main
from keras_fer.distill import soft_targets, soften
from keras_fer.errors import FerOptionError
from keras_fer.files import file_sha256
from keras_fer.pipeline import make_dataset
from keras_fer.training import read_history

from conftest import tiny_model

STUDENT = ["--arch", "fervgg", "--model-option", "width=0.125", "--model-option", "dense_units=16",
           "--demo-faces", "140", "--epochs", "1", "--batch-size", "32", "--verbose", "0"]


def test_soften_flattens_and_keeps_the_order():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]])
    np.testing.assert_allclose(soften(probabilities, 1.0), probabilities)
    softer = soften(probabilities, 3.0)
    np.testing.assert_allclose(softer.sum(axis=1), 1.0)
    assert (softer.argsort(axis=1) == probabilities.argsort(axis=1)).all()
    assert (softer.max(axis=1) < probabilities.max(axis=1)).all()
    np.testing.assert_allclose(soften(probabilities, 1e6), 1 / 3, atol=1e-5)
    with pytest.raises(FerOptionError, match="temperature"):
        soften(probabilities, 0.0)


def test_soft_targets_mix_labels_and_teachers():
    labels = np.array([0, 2])
    confident_elsewhere = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(soft_targets(labels, confident_elsewhere, 0.0, 2.0), np.eye(3)[labels])
    targets = soft_targets(labels, confident_elsewhere, 0.5, 1.0)
    assert targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets[1], [0.1, 0.15, 0.75], rtol=1e-6)
    # At weight 0.5 the true class stays the largest entry, even against a sure teacher.
    assert (targets.argmax(axis=1) == labels).all()
    with pytest.raises(FerOptionError, match="teacher-weight"):
        soft_targets(labels, confident_elsewhere, 1.5, 1.0)
    with pytest.raises(FerOptionError, match="one row per face"):
        soft_targets(labels, confident_elsewhere[:1], 0.5, 1.0)


def test_training_dataset_yields_each_images_own_targets():
    count = 50
    images = np.repeat(np.arange(count, dtype=np.uint8), 48 * 48).reshape(count, 48, 48, 1)
    labels = np.arange(count) % 7
    targets = np.random.default_rng(0).dirichlet(np.ones(7), count).astype(np.float32)
    dataset = make_dataset(images, labels, 16, training=True, seed=3, epochs=2, targets=targets)
    seen = []
    for x, y in dataset:
        index = np.asarray(x)[:, 0, 0, 0].astype(int)
        np.testing.assert_allclose(np.asarray(y), targets[index])
        seen.extend(index)
    assert sorted(seen) == sorted(list(range(count)) * 2)  # shuffled, each image once an epoch
    # Balanced sampling draws by label, and a resumed epoch is the same epoch: targets follow.
    resumed = make_dataset(images, labels, 16, training=True, seed=3, balanced=True, first_epoch=1, epochs=2,
                           targets=targets)
    whole = make_dataset(images, labels, 16, training=True, seed=3, balanced=True, epochs=2, targets=targets)
    second_epoch = list(whole)[len(list(resumed)):]
    for (x, y), (x_whole, y_whole) in zip(resumed, second_epoch):
        index = np.asarray(x)[:, 0, 0, 0].astype(int)
        np.testing.assert_allclose(np.asarray(y), targets[index])
        np.testing.assert_array_equal(np.asarray(x), np.asarray(x_whole))
        np.testing.assert_array_equal(np.asarray(y), np.asarray(y_whole))
    with pytest.raises(ValueError, match="targets"):
        make_dataset(images, labels, 16, training=True, targets=targets[:-1])
    with pytest.raises(ValueError, match="training=True"):
        make_dataset(images, labels, 16, targets=targets)


def teacher_run(folder, seed=0, val="fraction:0.1", split_seed=None, fingerprint=None):
    folder.mkdir(parents=True)
    tiny_model(seed).save(folder / "best.keras")
    config = {"options": {"val": val, "seed": seed, "split_seed": split_seed}}
    if fingerprint is not None:
        config["data_fingerprint"] = fingerprint
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_train_with_teachers_fits_their_soft_labels(tmp_path, monkeypatch):
    import keras

    import keras_fer.distill
    import keras_fer.pipeline
    from keras_fer.training import TrainConfig, load_training_data, read_history

    teachers = [str(teacher_run(tmp_path / "teacher-a", seed=0)),
                str(teacher_run(tmp_path / "teacher-b", seed=1, split_seed=0))]
    given = {}
    original = keras_fer.pipeline.make_dataset

    def spy(*args, **kwargs):
        if kwargs.get("training"):
            given.update(labels=np.asarray(args[1]), targets=kwargs.get("targets"))
        return original(*args, **kwargs)

    monkeypatch.setattr(keras_fer.pipeline, "make_dataset", spy)
    out = tmp_path / "student"
    assert main([*STUDENT, "--teacher", *teachers, "--temperature", "3", "--out", str(out)]) == 0

    config = json.loads((out / "config.json").read_text())
    record = config["teacher"]
    assert record["models"] == [str(tmp_path / name / "best.keras") for name in ("teacher-a", "teacher-b")]
    assert record["weight"] == 0.5 and record["temperature"] == 3.0 and record["tta"] == "flip"
    assert record["mean_top_probability_softened"] < record["mean_top_probability"]
    assert config["options"]["teacher"] == teachers
    # The student trained on the mean of both teachers (face and mirror image), softened, half and half.
    train_images, _, _ = load_training_data(TrainConfig(demo_faces=140, seed=0))
    faces = train_images.pixels.astype("float32")
    views = []
    for name in ("teacher-a", "teacher-b"):
        model = keras.saving.load_model(tmp_path / name / "best.keras", safe_mode=True)
        for view in (faces, faces[:, :, ::-1]):
            views.append(keras.ops.convert_to_numpy(keras.ops.softmax(model(view, training=False))))
    probabilities = np.mean(views, axis=0)
    assert not np.allclose(views[0], views[2], atol=1e-3)  # two different teachers
    np.testing.assert_array_equal(given["labels"], train_images.labels)
    expected = soft_targets(train_images.labels, probabilities, 0.5, 3.0)
    np.testing.assert_allclose(given["targets"], expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(expected, np.eye(7)[train_images.labels], atol=0.05)
    assert record["train_accuracy"] == pytest.approx((probabilities.argmax(1) == train_images.labels).mean())
    assert record["sha256"] == [file_sha256(tmp_path / name / "best.keras") for name in ("teacher-a", "teacher-b")]
    assert (out / "best.keras").is_file()

    # A resume reads the kept probabilities instead of running the teachers again, and takes the same targets.
    given.clear()
    monkeypatch.setattr(keras_fer.distill, "teacher_probabilities", None)  # would fail if called
    assert main([*STUDENT, "--epochs", "2", "--teacher", *teachers, "--temperature", "3", "--out", str(out),
                 "--resume"]) == 0
    np.testing.assert_allclose(given["targets"], expected, rtol=1e-4, atol=1e-6)
    assert [row["epoch"] for row in read_history(out / "history.csv")] == [1, 2]


def test_teachers_that_may_have_seen_the_validation_rows_are_refused(tmp_path, capsys):
    def error(*argv):
        out = tmp_path / "out"
        code = main([*STUDENT, *argv, "--out", str(out)])
        lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("notice: ")]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
        assert not out.exists()
        return lines[0]

    bare = tmp_path / "bare.keras"
    tiny_model().save(bare)
    assert "no training config" in error("--teacher", str(bare))
    missing = error("--teacher", str(tmp_path / "missing"))
    assert "missing" in missing and "model file. Received: teacher=" in missing  # a sentence, then Received
    lite = teacher_run(tmp_path / "lite")
    (lite / "best.tflite").write_bytes(b"TFL3" * 8)
    assert "must be a Keras model" in error("--teacher", str(lite / "best.tflite"))
    other_split = teacher_run(tmp_path / "other-split", split_seed=5)
    message = error("--teacher", str(other_split))
    assert "split seed 5" in message and "--split-seed 5" in message
    other_data = teacher_run(tmp_path / "other-data", fingerprint="0123456789abcdef")
    assert "other data" in error("--teacher", str(other_data))
    assert "different splits" in error("--teacher", str(other_split), str(other_data))
    # The same rows however spelled: usage ignores the split seed, fraction:0.10 is fraction:0.1.
    from keras_fer.distill import check_teachers
    from keras_fer.loading import resolve_model

    kaggle = teacher_run(tmp_path / "kaggle", val="usage", split_seed=1)
    check_teachers(["kaggle"], [resolve_model(kaggle)], "usage", 0, "any")
    spelled = teacher_run(tmp_path / "spelled", val="fraction:0.10", split_seed=0)
    check_teachers(["spelled"], [resolve_model(spelled)], "fraction:0.1", 0, "any")
    with pytest.raises(FerOptionError, match="split seed 0, the student on fraction:0.1 with split seed 3"):
        check_teachers(["spelled"], [resolve_model(spelled)], "fraction:0.1", 3, "any")
    good = teacher_run(tmp_path / "good")
    assert "teacher_weight=1.5" in error("--teacher", str(good), "--teacher-weight", "1.5")
    assert "temperature=0.0" in error("--teacher", str(good), "--temperature", "0")
    assert "drop --teacher" in error("--soup", str(good), str(good), "--teacher", str(good))
    assert "drop --teacher" in error("--ablation", "batch-norm", "--teacher", str(good))
    assert "add --teacher" in error("--temperature", "4")


def test_no_validation_takes_any_teacher_and_resume_refuses_a_changed_one(tmp_path, capsys):
    teacher = tmp_path / "teacher.keras"
    tiny_model(3).save(teacher)
    out = tmp_path / "student"
    # With no validation rows there is nothing a teacher could flatter: a bare model will do.
    assert main([*STUDENT, "--val", "none", "--teacher", str(teacher), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["teacher"]["sha256"] == [file_sha256(teacher)]
    state = (out / "state.json").read_text()
    tiny_model(4).save(teacher)
    capsys.readouterr()
    code = main([*STUDENT, "--epochs", "2", "--val", "none", "--teacher", str(teacher), "--out", str(out),
                 "--resume"])
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("notice: ")]
    assert code == 2 and len(lines) == 1 and "changed since the run started" in lines[0], lines
    assert (out / "state.json").read_text() == state



def test_a_run_that_fails_after_its_teachers_pass_can_be_started_again(tmp_path, capsys):
    # The teachers' probabilities were kept before the model was built; a bad --model-option then
    # left the folder holding only them, and the corrected command was refused as "not a run".
    teacher = tmp_path / "teacher.keras"
    tiny_model(3).save(teacher)
    out = tmp_path / "student"
    argv = [*STUDENT, "--val", "none", "--teacher", str(teacher), "--out", str(out)]
    assert main([*argv, "--model-option", "nonsense=1"]) == 2
    assert [path.name for path in out.iterdir()] == ["teacher_probabilities.npy"]
    capsys.readouterr()
    assert main(argv) == 0
    assert (out / "best.keras").is_file()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "teacher_probabilities.npy").write_bytes(b"x")
    (tmp_path / "other" / "notes.txt").write_text("mine")  # with anything else beside it: still not ours
    assert main([*STUDENT, "--val", "none", "--teacher", str(teacher), "--out", str(tmp_path / "other")]) == 2
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_run_stopped_in_its_first_epoch_starts_again_without_running_its_teachers_again(tmp_path, capsys,
                                                                                           monkeypatch):
    # "interrupted before the first epoch ended: start again without --resume" ran the teachers'
    # pass again, though its probabilities were kept beside the run's config.
    import keras_fer.distill
    import keras_fer.training

    teacher = tmp_path / "teacher.keras"
    tiny_model(3).save(teacher)
    out = tmp_path / "student"
    argv = [*STUDENT, "--val", "none", "--teacher", str(teacher), "--out", str(out)]
    real_fit = keras_fer.training.fit_keras

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_fer.training, "fit_keras", interrupted)
    assert main(argv) == 130
    kept = np.load(out / "teacher_probabilities.npy")
    monkeypatch.setattr(keras_fer.training, "fit_keras", real_fit)
    real_pass = keras_fer.distill.teacher_probabilities
    monkeypatch.setattr(keras_fer.distill, "teacher_probabilities", None)  # would fail if called
    capsys.readouterr()
    assert main(argv) == 0
    assert "from the run stopped in its first epoch" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(out / "teacher_probabilities.npy"), kept)
    assert (out / "best.keras").is_file()
    # Other training rows, or a changed teacher, are another pass: run again, not the kept one.
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return real_pass(*args, **kwargs)

    monkeypatch.setattr(keras_fer.distill, "teacher_probabilities", counted)
    other = tmp_path / "other.keras"
    tiny_model(5).save(other)
    for change, extra in (("rows", ["--seed", "5"]), ("teacher", []), ("config", []), ("failed-between", [])):
        again = tmp_path / f"student-{change}"
        monkeypatch.setattr(keras_fer.training, "fit_keras", interrupted)
        assert main([*argv[:-1], str(again)]) == 130
        if change == "teacher":
            tiny_model(4).save(teacher)
        if change == "config":  # the teacher's config.json (its normalize) feeds it too
            (tmp_path / "config.json").write_text(json.dumps({"normalize": "none"}))
        if change == "failed-between":  # another teacher's pass, kept before a bad option failed the run
            swapped = [*argv[:-1], str(again)]
            swapped[swapped.index(str(teacher))] = str(other)
            assert main([*swapped, "--model-option", "nonsense=1"]) == 2
        monkeypatch.setattr(keras_fer.training, "fit_keras", real_fit)
        calls.clear()
        assert main([*argv[:-1], str(again), *extra]) == 0
        assert calls == [1], change
        assert "from the run stopped" not in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["garbage", "nan"])
def test_a_damaged_cache_of_the_teachers_is_computed_again_on_resume(tmp_path, capsys, damage):
    # Garbage was a traceback from np.load; NaN probabilities were used (a NaN loss, exit 0).
    teacher = tmp_path / "teacher.keras"
    tiny_model(3).save(teacher)
    out = tmp_path / "student"
    argv = [*STUDENT, "--val", "none", "--teacher", str(teacher), "--out", str(out)]
    assert main(argv) == 0
    cache = out / "teacher_probabilities.npy"
    good = np.load(cache)
    if damage == "garbage":
        cache.write_bytes(b"garbage")
    else:
        np.save(cache, np.full_like(good, np.nan))
    capsys.readouterr()
    assert main([*argv, "--epochs", "2", "--resume"]) == 0
    assert f"note: {cache} is " in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(cache), good)
    assert all(math.isfinite(row["loss"]) for row in read_history(out / "history.csv"))



def test_a_teacher_leaves_the_students_first_weights_as_the_seed_makes_them(tmp_path, monkeypatch):
    import keras_fer.models
    from keras_fer.training import TrainConfig, train

    class Built(Exception):
        pass

    built, original = [], keras_fer.models.build_model

    def spy(name, **options):
        built.append([np.asarray(weight) for weight in original(name, **options).weights])
        raise Built  # the first weights are all this test needs

    monkeypatch.setattr(keras_fer.models, "build_model", spy)
    teacher = str(teacher_run(tmp_path / "teacher"))
    small = dict(arch="fervgg", model_options={"width": 0.125, "dense_units": 16}, demo_faces=140, verbose=0)
    bars = []

    def progress(total, description):
        bars.append((total, description, []))
        return bars[-1][2].append

    for extra in ({}, {"teacher": [teacher]}):
        with pytest.raises(Built):
            train(TrainConfig(**small, **extra, out=str(tmp_path / f"run-{len(built)}")), progress=progress)
    assert len(built) == 2 and len(built[0]) == len(built[1])
    for plain, taught in zip(*built):
        np.testing.assert_array_equal(plain, taught)
    # Only the teachers' pass shows a bar, counted up to the training faces.
    assert len(bars) == 1 and bars[0][1] == "teachers" and bars[0][2][-1] == bars[0][0] == 126


def test_teacher_probabilities_in_chunks_match_one_pass_and_count_progress(tmp_path):
    from keras_fer.distill import resolve_teachers, teacher_probabilities

    sources = resolve_teachers([str(teacher_run(tmp_path / "teacher"))])
    faces = np.random.default_rng(0).integers(0, 256, (10, 48, 48, 1)).astype(np.uint8)
    seen = []
    chunked = teacher_probabilities(sources, faces, progress=seen.append, chunk_rows=4)
    assert seen == [4, 8, 10] and chunked.shape == (10, 7)
    np.testing.assert_allclose(chunked, teacher_probabilities(sources, faces), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(chunked.sum(axis=1), 1.0, rtol=1e-6)
    seen.clear()
    assert teacher_probabilities(sources, faces[:0], progress=seen.append).shape == (0, 7) and seen == [0]
    # A calibrated teacher (keras_fer.calibrate's "temperature") teaches its own softmax: --temperature
    # softens that, and a calibration on top changed a calibrated --teacher's targets.
    config_path = tmp_path / "teacher" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "temperature": 3.0}))
    calibrated = resolve_teachers([str(tmp_path / "teacher")])
    np.testing.assert_allclose(teacher_probabilities(calibrated, faces), chunked, rtol=1e-5, atol=1e-7)


def test_a_run_records_its_teachers_by_absolute_path(tmp_path, monkeypatch):
    # Recorded as typed, a relative --teacher could not be found by --resume from another folder.
    from pathlib import Path

    from keras_fer.training import TrainConfig

    monkeypatch.chdir(tmp_path)
    recorded = TrainConfig(teacher=("runs/teacher", "packaged")).to_json()["teacher"]
    assert recorded == [str(tmp_path / "runs" / "teacher"), "packaged"] and Path(recorded[0]).is_absolute()
    # A run recorded before, with the path as typed, still resumes from its folder.
    from keras_fer.training import _check_resume

    run = tmp_path / "student"
    run.mkdir()
    options = {**TrainConfig(teacher=("runs/teacher",)).to_json(), "teacher": ["runs/teacher"]}
    (run / "config.json").write_text(json.dumps({"options": options}))
    assert _check_resume(run, TrainConfig(teacher=("runs/teacher",)))["options"]["teacher"] == ["runs/teacher"]
