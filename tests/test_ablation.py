"""Ablations (keras_fer.ablation), phase cuts, vgg12's width and the compare figure/command.

Training is replaced by a fake that writes a run directory, so these tests check the plumbing
(variants, directories, reuse, figure, table, CLI errors) in seconds; the real training path is
covered by tests/test_training.py.
"""

import json

import numpy as np
import pytest

from keras_fer import ablation, plots
from keras_fer.cli.train import build_parser, config_from_args
from keras_fer.cli.train import main as train_main
from keras_fer.cli.visualize import main as visualize_main
from keras_fer.errors import FerDataError, FerOptionError
from keras_fer.models import build_model
from keras_fer.recipes import cut_phases, recipe
from keras_fer.training import TrainConfig, write_history


def fake_train(accuracies):
    """A `train` stand-in: writes config.json and a history whose validation accuracy per epoch
    comes from `accuracies[arch or change]`, and records every config it was given."""
    calls = []

    def train(config):
        calls.append(config)
        run_dir = config.out
        import pathlib

        run_dir = pathlib.Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        key = "nobn" if config.model_options.get("batch_norm") is False else config.augment
        values = accuracies[key]
        rows = [dict(epoch=i + 1, loss=2.0 - 0.1 * i, accuracy=v + 0.05, val_loss=1.9 - 0.1 * i, val_accuracy=v,
                     lr=1.0, seconds=2.0, cpu_seconds=30.0) for i, v in enumerate(values)]
        write_history(run_dir / "history.csv", rows)
        (run_dir / "config.json").write_text(json.dumps({"arch": config.arch, "train_images": 90, "val_images": 10,
                                                         "options": config.to_json()}))
        (run_dir / "state.json").write_text(json.dumps({"epoch": len(rows)}))
        (run_dir / "metrics.json").write_text("{}")  # a finished run's report

    return train, calls


def test_cut_phases_keeps_the_first_epochs():
    phases = recipe("report002")["phases"]
    assert cut_phases(phases, 3) == ({**phases[0], "epochs": 3},)
    assert cut_phases(phases, 25) == (phases[0], {**phases[1], "epochs": 5})
    assert cut_phases(phases, 40) == tuple(phases)
    for bad in (0, 41):
        with pytest.raises(FerOptionError, match="between 1 and 40"):
            cut_phases(phases, bad)


def test_epochs_on_a_phased_recipe_cuts_it():
    config = config_from_args(build_parser().parse_args(["--recipe", "report002", "--epochs", "2"]))
    assert config.total_epochs == 2
    assert [start_end[:3] for start_end in config.phase_list()] == [(0, 2, "adadelta")]


def test_an_explicit_optimizer_replaces_a_recipes_phases():
    config = config_from_args(build_parser().parse_args(["--recipe", "report002", "--optimizer", "adam",
                                                          "--lr", "0.001"]))
    assert config.phases is None and (config.optimizer, config.lr, config.total_epochs) == ("adam", 0.001, 40)
    config = config_from_args(build_parser().parse_args(["--recipe", "report002", "--lr", "0.5", "--epochs", "3"]))
    assert config.phases is None and (config.optimizer, config.lr, config.total_epochs) == ("adam", 0.5, 3)
    assert config.augment == "shift,flip,rotate,zoom" and config.normalize == "image"  # the rest of the recipe stays


def test_vgg12_width_scales_every_layer():
    full, quarter = build_model("vgg12"), build_model("vgg12", width=0.25)
    assert full.get_layer("conv1").filters == 64 and quarter.get_layer("conv1").filters == 16
    assert quarter.get_layer("conv12").filters == 128 and quarter.get_layer("dense1").units == 256
    assert 10 < full.count_params() / quarter.count_params() < 20
    with pytest.raises(ValueError, match="Received: width=0"):
        build_model("vgg12", width=0)


