"""Benchmark the Keras backend's forward pass: `model.predict` against `loading.keras_predict`
(`predict_on_batch` per batch), side by side in one process, for a camera frame's single face up
to a CSV chunk.

    python bench/keras_predict.py [--arch cnn4] [--repeat 10]

Model: the zoo's architecture (untrained, `preprocessing={"normalize": "unit"}`). Each size is
timed after one warm-up call of each path; the median of --repeat calls is reported, with the
ratio and the largest difference of the two outputs. The last line is
`RESULT ratio_1=... ratio_16=... ratio_256=... ratio_1024=...`.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def median_seconds(call, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn4")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    import numpy as np

    from keras_fer.loading import keras_predict
    from keras_fer.models import build_model

    model = build_model(args.arch, preprocessing={"normalize": "unit"})
    rng = np.random.default_rng(0)
    ratios = {}
    print(f"{'faces':>6} {'model.predict ms':>17} {'keras_predict ms':>17} {'ratio':>6} {'max |diff|':>11}")
    for count in (1, 16, 256, 1024):
        faces = rng.integers(0, 256, (count, 48, 48, 1)).astype(np.float32)
        old = lambda faces=faces: model.predict(faces, batch_size=256, verbose=0)  # noqa: E731
        new = lambda faces=faces: keras_predict(model, faces, 256)  # noqa: E731
        diff = float(np.abs(np.asarray(old()) - new()).max())  # also the warm-up of both
        old_s, new_s = median_seconds(old, args.repeat), median_seconds(new, args.repeat)
        ratios[count] = old_s / new_s
        print(f"{count:>6} {old_s * 1000:>17.1f} {new_s * 1000:>17.1f} {ratios[count]:>6.1f} {diff:>11.2e}")
    print("RESULT " + " ".join(f"ratio_{count}={ratio:.2f}" for count, ratio in ratios.items()))


if __name__ == "__main__":
    main()
