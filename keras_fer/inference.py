"""Predict with one model or an ensemble: test-time augmentation, streamed CSVs, metrics.

`load_predictor` turns a model argument (a `.keras` file, a training run directory or a
`.tflite` file; see `keras_fer.loading`) into a `Predictor` that runs the model's verified LiteRT
copy when it can (`keras_fer.export`) and Keras otherwise. `predict_proba` averages models and
test-time views; `predict_csv` streams a FER2013-style CSV into a Kaggle submission, and can
average in `SavedProbabilities`: the `--proba` output of an earlier run on the same CSV (a
member trained elsewhere, whose model is not at hand).

Example:
>>> predictor = load_predictor("runs/cnn4")  # doctest: +SKIP
>>> probabilities = predict_proba([predictor], faces.pixels, tta="flip")  # doctest: +SKIP
"""

import csv
import dataclasses
import queue
import threading
import time
from pathlib import Path

import numpy as np

from keras_fer import files
from keras_fer.classes import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES
from keras_fer.errors import FerDataError, FerModelError, FerOptionError, check_finite, check_integer
from keras_fer.export import (
    LiteRTRunner,
    cached_litert_copy,
    describes_another_copy,
    find_cached_tflite,
    litert_available,
    outputs_kind,
    read_sidecar,
    verification_sample,
)
from keras_fer.loading import (
    DEFAULT_BATCH_SIZE,
    SERVING_NORMALIZE,
    TEMPERATURE_KEYS,
    ModelSource,
    class_prior,
    keras_predict,
    load_keras_model,
    model_temperatures,
    one_line,
    resolve_model,
    serving_model,
    softmax,
)
from keras_fer.metrics import Calibration, scale_temperature

__all__ = [
    "BACKENDS",
    "TTA_MODES",
    "Predictor",
    "PredictionRun",
    "SavedProbabilities",
    "Timings",
    "evaluation_from_confusion",
    "load_predictor",
    "predict_csv",
    "predict_proba",
    "prior_correct",
    "read_saved_probabilities",
    "save_evaluations",
    "tta_views",
]

TTA_MODES = ("none", "flip", "crops")
BACKENDS = ("auto", "litert", "keras")
# Ten-crop TTA: 44x44 windows (the 4 corners and the centre of the 48x48 face, as in the usual
# FER2013 ten-crop recipe), each resized back to 48x48 because our models take 48x48, and each
# also mirrored.
CROP_SIZE = 44


# --------------------------------------------------------------------------------------------
# Predictors


@dataclasses.dataclass
class Predictor:
    """One model, ready to classify raw faces.

    Attributes:
        name: the model path as given.
        backend: `"litert"` or `"keras"`.
        run: float32 faces `(N, 48, 48, 1)` -> raw outputs `(N, 7)`.
        outputs: `"logits"` or `"probabilities"` (the model ends in a softmax).
        source: the `ModelSource` (its config holds the class prior).
        notes: things the user may want to know (e.g. why Keras was used).
        temperature: the logits are divided by it before the softmax (temperature scaling,
            from the config's `"temperature"`; 1.0: none).
        tta_temperatures: the temperature of predictions with a TTA mode, where the config
            records one for it (`"tta_temperatures"`); other modes use `temperature`.
    """

    name: str
    backend: str
    run: object
    outputs: str
    source: ModelSource
    notes: list = dataclasses.field(default_factory=list)
    _prior: np.ndarray = None
    temperature: float = 1.0
    tta_temperatures: dict = dataclasses.field(default_factory=dict)

    def temperature_for(self, tta="none"):
        """The temperature of predictions with the TTA mode `tta`."""
        return self.tta_temperatures.get(tta, self.temperature)

    def probabilities(self, faces, temperature=None):
        """Class probabilities `(N, 7)` float64 of raw faces, the logits divided by `temperature`
        (default: `self.temperature`, the one for faces without TTA).

        Raises:
            FerModelError: when the model's outputs are not finite (NaN weights, as a diverged
                training leaves them): a submission of NaN probabilities is no prediction.
        """
        temperature = self.temperature if temperature is None else temperature
        outputs = self.run(np.asarray(faces, np.float32))
        finite = np.isfinite(outputs).all(axis=1)
        if not finite.all():
            raise FerModelError(
                f"{self.name}: outputs NaN or infinity for {int((~finite).sum())} of {len(finite)} faces "
                "(a model whose training diverged?)"
            )
        if self.outputs == "probabilities":
            probabilities = np.asarray(outputs, np.float64)
            return probabilities if temperature == 1.0 else scale_temperature(probabilities, temperature)
        return softmax(np.asarray(outputs, np.float64) / temperature)

    @property
    def prior(self):
        """The training class prior from the run config (FerModelError when there is none)."""
        if self._prior is None:
            if self.source is None:  # keras_predictor's in-memory model
                raise FerModelError(f"{self.name}: an in-memory model has no training run recording its class "
                                    "prior: --prior-correction needs a run directory or a .keras file with its "
                                    "config.json beside it")
            self._prior = class_prior(self.source)
        return self._prior


