"""Benchmark `python predict.py` as a user runs it: the whole process, end to end.

    python bench/predict.py [--data PATH] [--rows-1m 1000000] [--repeat 3]

Data: --data, else $FER_DATA's test file, else ../shared/fer2013/test.csv.gz (7,178 rows), else a
generated CSV of 7,178 demo faces. Model: the zoo's cnn4 (untrained, `preprocessing={"normalize":
"unit"}`) saved as a run directory in a temporary folder.

Measured, each in its own child process (peak memory is the child's `ru_maxrss`):
- first run: LiteRT backend, cold (it exports and verifies best.tflite: imports TensorFlow);
- warm runs (--repeat, the median is reported): the everyday case, the cached LiteRT copy;
- one run with --backend keras, for comparison;
- peak memory on a generated CSV of --rows-1m rows (the data's rows repeated; deleted after).

Wall time is split with predict.py's own `--timings` line: read_s (waiting for rows; reading runs
in a background thread and overlaps inference), infer_s, write_s; start-up is the rest (Python,
imports, model load, argument parsing). The last line is
`RESULT total_s=... startup_s=... read_s=... infer_s=... peak_mib=... peak_mib_1m=...`.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Runs `argv[1:]` and reports its wall time and peak memory (its own children only).
MEASURE = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
process = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": process.returncode, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
                  "maxrss_kib": usage.ru_maxrss,
                  "stdout": process.stdout[-3000:], "stderr": process.stderr[-3000:]}))
"""


def measure(args, env):
    completed = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, env=env,
                               check=True)
    result = json.loads(completed.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"predict.py failed ({result['rc']}):\n{result['stderr']}")
    timings = {}
    for line in result["stderr"].splitlines():
        if line.startswith("timings "):
            for field in line.split()[1:]:
                key, _, value = field.partition("=")
                try:
                    timings[key] = float(value)
                except ValueError:
                    timings[key] = value
    result["timings"] = timings
    result["peak_mib"] = result["maxrss_kib"] / 1024
    stages = sum(timings.get(key, 0.0) for key in ("read_s", "infer_s", "write_s", "metrics_s"))
    result["startup_s"] = result["wall"] - stages
    return result


def find_data(option, scratch):
    from keras_fer.data import resolve_data_path

    for candidate in (option, resolve_data_path(None, "test"), REPO.parent / "shared" / "fer2013" / "test.csv.gz"):
        if candidate and Path(candidate).is_file():
            return Path(candidate), "given"
    from keras_fer.synthetic import generate

    path = scratch / "demo_test.csv"
    images = generate(7178, seed=0).images
    with open(path, "w") as handle:
        handle.write("id,feature\n")
        for i, face in enumerate(images.pixels.reshape(len(images), -1)):
            handle.write(f"{i},{' '.join(map(str, face.tolist()))}\n")
    return path, "generated demo faces"


def make_run(folder):
    """cnn4 from the zoo (a comparable small CNN if the zoo is not importable), untrained."""
    import keras

    folder.mkdir()
    try:
        from keras_fer.models import build_model

        model, arch = build_model("cnn4", preprocessing={"normalize": "unit"}), "cnn4"
    except Exception as error:  # noqa: BLE001  the zoo is written in parallel
        print(f"note: model zoo unavailable ({error}); using a small stand-in CNN", file=sys.stderr)
        from keras_fer.models.layers import Preprocessing

        inputs = keras.Input((48, 48, 1))
        x = Preprocessing(normalize="unit")(inputs)
        for filters in (64, 128, 256, 256):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model, arch = keras.Model(inputs, keras.layers.Dense(7, name="logits")(x)), "stand-in"
    model.save(folder / "best.keras")
    prior = [0.139, 0.015, 0.143, 0.251, 0.168, 0.110, 0.173]
    (folder / "config.json").write_text(json.dumps({"arch": arch, "class_prior": prior, "normalize": "unit"}))
    return arch, model.count_params()


