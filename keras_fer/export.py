"""Verified serving copies of Keras models: the LiteRT runner and its cache, and export.

Importing TensorFlow/Keras costs ~5 s, more than classifying the whole FER2013 test set, so
`keras_fer.inference.load_predictor` runs a verified LiteRT copy of a model when it can: the
first use of `X.keras` exports `X.tflite` next to it (or into `~/.cache/keras-fer` when that
folder is read-only or is the package's own), checks it against the Keras model on a fixed sample
(max |difference| of the probabilities <= `TOLERANCE`) and records the check and the source's
SHA-256 in `X.tflite.json`. Later runs find the verified copy and never import TensorFlow.
`export_model` writes the same check-before-keep artifacts on request: LiteRT, SavedModel, or the
model alone as `.keras` (in float32, or in float16 at half the size).

Example:
>>> result = export_model("runs/cnn4", "tflite")  # doctest: +SKIP
>>> result.max_abs_diff <= TOLERANCE  # doctest: +SKIP
True
"""

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from keras_fer import files, loading
from keras_fer.classes import IMAGE_SIZE, NUM_CLASSES
from keras_fer.errors import FerModelError, FerOptionError, short_list
from keras_fer.loading import (
    DEFAULT_BATCH_SIZE,
    TTA_TEMPERATURE_MODES,
    ModelSource,
    ends_in_softmax,
    import_keras,
    keras_predict,
    load_keras_model,
    model_temperature,
    model_temperatures,
    one_line,
    quiet_native_stderr,
    resolve_model,
    serving_model,
    softmax,
)

__all__ = [
    "EXPORT_FORMATS",
    "FLOAT16_TOLERANCE",
    "TOLERANCE",
    "ExportResult",
    "LiteRTRunner",
    "cached_litert_copy",
    "default_export_path",
    "describes_another_copy",
    "export_model",
    "find_cached_tflite",
    "litert_available",
    "outputs_kind",
    "read_sidecar",
    "verification_sample",
]

EXPORT_FORMATS = ("tflite", "savedmodel", "keras", "keras-float16")
#: Largest |difference| of the probabilities an exported copy may show against the Keras model.
TOLERANCE = 1e-4
#: The same for a `keras-float16` copy, whose weights are rounded to float16 (11-bit mantissa):
#: 1.7e-3 measured on the 50-epoch fervgg (no class changed on the 64-face check sample).
FLOAT16_TOLERANCE = 1e-2
SIDECAR_FORMAT = "keras-fer-litert/1"


# --------------------------------------------------------------------------------------------
# LiteRT


def litert_available():
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def _cpu_count():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class LiteRTRunner:
    """Runs a `.tflite` model on float32 faces in fixed-size batches (the last one padded): of
    `batch_size`, or fewer when a call has fewer faces."""

    def __init__(self, path, batch_size=DEFAULT_BATCH_SIZE, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            with quiet_native_stderr():
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads or _cpu_count())
        except (ValueError, RuntimeError) as error:
            raise FerModelError(f"{path}: LiteRT cannot load it ({one_line(error)})") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise FerModelError(f"{path}: expected one input and one output")
        shape = tuple(int(v) for v in inputs[0]["shape_signature"])
        if shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1):
            raise FerModelError(f"{path}: takes input {shape}; expected raw faces (-1, 48, 48, 1)")
        self.input_index, self.output_index = inputs[0]["index"], outputs[0]["index"]
        self.fixed_batch = shape[0] if shape[0] > 0 else None
        self.batch_size = self.fixed_batch or batch_size
        self.allocated = None
        self.path = path

    def _allocate(self, size):
        if self.allocated != size:
            with quiet_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
                self.interpreter.resize_tensor_input(self.input_index, (size, IMAGE_SIZE, IMAGE_SIZE, 1), strict=False)
                self.interpreter.allocate_tensors()
            self.allocated = size

    def __call__(self, faces):
        faces = np.asarray(faces, np.float32)
        results = []
        size = self.fixed_batch or max(1, min(self.batch_size, len(faces)))  # never pad beyond the faces given
        for start in range(0, len(faces), size):
            batch = faces[start:start + size]
            count = len(batch)
            if count < size:
                batch = np.concatenate([batch, np.zeros((size - count,) + batch.shape[1:], np.float32)])
            self._allocate(size)
            self.interpreter.set_tensor(self.input_index, np.ascontiguousarray(batch))
            self.interpreter.invoke()
            results.append(np.array(self.interpreter.get_tensor(self.output_index)[:count]))
        if not results:
            return np.zeros((0, NUM_CLASSES), np.float32)
        return np.concatenate(results)


