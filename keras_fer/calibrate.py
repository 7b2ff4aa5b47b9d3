"""Temperature scaling: make a model's confidence mean what it says.

A model's top-class probability is its confidence; calibrated, the faces it gives 0.8 are right
80% of the time. Distilled students come out under-confident (the packaged model said 0.57 on
average where it is right 67% of the time), long-trained networks over-confident. Temperature
scaling (Guo et al., 2017) divides the logits by one number T fitted on labelled faces the model
was not trained on: the predicted classes stay the same, the confidences move. `calibrate`
fits T; `write_temperature` records it as `"temperature"` in the `config.json` beside the model
(with `tta="flip"` or `"crops"`, in `"tta_temperatures"`: averaging views softens the
probabilities, so predictions with TTA want a lower T of their own),
where `predict.py` (CSVs, photos, videos), `keras_fer.recognize` and `visualize.py`'s titles and
per-class picks read it (its maps are of the logits, which the temperature does not change);
soups and distillation teachers leave it out.

Example:
>>> from keras_fer.calibrate import calibrate, write_temperature
>>> fit = calibrate("runs/cnn4")  # its validation.npz; or calibrate(model, data="val.csv.gz")  # doctest: +SKIP
>>> fit.temperature, fit.before.ece, fit.cross_fitted.ece  # doctest: +SKIP
>>> write_temperature(fit)  # doctest: +SKIP
"""

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from keras_fer.errors import FerDataError, FerModelError
from keras_fer.metrics import (
    TEMPERATURE_RANGE,
    Calibration,
    calibration,
    cross_fitted_calibration,
    fit_temperature,
    scaled_views,
)

MIN_ROWS = 50  # fewer labelled faces fit a temperature to their noise


@dataclasses.dataclass
class TemperatureFit:
    """A fitted temperature and what it does.

    Attributes:
        temperature: T; the logits are divided by it (above 1 softens, below 1 sharpens).
        before: the `Calibration` of the predictions without this fit: the model's own
            probabilities, or for a TTA mode at `baseline`.
        after: the `Calibration` with T, on the rows T was fitted on (flattering).
        cross_fitted: the `Calibration` with T fitted on one half of the rows and measured on
            the other (the honest estimate).
        source: the model's `loading.ModelSource`.
        fitted_on: what the labelled rows were, for messages.
        previous: the value the config recorded before (None: none; as written, even if invalid).
        tta: the TTA mode of the predictions T is for (`inference.TTA_MODES`).
        baseline: the temperature those predictions use without a record of their own: 1 (the
            model's own softmax), or for a TTA mode the config's valid `"temperature"`.
    """

    temperature: float
    before: Calibration
    after: Calibration
    cross_fitted: Calibration
    source: object
    fitted_on: str
    previous: float = None
    tta: str = "none"
    baseline: float = 1.0


def _validation_of_run(source):
    """`(labels, probabilities, description)` of the run's validation.npz, or None (also for
    another model file of the run, such as last-0002.keras: validation.npz is best.keras')."""
    from keras_fer import report

    folder = source.path.parent
    if source.path.name != "best.keras" or not (folder / "validation.npz").is_file():
        return None
    saved = report.read_run(folder).validation()
    if saved is None:
        return None
    labels, probabilities, _ = saved
    return labels, probabilities, f"{folder / 'validation.npz'} ({len(labels):,} rows)"


def _row_digests(pixels):
    """One digest per face, of its pixels: rows compared across files."""
    import hashlib

    return [hashlib.sha1(np.ascontiguousarray(row, np.uint8).tobytes()).digest() for row in pixels]


def _training_rows(source):
    """Digests of the pixels of the rows the model trained on: the split its config.json records,
    rebuilt on the data file it records (when that is still there and unchanged), or None."""
    from keras_fer import data as data_module
    from keras_fer.errors import FerError
    from keras_fer.loading import ModelSource, run_options, validation_split

    config = source.config or {}
    path = config.get("data")
    if not isinstance(path, str) or not Path(path).exists():
        return None
    try:
        recorded = validation_split([ModelSource(None, config, source.config_path)], ["model"], "")
        if recorded is None or not isinstance(recorded[0], str):
            return None
        images = data_module.read(data_module.existing_data_path(path, "train"))
        if not images.labelled or str(config.get("data_fingerprint", images.fingerprint())) != images.fingerprint():
            return None
        train, _ = data_module.split(images, recorded[0], seed=recorded[1])
        cut = run_options(config, source.config_path).get("max_images")
        if isinstance(cut, int) and cut > 0:
            train = train.subset(np.arange(min(cut, len(train))))
    except (FerError, OSError):
        return None
    return set(_row_digests(train.pixels))