def test_variant_configs_merge_options_and_name_directories(tmp_path):
    base = TrainConfig(arch="vgg12", model_options={"width": 0.25}, epochs=2)
    configs = ablation.variant_configs(ablation.get_ablation("batch-norm"), base, tmp_path)
    (label_a, with_bn), (label_b, without_bn) = configs
    assert (label_a, label_b) == ("with BatchNorm", "without BatchNorm")
    assert with_bn.model_options == {"width": 0.25} and without_bn.model_options == {"width": 0.25, "batch_norm": False}
    assert with_bn.out == str(tmp_path / "report002")
    assert without_bn.out == str(tmp_path / "report002-batch_norm=false")
    assert not with_bn.resume and without_bn.epochs == 2
    # A variant whose directory holds a run is resumed (or reused when finished).
    (tmp_path / "report002").mkdir()
    (tmp_path / "report002" / "state.json").write_text("{}")
    assert ablation.variant_configs(ablation.get_ablation("augmentation"), base, tmp_path)[0][1].resume


def test_dnn_vs_cnn_matches_the_compared_cnn(tmp_path):
    chosen = ablation.get_ablation("dnn-vs-cnn")
    default = ablation.variant_configs(chosen, config_from_args(build_parser().parse_args(["--recipe", "report004"])),
                                       tmp_path)
    assert [label for label, _ in default][:2] == ["CNN (cnn4d)", "DNN matched to cnn4d"]
    assert default[0][1].out == str(tmp_path / "report004")
    base = config_from_args(build_parser().parse_args(["--recipe", "report004", "--arch", "cnn4"]))
    (cnn_label, cnn), (dnn_label, dnn), (_, report_dnn) = ablation.variant_configs(chosen, base, tmp_path)
    assert (cnn_label, cnn.arch, cnn.out) == ("CNN (cnn4)", "cnn4", str(tmp_path / "report004-cnn4"))
    assert (dnn_label, dnn.arch, dnn.model_options) == ("DNN matched to cnn4", "dnn-matched", {"match": "cnn4"})
    assert dnn.out == str(tmp_path / "report004-cnn4-arch=dnn-matched-match=cnn4") and report_dnn.arch == "dnn"
    cnn_params = build_model("cnn4").count_params()
    assert abs(build_model("dnn-matched", **dnn.model_options).count_params() - cnn_params) < 0.01 * cnn_params


def test_a_model_option_the_variants_do_not_take_fails_before_any_variant_trains(tmp_path):
    # An option vgg12 does not take: the first variant would have trained for hours, then the error came.
    train, calls = fake_train({})
    base = config_from_args(build_parser().parse_args(["--recipe", "report002", "--model-option", "nonsense=1"]))
    with pytest.raises(FerOptionError, match=r"Model 'vgg12' takes the options .* Received: nonsense=1"):
        ablation.run_ablation("augmentation", base, tmp_path, train=train)
    assert calls == []


def test_a_variant_trained_with_other_options_asks_for_another_out_not_resume(tmp_path):
    # "--resume with options that differ from the run in ...": the user gave no --resume, and
    # --ablation refuses it; what helps is another --out.
    def train(config):
        raise FerOptionError(f"--resume with options that differ from the run in {config.out}: lr: run has 0.001, "
                             "given 0.01")

    base = config_from_args(build_parser().parse_args(["--recipe", "report002", "--epochs", "2"]))
    with pytest.raises(FerOptionError) as raised:
        ablation.run_ablation("batch-norm", base, tmp_path, train=train)
    assert str(raised.value) == (f"{tmp_path / 'report002'} holds this variant trained with other options (lr: run "
                                 "has 0.001, given 0.01): give the ablation another --out")


def test_the_cnns_options_are_the_cnns_and_its_dnn_is_matched_to_it_as_trained(tmp_path):
    # The CNN's --model-option went to the DNN variants too ("Model 'dnn-matched' takes the options ...
    # Received: batch_norm=False"), and match=cnn4 would have matched the CNN's default size.
    base = config_from_args(build_parser().parse_args(["--recipe", "report004", "--arch", "cnn4", "--epochs", "2",
                                                       "--model-option", "batch_norm=false"]))
    train, calls = fake_train({"nobn": [0.3, 0.4], base.augment: [0.2, 0.3]})
    ablation.run_ablation("dnn-vs-cnn", base, tmp_path, train=train)
    cnn, dnn, report_dnn = calls
    trained = build_model("cnn4", batch_norm=False).count_params()
    assert cnn.model_options == {"batch_norm": False} and report_dnn.model_options == {}
    assert dnn.model_options == {"match": trained} and trained != build_model("cnn4").count_params()
    assert abs(build_model("dnn-matched", **dnn.model_options).count_params() - trained) < 0.01 * trained


