import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_fer.models.layers  # noqa: F401  (registers the custom layers for loading)
from keras_fer.cli.train import build_parser, config_from_args, main
from keras_fer.recipes import list_recipes
from keras_fer.training import TrainConfig, read_history, read_state, train

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--arch", "cnn4", "--demo-faces", "280", "--batch-size", "32", "--verbose", "0"]
RUN_FILES = ("best.keras", "last-0002.keras", "state.json", "history.csv", "config.json", "summary.txt",
             "history.png", "confusion.png", "calibration.png", "classification_report.txt", "metrics.json",
             "validation.npz")


def test_cli_end_to_end_fills_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "2", "--out", str(out)]) == 0
    assert "run directory" in capsys.readouterr().out
    for name in RUN_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    history = read_history(out / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2]
    assert read_state(out / "state.json")["epoch"] == 2  # what training writes passes --resume's checks
    assert set(history[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "cpu_seconds"}
    assert all(row["cpu_seconds"] > 0 for row in history)
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "cnn4" and len(config["class_prior"]) == 7
    assert abs(sum(config["class_prior"]) - 1) < 1e-6 and config["data"] is None
    assert "tensorflow" in config["versions"] and config["data_fingerprint"]
    model = keras.saving.load_model(out / "best.keras", safe_mode=True)
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype("float32")
    assert model.predict(faces, verbose=0).shape == (3, 7)
    saved = np.load(out / "validation.npz")
    assert saved["probabilities"].shape == (28, 7)
    from keras_fer.metrics import calibration

    scored = json.loads((out / "metrics.json").read_text())["calibration"]
    assert scored["ece"] == pytest.approx(calibration(saved["labels"], saved["probabilities"]).ece)
    assert "ECE" in (out / "classification_report.txt").read_text()
    np.testing.assert_allclose(saved["probabilities"].sum(axis=1), 1, atol=1e-5)
    # No temporary files are left behind.
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_parses_and_options_override_it(name):
    config = config_from_args(build_parser().parse_args(["--recipe", name]))
    config.validate()
    assert config.total_epochs >= 1
    overridden = config_from_args(build_parser().parse_args(["--recipe", name, "--seed", "9", "--batch-size", "8"]))
    assert overridden.seed == 9 and overridden.batch_size == 8 and overridden.arch == config.arch


def test_report000_recipe_is_the_report():
    config = config_from_args(build_parser().parse_args(["--recipe", "report000", "--lr", "0.5"]))
    assert ((config.arch, config.val, config.optimizer, config.epochs, config.lr)
            == ("cnn4", "first:25000", "adam", 30, 0.5))


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--arch", "nope"], "--arch must be one of"),
        (["--val", "random"], "--val must be"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--augment", "twirl"], "Received: augment='twirl'"),
        (["--class-weight", "--balanced"], "do not go together"),
        (["--model-option", "novalue"], "KEY=VALUE"),
        (["--resume"], "no finished epoch to resume"),
        (["--optimizer", "sgd", "--momentum", "2"], "--momentum must be in [0, 1]. Received: momentum=2.0"),
        (["--init-from", "missing.keras"], "missing.keras: no such model file"),
        (["--temperature", "inf"], "--temperature must be a positive finite number"),  # wrote Infinity into JSON
        (["--lr", "inf"], "--lr must be a positive finite number"),
        # Each watches val_accuracy; Keras warned and trained on without it (--stop-at-accuracy silently).
        (["--val", "none", "--early-stop", "2"], "--early-stop watches the validation accuracy, and --val none"),
        (["--val", "none", "--stop-at-accuracy", "0.5"], "drop --stop-at-accuracy"),
        (["--val", "none", "--schedule", "plateau"], "--schedule plateau watches the validation accuracy"),
        (["--teacher-weight", "0.3"], "add --teacher. Received: teacher_weight=0.3\n"),  # named temperature too
        # The rate never reached --lr: the run trained at a fraction of it, without a word.
        (["--warmup-epochs", "1"], "shorter than the run (--epochs), 1 epoch, or the learning rate never reaches"),
    ],
)
def test_bad_options_give_one_line_errors(tmp_path, capsys, argv, words):
    code = main(SMALL + ["--epochs", "1", "--out", str(tmp_path / "r")] + argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and words in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()  # nothing half-made


def test_resume_without_out_and_a_malformed_tf_config_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(SMALL + ["--epochs", "1", "--resume"]) == 2  # named a new timestamped folder
    assert capsys.readouterr().err.strip() == "error: --resume continues the run in --out: name its folder. " \
                                               "Received: out=None"
    monkeypatch.setenv("TF_CONFIG", "{bad")  # a JSONDecodeError traceback
    assert main(SMALL + ["--epochs", "1", "--strategy", "multi-worker", "--out", str(tmp_path / "r")]) == 2
    assert "error: TF_CONFIG is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("entry, argv, words", [
    ("train", ["--seed", "-1"], "error: argument --seed: a seed must be in [0, 2**32)"),
    ("predict", ["--tta", "bogus"], "error: argument --tta: invalid choice: 'bogus'"),
    ("data", ["split", "x.csv"], "error: the following arguments are required: --out-val"),
])
def test_usage_errors_are_one_line_in_every_command(capsys, entry, argv, words):
    # They printed argparse's whole usage block, then "prog: error: ...".
    from keras_fer import data
    from keras_fer.cli import predict

    run = {"train": main, "predict": predict.main, "data": data.main}[entry]
    with pytest.raises(SystemExit) as caught:
        run(argv)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.startswith(words) and err.count("\n") == 1, err


def test_help_names_the_console_script_it_was_run_as(capsys, monkeypatch):
    # `fer-predict --help` said "usage: predict.py".
    from keras_fer.cli import predict, visualize

    for run, script, program in ((main, "train.py", "fer-train"), (predict.main, "predict.py", "fer-predict"),
                                 (visualize.main, "visualize.py", "fer-visualize")):
        for invoked, shown in ((f"/venv/bin/{program}", program), (f"/work/{script}", script)):
            monkeypatch.setattr(sys, "argv", [invoked])
            with pytest.raises(SystemExit):
                run(["--help"])
            assert capsys.readouterr().out.startswith(f"usage: {shown} ")


