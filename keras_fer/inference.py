"""Load models safely, predict in chunks, ensembles, test-time augmentation, export.

A model is a `.keras` file, a training run directory (its `best.keras` and `config.json`), or a
`.tflite` file written by `export_model`. Models take raw faces: float32 `(N, 48, 48, 1)` grey
levels 0-255, and output 7 logits (or probabilities, when their last layer is a softmax).

Serving path. Importing TensorFlow/Keras costs ~5 s, more than classifying the whole FER2013
test set, so `load_predictor` runs a verified LiteRT copy of the model when it can: the first
use of `X.keras` exports `X.tflite` next to it (or into `~/.cache/keras-fer` when that folder is
read-only), checks it against the Keras model on a fixed sample (max |difference| of the
probabilities <= 1e-4) and records the check and the source's SHA-256 in `X.tflite.json`. Later
runs find the verified copy and never import TensorFlow. A model that LiteRT cannot run, or a
copy that disagrees with Keras, falls back to Keras with a note.

Example:
>>> predictor = load_predictor("runs/cnn4")  # doctest: +SKIP
>>> probabilities = predict_proba([predictor], faces.pixels, tta="flip")  # doctest: +SKIP
"""

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

from keras_fer import files
from keras_fer.classes import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES
from keras_fer.errors import FerDataError, FerModelError, FerOptionError

__all__ = [
    "BACKENDS",
    "EXPORT_FORMATS",
    "TOLERANCE",
    "TTA_MODES",
    "ExportResult",
    "Predictor",
    "PredictionRun",
    "Timings",
    "default_model_path",
    "evaluation_from_confusion",
    "export_model",
    "load_keras_model",
    "float32_model",
    "load_predictor",
    "predict_csv",
    "predict_proba",
    "prior_correct",
    "resolve_model",
    "save_evaluations",
    "softmax",
    "tta_views",
    "verification_sample",
]

TTA_MODES = ("none", "flip", "crops")
BACKENDS = ("auto", "litert", "keras")
EXPORT_FORMATS = ("tflite", "savedmodel", "keras")
SERVING_NORMALIZE = ("none", "unit", "image")
#: Largest |difference| of the probabilities an exported copy may show against the Keras model.
TOLERANCE = 1e-4
DEFAULT_BATCH_SIZE = 256
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SIDECAR_FORMAT = "keras-fer-litert/1"
# Ten-crop TTA: 44x44 windows (the 4 corners and the centre of the 48x48 face, as in the usual
# FER2013 ten-crop recipe), each resized back to 48x48 because our models take 48x48, and each
# also mirrored.
CROP_SIZE = 44


# --------------------------------------------------------------------------------------------
# Finding models


@dataclasses.dataclass
class ModelSource:
    """Where a model lives.

    Attributes:
        path: the model file (`.keras` or `.tflite`).
        config: the run's `config.json` as a dict, or None when there is none next to the file.
        config_path: where the config was (or would be) read.
    """

    path: Path
    config: dict = None
    config_path: Path = None


def validation_split(sources, names, consequence):
    """The validation split `(val, split_seed)` models were trained beside, read from their run
    configs, or None when none has one. Raises FerOptionError when they disagree.

    Args:
        sources: `ModelSource`s; names: how the user named them.
        consequence: what a disagreement breaks, ending the error message.
    """
    splits = {}
    for name, source in zip(names, sources):
        options = (source.config or {}).get("options")
        if not isinstance(options, dict):
            continue
        seed = options.get("split_seed")
        splits[name] = (options.get("val"), options.get("seed") if seed is None else seed)
    if len(set(splits.values())) > 1:
        described = "; ".join(f"{name}: {val} seed {seed}" for name, (val, seed) in splits.items())
        raise FerOptionError(f"the models were validated on different splits ({described}): one's validation "
                             f"rows are another's training rows, {consequence}. Received: models={names}")
    return next(iter(splits.values()), None)


def default_model_path():
    """The packaged pretrained model file, `keras_fer/weights/best.keras` (its `config.json` and
    verified LiteRT copy beside it, as in a run directory), for `resolve_model` /
    `load_predictor` / `load_keras_model`.

    Raises:
        FerModelError: when this install has no packaged model.
    """
    path = WEIGHTS_DIR / "best.keras"
    if path.is_file():
        return path
    found = sorted(p for p in WEIGHTS_DIR.glob("*.keras") if not p.name.startswith(".")) if WEIGHTS_DIR.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise FerModelError(
        f"no packaged pretrained model in {WEIGHTS_DIR} (this install has none): "
        "pass --model with a .keras file or a training run directory"
    )


