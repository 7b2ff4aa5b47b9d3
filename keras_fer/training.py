"""Training: `TrainConfig` -> `model.fit` with callbacks -> a complete run directory.

A run directory is the unit of work. It holds:

- `best.keras`: the best model by validation accuracy (takes raw faces, outputs logits);
- `last-NNNN.keras` + `state.json`: the last finished epoch with optimizer, callback and
  dropout-generator state, for `--resume` (state.json names the model file);
- `history.csv`: loss, accuracy, val_loss, val_accuracy, lr, seconds per epoch;
- `config.json`: every option, the data fingerprint, class prior and library versions;
- `summary.txt`, `history.png`, `confusion.png`, `calibration.png` (reliability diagram),
  `classification_report.txt`, `metrics.json` (with the calibration: ECE, NLL),
  `validation.npz` (labels and probabilities of the best model on the validation split).

Every file is written atomically (a temporary file, then a rename), so a crash or `kill -9`
never leaves a corrupt file, and `--resume` continues from the last finished epoch with the
same batches an uninterrupted run would have seen.

Example:
>>> from keras_fer.training import TrainConfig, train
>>> result = train(TrainConfig(arch="cnn4", epochs=2, out="runs/demo"))  # doctest: +SKIP
"""

import contextlib
import csv
import dataclasses
import importlib.util
import io
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from keras_fer.classes import CLASS_NAMES, NUM_CLASSES
from keras_fer.errors import FerDataError, FerModelError, FerOptionError, short_list
from keras_fer.files import (
    abandoned_temporaries,
    atomic_path,
    check_not_inside,
    read_json_object,
    write_json,
    write_text,
)
from keras_fer.loading import check_model_file, one_line

OPTIMIZERS = ("adam", "adamw", "sgd", "sgd-nesterov", "adadelta")
SCHEDULES = ("constant", "plateau", "cosine", "step")
STRATEGIES = ("default", "mirrored", "multi-worker")
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "cpu_seconds")
DEMO_FACES = 2100
# Builder arguments that training owns: logits out (the loss takes logits), 7 classes, raw faces in.
RESERVED_MODEL_OPTIONS = {"softmax", "num_classes", "preprocessing", "input_shape"}
# Options that may differ when a run is resumed; every other option must match the run's.
# "data" by its spelling too: --resume compares the data itself, by its fingerprint.
RESUMABLE_CHANGES = {"epochs", "out", "resume", "verbose", "tensorboard", "strategy", "data"}