def _note_unused_normalize(notes, normalize, adapter):
    """A note for `--normalize` given for a model that scales its faces itself (keras-fer's
    `Preprocessing` layer, so no adapter): it does not apply, and was ignored without a word."""
    if normalize is not None and adapter is None:
        notes.append(f"--normalize {normalize} does not apply: the model normalizes its faces itself "
                     "(keras-fer's Preprocessing layer)")


def check_backend(backend):
    """FerOptionError unless `backend` is one of `BACKENDS`."""
    if backend not in BACKENDS:
        raise FerOptionError(f"backend must be one of {', '.join(BACKENDS)}. Received: backend={backend!r}")


def load_predictor(path, backend="auto", normalize=None, batch_size=DEFAULT_BATCH_SIZE, temperature=None):
    """Load one model for prediction.

    Args:
        path: a `.keras` file, a run directory or a `.tflite` file.
        backend: `"auto"` (the verified LiteRT copy, made on first use; Keras when LiteRT is
            missing or cannot run the model), `"litert"` (LiteRT or an error) or `"keras"`.
        normalize: for models without a `Preprocessing` layer: `"none"`, `"unit"`, `"image"`.
        batch_size: faces per forward pass.
        temperature: the logits' divisor, with any TTA; default: the config's `"temperature"`
            (1.0 without one), and its `"tta_temperatures"` for the TTA modes they name.
    """
    check_backend(backend)
    if normalize is not None and normalize not in SERVING_NORMALIZE:
        raise FerOptionError(f"normalize must be one of {', '.join(SERVING_NORMALIZE)}. "
                             f"Received: normalize={normalize!r}")
    batch_size = check_integer(batch_size, "--batch-size", 1, received="batch_size")
    if temperature is not None:
        temperature = check_finite(temperature, "temperature", positive=True)
    source = resolve_model(path)
    meta, direct_notes = {}, []
    if source.path.suffix.lower() == ".tflite":
        meta = read_sidecar(source.path)
        if meta is None and describes_another_copy(source.path):
            direct_notes.append(f"{source.path}.json describes another copy (an export stopped before it replaced "
                                "this one): what it records (temperatures, outputs) is not used; export again")
        meta = meta or {}
    temperatures = {}  # TTA mode -> temperature, where one differs from `temperature`
    if temperature is None:
        recorded = source
        if source.config is None and meta.get("temperature") is not None:
            # a .tflite exported away from its config.json: its sidecar keeps the temperatures (a config.json
            # beside it governs: a run resumed after calibrating has dropped them there)
            kept = {key: meta[key] for key in TEMPERATURE_KEYS if meta.get(key) is not None}
            recorded = ModelSource(source.path, kept, Path(f"{source.path}.json"))
        temperatures = model_temperatures(recorded)  # a bad value fails before the model loads
        temperature = temperatures.pop("none")
        temperatures = {mode: value for mode, value in temperatures.items() if value != temperature}
    name = str(path)
    if source.path.suffix.lower() == ".tflite":
        if backend == "keras":
            raise FerOptionError(f"{source.path}: a .tflite model needs --backend litert or auto")
        if not litert_available():
            raise FerModelError(f"{source.path}: running .tflite models needs ai-edge-litert "
                                "(pip install ai-edge-litert)")
        runner = LiteRTRunner(source.path, batch_size)
        kind = meta.get("outputs") or outputs_kind(None, _probe_outputs(runner))
        return Predictor(name, "litert", runner, kind, source, direct_notes, temperature=temperature,
                         tta_temperatures=temperatures)

    notes = []
    if backend in ("auto", "litert"):
        if litert_available():
            damaged = []  # the copy beside the model may be damaged and its folder read-only: then the cache's
            cached, meta = find_cached_tflite(source, normalize)
            while cached is not None:
                try:
                    runner = LiteRTRunner(cached, batch_size)
                    _note_unused_normalize(notes, normalize, meta.get("adapter"))
                    return Predictor(name, "litert", runner, meta.get("outputs", "logits"), source, notes,
                                     temperature=temperature, tta_temperatures=temperatures)
                except FerModelError as error:  # a damaged copy: another, or made again below
                    notes.append(f"the LiteRT copy could not be loaded ({error})")
                    damaged.append(cached)
                    cached, meta = find_cached_tflite(source, normalize, damaged)
        elif backend == "litert":
            raise FerOptionError("--backend litert needs ai-edge-litert (pip install ai-edge-litert)")
        else:
            notes.append("LiteRT (ai-edge-litert) is not installed: using Keras, which starts slower")

    model = load_keras_model(source.path)
    if backend in ("auto", "litert") and litert_available():
        try:
            result, kind = cached_litert_copy(source, model, normalize)
            notes.append(
                f"made a verified LiteRT copy {result.path} (max |difference| {result.max_abs_diff:.1e}); "
                "later runs start fast"
            )
            _note_unused_normalize(notes, normalize, (read_sidecar(result.path) or {}).get("adapter"))
            return Predictor(name, "litert", LiteRTRunner(result.path, batch_size), kind, source, notes,
                             temperature=temperature, tta_temperatures=temperatures)
        except FerOptionError:
            raise
        except Exception as error:  # noqa: BLE001  any conversion failure: Keras still works
            if backend == "litert":
                raise FerModelError(f"{source.path}: no LiteRT copy ({one_line(error)})") from None
            notes.append(f"no LiteRT copy ({one_line(error)}): using Keras")
    serving, adapter = serving_model(model, source, normalize)
    _note_unused_normalize(notes, normalize, adapter)
    runner = _keras_runner(serving, batch_size)
    kind = outputs_kind(model, lambda: _probe_outputs(runner))
    return Predictor(name, "keras", runner, kind, source, notes, temperature=temperature, tta_temperatures=temperatures)