def test_cnn4_batch_norm_false_drops_its_three_batch_norms():
    names = [layer.name for layer in build_model("cnn4", batch_norm=False).layers]
    assert not [name for name in names if name.startswith("bn")]
    assert len([layer for layer in build_model("cnn4").layers if layer.name.startswith("bn")]) == 3


def test_run_ablation_writes_figure_and_table_and_shares_the_baseline(tmp_path):
    train, calls = fake_train({"basic": [0.3, 0.5, 0.45], "nobn": [0.2, 0.25, 0.3],
                               "shift,flip,rotate,zoom": [0.3, 0.5, 0.45], "none": [0.4, 0.35, 0.3]})
    base = config_from_args(build_parser().parse_args(["--recipe", "report002", "--epochs", "3"]))
    figure, table, rows = ablation.run_ablation("batch-norm", base, tmp_path, train=train)
    assert [c.resume for c in calls] == [False, False]
    assert figure.read_bytes().startswith(b"\x89PNG") and figure.name == "ablation-batch-norm.png"
    assert [(r["label"], r["best_epoch"], r["best_val_accuracy"]) for r in rows] == [
        ("with BatchNorm", 2, 0.5), ("without BatchNorm", 3, 0.3)]
    text = table.read_text()
    assert "| with BatchNorm | `vgg12` | `report002` | 90 / 10 | 3 | 2 | 0.5000 | 1.5 |" in text
    assert "0.56338" in text  # the report's own figure is quoted
    changes = text.split("Recipe `report002` with ")[1].split(";")[0]  # the cut is named
    assert changes.startswith("phases=") and "'epochs': 3" in changes and "adadelta" in changes and "sgd" not in changes
    # The augmentation ablation finds the baseline's finished run and reuses it.
    calls.clear()
    _, _, rows = ablation.run_ablation("augmentation", base, tmp_path, train=train)
    assert [c.out for c in calls] == [str(tmp_path / "report002-augment=none")]
    assert rows[0]["best_val_accuracy"] == 0.5 and rows[0]["run"].endswith("report002")
    assert rows[1]["best_val_accuracy"] == 0.4 and rows[1]["run"].endswith("report002-augment=none")
    # Fewer epochs than the shared baseline ran: the variants would compare at two lengths (it
    # drew 3 epochs against 2 without a word). Refused before anything trains; more epochs resume it.
    calls.clear()
    shorter = config_from_args(build_parser().parse_args(["--recipe", "report002", "--epochs", "2"]))
    with pytest.raises(FerOptionError, match=r"variant 'with augmentation' in .*report002 has trained 3 epochs, more "
                                             r"than the 2 asked for: .* give --epochs 3, or another --out"):
        ablation.run_ablation("augmentation", shorter, tmp_path, train=train)
    assert calls == []
    # A finished variant is reused only with the options it ran with (--resume's check): another
    # option reused it, and the table compared old results under the new options.
    other = config_from_args(build_parser().parse_args(["--recipe", "report002", "--epochs", "3",
                                                        "--max-images", "50"]))
    with pytest.raises(FerOptionError, match=r"report002 holds this variant trained with other options "
                                             r"\(max_images: run has None, given 50\): give the ablation another "
                                             r"--out"):
        ablation.run_ablation("augmentation", other, tmp_path, train=train)
    assert calls == []