def resolve_model_argument(name):
    """`resolve_model` of a model argument, where `"packaged"` is the packaged model."""
    return resolve_model(default_model_path() if str(name) == "packaged" else name)


def resolve_model(path):
    """Turn a model argument (file or run directory) into a `ModelSource`.

    Raises:
        FerModelError: for a missing file, a folder without `best.keras`, an unsupported kind
            of file or an unreadable `config.json`, naming the path.
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / "best.keras"
        if not candidate.is_file():
            raise FerModelError(f"{path}: no best.keras in this folder (expected a training run directory)")
        path = candidate
    elif not path.exists():
        raise FerModelError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        raise FerModelError(
            f"{path}: legacy HDF5 models are not loaded (they can carry code); re-save it as .keras"
        )
    if suffix == ".tflite":
        with open(path, "rb") as handle:
            magic = handle.read(8)
        if magic[4:8] != b"TFL3":
            raise FerModelError(f"{path}: not a TensorFlow Lite model file")
    elif not zipfile.is_zipfile(path):
        raise FerModelError(f"{path}: not a Keras model file (a .keras file is a zip archive)")
    config_path = path.parent / "config.json"
    config = None
    if config_path.is_file():
        try:
            config = files.read_json_object(config_path)
        except FerDataError as error:
            raise FerModelError(f"{config_path}: unreadable run config: {_one_line(error.reason)}") from None
    return ModelSource(path, config, config_path)


def class_prior(source):
    """The training class prior from the run config, validated, or FerModelError."""
    if source.config is None:
        raise FerModelError(
            f"--prior-correction needs the training class prior from config.json next to {source.path}: "
            f"{source.config_path} not found"
        )
    prior = source.config.get("class_prior")
    try:
        prior = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError):
        prior = None
    if prior is None or prior.shape != (NUM_CLASSES,) or not np.all(np.isfinite(prior)):
        raise FerModelError(f"{source.config_path}: \"class_prior\" must be a list of {NUM_CLASSES} numbers")
    if np.any(prior <= 0):
        missing = ", ".join(CLASS_NAMES[i] for i in np.flatnonzero(prior <= 0))
        raise FerModelError(
            f"{source.config_path}: \"class_prior\" is 0 for {missing}: prior correction is undefined"
        )
    return prior / prior.sum()


def _one_line(error):
    text = " ".join(str(error).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# --------------------------------------------------------------------------------------------
# Keras models


def _register_custom_objects():
    """Import the modules that register keras-fer's layers for deserialization."""
    import keras_fer.models.layers  # noqa: F401  (Preprocessing, RReLU)

    try:
        import keras_fer.models  # noqa: F401  (any layers of the zoo's families)
    except Exception:  # noqa: BLE001  the zoo is optional for loading; layers.py is enough
        pass


def import_keras():
    """Import Keras (and TensorFlow) with their native start-up log lines silenced, and register
    keras-fer's custom layers."""
    import sys

    if "keras" not in sys.modules:
        with _quiet_native_stderr():
            import keras  # noqa: F401
    import keras

    _register_custom_objects()
    return keras