def write_big_csv(source, path, rows):
    """`rows` data rows: the rows of `source` repeated, ids renumbered."""
    from keras_fer.data import _open_text

    with _open_text(source) as handle:
        lines = handle.read().splitlines()
    header, body = lines[0], [line.split(",", 1)[1] for line in lines[1:] if line.strip()]
    if not header.lower().startswith("id,"):
        header = "id," + header.split(",", 1)[1]
    with open(path, "w", buffering=1 << 22) as out:
        out.write(header + "\n")
        for start in range(0, rows, len(body)):
            count = min(len(body), rows - start)
            out.write("".join(f"{start + i},{body[i]}\n" for i in range(count)))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a FER CSV to predict (default: FER_DATA, ../shared/fer2013/test.csv.gz)")
    parser.add_argument("--repeat", type=int, default=3, help="warm runs; the median is reported (default 3)")
    parser.add_argument("--rows-1m", type=int, default=1_000_000, help="rows of the memory test CSV (0: skip)")
    args = parser.parse_args(argv)

    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("FER_DATA", None)
    scratch = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        data, origin = find_data(args.data, scratch)
        arch, parameters = make_run(scratch / "run")
        predict = [sys.executable, str(REPO / "predict.py")]
        common = ["--model", str(scratch / "run"), "--out", str(scratch / "submission.csv"), "--timings"]
        print(f"data: {data} ({origin}); model: {arch}, {parameters:,} parameters; cpus: {os.cpu_count()}; "
              f"load average at start: {os.getloadavg()[0]:.1f}")

        cold = measure(predict + [str(data)] + common, env)
        print(f"first run (exports + verifies best.tflite): {cold['wall']:.2f} s, peak {cold['peak_mib']:.0f} MiB, "
              f"CPU time {cold['cpu']:.2f} s")
        warm = sorted((measure(predict + [str(data)] + common, env) for _ in range(max(1, args.repeat))),
                      key=lambda result: result["wall"])
        best = warm[len(warm) // 2]
        timings = best["timings"]
        walls = ", ".join(f"{result['wall']:.2f}" for result in warm)
        print(f"warm runs (LiteRT): {walls} s; median {best['wall']:.2f} s = "
              f"start-up {best['startup_s']:.2f} (imports {timings.get('imports_s', float('nan')):.2f}, "
              f"model load {timings.get('load_s', 0):.2f}) + read {timings.get('read_s', 0):.2f} "
              f"+ inference {timings.get('infer_s', 0):.2f} + write {timings.get('write_s', 0):.2f}; "
              f"{int(timings.get('rows', 0)) / max(best['wall'], 1e-9):,.0f} rows/s end to end; "
              f"peak {best['peak_mib']:.0f} MiB, CPU time {best['cpu']:.2f} s")
        keras_run = measure(predict + [str(data)] + common + ["--backend", "keras"], env)
        print(f"keras backend: {keras_run['wall']:.2f} s (start-up {keras_run['startup_s']:.2f}, "
              f"inference {keras_run['timings'].get('infer_s', 0):.2f}), peak {keras_run['peak_mib']:.0f} MiB, "
              f"CPU time {keras_run['cpu']:.2f} s")

        peak_1m = float("nan")
        if args.rows_1m > 0:
            big = write_big_csv(data, scratch / "big.csv", args.rows_1m)
            size_gib = big.stat().st_size / 2**30
            run = measure(predict + [str(big)] + common, env)
            big.unlink()
            peak_1m = run["peak_mib"]
            print(f"{args.rows_1m:,} rows ({size_gib:.1f} GiB CSV): {run['wall']:.1f} s, peak {peak_1m:.0f} MiB, "
                  f"CPU time {run['cpu']:.0f} s "
                  f"(read {run['timings'].get('read_s', 0):.1f} s, inference {run['timings'].get('infer_s', 0):.1f} s)")

        print(f"RESULT total_s={best['wall']:.2f} startup_s={best['startup_s']:.2f} "
              f"read_s={timings.get('read_s', 0):.2f} infer_s={timings.get('infer_s', 0):.2f} "
              f"peak_mib={best['peak_mib']:.0f} peak_mib_1m={peak_1m:.0f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
