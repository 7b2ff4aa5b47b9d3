"""Ablations: the comparisons the reports discuss, each one command and one figure.

An ablation trains a recipe once per variant (the recipe as it is, then with one thing changed)
into `OUT/<recipe>[-<change>]`, and draws their validation curves side by side in
`OUT/ablation-<name>.png`, with a table in `OUT/ablation-<name>.md`. Variant runs are ordinary
run directories: a finished one is reused (the 002 ablations share their baseline when given the
same `OUT`), an unfinished one is resumed.

Example:
>>> [ablation.name for ablation in ABLATIONS.values()]
['batch-norm', 'augmentation', 'normalization', 'dnn-vs-cnn']

    python train.py --ablation batch-norm --data ../shared/fer2013 --out ~/runs/ablations
"""

import contextlib
import dataclasses
import math
import re
from pathlib import Path

from keras_fer.errors import FerDataError, FerOptionError


@dataclasses.dataclass(frozen=True)
class Ablation:
    """One question: a recipe and the variants of it to compare.

    Args:
        name: the `--ablation` name.
        report: the report that asks the question.
        question: what is compared, for titles and tables.
        recipe: the recipe every variant starts from.
        variants: `(label, overrides)` pairs; overrides are `TrainConfig` fields (`model_options`
            is merged, not replaced). The first variant is the reference. `{arch}` in a label or
            an option value stands for the base architecture (the recipe's, or `--arch`).
        reported: the report's own figures, quoted in the table.
    """

    name: str
    report: str
    question: str
    recipe: str
    variants: tuple
    reported: str = ""


ABLATIONS = {
    ablation.name: ablation
    for ablation in (
        Ablation(
            "batch-norm", "002", "with / without BatchNorm after every conv", "report002",
            (("with BatchNorm", {}), ("without BatchNorm", {"model_options": {"batch_norm": False}})),
            "public score 0.68124 with BatchNorm, 0.56338 without",
        ),
        Ablation(
            "augmentation", "002", "with / without augmentation (shift, flip, rotation, crop)", "report002",
            (("with augmentation", {}), ("without augmentation", {"augment": "none"})),
            "public score 0.68124 with augmentation, 0.64781 without",
        ),
        Ablation(
            "normalization", "002", "with / without per-image normalization ((x - mean) / std)", "report002",
            (("per-image (x - mean) / std", {}), ("x / 255 only", {"normalize": "unit"})),
            "public score 0.64781 with normalization, 0.64530 without",
        ),
        Ablation(
            "dnn-vs-cnn", "004", "CNN vs DNN at the same parameter count", "report004",
            (("CNN ({arch})", {}),
             ("DNN matched to {arch}", {"arch": "dnn-matched", "model_options": {"match": "{arch}"}}),
             ("dnn (the report's DNN, 3.76M)", {"arch": "dnn"})),
            "CNN ~0.60 after 100 epochs, DNN ~0.30",
        ),
    )
}


def list_ablations():
    return list(ABLATIONS)


def get_ablation(name):
    if name not in ABLATIONS:
        raise FerOptionError(f"unknown ablation: choose one of {', '.join(ABLATIONS)}. Received: ablation={name!r}")
    return ABLATIONS[name]


def ablation_table():
    """The registry as a text table, for `train.py --ablation list`."""
    rows = [("name", "report", "recipe", "question", "variants")]
    rows += [(a.name, a.report, a.recipe, a.question,
              " | ".join(label.replace("{arch}", "--arch") for label, _ in a.variants))  # as --arch fills it in
             for a in ABLATIONS.values()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in rows)


def variant_slug(recipe, overrides):
    """The run directory name of a variant: the recipe, then each change as key=value."""
    parts = [recipe]
    for key, value in sorted(overrides.items()):
        if isinstance(value, dict):
            parts += [f"{k}={_text(v)}" for k, v in sorted(value.items())]
        else:
            parts.append(f"{key}={_text(value)}")
    return "-".join(parts)


def _text(value):
    return str(value).lower() if isinstance(value, bool) else str(value)


def _fill(value, arch):
    if isinstance(value, dict):
        return {key: _fill(item, arch) for key, item in value.items()}
    return value.format(arch=arch) if isinstance(value, str) else value


def get_recipe_arch(ablation):
    from keras_fer.recipes import recipe

    return recipe(ablation.recipe).get("arch")


def _matched_to_base(overrides):
    """Whether a variant's model is matched in size to the base architecture (`match: "{arch}"`)."""
    return overrides.get("model_options", {}).get("match") == "{arch}"