def _predicted(source, data, backend, tta="none"):
    """`(labels, probabilities, description)`: the model's own probabilities (no temperature) on
    the labelled file `data`; with a `tta` mode, of each view: `(views, N, 7)`."""
    from keras_fer.data import read
    from keras_fer.inference import load_predictor, tta_views

    trained_on = (source.config or {}).get("data")
    def seen(what, split_from=data):
        return FerDataError(f"the model was trained on {what}: a temperature fitted on faces it has seen makes it "
                            "over-confident on new ones; give its validation split (python -m keras_fer.data split "
                            f"{split_from} --out-val val.csv.gz, with the run's --val and --split-seed)", data)

    if isinstance(trained_on, str) and Path(trained_on).exists() and Path(data).exists() and (
            Path(trained_on).resolve() == Path(data).resolve()):
        raise seen("this data")  # before it is read
    images = read(data)
    if source.config and images.labels is not None and images.fingerprint() == source.config.get("data_fingerprint"):
        # the same faces and labels by another path or copy (the path test misses relative paths too)
        raise seen("these faces (its config.json records their fingerprint)")
    if images.labels is None:
        raise FerDataError("has no labels: the temperature is fitted on labelled faces (e.g. the validation split: "
                           "python -m keras_fer.data split TRAIN.csv.gz --out-val val.csv.gz)", data)
    trained = _training_rows(source)
    if trained:  # its training split, written out (data split --out-train) or cut down: most rows are seen
        seen_rows = sum(digest in trained for digest in _row_digests(images.pixels))
        if 2 * seen_rows > len(images):
            raise seen(f"{seen_rows:,} of these {len(images):,} faces (its training split of "
                       f"{source.config['data']}, rebuilt as its config.json records)", source.config["data"])
    # the model's own probabilities: a recorded temperature (even an invalid one) is not applied
    predictor = load_predictor(source.path, backend, temperature=1.0)
    if tta == "none":
        return images.labels, predictor.probabilities(images.pixels), f"{data} ({len(images):,} rows)"
    views = tta_views(images.pixels, tta)
    probabilities = np.stack([predictor.probabilities(view) for view in views])
    return images.labels, probabilities, f"{data} ({len(images):,} rows, --tta {tta}: {len(views)} views each)"


def calibrate(model, data=None, backend="auto", tta="none"):
    """Fit the temperature of a model.

    Args:
        model: a run directory, a `.keras` file or `"packaged"`.
        data: a labelled FER CSV or image folder the model was not trained on; default: the
            run's `validation.npz` (its best model's probabilities on its validation split).
        backend: how `data` is predicted (`inference.load_predictor`).
        tta: fit the temperature of predictions with this TTA mode (`inference.TTA_MODES`):
            each view's logits divided by T, then averaged. Needs `data` unless `"none"`.

    Returns:
        A `TemperatureFit`.

    Raises:
        FerModelError: for a missing model, or a model file without `validation.npz` beside it
            and no `data`.
        FerDataError: for unlabelled or malformed `data`.
    """
    from keras_fer.errors import FerOptionError
    from keras_fer.inference import TTA_MODES
    from keras_fer.loading import positive_number, resolve_model_argument

    if tta not in TTA_MODES:
        raise FerOptionError(f"tta must be one of {', '.join(TTA_MODES)}. Received: tta={tta!r}")
    source = resolve_model_argument(model, "model")
    config = source.config or {}
    # as written: an invalid one is replaced, not refused
    previous = config.get("temperature") if tta == "none" else _as_dict(config.get("tta_temperatures")).get(tta)
    if data is None and tta != "none":
        raise FerOptionError(f"--tta {tta} needs --data: the run's validation.npz holds its probabilities without "
                             "TTA; give labelled faces it was not trained on (e.g. python -m keras_fer.data split "
                             "TRAIN.csv.gz --out-val val.csv.gz, with the run's --val and --split-seed)")
    found = _validation_of_run(source) if data is None else _predicted(source, data, backend, tta)
    if found is None:
        what = ("validation.npz holds best.keras' probabilities, not this file's" if source.path.name != "best.keras"
                and (source.path.parent / "validation.npz").is_file() else "no validation.npz beside it")
        raise FerModelError(f"{source.path}: {what} to fit the temperature on: give --data, labelled faces it was "
                            "not trained on (e.g. python -m keras_fer.data split TRAIN.csv.gz --out-val val.csv.gz, "
                            "with the run's --val and --split-seed)")
    labels, probabilities, fitted_on = found
    if len(labels) < MIN_ROWS:
        raise FerDataError(f"{len(labels)} labelled rows are too few to fit a temperature (at least {MIN_ROWS}: "
                           "fewer fit their own noise)", fitted_on.rsplit(" (", 1)[0])
    temperature = fit_temperature(labels, probabilities)
    # without a record of its own, a TTA mode's predictions use a valid "temperature"
    baseline = (positive_number(config.get("temperature")) if tta != "none" else None) or 1.0
    return TemperatureFit(temperature, calibration(labels, scaled_views(probabilities, baseline)),
                          calibration(labels, scaled_views(probabilities, temperature)),
                          cross_fitted_calibration(labels, probabilities), source, fitted_on, previous, tta,
                          baseline)


