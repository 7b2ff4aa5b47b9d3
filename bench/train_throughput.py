"""Benchmark (issue 4): cnn4 training throughput of keras-fer against a plain PyTorch reference.

keras-fer is measured as `keras_fer.training.train` runs it: `make_dataset(training=True)` over the
epochs of one `model.fit` call, cnn4 built around raw faces and compiled as `compile_model` does
(Adam 1e-3, cross-entropy on logits, accuracy), validation on a `make_dataset` of the validation
split every epoch, and the training callbacks (learning-rate setter, TerminateOnNaN and the run
recorder that writes `best.keras`, `last.keras`, `history.csv` and `state.json` every epoch, here
into a temporary folder). The reference is the same network in plain PyTorch
(`bench/torch_cnn4.py`). The two alternate in rounds of `--epochs` epochs, with a matmul ceiling
measured between them, because other jobs may share the CPU.

Figures:
- steady rate: images/s over the full-batch training steps inside an epoch, after `--warmup-steps`
  steps, timed by a callback at every `on_train_batch_end` (for PyTorch: after every step);
- whole rate: training images / wall time of the whole `fit` call (start-up, every step,
  validation, callbacks, tear-down), i.e. what a user sees; for PyTorch the epochs plus validation;
- FLOP/s: 3 x the forward FLOPs of `model_info("cnn4")` per image at the steady rate, against a
  float32 `tf.linalg.matmul` ceiling measured in the same rounds, per wall second and per
  CPU-second of the process (the latter is what `peak_fraction` reports);
- where the whole rate loses against the steady rate, in seconds, and a projection of the whole
  rate to a 30-epoch run on all of FER2013 from those parts;
- CPU time of the process per image next to every rate: other jobs on the machine change wall
  times a lot and CPU times little, so CPU ratios are the steadier comparison;
- optionally (`--stall-fits N`) the training iterator's tear-down with tf.data autotune on and
  off, and (`--variants`) the steady rate of mixed_bfloat16, XLA and steps_per_execution=4.

Usage (from the repository root):

    PYTHONPATH=. ~/venv/bin/python bench/train_throughput.py           # FER_DATA or demo faces
    PYTHONPATH=. ~/venv/bin/python bench/train_throughput.py --data ../shared/fer2013/train.csv.gz
    PYTHONPATH=. ~/venv/bin/python bench/train_throughput.py --images 0 --rounds 3   # full epochs
    PYTHONPATH=. ~/venv/bin/python bench/train_throughput.py --variants --stall-fits 4   # + options, stalls

PyTorch is optional (`~/venv/bin/pip install torch==2.13.0`); without it that part is skipped.
The last line is `RESULT keras_img_s=... torch_img_s=... ratio=... epoch_vs_steady=...
peak_fraction=...`: whole rates and their ratio, whole over steady rate, and keras-fer's training
FLOP per CPU-second over the matmul's (the wall-clock version, `peak_fraction_wall`, follows: it is
only meaningful on an idle machine), then the projected 30-epoch epoch_vs_steady, the steady
rates and the CPU-time ratio.
"""

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import MachineLoad, load_faces, quiet_tensorflow, versions  # noqa: E402

DEFAULT_IMAGES = 3072
FULL_TRAIN, FULL_VAL, RUN_EPOCHS = 25838, 2871, 30  # FER2013 train.csv with the default fraction:0.1 split


def scratch_dir():
    """A temporary run directory for the run recorder, deleted when the benchmark exits."""
    path = tempfile.mkdtemp(prefix="keras_fer_bench_")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# --------------------------------------------------------------------------------------------
# Matmul ceiling


def matmul_ceiling(size, seconds):
    """GFLOP/s of float32 `tf.linalg.matmul` of `size x size` matrices, for about `seconds`.

    Returns `(gflop_per_wall_second, gflop_per_cpu_second)`."""
    import tensorflow as tf

    a = tf.random.normal([size, size], seed=1)
    b = tf.random.normal([size, size], seed=2)
    tf.linalg.matmul(a, b)  # eager: runs synchronously, nothing can be pruned
    count, started, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        tf.linalg.matmul(a, b)
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and count >= 2:
            flops = count * 2.0 * size**3 / 1e9
            return flops / elapsed, flops / (time.process_time() - cpu)


# --------------------------------------------------------------------------------------------
# keras-fer