def _cache_locations(source_path):
    """Where the verified LiteRT copy of `source_path` may live: next to it, then the user cache."""
    source_path = Path(source_path)
    sibling = source_path.with_suffix(".tflite")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "keras-fer" / "litert"
    return sibling, base


def _our_sidecar(tflite_path):
    """The keras-fer record beside `tflite_path` (its `.json`), whichever copy it describes, or None."""
    sidecar = Path(str(tflite_path) + ".json")
    if not (sidecar.is_file() and Path(tflite_path).is_file()):
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == SIDECAR_FORMAT else None


def describes_another_copy(tflite_path):
    """Whether the keras-fer record beside `tflite_path` was written for another copy (an export
    stopped between its record and its copy), so `read_sidecar` ignores it."""
    meta = _our_sidecar(tflite_path)
    return meta is not None and read_sidecar(tflite_path) is None


def read_sidecar(tflite_path):
    """The sidecar metadata of the LiteRT copy `tflite_path`, or None when there is none or it
    describes another copy: an export writes the new record (with the new copy's SHA-256) before
    the copy lands, so one stopped between the two leaves the earlier copy beside a record that is
    not its own. Records written before the SHA was kept are taken as they are."""
    meta = _our_sidecar(tflite_path)
    if meta is None or "tflite_sha256" not in meta:
        return meta
    try:
        return meta if files.file_sha256(tflite_path) == meta["tflite_sha256"] else None
    except OSError:
        return None


def _source_matches(meta, source_path, digest_holder):
    """Whether the sidecar `meta` was made from this exact `source_path` (size+mtime, else SHA)."""
    stat = source_path.stat()
    if meta.get("source_size") == stat.st_size and meta.get("source_mtime_ns") == stat.st_mtime_ns:
        return True
    if "sha" not in digest_holder:
        digest_holder["sha"] = files.file_sha256(source_path)
    return meta.get("source_sha256") == digest_holder["sha"]


def _adapter_matches(meta, normalize, config):
    adapter = meta.get("adapter")
    if adapter is None:
        return True  # a keras-fer model: it normalizes itself, the option does not apply
    wanted = normalize or (config or {}).get("normalize")
    if wanted is None:  # the model's own default (loading.default_normalize), decided when the copy was made
        return meta.get("adapter_default") is True
    return adapter.get("normalize") == wanted


def find_cached_tflite(source, normalize=None, skip=()):
    """The verified LiteRT copy of `source` and its sidecar metadata, or `(None, None)`: the one
    beside the model, else the user cache's; `skip` the paths found unloadable."""
    sibling, cache_base = _cache_locations(source.path)
    digest = {}
    meta = read_sidecar(sibling) if sibling not in skip else None
    if meta is not None and meta.get("verified") and _source_matches(meta, source.path, digest) \
            and _adapter_matches(meta, normalize, source.config):
        return sibling, meta
    if cache_base.is_dir():
        digest.setdefault("sha", files.file_sha256(source.path))
        candidate = cache_base / digest["sha"][:24] / "model.tflite"
        meta = read_sidecar(candidate) if candidate not in skip else None
        if meta is not None and meta.get("verified") and meta.get("source_sha256") == digest["sha"] \
                and _adapter_matches(meta, normalize, source.config):
            return candidate, meta
    return None, None


PACKAGED_EXPORT_DIR = "keras-fer-packaged"


def _is_packaged(path):
    """Whether `path` is in the package's own weights folder."""
    return loading.WEIGHTS_DIR.is_dir() and Path(path).parent.resolve() == loading.WEIGHTS_DIR.resolve()