def test_a_split_that_leaves_no_validation_rows_is_an_error_not_val_none(tmp_path, capsys):
    # fraction:0.001 of 280 faces rounds to no row per class: the run trained with no validation.
    assert main(SMALL + ["--epochs", "1", "--val", "fraction:0.001", "--out", str(tmp_path / "r")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "error: --val fraction:0.001 leaves no validation rows of the 280 images of demo faces"
    assert not (tmp_path / "r").exists()


def test_a_bad_init_from_fails_before_the_data_is_read(tmp_path, capsys):
    (tmp_path / "notmodel.keras").write_text("not a zip")
    code = main([*SMALL, "--epochs", "1", "--data", str(tmp_path / "missing.csv"),
                 "--init-from", str(tmp_path / "notmodel.keras"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "notmodel.keras" in err and "missing.csv" not in err


@pytest.mark.parametrize("resume", [False, True])
def test_an_out_that_is_a_file_or_under_one_fails_before_the_data_is_read(tmp_path, capsys, resume):
    # mkdir said "File exists" / "Not a directory", after the data was read and the model built.
    somefile = tmp_path / "somefile"
    somefile.write_text("keep me")
    for out, message in ((somefile, f"error: --out {somefile} is a file, not a run directory"),
                         (somefile / "sub", f"error: --out {somefile / 'sub'}: {somefile} is a file")):
        code = main([*SMALL, "--epochs", "1", "--data", str(tmp_path / "missing.csv"), "--out", str(out)]
                    + (["--resume"] if resume else []))
        assert (code, capsys.readouterr().err) == (2, message + "\n")
    assert somefile.read_text() == "keep me"


@pytest.mark.parametrize("option", ["--seed", "--split-seed"])
def test_negative_seeds_are_refused_by_the_parser_and_the_config(capsys, option):
    with pytest.raises(SystemExit) as caught:
        main([*SMALL, option, "-1"])
    assert caught.value.code == 2 and "a seed must be in [0, 2**32)" in capsys.readouterr().err
    from keras_fer.errors import FerOptionError

    with pytest.raises(FerOptionError, match=r"must be in \[0, 2\*\*32\)"):
        TrainConfig(**{option[2:].replace("-", "_"): -1}).validate()


def test_refuses_to_overwrite_a_run_and_stops_at_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "5", "--stop-at-accuracy", "0.01", "--out", str(out)]) == 0
    assert len(read_history(out / "history.csv")) == 1
    assert main(SMALL + ["--epochs", "5", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_a_stop_at_a_phases_last_epoch_ends_the_run(tmp_path):
    # The next phase trained on: the stop was only looked at when a phase ended early.
    config = TrainConfig(
        arch="cnn4", demo_faces=140, batch_size=32, verbose=0, out=str(tmp_path / "run"), stop_at_accuracy=0.01,
        phases=(dict(optimizer="adam", lr=1e-3, epochs=1), dict(optimizer="sgd", lr=0.01, epochs=2)),
    )
    result = train(config)
    assert result.epochs_run == 1 and result.stopped_early
    assert len(read_history(result.run_dir / "history.csv")) == 1


def test_a_stop_on_the_runs_last_epoch_is_not_undone_by_more_epochs(tmp_path, capsys):
    # As documented (docs/training.md, Resuming): the stop is the run's end, whichever epoch it fired on.
    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "1", "--stop-at-accuracy", "0.01", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["--resume", "--out", str(out), "--epochs", "3", "--verbose", "0"]) == 0
    assert "stopped at epoch 1 (validation accuracy reached 0.01): --resume trains no more" in capsys.readouterr().err
    assert len(read_history(out / "history.csv")) == 1


def test_phases_switch_optimizer(tmp_path):
    config = TrainConfig(
        arch="cnn4", demo_faces=140, batch_size=32, verbose=0, out=str(tmp_path / "run"),
        phases=(dict(optimizer="adadelta", lr=1.0, epochs=1), dict(optimizer="sgd", lr=0.01, epochs=1)),
    )
    result = train(config)
    history = read_history(result.run_dir / "history.csv")
    assert [row["lr"] for row in history] == pytest.approx([1.0, 0.01])


def test_a_cut_phased_recipe_resumes_with_another_cut(tmp_path, capsys):
    # --epochs cuts report002's phases: resuming with another --epochs compared the cut phase lists
    # and refused ("phases: run has [...], given [...]"), so a cut run could never be extended.
    out = tmp_path / "run"
    base = ["--recipe", "report002", "--arch", "dnn", "--demo-faces", "140", "--batch-size", "32", "--verbose", "0",
            "--out", str(out)]
    assert main(base + ["--epochs", "1"]) == 0
    assert main(base + ["--epochs", "2", "--resume"]) == 0
    assert [row["epoch"] for row in read_history(out / "history.csv")] == [1, 2]
    assert main(["--resume", "--out", str(out), "--verbose", "0"]) == 0  # the run's own cut
    assert "has all its 2 epochs" in capsys.readouterr().err
    # Another optimizer is not a cut of the recipe: still refused.
    assert main(base + ["--epochs", "3", "--optimizer", "sgd", "--resume"]) == 2
    assert "phases: run has" in capsys.readouterr().err
    # Without --recipe, a new --epochs cuts the recipe the run's phases are a cut of.
    assert main(["--resume", "--out", str(out), "--epochs", "3", "--verbose", "0"]) == 0
    assert [row["epoch"] for row in read_history(out / "history.csv")] == [1, 2, 3]


def test_resume_takes_the_options_not_given_from_the_run(tmp_path, capsys):
    # "interrupted: ...; continue with --resume --out RUN" was followed literally: the 2-epoch run
    # went on to the default 30, and a run with another --lr or --augment was refused.
    out = tmp_path / "run"
    started = SMALL + ["--epochs", "2", "--lr", "0.005", "--augment", "flip", "--out", str(out)]
    assert main(started) == 0
    assert main(["--resume", "--out", str(out), "--epochs", "3", "--verbose", "0"]) == 0
    assert [row["epoch"] for row in read_history(out / "history.csv")] == [1, 2, 3]
    options = json.loads((out / "config.json").read_text())["options"]
    assert (options["lr"], options["augment"], options["epochs"]) == (0.005, "flip", 3)
    capsys.readouterr()
    assert main(["--resume", "--out", str(out), "--verbose", "0"]) == 0
    printed = capsys.readouterr()
    assert "has all its 3 epochs: --resume trains nothing more" in printed.err
    epochs = sum(row["seconds"] for row in read_history(out / "history.csv"))  # not this invocation's seconds
    assert f"(best epoch {json.loads((out / 'state.json').read_text())['best_epoch']}, " in printed.out
    assert f"{epochs:.0f} s of epochs in all, " in printed.out
    # The same split by another spelling is the same option.
    assert main(["--resume", "--out", str(out), "--val", "fraction:0.10", "--verbose", "0"]) == 0
    capsys.readouterr()
    # An option given again is still compared with the run's; a recipe's own do not override the run's.
    assert main(["--resume", "--out", str(out), "--lr", "0.01"]) == 2
    assert "--resume with options that differ from the run in" in capsys.readouterr().err
    assert main(["--resume", "--out", str(out), "--recipe", "report004", "--verbose", "0"]) == 0
    assert "has all its 3 epochs" in capsys.readouterr().err
    # A damaged record is one line naming the file, not a traceback.
    config = json.loads((out / "config.json").read_text())
    for field, value in (("batch_size", None), ("augment", 3)):
        (out / "config.json").write_text(json.dumps({**config, "options": {**config["options"], field: value}}))
        assert main(["--resume", "--out", str(out), "--epochs", "4"]) == 2
        assert f"error: {out / 'config.json'}, field 'options': --resume: the run's options cannot be used (" in (
            capsys.readouterr().err)


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path):
    # dnn: dropout, BatchNorm and LeakyReLU, and fast; its dropout masks must survive the resume.
    args = [*SMALL, "--arch", "dnn", "--epochs", "5", "--deterministic", "--seed", "3", "--augment", "basic"]
    reference = tmp_path / "reference"
    assert main(args + ["--out", str(reference)]) == 0

    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py")] + args + ["--out", str(killed)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None:
            state = killed / "state.json"
            if state.exists() and json.loads(state.read_text())["epoch"] >= 2:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    finished = json.loads((killed / "state.json").read_text())["epoch"]
    assert 2 <= finished < 5
    (killed / "last-0001-inference.keras").write_bytes(b"an export (predict.py --export keras)")
    # What a writer killed mid-file leaves (hidden, half-written; hundreds of MB for vgg12) goes with
    # the resume; a hidden file of another shape stays.
    for name in (".best.keras.k3x9_a2b.keras", ".history.csv.b1u_zkl7.csv", ".notes.txt"):
        (killed / name).write_bytes(b"PK\x03\x04 half")
    assert main(args + ["--out", str(killed), "--resume"]) == 0
    assert sorted(path.name for path in killed.glob(".*")) == [".notes.txt"]
    # Each epoch drops the previous epoch's model, never an export named after it.
    assert sorted(path.name for path in killed.glob("last*.keras")) == ["last-0001-inference.keras", "last-0005.keras"]

    expected, resumed = read_history(reference / "history.csv"), read_history(killed / "history.csv")
    assert [row["epoch"] for row in resumed] == [1, 2, 3, 4, 5]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        np.testing.assert_allclose([r[key] for r in resumed], [r[key] for r in expected], rtol=1e-4, err_msg=key)
    a = keras.saving.load_model(reference / "best.keras", safe_mode=True)
    b = keras.saving.load_model(killed / "best.keras", safe_mode=True)
    faces = np.random.default_rng(1).integers(0, 256, (4, 48, 48, 1)).astype("float32")
    np.testing.assert_allclose(a.predict(faces, verbose=0), b.predict(faces, verbose=0), rtol=1e-4, atol=1e-4)


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_workers_train_and_the_chief_writes_the_run(tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    out = tmp_path / "run"
    processes = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *SMALL, "--verbose", "2", "--epochs", "2",
             "--strategy", "multi-worker", "--out", str(out)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=300)[0])
        finally:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    assert [row["epoch"] for row in read_history(out / "history.csv")] == [1, 2]
    model = keras.saving.load_model(out / "best.keras", safe_mode=True)
    assert model.predict(np.zeros((2, 48, 48, 1), "float32"), verbose=0).shape == (2, 7)
    assert "run directory" in outputs[0]
    # Only the chief, which writes the run, says an epoch is saved (the other worker's is scratch).
    assert "epoch 1 of 2 saved" in outputs[0], outputs[0][-3000:]
    assert "saved" not in outputs[1], outputs[1][-3000:]
    assert "worker done (2 epochs" in outputs[1] and "keras_fer_worker_" not in outputs[1], outputs[1][-3000:]


def test_the_custom_loop_stops_at_a_diverged_epoch_as_fit_does():
    # TerminateOnNaN acts on batch callbacks, which the multi-worker loop does not call: NaN
    # epochs ran to the end of the phase.
    import tensorflow as tf

    from keras_fer.models import build_model
    from keras_fer.training import compile_model, fit_multi_worker

    keras.utils.set_random_seed(0)
    model = build_model("dnn", preprocessing={"normalize": "unit"})
    config = TrainConfig(arch="dnn")
    compile_model(model, "sgd", 1e30, config)
    images = np.random.default_rng(0).integers(0, 256, (64, 48, 48, 1)).astype("float32")
    labels = keras.utils.to_categorical(np.arange(64) % 7, 7)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32).repeat()
    ended = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ended.append((epoch, logs["loss"])))
    fit_multi_worker(model, dataset, epochs=4, initial_epoch=0, steps_per_epoch=2, validation_data=None,
                     callbacks=[callback], verbose=0, strategy=tf.distribute.get_strategy(),
                     config=config)
    assert len(ended) < 4 and not math.isfinite(ended[-1][1]) and all(math.isfinite(loss) for _, loss in ended[:-1])