def make_probe(keras):
    class Probe(keras.callbacks.Callback):
        """Time stamps of every callback hook, tagged by `name`."""

        def __init__(self, name):
            super().__init__()
            self.name = name
            self.events = []

        def _mark(self, what, index=None):
            self.events.append((what, index, time.perf_counter(), time.process_time()))

        def on_train_begin(self, logs=None):
            self._mark("train_begin")

        def on_train_end(self, logs=None):
            self._mark("train_end")

        def on_epoch_begin(self, epoch, logs=None):
            self._mark("epoch_begin", epoch)

        def on_epoch_end(self, epoch, logs=None):
            self._mark("epoch_end", epoch)

        def on_train_batch_begin(self, batch, logs=None):
            self._mark("batch_begin", batch)

        def on_train_batch_end(self, batch, logs=None):
            self._mark("batch_end", batch)

        def on_test_begin(self, logs=None):
            self._mark("test_begin")

        def on_test_end(self, logs=None):
            self._mark("test_end")

        def on_test_batch_begin(self, batch, logs=None):
            self._mark("test_batch_begin", batch)

        def on_test_batch_end(self, batch, logs=None):
            self._mark("test_batch_end", batch)

    return Probe


class KerasRunner:
    """cnn4 trained the way `keras_fer.training.train` does, one `fit` call per round."""

    def __init__(self, train, val, batch_size, augment, autotune, val_autotune, run_dir, callbacks=True,
                 jit_compile="auto", steps_per_execution=1, mixed_precision=False):
        import keras

        from keras_fer import training
        from keras_fer.models import build_model, dtype_policy
        from keras_fer.pipeline import AugmentConfig, dataset_statistics, make_dataset, steps_per_epoch

        self.keras, self.training, self.make_dataset = keras, training, make_dataset
        self.train, self.val = train, val
        self.batch_size = batch_size
        self.augment = AugmentConfig.parse(augment)
        self.autotune = autotune
        self.steps = steps_per_epoch(len(train), batch_size)
        self.config = training.TrainConfig(arch="cnn4", batch_size=batch_size, augment=augment, out=str(run_dir),
                                           mixed_precision=mixed_precision)
        keras.utils.set_random_seed(0)
        mean, std = dataset_statistics(train.pixels)
        # as train(mixed_precision=True) does
        with dtype_policy(training.mixed_policy_name() if mixed_precision else "float32"):
            self.model = build_model("cnn4", preprocessing={"normalize": "unit", "mean": mean, "std": std})
        training.compile_model(self.model, "adam", 1e-3, self.config)
        if jit_compile != "auto" or steps_per_execution != 1:
            # compile_model's settings, with other execution options.
            self.model.compile(
                optimizer=training.make_optimizer("adam", 1e-3, self.config),
                loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                jit_compile=jit_compile, steps_per_execution=steps_per_execution,
            )
        self.steps_per_execution = steps_per_execution
        self.validation = make_dataset(val.pixels, val.labels, 256, autotune=val_autotune) if len(val) else None
        self.callbacks = callbacks
        self.run_dir = Path(run_dir)
        self.history, self.state = [], {"epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "phase": 0}
        self.epoch = 0
        self.Probe = make_probe(keras)

    def fit(self, epochs, max_steps=None, validate=True):
        """One `fit` call over the next `epochs` epochs; returns `(call, return, first_probe, last_probe)`."""
        keras, training = self.keras, self.training
        first, last = self.Probe("first"), self.Probe("last")
        callbacks = [first]
        if self.callbacks:
            callbacks += [
                training._make_lr_setter(keras)(lambda epoch: 1e-3),
                keras.callbacks.TerminateOnNaN(),
                training._make_run_recorder(keras)(self.run_dir, self.config, self.history, self.state, {}, 0, True),
            ]
        callbacks.append(last)
        dataset = self.make_dataset(
            self.train.pixels, self.train.labels, self.batch_size, training=True, augment=self.augment, seed=0,
            first_epoch=self.epoch, epochs=self.epoch + epochs, autotune=self.autotune,
        )
        called, called_cpu = time.perf_counter(), time.process_time()
        self.model.fit(
            dataset, epochs=self.epoch + epochs, initial_epoch=self.epoch, steps_per_epoch=max_steps or self.steps,
            validation_data=self.validation if validate else None, callbacks=callbacks, verbose=0, shuffle=False,
        )
        returned = time.perf_counter()
        del dataset
        self.epoch += epochs
        self.last_fit_cpu = time.process_time() - called_cpu
        return called, returned, first.events, last.events


def analyse_keras_fit(fit, steps, batch_size, train_images, warmup_steps):
    """Split one fit's wall time into its parts. Returns a dict of seconds (and image counts).

    `first` holds the stamps of the probe called before the training callbacks, `last` of the one
    called after them, so `last.epoch_end - first.epoch_end` is the epoch-end callbacks' time.
    """
    called, returned, first, last = fit
    result = {"wall": returned - called, "images": 0, "steady_images": 0, "steady_seconds": 0.0, "steady_cpu": 0.0,
              "step_seconds": 0.0,
              "startup": 0.0, "val_fetch": 0.0, "val_startup": 0.0, "val_batches": 0.0, "callbacks": 0.0,
              "gaps": 0.0, "teardown_val": 0.0, "teardown": 0.0, "slowest_step": 0.0, "first_step": None,
              "step_durations": []}
    last_size = train_images - (steps - 1) * batch_size
    epoch_end_last = {index: stamp for what, index, stamp, _ in last if what == "epoch_end"}
    previous = called
    previous_cpu = None
    test_begin = test_started = None
    for what, index, stamp, cpu in first:
        if what == "train_begin":
            result["startup"] += stamp - previous
            previous = stamp
        elif what == "epoch_begin":
            if index - 1 in epoch_end_last:
                result["gaps"] += stamp - epoch_end_last[index - 1]
            else:
                result["startup"] += stamp - previous
            previous = stamp
        elif what == "batch_begin" and index == 0:
            result["startup"] += stamp - previous  # epoch start -> first batch requested (iterator made)
            previous, previous_cpu = stamp, cpu
        elif what == "batch_end":
            duration = stamp - previous
            size = last_size if index == steps - 1 else batch_size
            result["images"] += size
            result["step_seconds"] += duration
            result["step_durations"].append(duration)
            result["slowest_step"] = max(result["slowest_step"], duration)
            if result["first_step"] is None:
                result["first_step"] = duration
            if warmup_steps <= index and size == batch_size:
                result["steady_images"] += size
                result["steady_seconds"] += duration
                result["steady_cpu"] += cpu - previous_cpu
            previous, previous_cpu = stamp, cpu
        elif what == "test_begin":
            result["val_fetch"] += stamp - previous  # last step -> validation starts (metric results)
            test_begin, test_started = stamp, None
        elif what == "test_batch_begin" and index == 0:
            test_started = stamp
            result["val_startup"] += stamp - test_begin  # previous validation iterator freed, new one made
        elif what == "test_end":
            result["val_batches"] += stamp - (test_started or test_begin)
            previous = stamp
        elif what == "epoch_end":
            result["val_fetch" if test_begin is None else "gaps"] += stamp - previous
            result["callbacks"] += epoch_end_last[index] - stamp
            previous = epoch_end_last[index]
            test_begin = None
        elif what == "train_end":
            result["teardown_val"] = stamp - previous  # validation iterator freed, weights finalized
            result["teardown"] = returned - stamp  # training iterator freed, fit returns
    accounted = sum(result[k] for k in ("startup", "step_seconds", "val_fetch", "val_startup", "val_batches",
                                        "callbacks", "gaps", "teardown_val", "teardown"))
    result["other"] = result["wall"] - accounted
    return result


# --------------------------------------------------------------------------------------------
# Tear-down stalls


def stall_fits(train, val, args, count):
    """Alternate short fits whose training dataset has autotune on, then off; return the seconds
    from `on_train_end` to `fit` returning (where the training iterator is deleted) for each."""
    runners = {autotune: KerasRunner(train, val, args.batch_size, args.augment, autotune, True,
                                     scratch_dir(), callbacks=False)
               for autotune in (True, False)}
    for runner in runners.values():
        runner.fit(1, max_steps=3, validate=False)
    steps = min(runners[True].steps, 28)
    stalls = {True: [], False: []}
    for index in range(count):
        for autotune in ((True, False) if index % 2 == 0 else (False, True)):
            called, returned, first, _ = runners[autotune].fit(1, max_steps=steps, validate=False)
            train_end = next(stamp for what, _, stamp, _ in first if what == "train_end")
            stalls[autotune].append(returned - train_end)
    return steps, stalls


# --------------------------------------------------------------------------------------------
# Report helpers


def steady_windows(durations, window):
    """Images/s of consecutive windows of `window` equal steps (durations in seconds)."""
    return [window / sum(durations[i:i + window]) for i in range(0, len(durations) - window + 1, window)]


def goal(value, target, higher=True):
    met = value >= target if higher else value <= target
    return "met" if met else "NOT met"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="FER2013 file or folder (default: FER_DATA, else demo faces)")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES,
                        help=f"read only the first N rows (0: all); default {DEFAULT_IMAGES}")
    parser.add_argument("--val", default="fraction:0.1", help="validation split, as train.py --val")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (keras, torch, ceiling)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per round (one keras fit call per round)")
    parser.add_argument("--warmup-steps", type=int, default=5,
                        help="steps left out of the steady rate at each epoch start")
    parser.add_argument("--window", type=int, default=10, help="steps per steady-rate window")
    parser.add_argument("--augment", default="none", help="keras-fer augmentation (the PyTorch reference has none)")
    parser.add_argument("--autotune", choices=("on", "off"), default="on", help="make_dataset(autotune=) for training")
    parser.add_argument("--val-autotune", choices=("on", "off"), default="on",
                        help="make_dataset(autotune=) for validation")
    parser.add_argument("--no-callbacks", action="store_true", help="fit without training.py's callbacks")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="keras-fer in mixed_bfloat16, as train.py --mixed-precision on a CPU "
                        "(the reference stays float32)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--omp-wait", choices=("passive", "default"), default="passive",
                        help="OMP_WAIT_POLICY for PyTorch's OpenMP threads "
                        "(passive: do not spin; see docs/performance.md)")
    parser.add_argument("--ceiling-size", type=int, default=2048)
    parser.add_argument("--ceiling-seconds", type=float, default=1.5)
    parser.add_argument("--stall-fits", type=int, default=0,
                        help="also run N pairs of short fits, training dataset autotune on / off, and time the "
                             "iterator tear-down at the end of each fit")
    parser.add_argument("--variants", action="store_true",
                        help="also compare steady rates of XLA (jit_compile=True) and steps_per_execution=4")
    args = parser.parse_args(argv)

    quiet_tensorflow()
    if args.omp_wait == "passive":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    load = MachineLoad()
    faces, description = load_faces(args.data, args.images)

    import tensorflow as tf

    from keras_fer import data as data_module
    from keras_fer.models import model_info

    train, val = data_module.split(faces, args.val, seed=0)
    info = model_info("cnn4")
    train_flops = 3 * info.flops
    print(f"training throughput benchmark: {description}")
    print(f"{len(train)} training and {len(val)} validation images; batch {args.batch_size}; {args.rounds} rounds x "
          f"{args.epochs} epochs; augment {args.augment}; autotune train {args.autotune}, "
          f"validation {args.val_autotune}; "
          f"keras-fer in {'mixed_bfloat16' if args.mixed_precision else 'float32'}")
    print(f"{versions()}; TF threads intra {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
          f"inter {tf.config.threading.get_inter_op_parallelism_threads() or 'default'}")
    print(f"cnn4: {info.trainable_params:,} trainable parameters, {info.flops / 1e6:.1f} MFLOPs forward, "
          f"~{train_flops / 1e6:.0f} MFLOPs per training image (3x forward)")
    print(load.report().replace("machine: ", "machine at start: ").split("; this process")[0], flush=True)

    # ---- contenders
    run_dir = scratch_dir()
    keras_runner = KerasRunner(train, val, args.batch_size, args.augment, args.autotune == "on",
                               args.val_autotune == "on", run_dir, callbacks=not args.no_callbacks,
                               mixed_precision=args.mixed_precision)
    started = time.perf_counter()
    keras_runner.fit(1, max_steps=3)  # traces train and test functions
    trace_seconds = time.perf_counter() - started

    torch_trainer, torch_note = None, None
    if not args.no_torch:
        from torch_cnn4 import TorchTrainer, import_torch

        torch, torch_note = import_torch()
        if torch is not None:
            torch_trainer = TorchTrainer(train.pixels, train.labels, val.pixels, val.labels, args.batch_size,
                                         threads=args.torch_threads)
            torch_trainer.train_epoch(max_steps=3)
            torch_trainer.validate()
            torch_note = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
                          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
                          f"{torch_trainer.trainable_params:,} trainable parameters")
    print(f"PyTorch reference: {torch_note if torch_note else 'skipped (--no-torch)'}")
    print(f"first keras fit (tracing train and test functions, 3 steps): {trace_seconds:.1f} s\n", flush=True)

    keras_fits, torch_epochs, ceilings = [], [], []
    for round_index in range(args.rounds):
        order = ["keras", "torch"] if round_index % 2 == 0 else ["torch", "keras"]
        for contender in order:
            if contender == "keras":
                fit = keras_runner.fit(args.epochs)
                keras_fits.append(analyse_keras_fit(fit, keras_runner.steps, args.batch_size, len(train),
                                                    args.warmup_steps))
                keras_fits[-1]["cpu"] = keras_runner.last_fit_cpu
            elif torch_trainer is not None:
                for _ in range(args.epochs):
                    marks, sizes, val_seconds, cpu_marks = torch_trainer.train_epoch()
                    torch_epochs.append((marks, sizes, val_seconds, cpu_marks, torch_trainer.epoch_cpu))
            ceilings.append(matmul_ceiling(args.ceiling_size, args.ceiling_seconds / 2))
        k = keras_fits[-1]
        line = f"round {round_index + 1}/{args.rounds}: keras whole {k['images'] / k['wall']:,.0f} img/s, steady " \
               f"{k['steady_images'] / k['steady_seconds']:,.0f}"
        if torch_trainer is not None:
            marks, sizes, val_seconds = torch_epochs[-1][:3]
            line += f" | torch whole {sum(sizes) / (marks[-1] - marks[0] + val_seconds):,.0f}"
        line += f" | matmul {statistics.mean(c[0] for c in ceilings[-2:]):,.0f} GFLOP/s"
        print(line, flush=True)

    # ---- keras figures
    total = {key: sum(f[key] for f in keras_fits)
             for key in keras_fits[0] if key not in ("first_step", "step_durations")}
    keras_steady = total["steady_images"] / total["steady_seconds"]
    keras_whole = total["images"] / total["wall"]
    keras_cpu = total["steady_cpu"] / total["steady_images"]  # CPU seconds per image, steady
    keras_whole_cpu = total["cpu"] / total["images"]
    durations = [d for f in keras_fits for d in f["step_durations"][args.warmup_steps:-1]]
    windows = [w * args.batch_size for w in steady_windows(durations, args.window)] or [keras_steady]
    ceiling = statistics.mean(c[0] for c in ceilings)
    ceiling_cpu = statistics.mean(c[1] for c in ceilings)
    achieved = keras_steady * train_flops / 1e9
    achieved_cpu = train_flops / 1e9 / keras_cpu
    peak_fraction, peak_fraction_cpu = achieved / ceiling, achieved_cpu / ceiling_cpu
    ideal = total["images"] / keras_steady
    cores = os.cpu_count()

    print(f"\nkeras-fer cnn4 ({len(keras_fits)} fits x {args.epochs} epochs x {keras_runner.steps} steps):")
    print(f"  steady rate  {keras_steady:8,.0f} img/s  (windows of {args.window} steps: min {min(windows):,.0f}, "
          f"median {statistics.median(windows):,.0f}, max {max(windows):,.0f}); {1e3 * keras_cpu:.2f} CPU ms per "
          f"image (= {cores / keras_cpu:,.0f} img/s on {cores} idle cores)")
    print(f"  whole rate   {keras_whole:8,.0f} img/s  = {100 * keras_whole / keras_steady:.1f}% of steady "
          f"(goal >= 95%: {goal(keras_whole / keras_steady, 0.95)}); {1e3 * keras_whole_cpu:.2f} CPU ms per image")
    print(f"  FLOP/s at the steady rate: {achieved:,.1f} GFLOP/s = {100 * peak_fraction:.0f}% of the matmul ceiling "
          f"{ceiling:,.0f} GFLOP/s ({args.ceiling_size}x{args.ceiling_size} float32, rounds "
          f"{min(c[0] for c in ceilings):,.0f}-{max(c[0] for c in ceilings):,.0f}); wall-clock ratios are only "
          f"meaningful on an idle machine")
    print(f"  per CPU-second: {achieved_cpu:,.1f} GFLOP against the matmul's {ceiling_cpu:,.1f} = "
          f"{100 * peak_fraction_cpu:.0f}% (goal >= 75%: {goal(peak_fraction_cpu, 0.75)})")
    print(f"\n  where the whole rate loses, seconds summed over the {len(keras_fits)} fits "
          f"(wall {total['wall']:.2f} s, at the steady rate {ideal:.2f} s):")
    rows = [
        ("steps beyond the steady rate (first steps, partial batch, jitter)", total["step_seconds"] - ideal),
        ("fit start-up (adapter, callbacks, iterator) to first batch request", total["startup"]),
        ("last step -> validation (metric results, old val. iterator freed)", total["val_fetch"]),
        ("validation iterator made (to first validation batch)", total["val_startup"]),
        ("validation batches (incl. the end-of-data call)", total["val_batches"]),
        ("epoch-end callbacks (run recorder saves 2 models, history, state)", total["callbacks"]),
        ("validation end -> epoch end, and between epochs", total["gaps"]),
        ("after last epoch -> on_train_end (validation iterator freed)", total["teardown_val"]),
        ("on_train_end -> fit returns (training iterator freed)", total["teardown"]),
        ("unaccounted", total["other"]),
    ]
    for label, seconds in rows:
        print(f"    {label:<68} {seconds:7.3f} s  {100 * seconds / total['wall']:5.1f}%")
    first_steps = [f["first_step"] for f in keras_fits]
    print(f"    (first step of each fit {', '.join(f'{s:.3f}' for s in first_steps)} s; slowest step "
          f"{total['slowest_step']:.3f} s, mean {args.batch_size / keras_steady:.3f} s: a retrace would take seconds)")

    # Projection to a full FER2013 run (30 epochs in one fit), from the measured parts.
    fits, epochs = len(keras_fits), len(keras_fits) * args.epochs
    per_epoch_fixed = (total["val_fetch"] + total["val_startup"] + total["callbacks"] + total["gaps"]) / epochs
    per_fit_fixed = (total["startup"] + total["teardown_val"] + total["teardown"] + total["other"]) / fits
    val_per_image = total["val_batches"] / max(epochs * len(val), 1)
    step_excess = max(0.0, (total["step_seconds"] - ideal) / epochs)
    projected_epoch = (FULL_TRAIN / keras_steady + step_excess + per_epoch_fixed + FULL_VAL * val_per_image
                       + per_fit_fixed / RUN_EPOCHS)
    projected = FULL_TRAIN / projected_epoch / keras_steady
    print(f"  projected for a {RUN_EPOCHS}-epoch run on all of FER2013 train.csv ({FULL_TRAIN} + {FULL_VAL} images, "
          f"these fixed costs, validation in proportion): whole = {100 * projected:.1f}% of steady (validation "
          f"{100 * FULL_VAL * val_per_image / projected_epoch:.1f}%, other fixed costs "
          f"{100 * (step_excess + per_epoch_fixed + per_fit_fixed / RUN_EPOCHS) / projected_epoch:.1f}%; "
          f"goal >= 95%: {goal(projected, 0.95)})")

    # ---- torch figures
    torch_whole = torch_steady = torch_cpu = None
    if torch_trainer is not None and torch_epochs:
        steady_images = steady_seconds = steady_cpu = images = seconds = cpu_total = 0.0
        for marks, sizes, val_seconds, cpu_marks, epoch_cpu in torch_epochs:
            images += sum(sizes)
            seconds += marks[-1] - marks[0] + val_seconds
            cpu_total += epoch_cpu
            for index in range(args.warmup_steps, len(sizes)):
                if sizes[index] == args.batch_size:
                    steady_images += sizes[index]
                    steady_seconds += marks[index + 1] - marks[index]
                    steady_cpu += cpu_marks[index + 1] - cpu_marks[index]
        torch_whole, torch_steady = images / seconds, steady_images / steady_seconds
        torch_cpu = steady_cpu / steady_images
        print(f"\nPyTorch reference ({len(torch_epochs)} epochs): steady {torch_steady:,.0f} img/s, whole "
              f"{torch_whole:,.0f} img/s ({100 * torch_whole / torch_steady:.1f}% of steady); {1e3 * torch_cpu:.2f} "
              f"CPU ms per image (= {cores / torch_cpu:,.0f} img/s on {cores} idle cores), whole "
              f"{1e3 * cpu_total / images:.2f}; {100 * train_flops / 1e9 / torch_cpu / ceiling_cpu:.0f}% of the matmul "
              f"ceiling per CPU-second")
        print(f"keras-fer / PyTorch: whole {keras_whole / torch_whole:.2f}x, "
              f"steady {keras_steady / torch_steady:.2f}x, "
              f"CPU per image {torch_cpu / keras_cpu:.2f}x (goal >= 1.5x: {goal(keras_whole / torch_whole, 1.5)} in "
              f"img/s, {goal(torch_cpu / keras_cpu, 1.5)} in CPU)")

    # ---- tear-down stalls, autotune on against off
    if args.stall_fits:
        steps, stalls = stall_fits(train, val, args, args.stall_fits)
        print(f"\ntraining-iterator tear-down at the end of {args.stall_fits} alternated {steps}-step fits "
              f"(on_train_end -> fit returns, seconds):")
        for autotune, values in stalls.items():
            print(f"  make_dataset(autotune={autotune!s:<5}): " + " ".join(f"{v:.2f}" for v in values)
                  + f"   mean {statistics.mean(values):.2f}, over 0.5 s: {sum(v > 0.5 for v in values)}/{len(values)}")

    if args.variants:
        run_variants(train, val, args)

    print(f"\n{load.report()}")
    fields = {"keras_img_s": keras_whole, "torch_img_s": torch_whole,
              "ratio": keras_whole / torch_whole if torch_whole else None,
              "epoch_vs_steady": keras_whole / keras_steady, "peak_fraction": peak_fraction_cpu,
              "epoch_vs_steady_30": projected,
              "keras_steady_img_s": keras_steady, "torch_steady_img_s": torch_steady,
              "ratio_cpu": torch_cpu / keras_cpu if torch_cpu else None, "peak_fraction_wall": peak_fraction,
              "matmul_gflops": ceiling, "matmul_gflops_per_cpu_s": ceiling_cpu}
    print("RESULT " + " ".join(f"{k}={'na' if v is None else (f'{v:.3f}' if v < 10 else f'{v:.0f}')}"
                               for k, v in fields.items()))