def _as_dict(value):
    return value if isinstance(value, dict) else {}


def helps(fit):
    """Whether the temperature lowers the ECE on rows it was not fitted on (`cross_fitted`): a
    model calibrated already gains nothing from one fitted to its rows' noise."""
    return bool(fit.cross_fitted.total) and fit.cross_fitted.ece < fit.before.ece


def at_range_end(temperature):
    """True when a fitted temperature sits at an end of the search range: the labelled rows say
    nothing sensible (too few, or one class), or the model's probabilities are degenerate."""
    low, high = TEMPERATURE_RANGE
    return temperature <= low * 1.01 or temperature >= high * 0.99


def write_temperature(fit, remove=False):
    """Record `fit.temperature` as `"temperature"` (for `fit.tta`, in `"tta_temperatures"`) in the
    config.json beside the model (atomically; the other keys kept); with `remove`, take the
    recorded one out instead (a temperature that does not help). Returns the config's path.

    Raises:
        FerModelError: when the model has no config.json (a bare `.keras` file), the config is
            read-only, it is the packaged model's (inside the installed package), or the
            temperature sits at an end of the search range.
    """
    import os

    from keras_fer.files import write_json

    source = fit.source
    if source.config is None:
        raise FerModelError(f"{source.path}: no config.json beside it, where the temperature is kept (a run "
                            f"directory has one): nothing written to {source.config_path}")
    package = Path(__file__).resolve().parent
    if package in Path(source.config_path).resolve().parents:
        raise FerModelError(f"{source.config_path}: the packaged model's config, inside the installed package: "
                            "not written (it records a temperature already); calibrate a copy instead (predict.py "
                            "--export keras --export-to DIR/best.keras, then python -m keras_fer.calibrate "
                            "DIR/best.keras --data ...)")
    if not os.access(source.config_path, os.W_OK):
        if remove:  # the one recorded stays in force
            raise FerModelError(f"{source.config_path}: read-only: the temperature it records ({fit.previous!r}) "
                                "could not be taken out and is still used")
        raise FerModelError(f"{source.config_path}: read-only: the temperature was not written")
    if remove:
        config = dict(source.config)
        if fit.tta == "none":
            config.pop("temperature", None)
        else:
            left = {mode: value for mode, value in _as_dict(config.pop("tta_temperatures", None)).items()
                    if mode != fit.tta}
            if left:
                config["tta_temperatures"] = left
        write_json(source.config_path, config)
        return Path(source.config_path)
    if at_range_end(fit.temperature):
        raise FerModelError(f"{source.path}: the fitted temperature {fit.temperature:.4g} sits at the end of the "
                            f"range searched ({TEMPERATURE_RANGE[0]}-{TEMPERATURE_RANGE[1]}): the labelled rows do "
                            "not tell it (too few, or too alike); not written")
    if fit.tta == "none":
        write_json(source.config_path, {**source.config, "temperature": round(fit.temperature, 6)})
        return Path(source.config_path)
    from keras_fer.loading import TTA_TEMPERATURE_MODES, positive_number

    # the other modes' temperatures, where valid (an invalid record is replaced, as "temperature" is)
    kept = {mode: positive_number(value) for mode, value in _as_dict(source.config.get("tta_temperatures")).items()
            if mode in TTA_TEMPERATURE_MODES and mode != fit.tta and positive_number(value) is not None}
    write_json(source.config_path, {**source.config,
                                     "tta_temperatures": {**kept, fit.tta: round(fit.temperature, 6)}})
    return Path(source.config_path)


def _without(fit):
    """What the predictions are without the fit's temperature: as they are, or at "temperature"."""
    return "as it is" if fit.baseline == 1.0 else f'at its "temperature" {fit.baseline:.3f}'