def load_keras_model(path):
    """Load a `.keras` model with `safe_mode=True` (no code is deserialized), uncompiled.

    Raises:
        FerModelError: naming the file, for anything that is not a loadable Keras model.
    """
    source = resolve_model(path)
    if source.path.suffix.lower() == ".tflite":
        raise FerModelError(f"{source.path}: a TensorFlow Lite file, not a Keras model")
    keras = import_keras()
    try:
        model = keras.saving.load_model(source.path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001  Keras raises many kinds; all mean "not loadable"
        raise FerModelError(f"{source.path}: not a loadable Keras model ({_one_line(error)})") from None
    try:
        return float32_model(model)
    except Exception as error:  # noqa: BLE001
        raise FerModelError(
            f"{source.path}: cannot rebuild this mixed-precision model in float32 ({_one_line(error)})"
        ) from None


def _is_mixed(policy):
    return str(getattr(policy, "name", policy)).startswith("mixed_")


def _mixed_layers(model):
    return [layer.name for layer in model._flatten_layers(include_self=True) if _is_mixed(layer.dtype_policy)]


def _float32_config(value):
    """A serialized model with every mixed-precision policy (and the bfloat16 / float16 tensor
    dtypes they recorded between layers) replaced by float32."""
    if isinstance(value, list):
        return [_float32_config(item) for item in value]
    if not isinstance(value, dict):
        return value
    if str(value.get("class_name", "")).endswith("DTypePolicy") and _is_mixed(value.get("config", {}).get("name", "")):
        return {key: item for key, item in value.items() if key != "shared_object_id"} | {"config": {"name": "float32"}}
    return {
        key: "float32" if key == "dtype" and item in ("bfloat16", "float16") else _float32_config(item)
        for key, item in value.items()
    }


def float32_model(model):
    """`model` computing in float32.

    A model trained with `--mixed-precision` keeps its `mixed_bfloat16` policy in the saved file
    and would predict in bfloat16 (and its LiteRT copy would be refused); its weights are float32
    already, so it is rebuilt from a float32 config with the same weights. Any other model is
    returned as it is.

    Raises:
        ValueError: when a layer still computes in mixed precision after the rebuild.
    """
    if not _mixed_layers(model):
        return model
    keras = import_keras()
    from keras_fer.models import dtype_policy

    with dtype_policy("float32"):  # also inside a mixed-precision run's own evaluation
        rebuilt = keras.saving.deserialize_keras_object(
            _float32_config(keras.saving.serialize_keras_object(model)), safe_mode=True
        )
    rebuilt.set_weights(model.get_weights())
    left = _mixed_layers(rebuilt)
    if left:
        raise ValueError(f"layers still in mixed precision after the rebuild: {', '.join(left)}")
    return rebuilt


def _contains_preprocessing(model):
    from keras_fer.models.layers import Preprocessing

    for layer in model.layers:
        if isinstance(layer, Preprocessing):
            return True
        if hasattr(layer, "layers") and any(isinstance(inner, Preprocessing) for inner in layer.layers):
            return True
    return False


def _ends_in_softmax(model):
    keras = import_keras()

    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    if activation is not None and getattr(activation, "__name__", "") == "softmax":
        return True
    if hasattr(last, "layers") and last.layers:  # a wrapped model: look inside
        return _ends_in_softmax(last)
    return False


def serving_model(model, source=None, normalize=None):
    """The model as something that takes raw 48x48x1 faces, and how it was adapted.

    keras-fer models (with a `Preprocessing` layer and a 48x48x1 input) are returned as they
    are. Other models are wrapped: raw faces -> `Preprocessing(normalize, size, channels)` ->
    model, so a `(64, 64, 1)` or `(48, 48, 3)` model is fed resized / replicated faces.

    Args:
        normalize: for models without a `Preprocessing` layer; default: the run config's
            `"normalize"` if there is one, else `"unit"`.

    Returns:
        `(model, adapter)`: adapter is None, or the `Preprocessing` options of the wrapper.
    """
    keras = import_keras()
    from keras_fer.models.layers import Preprocessing

    name = source.path if source is not None else model.name
    if isinstance(model.inputs, (list, tuple)) and len(model.inputs) != 1:
        raise FerModelError(f"{name}: takes {len(model.inputs)} inputs; expected one image input")
    input_shape = tuple(model.inputs[0].shape)
    output_shape = tuple(model.outputs[0].shape) if len(model.outputs) == 1 else None
    if output_shape is None or len(output_shape) != 2 or output_shape[1] != NUM_CLASSES:
        raise FerModelError(
            f"{name}: outputs {output_shape if output_shape else len(model.outputs)}; "
            f"expected {NUM_CLASSES} class scores (None, {NUM_CLASSES})"
        )
    if len(input_shape) != 4 or input_shape[3] not in (1, 3, None):
        raise FerModelError(f"{name}: takes input {input_shape}; expected images (None, height, width, 1 or 3)")
    height, width, channels = (input_shape[1] or IMAGE_SIZE), (input_shape[2] or IMAGE_SIZE), (input_shape[3] or 1)
    has_preprocessing = _contains_preprocessing(model)
    if has_preprocessing and (height, width, channels) == (IMAGE_SIZE, IMAGE_SIZE, 1):
        return model, None
    if has_preprocessing:
        mode = "none"  # the model normalizes; only adapt the geometry
    else:
        config_mode = (source.config or {}).get("normalize") if source is not None else None
        mode = normalize or config_mode or "unit"
        if mode not in SERVING_NORMALIZE:
            raise FerModelError(
                f"{name}: has no Preprocessing layer and its config asks for normalize={mode!r}; "
                f"pass --normalize ({', '.join(SERVING_NORMALIZE)})"
            )
    adapter = {"normalize": mode, "size": [int(height), int(width)], "channels": int(channels)}
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="face")
    x = Preprocessing(name="serving_preprocessing", **adapter)(inputs)
    wrapped = keras.Model(inputs, model(x), name=f"{model.name}_serving")
    return wrapped, adapter


def keras_predict(model, faces, batch_size=DEFAULT_BATCH_SIZE):
    """`model.predict` on float32 faces, as a NumPy array."""
    with warnings.catch_warnings():
        # TensorFlow 2.21's tensors lack NumPy 2's `copy` argument: noise, not our concern.
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return np.asarray(model.predict(np.asarray(faces, np.float32), batch_size=batch_size, verbose=0))