@dataclasses.dataclass
class TrainConfig:
    """Every training option. The CLI maps flags onto it; recipes are overrides of it.

    Args:
        arch: a registered architecture (`keras_fer.models.list_models()`).
        data: a FER2013 file or folder; None reads `FER_DATA`, else the built-in demo faces.
        val: validation split: `first:N`, `fraction:F`, `usage` or `none`.
        epochs, batch_size: the training length and batch size.
        optimizer: one of `OPTIMIZERS`; lr, momentum: its learning rate and momentum (SGD).
        schedule: learning-rate schedule, one of `SCHEDULES`; warmup_epochs: linear warm-up.
        phases: optional sequence of `{"optimizer", "lr", "epochs"}` run one after another
            (report 002's Adadelta-then-SGD); overrides optimizer, lr and epochs.
        augment: `none`, `basic`, `strong` or a comma list (see `pipeline.AUGMENTATIONS`).
        normalize: `none`, `unit`, `image` or `dataset` (done inside the model).
        class_weight: weight the loss by inverse class frequency.
        balanced: sample classes equally often.
        label_smoothing, weight_decay: regularization.
        early_stop: patience in epochs on validation accuracy (None: off).
        stop_at_accuracy: stop once validation accuracy reaches this (report 003).
        seed: seeds weights, split, shuffle and augmentation.
        split_seed: seeds the validation split instead (None: `seed`), so that runs with
            different seeds validate on the same rows and can be ensembled on them.
        deterministic: enable TensorFlow op determinism (slower).
        out: the run directory.
        resume: continue the run in `out` from its last finished epoch.
        init_from: start from the weights of this trained model (a `.keras` file or run
            directory of the same architecture and options) instead of random ones: fine-tuning,
            or a second schedule after a finished one. `"packaged"` is the packaged model.
        teacher: distil from these trained models (run directories or `"packaged"`, validated on
            this run's split): train on their softened probabilities mixed with the labels
            (`keras_fer.distill`); None trains on the labels alone.
        teacher_weight: the teachers' share of each training target, in [0, 1].
        temperature: softens the teachers' probabilities (`softmax(log(p) / T)`).
        mixed_precision: bfloat16 compute on CPU, float16 on GPU.
        strategy: `default`, `mirrored` (local GPUs) or `multi-worker` (reads `TF_CONFIG`).
        tensorboard: also write TensorBoard logs to `out/tensorboard`.
        model_options: extra keyword arguments for the architecture's builder.
        demo_faces: how many demo faces to generate when no data is given.
        max_images: use only the first N training images (quick experiments).
        verbose: Keras' progress bar (1), one line per epoch (2), or silent (0); None picks 1 on a
            terminal and 2 otherwise.
    """

    arch: str = "cnn4"
    data: str = None
    val: str = "fraction:0.1"
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    schedule: str = "constant"
    warmup_epochs: int = 0
    phases: tuple = None
    augment: str = "none"
    normalize: str = "unit"
    class_weight: bool = False
    balanced: bool = False
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    early_stop: int = None
    stop_at_accuracy: float = None
    seed: int = 0
    split_seed: int = None
    deterministic: bool = False
    out: str = None
    resume: bool = False
    init_from: str = None
    teacher: tuple = None
    teacher_weight: float = 0.5
    temperature: float = 2.0
    mixed_precision: bool = False
    strategy: str = "default"
    tensorboard: bool = False
    model_options: dict = dataclasses.field(default_factory=dict)
    demo_faces: int = DEMO_FACES
    max_images: int = None
    verbose: int = None

    def validate(self):
        """Raise `FerOptionError` for any option out of range, in keras' "Received:" style."""
        from keras_fer.data import parse_split
        from keras_fer.models import list_models
        from keras_fer.models.layers import NORMALIZE_MODES
        from keras_fer.pipeline import AugmentConfig

        checks = [
            (self.arch in list_models(), f"--arch must be one of {', '.join(list_models())}", "arch"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}", "optimizer"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}", "schedule"),
            (self.strategy in STRATEGIES, f"--strategy must be one of {', '.join(STRATEGIES)}", "strategy"),
            (self.normalize in NORMALIZE_MODES, f"--normalize must be one of {', '.join(NORMALIZE_MODES)}",
             "normalize"),
            (int(self.epochs) >= 1, "--epochs must be at least 1", "epochs"),
            (int(self.batch_size) >= 1, "--batch-size must be at least 1", "batch_size"),
            (math.isfinite(float(self.lr)) and float(self.lr) > 0, "--lr must be a positive finite number", "lr"),
            (0.0 <= float(self.momentum) <= 1.0, "--momentum must be in [0, 1]", "momentum"),
            (0 <= int(self.seed) < 2**32, "--seed must be in [0, 2**32)", "seed"),
            (self.split_seed is None or 0 <= int(self.split_seed) < 2**32, "--split-seed must be in [0, 2**32)",
             "split_seed"),
            (0.0 <= float(self.label_smoothing) < 1.0, "--label-smoothing must be in [0, 1)", "label_smoothing"),
            (math.isfinite(float(self.weight_decay)) and float(self.weight_decay) >= 0,
             "--weight-decay must be a finite number >= 0", "weight_decay"),
            (self.early_stop is None or int(self.early_stop) >= 1, "--early-stop must be at least 1", "early_stop"),
            (self.stop_at_accuracy is None or 0 < float(self.stop_at_accuracy) <= 1,
             "--stop-at-accuracy must be in (0, 1]", "stop_at_accuracy"),
            (not (self.class_weight and self.balanced), "--class-weight and --balanced do not go together", "balanced"),
            (self.max_images is None or int(self.max_images) >= 1, "--max-images must be at least 1", "max_images"),
            (int(self.demo_faces) >= 7 * 2, "--demo-faces must be at least 14 (two a class)", "demo_faces"),
            (int(self.warmup_epochs) >= 0, "--warmup-epochs must be >= 0", "warmup_epochs"),
            (0.0 <= float(self.teacher_weight) <= 1.0, "--teacher-weight must be in [0, 1]", "teacher_weight"),
            (math.isfinite(float(self.temperature)) and float(self.temperature) > 0,
             "--temperature must be a positive finite number", "temperature"),
        ]
        for ok, message, name in checks:
            if not ok:
                raise FerOptionError(f"{message}. Received: {name}={getattr(self, name)!r}")
        for phase in self.phases or ():
            if phase.get("optimizer") not in OPTIMIZERS or int(phase.get("epochs", 0)) < 1:
                raise FerOptionError(f"each phase needs an optimizer of {', '.join(OPTIMIZERS)} and epochs >= 1. "
                                     f"Received: phase={phase!r}")
        shortest = min(int(phase["epochs"]) for phase in self.phases) if self.phases else int(self.epochs)
        if int(self.warmup_epochs) >= shortest:  # the rate would never reach --lr
            where = "each phase of the recipe" if self.phases else "the run (--epochs)"
            raise FerOptionError(f"--warmup-epochs must be shorter than {where}, {shortest} epoch"
                                 f"{'s' if shortest != 1 else ''}, or the learning "
                                 f"rate never reaches its peak. Received: warmup_epochs={self.warmup_epochs!r}")
        shaping = {name: getattr(self, name) for name, default in (("teacher_weight", 0.5), ("temperature", 2.0))
                   if float(getattr(self, name)) != default}
        if not self.teacher and shaping:
            raise FerOptionError("--teacher-weight and --temperature shape a teacher's targets: add --teacher. "
                                 f"Received: {', '.join(f'{name}={value!r}' for name, value in shaping.items())}")
        reserved = sorted(set(self.model_options) & RESERVED_MODEL_OPTIONS)
        if reserved:
            raise FerOptionError(
                f"--model-option cannot set {', '.join(reserved)}: training sets it. "
                f"Received: model_option={reserved[0]}"
            )
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise FerOptionError('--tensorboard needs the tensorboard package: pip install "keras-fer[tensorboard]"')
        # One text for equivalent specs ("shift,,flip" is "shift,flip"): config.json keeps it, --resume compares it.
        self.augment = AugmentConfig.parse(self.augment).spec
        if parse_split(self.val)[0] == "none":  # they watch val_accuracy: Keras warned and went on without them
            watching = [(flag, value) for flag, value in (
                ("--early-stop", self.early_stop), ("--stop-at-accuracy", self.stop_at_accuracy),
                ("--schedule plateau", self.schedule if self.schedule == "plateau" else None)) if value is not None]
            if watching:
                raise FerOptionError(f"{watching[0][0]} watches the validation accuracy, and --val none has none: "
                                     f"choose a validation split or drop {watching[0][0].split()[0]}")
        return self

    @property
    def effective_split_seed(self):
        """The seed of the validation split: `split_seed`, or `seed` when it is not given."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def total_epochs(self):
        return sum(int(p["epochs"]) for p in self.phases) if self.phases else int(self.epochs)

    def phase_list(self):
        """The phases as `(first_epoch, end_epoch, optimizer, lr)`."""
        phases = self.phases or (dict(optimizer=self.optimizer, lr=self.lr, epochs=self.epochs),)
        result, start = [], 0
        for phase in phases:
            end = start + int(phase["epochs"])
            result.append((start, end, phase["optimizer"], float(phase.get("lr", self.lr))))
            start = end
        return result

    def to_json(self):
        values = dataclasses.asdict(self)
        values["phases"] = list(self.phases) if self.phases else None
        # absolute, as the data's: `--resume --out RUN` from another folder finds them
        values["teacher"] = ([str(name) if str(name) == "packaged" else str(Path(name).resolve())
                              for name in self.teacher] if self.teacher else None)
        return values


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the run directory and its headline figures. `written` is False in a
    multi-worker run's other workers: they trained, and the chief wrote the run."""

    run_dir: Path
    epochs_run: int
    best_epoch: int
    best_val_accuracy: float
    seconds: float
    stopped_early: bool = False
    interrupted: bool = False
    written: bool = True


# --------------------------------------------------------------------------------------------
# Files


def save_model(model, path):
    """`model.save` to a temporary `.keras` file, then rename: never a half-written model."""
    with atomic_path(path) as temporary:
        os.unlink(temporary)
        model.save(str(temporary))