def run_variants(train, val, args):
    """Steady rates of execution options, alternated with the default, without callbacks or validation."""
    variants = {
        "default (float32)": {},
        "mixed_bfloat16": {"mixed_precision": True},
        "jit_compile=True (XLA)": {"jit_compile": True},
        "steps_per_execution=4": {"steps_per_execution": 4},
    }
    runners = {}
    for name, options in variants.items():
        runners[name] = KerasRunner(train, val, args.batch_size, args.augment, args.autotune == "on", True,
                                    scratch_dir(), callbacks=False, **options)
        runners[name].fit(1, max_steps=8, validate=False)
    totals = {name: [0, 0.0, 0.0] for name in variants}
    steps = min(runners["default (float32)"].steps, 24)
    for round_index in range(max(args.rounds, 3)):
        for name in (list(variants) if round_index % 2 == 0 else list(variants)[::-1]):
            called, returned, first, _ = runners[name].fit(1, max_steps=steps, validate=False)
            ends = [(stamp, cpu) for what, _, stamp, cpu in first if what == "batch_end"]
            # steps_per_execution=k reports one batch_end per k steps; leave out the first and last ends.
            totals[name][0] += (len(ends) - 2) * runners[name].steps_per_execution * args.batch_size
            totals[name][1] += ends[-2][0] - ends[0][0]
            totals[name][2] += ends[-2][1] - ends[0][1]
    print(f"\nexecution variants (steady rate over {steps}-step fits, no callbacks or validation, "
          f"{max(args.rounds, 3)} alternated rounds):")
    base_wall = totals["default (float32)"][0] / totals["default (float32)"][1]
    base_cpu = totals["default (float32)"][2] / totals["default (float32)"][0]
    for name, (count, seconds, cpu) in totals.items():
        print(f"  {name:<24} {count / seconds:8,.0f} img/s {count / seconds / base_wall:5.2f}x   "
              f"{1e3 * cpu / count:5.2f} CPU ms/img {base_cpu / (cpu / count):5.2f}x")


if __name__ == "__main__":
    main()
