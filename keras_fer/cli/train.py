"""`python train.py` / `fer-train`: train a FER model into a run directory."""

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

from keras_fer.cli import (
    Parser,
    command,
    counting_bar,
    import_tensorflow_quietly,
    interrupted_exit_code,
    seed_value,
)
from keras_fer.errors import FerDataError, FerError, FerOptionError, check_integer

EPILOG = """\
examples:
  python train.py --arch cnn4                         # demo faces, a quick look
  python train.py --recipe report000 --data ../shared/fer2013/train.csv.gz
  python train.py --recipe best --data fer2013/ --out ~/runs/best
  python train.py --resume --out ~/runs/best          # after a crash: the options it started with
  python train.py --arch list                         # the model registry
  python train.py --arch cnn39m --summary             # one model's layer table
  python train.py --ablation batch-norm --data fer2013/ --out ~/runs/ablations --epochs 10
  python train.py --soup ~/runs/tune-a ~/runs/tune-b --data fer2013/ --out ~/runs/soup   # average them
  python train.py --recipe best --model-option width=0.5 --teacher ~/runs/best --data fer2013/   # distil

The run directory (--out, default runs/ARCH-TIME, or runs/RECIPE-ARCH-TIME with --recipe) gets
best.keras, last-NNNN.keras, history.csv, history.png, confusion.png, calibration.png,
classification_report.txt, config.json, summary.txt, state.json (for --resume), metrics.json and
validation.npz.
The options by topic, the recipes' settings and the resume rules: docs/training.md.
"""