def _writable_cache_path(source):
    """Where to write a new LiteRT copy: next to the model unless that is not ours to write (a file
    someone else put there, a read-only folder, or the package's own weights folder, which an
    install should not change and a checkout should not see change), else the user cache."""
    sibling, cache_base = _cache_locations(source.path)
    sibling_is_foreign = sibling.exists() and _our_sidecar(sibling) is None
    if not sibling_is_foreign and not _is_packaged(sibling) and os.access(sibling.parent, os.W_OK):
        return sibling
    folder = cache_base / files.file_sha256(source.path)[:24]
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "model.tflite"


# --------------------------------------------------------------------------------------------
# Verification and export


def verification_sample(count=64, seed=7):
    """A fixed float32 sample of raw faces for checking exports: demo faces, noise, flat images."""
    from keras_fer.synthetic import generate

    rng = np.random.default_rng(seed)
    faces = generate(max(count - 16, 7), seed=seed).images.pixels.astype(np.float32)
    noise = rng.integers(0, 256, (14, IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.float32)
    flat = np.stack([np.zeros((IMAGE_SIZE, IMAGE_SIZE, 1), np.float32),
                     np.full((IMAGE_SIZE, IMAGE_SIZE, 1), 255, np.float32)])
    return np.concatenate([faces, noise, flat])


def _looks_like_probabilities(outputs):
    outputs = np.asarray(outputs, np.float64)
    return bool(len(outputs)) and outputs.min() >= -1e-6 and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-4)


def _as_probabilities(outputs, kind):
    return np.asarray(outputs, np.float64) if kind == "probabilities" else softmax(outputs)


@dataclasses.dataclass
class ExportResult:
    """An exported serving artifact and how closely it matches the Keras model.

    Attributes:
        path: the `.tflite` file, SavedModel folder or `.keras` file.
        format: `"tflite"`, `"savedmodel"`, `"keras"` or `"keras-float16"`.
        max_abs_diff: max |difference| of the class probabilities on the sample.
        max_abs_diff_outputs: max |difference| of the raw outputs (logits) on the sample.
        sample_size: faces in the check sample.
    """

    path: Path
    format: str
    max_abs_diff: float
    max_abs_diff_outputs: float
    sample_size: int


def _export_reference(source, model, normalize):
    """What an export is checked against: `(serving model, adapter, sample, Keras outputs on the
    sample, outputs kind)`."""
    serving, adapter = serving_model(model, source, normalize)
    sample = verification_sample()
    reference = keras_predict(serving, sample, len(sample))
    return serving, adapter, sample, reference, outputs_kind(model, reference)


def outputs_kind(model, outputs):
    """`"probabilities"` when the Keras `model` ends in a softmax or its `outputs` look like it, else
    `"logits"`. `outputs` is an array, or a function giving one, called only when the model's last
    layer does not already say so (or there is no Keras model: `model=None`)."""
    if model is not None and ends_in_softmax(model):
        return "probabilities"
    if callable(outputs):
        outputs = outputs()
    return "probabilities" if _looks_like_probabilities(outputs) else "logits"


def _check_export(exported, reference, kind, what, consequence, tolerance=None):
    """`(max |difference| of the probabilities, of the raw outputs)` of an exported copy against
    the Keras model; `FerModelError` when the probabilities differ by more than `tolerance`
    (default `TOLERANCE`)."""
    tolerance = TOLERANCE if tolerance is None else tolerance
    diff_outputs = float(np.max(np.abs(exported - reference)))
    diff = float(np.max(np.abs(_as_probabilities(exported, kind) - _as_probabilities(reference, kind))))
    if not diff <= tolerance:
        raise FerModelError(
            f"{what} differs from the Keras model by {diff:.2e} > {tolerance:.0e} "
            f"(max |difference| of the probabilities); {consequence}"
        )
    return diff, diff_outputs