def test_summarize_run_names_a_missing_history(tmp_path):
    with pytest.raises(FerDataError, match="no history.csv") as caught:
        ablation.summarize_run(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_a_run_without_cpu_time_shows_none_rather_than_zero(tmp_path):
    # A history.csv from before CPU time was recorded summed to 0.0 CPU minutes.
    (tmp_path / "config.json").write_text('{"arch": "cnn4", "train_images": 10, "val_images": 5}')
    (tmp_path / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n"
                                          "1,1.9,0.3,1.8,0.4,0.001,600\n2,1.7,0.4,1.6,0.5,0.001,600\n")
    row = ablation.summarize_run(tmp_path)
    expected = f"old ({tmp_path}): validation accuracy 0.5000 (epoch 2 of 2), - CPU-min"
    assert ablation.describe_run("old", row) == expected
    (tmp_path / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,cpu_seconds\n"
                                          "1,1.9,0.3,1.8,0.4,0.001,600,60\n2,1.7,0.4,1.6,0.5,0.001,600,90\n")
    assert ablation.cpu_text(ablation.summarize_run(tmp_path)) == "2.5"


def test_compare_figure_marks_each_best():
    figure = plots.compare_figure({
        "a": {"epoch": [1, 2], "loss": [2, 1], "accuracy": [0.3, 0.4],
              "val_loss": [1.9, 1.7], "val_accuracy": [0.3, 0.35]},
        "b": {"loss": [2, 1, 0.5], "accuracy": [0.2, 0.3, 0.6],
              "val_loss": [1.8, 1.8, 2.0], "val_accuracy": [0.2, np.nan, 0.25]},
    }, title="t")
    accuracy_axes = figure.axes[0]
    assert accuracy_axes.get_legend_handles_labels()[1] == ["a: best 0.350", "b: best 0.250"]
    legend = [text.get_text() for text in accuracy_axes.get_legend().get_texts()]
    assert legend == ["a: best 0.350", "b: best 0.250", "validation", "training"]  # the line styles' key
    assert len(figure.axes[1].lines) == 2
    with pytest.raises(ValueError, match="at least one"):
        plots.compare_figure({})
    # Twelve runs, twelve colours (the ten-colour cycle would repeat two).
    many = plots.compare_figure({f"run{i}": {"loss": [1.0], "accuracy": [0.5], "val_loss": [1.0],
                                             "val_accuracy": [0.5]} for i in range(12)})
    assert len({tuple(line.get_color()) for line in many.axes[1].lines}) == 12


def test_ablation_cli_lists_and_refuses_bad_names(capsys, tmp_path):
    assert train_main(["--ablation", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ablation.list_ablations())
    for argv, words in ((["--ablation", "nope"], "unknown ablation"),
                        (["--ablation", "batch-norm", "--recipe", "report000"], "runs recipe report002"),
                        (["--ablation", "batch-norm", "--resume"], "drop --resume"),
                        (["--ablation", "dnn-vs-cnn", "--init-from", "runs/cnn4"], "drop --init-from"),
                        (["--ablation", "batch-norm", "--model-option", "batch_norm=false"],
                         "sets batch_norm itself in its variants: drop --model-option batch_norm"),
                        (["--ablation", "normalization", "--normalize", "unit"], "drop --normalize"),
                        (["--ablation", "augmentation", "--augment", "none"], "drop --augment"),
                        (["--ablation", "batch-norm", "--summary"], "drop --ablation"),
                        (["--recipe", "report002", "--epochs", "99"], "between 1 and 40")):
        assert train_main(argv + ["--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_visualize_compare_draws_runs(tmp_path, capsys):
    train, _ = fake_train({"basic": [0.3, 0.5], "none": [0.4, 0.2]})
    for name, augment in (("one", "basic"), ("two", "none")):
        train(TrainConfig(augment=augment, out=str(tmp_path / name)))
    assert visualize_main(["compare", str(tmp_path / "one"), str(tmp_path / "two"),
                           "--out", str(tmp_path / "fig")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "fig" / "compare.png").read_bytes().startswith(b"\x89PNG")
    assert f"one ({tmp_path / 'one'}): validation accuracy 0.5000 (epoch 2 of 2), " in out
    assert f"two ({tmp_path / 'two'}): validation accuracy 0.4000" in out
    # A run on the built-in demo faces (config.json's data null) is marked as such beside real-data runs.
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    (tmp_path / "two" / "config.json").write_text(json.dumps({**config, "data": None}))
    assert visualize_main(["compare", str(tmp_path / "one"), str(tmp_path / "two"),
                           "--out", str(tmp_path / "fig5")]) == 0
    out = capsys.readouterr().out
    assert f"one ({tmp_path / 'one'}): validation" in out
    assert f"two ({tmp_path / 'two'}, demo faces): validation accuracy 0.4000" in out
    assert visualize_main(["compare", str(tmp_path / "missing")]) == 2
    assert "missing: not a run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert visualize_main(["compare", str(tmp_path / "empty"), "--out", str(tmp_path / "fig6")]) == 2
    assert "empty: no history.csv" in capsys.readouterr().err
    # One run twice was drawn and listed once, as if a run had been left out.
    again = str(tmp_path / "two" / ".." / "one")
    assert visualize_main(["compare", str(tmp_path / "one"), str(tmp_path / "two"), again,
                           "--out", str(tmp_path / "fig4")]) == 2
    err = capsys.readouterr().err
    assert f"error: {again} is given twice (as {tmp_path / 'one'}): give each run once" in err
    assert not (tmp_path / "fig4").exists()


def test_describe_run_says_when_a_run_has_no_validation():
    row = {"best_val_accuracy": None, "best_epoch": None, "epochs": 3, "cpu_minutes": 1.25, "run": "runs/x"}
    assert ablation.describe_run("x", row) == "x (runs/x): validation accuracy - (epoch - of 3), 1.2 CPU-min"
    row.update(best_val_accuracy=0.61234, best_epoch=2)
    assert ablation.describe_run("x", row).startswith("x (runs/x): validation accuracy 0.6123 (epoch 2 of 3)")
    row["run"] = "x"  # a run named by its folder alone is not named twice
    assert ablation.describe_run("x", row, "; a note").endswith(": validation accuracy 0.6123 (epoch 2 of 3), "
                                                                 "1.2 CPU-min; a note")
    assert ablation.describe_run("x", row).startswith("x: ")


def fake_run(folder, val_accuracy, cpu_seconds, init_from=None):
    """A run directory with only what `summarize_run` and `lineage` read."""
    folder.mkdir(parents=True)
    rows = [dict(epoch=i + 1, loss=1.0, accuracy=0.5, val_loss=1.0, val_accuracy=v, lr=1e-3, seconds=1.0,
                 cpu_seconds=s) for i, (v, s) in enumerate(zip(val_accuracy, cpu_seconds))]
    write_history(folder / "history.csv", rows)
    (folder / "config.json").write_text(json.dumps({"arch": "cnn4", "options": {"init_from": init_from}}))
    return folder


def test_cpu_hours_follow_init_from_up_to_the_epoch_handed_on(tmp_path):
    parent = fake_run(tmp_path / "parent", [0.3, 0.5, 0.4], [3600.0, 3600.0, 3600.0], init_from="packaged")
    child = fake_run(tmp_path / "child", [0.55, 0.6], [1800.0, 1800.0], init_from=str(parent / "best.keras"))
    grandchild = fake_run(tmp_path / "grandchild", [0.61], [900.0], init_from=str(child / "last-0001.keras"))
    fresh = fake_run(tmp_path / "fresh", [0.2], [36.0])
    # best.keras is the parent's best epoch (2 of 3): its third epoch did not make those weights.
    assert ablation.started_from(child) == (parent, 2)
    assert ablation.cpu_hours_column(child) == ([2.5, 3.0], 2.0)
    assert ablation.lineage(grandchild) == ([(child, 1), (parent, 2)], "packaged")
    assert ablation.cpu_hours_column(grandchild) == ([2.75], 2.5)
    assert ablation.cpu_hours_column(grandchild, ancestors=[]) == ([0.25], 0.0)
    assert ablation.lineage(fresh) == ([], None) and ablation.cpu_hours_column(fresh) == ([0.01], 0.0)
    # last.keras hands on every epoch; a path that is not a run directory here is not followed.
    fake_run(tmp_path / "from-last", [0.5], [1.0], init_from=str(parent / "last.keras"))
    assert ablation.started_from(tmp_path / "from-last") == (parent, 3)
    fake_run(tmp_path / "lost", [0.5], [1.0], init_from="runs/elsewhere/best.keras")
    assert ablation.lineage(tmp_path / "lost") == ([], "runs/elsewhere/best.keras")
    # A run trained since the init_from record says which epoch it took, whatever the parent did
    # later (here: resumed past it) and however the path was typed (here: relative to elsewhere).
    recorded = fake_run(tmp_path / "recorded", [0.5], [1.0], init_from="runs/parent/best.keras")
    config = json.loads((recorded / "config.json").read_text())
    config["init_from"] = {"model": str(parent / "best.keras"), "run": str(parent), "epoch": 1}
    (recorded / "config.json").write_text(json.dumps(config))
    assert ablation.started_from(recorded) == (parent, 1)
    assert ablation.cpu_hours_column(recorded) == ([1.0 + 1 / 3600], 1.0)
    # A chain that comes back to itself is an error naming the run, not an endless loop.
    looped = fake_run(tmp_path / "a", [0.1], [1.0], init_from=str(tmp_path / "b"))
    fake_run(tmp_path / "b", [0.1], [1.0], init_from=str(looped))
    with pytest.raises(FerDataError, match="comes back"):
        ablation.lineage(looped)


def test_compare_on_a_cpu_hours_axis(tmp_path, capsys):
    parent = fake_run(tmp_path / "parent", [0.3, 0.5], [3600.0, 3600.0])
    fake_run(tmp_path / "child", [0.55, 0.6], [1800.0, 1800.0], init_from=str(parent))
    # --out FILE.png names the figure itself (a folder gets compare.png).
    assert visualize_main(["compare", str(parent), str(tmp_path / "child"), "--x", "cpu-hours",
                           "--out", str(tmp_path / "fig" / "cost.png")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "fig" / "cost.png").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "fig" / "compare.png").exists()
    assert (f"child ({tmp_path / 'child'}): validation accuracy 0.6000 (epoch 2 of 2), 60.0 CPU-min; starts at "
            "2.00 CPU-hours, after parent") in out
    history = ablation.summarize_run(tmp_path / "child")["history"]
    history["cpu_hours"] = ablation.cpu_hours_column(tmp_path / "child")[0]
    figure = plots.compare_figure({"child": history}, x="cpu_hours")
    np.testing.assert_allclose(figure.axes[0].lines[0].get_xdata(), [2.5, 3.0])
    assert figure.axes[0].get_xlabel() == "CPU-hours"
    history["cpu_hours"] = [0.01, 0.02]  # runs of under a CPU-hour in all: minutes
    figure = plots.compare_figure({"child": history}, x="cpu_hours")
    np.testing.assert_allclose(figure.axes[0].lines[0].get_xdata(), [0.6, 1.2])
    assert figure.axes[0].get_xlabel() == "CPU-minutes"
    with pytest.raises(ValueError, match="no 'cpu_hours' column"):
        plots.compare_figure({"a": {"loss": [1.0]}}, x="cpu_hours")
    with pytest.raises(ValueError, match="Received: x='wall'"):
        plots.compare_figure({"a": {"loss": [1.0]}}, x="wall")
    # A history from before CPU time was recorded: one line naming the file, no figure.
    old = tmp_path / "old"
    old.mkdir()
    (old / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy\n1,1.0,0.5,1.0,0.4\n")
    (old / "config.json").write_text(json.dumps({"arch": "cnn4", "options": {}}))
    assert visualize_main(["compare", str(old), "--x", "cpu-hours", "--out", str(tmp_path / "fig2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no cpu_seconds for epoch 1" in err and str(old / "history.csv") in err
    assert not (tmp_path / "fig2").exists()
    # A config.json that is not JSON: one line naming it, no traceback.
    (old / "config.json").write_text("{not json")
    assert visualize_main(["compare", str(old), "--out", str(tmp_path / "fig3")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid JSON" in err and str(old / "config.json") in err


def test_ablation_list_names_every_ablation_and_its_variants():
    lines = ablation.ablation_table().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ablation.list_ablations()
    assert "{" not in "\n".join(lines)  # no unfilled label
    assert "CNN (--arch) | DNN matched to --arch" in lines[-1]


def test_ctrl_c_in_an_ablation_says_to_run_it_again(tmp_path, capsys, monkeypatch):
    # It said only the variant's "continue with --resume --out VARIANT": that resumes one variant and
    # draws no figure, and --ablation refuses --resume.
    import keras_fer.training

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_fer.training, "train", interrupted)
    code = train_main(["--ablation", "batch-norm", "--demo-faces", "140", "--epochs", "1", "--out", str(tmp_path)])
    assert code == 130
    assert "to go on with the ablation, run the same command again" in capsys.readouterr().err


def test_an_ablation_without_validation_rows_is_refused(tmp_path, capsys):
    # It trained every variant, then drew a table of "-" and no curves.
    assert train_main(["--ablation", "batch-norm", "--val", "none", "--out", str(tmp_path)]) == 2
    assert "--ablation compares the variants' validation accuracy: drop --val none" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