def build_parser():
    from keras_fer.recipes import RECIPES

    parser = Parser(
        prog="train.py", description="Train a facial expression model on FER2013 (or the built-in demo faces).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--arch", help="architecture name, or 'list' to print the registry table (default: cnn4, or the recipe's)")
    add("--ablation", metavar="NAME",
        help="train every variant of one of the reports' ablations (batch-norm, augmentation, normalization, "
        "dnn-vs-cnn) into OUT/VARIANT and draw OUT/ablation-NAME.png; 'list' prints them. Other options apply "
        "to every variant (e.g. --epochs, --max-images, or --model-option width=0.25 where every variant's "
        "model takes it, as vgg12's do, to fit a CPU); each variant's options are checked before any trains")
    add("--soup", nargs="+", metavar="MODEL",
        help="average the weights of trained models of one architecture that started from one model (runs of "
        "--init-from with other seeds or schedules; a run directory, .keras file or 'packaged'), re-estimate "
        "BatchNorm statistics on the training split and write the soup to --out as a run directory, "
        "validated on the models' own split (--augment: measure the statistics on augmented faces). Costs about a "
        "third of a training epoch; no training")
    add("--summary", action="store_true", help="print the architecture's layer table and exit, without training")
    add("--recipe", choices=sorted(RECIPES), metavar="NAME",
        # argparse %-formats help text: a "12% s..." in a description would print the action's dict.
        help="a preset: " + "; ".join(f"{name}: {r['description']}".replace("%", "%%")
                                      for name, r in sorted(RECIPES.items()))
        + ". Explicit options override it.")
    add("--data", help="FER2013 CSV (label,feature or Kaggle's emotion,pixels,Usage; .gz ok), a folder holding "
        "train.csv.gz, or an image folder with class sub-folders. Default: $FER_DATA, else built-in demo faces")
    add("--val", help="validation split: first:N (first N rows train), fraction:F (stratified random), usage "
        "(Kaggle Usage column: PublicTest validates) or none (default: fraction:0.1)")
    add("--epochs", type=int, help="epochs to train (default 30); on a phased recipe (report002) it cuts the "
        "run to its first N epochs")
    add("--batch-size", type=int, help="images per batch (default 64)")
    add("--optimizer", choices=("adam", "adamw", "sgd", "sgd-nesterov", "adadelta"),
        help="optimizer (default adam); on a phased recipe, --optimizer or --lr replaces its phases with one")
    add("--lr", type=float, help="learning rate (default 1e-3)")
    add("--momentum", type=float, help="SGD momentum (default 0.9)")
    add("--schedule", choices=("constant", "plateau", "cosine", "step"),
        help="learning-rate schedule: constant, plateau (halve after 4 epochs without progress), cosine "
        "(to 0 at the last epoch) or step (x0.1 at each third) (default constant)")
    add("--warmup-epochs", type=int, help="linear learning-rate warm-up epochs (default 0)")
    add("--augment", help="on-the-fly augmentation: none, basic (shift, flip, rotate), strong (all), or a comma "
        "list of shift, flip, rotate, zoom, perspective, noise, blur, erase, in any order, a repeat counting once "
        "(default none)")
    add("--normalize", choices=("none", "unit", "image", "dataset"),
        help="input normalization, inside the model: none (0-255), unit ([0, 1]), image (per-image (x - mean) / "
        "std, report 002), dataset (training-set mean and std) (default unit)")
    add("--class-weight", action="store_true", default=None, help="weight the loss by inverse class frequency")
    add("--balanced", action="store_true", default=None, help="sample every class equally often")
    add("--label-smoothing", type=float, help="label smoothing of the cross-entropy (default 0)")
    add("--weight-decay", type=float, help="decoupled weight decay (default 0)")
    add("--early-stop", type=int, metavar="N", help="stop after N epochs without a better validation accuracy")
    add("--stop-at-accuracy", type=float, metavar="A",
        help="stop once validation accuracy reaches A (report 003: 0.66)")
    add("--seed", type=seed_value, help="seed of weights, split, shuffle and augmentation (default 0)")
    add("--split-seed", type=seed_value, help="seed of the validation split only (default: --seed); give runs of "
        "different --seed the same --split-seed to ensemble them on shared validation rows")
    add("--deterministic", action="store_true", default=None,
        help="enable TensorFlow op determinism: the same seed then gives the same history (slower)")
    add("--out", help="run directory (default runs/ARCH-TIME, or runs/RECIPE-ARCH-TIME with --recipe). Keep long "
        "runs outside the repository")
    add("--resume", action="store_true", default=None, help="continue the run in --out from its last finished epoch, "
        "with the options it started with (those given again must match; --epochs may change)")
    add("--init-from", metavar="MODEL",
        help="start from a trained model's weights (a .keras file, a run directory, or 'packaged') instead of "
        "random ones: fine-tune it, or give a finished run a second schedule")
    add("--teacher", nargs="+", metavar="MODEL",
        help="distil: train on these trained models' probabilities (run directories or 'packaged', validated on "
        "this run's split; several are averaged), softened by --temperature and mixed with the labels, to give "
        "a small model as much of a large one's accuracy as it can hold. The teachers run once over the "
        "training faces before epoch 1. With --val none any model will do; otherwise each must be a run validated "
        "on this run's split of the same data (so it never trained on its validation rows)")
    add("--teacher-weight", type=float, metavar="W",
        help="the teachers' share of each training target, in [0, 1] (default 0.5: the true class stays the "
        "largest)")
    add("--temperature", type=float, metavar="T",
        help="softens the teachers' probabilities: softmax(log(p) / T) (default 2)")
    add("--mixed-precision", action="store_true", default=None,
        help="mixed precision: bfloat16 compute on CPU (1.2-1.5x less CPU a training image for fervgg, "
        "1.5-1.8x for vgg12, on CPUs with AVX512_BF16 or AMX: bench/zoo_cost.py --policies), float16 on GPU; "
        "weights stay float32, and keras-fer evaluates and predicts with the model in float32")
    add("--strategy", choices=("default", "mirrored", "multi-worker"),
        help="distribution: default, mirrored (all local GPUs), "
        "multi-worker (reads TF_CONFIG; the chief writes the run)")
    add("--tensorboard", action="store_true", default=None,
        help="also write TensorBoard logs to OUT/tensorboard (needs pip install \"keras-fer[tensorboard]\")")
    add("--max-images", type=int, metavar="N", help="train on the first N training images only (quick trials); "
        "with --soup, re-estimate BatchNorm statistics on N images")
    add("--demo-faces", type=int, metavar="N", help="number of demo faces when no data is given (default 2100)")
    add("--model-option", action="append", default=[], metavar="KEY=VALUE",
        help="extra builder option, e.g. batch_norm=false or width=1.5 (repeatable)")
    add("--verbose", type=int, choices=(0, 1, 2), help="0 silent, 1 progress bar, 2 one line per epoch "
        "(default: 1 on a terminal, 2 otherwise)")
    return parser


