"""Benchmark (issue 2): augmented images/second of the tf.data training pipeline.

Consumes `keras_fer.pipeline.make_dataset(training=True)` without a model, for every
augmentation set (`none`, `basic`, `strong`, then each single augmentation), and in the same run
measures how fast `cnn4` trains on the same data, so the ratio the issue asks about (the
`strong` pipeline at least 5x faster than cnn4 training, so it never starves training on 2 cores)
is measured side by side. It also trains cnn4 fed by the `strong` pipeline, which shows what
augmentation actually costs training when both share the same cores.

The contenders are measured in short alternating rounds (each round visits every set, in a
rotated order, and runs a few training steps), because other jobs may share the CPU: compare the
ratios, not the absolute figures, between runs.

Usage (from the repository root):

    PYTHONPATH=. ~/venv/bin/python bench/pipeline.py                    # FER_DATA or demo faces
    PYTHONPATH=. ~/venv/bin/python bench/pipeline.py --data ../shared/fer2013/train.csv.gz
    PYTHONPATH=. ~/venv/bin/python bench/pipeline.py --rounds 8 --per-set 16384   # longer, steadier

The last line is `RESULT none_img_s=... basic_img_s=... strong_img_s=... cnn4_train_img_s=...
strong_vs_train=...` (plus the strong-fed training rate).

The helpers `load_faces`, `MachineLoad` and `quiet_tensorflow` are shared with
`bench/train_throughput.py`.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

DEFAULT_IMAGES = 8192


def quiet_tensorflow():
    """Silence TensorFlow's C++ start-up chatter (call before importing TensorFlow)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --------------------------------------------------------------------------------------------
# Shared helpers


def load_faces(data=None, max_images=DEFAULT_IMAGES, demo_faces=2100, seed=0):
    """Labelled faces to benchmark on: FER2013 when `data` or FER_DATA points at it, else demo faces.

    Reads only the first `max_images` rows of a CSV (0 or None: all of it), chunk by chunk, so a
    short benchmark does not pay the ~15 s it takes to parse all 28,709 training rows.

    Returns `(images, description)` with `images` a `keras_fer.data.Images`.
    """
    from keras_fer import data as data_module

    path = data_module.resolve_data_path(data, "train")
    started = time.perf_counter()
    if path is None:
        from keras_fer.synthetic import generate

        images = generate(demo_faces, seed=seed).images
        return images, (f"{len(images)} demo faces (no --data and no FER_DATA), "
                        f"made in {time.perf_counter() - started:.1f} s")
    if os.path.isdir(path) or not str(path).endswith((".csv", ".csv.gz")):
        images = data_module.read(path)
    else:
        parts, count = [], 0
        for chunk in data_module.iter_csv(path):
            parts.append(chunk)
            count += len(chunk)
            if max_images and count >= max_images:
                break
        images = data_module.concatenate(parts, str(path))
    if max_images and len(images) > max_images:
        images = images.subset(np.arange(max_images))
    if images.labels is None:
        sys.exit(f"error: {path} has no labels; the benchmark needs labelled training faces")
    return images, (f"{len(images)} FER2013 faces from {path} (first rows), "
                    f"read in {time.perf_counter() - started:.1f} s")