def keras_predictor(model, normalize=None, batch_size=DEFAULT_BATCH_SIZE):
    """A `Predictor` for a Keras model in memory (trained in this process, not saved).

    Args:
        model: a Keras model taking faces; keras-fer's models (with a `Preprocessing` layer)
            as they are, others through `loading.serving_model`'s adapter.
        normalize: for models without a `Preprocessing` layer (default `"unit"`).
        batch_size: faces per forward pass.

    Example:
    >>> from keras_fer.models import build_model
    >>> predictor = keras_predictor(build_model("cnn4", preprocessing={"normalize": "unit"}))
    >>> predictor.probabilities(np.zeros((2, 48, 48, 1))).shape
    (2, 7)
    """
    serving, _ = serving_model(model, None, normalize)
    runner = _keras_runner(serving, batch_size)
    return Predictor(model.name, "keras", runner, outputs_kind(model, lambda: _probe_outputs(runner)), None)


def _keras_runner(model, batch_size):
    return lambda faces: keras_predict(model, faces, batch_size)


def _probe_outputs(run):
    """`run`'s raw outputs on a small fixed sample, to tell logits from probabilities."""
    return run(verification_sample(16))


# --------------------------------------------------------------------------------------------
# Probabilities, TTA, ensembles


def prior_correct(probabilities, prior):
    """Logit adjustment: subtract log prior from the logits, i.e. divide by the prior, renormalize."""
    adjusted = np.asarray(probabilities, np.float64) / np.asarray(prior, np.float64)[None, :]
    return adjusted / adjusted.sum(axis=1, keepdims=True)