def write_history(path, rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def read_history(path):
    """A run's `history.csv`: one dict per epoch, `epoch` an int and every other column a float.
    An empty cell (a column added after the run's first epochs, e.g. cpu_seconds) reads as NaN.
    The one reader of history files (`--resume`, `visualize.py history`, `report`, `compare`).

    Raises:
        FerDataError: naming the file, the line and the column, for a file that is not UTF-8 CSV,
            has no `epoch` or `loss` column or no rows, a row with another number of fields than
            the header, or a value that is not a number (an epoch that is not an integer >= 1).
    """
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None or not any(name.strip() for name in header):
                raise FerDataError(f"empty file: expected the header {','.join(HISTORY_COLUMNS)}", path)
            header = [name.strip() for name in header]
            missing = [name for name in ("epoch", "loss") if name not in header]
            if missing:
                raise FerDataError(
                    f"missing column(s) {', '.join(missing)}: expected the history training writes "
                    f"({','.join(HISTORY_COLUMNS)}). Received: {one_line(','.join(header))}", path, 1)
            for fields in reader:
                if not fields:  # a blank line
                    continue
                line = reader.line_num
                if len(fields) != len(header):
                    raise FerDataError(f"expected {len(header)} fields, found {len(fields)}", path, line)
                rows.append({name: _history_value(name, text, path, line) for name, text in zip(header, fields)})
        except (UnicodeDecodeError, csv.Error) as error:
            raise FerDataError(f"not a readable CSV file ({one_line(error)})", path, reader.line_num) from None
    if not rows:
        raise FerDataError("no epochs after the header", path)
    return rows


def _history_value(name, text, path, line):
    value = text.strip()
    if name == "epoch":
        if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
            raise FerDataError(f"expected an epoch number (an integer >= 1). Received: {one_line(repr(text))}",
                               path, line, name)
        return int(value)
    if value == "":
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise FerDataError(f"expected a number. Received: {one_line(repr(text))}", path, line, name) from None


# --------------------------------------------------------------------------------------------
# Data


# The options that choose the images a run trains and validates on (`load_training_data`).
DATA_OPTIONS = ("data", "demo_faces", "seed", "val", "split_seed", "max_images")


def data_record(config, all_images):
    """What a run's config.json records of its data: the file (absolute, so visualize and
    --resume find it from any working directory; None for demo faces), the validation split
    and the data's fingerprint."""
    data = None if config.data is None and not os.environ.get("FER_DATA") else str(Path(all_images.source).resolve())
    return {"data": data, "val": config.val, "seed": config.seed, "data_fingerprint": all_images.fingerprint()}


def load_training_data(config, verbose=False):
    """Read the configured data (or demo faces) and split it. Returns `(train, val, all images)`;
    with `verbose`, says what was read and how it was split, in one line."""
    from keras_fer import data as data_module

    path = data_module.existing_data_path(config.data, "train")
    if path is None:
        from keras_fer.synthetic import generate

        print(
            f"notice: no --data and no FER_DATA: training on {config.demo_faces} built-in demo faces "
            "(cartoon faces, not FER2013). Point --data at FER2013 for real results.",
            file=sys.stderr,
        )
        images = generate(config.demo_faces, seed=config.seed).images
    else:
        images = data_module.read(path)
    if not images.labelled:
        raise FerOptionError(f"training needs labelled data; {images.source} has no labels. Received: data={path}")
    train_images, val_images = data_module.split(images, config.val, seed=config.effective_split_seed)
    if config.max_images:
        train_images = train_images.subset(np.arange(min(config.max_images, len(train_images))))
    if verbose:
        source = "demo faces" if path is None else str(path)
        seed = f", split seed {config.effective_split_seed}" if config.val.startswith("fraction") else ""
        held = f"{len(val_images):,} validating (--val {config.val}{seed})" if len(val_images) else (
            "no validation split (--val none)")
        cut = f" (--max-images: {len(train_images):,} of {len(images) - len(val_images):,})" if (
            config.max_images) else ""
        print(f"data: {source}: {len(train_images):,} training faces{cut}, {held}", flush=True)
    return train_images, val_images, images


# --------------------------------------------------------------------------------------------
# Model, optimizer, schedule


def make_optimizer(name, lr, config):
    import keras

    decay = float(config.weight_decay) or None
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr, weight_decay=decay)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=decay or 1e-4)
    if name in ("sgd", "sgd-nesterov"):
        return keras.optimizers.SGD(
            learning_rate=lr, momentum=config.momentum, nesterov=name == "sgd-nesterov", weight_decay=decay
        )
    if name == "adadelta":
        return keras.optimizers.Adadelta(learning_rate=lr, weight_decay=decay)
    raise FerOptionError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}. Received: optimizer={name!r}")