def parse_value(text):
    lowered = text.strip().lower()
    if lowered in ("true", "false", "yes", "no"):
        return lowered in ("true", "yes")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_model_options(items):
    """`["width=1.5", "head=avg"]` -> `{"width": 1.5, "head": "avg"}` (values as `parse_value` reads them).

    Raises:
        FerOptionError: for an item without `=` or without a key.
    """
    options = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise FerOptionError(f"--model-option takes KEY=VALUE. Received: model_option={item!r}")
        options[key.strip()] = parse_value(value)
    return options


def config_from_args(args, base=None):
    """The `TrainConfig` of the command line: `--recipe`'s options, then `base` (a resumed run's
    own, as a dict), then the options given."""
    from keras_fer.recipes import cut_phases, recipe
    from keras_fer.training import TrainConfig

    values = {**(recipe(args.recipe) if args.recipe else {}), **(base or {})}
    names = {field.name for field in dataclasses.fields(TrainConfig)}
    for name in names:
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    if values.get("phases") and (args.optimizer is not None or args.lr is not None):
        # An explicit optimizer or rate replaces the recipe's phases with one phase.
        total = sum(int(phase["epochs"]) for phase in values.pop("phases"))
        values.setdefault("epochs", total)
    elif args.epochs is not None and values.get("phases"):
        values["phases"] = cut_phases(values["phases"], args.epochs)
        values.pop("epochs")
    options = parse_model_options(args.model_option)
    if options:
        values["model_options"] = {**values.get("model_options", {}), **options}
    return TrainConfig(**values)


# What a --resume takes from the run's config.json when not given: all but these (a store_true
# --tensorboard could not be turned off again).
NOT_RESUMED = ("out", "resume", "verbose", "tensorboard")


def resumed_options(args):
    """With `--resume --out RUN`: the options RUN started with (its config.json), for the options
    not given again; None without --resume or when the config cannot be read (the resume's own
    check then says why)."""
    from keras_fer.files import read_json_object
    from keras_fer.training import TrainConfig

    if not args.resume or not args.out:
        return None
    try:
        config = read_json_object(Path(args.out) / "config.json")
    except FerError:
        return None
    saved = config.get("options")
    if not isinstance(saved, dict):
        return None
    names = {field.name for field in dataclasses.fields(TrainConfig)} - set(NOT_RESUMED)
    options = {name: value for name, value in saved.items() if name in names}
    if isinstance(config.get("data"), str):  # the data's absolute path: --resume from any folder
        options["data"] = config["data"]
    if args.epochs is not None and options.get("phases"):
        options["phases"] = _uncut_phases(options["phases"])  # a new --epochs cuts the recipe anew
    return options


def _uncut_phases(phases):
    """The whole phases of the recipe that `phases` (a run's, cut by --epochs) are a cut of, or
    `phases` themselves when no recipe's are."""
    from keras_fer.recipes import RECIPES, cut_phases

    try:
        total = sum(int(phase["epochs"]) for phase in phases)
        for values in RECIPES.values():
            whole = values.get("phases")
            if whole and sum(int(phase["epochs"]) for phase in whole) >= total and (
                    [dict(phase) for phase in cut_phases(whole, total)] == [dict(phase) for phase in phases]):
                return list(whole)
    except (TypeError, ValueError, KeyError, FerError):  # a damaged record: the resume's check says so
        pass
    return phases