def _resize_matrix(source_size, target_size):
    """`(target, source)` matrix of 1-D bilinear interpolation (OpenCV's half-pixel centres)."""
    matrix = np.zeros((target_size, source_size))
    scale = source_size / target_size
    for target in range(target_size):
        position = min(max((target + 0.5) * scale - 0.5, 0.0), source_size - 1)
        low = int(np.floor(position))
        high = min(low + 1, source_size - 1)
        weight = position - low
        matrix[target, low] += 1.0 - weight
        matrix[target, high] += weight
    return matrix


def tta_views(faces, mode="none"):
    """The test-time views of raw faces `(N, 48, 48, 1)`, each float32 `(N, 48, 48, 1)`.

    - `"none"`: the faces.
    - `"flip"`: the faces and their mirror images.
    - `"crops"`: ten-crop: 44x44 windows at the 4 corners and the centre, each resized back to
      48x48 (bilinear), and the mirror image of each: 10 views.
    """
    faces = np.asarray(faces, np.float32)
    if mode == "none":
        return [faces]
    if mode == "flip":
        return [faces, faces[:, :, ::-1, :]]
    if mode == "crops":
        margin = IMAGE_SIZE - CROP_SIZE
        resize = _resize_matrix(CROP_SIZE, IMAGE_SIZE).astype(np.float32)
        offsets = [(0, 0), (0, margin), (margin, 0), (margin, margin), (margin // 2, margin // 2)]
        views = []
        for top, left in offsets:
            crop = faces[:, top:top + CROP_SIZE, left:left + CROP_SIZE, 0]
            view = np.einsum("ij,njk,lk->nil", resize, crop, resize, optimize=True)[..., None]
            views += [np.ascontiguousarray(view), np.ascontiguousarray(view[:, :, ::-1, :])]
        return views
    raise FerOptionError(f"--tta must be one of {', '.join(TTA_MODES)}. Received: {mode!r}")


def predict_proba(predictors, faces, tta="none", prior_correction=False):
    """Class probabilities `(N, 7)` of raw faces: the mean over models of each model's mean
    softmax over the TTA views (prior-corrected per model when asked). No faces (a photo or
    frames without one) give `(0, 7)` without running a model.

    Args:
        predictors: `Predictor`s (`load_predictor`), or one.
        faces: raw faces `(N, 48, 48, 1)` or `(N, 48, 48)`, grey levels 0-255.
        tta: one of `TTA_MODES`.
        prior_correction: divide each model's probabilities by its training class prior.

    Raises:
        FerOptionError: for something that is not a `Predictor`, faces of another shape or with
            values that are not finite, or an unknown `tta`.
    """
    if isinstance(predictors, Predictor):
        predictors = [predictors]
    if not predictors:
        raise FerOptionError("no model to predict with")
    strangers = [item for item in predictors if not isinstance(item, Predictor)]
    if strangers:
        raise FerOptionError("predictors must be inference.Predictor objects (load_predictor(path) makes one). "
                             f"Received: {strangers[0]!r}")
    if tta not in TTA_MODES:
        raise FerOptionError(f"tta must be one of {', '.join(TTA_MODES)}. Received: tta={tta!r}")
    faces = np.asarray(faces)
    if faces.size == 0 and len(faces) == 0:  # no faces (a photo or frames without one): nothing to run
        return np.zeros((0, NUM_CLASSES))
    if faces.ndim == 3 and faces.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE):
        faces = faces[..., None]
    if faces.ndim != 4 or faces.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1) or faces.dtype.kind not in "biuf":
        raise FerOptionError(f"faces must be a batch of {IMAGE_SIZE}x{IMAGE_SIZE} grey faces (N, {IMAGE_SIZE}, "
                             f"{IMAGE_SIZE}, 1). Received: faces.shape={faces.shape}, faces.dtype={faces.dtype}")
    if faces.dtype.kind == "f" and not np.isfinite(faces).all():
        raise FerOptionError("faces must hold finite grey levels. Received: NaN or infinity")
    from keras_fer.data import check_grey_levels

    check_grey_levels(faces)  # 0-1 floats: nearly black faces, a warning
    return _sum_proba(predictors, faces, tta, prior_correction) / len(predictors)