def scheduled_lr(config, epoch, base_lr, phase_start, phase_end):
    """Learning rate of `epoch` for the constant, cosine and step schedules and the warm-up;
    None after the warm-up of the plateau schedule, whose rate ReduceLROnPlateau owns."""
    position = epoch - phase_start
    length = max(phase_end - phase_start, 1)
    if config.warmup_epochs and position < config.warmup_epochs:
        return base_lr * (position + 1) / (config.warmup_epochs + 1)
    if config.schedule == "plateau":
        return base_lr if position == config.warmup_epochs and config.warmup_epochs else None
    if config.schedule == "cosine":
        warm = min(config.warmup_epochs, length - 1)
        progress = (position - warm) / max(length - warm, 1)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.schedule == "step":
        return base_lr * (0.1 ** min(2, position * 3 // length))  # thirds: 5 epochs dropped 4 times
    return base_lr


def compile_model(model, optimizer_name, lr, config):
    import keras

    model.compile(
        optimizer=make_optimizer(optimizer_name, lr, config),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def make_strategy(name):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise FerOptionError("--strategy multi-worker needs the TF_CONFIG environment variable. "
                                 "Received: TF_CONFIG=None")
        try:
            cluster = json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise FerOptionError(f"TF_CONFIG is not valid JSON ({error}). Received: "
                                 f"TF_CONFIG={os.environ['TF_CONFIG'][:80]!r}") from None
        if not isinstance(cluster, dict) or not isinstance(cluster.get("cluster"), dict):
            raise FerOptionError('TF_CONFIG must be a JSON object with a "cluster" object (and a "task"). '
                                 f"Received: TF_CONFIG={os.environ['TF_CONFIG'][:80]!r}")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None) or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0
                                    and "chief" not in resolver.cluster_spec().as_dict())


# --------------------------------------------------------------------------------------------
# Callbacks


def _make_run_recorder(keras):
    class RunRecorder(keras.callbacks.Callback):
        """Writes history.csv, last-NNNN.keras, best.keras and state.json atomically every epoch, and
        restores the state of the other callbacks on resume (Keras' BackupAndRestore keeps the
        weights but not EarlyStopping's or ReduceLROnPlateau's counters, so a resumed run would
        diverge from an uninterrupted one)."""

        def __init__(self, run_dir, config, history, state, stateful_callbacks, phase_index, write, total_epochs=None,
                     verbose=0, epoch_seconds=None):
            super().__init__()
            self.run_dir = Path(run_dir)
            self.config = config
            self.history = history
            self.state = state
            self.stateful = stateful_callbacks
            self.phase_index = phase_index
            self.write = write
            self.total_epochs = total_epochs
            self.verbose = verbose
            # wall seconds of the epochs this process trained (shared by the phases' recorders)
            self.epoch_seconds = [] if epoch_seconds is None else epoch_seconds
            self.epoch_started = None

        def on_train_begin(self, logs=None):
            for name, callback in self.stateful.items():
                for attribute, value in self.state.get("callbacks", {}).get(name, {}).items():
                    setattr(callback, attribute, value)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.perf_counter()
            self.cpu_started = process_cpu_seconds()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self.epoch_started, 3),
                   "cpu_seconds": round(process_cpu_seconds() - self.cpu_started, 3)}
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                row[key] = float(logs.get(key, float("nan")))
            row["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            # Without validation (--val none) every epoch is the best so far: best.keras is the last;
            # an epoch whose loss diverged (NaN weights, TerminateOnNaN stopped it) never is.
            improved = math.isfinite(row["loss"]) and (
                math.isnan(row["val_accuracy"]) or row["val_accuracy"] > self.state.get("best_val_accuracy", -1.0))
            # The epoch is built aside and becomes the run's state only once state.json commits it:
            # a Ctrl-C while its files are written says (and reports) the epoch saved before.
            state = dict(self.state)
            state.pop("best_pending", None)
            if improved:
                state["best_val_accuracy"] = row["val_accuracy"]
                state["best_epoch"] = epoch + 1
                state["best_pending"] = True  # until best.keras is this epoch's model (complete_best)
            state["epoch"] = epoch + 1
            state["phase"] = self.phase_index
            state["seed_generators"] = seed_generator_states(self.model)
            state["callbacks"] = {
                name: {attribute: _plain(getattr(callback, attribute))
                       for attribute in ("wait", "best", "cooldown_counter")
                       if hasattr(callback, attribute)}
                for name, callback in self.stateful.items()
            }
            if self.write:
                # Crash safety: the epoch's model goes to its own file, then state.json (one atomic
                # rename) commits it; a kill before leaves the previous state and its models. The
                # best model is then a copy of that file: written before the commit, a kill between
                # left best.keras an epoch ahead of state.json (complete_best mends a kill after).
                state["last_model"] = f"last-{epoch + 1:04d}.keras"
                save_model(self.model, self.run_dir / state["last_model"])
                write_history(self.run_dir / "history.csv", self.history + [row])
                write_json(self.run_dir / "state.json", state)
            self.history.append(row)
            self.state.clear()
            self.state.update(state)
            if self.write:
                if improved:
                    complete_best(self.run_dir, self.state)
                for stale in last_models(self.run_dir):
                    if stale.name != self.state["last_model"]:
                        stale.unlink(missing_ok=True)
            self.epoch_seconds.append(row["seconds"])
            if self.verbose and self.total_epochs and epoch + 1 < self.total_epochs and not self.model.stop_training:
                print(progress_line(self.state, epoch + 1, self.total_epochs, self.epoch_seconds), flush=True)

    return RunRecorder


def progress_line(state, epoch, total_epochs, epoch_seconds):
    """The line after each epoch of a long run: what is saved, the best so far and the time left at
    this process's mean pace (Keras' bar shows one epoch's time left, not the run's), e.g.
    `epoch 5 of 40 saved (best 0.4123, epoch 5); about 3.1 h to go at 5.4 min an epoch`."""
    pace = sum(epoch_seconds) / len(epoch_seconds)
    best = state.get("best_epoch")
    so_far = f"best {state['best_val_accuracy']:.4f}, epoch {best}" if best and math.isfinite(
        state.get("best_val_accuracy", math.nan)) else "no validation"
    return (f"epoch {epoch} of {total_epochs} saved ({so_far}); about "
            f"{_duration((total_epochs - epoch) * pace)} to go at {_duration(pace)} an epoch")


def _duration(seconds):
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _drop_temperatures(config_path):
    """Take the temperatures `keras_fer.calibrate` recorded out of a run's config.json."""
    try:
        config = read_json_object(config_path)
    except (OSError, FerDataError):
        return
    from keras_fer.loading import TEMPERATURE_KEYS

    if set(TEMPERATURE_KEYS) & set(config):
        write_json(config_path, {key: value for key, value in config.items() if key not in TEMPERATURE_KEYS})


def trains_nothing(state, config):
    """Whether a run at `state` has nothing left to train under `config`: all its epochs are
    done, or it stopped (early stopping, a target reached, a loss that diverged)."""
    return state["epoch"] >= config.total_epochs or bool(state.get("stopped"))


def _copy_to_best(run_dir, last):
    """`best.keras` as a copy of `last` (a `last-NNNN.keras` of the best epoch: the same model), atomically."""
    import shutil

    with atomic_path(run_dir / "best.keras") as temporary:
        shutil.copyfile(last, temporary)


def complete_best(run_dir, state):
    """Make `best.keras` the model of the epoch `state` committed as the new best, when that is
    still pending (`best_pending`): a copy of its `last-NNNN.keras`, the same model, then
    state.json again without the mark. An epoch's best model is written after state.json commits
    the epoch, so a kill in between left the previous best; the epoch itself, `--resume` and a
    Ctrl-C's report call this. Returns whether it copied."""
    run_dir = Path(run_dir)
    last = run_dir / str(state.get("last_model", ""))
    if not state.get("best_pending") or state.get("best_epoch") != state.get("epoch") or not last.is_file():
        return False
    _drop_temperatures(run_dir / "config.json")  # fitted on the model being replaced: first, so never kept wrongly
    _copy_to_best(run_dir, last)
    state.pop("best_pending")
    write_json(run_dir / "state.json", state)
    return True


def _mend_best(run_dir, state, config):
    """`--resume` of a run whose `best.keras` is gone: made again from `last-NNNN.keras` when the
    best epoch is the last one kept (the same model); else forgotten, the next epoch's model
    becoming best.keras, when there is a next epoch; else refused (there would be no model)."""
    best, last = run_dir / "best.keras", run_dir / str(state.get("last_model", "last.keras"))
    if state["best_epoch"] == state["epoch"] and last.is_file():
        _copy_to_best(run_dir, last)
        print(f"note: --resume: {best} was missing: made again from {last.name}, the same epoch "
              f"({state['epoch']}, the best)", file=sys.stderr)
    elif trains_nothing(state, config):
        more = "" if state.get("stopped") else f"--epochs more than {state['epoch']} trains on and keeps the next " \
                                               "epoch's model as best; or "
        raise FerOptionError(f"--resume: {best} (epoch {state['best_epoch']}'s model) is missing and the run has no "
                             f"epoch left to train: {more}use its last model, {last}")
    else:
        print(f"note: --resume: {best} (epoch {state['best_epoch']}'s model) is missing: the best so far is "
              "forgotten, and the next epoch's model becomes best.keras", file=sys.stderr)
        state.update(best_epoch=0, best_val_accuracy=-1.0)


def seed_generator_states(model):
    """The state of every random layer (Dropout, RReLU, ...): Keras does not save it in
    `.keras` files, and a resumed run needs it to draw the same dropout masks."""
    states = {}
    for layer in model._flatten_layers(include_self=False):
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            states[layer.name] = np.asarray(generator.state.numpy()).tolist()
    return states


def restore_seed_generators(model, states, path=None):
    """Set the random layers' generator states from `states` (`seed_generator_states`).

    Raises:
        FerDataError: naming `path` (the state file) when a saved state does not fit its layer.
    """
    for layer in model._flatten_layers(include_self=False):
        generator = getattr(layer, "seed_generator", None)
        if generator is not None and layer.name in states:
            saved = np.asarray(states[layer.name])
            if saved.shape != tuple(generator.state.shape):
                raise FerDataError(f"the random state of layer {layer.name!r} has shape {saved.shape}, the model's "
                                   f"{tuple(generator.state.shape)}", path, field="seed_generators")
            generator.state.assign(saved.astype(generator.state.dtype))


def load_run_model(path, compile=True):
    """`keras.saving.load_model` in safe mode, with a one-line FerModelError for a bad file
    (`loading.check_model_file` first: Keras says "File not found" for any file that is not a
    zip archive)."""
    import keras

    check_model_file(path)
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # noqa: BLE001  Keras raises many kinds; all mean "not loadable"
        raise FerModelError(f"{path}: not a loadable Keras model ({one_line(error)})") from None


def copy_weights_from(path, model):
    """Set `model`'s weights to those of the trained model at `path` (loaded in safe mode).

    Raises:
        FerModelError: naming the file, when it is missing, not a Keras model, a different
            architecture (its weights do not fit `model`'s one for one), or trained on faces
            prepared otherwise (another `--normalize`, size or channel count).
    """
    from keras_fer.loading import load_keras_model, resolve_model_argument
    from keras_fer.models import preprocessing_mismatch, weight_mismatch

    found = resolve_model_argument(path, "--init-from")
    source = found.path
    donor = load_keras_model(source)
    mismatch = weight_mismatch(donor, model, f"the built {model.name}")
    if mismatch is not None:
        raise FerModelError(
            f"{source}: --init-from needs a trained {model.name} with the same options; its weights do not fit "
            f"({mismatch}){_built_with(found)}. Received: init_from={str(path)!r}"
        )
    mismatch = preprocessing_mismatch(donor, model, "this run")
    if mismatch is not None:
        raise FerModelError(
            f"{source}: --init-from needs a model trained on faces prepared as this run prepares them; it {mismatch} "
            f"(pass the option it was trained with, e.g. --normalize). Received: init_from={str(path)!r}"
        )
    model.set_weights(donor.get_weights())
    return source


def _built_with(source):
    """`"; it was built with --arch A --model-option K=V ..."` from the model's config.json, the
    options that build a model its weights fit; "" without a config that says."""
    from keras_fer.loading import run_options

    try:
        options = run_options(source.config, source.config_path)
    except FerDataError:
        return ""
    arch = options.get("arch") or (source.config or {}).get("arch")
    if not isinstance(arch, str):
        return ""
    model_options = options.get("model_options") if isinstance(options.get("model_options"), dict) else {}
    flags = [f"--arch {arch}"]
    for key, value in sorted(model_options.items()):  # as --model-option reads them back: true, 0.65, small
        flags.append(f"--model-option {key}={value if isinstance(value, str) else json.dumps(value)}")
    return f"; it was built with {' '.join(flags)}"


def init_from_record(loaded):
    """What `config.json` keeps of `--init-from`: the model file loaded and, when it is in a run
    directory, that run and the epoch it had reached (for `ablation.lineage`), as of now.

    Example:
    >>> init_from_record(Path("keras_fer/weights/best.keras"))["run"] is None
    True
    """
    from keras_fer.ablation import handed_on

    parent = handed_on(str(loaded))
    folder, epoch = parent if isinstance(parent, tuple) else (None, None)
    return {"model": str(Path(loaded).resolve()), "run": None if folder is None else str(folder), "epoch": epoch}


def process_cpu_seconds():
    """CPU time of this process, all threads: the cost that does not depend on machine load."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _plain(value):
    value = np.asarray(value).item() if np.ndim(value) == 0 else value
    return float(value) if isinstance(value, (float, np.floating)) else value


def _make_stop_at_accuracy(keras):
    class StopAtAccuracy(keras.callbacks.Callback):
        """Stop once validation accuracy reaches a threshold (report 003 stopped at 0.66)."""

        def __init__(self, threshold):
            super().__init__()
            self.threshold = threshold
            self.reached = False

        def on_epoch_end(self, epoch, logs=None):
            if (logs or {}).get("val_accuracy", 0.0) >= self.threshold:
                self.reached = True
                self.model.stop_training = True

    return StopAtAccuracy


def _make_lr_setter(keras):
    class EpochLearningRate(keras.callbacks.Callback):
        """Sets the learning rate from the epoch number (constant, cosine, step, warm-up): a pure
        function of the epoch, so a resumed run gets the same rates."""

        def __init__(self, function):
            super().__init__()
            self.function = function

        def on_epoch_begin(self, epoch, logs=None):
            rate = self.function(epoch)
            if rate is not None:
                self.model.optimizer.learning_rate.assign(rate)

    return EpochLearningRate


# --------------------------------------------------------------------------------------------
# Reports


def versions():
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "keras_fer": __import__("keras_fer").__version__}


def finish_run(run_dir, model, val_images, history, write_figures=True):
    """Evaluate the best model on the validation split and write the report files."""
    from keras_fer import metrics

    run_dir = Path(run_dir)
    outputs = {}
    if len(val_images):
        import keras

        from keras_fer.pipeline import make_dataset

        logits = model.predict(make_dataset(val_images.pixels, batch_size=256), verbose=0)
        probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
        evaluation = metrics.evaluate(val_images.labels, probabilities)
        with atomic_path(run_dir / "validation.npz") as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, labels=val_images.labels, probabilities=probabilities, ids=val_images.ids.astype(str))
        write_text(run_dir / "classification_report.txt", evaluation.report() + "\n")
        write_json(run_dir / "metrics.json", evaluation.as_dict())
        outputs["evaluation"] = evaluation
    if write_figures:
        from keras_fer import plots

        if history:
            columns = {key: [row.get(key) for row in history] for key in HISTORY_COLUMNS}
            plots.save_figure(plots.history_figure(columns), run_dir / "history.png")
        if "evaluation" in outputs:
            plots.save_figure(
                plots.confusion_figure(outputs["evaluation"].confusion, CLASS_NAMES, normalize=True,
                                       title=plots.confusion_title("Validation", outputs["evaluation"])),
                run_dir / "confusion.png",
            )
            found = outputs["evaluation"].calibration
            plots.save_figure(plots.calibration_figure(found, plots.calibration_title("Validation", found)),
                              run_dir / "calibration.png")
    return outputs


def model_summary(model):
    try:
        from keras_fer.models import summary_table

        return summary_table(model)
    except ImportError:  # pragma: no cover
        lines = []
        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Train


def _verbosity(config):
    if config.verbose is not None:
        return config.verbose
    return 1 if sys.stdout.isatty() else 2


@contextlib.contextmanager
def _resume_errors():
    """A damaged run file found while resuming: a one-line `--resume:` FerOptionError."""
    try:
        yield
    except FerDataError as error:
        raise FerOptionError(f"--resume: {error}") from None


def _read_resumed(path, reader=read_json_object):
    """A resumed run's file (config.json, state.json, history.csv) read by `reader`."""
    with _resume_errors():
        return reader(path)


def _is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_state(path):
    """A run's `state.json` (written by the run recorder after every epoch), with the fields
    `--resume` uses checked.

    Raises:
        FerDataError: naming the file and the field, when the file is not a JSON object, has no
            `epoch`, or a field has the wrong type or is out of range.
    """
    state = read_json_object(path)
    if "epoch" not in state:
        raise FerDataError("missing (the last finished epoch, an integer >= 1)", path, field="epoch")
    epoch = state["epoch"]
    checks = {  # field: (check, what it expects); "epoch" first, as "best_epoch" compares with it
        "epoch": (lambda v: _is_integer(v) and v >= 1, "an integer >= 1"),
        "phase": (lambda v: _is_integer(v) and v >= 0, "an integer >= 0"),
        "best_epoch": (lambda v: _is_integer(v) and 0 <= v <= epoch, f"an integer in [0, epoch={epoch}]"),
        "best_val_accuracy": (lambda v: _is_number(v) and (math.isnan(v) or -1.0 <= v <= 1.0),
                              "a number in [-1, 1] or NaN"),
        "last_model": (lambda v: isinstance(v, str) and v not in ("", ".", "..") and Path(v).name == v,
                       "the name of a .keras file in the run directory"),
        "seed_generators": (lambda v: isinstance(v, dict) and all(
            isinstance(item, list) and all(_is_integer(number) for number in item) for item in v.values()),
            "an object of lists of integers (the random layers' states)"),
        "callbacks": (lambda v: isinstance(v, dict) and all(
            isinstance(item, dict) and all(number is None or _is_number(number) for number in item.values())
            for item in v.values()), "an object of objects of numbers (the callbacks' counters)"),
        "stopped": (lambda v: v is None or isinstance(v, str), "null or the reason the run stopped"),
        "best_pending": (lambda v: isinstance(v, bool), "true or false"),
    }
    for field, (check, expected) in checks.items():
        if field in state and not check(state[field]):
            raise FerDataError(f"expected {expected}. Received: {field}={one_line(repr(state[field]))}",
                               path, field=field)
    return state


def _check_resume(run_dir, config):
    """The run's saved `config.json` as a dict, after checking that `config` may continue it."""
    path = run_dir / "config.json"
    saved = _read_resumed(path)
    if not isinstance(saved.get("options"), dict):
        raise FerOptionError(f"--resume: {path}: unreadable run config: no \"options\" object")
    # An option added since the run started was at its default then.
    saved_options = {**TrainConfig().to_json(), **saved["options"]}
    if isinstance(saved_options.get("teacher"), list):  # recorded as typed before 2026-12-06: made absolute here
        with contextlib.suppress(TypeError, ValueError):
            saved_options["teacher"] = TrainConfig(teacher=tuple(saved_options["teacher"])).to_json()["teacher"]
    if isinstance(saved_options.get("augment"), str):  # a run started before specs were normalized
        from keras_fer.pipeline import AugmentConfig

        with contextlib.suppress(FerOptionError):
            saved_options["augment"] = AugmentConfig.parse(saved_options["augment"]).spec
    given = config.to_json()
    keys = sorted(set(given) - RESUMABLE_CHANGES)
    if "data" in saved:  # demo faces or a file: --demo-faces counts only for demo faces
        from keras_fer.data import existing_data_path

        ran_on_demo, given_demo = saved["data"] is None, existing_data_path(config.data, "train") is None
        if ran_on_demo != given_demo:
            ran = f"{saved_options.get('demo_faces')} demo faces" if ran_on_demo else saved["data"]
            now = f"{config.demo_faces} demo faces (no --data, no FER_DATA)" if given_demo else repr(config.data)
            raise FerOptionError(f"--resume: the run in {run_dir} trained on {ran}; its validation rows would change "
                                 f"mid-run. Received: data={now}")
        if not ran_on_demo:
            keys.remove("demo_faces")
    if _epoch_by_epoch(saved_options.get("phases")) is not None and _epoch_by_epoch(given.get("phases")) is not None:
        # --epochs cuts a phased recipe (cut_phases): two cuts of one recipe may continue each other.
        run, now = _epoch_by_epoch(saved_options["phases"]), _epoch_by_epoch(given["phases"])
        if run[:len(now)] == now[:len(run)]:
            keys.remove("phases")
    from keras_fer.data import split_identity

    if split_identity(saved_options.get("val"), None) == split_identity(given.get("val"), None):
        given["val"] = saved_options.get("val")  # fraction:0.10 is fraction:0.1 (the seeds are compared apart)
    different = [k for k in keys if json.dumps(saved_options.get(k), sort_keys=True, default=str)
                 != json.dumps(given.get(k), sort_keys=True, default=str)]
    if different:
        names = ", ".join(f"{k}: run has {saved_options.get(k)!r}, given {given.get(k)!r}" for k in different)
        raise FerOptionError(f"--resume with options that differ from the run in {run_dir}: {names}")
    return saved


def check_run_dir_path(run_dir):
    """Check that `run_dir` is, or can be made, a folder: neither it nor an ancestor is a file.

    Raises:
        FerOptionError: "--out X is a file, not a run directory", or "--out X/sub: X is a file".
    """
    from keras_fer.files import check_folder_for

    run_dir = Path(run_dir)
    try:
        check_folder_for(run_dir / "state.json")  # the same walk up to the nearest existing folder
    except OSError as error:
        if Path(error.filename) == run_dir:
            raise FerOptionError(f"--out {run_dir} is a file, not a run directory") from None
        raise FerOptionError(f"--out {run_dir}: {error.filename} is a file") from None


def _unfinished_run(run_dir):
    """Whether `run_dir` holds a run stopped before its first epoch ended: a keras-fer
    `config.json` and no `state.json`, or only the teachers' probabilities of a run that failed
    after its teachers' pass (they are used again only by a --resume); starting again there
    replaces only its own files."""
    from keras_fer.distill import CACHE_NAME

    if {path.name for path in run_dir.iterdir()} == {CACHE_NAME}:
        return True
    try:
        config = read_json_object(run_dir / "config.json")
    except FerDataError:
        return False
    finished = [name for name in ("state.json", "metrics.json", "validation.npz") if (run_dir / name).exists()]
    # any model but a temporary: best.keras, or an export's model.keras beside its copied config.json
    finished += [path.name for path in run_dir.glob("*.keras") if not path.name.startswith(".")]
    # a soup's or an exported model's folder has a run config too, and a model that training would replace
    return isinstance(config.get("options"), dict) and "arch" in config and "soup" not in config and not finished


def last_models(run_dir):
    """The `last-NNNN.keras` (or older `last.keras`) files of a run, not exports of them
    (`last-0003-inference.keras`)."""
    return [path for path in Path(run_dir).glob("last*.keras") if re.fullmatch(r"last(-\d+)?\.keras", path.name)]


def _discard_run(run_dir, created_dir):
    """Remove what a run that kept nothing wrote: its folder if it made it, else its own files."""
    import shutil

    if created_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    from keras_fer.distill import CACHE_NAME

    for name in ("config.json", "state.json", "history.csv", "summary.txt", CACHE_NAME):
        (run_dir / name).unlink(missing_ok=True)
    for model in last_models(run_dir):
        model.unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)