def run_config(args):
    """`config_from_args` of a training run, whose `--recipe` names its default folder; a
    `--resume` takes the options not given from the run (`resumed_options`)."""
    base = resumed_options(args)
    if base is None:
        config = config_from_args(args)
    else:
        try:  # a damaged or hand-edited record: one line, not a traceback from deep inside
            config = config_from_args(args, base).validate()
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            from keras_fer.loading import one_line

            raise FerDataError(f"--resume: the run's options cannot be used ({one_line(error)})",
                               Path(args.out) / "config.json", field="options") from None
    if config.out is None and args.recipe and not args.resume:  # runs/cnn4-... looked like a plain --arch run
        config.out = f"runs/{args.recipe}-{config.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    return config


def check_ablation_options(args):
    """The `--ablation` run's option clashes (needs no TensorFlow). Returns the ablation."""
    from keras_fer import ablation

    chosen = ablation.get_ablation(args.ablation)
    if args.recipe not in (None, chosen.recipe):
        raise FerOptionError(f"ablation {chosen.name} runs recipe {chosen.recipe}. Received: recipe={args.recipe!r}")
    if args.resume:
        raise FerOptionError("--ablation resumes its unfinished variants by itself: drop --resume")
    if args.teacher:
        raise FerOptionError("--ablation trains each report's recipe as the report did: drop --teacher")
    if args.init_from:  # one model's weights fit at most one variant (dnn-vs-cnn, normalization)
        raise FerOptionError("--ablation trains each variant from scratch, as the reports did: drop --init-from")
    if args.summary:
        raise FerOptionError("--summary prints one architecture and trains nothing: drop --ablation")
    if args.val is not None:
        from keras_fer.data import parse_split

        if parse_split(args.val)[0] == "none":  # it drew a table of "-" and no curves
            raise FerOptionError("--ablation compares the variants' validation accuracy: drop --val none")
    given = parse_model_options(args.model_option)
    for _, overrides in chosen.variants:  # an option that sets what the ablation varies would make its variants equal
        clashes = [(name, f"--model-option {name}") for name in overrides.get("model_options", {}) if name in given]
        clashes += [(key, f"--{key}") for key in overrides  # --arch is the CNN that dnn-vs-cnn compares
                    if key not in ("model_options", "arch") and getattr(args, key, None) is not None]
        if clashes:
            name, option = clashes[0]
            raise FerOptionError(f"--ablation {chosen.name} sets {name} itself in its variants: drop {option}")
    return chosen


def run_ablation(args, chosen):
    """Train the variants of `chosen`, the ablation `check_ablation_options` checked."""
    from keras_fer import ablation

    args.recipe = chosen.recipe
    out = args.out or "runs/ablations"
    args.out = None
    base = config_from_args(args)
    try:
        figure, table, rows = ablation.run_ablation(chosen.name, base, out)
    except KeyboardInterrupt as error:  # the run said what is saved
        print("to go on with the ablation, run the same command again: each variant resumes where it stopped, and "
              "the finished ones are reused", file=sys.stderr)
        return interrupted_exit_code(error)
    for row in rows:
        print(ablation.describe_run(row["label"], row))
    print(f"figure: {figure}\ntable: {table}")
    return 0


def check_soup_options(args):
    """The `--soup` run's option clashes (needs no TensorFlow)."""
    for flag, given in (("--resume", args.resume), ("--init-from", args.init_from), ("--ablation", args.ablation),
                        ("--teacher", args.teacher)):
        if given:
            raise FerOptionError(f"--soup averages finished models and trains nothing: drop {flag}")
    # What shapes training only: a soup accepted and ignored them (--lr -1, --epochs 0).
    training_only = ("recipe", "arch", "epochs", "batch_size", "optimizer", "lr", "momentum", "schedule",
                     "warmup_epochs", "deterministic", "normalize", "class_weight", "balanced", "label_smoothing",
                     "weight_decay", "early_stop", "stop_at_accuracy", "teacher_weight", "temperature",
                     "mixed_precision", "strategy", "tensorboard", "model_option")
    given = [name for name in training_only if getattr(args, name, None) not in (None, [])]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise FerOptionError(f"--soup averages finished models and trains nothing: drop {flag}. "
                             f"Received: {given[0]}={getattr(args, given[0])!r}")
    if args.max_images is not None:  # -1 re-estimated BatchNorm on no image and kept the averages
        check_integer(args.max_images, "--max-images", 1, received="max_images")