def _sum_proba(predictors, faces, tta, prior_correction):
    """The sum over `predictors` of their TTA-averaged probabilities (0.0 when there are none)."""
    views = tta_views(faces, tta) if predictors else []
    total = 0.0
    for predictor in predictors:
        temperature = predictor.temperature_for(tta)
        probabilities = sum(predictor.probabilities(view, temperature) for view in views) / len(views)
        if prior_correction:
            probabilities = prior_correct(probabilities, predictor.prior)
        total = total + probabilities
    return total


# Saved probabilities are written with 6 decimals: 7 roundings move a row's sum by < 4e-6.
SAVED_SUM_TOLERANCE = 1e-3


@dataclasses.dataclass
class SavedProbabilities:
    """An ensemble member that is a file: the `id` and class-probability columns that
    `predict.py --proba` wrote for a CSV, to be averaged in when the same CSV is predicted again
    (same ids, same order). Its probabilities are used as written: the TTA and prior correction
    chosen when it was written stay.

    Attributes:
        path: the file.
        ids: the ids, one per row, in file order.
        probabilities: `(N, 7)` float64, rows summing to 1.
        position: rows already consumed by `take`.
        lines: each row's line in the file (blank lines are skipped), or None: the header's
            line 1 and then one line a row.
    """

    path: Path
    ids: np.ndarray
    probabilities: np.ndarray
    position: int = 0
    lines: np.ndarray = None

    def _line(self, index):
        """The file line of row `index` (a row past the end: the line after the last row)."""
        if self.lines is None or not len(self.lines):
            return index + 2
        if index >= len(self.lines):
            return int(self.lines[-1]) + 1 + index - len(self.lines)
        return int(self.lines[index])

    def take(self, ids):
        """The probabilities of the next `len(ids)` rows, which must carry exactly `ids`.

        Raises:
            FerDataError: naming the file, its line and the `id` field, at the first row whose
                id is not the input's (or where the file ends before the input does).
        """
        ids = np.asarray(ids).astype(str)
        start, end = self.position, self.position + len(ids)
        mine = self.ids[start:end]
        if len(mine) < len(ids):
            raise FerDataError(f"ends after {len(self.ids)} rows, but the input goes on (id {str(ids[len(mine)])!r}): "
                               "these are predictions of another file", self.path, self._line(len(self.ids)))
        wrong = np.flatnonzero(mine != ids)
        if wrong.size:
            first = int(wrong[0])
            theirs, wanted = str(mine[first]), str(ids[first])
            raise FerDataError(f"id {theirs!r} where the input has {wanted!r}: these are predictions of another file "
                               "(or of its rows in another order)", self.path, self._line(start + first), "id")
        self.position = end
        return self.probabilities[start:end]

    def check_consumed(self):
        """Raise FerDataError when the file has rows the input did not have."""
        if self.position != len(self.ids):
            raise FerDataError(f"has {len(self.ids)} rows but the input only {self.position}: these are "
                               "predictions of another file", self.path, self._line(self.position))