def _keras_runner(model, batch_size):
    return lambda faces: keras_predict(model, faces, batch_size)


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
    """Runs a `.tflite` model on float32 faces in fixed-size batches (the last one padded)."""

    def __init__(self, path, batch_size=DEFAULT_BATCH_SIZE, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            with _quiet_native_stderr():
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads or _cpu_count())
        except (ValueError, RuntimeError) as error:
            raise FerModelError(f"{path}: LiteRT cannot load it ({_one_line(error)})") from None
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
            with _quiet_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
                self.interpreter.resize_tensor_input(self.input_index, (size, IMAGE_SIZE, IMAGE_SIZE, 1), strict=False)
                self.interpreter.allocate_tensors()
            self.allocated = size

    def __call__(self, faces):
        faces = np.asarray(faces, np.float32)
        results = []
        for start in range(0, len(faces), self.batch_size):
            batch = faces[start:start + self.batch_size]
            count = len(batch)
            if count < self.batch_size:
                batch = np.concatenate([batch, np.zeros((self.batch_size - count,) + batch.shape[1:], np.float32)])
            self._allocate(self.batch_size)
            self.interpreter.set_tensor(self.input_index, np.ascontiguousarray(batch))
            self.interpreter.invoke()
            results.append(np.array(self.interpreter.get_tensor(self.output_index)[:count]))
        if not results:
            return np.zeros((0, NUM_CLASSES), np.float32)
        return np.concatenate(results)


def file_sha256(path):
    """The SHA-256 of a file, in hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_locations(source_path):
    """Where the verified LiteRT copy of `source_path` may live: next to it, then the user cache."""
    source_path = Path(source_path)
    sibling = source_path.with_suffix(".tflite")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "keras-fer" / "litert"
    return sibling, base


def _read_sidecar(tflite_path):
    sidecar = Path(str(tflite_path) + ".json")
    if not (sidecar.is_file() and Path(tflite_path).is_file()):
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == SIDECAR_FORMAT else None


def _source_matches(meta, source_path, digest_holder):
    """Whether the sidecar `meta` was made from this exact `source_path` (size+mtime, else SHA)."""
    stat = source_path.stat()
    if meta.get("source_size") == stat.st_size and meta.get("source_mtime_ns") == stat.st_mtime_ns:
        return True
    if "sha" not in digest_holder:
        digest_holder["sha"] = file_sha256(source_path)
    return meta.get("source_sha256") == digest_holder["sha"]


def _adapter_matches(meta, normalize, config):
    adapter = meta.get("adapter")
    if adapter is None:
        return True  # a keras-fer model: it normalizes itself, the option does not apply
    wanted = normalize or (config or {}).get("normalize") or "unit"
    return adapter.get("normalize") == wanted


def find_cached_tflite(source, normalize=None):
    """The verified LiteRT copy of `source` and its sidecar metadata, or `(None, None)`."""
    sibling, cache_base = _cache_locations(source.path)
    digest = {}
    meta = _read_sidecar(sibling)
    if meta is not None and meta.get("verified") and _source_matches(meta, source.path, digest) \
            and _adapter_matches(meta, normalize, source.config):
        return sibling, meta
    if cache_base.is_dir():
        digest.setdefault("sha", file_sha256(source.path))
        candidate = cache_base / digest["sha"][:24] / "model.tflite"
        meta = _read_sidecar(candidate)
        if meta is not None and meta.get("verified") and meta.get("source_sha256") == digest["sha"] \
                and _adapter_matches(meta, normalize, source.config):
            return candidate, meta
    return None, None


def _writable_cache_path(source):
    """Where to write a new LiteRT copy: next to the model unless that is not ours to write (a file
    someone else put there, a read-only folder, or the package's own weights folder, which an
    install should not change and a checkout should not see change), else the user cache."""
    sibling, cache_base = _cache_locations(source.path)
    sibling_is_foreign = sibling.exists() and _read_sidecar(sibling) is None
    packaged = WEIGHTS_DIR.is_dir() and sibling.parent.resolve() == WEIGHTS_DIR.resolve()
    if not sibling_is_foreign and not packaged and os.access(sibling.parent, os.W_OK):
        return sibling
    folder = cache_base / file_sha256(source.path)[:24]
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
        format: `"tflite"`, `"savedmodel"` or `"keras"`.
        max_abs_diff: max |difference| of the class probabilities on the sample.
        max_abs_diff_outputs: max |difference| of the raw outputs (logits) on the sample.
        sample_size: faces in the check sample.
    """

    path: Path
    format: str
    max_abs_diff: float
    max_abs_diff_outputs: float
    sample_size: int