def describe(fit):
    """The lines `python -m keras_fer.calibrate` prints for a fit."""
    before, after, honest = fit.before, fit.after, fit.cross_fitted
    unseen = f"ECE {honest.ece:.4f}" if honest.total else "ECE n/a"
    return [
        f"fitted on {fit.fitted_on}",
        f"{_without(fit)}: ECE {before.ece:.4f}, mean confidence {before.mean_confidence:.4f} for accuracy "
        f"{before.accuracy:.4f} ({before.direction}), NLL {before.nll:.4f}",
        f"temperature {fit.temperature:.3f}: {unseen} on rows it was not fitted on (each half scaled by "
        f"the temperature of the other; {after.ece:.4f} on the rows it was fitted on), mean confidence "
        f"{after.mean_confidence:.4f}, NLL {after.nll:.4f}",
    ]


def main(argv=None):
    from keras_fer.cli import Parser, command
    from keras_fer.inference import BACKENDS, TTA_MODES

    @command  # package errors and OS errors: one line, exit 2
    def run(argv):
        parser = Parser(
            prog="python -m keras_fer.calibrate",
            description="Fit a model's temperature (temperature scaling, Guo et al. 2017) so that its confidence "
            "matches its accuracy, and record it in the config.json beside the model, where predict.py and "
            "keras_fer.recognize read it (and visualize.py's titles). A model's own predicted "
            "classes do not change; its TTA, --prior-correction and ensembles can, on a few faces.",
            epilog="examples:\n  python -m keras_fer.calibrate runs/cnn4                     # on its validation.npz\n"
            "  python -m keras_fer.calibrate DIR/best.keras --data val.csv.gz   # any model, on labelled faces\n"
            "  python -m keras_fer.calibrate runs/cnn4 --data val.csv.gz --tta crops  # for predict.py --tta crops\n"
            "  python -m keras_fer.calibrate runs/cnn4 --dry-run           # print, write nothing",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("model", help="a training run directory, a .keras file with a config.json beside it, or "
                            "'packaged' (the packaged model: --dry-run only, it is calibrated already)")
        parser.add_argument("--data", metavar="PATH", help="labelled faces the model was not trained on (a FER CSV "
                            "or image folder), e.g. its validation split written by python -m keras_fer.data split; "
                            "default: the run's validation.npz")
        parser.add_argument("--backend", choices=BACKENDS, default="auto", help="how --data is predicted (as "
                            "predict.py --backend; default: auto)")
        parser.add_argument("--tta", choices=TTA_MODES, default="none", help="fit the temperature of predictions "
                            "with this test-time augmentation (predict.py --tta): averaging views softens the "
                            "probabilities, so they want a lower temperature of their own, recorded in "
                            "\"tta_temperatures\"; needs --data (default: none, recorded in \"temperature\")")
        parser.add_argument("--dry-run", action="store_true", help="print the fit, write nothing")
        args = parser.parse_args(argv)
        if args.data is not None and not Path(args.data).exists():  # before TensorFlow's import
            raise FerDataError("no such file or folder", args.data)
        fit = calibrate(args.model, args.data, args.backend, args.tta)
        for line in describe(fit):
            print(line)
        if at_range_end(fit.temperature):
            print(f"note: {fit.temperature:.4g} is at the end of the range searched: the rows do not tell the "
                  "temperature (too few, or too alike)")
        if args.dry_run:
            print("--dry-run: nothing written")
            return 0
        if not helps(fit):
            print(f"not written: on rows it was not fitted on, the temperature does not lower the ECE "
                  f"({fit.before.ece:.4f} -> {fit.cross_fitted.ece:.4f}); the model is as calibrated as one number "
                  "makes it")
            if fit.previous is not None:  # a recorded one (even an invalid one) would stay in force
                path = write_temperature(fit, remove=True)
                now = "its own softmax" if fit.baseline == 1.0 else f'its "temperature" ({fit.baseline:.6g})'
                print(f"removed the temperature it recorded ({fit.previous!r}) from {path}: predictions of "
                      f"{fit.source.path}{'' if fit.tta == 'none' else f' with --tta {fit.tta}'} use {now}")
            return 0
        path = write_temperature(fit)
        replaced = f" (it recorded {fit.previous!r})" if fit.previous is not None else ""
        value = f"{fit.temperature:.6g}"
        record, with_tta = ((f'"temperature": {value}', "") if fit.tta == "none" else
                            (f'"tta_temperatures": {{"{fit.tta}": {value}}}', f" with --tta {fit.tta}"))
        print(f"wrote {record} into {path}{replaced}: predictions of {fit.source.path}{with_tta} now divide its "
              "logits by it")
        return 0

    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