def read_saved_probabilities(path):
    """Read a `predict.py --proba` output (`.csv` or `.csv.gz`) as a `SavedProbabilities`.

    Blank lines after the header (as at the end of a file an editor saved) are skipped, as the
    data reader skips them; a row with any text must have every field.

    Raises:
        FerDataError: naming the file, line and field, for a missing `id` or class column, a
            value that is not a number, a negative one, a row not summing to 1 or a repeated id.
    """
    from keras_fer.data import READ_ERRORS, open_text

    path = Path(path)
    if not path.is_file():
        raise FerDataError("a folder, not a file of saved probabilities (predict.py --proba's CSV)" if path.is_dir()
                           else "no such file (saved probabilities)", path)
    rows, lines = [], []  # each record's fields and its (last) line: a quoted field may hold line breaks
    try:
        with open_text(path) as handle:
            reader = csv.reader(handle)
            for fields in reader:
                if rows and (not fields or (len(fields) == 1 and not fields[0].strip())):
                    continue  # a blank line (also "\r\n" or spaces), as the data reader skips them
                rows.append(fields)
                lines.append(reader.line_num)
    except READ_ERRORS as error:  # also a truncated or corrupt .gz
        raise FerDataError(f"not a readable CSV file ({error})", path) from None
    if not rows:
        raise FerDataError("empty file: expected the id,label,<class>... header that predict.py --proba writes", path)
    header = [name.strip() for name in rows[0]]
    missing = [name for name in ("id", *CLASS_NAMES) if name not in header]
    if missing:
        raise FerDataError(f"missing column(s) {', '.join(missing)}: expected the output of predict.py --proba "
                           f"(id,label,{','.join(CLASS_NAMES)}). Received: {','.join(header)}", path, 1)
    id_column = header.index("id")
    columns = [header.index(name) for name in CLASS_NAMES]
    body = rows[1:]
    if not body:
        raise FerDataError("no rows after the header", path)
    ids = np.empty(len(body), dtype=object)
    probabilities = np.empty((len(body), NUM_CLASSES))
    seen = {}
    for index, row in enumerate(body):
        line = lines[index + 1]
        if len(row) != len(header):
            raise FerDataError(f"expected {len(header)} fields, found {len(row)}", path, line)
        ids[index] = row[id_column].strip()
        if ids[index] in seen:
            raise FerDataError(f"id {ids[index]!r} repeats line {seen[ids[index]]}", path, line, "id")
        seen[ids[index]] = line
        for class_index, column in enumerate(columns):
            try:
                value = float(row[column])
            except ValueError:
                value = float("nan")
            if not np.isfinite(value) or value < 0.0:
                raise FerDataError(f"not a probability: {row[column][:20]!r}", path, line, CLASS_NAMES[class_index])
            probabilities[index, class_index] = value
        if abs(probabilities[index].sum() - 1.0) > SAVED_SUM_TOLERANCE:
            raise FerDataError(f"the class probabilities sum to {probabilities[index].sum():.6f}, not 1", path, line)
    return SavedProbabilities(path, ids.astype(str), probabilities, lines=np.array(lines[1:]))


# --------------------------------------------------------------------------------------------
# Streaming a CSV into a submission


@dataclasses.dataclass
class Timings:
    """Seconds spent in each stage of a prediction run."""

    load_s: float = 0.0
    read_s: float = 0.0
    infer_s: float = 0.0
    write_s: float = 0.0
    metrics_s: float = 0.0


@dataclasses.dataclass
class PredictionRun:
    """What `predict_csv` did.

    Attributes:
        out: the submission file.
        rows: rows predicted.
        confusions: `{split: 7x7 counts}` when the input had labels: `"all"` and, with a
            Kaggle `Usage` column, one per split.
        calibrations: `{split: metrics.Calibration}`, for the same splits.
    """

    out: Path
    rows: int
    confusions: dict = None
    calibrations: dict = None

    @property
    def labelled(self):
        return bool(self.confusions)

    def evaluations(self):
        """`{split: metrics.Evaluation}` from the confusion matrices (and calibration counts)."""
        calibrations = self.calibrations or {}
        return {split: evaluation_from_confusion(matrix, calibrations.get(split))
                for split, matrix in (self.confusions or {}).items()}