def _export_tflite(model, path):
    """Convert with Keras' LiteRT exporter into `path` (atomically)."""
    with files.atomic_path(path) as temporary, _quiet_native_stderr():
        model.export(str(temporary), format="litert", verbose=False)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence native (C++) log lines of TensorFlow, its converter and LiteRT, which write
    straight to file descriptor 2, unless TF_CPP_MIN_LOG_LEVEL asks for them (0)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "0":
        yield
        return
    import sys

    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _export_reference(source, model, normalize):
    """What an export is checked against: `(serving model, adapter, sample, Keras outputs on the
    sample, outputs kind)`."""
    serving, adapter = serving_model(model, source, normalize)
    sample = verification_sample()
    reference = keras_predict(serving, sample, len(sample))
    return serving, adapter, sample, reference, _outputs_kind(model, reference)


def _outputs_kind(model, outputs):
    """`"probabilities"` when the Keras `model` ends in a softmax or its `outputs` look like it, else
    `"logits"`. `outputs` is an array, or a function giving one, called only when the model's last
    layer does not already say so (or there is no Keras model: `model=None`)."""
    if model is not None and _ends_in_softmax(model):
        return "probabilities"
    if callable(outputs):
        outputs = outputs()
    return "probabilities" if _looks_like_probabilities(outputs) else "logits"


def _check_export(exported, reference, kind, what, consequence):
    """`(max |difference| of the probabilities, of the raw outputs)` of an exported copy against
    the Keras model; `FerModelError` when the probabilities differ by more than `TOLERANCE`."""
    diff_outputs = float(np.max(np.abs(exported - reference)))
    diff = float(np.max(np.abs(_as_probabilities(exported, kind) - _as_probabilities(reference, kind))))
    if not diff <= TOLERANCE:
        raise FerModelError(
            f"{what} differs from the Keras model by {diff:.2e} > {TOLERANCE:.0e} "
            f"(max |difference| of the probabilities); {consequence}"
        )
    return diff, diff_outputs