def _epoch_by_epoch(phases):
    """A phase list as one entry per epoch (the phase without its length), or None when it is
    not a list of phases; one cut of a recipe is then a prefix of another."""
    if not isinstance(phases, (list, tuple)) or not phases:
        return None
    try:
        return [json.dumps({k: v for k, v in phase.items() if k != "epochs"}, sort_keys=True)
                for phase in phases for _ in range(int(phase["epochs"]))]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def fit_keras(model, dataset, *, strategy, config, **options):
    # The optimizer's slot variables are made before `fit`: left to its first step, they made
    # TensorFlow trace Keras' train function twice (a function that creates variables is traced
    # again without): bench/startup.py, fit of cnn4 on 280 demo faces, 2.19 -> 1.41 s idle.
    if not model.optimizer.built:
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
    model.fit(dataset, shuffle=False, **options)


def fit_multi_worker(model, dataset, *, epochs, initial_epoch, steps_per_epoch, validation_data, callbacks,
                     verbose, strategy, config):
    """The custom loop `--strategy multi-worker` needs: Keras 3's `fit` does not run under
    `MultiWorkerMirroredStrategy` (keras-team/keras#20585). Same callbacks, same logs. The
    dataset yields `(images, targets)` or `(images, targets, per-image loss weights)`."""
    import keras
    import tensorflow as tf

    loss_function = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=config.label_smoothing, reduction=None
    )

    def replica_step(x, y, weights=None):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            per_image = loss_function(y, logits)
            if weights is not None:
                per_image = per_image * weights
            loss = tf.nn.compute_average_loss(per_image)
            # As Keras' own train_step: under mixed_float16 the optimizer is a LossScaleOptimizer,
            # whose apply divides the gradients by the scale the loss must first be multiplied by.
            scaled = model.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), tf.argmax(y, 1)), tf.float32))
        return tf.reduce_sum(per_image), correct, tf.cast(tf.shape(x)[0], tf.float32)

    @tf.function
    def train_step(iterator):
        results = strategy.run(replica_step, args=tuple(next(iterator)))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in results]

    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    callback_list.on_train_begin()
    model.stop_training = False
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        totals = np.zeros(3)
        for _ in range(steps_per_epoch):
            totals += [float(value) for value in train_step(iterator)]
        logs = {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2]}
        if validation_data is not None:
            val_loss, val_correct, val_count = 0.0, 0.0, 0
            for x, y in validation_data:
                logits = model(x, training=False)
                val_loss += float(tf.reduce_sum(loss_function(y, logits)))
                val_correct += float(tf.reduce_sum(
                    tf.cast(tf.equal(tf.argmax(logits, 1), tf.argmax(y, 1)), tf.float32)))
                val_count += int(x.shape[0])
            logs.update(val_loss=val_loss / val_count, val_accuracy=val_correct / val_count)
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs} - " + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training or not math.isfinite(logs["loss"]):  # TerminateOnNaN needs batch callbacks
            break
    callback_list.on_train_end()