def prefetch(iterable, timings=None):
    """Iterate `iterable` in a background thread, one item ahead, so that reading and parsing
    the next chunk overlaps classifying this one (LiteRT and TensorFlow release the GIL).

    At most two items are alive at once, so memory stays flat. An exception raised while
    reading is re-raised here, in the caller's thread. `timings.read_s` gets the time spent
    waiting for items (the part of reading that did not overlap).
    """
    slots = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(message):
        while not stop.is_set():
            try:
                slots.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterable:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as error:  # noqa: BLE001  handed to the consumer
            put(("error", error))

    thread = threading.Thread(target=produce, name="keras-fer-reader", daemon=True)
    thread.start()
    try:
        while True:
            start = time.perf_counter()
            kind, value = slots.get()
            if timings is not None:
                timings.read_s += time.perf_counter() - start
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


def predict_csv(path, predictors, out, tta="none", prior_correction=False, proba=False,
                chunk_rows=4096, on_chunk=None, timings=None, saved=()):
    """Stream a FER CSV through the models into a Kaggle-style submission `id,label`.

    Memory stays flat: rows are read, classified and written `chunk_rows` at a time; with
    labels, only 7x7 confusion counts are kept (overall and per Kaggle `Usage` split).

    Args:
        proba: add one probability column per class, named by class.
        saved: `SavedProbabilities` of this same CSV: each counts as one more ensemble member.
        on_chunk: called with the number of rows after each chunk (for a progress bar).
        timings: a `Timings` to add the time spent reading (waiting for rows: reading runs in
            a background thread, overlapping inference), classifying and writing to.

    Raises:
        FerDataError: for a malformed row, or a repeated id (labelled or not), before or after
            some rows were classified (no partial submission is left behind).
    """
    from keras_fer.data import iter_csv

    timings = timings if timings is not None else Timings()
    out = Path(out)
    rows = 0
    confusions, calibrations = {}, {}
    with files.atomic_text(out) as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["id", "label"] + (list(CLASS_NAMES) if proba else []))
        # Rows are written under their ids: a labelled CSV's must be unique too (`--saved-proba`
        # refuses a file with a repeated id, and a scorer would take one of its predictions).
        for chunk in prefetch(iter_csv(path, chunk_rows, unique_ids=True), timings):
            start = time.perf_counter()
            if not predictors and not saved:
                raise FerOptionError("no model to predict with")
            total = _sum_proba(predictors, chunk.pixels, tta, prior_correction)
            for member in saved:
                total = total + member.take(chunk.ids)
            probabilities = total / (len(predictors) + len(saved))
            labels = probabilities.argmax(axis=1)
            timings.infer_s += time.perf_counter() - start
            start = time.perf_counter()
            if proba:
                text = np.char.mod("%.6f", probabilities)
                writer.writerows([image_id, label, *values]
                                 for image_id, label, values in zip(chunk.ids, labels.tolist(), text.tolist()))
            else:
                writer.writerows(zip(chunk.ids, labels.tolist()))
            if chunk.labels is not None:
                _count(confusions, "all", chunk.labels, labels, calibrations, probabilities)
                if chunk.usage is not None:
                    for split in np.unique(chunk.usage):
                        mask = chunk.usage == split
                        _count(confusions, str(split), chunk.labels[mask], labels[mask], calibrations,
                               probabilities[mask])
            rows += len(chunk)
            timings.write_s += time.perf_counter() - start
            if on_chunk is not None:
                on_chunk(len(chunk))
        for member in saved:
            member.check_consumed()
    return PredictionRun(out, rows, confusions or None, calibrations or None)


def _count(confusions, split, truth, predicted, calibrations=None, probabilities=None):
    """Add to `split`'s confusion counts, and with `probabilities` to its `metrics.Calibration`
    in `calibrations`."""
    matrix = confusions.setdefault(split, np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64))
    np.add.at(matrix, (np.asarray(truth, np.int64), np.asarray(predicted, np.int64)), 1)
    if probabilities is not None:
        calibrations.setdefault(split, Calibration.empty()).add(truth, probabilities)