def _recorded_temperatures(source, strict=True):
    """`{"temperature": T, "tta_temperatures": {mode: T}}` of the config (`keras_fer.calibrate`),
    for an export that goes elsewhere without it. Not `strict` (a LiteRT copy's sidecar): each
    record on its own, an invalid one left out (`"temperature": None`) rather than refused
    (predictions beside that config refuse it, and `keras_fer.calibrate`, which replaces it,
    can still predict with the copy)."""
    if strict:
        temperatures = model_temperatures(source)
    else:  # each record on its own: a broken "tta_temperatures" keeps a valid "temperature"
        config = source.config or {}
        plain = ModelSource(source.path, {key: value for key, value in config.items() if key != "tta_temperatures"},
                            source.config_path)
        temperatures = {}
        for mode, where in (("none", plain), *((mode, source) for mode in TTA_TEMPERATURE_MODES)):
            try:
                temperatures[mode] = model_temperature(where, mode)
            except FerModelError:
                temperatures[mode] = None
    none = temperatures.pop("none")
    return {"temperature": none, "tta_temperatures": {mode: value for mode, value in temperatures.items()
                                                      if value is not None and value != none}}


def _tflite_from_keras(source, model, normalize, destination):
    """Export `model` (a loaded Keras model of `source`) to `destination` and verify it.

    Returns `(ExportResult, outputs kind)`; raises FerModelError when the copy disagrees. The copy
    is checked before it replaces `destination`: a copy that disagrees leaves what was there.
    """
    keras = import_keras()

    serving, adapter, sample, reference, kind = _export_reference(source, model, normalize)
    import tensorflow as tf

    stat = source.path.stat()
    sidecar = {  # all but the measured differences before anything is written: a failure leaves no copy
        "format": SIDECAR_FORMAT,
        "source": str(source.path.name),
        "source_sha256": files.file_sha256(source.path),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "adapter": adapter,
        # Made with the default scaling, not one asked for (--normalize or the config).
        "adapter_default": adapter is not None and not (normalize or (source.config or {}).get("normalize")),
        "outputs": kind,
        # keras_fer.calibrate's, from config.json: a copy exported elsewhere keeps them
        **_recorded_temperatures(source, strict=False),
        "verified": True,
        "tolerance": TOLERANCE,
        "max_abs_diff": None,
        "max_abs_diff_outputs": None,
        "sample": f"{len(sample)} faces: keras_fer.export.verification_sample()",
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
    }
    sidecar_path = Path(f"{destination}.json")
    with files.atomic_path(destination) as temporary:
        with quiet_native_stderr():
            serving.export(str(temporary), format="litert", verbose=False)
        try:
            runner = LiteRTRunner(temporary)
        except FerModelError as error:  # its message names the temporary file
            raise FerModelError(str(error).replace(str(temporary), str(destination))) from None
        diff, diff_outputs = _check_export(runner(sample), reference, kind, f"{destination}: the LiteRT copy",
                                           "not used")
        # The record lands first and names the copy by its SHA-256: a stop between the two leaves the earlier
        # copy beside a record that is not its own (not used, and not foreign: the retry replaces both).
        files.write_json(sidecar_path, {**sidecar, "tflite_sha256": files.file_sha256(temporary),
                                        "max_abs_diff": diff, "max_abs_diff_outputs": diff_outputs},
                         sort_keys=False)
    return ExportResult(Path(destination), "tflite", diff, diff_outputs, len(sample)), kind