def run_soup(args):
    """Average the `--soup` models, whose options `check_soup_options` checked."""
    from keras_fer import soup

    config = dataclasses.replace(config_from_args(args), val=args.val)
    if config.out is None:
        config.out = "runs/soup-" + time.strftime("%Y%m%d-%H%M%S")

    result = soup.make_soup(config, args.soup, progress=counting_bar("img", enabled=args.verbose in (None, 1)))
    print(f"run directory: {result['run_dir']}")
    return 0


def check_before_tensorflow(args):
    """Check what needs no TensorFlow before its import (4-5 s), so a clash of options or a
    mistyped path fails at once, in the order the commands check them. Returns what the command
    runs: a training run's config, an `--ablation`'s `Ablation`, or None for the other commands."""
    from keras_fer.data import existing_data_path

    if args.arch == "list" or args.ablation == "list":
        return None
    if args.summary and (args.soup or args.resume):  # a soup was made, or another model's table printed
        raise FerOptionError(f"--summary prints one architecture's table and trains nothing: drop "
                             f"{'--soup' if args.soup else '--resume'}")
    if args.soup:
        from keras_fer.loading import resolve_model_argument

        check_soup_options(args)
        existing_data_path(args.data)
        for name in args.soup:
            resolve_model_argument(name, "--soup")
        return None
    if args.ablation:
        chosen = check_ablation_options(args)
        existing_data_path(args.data)
        return chosen
    if args.summary:
        return None
    from keras_fer.training import check_paths

    config = run_config(args)
    check_paths(config)
    return config


@command
def main(argv=None):
    args = build_parser().parse_args(argv)
    checked = check_before_tensorflow(args)
    import_tensorflow_quietly()
    if args.arch == "list":
        from keras_fer.models import registry_table

        print(registry_table())
        return 0
    if args.ablation == "list":
        from keras_fer.ablation import ablation_table

        print(ablation_table())
        return 0
    if args.soup:
        return run_soup(args)
    if args.ablation:
        return run_ablation(args, checked)
    if args.summary:
        from keras_fer.models import build_model, summary_table

        config = config_from_args(args)
        config.validate()
        print(summary_table(build_model(config.arch, **config.model_options)))
        return 0
    from keras_fer.training import train

    try:
        result = train(checked, progress=counting_bar("img", enabled=args.verbose in (None, 1)))
    except KeyboardInterrupt as error:  # the run said what is saved
        return interrupted_exit_code(error)
    if not result.written:  # a multi-worker run's other worker: its scratch folder is gone
        print(f"worker done ({result.epochs_run} epochs, {result.seconds:.0f} s): the chief wrote the run, "
              f"{result.run_dir}")
        return 0
    took = f"{result.seconds:.0f} s"
    if checked.resume:  # this invocation's time alone said "2 s" for a run of hours
        from keras_fer.training import read_history

        try:
            seconds = [row.get("seconds") for row in read_history(result.run_dir / "history.csv")]
            epochs = sum(value for value in seconds if value is not None and math.isfinite(value))
            took = f"{epochs:.0f} s of epochs in all, {result.seconds:.0f} s now"
        except (OSError, ValueError, TypeError, FerError):
            pass
    if math.isnan(result.best_val_accuracy):  # --val none: nothing to choose a best epoch on
        print(f"run directory: {result.run_dir} (last epoch {result.best_epoch}, no validation split, {took})")
    else:
        print(f"run directory: {result.run_dir} (best epoch {result.best_epoch}, "
              f"validation accuracy {result.best_val_accuracy:.4f}, {took})")
    calibrate = ("" if math.isnan(result.best_val_accuracy) else
                 f"; python -m keras_fer.calibrate {result.run_dir} (confidences that match its accuracy)")
    print(f"next: python visualize.py report {result.run_dir} (every figure, one page); "
          f"python predict.py FILE --model {result.run_dir} (a submission, or photos' faces){calibrate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