def test_train_shim_help_explains_every_option_without_tensorflow():
    result = subprocess.run(
        [sys.executable, "-c", "import runpy, sys; sys.argv = ['train.py', '--help']\n"
         "try:\n    runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit as e:\n"
         "    assert e.code == 0\nassert 'tensorflow' not in sys.modules"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--arch", "--recipe", "--data", "--val", "--resume", "--strategy", "--augment", "--early-stop",
                   "--teacher", "--teacher-weight", "--temperature"):
        assert option in result.stdout
    # Every recipe's description reads as written (a literal "%" once printed argparse's internals).
    text = " ".join(result.stdout.split())
    assert "12% stratified validation" in text and "option_strings" not in text


def test_arch_list_and_summary(capsys):
    assert main(["--arch", "list"]) == 0
    table = capsys.readouterr().out
    assert "cnn39m" in table and "39,569,799" in table
    assert main(["--arch", "cnn4", "--summary"]) == 0
    summary = capsys.readouterr().out
    assert "conv4" in summary and "538,759" in summary


def test_each_epoch_but_the_last_says_what_is_saved_and_the_time_left(tmp_path, capsys):
    # A 40-epoch CPU run printed Keras' line for each epoch and nothing of the run's own end.
    base = ["--arch", "dnn", "--demo-faces", "140", "--batch-size", "32"]
    assert main([*base, "--epochs", "3", "--verbose", "2", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in out if line.startswith("epoch ")]
    history = read_history(tmp_path / "run" / "history.csv")
    assert [line.split(" saved")[0] for line in lines] == ["epoch 1 of 3", "epoch 2 of 3"]
    best = max(history[:2], key=lambda row: row["val_accuracy"])
    assert f"(best {best['val_accuracy']:.4f}, epoch {best['epoch']}); about " in lines[1]
    # Each comes after Keras' own line of its epoch (Keras appends its logger after our callbacks).
    for index, line in enumerate(out):
        if line.startswith("epoch ") and " saved " in line:
            assert out[index - 1].startswith("4/4 - ") and "val_accuracy" in out[index - 1], out
    # A run that stops early says no time left on its last epoch.
    assert main([*base, "--epochs", "3", "--stop-at-accuracy", "0.01", "--verbose", "2",
                 "--out", str(tmp_path / "stopped")]) == 0
    assert " to go at " not in capsys.readouterr().out


def test_resuming_a_finished_run_says_it_trains_nothing(tmp_path, capsys):
    # It evaluated the best model again and ended as if it had trained.
    argv = ["--arch", "dnn", "--demo-faces", "140", "--batch-size", "32", "--verbose", "0",
            "--out", str(tmp_path / "r")]
    assert main([*argv, "--epochs", "2"]) == 0
    assert " saved " not in capsys.readouterr().out  # --verbose 0: no line after each epoch either
    # A temperature fitted on best.keras (keras_fer.calibrate) stays while best.keras does, and is
    # dropped, with a note, when training goes on.
    config_path = tmp_path / "r" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "temperature": 1.25,
                                       "tta_temperatures": {"crops": 1.1}}))
    recorded = config_path.read_bytes()
    assert main([*argv, "--epochs", "2", "--resume"]) == 0
    assert "has all its 2 epochs: --resume trains nothing more" in capsys.readouterr().err
    assert len(read_history(tmp_path / "r" / "history.csv")) == 2
    # A smaller --epochs trains nothing either, and leaves the record of what ran (it rewrote
    # config.json's options to 1 epoch beside a 2-epoch history).
    assert main([*argv, "--epochs", "1", "--resume"]) == 0
    assert "has all its 2 epochs" in capsys.readouterr().err and config_path.read_bytes() == recorded
    assert json.loads(config_path.read_text())["temperature"] == 1.25
    assert json.loads(config_path.read_text())["tta_temperatures"] == {"crops": 1.1}
    assert main([*argv, "--epochs", "3", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "trains nothing" not in err and "the temperature 1.25, tta_temperatures" in err
    assert "they are dropped if training replaces it" in err
    assert len(read_history(tmp_path / "r" / "history.csv")) == 3
    # Dropped when epoch 3 replaced best.keras, kept when it did not (an interrupted resume lost it).
    replaced = read_state(tmp_path / "r" / "state.json")["best_epoch"] == 3
    assert bool({"temperature", "tta_temperatures"} & set(json.loads(config_path.read_text()))) != replaced
    from keras_fer.training import complete_best

    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "temperature": 1.25}))
    state = {**read_state(tmp_path / "r" / "state.json"), "best_epoch": 3, "epoch": 3, "best_pending": True,
             "last_model": "last-0003.keras"}
    assert complete_best(tmp_path / "r", state)
    assert "temperature" not in json.loads(config_path.read_text())
    same_model(tmp_path / "r" / "best.keras", tmp_path / "r" / "last-0003.keras")
    # Killed while writing its report, a run is told to --resume, which writes it: no note then.
    (tmp_path / "r" / "metrics.json").unlink()
    assert main([*argv, "--epochs", "3", "--resume"]) == 0
    assert "trains nothing" not in capsys.readouterr().err and (tmp_path / "r" / "metrics.json").is_file()