def _export_savedmodel(source, model, normalize, destination):
    import tensorflow as tf

    destination = Path(destination)
    earlier = (destination / "keras_fer.json").is_file() or (destination.is_dir() and not any(destination.iterdir()))
    if destination.exists() and not earlier:  # an earlier export, or an empty folder made for it
        raise FerOptionError(f"{destination} already exists and is not an earlier SavedModel export: remove it or "
                             f"choose another folder. Received: export_to={str(destination)!r}")
    serving, adapter, sample, reference, kind = _export_reference(source, model, normalize)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}-"))
    old = None  # the earlier export, moved aside while the new one takes its place
    try:
        with quiet_native_stderr():
            serving.export(str(temporary), format="tf_saved_model", verbose=False)
        loaded = tf.saved_model.load(str(temporary))
        diff, diff_outputs = _check_export(np.asarray(loaded.serve(tf.constant(sample))), reference, kind,
                                           f"{destination}: the SavedModel", "not written")
        (temporary / "keras_fer.json").write_text(
            json.dumps({"adapter": adapter, "outputs": kind, "max_abs_diff": diff,
                        "source_sha256": files.file_sha256(source.path),
                        # divide the `serve` logits by it before the softmax (keras_fer.calibrate);
                        # "tta_temperatures": the temperature of an average over flipped or cropped views
                        **_recorded_temperatures(source)}, indent=2) + "\n",
            encoding="utf-8",
        )
        os.chmod(temporary, files.default_mode(folder=True))  # mkdtemp's folder is private (0o700)
        if destination.exists():
            old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
            os.replace(destination, old)
            os.replace(temporary, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        if old is not None and old.exists() and not destination.exists():  # stopped between the renames
            os.replace(old, destination)
        raise
    return ExportResult(destination, "savedmodel", diff, diff_outputs, len(sample))


def _export_keras(source, model, destination, fmt="keras", normalize=None):
    """The model alone (no optimizer state, no training run, float32 even when it was trained
    with `--mixed-precision`): a `.keras` file for serving, packaging or `--init-from`, with the
    run's `config.json` beside it when it goes elsewhere. `fmt="keras-float16"` stores the
    weights in float16, half the file; `load_keras_model` computes in float32 with them.

    A `config.json` describes every model in its folder (`resolve_model`), so the export refuses
    to put one where it would describe other models, or to go where one describes another model;
    it never replaces a file it did not make (only an earlier `*-inference.keras`). A model
    without keras-fer's input (see `serving_model`) is stored as it is and checked through the
    same adapter as prediction uses (`normalize`).
    """
    dtype, tolerance = ("float16", FLOAT16_TOLERANCE) if fmt == "keras-float16" else ("float32", TOLERANCE)
    destination = Path(destination)
    received = f"Received: export_to={str(destination)!r}"
    if destination.is_dir():
        raise FerOptionError(f"--export-to {destination} is a folder; name the .keras file. {received}")
    if not destination.name.endswith(".keras"):
        raise FerOptionError(f"--export-to for {fmt} must end in .keras (Keras' format). {received}")
    if destination.exists():
        if files.same_file(destination, source.path):
            raise FerOptionError(f"--export-to would replace the model it reads; choose another file. {received}")
        if not destination.name.endswith("-inference.keras"):
            # a file of another name cannot be told from a model someone saved there (an earlier
            # `--export-to model.keras` included): the message said "not an earlier export" of those too
            raise FerOptionError(f"{destination} already exists, and only an earlier export named *-inference.keras "
                                 f"is replaced: remove it or choose another file. {received}")
    folder = destination.parent
    config_copy = None
    if folder.resolve() != source.path.parent.resolve():
        existing_path = folder / "config.json"
        if existing_path.exists():
            if files.read_json_object(existing_path) != source.config:
                raise FerOptionError(f"{existing_path} describes another model, and would describe this one: "
                                     f"export into another folder. {received}")
        elif source.config is not None:
            # a killed export's hidden temporary is not another model (it refused every retry)
            others = sorted(path.name for path in folder.glob("*.keras")
                            if path.name != destination.name and not path.name.startswith("."))
            if others:
                raise FerOptionError(f"{folder} holds other models ({short_list(others)}) that this model's "
                                     f"config.json would then describe: export into another folder. {received}")
            config_copy = existing_path
    keras = import_keras()
    sample = verification_sample()
    reference = keras_predict(serving_model(model, source, normalize)[0], sample, len(sample))
    kind = outputs_kind(model, reference)
    stored = model if dtype == "float32" else loading.model_in_dtype(model, dtype)
    with files.atomic_path(destination) as temporary:
        os.unlink(temporary)
        stored.save(str(temporary))  # loaded with compile=False: no optimizer, so none is saved
        copy = loading.float32_model(keras.saving.load_model(temporary, compile=False, safe_mode=True))
        copy = serving_model(copy, source, normalize)[0]
        diff, diff_outputs = _check_export(keras_predict(copy, sample, len(sample)), reference, kind,
                                           f"{destination}: the copy", "not written", tolerance)
        if config_copy is not None:  # verified, before the model lands: a stop between leaves the config alone,
            with files.atomic_open(config_copy) as stream:  # which a retry accepts (a model alone it refused)
                json.dump(source.config, stream, indent=2)
                stream.write("\n")
    return ExportResult(destination, fmt, diff, diff_outputs, len(sample))


def cached_litert_copy(source, model, normalize=None):
    """Export and verify the LiteRT copy of `model` (loaded from `source`) that
    `inference.load_predictor` runs, where `find_cached_tflite` finds it later: next to the model,
    or in the user cache when that folder is not ours to write.

    Returns `(ExportResult, outputs kind)`; raises FerModelError when the copy disagrees (then no
    copy is left behind).
    """
    return _tflite_from_keras(source, model, normalize, _writable_cache_path(source))


def default_export_path(model_path, fmt):
    """Where `--export` writes without `--export-to`: beside the model, or for the packaged model
    in `./keras-fer-packaged/` (an install's package folder is not ours to change)."""
    source_path = resolve_model(model_path).path
    if _is_packaged(source_path):
        source_path = Path.cwd() / PACKAGED_EXPORT_DIR / source_path.name
    if fmt == "tflite":
        return source_path.with_suffix(".tflite")
    if fmt == "keras":
        return source_path.with_name(f"{source_path.stem}-inference.keras")
    if fmt == "keras-float16":
        return source_path.with_name(f"{source_path.stem}-float16-inference.keras")
    return source_path.with_name(f"{source_path.stem}_savedmodel")


def export_model(model_path, fmt="tflite", destination=None, normalize=None):
    """Write a serving artifact of a Keras model and check it against the model.

    Args:
        model_path: a `.keras` file or run directory.
        fmt: `"tflite"` (LiteRT flatbuffer; by default `X.tflite` next to `X.keras`, which is
            also the cached copy `inference.load_predictor` uses) or `"savedmodel"` (a TensorFlow
            SavedModel folder `X_savedmodel/` with a `serve` endpoint) or `"keras"` (the model
            without its optimizer state, a third of a run's `best.keras` for Adam:
            `X-inference.keras`; elsewhere, with the run's `config.json` copied beside it) or
            `"keras-float16"` (the same with float16 weights, half the file, checked to
            `FLOAT16_TOLERANCE`: `X-float16-inference.keras`).
        destination: where to write it instead.
        normalize: for models without a `Preprocessing` layer (see `serving_model`).

    Returns:
        An `ExportResult` with the max |difference| of the probabilities on
        `verification_sample()`. The artifact is only left in place when that is <= `TOLERANCE`
        (`FLOAT16_TOLERANCE` for keras-float16).
    """
    if fmt not in EXPORT_FORMATS:
        raise FerOptionError(f"fmt must be one of {', '.join(EXPORT_FORMATS)}. Received: fmt={fmt!r}")
    source = resolve_model(model_path)
    if source.path.suffix.lower() == ".tflite":
        raise FerModelError(f"{source.path}: already a TensorFlow Lite file; export needs the .keras model")
    given = destination
    destination = Path(destination) if destination else default_export_path(source.path, fmt)
    if fmt == "tflite":  # checked before the model loads
        if destination.suffix.lower() != ".tflite":
            raise FerOptionError(f"--export-to for tflite must end in .tflite. Received: {destination}")
        if destination.exists() and _our_sidecar(destination) is None:  # as the keras and savedmodel exports
            raise FerOptionError(
                f"{destination} already exists and is not an earlier keras-fer LiteRT export (no "
                f"{destination.name}.json beside it): move it away or "
                + (f"choose another --export-to. Received: export_to={str(given)!r}" if given else
                   "give --export-to (it is where the export goes by default)")
            )
        if not litert_available():
            raise FerModelError("--export tflite needs the LiteRT runtime to check the copy: "
                                "pip install ai-edge-litert")
    model = load_keras_model(source.path)
    if fmt in ("keras", "keras-float16"):
        return _export_keras(source, model, destination, fmt, normalize)
    if fmt == "tflite":
        result, _ = _tflite_from_keras(source, model, normalize, destination)
        return result
    return _export_savedmodel(source, model, normalize, destination)