def train(config, progress=None):
    """Train `config.arch` as `config` says and fill the run directory.

    Args:
        config: a `TrainConfig`.
        progress: a factory `progress(total, description) -> callable(done)` for the work before
            the first epoch (the teachers' pass), or None.

    Returns:
        A `TrainResult`.

    Raises:
        FerOptionError: for bad options; FerDataError: for bad data.
    """
    if not config.mixed_precision:
        return _train(config, progress)
    from keras_fer.models import dtype_policy

    with dtype_policy(mixed_policy_name()):  # and back as it was for whatever the caller does next
        return _train(config, progress)


def mixed_policy_name():
    """The Keras dtype policy of `--mixed-precision`: `mixed_float16` on a GPU, else `mixed_bfloat16`."""
    import tensorflow as tf

    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def check_paths(config):
    """Check what a run reads and writes, as far as that needs no TensorFlow: the `--out` folder,
    the data, `--resume`'s saved state, the teachers and `--init-from`. `train.py` calls it before
    importing TensorFlow (4-5 s), so a mistyped path fails at once; `train` calls it too.

    Returns:
        The run directory.

    Raises:
        FerOptionError / FerDataError / FerModelError: one line naming the option and the path.
    """
    from keras_fer.data import existing_data_path, resolve_data_path

    run_dir = Path(config.out or default_run_dir(config))
    check_run_dir_path(run_dir)  # before the data is read: mkdir would fail only after the model is built
    if config.resume and config.out is None:  # the default is a new timestamped folder: nothing there to resume
        raise FerOptionError("--resume continues the run in --out: name its folder. Received: out=None")
    check_not_inside([("--out", run_dir)], resolve_data_path(config.data, "train"))  # its figures would be images
    if config.resume:
        if not (run_dir / "state.json").is_file():
            raise FerOptionError(f"--resume: no finished epoch to resume in {run_dir} (no state.json)")
    elif (run_dir / "state.json").exists():
        raise FerOptionError(
            f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out"
        )
    elif run_dir.is_dir() and any(run_dir.iterdir()) and not _unfinished_run(run_dir):
        # its files would be replaced by the run's (config.json, summary.txt, ...)
        names = sorted(path.name for path in run_dir.iterdir())
        raise FerOptionError(
            f"{run_dir} holds files that are not a keras-fer run ({short_list(names)}): "
            f"choose a new or empty folder for --out"
        )
    if config.teacher:
        from keras_fer.distill import resolve_teachers

        resolve_teachers(config.teacher)  # a bad path fails before the data is read
    if config.init_from and not config.resume:
        from keras_fer.loading import resolve_model_argument

        resolve_model_argument(config.init_from, "--init-from")  # a missing file, or no model archive
    existing_data_path(config.data, "train")  # and data that is not there
    return run_dir