def variant_configs(ablation, base, out, base_parameters=None):
    """`(label, TrainConfig)` per variant: `base` (a `TrainConfig` of the recipe plus the
    user's options) with the variant's overrides, its run directory under `out`. The user's
    `--model-option`s are the base architecture's: a variant of another architecture does not
    take them, and one matched to the base (`match: "{arch}"`) is matched to `base_parameters`,
    the base model's parameter count with those options, when given."""
    configs = []
    prefix = ablation.recipe if base.arch == get_recipe_arch(ablation) else f"{ablation.recipe}-{base.arch}"
    for label, overrides in ablation.variants:
        matched = _matched_to_base(overrides)
        overrides = _fill(overrides, base.arch)
        if matched and base.model_options and base_parameters is not None:
            overrides = {**overrides, "model_options": {**overrides["model_options"], "match": int(base_parameters)}}
        label = label.format(arch=base.arch)
        values = {key: value for key, value in overrides.items() if key != "model_options"}
        own = overrides.get("arch", base.arch) == base.arch
        options = {**(base.model_options if own else {}), **overrides.get("model_options", {})}
        run_dir = Path(out) / variant_slug(prefix, overrides)
        config = dataclasses.replace(base, **values, model_options=options, out=str(run_dir),
                                     resume=(run_dir / "state.json").is_file())
        configs.append((label, config))
    return configs


def run_ablation(name, base, out, train=None):
    """Train (or reuse) every variant of ablation `name`, then write its figure and table.

    Args:
        name: an ablation of `ABLATIONS`.
        base: the `TrainConfig` every variant starts from (the ablation's recipe plus the
            user's options, e.g. a shorter `epochs` or `max_images` to fit a CPU).
        out: the folder that receives one run directory per variant.
        train: the training function (default `keras_fer.training.train`).

    Returns:
        `(figure_path, table_path, rows)` with one row dict per variant.
    """
    from keras_fer import models, training

    ablation = get_ablation(name)
    train = train or training.train
    out = Path(out)
    base_parameters = None
    if base.model_options and any(_matched_to_base(overrides) for _, overrides in ablation.variants):
        models.check_model_options(base.arch, base.model_options)
        base_parameters = sum(models.parameter_counts(models.build_model(base.arch, **base.model_options)))
    configs = variant_configs(ablation, base, out, base_parameters)
    finished = {}
    for label, config in configs:  # every variant's options, before the first one trains for hours
        config.validate()
        models.check_model_options(config.arch, config.model_options)
        finished[config.out] = _check_reused(label, config)
    for index, (label, config) in enumerate(configs, start=1):
        if finished[config.out]:
            print(f"ablation {name}: variant {index}/{len(configs)} '{label}': reusing {config.out} (finished)",
                  flush=True)
            continue
        action = "resuming" if config.resume else "training"
        print(f"ablation {name}: variant {index}/{len(configs)} '{label}': {action} {config.out}", flush=True)
        with _other_options(config):
            train(config)
    return write_ablation(ablation, [(label, Path(config.out)) for label, config in configs], out)


@contextlib.contextmanager
def _other_options(config):
    """A variant's run made with other options: the way out is another --out (the user gave no
    --resume, and --ablation refuses one)."""
    try:
        yield
    except FerOptionError as error:
        if not str(error).startswith("--resume with options that differ"):
            raise
        differences = str(error).split(f"{config.out}: ", 1)[-1]
        raise FerOptionError(f"{config.out} holds this variant trained with other options ({differences}): "
                             "give the ablation another --out") from None


def _check_reused(label, config):
    """Whether the variant's run in `config.out` is finished (then reused as it is, once its
    options are checked as `--resume` checks them, and its data is the same file). Refuses one
    that trained more epochs than `config` asks for: the variants would compare at two lengths."""
    from keras_fer.data import existing_data_path
    from keras_fer.training import _check_resume, read_state, trains_nothing

    if not config.resume:
        return False
    try:
        state = read_state(Path(config.out) / "state.json")
    except (FerDataError, OSError):
        return False  # training says what is wrong with it
    with _other_options(config):
        saved = _check_resume(Path(config.out), config)
    data = existing_data_path(config.data, "train")
    if saved.get("data") != (None if data is None else str(Path(data).resolve())):
        return False  # another spelling or another file: training compares the data by fingerprint
    if state["epoch"] > config.total_epochs:
        raise FerOptionError(f"variant '{label}' in {config.out} has trained {state['epoch']} epochs, more than the "
                             f"{config.total_epochs} asked for: the variants would compare at two lengths; give "
                             f"--epochs {state['epoch']}, or another --out")
    return trains_nothing(state, config) and (Path(config.out) / "metrics.json").is_file()


