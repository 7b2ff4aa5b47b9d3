"""Benchmark: what a short training run pays before its first step, with and without building
the optimizer before `fit`.

`keras_fer.training.fit_keras` builds the optimizer's slot variables before `model.fit`; left to
the first training step, they make TensorFlow trace Keras' train function twice (a function that
creates variables is traced again without them). This script trains the same small run several
times in one process, alternating the library's `fit_keras` with a copy that leaves the
optimizer to its first step, and times each `fit` and counts the train-function traces. One
process and alternated rounds, because the machine may be shared: compare the ratio.

Usage (from the repository root):

    PYTHONPATH=. ~/venv/bin/python bench/startup.py                 # cnn4, 2 epochs, 280 demo faces
    PYTHONPATH=. ~/venv/bin/python bench/startup.py --rounds 5 --arch dnn

The last line is `RESULT prebuilt_fit_s=... first_step_fit_s=... ratio=... prebuilt_traces=...
first_step_traces=...` (median seconds of `fit` per variant, and train-step traces per run).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="cnn4", help="architecture (default cnn4)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant, alternated (default 3)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs a run (default 2)")
    parser.add_argument("--demo-faces", type=int, default=280, help="demo faces (default 280)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MPLBACKEND", "Agg")
    from keras.src.backend.tensorflow import trainer

    from keras_fer import training
    from keras_fer.cli.train import main as train_main

    traces = {"count": 0}
    original_step = trainer.TensorFlowTrainer.train_step

    def counted_step(self, data):  # runs once per trace, not per step
        traces["count"] += 1
        return original_step(self, data)

    trainer.TensorFlowTrainer.train_step = counted_step
    prebuilt = training.fit_keras

    def first_step(model, dataset, *, strategy, config, **options):
        model.fit(dataset, shuffle=False, **options)

    results = {"prebuilt": [], "first_step": []}
    trace_counts = {"prebuilt": [], "first_step": []}
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(2 * args.rounds):
            name = "prebuilt" if index % 2 else "first_step"
            fit = prebuilt if name == "prebuilt" else first_step
            seconds = []

            def timed(model, dataset, fit=fit, seconds=seconds, **options):
                start = time.perf_counter()
                fit(model, dataset, **options)
                seconds.append(time.perf_counter() - start)

            training.fit_keras = timed
            traces["count"] = 0
            train_main(["--arch", args.arch, "--demo-faces", str(args.demo_faces), "--epochs", str(args.epochs),
                        "--batch-size", "32", "--verbose", "0", "--out", os.path.join(scratch, f"run{index}")])
            results[name].append(sum(seconds))
            trace_counts[name].append(traces["count"])
            print(f"round {index // 2 + 1} {name}: fit {sum(seconds):.2f} s, {traces['count']} train-step traces",
                  file=sys.stderr)
    training.fit_keras = prebuilt
    a, b = statistics.median(results["prebuilt"]), statistics.median(results["first_step"])
    print(f"RESULT prebuilt_fit_s={a:.2f} first_step_fit_s={b:.2f} ratio={b / a:.2f} "
          f"prebuilt_traces={max(trace_counts['prebuilt'])} first_step_traces={max(trace_counts['first_step'])}")


if __name__ == "__main__":
    main()