def evaluation_from_confusion(confusion, calibration=None):
    """A `metrics.Evaluation` computed from a 7x7 confusion matrix (rows true, columns predicted),
    with `calibration` (a `metrics.Calibration` of the same predictions) attached.

    Same definitions as `metrics.evaluate`: scikit-learn's with `zero_division=0`, macro-F1 the
    mean F1 of the classes that occur in the labels or the predictions.
    """
    from keras_fer.metrics import Evaluation, macro_f1

    confusion = np.asarray(confusion, np.int64)
    true_positives = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros(NUM_CLASSES), where=predicted > 0)
    recall = np.divide(true_positives, support, out=np.zeros(NUM_CLASSES), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(NUM_CLASSES), where=denominator > 0)
    total = confusion.sum()
    return Evaluation(
        accuracy=float(true_positives.sum() / total) if total else 0.0,
        macro_f1=macro_f1(f1, support, predicted),
        precision=precision, recall=recall, f1=f1, support=support.astype(np.int64),
        confusion=confusion, calibration=calibration,
    )


# --------------------------------------------------------------------------------------------
# Saving metrics


def companion_path(out, suffix):
    """A file that goes with the output `out`: `DIR/STEM{suffix}`, where STEM is `out`'s name
    without its file type (sub.v1.csv -> sub.v1, sub.csv.gz -> sub)."""
    out = Path(out)
    name = out.name[: -len(".gz")] if out.name.lower().endswith(".gz") else out.name
    return out.with_name(f"{Path(name).stem or out.name}{suffix}")


def metrics_paths(out):
    """Where `save_evaluations` writes, next to the submission `out`."""
    base = companion_path(out, "")
    return {
        "json": Path(f"{base}_metrics.json"),
        "csv": Path(f"{base}_confusion.csv"),
        "png": Path(f"{base}_confusion.png"),
        "calibration": Path(f"{base}_calibration.png"),
    }


def split_order(evaluations):
    order = ["all", "Training", "PublicTest", "PrivateTest"]
    return sorted(evaluations, key=lambda split: (order.index(split) if split in order else len(order), split))


def save_evaluations(evaluations, out):
    """Write `<stem>_metrics.json`, `<stem>_confusion.csv` and `<stem>_confusion.png` next to
    the submission `out`, and `<stem>_calibration.png` (reliability diagrams) when the
    evaluations have calibrations. Returns the dict of paths written."""
    paths = metrics_paths(out)
    splits = split_order(evaluations)
    report = {}
    for split in splits:
        evaluation = evaluations[split]
        entry = evaluation.as_dict()
        entry["rows"] = int(evaluation.support.sum())
        entry["confusion_normalized"] = np.round(evaluation.confusion_normalized, 6).tolist()
        report[split] = entry
    files.write_json(paths["json"], {"classes": list(CLASS_NAMES), "splits": report}, sort_keys=False)
    with files.atomic_text(paths["csv"]) as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["split", "true"] + list(CLASS_NAMES))
        for split in splits:
            matrix = evaluations[split].confusion_normalized
            for i, name in enumerate(CLASS_NAMES):
                writer.writerow([split, name] + [f"{value:.6f}" for value in matrix[i]])
    from keras_fer import plots

    # One row-normalized confusion matrix per split, side by side.
    titles = [plots.confusion_title("All rows" if split == "all" else split, evaluations[split]) for split in splits]
    matrices = np.stack([evaluations[split].confusion for split in splits])
    plots.save_figure(plots.confusion_figure(matrices, CLASS_NAMES, normalize=True, title=titles), paths["png"],
                      dpi=110)
    calibrated = [split for split in splits if evaluations[split].calibration is not None]
    if calibrated:
        found = [evaluations[split].calibration for split in calibrated]
        titles = [plots.calibration_title("All rows" if split == "all" else split, evaluations[split].calibration)
                  for split in calibrated]
        plots.save_figure(plots.calibration_figure(found, titles), paths["calibration"], dpi=110)
    else:
        del paths["calibration"]
    return paths