def summarize_run(run_dir):
    """Headline figures of one run directory (from history.csv and config.json)."""
    from keras_fer.loading import trained_on_demo_faces
    from keras_fer.training import HISTORY_COLUMNS

    history, config = _read_history(run_dir), _read_config(run_dir)
    best = _best_row(history)
    return {
        "run": str(run_dir), "arch": config.get("arch"), "epochs": len(history),
        "best_epoch": best["epoch"] if best else None,
        "best_val_accuracy": best["val_accuracy"] if best else None,
        # NaN when an epoch has no CPU time (a run from before it was measured, or resumed since):
        # not the 0.0 a missing column summed to.
        "cpu_minutes": sum(row.get("cpu_seconds", math.nan) for row in history) / 60,
        "train_images": config.get("train_images"), "val_images": config.get("val_images"),
        "demo": trained_on_demo_faces(config),
        "history": {key: [row.get(key, float("nan")) for row in history] for key in HISTORY_COLUMNS},
    }


def _run_file(run_dir, name):
    file = Path(run_dir) / name
    if not file.is_file():
        soup = " (a soup has none)" if name == "history.csv" else ""
        raise FerDataError(f"no {name}: not a finished run directory{soup}", run_dir)
    return file


def _read_config(run_dir):
    from keras_fer.files import read_json_object

    return read_json_object(_run_file(run_dir, "config.json"))


def _read_history(run_dir):
    from keras_fer.training import read_history

    return read_history(_run_file(run_dir, "history.csv"))


def _best_row(history):
    """The history row with the highest validation accuracy, or None when no epoch was scored."""
    scored = [row for row in history if math.isfinite(row.get("val_accuracy", math.nan))]
    return max(scored, key=lambda row: row["val_accuracy"]) if scored else None


def handed_on(source):
    """The run and epoch whose weights the model file `source` holds.

    Returns:
        `(folder, epoch)` when `source` names a run directory or a model file in one:
        `best.keras` (or the folder) is that run's best epoch, `last-000N.keras` epoch N,
        `last.keras` its last epoch. Otherwise the `source` text, for what cannot be followed:
        `"packaged"`, another `.keras` file, a soup (it has no history), a path that does not
        exist (or was relative to another folder).
    """
    path = Path(source)
    folder, name = (path, "best.keras") if path.is_dir() else (path.parent, path.name)
    if source == "packaged" or not (folder / "history.csv").is_file():
        return str(source)
    last = re.fullmatch(r"last-(\d+)\.keras", name)
    if last:
        return folder.resolve(), int(last.group(1))
    history = _read_history(folder)
    if name == "last.keras":
        return folder.resolve(), (int(history[-1]["epoch"]) if history else 0)
    if name != "best.keras":
        return str(source)
    best = _best_row(history) or (history[-1] if history else None)
    return folder.resolve(), (int(best["epoch"]) if best else 0)


def started_from(run_dir):
    """Where a run's first weights came from (its `--init-from`).

    Runs trained since the `init_from` record say it themselves: the parent's folder and the
    epoch it had reached when training started (`handed_on`, measured then, so a parent resumed
    later does not move it). Older runs only kept the `--init-from` text, followed now.

    Returns:
        `(folder, epoch)`, or the `init_from` text for what cannot be followed (see
        `handed_on`), or None for a fresh start.
    """
    from keras_fer.loading import run_options

    config = _read_config(run_dir)
    record = config.get("init_from")
    if isinstance(record, dict) and record.get("run"):
        return Path(record["run"]), int(record["epoch"])
    source = run_options(config, Path(run_dir) / "config.json").get("init_from")
    if not source:
        return None
    return handed_on(source)


def lineage(run_dir):
    """The runs a run continued, through `--init-from`: `(ancestors, origin)`.

    `ancestors` lists `(folder, epoch)` from the parent back to the first run with a history;
    `origin` is what that first run started from when it cannot be followed (`"packaged"`, a
    `.keras` file), else None.

    Raises:
        FerDataError: when the chain loops.
    """
    ancestors, seen, current = [], {Path(run_dir).resolve()}, run_dir
    while True:
        parent = started_from(current)
        if not isinstance(parent, tuple):
            return ancestors, parent
        folder, epoch = parent
        if folder.resolve() in seen:
            raise FerDataError("its --init-from chain comes back to a run it started from", folder)
        seen.add(folder.resolve())
        ancestors.append((folder, epoch))
        current = folder


def _cpu_seconds(run_dir, epochs=None):
    """Per-epoch CPU seconds of a run's first `epochs` epochs (all by default)."""
    history = [row for row in _read_history(run_dir) if epochs is None or row["epoch"] <= epochs]
    missing = [row["epoch"] for row in history if not math.isfinite(row.get("cpu_seconds", math.nan))]
    if missing:
        raise FerDataError(f"no cpu_seconds for epoch {missing[0]} (a run from before keras-fer measured CPU "
                           "time, or one resumed since)", Path(run_dir) / "history.csv")
    return [row["cpu_seconds"] for row in history]