class MachineLoad:
    """Load average, and the share of the cores this process got, between `start` and `report`."""

    def __init__(self):
        self.cores = os.cpu_count()
        self.start()

    @staticmethod
    def _machine_busy():
        with open("/proc/stat") as handle:
            fields = [float(v) for v in handle.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        return sum(fields) - idle, sum(fields)

    def start(self):
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.load_start = os.getloadavg()
        try:
            self.busy = self._machine_busy()
        except OSError:
            self.busy = None
        return self

    def report(self):
        wall = time.perf_counter() - self.wall
        own = (time.process_time() - self.cpu) / wall
        text = (f"machine: {self.cores} cores; load average {self.load_start[0]:.1f} at start, "
                f"{os.getloadavg()[0]:.1f} at end; this process used {own:.2f} cores on average")
        if self.busy is not None:
            busy, total = self._machine_busy()
            share = (busy - self.busy[0]) / max(total - self.busy[1], 1e-9)
            text += f"; all cores {100 * share:.0f}% busy"
        return text


def versions():
    import keras
    import tensorflow as tf

    return (f"tensorflow {tf.__version__}, keras {keras.__version__}, numpy {np.__version__}, "
            f"python {sys.version.split()[0]}")


def compiled_cnn4(lr=1e-3):
    """cnn4 around raw faces, compiled as `keras_fer.training.compile_model` does with Adam."""
    from keras_fer.models import build_model
    from keras_fer.training import TrainConfig, compile_model

    model = build_model("cnn4", preprocessing={"normalize": "unit"})
    compile_model(model, "adam", lr, TrainConfig())
    return model


# --------------------------------------------------------------------------------------------
# Pipeline-only measurement


def time_set(dataset, images, batch_size, warmup_batches):
    """Consume `images` images of `dataset` after `warmup_batches` untimed ones.

    Returns `(images, seconds, cpu_seconds, startup_seconds, teardown_seconds)`: cpu is the
    process's CPU time (all threads) over the timed part; start-up is iterator creation plus the
    warm-up batches, tear-down is deleting the iterator (tf.data's autotune stall).
    """
    started = time.perf_counter()
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    timed, cpu = time.perf_counter(), time.process_time()
    seen = 0
    while seen < images:
        x, _ = next(iterator)
        seen += int(x.shape[0])
    done, cpu = time.perf_counter(), time.process_time() - cpu
    del iterator, x
    teardown = time.perf_counter() - done
    return seen, done - timed, cpu, timed - started, teardown


def training_rate(model, dataset, steps, warmup_steps, batch_size):
    """Images/s of `model.fit` on `dataset` (full batches only), timed after the warm-up steps.

    Returns `(images, seconds, cpu_seconds)`.
    """
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.marks, self.cpu = [], []

        def on_train_batch_end(self, batch, logs=None):
            self.marks.append(time.perf_counter())
            self.cpu.append(time.process_time())

    timer = Timer()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup_steps + steps, callbacks=[timer], verbose=0, shuffle=False)
    marks, cpu = timer.marks[warmup_steps - 1:], timer.cpu[warmup_steps - 1:]
    return (len(marks) - 1) * batch_size, marks[-1] - marks[0], cpu[-1] - cpu[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="FER2013 file or folder (default: FER_DATA, else demo faces)")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES,
                        help=f"read only the first N rows (0: all); default {DEFAULT_IMAGES}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--per-set", type=int, default=4096, help="images timed per augmentation set, over all rounds")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=4, help="untimed batches after each iterator start")
    parser.add_argument("--sets", default=None,
                        help="comma list of sets to time (default: none, basic, strong and each augmentation)")
    parser.add_argument("--train-steps", type=int, default=24,
                        help="timed cnn4 training steps per round (0: no training)")
    parser.add_argument("--no-strong-train", action="store_true", help="skip training cnn4 fed by the strong pipeline")
    parser.add_argument("--autotune", choices=("on", "off", "both"), default="on",
                        help="make_dataset(autotune=...): on is tf.data autotune (training runs with it off "
                             "since 6ff9f88); both also times every set with autotune off (rows `SET@off`)")
    args = parser.parse_args(argv)

    quiet_tensorflow()
    load = MachineLoad()
    faces, description = load_faces(args.data, args.images)

    from keras_fer.pipeline import AUGMENT_PRESETS, AUGMENTATIONS, AugmentConfig, make_dataset

    sets = args.sets.split(",") if args.sets else list(AUGMENT_PRESETS) + list(AUGMENTATIONS)
    autotune = args.autotune != "off"
    if args.autotune == "both":
        sets += [f"{spec}@off" for spec in sets]
    print(f"pipeline benchmark: {description}")
    print(f"{versions()}; {os.cpu_count()} cores; batch {args.batch_size}; autotune {args.autotune}; "
          f"{args.rounds} rounds x {args.per_set // args.rounds} images per set")
    print(load.report().replace("machine: ", "machine at start: ").split("; this process")[0])

    def dataset_for(key):
        spec, _, mode = key.partition("@")
        return make_dataset(pixels, labels, args.batch_size, training=True, augment=AugmentConfig.parse(spec),
                            seed=0, epochs=1000, autotune=autotune if not mode else mode == "on")

    # Whole batches only, so that training steps x batch size counts the images exactly.
    usable = max(args.batch_size, len(faces) // args.batch_size * args.batch_size)
    pixels, labels = faces.pixels[:usable], faces.labels[:usable]
    datasets = {spec: dataset_for(spec) for spec in sets}
    totals = {spec: [0, 0.0, 0.0] for spec in sets}
    per_round = {spec: [] for spec in sets}
    startup = {spec: [] for spec in sets}
    teardown = {spec: [] for spec in sets}
    train = {"none": [0, 0.0, 0.0], "strong": [0, 0.0, 0.0]}
    train_rounds = {"none": [], "strong": []}
    train_sets = ["none"] if args.no_strong_train else ["none", "strong"]
    models = {}
    if args.train_steps:
        for spec in train_sets:
            models[spec] = compiled_cnn4()
            training_rate(models[spec], datasets.get(spec) or dataset_for(spec), 2, 2,
                          args.batch_size)  # trace + warm up
        train_datasets = {spec: datasets.get(spec) or dataset_for(spec) for spec in train_sets}

    images_per_round = max(args.batch_size, args.per_set // args.rounds)
    for round_index in range(args.rounds):
        order = sets[round_index % len(sets):] + sets[:round_index % len(sets)]
        for spec in order:
            seen, seconds, cpu, start, stop = time_set(datasets[spec], images_per_round, args.batch_size, args.warmup)
            totals[spec][0] += seen
            totals[spec][1] += seconds
            totals[spec][2] += cpu
            per_round[spec].append(seen / seconds)
            startup[spec].append(start)
            teardown[spec].append(stop)
        if args.train_steps:
            for spec in (train_sets if round_index % 2 == 0 else train_sets[::-1]):
                seen, seconds, cpu = training_rate(models[spec], train_datasets[spec], args.train_steps, 3,
                                                   args.batch_size)
                train[spec][0] += seen
                train[spec][1] += seconds
                train[spec][2] += cpu
                train_rounds[spec].append(seen / seconds)
        line = "  ".join(f"{spec} {per_round[spec][-1]:,.0f}" for spec in sets[:3])
        if args.train_steps:
            line += "  | cnn4 train " + "  ".join(f"{spec}-fed {train_rounds[spec][-1]:,.0f}" for spec in train_sets)
        print(f"round {round_index + 1}/{args.rounds} (img/s): {line}", flush=True)

    rate = {spec: totals[spec][0] / totals[spec][1] for spec in sets}
    cpu = {spec: 1e6 * totals[spec][2] / totals[spec][0] for spec in sets}  # CPU us per image
    train_rate = {spec: train[spec][0] / train[spec][1] for spec in train_sets if train[spec][1]}
    train_cpu = {spec: 1e6 * train[spec][2] / train[spec][0] for spec in train_sets if train[spec][1]}
    base = train_rate.get("none")
    none_cpu = cpu.get("none", 0.0)

    print()
    print("wall: images/s of the process as it ran; cpu: CPU time of the process (all threads) per image,")
    print("which a loaded machine disturbs much less than wall time (see docs/performance.md).")
    print(f"{'augmentation':<12} {'img/s':>9} {'spread':>15} {'x train':>8} {'wall us':>8} {'cpu us':>8} "
          f"{'+cpu us':>8} {'cpu x tr':>8} {'start s':>8} {'stop s':>7}")
    for spec in sets:
        spread = f"{min(per_round[spec]):,.0f}-{max(per_round[spec]):,.0f}"
        vs_train = f"{rate[spec] / base:8.1f}" if base else f"{'-':>8}"
        cpu_vs_train = f"{train_cpu['none'] / cpu[spec]:8.1f}" if base else f"{'-':>8}"
        print(f"{spec:<12} {rate[spec]:9,.0f} {spread:>15} {vs_train} {1e6 / rate[spec]:8.1f} {cpu[spec]:8.1f} "
              f"{cpu[spec] - none_cpu:8.1f} {cpu_vs_train} {statistics.median(startup[spec]):8.3f} "
              f"{max(teardown[spec]):7.3f}")
    print("(x train: img/s over cnn4's training img/s; wall/cpu us: per image; +cpu us: over `none`; cpu x tr: "
          "cnn4 training's\n CPU per image over the set's; start s: iterator start + warm-up batches, median; "
          "stop s: iterator deletion, worst)")
    if base:
        print(f"\ncnn4 training (Adam, batch {args.batch_size}, no augmentation): {base:,.0f} img/s "
              f"(rounds {min(train_rounds['none']):,.0f}-{max(train_rounds['none']):,.0f}), "
              f"{train_cpu['none'] / 1e3:.2f} CPU ms per image "
              f"(= {2e6 / train_cpu['none']:,.0f} img/s on 2 idle cores)")
        if "strong" in train_rate:
            slow = 1 - train_rate["strong"] / base
            extra = train_cpu["strong"] / train_cpu["none"] - 1
            print(f"cnn4 training fed by the strong pipeline: {train_rate['strong']:,.0f} img/s ({100 * -slow:+.0f}%); "
                  f"{train_cpu['strong'] / 1e3:.2f} CPU ms per image ({100 * extra:+.0f}%: augmentation and training "
                  f"share the cores)")
        if "strong" in rate:
            ratio = rate["strong"] / base
            ratio_cpu = train_cpu["none"] / cpu["strong"]
            print(f"strong pipeline vs cnn4 training: {ratio:.2f}x in img/s, {ratio_cpu:.2f}x in CPU per image "
                  f"(goal >= 5x: {'met' if ratio >= 5 else 'NOT met'} in img/s, "
                  f"{'met' if ratio_cpu >= 5 else 'NOT met'} in CPU)")
    print(load.report())

    fields = {f"{spec}_img_s": rate.get(spec) for spec in ("none", "basic", "strong")}
    fields["cnn4_train_img_s"] = base
    fields["strong_vs_train"] = rate["strong"] / base if base and "strong" in rate else None
    fields["strong_vs_train_cpu"] = train_cpu["none"] / cpu["strong"] if base and "strong" in rate else None
    if "strong" in train_rate:
        fields["cnn4_strong_train_img_s"] = train_rate["strong"]
    print("RESULT " + " ".join(f"{k}={'na' if v is None else (f'{v:.2f}' if v < 100 else f'{v:.0f}')}"
                               for k, v in fields.items()))


if __name__ == "__main__":
    main()