def _train(config, progress):
    config.validate()
    run_dir = check_paths(config)
    saved_config = {}
    if config.resume:
        saved_config = _check_resume(run_dir, config)
        # The run's files are checked before the data is read: a damaged one fails at once.
        state = _read_resumed(run_dir / "state.json", read_state)
        history = [row for row in _read_resumed(run_dir / "history.csv", read_history)
                   if row["epoch"] <= state["epoch"]]
        check_model_file(run_dir / state.get("last_model", "last.keras"))
        complete_best(run_dir, state)  # killed after its epoch's commit, before its best model's copy
        if state.get("best_epoch") and not (run_dir / "best.keras").exists():
            _mend_best(run_dir, state, config)
    unfinished_teacher = None  # a run stopped in its first epoch: its teachers' pass may serve again
    if config.resume or (run_dir.is_dir() and _unfinished_run(run_dir)):  # ours: what a killed writer left goes
        for leftover in abandoned_temporaries(run_dir):  # not a running export's or calibration's
            leftover.unlink(missing_ok=True)
        if not config.resume and config.teacher:
            with contextlib.suppress(FerDataError):
                unfinished_teacher = read_json_object(run_dir / "config.json").get("teacher")

    import keras
    import tensorflow as tf

    from keras_fer import models  # also registers the custom layers (Preprocessing, RReLU) load_model needs
    from keras_fer.pipeline import AugmentConfig, dataset_statistics, make_dataset, steps_per_epoch

    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    write = chief
    # Non-chief workers read the run (to resume) but write into a scratch folder.
    read_dir = run_dir
    if not chief:
        run_dir = Path(tempfile.mkdtemp(prefix="keras_fer_worker_"))

    teachers = None
    if config.teacher:
        from keras_fer.distill import resolve_teachers, teacher_targets

        teachers = resolve_teachers(config.teacher)
    verbose = _verbosity(config)
    train_images, val_images, all_images = load_training_data(config, verbose=bool(verbose))
    started_on = saved_config.get("data_fingerprint")
    if started_on is not None and started_on != all_images.fingerprint():
        raise FerOptionError(
            f"--resume: the run in {run_dir} started on other data (fingerprint {started_on}, this data's "
            f"{all_images.fingerprint()}): its validation rows would change mid-run. Received: data={config.data!r}"
        )
    from keras_fer.data import class_counts, class_weights

    counts = class_counts(train_images.labels)
    prior = (counts / counts.sum()).tolist()
    mean, std = dataset_statistics(train_images.pixels)
    preprocessing = {"normalize": config.normalize, "mean": mean, "std": std}

    targets, teacher_record = None, None
    if teachers is not None:
        targets, teacher_record = teacher_targets(
            config, teachers, train_images, all_images, saved_config.get("teacher"), run_dir, write,
            progress=progress, unfinished=unfinished_teacher,
        )
        keras.utils.set_random_seed(config.seed)  # loading the teachers drew random numbers: same start as without

    if not config.resume:
        state = {"epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "phase": 0}
        history = []
    init_record = saved_config.get("init_from")
    augment = AugmentConfig.parse(config.augment)
    phases = config.phase_list()
    steps = steps_per_epoch(len(train_images), config.batch_size)
    stop_reason = state.get("stopped")
    if config.resume and stop_reason and state["epoch"] < config.total_epochs:
        print(f"note: the run in {run_dir} stopped at epoch {state['epoch']} ({stop_reason}): --resume trains no "
              f"more of it; to go on, start a new run with --init-from {run_dir}", file=sys.stderr)
    elif config.resume and state["epoch"] >= config.total_epochs and (run_dir / "metrics.json").exists():
        # it only evaluated the best model again (without metrics.json, --resume writes the missing report)
        print(f"note: the run in {run_dir} has all its {state['epoch']} epochs: --resume trains nothing more; to "
              f"train on, give a larger --epochs, or start a new run with --init-from {run_dir}", file=sys.stderr)
    # temperatures fitted on best.keras (keras_fer.calibrate) hold while best.keras does
    from keras_fer.loading import TEMPERATURE_KEYS

    kept = {key: saved_config[key] for key in TEMPERATURE_KEYS if config.resume and key in saved_config}
    if kept and not trains_nothing(state, config):
        # dropped when a better epoch replaces best.keras (`complete_best`), not now: an interrupted
        # resume that replaced nothing lost it
        fitted = ", ".join(f"{key} {value}" for key, value in kept.items())
        print(f"note: --resume: the {fitted} in {run_dir / 'config.json'} were fitted on the best model so far: "
              f"they are dropped if training replaces it; run python -m keras_fer.calibrate {run_dir} when the "
              "run ends", file=sys.stderr)
    interrupted = None

    with strategy.scope():
        if config.resume:
            model = load_run_model(read_dir / state.get("last_model", "last.keras"))
            with _resume_errors():
                restore_seed_generators(model, state.get("seed_generators", {}), read_dir / "state.json")
        else:
            model = models.build_model(config.arch, preprocessing=preprocessing, **config.model_options)
            if config.init_from:
                init_record = init_from_record(copy_weights_from(config.init_from, model))
    created_dir = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    # a resume that trains nothing (all epochs done, or stopped) leaves the record of what ran: a smaller
    # --epochs rewrote the phases to fewer epochs than history.csv holds
    if write and not (config.resume and trains_nothing(state, config)):
        write_json(run_dir / "config.json", {
            "options": config.to_json(), "arch": config.arch, **data_record(config, all_images),
            "normalize": config.normalize, "augment": config.augment,
            "preprocessing": preprocessing, "class_prior": prior, "class_names": list(CLASS_NAMES),
            "train_images": len(train_images), "val_images": len(val_images), "versions": versions(),
            **({"teacher": teacher_record} if teacher_record else {}),
            **({"init_from": init_record} if init_record else {}), **kept,
        })
    if write and not config.resume:
        write_text(run_dir / "summary.txt", model_summary(model) + "\n")

    validation = make_dataset(val_images.pixels, val_images.labels, 256) if len(val_images) else None
    early = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=config.early_stop or 10**9)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max", factor=0.5, patience=4, min_lr=1e-6)
    stateful = {"early_stopping": early}
    if config.schedule == "plateau":
        stateful["plateau"] = plateau
    stop_at = _make_stop_at_accuracy(keras)(config.stop_at_accuracy) if config.stop_at_accuracy else None

    epoch_seconds = []
    try:
        for phase_index, (phase_start, phase_end, optimizer_name, base_lr) in enumerate(phases):
            first = max(state["epoch"], phase_start)
            if first >= phase_end or stop_reason:
                continue
            # A run resumed inside a phase keeps the optimizer state saved in last.keras.
            keep_optimizer = config.resume and first > phase_start and state.get("phase") == phase_index
            if not keep_optimizer or model.optimizer is None:
                with strategy.scope():
                    compile_model(model, optimizer_name, base_lr, config)
            callbacks = []
            if config.schedule != "plateau" or config.warmup_epochs:
                callbacks.append(_make_lr_setter(keras)(
                    lambda epoch, s=phase_start, e=phase_end, lr=base_lr: scheduled_lr(config, epoch, lr, s, e)
                ))
            if config.schedule == "plateau":
                callbacks.append(plateau)
            if config.early_stop:
                callbacks.append(early)
            if stop_at is not None:
                callbacks.append(stop_at)
            if config.tensorboard and write:
                callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
            callbacks.append(keras.callbacks.TerminateOnNaN())
            if verbose and config.strategy != "multi-worker":  # Keras' epoch line before the recorder's (fit
                callbacks.append(keras.callbacks.ProgbarLogger())  # appends its own bar after our callbacks)
            # A non-chief worker's "saved" would name its scratch folder: only the chief says it.
            callbacks.append(_make_run_recorder(keras)(run_dir, config, history, state, stateful, phase_index, True,
                                                       total_epochs=phases[-1][1], verbose=verbose if chief else 0,
                                                       epoch_seconds=epoch_seconds))
            dataset = make_dataset(
                train_images.pixels, train_images.labels, config.batch_size, training=True, augment=augment,
                seed=config.seed, balanced=config.balanced, first_epoch=first, epochs=phase_end, targets=targets,
                class_weight=[class_weights(train_images.labels)[i] for i in range(NUM_CLASSES)]
                if config.class_weight else None,
            )
            fit = fit_multi_worker if config.strategy == "multi-worker" else fit_keras
            fit(
                model, dataset, epochs=phase_end, initial_epoch=first, steps_per_epoch=steps,
                validation_data=validation, callbacks=callbacks, verbose=verbose, strategy=strategy, config=config,
            )
            diverged = history and not math.isfinite(history[-1]["loss"])
            # a stop at a phase's last epoch ends the run too (the next phase trained on)
            if state["epoch"] < phase_end or diverged or getattr(model, "stop_training", False):
                stop_reason = "early stopping" if early.stopped_epoch else "stopped"
                if stop_at is not None and stop_at.reached:
                    stop_reason = f"validation accuracy reached {config.stop_at_accuracy}"
                if diverged:
                    stop_reason = f"the loss diverged ({history[-1]['loss']}) in epoch {history[-1]['epoch']}"
                state["stopped"] = stop_reason
                if write:
                    write_json(run_dir / "state.json", state)
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM under the CLI (cli.Terminated)
        interrupted = error
        if write and state["epoch"]:
            complete_best(run_dir, state)  # stopped between the epoch's commit and its best model's copy
        print(f"\ninterrupted: epoch {state['epoch']} is saved; continue with --resume --out {run_dir}"
              if state["epoch"] else "\ninterrupted before the first epoch ended: nothing is saved; start again "
              "without --resume",
              file=sys.stderr)

    if stop_reason and stop_reason.startswith("the loss diverged"):
        if not state.get("best_epoch"):
            if write and not config.resume:  # nothing worth keeping, and it would block the retry
                _discard_run(run_dir, created_dir)
            raise FerOptionError(f"{run_dir}: {stop_reason}, at learning rate {history[-1]['lr']:g}, and no epoch "
                                 "before it had a finite loss: there is no model to keep (try a lower --lr)")
        print(f"note: {stop_reason}; training stopped there, and best.keras is epoch {state['best_epoch']}'s "
              "(try a lower --lr)", file=sys.stderr)
    if write and state["epoch"] > 0:
        from keras_fer.loading import float32_model

        # evaluated as predict.py will run it: in float32, also after --mixed-precision
        best = float32_model(load_run_model(run_dir / "best.keras", compile=False))
        try:
            outputs = finish_run(run_dir, best, val_images, history)
        except KeyboardInterrupt:
            if not interrupted:  # the training said nothing: it had finished
                print(f"\ninterrupted while writing the report: the model of every epoch is saved; "
                      f"--resume --out {run_dir} writes the report", file=sys.stderr)
            raise
        evaluation = outputs.get("evaluation")
        if evaluation is not None and verbose:
            print(f"best epoch {state['best_epoch']}: validation accuracy {evaluation.accuracy:.4f}, "
                  f"macro-F1 {evaluation.macro_f1:.4f}")
    if not chief:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
    if interrupted:
        raise interrupted
    return TrainResult(
        run_dir=read_dir, epochs_run=state["epoch"], best_epoch=state.get("best_epoch", 0),
        best_val_accuracy=state.get("best_val_accuracy", float("nan")), seconds=time.perf_counter() - started,
        stopped_early=stop_reason is not None, written=chief,
    )


def default_run_dir(config):
    return Path("runs") / f"{config.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