def _tflite_from_keras(source, model, normalize, destination):
    """Export `model` (a loaded Keras model of `source`) to `destination` and verify it.

    Returns `(ExportResult, outputs kind)`; raises FerModelError when the copy disagrees.
    """
    keras = import_keras()

    serving, adapter, sample, reference, kind = _export_reference(source, model, normalize)
    _export_tflite(serving, destination)
    try:
        diff, diff_outputs = _check_export(LiteRTRunner(destination)(sample), reference, kind,
                                           f"{destination}: the LiteRT copy", "not used")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(destination)
        raise
    stat = source.path.stat()
    import tensorflow as tf

    files.write_json(
        str(destination) + ".json",
        {
            "format": SIDECAR_FORMAT,
            "source": str(source.path.name),
            "source_sha256": file_sha256(source.path),
            "source_size": stat.st_size,
            "source_mtime_ns": stat.st_mtime_ns,
            "adapter": adapter,
            "outputs": kind,
            "verified": True,
            "tolerance": TOLERANCE,
            "max_abs_diff": diff,
            "max_abs_diff_outputs": diff_outputs,
            "sample": f"{len(sample)} faces: keras_fer.inference.verification_sample()",
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
        sort_keys=False,
    )
    return ExportResult(Path(destination), "tflite", diff, diff_outputs, len(sample)), kind


def _export_savedmodel(source, model, normalize, destination):
    import tensorflow as tf

    serving, adapter, sample, reference, kind = _export_reference(source, model, normalize)
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}-"))
    try:
        with _quiet_native_stderr():
            serving.export(str(temporary), format="tf_saved_model", verbose=False)
        loaded = tf.saved_model.load(str(temporary))
        diff, diff_outputs = _check_export(np.asarray(loaded.serve(tf.constant(sample))), reference, kind,
                                           f"{destination}: the SavedModel", "not written")
        (temporary / "keras_fer.json").write_text(
            json.dumps({"adapter": adapter, "outputs": kind, "max_abs_diff": diff,
                        "source_sha256": file_sha256(source.path)}, indent=2) + "\n",
            encoding="utf-8",
        )
        if destination.exists():
            old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
            os.replace(destination, old)
            os.replace(temporary, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return ExportResult(destination, "savedmodel", diff, diff_outputs, len(sample))


def _export_keras(source, model, destination):
    """The model alone (no optimizer state, no training run, float32 even when it was trained
    with `--mixed-precision`): a `.keras` file for serving, packaging or `--init-from`, with the
    run's `config.json` beside it when it goes elsewhere.

    A `config.json` describes every model in its folder (`resolve_model`), so the export refuses
    to put one where it would describe other models, or to go where one describes another model;
    it never replaces a file it did not make (only an earlier `*-inference.keras`).
    """
    destination = Path(destination)
    received = f"Received: export_to={str(destination)!r}"
    if destination.is_dir():
        raise FerOptionError(f"--export-to {destination} is a folder; name the .keras file. {received}")
    if not destination.name.endswith(".keras"):
        raise FerOptionError(f"--export-to for keras must end in .keras (Keras' format). {received}")
    if destination.exists():
        if destination.resolve() == source.path.resolve():
            raise FerOptionError(f"--export-to would replace the model it reads; choose another file. {received}")
        if not destination.name.endswith("-inference.keras"):
            raise FerOptionError(f"{destination} already exists and is not an earlier export: remove it or "
                                 f"choose another file. {received}")
    folder = destination.parent
    config_copy = None
    if folder.resolve() != source.path.parent.resolve():
        existing_path = folder / "config.json"
        if existing_path.exists():
            if files.read_json_object(existing_path) != source.config:
                raise FerOptionError(f"{existing_path} describes another model, and would describe this one: "
                                     f"export into another folder. {received}")
        elif source.config is not None:
            others = sorted(path.name for path in folder.glob("*.keras") if path.name != destination.name)
            if others:
                raise FerOptionError(f"{folder} holds other models ({', '.join(others[:3])}) that this model's "
                                     f"config.json would then describe: export into another folder. {received}")
            config_copy = existing_path
    keras = import_keras()
    sample = verification_sample()
    reference = keras_predict(model, sample, len(sample))
    kind = _outputs_kind(model, reference)
    with files.atomic_path(destination) as temporary:
        os.unlink(temporary)
        model.save(str(temporary))  # loaded with compile=False: no optimizer, so none is saved
        copy = keras.saving.load_model(temporary, compile=False, safe_mode=True)
        diff, diff_outputs = _check_export(keras_predict(copy, sample, len(sample)), reference, kind,
                                           f"{destination}: the copy", "not written")
    if config_copy is not None:  # after the model: a config.json never stands alone
        with files.atomic_open(config_copy) as stream:
            json.dump(source.config, stream, indent=2)
            stream.write("\n")
    return ExportResult(destination, "keras", diff, diff_outputs, len(sample))


def default_export_path(model_path, fmt):
    source_path = resolve_model(model_path).path
    if fmt == "tflite":
        return source_path.with_suffix(".tflite")
    if fmt == "keras":
        return source_path.with_name(f"{source_path.stem}-inference.keras")
    return source_path.with_name(f"{source_path.stem}_savedmodel")


def export_model(model_path, fmt="tflite", destination=None, normalize=None):
    """Write a serving artifact of a Keras model and check it against the model.

    Args:
        model_path: a `.keras` file or run directory.
        fmt: `"tflite"` (LiteRT flatbuffer; by default `X.tflite` next to `X.keras`, which is
            also the cached copy `load_predictor` uses) or `"savedmodel"` (a TensorFlow
            SavedModel folder `X_savedmodel/` with a `serve` endpoint) or `"keras"` (the model
            without its optimizer state, a third of a run's `best.keras` for Adam:
            `X-inference.keras`; elsewhere, with the run's `config.json` copied beside it).
        destination: where to write it instead.
        normalize: for models without a `Preprocessing` layer (see `serving_model`).

    Returns:
        An `ExportResult` with the max |difference| of the probabilities on
        `verification_sample()`. The artifact is only left in place when that is <= 1e-4.
    """
    if fmt not in EXPORT_FORMATS:
        raise FerOptionError(f"--export must be one of {', '.join(EXPORT_FORMATS)}. Received: {fmt!r}")
    source = resolve_model(model_path)
    if source.path.suffix.lower() == ".tflite":
        raise FerModelError(f"{source.path}: already a TensorFlow Lite file; export needs the .keras model")
    model = load_keras_model(source.path)
    destination = Path(destination) if destination else default_export_path(source.path, fmt)
    if fmt == "keras":
        return _export_keras(source, model, destination)
    if fmt == "tflite":
        if destination.suffix.lower() != ".tflite":
            raise FerOptionError(f"--export-to for tflite must end in .tflite. Received: {destination}")
        if not litert_available():
            raise FerModelError("--export tflite needs the LiteRT runtime to check the copy: "
                                "pip install ai-edge-litert")
        result, _ = _tflite_from_keras(source, model, normalize, destination)
        return result
    return _export_savedmodel(source, model, normalize, destination)


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
    """

    name: str
    backend: str
    run: object
    outputs: str
    source: ModelSource
    notes: list = dataclasses.field(default_factory=list)
    _prior: np.ndarray = None

    def probabilities(self, faces):
        """Class probabilities `(N, 7)` float64 of raw faces."""
        outputs = self.run(np.asarray(faces, np.float32))
        if self.outputs == "probabilities":
            return np.asarray(outputs, np.float64)
        return softmax(outputs)

    @property
    def prior(self):
        """The training class prior from the run config (FerModelError when there is none)."""
        if self._prior is None:
            self._prior = class_prior(self.source)
        return self._prior


def load_predictor(path, backend="auto", normalize=None, batch_size=DEFAULT_BATCH_SIZE):
    """Load one model for prediction.

    Args:
        path: a `.keras` file, a run directory or a `.tflite` file.
        backend: `"auto"` (the verified LiteRT copy, made on first use; Keras when LiteRT is
            missing or cannot run the model), `"litert"` (LiteRT or an error) or `"keras"`.
        normalize: for models without a `Preprocessing` layer: `"none"`, `"unit"`, `"image"`.
        batch_size: faces per forward pass.
    """
    if backend not in BACKENDS:
        raise FerOptionError(f"--backend must be one of {', '.join(BACKENDS)}. Received: {backend!r}")
    if normalize is not None and normalize not in SERVING_NORMALIZE:
        raise FerOptionError(f"--normalize must be one of {', '.join(SERVING_NORMALIZE)}. Received: {normalize!r}")
    source = resolve_model(path)
    name = str(path)
    if source.path.suffix.lower() == ".tflite":
        if backend == "keras":
            raise FerOptionError(f"{source.path}: a .tflite model needs --backend litert or auto")
        if not litert_available():
            raise FerModelError(f"{source.path}: running .tflite models needs ai-edge-litert "
                                "(pip install ai-edge-litert)")
        meta = _read_sidecar(source.path) or {}
        runner = LiteRTRunner(source.path, batch_size)
        kind = meta.get("outputs") or _outputs_kind(None, _probe_outputs(runner))
        return Predictor(name, "litert", runner, kind, source)

    notes = []
    if backend in ("auto", "litert"):
        if litert_available():
            cached, meta = find_cached_tflite(source, normalize)
            if cached is not None:
                return Predictor(name, "litert", LiteRTRunner(cached, batch_size), meta.get("outputs", "logits"),
                                 source)
        elif backend == "litert":
            raise FerOptionError("--backend litert needs ai-edge-litert (pip install ai-edge-litert)")
        else:
            notes.append("LiteRT (ai-edge-litert) is not installed: using Keras, which starts slower")

    model = load_keras_model(source.path)
    if backend in ("auto", "litert") and litert_available():
        try:
            destination = _writable_cache_path(source)
            result, kind = _tflite_from_keras(source, model, normalize, destination)
            notes.append(
                f"made a verified LiteRT copy {result.path} (max |difference| {result.max_abs_diff:.1e}); "
                "later runs start fast"
            )
            return Predictor(name, "litert", LiteRTRunner(result.path, batch_size), kind, source, notes)
        except FerOptionError:
            raise
        except Exception as error:  # noqa: BLE001  any conversion failure: Keras still works
            if backend == "litert":
                raise FerModelError(f"{source.path}: no LiteRT copy ({_one_line(error)})") from None
            notes.append(f"no LiteRT copy ({_one_line(error)}): using Keras")
    serving, _ = serving_model(model, source, normalize)
    runner = _keras_runner(serving, batch_size)
    kind = _outputs_kind(model, lambda: _probe_outputs(runner))
    return Predictor(name, "keras", runner, kind, source, notes)


def _probe_outputs(run):
    """`run`'s raw outputs on a small fixed sample, to tell logits from probabilities."""
    return run(verification_sample(16))


# --------------------------------------------------------------------------------------------
# Probabilities, TTA, ensembles


def softmax(logits):
    """Row-wise softmax in float64."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


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
    softmax over the TTA views (prior-corrected per model when asked)."""
    if not predictors:
        raise FerOptionError("no model to predict with")
    views = tta_views(faces, tta)
    total = None
    for predictor in predictors:
        probabilities = sum(predictor.probabilities(view) for view in views) / len(views)
        if prior_correction:
            probabilities = prior_correct(probabilities, predictor.prior)
        total = probabilities if total is None else total + probabilities
    return total / len(predictors)


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
    """

    out: Path
    rows: int
    confusions: dict = None

    @property
    def labelled(self):
        return bool(self.confusions)

    def evaluations(self):
        """`{split: metrics.Evaluation}` from the confusion matrices."""
        return {split: evaluation_from_confusion(matrix) for split, matrix in (self.confusions or {}).items()}


@contextlib.contextmanager
def atomic_output(path):
    """Yield a text stream (UTF-8, `newline=""` for csv) onto a temporary file next to `path`;
    it replaces `path` only if the block succeeds (`files.atomic_open`).

    Raises:
        FerOptionError: when the folder cannot be created or `path` is a folder.
    """
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FerOptionError(f"{path}: cannot create its folder ({error.strerror or error})") from None
    if path.is_dir():
        raise FerOptionError(f"{path}: is a folder; give a file name")
    with files.atomic_open(path, "w", encoding="utf-8", newline="") as stream:
        yield stream


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
                chunk_rows=4096, on_chunk=None, timings=None):
    """Stream a FER CSV through the models into a Kaggle-style submission `id,label`.

    Memory stays flat: rows are read, classified and written `chunk_rows` at a time; with
    labels, only 7x7 confusion counts are kept (overall and per Kaggle `Usage` split).

    Args:
        proba: add one probability column per class, named by class.
        on_chunk: called with the number of rows after each chunk (for a progress bar).
        timings: a `Timings` to add the time spent reading (waiting for rows: reading runs in
            a background thread, overlapping inference), classifying and writing to.

    Raises:
        FerDataError: for a malformed row (no partial submission is left behind).
    """
    from keras_fer.data import iter_csv

    timings = timings if timings is not None else Timings()
    out = Path(out)
    rows = 0
    confusions = {}
    with atomic_output(out) as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["id", "label"] + (list(CLASS_NAMES) if proba else []))
        for chunk in prefetch(iter_csv(path, chunk_rows), timings):
            start = time.perf_counter()
            probabilities = predict_proba(predictors, chunk.pixels, tta, prior_correction)
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
                _count(confusions, "all", chunk.labels, labels)
                if chunk.usage is not None:
                    for split in np.unique(chunk.usage):
                        mask = chunk.usage == split
                        _count(confusions, str(split), chunk.labels[mask], labels[mask])
            rows += len(chunk)
            timings.write_s += time.perf_counter() - start
            if on_chunk is not None:
                on_chunk(len(chunk))
    return PredictionRun(out, rows, confusions or None)


def _count(confusions, split, truth, predicted):
    matrix = confusions.setdefault(split, np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64))
    np.add.at(matrix, (np.asarray(truth, np.int64), np.asarray(predicted, np.int64)), 1)


def evaluation_from_confusion(confusion):
    """A `metrics.Evaluation` computed from a 7x7 confusion matrix (rows true, columns predicted).

    Same definitions as scikit-learn with `labels=range(7)`, `zero_division=0`: macro-F1 is the
    mean F1 over all 7 classes.
    """
    from keras_fer.metrics import Evaluation

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
        macro_f1=float(f1.mean()),
        precision=precision, recall=recall, f1=f1, support=support.astype(np.int64),
        confusion=confusion,
    )


# --------------------------------------------------------------------------------------------
# Saving metrics


def metrics_paths(out):
    """Where `save_evaluations` writes, next to the submission `out`."""
    out = Path(out)
    stem = out.name[: -len("".join(out.suffixes))] if out.suffixes else out.name
    base = out.with_name(stem or out.name)
    return {
        "json": Path(f"{base}_metrics.json"),
        "csv": Path(f"{base}_confusion.csv"),
        "png": Path(f"{base}_confusion.png"),
    }


def split_order(evaluations):
    order = ["all", "Training", "PublicTest", "PrivateTest"]
    return sorted(evaluations, key=lambda split: (order.index(split) if split in order else len(order), split))


def save_evaluations(evaluations, out):
    """Write `<stem>_metrics.json`, `<stem>_confusion.csv` and `<stem>_confusion.png` next to
    the submission `out`. Returns the dict of paths written."""
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
    with atomic_output(paths["csv"]) as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["split", "true"] + list(CLASS_NAMES))
        for split in splits:
            matrix = evaluations[split].confusion_normalized
            for i, name in enumerate(CLASS_NAMES):
                writer.writerow([split, name] + [f"{value:.6f}" for value in matrix[i]])
    from keras_fer import plots

    # One row-normalized confusion matrix per split, side by side.
    titles = [
        f"{'all rows' if split == 'all' else split}: acc {evaluations[split].accuracy:.3f}, "
        f"macro-F1 {evaluations[split].macro_f1:.3f}"
        for split in splits
    ]
    matrices = np.stack([evaluations[split].confusion for split in splits])
    plots.save_figure(plots.confusion_figure(matrices, CLASS_NAMES, normalize=True, title=titles), paths["png"],
                      dpi=110)
    return paths

