"""Training cost of every registered model: CPU seconds per image and minutes per FER2013 epoch.

The figure to plan report reproductions with (docs/RESULTS.md): each model runs a few `fit`
steps on random faces at its recipe's batch size, after a warm-up; CPU time is measured as well
as wall time, since CPU time per image is barely affected when the machine is shared.

    PYTHONPATH=. python bench/zoo_cost.py [--steps 6] [--models cnn4,fervgg]
    PYTHONPATH=. python bench/zoo_cost.py --models fervgg --policies float32,mixed_bfloat16
    PYTHONPATH=. python bench/zoo_cost.py --models fervgg:width=1.5,resnet18:stem=small

A model may carry builder options after a colon (`NAME:KEY=VALUE:KEY=VALUE`, values parsed as
`train.py --model-option` parses them); its RESULT key is then the whole spec, `:`/`=`/`.`/`-`
replaced by `_`.

Ends with `RESULT <model>_cpu_ms=... ...` (CPU milliseconds per training image; with several
`--policies`, `<model>_<policy>_cpu_ms=...` and each policy's speed-up over the first).
"""

import argparse
import os
import re
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EPOCH_IMAGES = 25838  # FER2013 training rows less a 10% validation split


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def random_faces(batch_size, steps, seed=0):
    """Random 48x48x1 faces and one-hot labels for `steps` timed batches plus 2 warm-up batches."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    faces = rng.integers(0, 256, (batch_size * (steps + 2), 48, 48, 1)).astype("float32")
    return faces, keras.utils.to_categorical(rng.integers(0, 7, len(faces)), 7)


def fit_cost(model, faces, labels, batch_size):
    """Train a compiled model on 2 warm-up batches, then time one `fit` over the rest.

    Returns:
        `(cpu_ms, images_per_second)`: CPU milliseconds and wall-clock rate per timed image.
    """
    warm = batch_size * 2
    model.fit(faces[:warm], labels[:warm], batch_size=batch_size, epochs=1, verbose=0)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    model.fit(faces[warm:], labels[warm:], batch_size=batch_size, epochs=1, verbose=0)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    images = len(faces) - warm
    return 1000 * cpu / images, images / wall


def parse_model_spec(spec):
    """`"resnet18:stem=small"` -> `("resnet18", {"stem": "small"})`.

    Raises:
        SystemExit: for an option without `=` (argparse-style, exit 2).
    """
    from keras_fer.cli.train import parse_model_options
    from keras_fer.errors import FerOptionError

    name, *items = spec.split(":")
    try:
        return name, parse_model_options(items)
    except FerOptionError:
        raise SystemExit(f"error: --models takes NAME or NAME:KEY=VALUE... Received: {spec!r}") from None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model (default 6)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    parser.add_argument("--models", help="comma-separated names, each optionally with builder options "
                        "(fervgg:width=1.5); default: every registered model")
    parser.add_argument("--policies", default="float32",
                        help="comma-separated Keras dtype policies, each measured on every model in turn "
                             "(default float32; mixed_bfloat16 is train.py --mixed-precision on a CPU)")
    args = parser.parse_args()

    import keras

    from keras_fer.errors import FerOptionError
    from keras_fer.models import build_model, count_flops, dtype_policy, list_models
    from keras_fer.training import TrainConfig, compile_model

    names = args.models.split(",") if args.models else list_models()
    policies = list(dict.fromkeys(args.policies.split(",")))
    faces, labels = random_faces(args.batch_size, args.steps)
    results = {}
    column = max([12] + [len(spec) + 2 for spec in names])
    print(f"{'model':<{column}}{'policy':<16}{'MFLOPs':>9}{'img/s':>9}{'CPU ms/img':>12}"
          f"{'min/epoch (1 core)':>20}{'min/epoch (2 cores)':>21}")
    for spec in names:
        name, options = parse_model_spec(spec)
        stem = re.sub(r"[-:=.]", "_", spec)
        for policy in policies:
            keras.utils.set_random_seed(0)
            try:
                with dtype_policy(policy):
                    model = build_model(name, preprocessing={"normalize": "unit"}, **options)
            except FerOptionError as error:
                raise SystemExit(f"error: --models {spec}: {error}") from None
            compile_model(model, "adam", 1e-4, TrainConfig())
            cpu_ms, rate = fit_cost(model, faces, labels, args.batch_size)
            key = stem + ("" if len(policies) == 1 else f"_{policy}")
            results[key] = cpu_ms
            minutes_one_core = EPOCH_IMAGES * cpu_ms / 1000 / 60
            print(f"{spec:<{column}}{policy:<16}{count_flops(model) / 1e6:>9.1f}{rate:>9.0f}{cpu_ms:>12.2f}"
                  f"{minutes_one_core:>20.1f}{minutes_one_core / 2:>21.1f}", flush=True)
            del model
            keras.backend.clear_session()
        if len(policies) > 1:
            for policy in policies[1:]:
                results[f"{stem}_{policy}_speedup"] = results[f"{stem}_{policies[0]}"] / results[f"{stem}_{policy}"]
    print("min/epoch assumes the CPU time per image holds and 2 cores scale ideally (an estimate).")
    print("RESULT " + " ".join(f"{key}={value:.2f}" if key.endswith("_speedup") else f"{key}_cpu_ms={value:.2f}"
                               for key, value in results.items()))


if __name__ == "__main__":
    main()