def test_progress_line_reads_the_time_left_at_the_mean_pace():
    from keras_fer.training import progress_line

    state = {"best_epoch": 5, "best_val_accuracy": 0.41226}
    assert progress_line(state, 5, 40, [300.0, 360.0]) == (
        "epoch 5 of 40 saved (best 0.4123, epoch 5); about 3.2 h to go at 5.5 min an epoch")
    assert progress_line({"best_epoch": 1, "best_val_accuracy": math.nan}, 1, 3, [20.0]) == (
        "epoch 1 of 3 saved (no validation); about 40 s to go at 20 s an epoch")


def test_no_validation_keeps_the_last_epoch_as_best(tmp_path, capsys):
    result = train(TrainConfig(arch="dnn", demo_faces=140, batch_size=32, epochs=2, val="none", verbose=0,
                               out=str(tmp_path / "run")))
    assert (result.run_dir / "best.keras").is_file() and result.best_epoch == 2
    assert math.isnan(read_state(result.run_dir / "state.json")["best_val_accuracy"])  # NaN passes the checks
    capsys.readouterr()
    assert main(["--arch", "dnn", "--demo-faces", "140", "--epochs", "1", "--val", "none", "--verbose", "2",
                 "--out", str(tmp_path / "cli")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # What was trained on comes first; the run directory and what to do with it come last.
    assert lines[0] == "data: demo faces: 140 training faces, no validation split (--val none)"
    assert "(last epoch 1, no validation split," in lines[-2] and "nan" not in lines[-2]
    assert lines[-1] == (f"next: python visualize.py report {tmp_path / 'cli'} (every figure, one page); "
                         f"python predict.py FILE --model {tmp_path / 'cli'} (a submission, or photos' faces)")
    assert main(["--arch", "dnn", "--demo-faces", "140", "--epochs", "1", "--max-images", "50", "--verbose", "2",
                 "--out", str(tmp_path / "cut")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # With a validation split, a temperature can be fitted on it: the last line says how.
    assert lines[-1].endswith(f"; python -m keras_fer.calibrate {tmp_path / 'cut'} (confidences that match its "
                              "accuracy)")
    assert lines[0] == ("data: demo faces: 50 training faces (--max-images: 50 of 126), 14 validating "
                        "(--val fraction:0.1, split seed 0)")
    assert sum("run directory" in line for line in lines) == 1  # it was said twice


def test_a_fer_data_that_names_nothing_says_it_came_from_fer_data(tmp_path, monkeypatch, capsys):
    # A relative FER_DATA (the README's ../shared/fer2013) breaks after a cd: the error named the
    # path alone, not where it came from.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FER_DATA", "../shared/fer2013")
    assert main(["--arch", "dnn", "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: ../shared/fer2013: no such file or folder (from FER_DATA: an absolute path works from "
                   "any folder)")
    assert main(["--arch", "dnn", "--epochs", "1", "--data", "nowhere.csv", "--out", str(tmp_path / "run")]) == 2
    assert "(from FER_DATA" not in capsys.readouterr().err  # given as --data, it is named as such

def test_no_tensorflow_is_imported_for_a_mistyped_path(tmp_path):
    # In a fresh interpreter: the tests above only stand in for the CLI's own import.
    code = (
        "import sys\n"
        "from keras_fer.cli.train import main as train\n"
        "from keras_fer.cli.visualize import main as visualize\n"
        "assert train(['--recipe', 'best', '--init-from', 'none.keras']) == 2\n"
        "assert train(['--soup', 'a', 'b']) == 2\n"
        "assert visualize(['saliency', '--image', 'face.png', '--data', 'nowhere.csv']) == 2\n"
        "assert visualize(['report', 'nowhere']) == 2\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert result.stderr.count("error: ") == 4


@pytest.mark.parametrize("options, message", [
    (["--data", "nowhere.csv"], "nowhere.csv: no such file or folder"),
    (["--resume", "--out", "{tmp}/none"], "--resume: no finished epoch to resume in {tmp}/none (no state.json)"),
    (["--init-from", "{tmp}/none.keras"], "{tmp}/none.keras: no such model file"),
    (["--teacher", "{tmp}/none"], "{tmp}/none: no such model file. Received: teacher='{tmp}/none'"),
    (["--soup", "a", "b", "--data", "nowhere.csv"], "nowhere.csv: no such file or folder"),
    (["--soup", "{tmp}/a", "{tmp}/b"], "{tmp}/a: no such model file"),
    (["--ablation", "batch-norm", "--data", "nowhere.csv"], "nowhere.csv: no such file or folder"),
    # Clashing options come first, as before paths were checked early.
    (["--soup", "{tmp}/a", "{tmp}/b", "--resume"], "--soup averages finished models and trains nothing: drop --resume"),
    (["--ablation", "nonsense", "--data", "nowhere.csv"], "unknown ablation: choose one of"),
    (["--recipe", "report000", "--resume"], "--resume continues the run in --out: name its folder. Received: out=None"),
    # It printed another architecture's table, or made a soup.
    (["--summary", "--resume", "--out", "{tmp}/r"], "--summary prints one architecture's table and trains nothing: "
     "drop --resume"),
    (["--soup", "a", "b", "--summary"], "--summary prints one architecture's table and trains nothing: drop --soup"),
])
def test_a_mistyped_path_fails_before_tensorflow_is_imported(tmp_path, monkeypatch, capsys, options, message):
    # These failed only after TensorFlow's import, 4-5 s (10 s beside a training run).
    def no_tensorflow():
        raise AssertionError("TensorFlow was imported before the paths were checked")

    monkeypatch.setattr("keras_fer.cli.train.import_tensorflow_quietly", no_tensorflow)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FER_DATA", raising=False)
    argv = [item.replace("{tmp}", str(tmp_path)) for item in options]
    assert main(["--arch", "dnn", "--epochs", "1", *argv] if "--soup" not in options and "--ablation" not in options
                else argv) == 2
    assert capsys.readouterr().err.strip().startswith("error: " + message.replace("{tmp}", str(tmp_path)))
    assert not (tmp_path / "runs").exists()


def test_a_recipe_runs_default_folder_is_named_after_the_recipe(tmp_path, monkeypatch, capsys):
    # runs/dnn-<time> could not be told from a plain --arch dnn run.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FER_DATA", raising=False)
    assert main(["--recipe", "report004", "--arch", "dnn", "--demo-faces", "140", "--epochs", "1",
                 "--verbose", "0"]) == 0
    [run] = (tmp_path / "runs").iterdir()
    assert run.name.startswith("report004-dnn-") and (run / "best.keras").is_file()
    assert f"run directory: {Path('runs') / run.name} (best epoch 1" in capsys.readouterr().out

def test_out_inside_an_image_folder_of_data_is_refused(tmp_path, capsys):
    import cv2

    for i in range(14):
        (tmp_path / "faces" / str(i % 7)).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "faces" / str(i % 7) / f"{i}.png"), np.full((48, 48), 10 * i, np.uint8))
    for out in (tmp_path / "faces", tmp_path / "faces" / "0"):  # its figures would become images of the data
        assert main(["--arch", "dnn", "--epochs", "1", "--data", str(tmp_path / "faces"), "--out", str(out)]) == 2
        assert f"--out {out} is inside the data folder" in capsys.readouterr().err
    assert len(list((tmp_path / "faces").rglob("*.png"))) == 14


def test_tensorboard_logs_the_run_or_asks_for_the_package(tmp_path, capsys, monkeypatch):
    import importlib.util

    out = tmp_path / "run"
    assert main(["--arch", "dnn", "--demo-faces", "140", "--epochs", "1", "--verbose", "0", "--tensorboard",
                 "--out", str(out)]) == 0
    events = sorted(p.relative_to(out / "tensorboard").parts[0] for p in (out / "tensorboard").rglob("events.out.*"))
    assert events == ["train", "validation"]
    capsys.readouterr()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "tensorboard" else real(name, *args))
    assert main(["--arch", "dnn", "--demo-faces", "140", "--epochs", "1", "--tensorboard",
                 "--out", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err == 'error: --tensorboard needs the tensorboard package: pip install "keras-fer[tensorboard]"\n'
    assert not (tmp_path / "missing").exists()


def test_a_warm_up_must_be_shorter_than_each_phase():
    from keras_fer.errors import FerOptionError

    phases = [dict(optimizer="adadelta", lr=1.0, epochs=20), dict(optimizer="sgd", lr=0.01, epochs=3)]
    with pytest.raises(FerOptionError, match="shorter than each phase of the recipe, 3 epochs"):
        TrainConfig(phases=phases, warmup_epochs=3).validate()
    assert TrainConfig(phases=phases, warmup_epochs=2).validate().warmup_epochs == 2


def test_plateau_schedule_keeps_its_rate_after_warm_up():
    from keras_fer.training import scheduled_lr

    config = TrainConfig(schedule="plateau", warmup_epochs=2)
    rates = [scheduled_lr(config, epoch, 0.1, 0, 10) for epoch in range(5)]
    assert rates[0] == pytest.approx(0.1 / 3) and rates[1] == pytest.approx(0.2 / 3) and rates[2] == pytest.approx(0.1)
    assert rates[3] is None and rates[4] is None


def test_ctrl_c_in_the_first_epoch_does_not_promise_a_resume(tmp_path, capsys, monkeypatch):
    import keras_fer.training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_fer.training, "fit_keras", interrupted)
    assert main(SMALL + ["--epochs", "2", "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first epoch ended: nothing is saved; start again without --resume" in err
    assert "--resume --out" not in err  # it said "epoch 0 is saved; continue with --resume", which then failed


def test_ctrl_c_while_an_epoch_is_written_reports_the_epoch_saved_before(tmp_path, capsys, monkeypatch):
    # Ctrl-C while epoch 2's state.json was written: it said "epoch 2 is saved" and made the report
    # from epoch 2, while state.json (and --resume) knew only epoch 1.
    import keras_fer.training

    real = keras_fer.training.write_json

    def interrupt_the_second_commit(path, value, *args, **kwargs):
        if Path(path).name == "state.json" and value.get("epoch") == 2:
            raise KeyboardInterrupt
        return real(path, value, *args, **kwargs)

    monkeypatch.setattr(keras_fer.training, "write_json", interrupt_the_second_commit)
    out = tmp_path / "r"
    assert main(SMALL + ["--epochs", "3", "--val", "none", "--out", str(out)]) == 130
    assert "interrupted: epoch 1 is saved; continue with --resume" in capsys.readouterr().err
    assert json.loads((out / "state.json").read_text())["epoch"] == 1
    assert [row["epoch"] for row in read_history(out / "history.csv")] in ([1], [1, 2])  # resume reads to 1
    same_model(out / "best.keras", out / "last-0001.keras")  # with --val none every epoch is best


def test_a_kill_between_an_epochs_commit_and_its_best_model_is_mended(tmp_path, capsys, monkeypatch):
    # best.keras was written before state.json: a kill between left it an epoch ahead of the state.
    # Now it is a copy of the committed epoch's model, made after the commit; a kill before the
    # copy leaves the previous best, and --resume (or the next epoch) completes it.
    import keras_fer.training

    real = keras_fer.training.complete_best

    def killed(run_dir, state):
        if state["epoch"] == 2:
            raise SystemExit(137)  # as if killed: nothing after this runs
        return real(run_dir, state)

    monkeypatch.setattr(keras_fer.training, "complete_best", killed)
    out = tmp_path / "r"
    args = SMALL + ["--epochs", "2", "--val", "none", "--out", str(out)]
    with pytest.raises(SystemExit):
        main(args)
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == state["best_epoch"] == 2
    different_models(out / "best.keras", out / "last-0002.keras")  # epoch 1's: the copy never happened
    monkeypatch.setattr(keras_fer.training, "complete_best", real)
    assert main(args + ["--resume"]) == 0
    same_model(out / "best.keras", out / "last-0002.keras")


def model_weights(path):
    return keras.saving.load_model(path, safe_mode=True, compile=False).get_weights()


def same_model(a, b):
    for x, y in zip(model_weights(a), model_weights(b), strict=True):
        np.testing.assert_array_equal(x, y)


def different_models(a, b):
    assert any(not np.array_equal(x, y) for x, y in zip(model_weights(a), model_weights(b), strict=True))


@pytest.mark.parametrize("epochs, drops", [(9, [0, 0, 0, 1, 1, 1, 2, 2, 2]), (5, [0, 0, 1, 1, 2]),
                                           (10, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2])])
def test_step_schedule_drops_at_each_third_and_no_more(epochs, drops):
    # 5 epochs dropped 4 times (to 1e-5 of the rate), 10 epochs 3 times.
    from keras_fer.training import scheduled_lr

    config = TrainConfig(schedule="step")
    rates = [scheduled_lr(config, epoch, 1.0, 0, epochs) for epoch in range(epochs)]
    assert rates == pytest.approx([0.1 ** drop for drop in drops])


@pytest.mark.parametrize("option", ["softmax=true", "num_classes=5", "preprocessing=x"])
def test_reserved_model_options_are_refused(capsys, tmp_path, option):
    assert main(SMALL + ["--epochs", "1", "--out", str(tmp_path / "r"), "--model-option", option]) == 2
    assert "cannot set" in capsys.readouterr().err


def test_a_diverged_loss_stops_the_run_and_is_never_the_best_model(tmp_path, capsys):
    # It exited 0 with NaN weights as best.keras, and predict.py wrote NaN probabilities.
    out = tmp_path / "nan"
    base = [*SMALL, "--arch", "dnn", "--demo-faces", "140", "--optimizer", "sgd", "--out", str(out)]
    assert main(base + ["--lr", "1e30", "--epochs", "3"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: {out}: the loss diverged (nan) in epoch 1, at learning rate 1e+30"), last
    assert not out.exists()  # nothing kept: the retry with a lower --lr is not refused as "already holds a run"
    # A folder holding someone's files is no place for a run: its config.json was replaced, and
    # then deleted with the diverged run.
    out.mkdir()
    (out / "config.json").write_text('{"mine": 1}')
    assert main(base + ["--lr", "0.01", "--epochs", "1"]) == 2
    assert f"{out} holds files that are not a keras-fer run (config.json)" in capsys.readouterr().err
    assert (out / "config.json").read_text() == '{"mine": 1}'
    # An exported model beside its run's config.json is not a run stopped before its first epoch:
    # training replaced that config.json, which then described another model.
    (out / "config.json").write_text('{"options": {}, "arch": "dnn"}')
    (out / "model.keras").write_bytes(b"an exported model")
    assert main(base + ["--lr", "0.01", "--epochs", "1"]) == 2
    assert f"{out} holds files that are not a keras-fer run (config.json, model.keras)" in capsys.readouterr().err
    (out / "model.keras").unlink()
    # A run stopped before its first epoch ended (config.json, no state.json) starts again in place.
    assert main(base + ["--lr", "0.01", "--epochs", "1"]) == 0
    # After a good epoch, a diverged one stops the run; best.keras stays the good epoch's.
    out = tmp_path / "later"
    base[-1] = str(out)
    assert main(base + ["--lr", "0.01", "--epochs", "1"]) == 0
    model = keras.saving.load_model(out / "last-0001.keras")
    model.layers[-1].kernel.assign(np.full(model.layers[-1].kernel.shape, np.nan, "float32"))
    model.save(out / "last-0001.keras")
    good = (out / "best.keras").read_bytes()
    capsys.readouterr()
    assert main(base + ["--lr", "0.01", "--epochs", "3", "--resume"]) == 0
    assert "note: the loss diverged (nan) in epoch 2; training stopped there, and best.keras is epoch 1's" in (
        capsys.readouterr().err)
    assert (out / "best.keras").read_bytes() == good
    assert read_state(out / "state.json")["stopped"] == "the loss diverged (nan) in epoch 2"


def test_resume_refuses_other_data_and_forgets_a_deleted_best_model(tmp_path, capsys, monkeypatch):
    from keras_fer.data import write_csv
    from keras_fer.synthetic import generate

    data = tmp_path / "train.csv"
    write_csv(generate(140, seed=0).images, data)
    out = tmp_path / "run"
    base = ["--arch", "dnn", "--data", str(data), "--batch-size", "32", "--verbose", "0", "--out", str(out)]
    assert main(base + ["--epochs", "1"]) == 0
    config = (out / "config.json").read_bytes()
    write_csv(generate(280, seed=1).images, data)  # the file changed under the run: its validation rows with it
    assert main(base + ["--epochs", "2", "--resume"]) == 2
    assert f"--resume: the run in {out} started on other data" in capsys.readouterr().err
    assert (out / "config.json").read_bytes() == config and read_state(out / "state.json")["epoch"] == 1
    # A deleted best.keras: it trained an epoch, then failed, at every later --resume too. The best
    # epoch is the last one kept: its last-0001.keras is the same model.
    write_csv(generate(140, seed=0).images, data)
    (out / "best.keras").unlink()
    assert main(base + ["--epochs", "2", "--resume"]) == 0
    assert "best.keras was missing: made again from last-0001.keras, the same epoch (1, the best)" in \
        capsys.readouterr().err
    state = read_state(out / "state.json")
    assert state["epoch"] == 2 and (out / "best.keras").is_file()
    # An earlier best epoch's model is gone for good: forgotten while there are epochs to train ...
    state_text = (out / "state.json").read_text()
    (out / "state.json").write_text(json.dumps({**json.loads(state_text), "best_epoch": 1}))
    (out / "best.keras").unlink()
    (out / "metrics.json").unlink()
    assert main(base + ["--epochs", "2", "--resume"]) == 2  # ... refused when there are none (it failed later)
    err = capsys.readouterr().err
    assert f"--resume: {out / 'best.keras'} (epoch 1's model) is missing and the run has no epoch left to " \
           f"train: --epochs more than 2 trains on" in err and f"use its last model, {out / 'last-0002.keras'}" in err
    assert not (out / "best.keras").exists()
    assert main(base + ["--epochs", "3", "--resume"]) == 0
    assert "best.keras (epoch 1's model) is missing: the best so far is forgotten" in capsys.readouterr().err
    state = read_state(out / "state.json")
    assert state["epoch"] == 3 and state["best_epoch"] == 3 and (out / "best.keras").is_file()
    # The same data by another spelling resumes ("data: run has 'x', given '/abs/x'" before), and
    # the run keeps its data's absolute path, for visualize and --resume from any folder.
    monkeypatch.chdir(tmp_path)
    base[base.index("--data") + 1] = "train.csv"
    assert main(base + ["--epochs", "4", "--resume"]) == 0
    assert json.loads((out / "config.json").read_text())["data"] == str(data.resolve())
    # --demo-faces does nothing beside --data: it blocked the resume ("demo_faces: run has 2100,
    # given 300"). Left out, --data is the run's; given to a demo-faces run, it is the data changing.
    assert main(base + ["--epochs", "4", "--resume", "--demo-faces", "300"]) == 0
    capsys.readouterr()
    without_data = base[:base.index("--data")] + base[base.index("--data") + 2:]
    monkeypatch.chdir(out)  # the run's data by its absolute path, from any folder
    assert main(without_data + ["--epochs", "5", "--resume"]) == 0
    assert read_state(out / "state.json")["epoch"] == 5
    monkeypatch.chdir(tmp_path)
    demo = without_data[:-1] + [str(tmp_path / "demo")]
    assert main(demo + ["--epochs", "1", "--demo-faces", "140"]) == 0
    assert main(demo + ["--epochs", "2", "--demo-faces", "140", "--resume", "--data", "train.csv"]) == 2
    assert "trained on 140 demo faces; its validation rows would change mid-run. Received: data='train.csv'" in (
        capsys.readouterr().err)


def test_resume_refuses_changed_options_and_keeps_a_stopped_run_stopped(tmp_path, capsys):
    out = tmp_path / "run"
    base = [*SMALL, "--arch", "dnn", "--epochs", "4", "--out", str(out)]
    assert main(base + ["--stop-at-accuracy", "0.01"]) == 0
    assert main(base + ["--stop-at-accuracy", "0.01", "--resume", "--lr", "0.5"]) == 2
    assert "lr: run has" in capsys.readouterr().err
    assert main(base + ["--stop-at-accuracy", "0.01", "--resume"]) == 0
    assert [row["epoch"] for row in read_history(out / "history.csv")] == [1]
    assert "stopped at epoch 1 (validation accuracy reached 0.01): --resume trains no more" in (
        capsys.readouterr().err)  # it trained nothing and said nothing
    # A run from before an option existed resumes: the option was at its default then.
    config = json.loads((out / "config.json").read_text())
    for added in ("teacher", "teacher_weight", "temperature"):
        del config["options"][added]
    (out / "config.json").write_text(json.dumps(config))
    assert main(base + ["--stop-at-accuracy", "0.01", "--resume"]) == 0
    # A damaged run config is one line naming it.
    capsys.readouterr()
    (out / "config.json").write_text("{not json")
    assert main(base + ["--stop-at-accuracy", "0.01", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --resume: ") and str(out / "config.json") in err[0]
    (out / "config.json").write_text("[]")
    assert main(base + ["--stop-at-accuracy", "0.01", "--resume"]) == 2
    assert "expected a JSON object" in capsys.readouterr().err
    (out / "config.json").write_text("{}")
    assert main(base + ["--stop-at-accuracy", "0.01", "--resume"]) == 2
    assert f'{out / "config.json"}: unreadable run config: no "options" object' in capsys.readouterr().err


def test_equivalent_augment_specs_resume_each_other(tmp_path, capsys):
    # "--augment shift,,flip" was stored verbatim: --resume with "shift,flip" was "options that differ".
    out = tmp_path / "run"
    base = [*SMALL, "--arch", "dnn", "--demo-faces", "140", "--out", str(out)]
    assert main(base + ["--epochs", "1", "--augment", "shift,,flip"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["augment"] == config["options"]["augment"] == "shift,flip"
    assert main(base + ["--epochs", "2", "--augment", " flip, shift,flip", "--resume"]) == 0
    assert [row["epoch"] for row in read_history(out / "history.csv")] == [1, 2]
    # A run that stored its spec as given (before specs were normalized) resumes too.
    config = json.loads((out / "config.json").read_text())
    config["augment"] = config["options"]["augment"] = "shift,,flip"
    (out / "config.json").write_text(json.dumps(config))
    assert main(base + ["--epochs", "3", "--augment", "shift,flip", "--resume"]) == 0
    capsys.readouterr()
    assert main(base + ["--epochs", "4", "--augment", "flip", "--resume"]) == 2  # another spec is still refused
    assert "augment: run has 'shift,flip', given 'flip'" in capsys.readouterr().err


def test_init_from_starts_at_a_trained_models_weights(tmp_path, capsys):
    donor = tmp_path / "donor"
    train(TrainConfig(arch="dnn", demo_faces=140, batch_size=32, epochs=1, verbose=0, out=str(donor)))
    # A learning rate of 1e-12 keeps the trainable weights where --init-from put them.
    assert main(["--arch", "dnn", "--demo-faces", "140", "--batch-size", "32", "--verbose", "0", "--epochs", "1",
                 "--lr", "1e-12", "--init-from", str(donor), "--out", str(tmp_path / "tuned")]) == 0
    trained = keras.saving.load_model(donor / "best.keras", compile=False)
    tuned = keras.saving.load_model(tmp_path / "tuned" / "last-0001.keras", compile=False)
    fresh = keras.saving.load_model(tmp_path / "tuned" / "best.keras", compile=False)
    assert fresh is not None and len(trained.trainable_weights) == len(tuned.trainable_weights) > 0
    for a, b in zip(trained.trainable_weights, tuned.trainable_weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    # config.json keeps which run and epoch the weights came from, as of the start.
    record = json.loads((tmp_path / "tuned" / "config.json").read_text())["init_from"]
    assert record == {"model": str((donor / "best.keras").resolve()), "run": str(donor.resolve()), "epoch": 1}
    capsys.readouterr()
    # Another architecture's weights do not fit: one line naming the file, no run written.
    code = main(SMALL + ["--epochs", "1", "--init-from", str(donor), "--out", str(tmp_path / "wrong")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and str(donor / "best.keras") in last and "do not fit" in last
    assert "; it was built with --arch dnn. Received: init_from=" in last  # what it needs, from its config.json
    assert not (tmp_path / "wrong").exists()
    packaged = ["--arch", "fervgg", "--demo-faces", "140", "--epochs", "1", "--init-from", "packaged", "--out",
                str(tmp_path / "packaged")]
    assert main(packaged) == 2
    assert "it was built with --arch fervgg --model-option dense_units=64 --model-option width=0.65" in (
        capsys.readouterr().err)
    import keras_fer.loading

    with pytest.MonkeyPatch.context() as patch:  # an install without the packaged model
        patch.setattr(keras_fer.loading, "WEIGHTS_DIR", tmp_path / "no-weights")
        assert main(packaged) == 2
    assert "(this install has none): pass --init-from with a .keras file" in capsys.readouterr().err
    # The same architecture trained on faces normalized otherwise does not start this run either.
    code = main(["--arch", "dnn", "--demo-faces", "140", "--batch-size", "32", "--verbose", "0", "--epochs", "1",
                 "--normalize", "image", "--init-from", str(donor), "--out", str(tmp_path / "other-normalize")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and str(donor / "best.keras") in last, last
    assert "normalize='unit', this run with normalize='image'" in last
    assert not (tmp_path / "other-normalize").exists()


def test_split_seed_keeps_the_validation_rows_across_seeds(tmp_path):
    from keras_fer.data import write_csv
    from keras_fer.synthetic import generate
    from keras_fer.training import load_training_data

    path = tmp_path / "faces.csv"
    write_csv(generate(140, seed=0).images, path)

    def validation(**options):
        return load_training_data(TrainConfig(data=str(path), **options))[1].pixels

    reference = validation(seed=0)
    np.testing.assert_array_equal(validation(seed=5, split_seed=0), reference)
    assert not np.array_equal(validation(seed=5), reference)
    config = config_from_args(build_parser().parse_args(["--recipe", "best", "--seed", "3", "--split-seed", "0"]))
    assert (config.seed, config.split_seed) == (3, 0)


def test_mixed_precision_trains_in_bfloat16_and_predicts_in_float32(tmp_path):
    from keras_fer import inference, loading

    out = tmp_path / "run"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert main(SMALL + ["--epochs", "1", "--mixed-precision", "--out", str(out)]) == 0
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for the caller
    saved = keras.saving.load_model(out / "best.keras", compile=False, safe_mode=True)
    policies = {layer.dtype_policy.name for layer in saved.layers}
    assert "mixed_bfloat16" in policies  # it did train in bfloat16, and the file says so
    model = loading.load_keras_model(out)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    faces = np.random.default_rng(0).integers(0, 256, (8, 48, 48, 1)).astype("float32")
    in_float32, in_bfloat16 = model.predict(faces, verbose=0), saved.predict(faces, verbose=0)
    assert 0 < np.abs(in_float32 - in_bfloat16).max() < 0.05  # same weights, bfloat16 rounding apart
    # The run's own evaluation is the float32 model's, as predict.py will see it.
    from keras_fer.synthetic import generate

    validation = np.load(out / "validation.npz")
    demo = generate(280, seed=0).images
    rows = [list(demo.ids).index(i) for i in validation["ids"]]
    np.testing.assert_allclose(validation["probabilities"],
                               loading.softmax(model.predict(demo.pixels[rows], verbose=0)), atol=1e-5)
    # A model wrapping it is rebuilt all through; a plain float32 model is not rebuilt.
    wrapper = keras.Sequential([keras.Input((48, 48, 1)), saved])
    rebuilt = loading.float32_model(wrapper)
    assert {layer.dtype_policy.name for layer in rebuilt._flatten_layers()} == {"float32"}
    np.testing.assert_allclose(rebuilt.predict(faces, verbose=0), in_float32, atol=1e-5)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert loading.float32_model(plain) is plain
    # The LiteRT copy, which bfloat16 ops would refuse, is made and verified.
    predictor = inference.load_predictor(out)
    assert predictor.backend == "litert" and (out / "best.tflite").is_file()
    np.testing.assert_allclose(predictor.probabilities(faces), loading.softmax(in_float32), atol=1e-4)


def test_a_mixed_precision_run_resumes_in_bfloat16_as_if_uninterrupted(tmp_path):
    # Report 002's bfloat16 vgg12 runs resume across sessions: the resumed epochs must train in
    # bfloat16 too (in float32 they would cost 1.8x and differ), from the same optimizer state.
    args = [*SMALL, "--arch", "dnn", "--demo-faces", "140", "--seed", "3", "--deterministic", "--mixed-precision"]
    assert main(args + ["--epochs", "2", "--out", str(tmp_path / "reference")]) == 0
    assert main(args + ["--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert main(args + ["--epochs", "2", "--resume", "--out", str(tmp_path / "resumed")]) == 0
    assert keras.mixed_precision.global_policy().name == "float32"
    expected = read_history(tmp_path / "reference" / "history.csv")
    resumed = read_history(tmp_path / "resumed" / "history.csv")
    assert [row["epoch"] for row in resumed] == [1, 2]
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose([r[key] for r in resumed], [r[key] for r in expected], rtol=1e-3, err_msg=key)
    last = keras.saving.load_model(tmp_path / "resumed" / "last-0002.keras", compile=False, safe_mode=True)
    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in last.layers}


def test_mixed_precision_policy_is_restored_when_training_fails(tmp_path):
    config = TrainConfig(arch="cnn4", mixed_precision=True, data=str(tmp_path / "missing.csv"), out=str(tmp_path / "r"))
    with pytest.raises(Exception, match="missing.csv"):
        train(config)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_resume_with_a_damaged_state_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "1", "--out", str(out)]) == 0
    (out / "state.json").write_text('{"epoch": 1,')
    capsys.readouterr()
    assert main(SMALL + ["--epochs", "2", "--out", str(out), "--resume"]) != 0
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("error: --resume: ")
    assert str(out / "state.json") in last and "not valid JSON" in last


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-epoch run to damage (copied by each test) and resume."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(SMALL + ["--epochs", "1", "--out", str(out)]) == 0
    return out


def resume_error(run, capsys):
    """`--resume` of `run` for a second epoch: exit 2 and one error line, which is returned."""
    capsys.readouterr()
    assert main(SMALL + ["--epochs", "2", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("notice:")]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("change, field", [
    (lambda state: {}, "epoch"),
    (lambda state: {**state, "epoch": "1"}, "epoch"),
    (lambda state: {**state, "epoch": 0}, "epoch"),
    (lambda state: {**state, "best_epoch": 5}, "best_epoch"),
    (lambda state: {**state, "best_val_accuracy": "high"}, "best_val_accuracy"),
    (lambda state: {**state, "phase": -1}, "phase"),
    (lambda state: {**state, "last_model": ["last-0001.keras"]}, "last_model"),
    (lambda state: {**state, "seed_generators": {"dropout": "x"}}, "seed_generators"),
    (lambda state: {**state, "callbacks": {"early_stopping": {"wait": "0"}}}, "callbacks"),
], ids=["empty", "epoch-text", "epoch-0", "best-epoch", "best-accuracy", "phase", "last-model", "seeds", "callbacks"])
def test_resume_checks_the_state_files_fields(finished_run, tmp_path, capsys, change, field):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps(change(state)))
    line = resume_error(run, capsys)
    assert line.startswith(f"error: --resume: {run / 'state.json'}, field {field!r}: "), line


@pytest.mark.parametrize("content, where", [
    ("x,y\n1,2\n", "line 1: missing column(s) epoch, loss"),
    ("epoch,loss,accuracy\n1,abc,0.5\n", "line 2, field 'loss': expected a number. Received: 'abc'"),
    ("epoch,loss\n1.5,2.0\n", "line 2, field 'epoch': expected an epoch number"),
    ("epoch,loss\n1,2.0,3\n", "line 2: expected 2 fields, found 3"),
    ("epoch,loss\n", "no epochs after the header"),
], ids=["header", "text", "epoch", "fields", "no-rows"])
def test_resume_and_read_history_name_a_bad_history_line_and_column(finished_run, tmp_path, capsys, content,
                                                                    where):
    from keras_fer.errors import FerDataError

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "history.csv").write_text(content)
    with pytest.raises(FerDataError) as caught:
        read_history(run / "history.csv")
    assert str(caught.value).startswith(f"{run / 'history.csv'}") and where in str(caught.value)
    line = resume_error(run, capsys)
    assert line.startswith(f"error: --resume: {run / 'history.csv'}") and where in line, line


def test_resume_with_a_garbage_model_file_says_it_is_not_a_keras_model(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "last-0001.keras").write_text("garbage")
    line = resume_error(run, capsys)
    assert line == f"error: {run / 'last-0001.keras'}: not a Keras model file (a .keras file is a zip archive)"
    (run / "last-0001.keras").unlink()
    assert resume_error(run, capsys) == f"error: {run / 'last-0001.keras'}: no such model file"


def test_the_custom_loop_weights_each_image_by_the_weights_the_dataset_gives():
    import tensorflow as tf

    from keras_fer.models import build_model
    from keras_fer.training import compile_model, fit_multi_worker

    images = np.random.default_rng(0).integers(0, 256, (32, 48, 48, 1)).astype("float32")
    labels = keras.utils.to_categorical(np.arange(32) % 7, 7)
    losses = {}
    for name, scale in (("plain", None), ("doubled", 2.0), ("zero", 0.0)):
        keras.utils.set_random_seed(0)
        model = build_model("dnn", preprocessing={"normalize": "unit"})
        config = TrainConfig(arch="dnn")
        compile_model(model, "sgd", 0.0, config)  # no update: the same loss each epoch
        parts = (images, labels) if scale is None else (images, labels, np.full(32, scale, "float32"))
        dataset = tf.data.Dataset.from_tensor_slices(parts).batch(32).repeat()
        ended = []
        callback = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs, ended=ended: ended.append(logs["loss"]))
        fit_multi_worker(model, dataset, epochs=1, initial_epoch=0, steps_per_epoch=1, validation_data=None,
                         callbacks=[callback], verbose=0, strategy=tf.distribute.get_strategy(), config=config)
        losses[name] = ended[0]
    assert losses["plain"] > 0 and losses["doubled"] == pytest.approx(2 * losses["plain"], rel=1e-5)
    assert losses["zero"] == 0


def test_class_weight_reaches_fit_as_per_image_weights_of_the_labels(tmp_path, monkeypatch):
    import keras_fer.data
    import keras_fer.training

    real_fit, seen = keras_fer.training.fit_keras, []

    def recording_fit(model, dataset, **options):
        assert "class_weight" not in options  # weighted by the dataset, not by fit's argmax of the targets
        x, y, w = next(iter(dataset))
        seen.append((np.argmax(y.numpy(), axis=1), w.numpy()))
        return real_fit(model, dataset, **options)

    monkeypatch.setattr(keras_fer.training, "fit_keras", recording_fit)
    monkeypatch.setattr(keras_fer.data, "class_weights", lambda labels: {i: i + 1.0 for i in range(7)})
    assert main(SMALL + ["--epochs", "1", "--class-weight", "--out", str(tmp_path / "r")]) == 0
    (labels, weights), = seen
    np.testing.assert_array_equal(weights, labels + 1.0)


def test_the_custom_loop_scales_the_loss_for_a_loss_scale_optimizer():
    # Under mixed_float16 (a GPU) compile wraps the optimizer in a LossScaleOptimizer, which
    # divides the gradients by 2**15; the loop never multiplied the loss: SGD moved 3e-5 for 0.92.
    import tensorflow as tf

    from keras_fer.models import build_model
    from keras_fer.training import fit_multi_worker

    images = np.random.default_rng(0).integers(0, 256, (32, 48, 48, 1)).astype("float32")
    labels = keras.utils.to_categorical(np.arange(32) % 7, 7)
    moved = {}
    for name in ("plain", "scaled"):
        keras.utils.set_random_seed(0)
        model = build_model("dnn", width=16, preprocessing={"normalize": "unit"})
        optimizer = keras.optimizers.SGD(0.1)
        if name == "scaled":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        before = [np.array(weight) for weight in model.trainable_weights]
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32).repeat()
        fit_multi_worker(model, dataset, epochs=1, initial_epoch=0, steps_per_epoch=1, validation_data=None,
                         callbacks=[], verbose=0, strategy=tf.distribute.get_strategy(), config=TrainConfig(arch="dnn"))
        moved[name] = [np.array(weight) - old for weight, old in zip(model.trainable_weights, before)]
    assert max(float(np.abs(step).max()) for step in moved["plain"]) > 1e-3
    for plain, scaled in zip(moved["plain"], moved["scaled"]):
        np.testing.assert_allclose(scaled, plain, rtol=1e-3, atol=1e-6)