def cpu_hours_column(run_dir, ancestors=None):
    """CPU-hours spent by the end of each of a run's epochs, for `compare_figure(x="cpu_hours")`.

    Args:
        run_dir: a run directory.
        ancestors: the `(folder, epoch)` runs whose CPU time comes first (default
            `lineage(run_dir)[0]`: the epochs its `--init-from` ancestors spent to produce the
            weights it started from, so a lineage of runs reads as one curve; the packaged
            model's own training is not counted). `[]` counts from zero.

    Returns:
        `(hours, start)`: a list with one cumulative figure per epoch, and the hours before epoch 1.
    """
    if ancestors is None:
        ancestors = lineage(run_dir)[0]
    start = sum(sum(_cpu_seconds(folder, epoch)) for folder, epoch in ancestors) / 3600
    hours, total = [], start
    for seconds in _cpu_seconds(run_dir):
        total += seconds / 3600
        hours.append(total)
    return hours, start


def accuracy_text(row):
    """A `summarize_run` row's best validation accuracy as text, `-` when the run has none."""
    return "-" if row["best_val_accuracy"] is None else f"{row['best_val_accuracy']:.4f}"


def cpu_text(row):
    """A `summarize_run` row's CPU minutes as text, `-` when some epoch's were not measured."""
    return f"{row['cpu_minutes']:.1f}" if math.isfinite(row["cpu_minutes"]) else "-"


def describe_run(label, row, note=""):
    """One line for a `summarize_run` row: the label, its run directory (and "demo faces" for a
    run on the built-in demo faces), accuracy, best epoch, CPU time, then `note` (e.g.
    `"; starts at 0.30 CPU-hours, after a"`)."""
    marks = ([] if str(row["run"]) == label else [str(row["run"])]) + (["demo faces"] if row.get("demo") else [])
    where = f" ({', '.join(marks)})" if marks else ""
    return (f"{label}{where}: validation accuracy {accuracy_text(row)} (epoch {row['best_epoch'] or '-'} of "
            f"{row['epochs']}), {cpu_text(row)} CPU-min{note}")


def _changes(ablation, run_dir):
    """`" with arch=cnn4, epochs=8, ..."`: the options the reference run changed from the recipe."""
    from keras_fer.files import read_json_object
    from keras_fer.loading import run_options
    from keras_fer.recipes import recipe
    from keras_fer.training import TrainConfig

    path = Path(run_dir) / "config.json"
    options = run_options(read_json_object(path), path)
    if not options:
        return ""
    values = recipe(ablation.recipe)
    changed = []
    if values.get("phases") and options.get("phases") is None:
        values.pop("phases")  # replaced by an explicit optimizer (see `train.py --optimizer`)
        changed.append(f"optimizer={options['optimizer']}, lr={options['lr']} instead of its phases")
    reference = TrainConfig(**values).to_json()
    ignored = ({"data", "out", "resume", "verbose", "tensorboard", "strategy"}
               | ({"optimizer", "lr"} if changed else set()))
    changed += [f"{key}={options[key]}" for key in sorted(options)
                if key not in ignored and key in reference and options[key] != reference[key]]
    return f" with {', '.join(changed)}" if changed else ""


def write_ablation(ablation, runs, out):
    """Draw `OUT/ablation-<name>.png` and write `OUT/ablation-<name>.md` from finished runs."""
    from keras_fer.files import write_text
    from keras_fer.plots import compare_figure, save_figure

    rows = [{"label": label, **summarize_run(run_dir)} for label, run_dir in runs]
    first = rows[0]
    title = (f"Report {ablation.report}: {ablation.question}\n"
             f"({first['arch']}, {first['train_images'] or '?'} training "
             f"images, {first['epochs']} epochs, recipe {ablation.recipe})")
    figure = compare_figure({row["label"]: row["history"] for row in rows}, title=title)
    figure_path = Path(out) / f"ablation-{ablation.name}.png"
    save_figure(figure, figure_path)
    lines = [
        f"# Ablation `{ablation.name}`: {' '.join(title.split())}", "",
        f"Recipe `{ablation.recipe}`{_changes(ablation, runs[0][1])}; the report: {ablation.reported}.", "",
        "| variant | model | run | train / val images | epochs | best epoch | validation accuracy | CPU min |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | `{row['arch']}` | `{Path(row['run']).name}` | {row['train_images']} / "
            f"{row['val_images']} | {row['epochs']} | {row['best_epoch'] or '-'} | {accuracy_text(row)} | "
            f"{cpu_text(row)} |"
        )
    table_path = Path(out) / f"ablation-{ablation.name}.md"
    write_text(table_path, "\n".join(lines) + "\n")
    return figure_path, table_path, rows
