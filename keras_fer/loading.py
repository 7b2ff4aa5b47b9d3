"""Find models and load them safely: the one model loader of keras-fer.

A model is a `.keras` file, a training run directory (its `best.keras` and `config.json`), or a
`.tflite` file written by `keras_fer.export`. `.keras` files are loaded with
`safe_mode=True` (no code is deserialized) and uncompiled; legacy HDF5 files are refused. Models
take raw faces: float32 `(N, 48, 48, 1)` grey levels 0-255, and output 7 logits (or
probabilities, when their last layer is a softmax); `serving_model` adapts other inputs.
Also here: what a run's `config.json` says about a model (`class_prior`, `validation_split`),
`float32_model` for models trained with `--mixed-precision`, `keras_predict` and `softmax`.

Example:
>>> source = resolve_model("runs/cnn4")  # doctest: +SKIP
>>> model = load_keras_model(source.path)  # doctest: +SKIP
"""

import contextlib
import dataclasses
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from keras_fer import files
from keras_fer.classes import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES
from keras_fer.errors import FerDataError, FerModelError, FerOptionError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "SERVING_NORMALIZE",
    "WEIGHTS_DIR",
    "ModelSource",
    "check_model_file",
    "class_prior",
    "default_model_path",
    "ends_in_softmax",
    "float32_model",
    "import_keras",
    "keras_predict",
    "load_keras_model",
    "model_in_dtype",
    "one_line",
    "quiet_native_stderr",
    "resolve_model",
    "resolve_model_argument",
    "run_options",
    "serving_model",
    "softmax",
    "validation_split",
]

SERVING_NORMALIZE = ("none", "unit", "image")
DEFAULT_BATCH_SIZE = 256
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


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
    configs (the first model's spelling), or None when none has one. Raises FerOptionError when
    they name different rows (`data.split_identity`: the seed counts only for `fraction:F`).

    Args:
        sources: `ModelSource`s; names: how the user named them.
        consequence: what a disagreement breaks, ending the error message.
    """
    from keras_fer.data import split_identity

    splits = {}
    for name, source in zip(names, sources):
        if (source.config or {}).get("options") is None:
            continue
        options = run_options(source.config, source.config_path)
        seed = options.get("split_seed")
        splits[name] = (options.get("val"), options.get("seed") if seed is None else seed)
    if len({split_identity(*split) for split in splits.values()}) > 1:  # the same rows, however spelled
        described = "; ".join(f"{name}: {val} seed {seed}" for name, (val, seed) in splits.items())
        raise FerOptionError(f"the models were validated on different splits ({described}): one's validation "
                             f"rows are another's training rows, {consequence} (train them with one --split-seed: "
                             f"without it the split follows --seed). Received: models={names}")
    return next(iter(splits.values()), None)


def default_model_path(option="--model"):
    """The packaged pretrained model file, `keras_fer/weights/best.keras` (its `config.json` and
    verified LiteRT copy beside it, as in a run directory), for `resolve_model` /
    `inference.load_predictor` / `load_keras_model`.

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
        f"pass {option} with a .keras file or a training run directory"
    )


def resolve_model_argument(name, option="--model"):
    """`resolve_model` of a model argument, where `"packaged"` is the packaged model; `option`
    is the flag that names it, for the message when there is none."""
    return resolve_model(default_model_path(option) if str(name) == "packaged" else name)


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
            if (path / "saved_model.pb").is_file():  # what --export savedmodel writes: for serving, not for us
                raise FerModelError(f"{path}: a TensorFlow SavedModel, which keras-fer does not load: give the "
                                    ".keras model it was exported from (or its .tflite export)")
            raise FerModelError(f"{path}: no best.keras in this folder (expected a training run directory)")
        path = candidate
    check_model_file(path)
    config_path = path.parent / "config.json"
    config = None
    if config_path.is_file():
        try:
            config = files.read_json_object(config_path)
        except FerDataError as error:
            raise FerModelError(f"{config_path}: unreadable run config: {one_line(error.reason)}") from None
    return ModelSource(path, config, config_path)


def check_model_file(path):
    """Check that `path` is a model file keras-fer loads: a `.keras` zip archive or a `.tflite`
    file (no legacy HDF5), before Keras reads it. Returns the path.

    Raises:
        FerModelError: naming the file, when it is missing or not such a model file (Keras itself
            says "File not found" for any file that is not a zip archive).
    """
    path = Path(path)
    if not path.exists():
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
    return path


def trained_on_demo_faces(config):
    """Whether a run's `config.json` (as a dict, or None) says it trained on the built-in demo
    faces: training records `"data": null` when it was given no data and no `FER_DATA`."""
    return isinstance(config, dict) and "data" in config and config["data"] is None


def run_options(config, path):
    """The training options (`"options"`) of a run's `config.json`, as a dict; `{}` when the
    config (None: there is none) does not have them.

    Args:
        config: the config as a dict, or None; path: where it was read, for the message.

    Raises:
        FerDataError: naming the file and the field, when `"options"` is not a JSON object.
    """
    options = (config or {}).get("options")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise FerDataError(f"expected a JSON object of training options. Received: options={one_line(repr(options))}",
                           path, field="options")
    return options


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
    except (TypeError, ValueError, OverflowError):  # JSON's unbounded integers too
        prior = None
    if prior is None or prior.shape != (NUM_CLASSES,) or not np.all(np.isfinite(prior)):
        raise FerModelError(f"{source.config_path}: \"class_prior\" must be a list of {NUM_CLASSES} numbers")
    if np.any(prior < 0):
        negative = ", ".join(f"{CLASS_NAMES[i]} ({prior[i]:g})" for i in np.flatnonzero(prior < 0))
        raise FerModelError(f"{source.config_path}: \"class_prior\" is negative for {negative}: not a prior")
    if np.any(prior == 0):
        missing = ", ".join(CLASS_NAMES[i] for i in np.flatnonzero(prior == 0))
        raise FerModelError(
            f"{source.config_path}: \"class_prior\" is 0 for {missing}: prior correction is undefined"
        )
    return prior / prior.sum()


TTA_TEMPERATURE_MODES = ("flip", "crops")  # "tta_temperatures" keys; TTA "none" is "temperature"
# the config.json keys keras_fer.calibrate writes: fitted on one model's logits, they go with it
TEMPERATURE_KEYS = ("temperature", "tta_temperatures")


def positive_number(value):
    """`value` as a positive finite float, else None (JSON's unbounded integers included)."""
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    except OverflowError:  # 1e400 written out as an integer does not fit a float
        return None
    return number if number is not None and np.isfinite(number) and number > 0 else None


def model_temperature(source, tta="none"):
    """The temperature the model's config.json records for predictions with `tta` (written by
    `python -m keras_fer.calibrate [--tta MODE]`): its logits are divided by it before the
    softmax. `"tta_temperatures"` holds one per TTA mode (`"flip"`, `"crops"`: averaging views
    softens, so they want their own); `"temperature"` is for `"none"` and any mode without one.
    1.0 when there is none (or no config); FerModelError for a value that is not a positive
    finite number."""
    config = (source.config or {}) if source is not None else {}
    per_mode = config.get("tta_temperatures")
    if per_mode is not None:
        wrong = (not isinstance(per_mode, dict) or any(key not in TTA_TEMPERATURE_MODES for key in per_mode)
                 or any(positive_number(value) is None for value in per_mode.values()))
        if wrong:
            modes = " and ".join(TTA_TEMPERATURE_MODES)
            raise FerModelError(f"{source.config_path}: \"tta_temperatures\" must map {modes} to positive numbers "
                                "(written by python -m keras_fer.calibrate --tta). Received: "
                                f"{one_line(repr(per_mode))}")
        if tta in per_mode:
            return positive_number(per_mode[tta])
    if "temperature" not in config:
        return 1.0
    value = config["temperature"]
    number = positive_number(value)
    if number is None:
        raise FerModelError(f"{source.config_path}: \"temperature\" must be a positive number (written by python -m "
                            f"keras_fer.calibrate). Received: {one_line(repr(value))}")
    return number


def model_temperatures(source):
    """`{TTA mode: temperature}` for `"none"` and `TTA_TEMPERATURE_MODES` (`model_temperature`)."""
    return {mode: model_temperature(source, mode) for mode in ("none", *TTA_TEMPERATURE_MODES)}


def one_line(error):
    """An error's text on one line, at most 300 characters, for one-line error messages."""
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
        with quiet_native_stderr():
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
        raise FerModelError(f"{source.path}: not a loadable Keras model ({one_line(error)})") from None
    try:
        return float32_model(model)
    except Exception as error:  # noqa: BLE001
        raise FerModelError(
            f"{source.path}: cannot rebuild this reduced-precision model in float32 ({one_line(error)})"
        ) from None


REDUCED_PRECISION_POLICIES = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")


def _is_reduced(policy):
    return str(getattr(policy, "name", policy)) in REDUCED_PRECISION_POLICIES


def _reduced_layers(model):
    return [layer.name for layer in model._flatten_layers(include_self=True) if _is_reduced(layer.dtype_policy)]


def _config_in_dtype(value, dtype):
    """A serialized model with every float dtype policy (and the float tensor dtypes recorded
    between layers) replaced by `dtype` ("float32" or "float16")."""
    if isinstance(value, list):
        return [_config_in_dtype(item, dtype) for item in value]
    if not isinstance(value, dict):
        return value
    policy_name = value.get("config", {}).get("name", "") if isinstance(value.get("config"), dict) else ""
    if str(value.get("class_name", "")).endswith("DTypePolicy") and policy_name in (
        "float32", *REDUCED_PRECISION_POLICIES
    ):
        return {key: item for key, item in value.items() if key != "shared_object_id"} | {"config": {"name": dtype}}
    return {
        key: dtype if key == "dtype" and item in ("float32", "bfloat16", "float16") else _config_in_dtype(item, dtype)
        for key, item in value.items()
    }


def model_in_dtype(model, dtype):
    """`model` rebuilt from its config with every layer in `dtype` ("float32" or "float16") and its
    weights cast to it. `float16` halves a model's file (`predict.py --export keras-float16`).

    Raises:
        ValueError: when a layer is still in another precision after the rebuild.
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16. Received: dtype={dtype!r}")
    keras = import_keras()
    from keras_fer.models import dtype_policy

    with dtype_policy(dtype):  # also inside a mixed-precision run's own evaluation
        rebuilt = keras.saving.deserialize_keras_object(
            _config_in_dtype(keras.saving.serialize_keras_object(model), dtype), safe_mode=True
        )
    rebuilt.set_weights([np.asarray(weight).astype(dtype) for weight in model.get_weights()])
    left = [layer.name for layer in rebuilt._flatten_layers(include_self=True)
            if str(getattr(layer.dtype_policy, "name", layer.dtype_policy)) != dtype]
    if left:
        raise ValueError(f"layers still in another precision after the rebuild: {', '.join(left)}")
    return rebuilt


def float32_model(model):
    """`model` computing in float32.

    A model trained with `--mixed-precision` keeps its `mixed_bfloat16` policy in the saved file
    and would predict in bfloat16 (and its LiteRT copy would be refused), and a model exported
    with `--export keras-float16` holds float16 weights; either is rebuilt from a float32 config
    with its weights cast to float32. Any other model is returned as it is.

    Raises:
        ValueError: when a layer still computes in reduced precision after the rebuild.
    """
    if not _reduced_layers(model):
        return model
    return model_in_dtype(model, "float32")


def ends_in_softmax(model):
    keras = import_keras()

    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    if activation is not None and getattr(activation, "__name__", "") == "softmax":
        return True
    if hasattr(last, "layers") and last.layers:  # a wrapped model: look inside
        return ends_in_softmax(last)
    return False


def normalizes_itself(model):
    """Whether `model` scales grey levels itself: the first layer its input meets (past random
    augmentation layers, which pass faces through at inference, and into nested models) is a
    `Rescaling` or `Normalization` layer, as keras-io's examples build them. Such a model takes
    raw 0-255 pixels."""
    keras = import_keras()

    def first_layer(model):
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer) or type(layer).__name__.startswith("Random"):
                continue
            if isinstance(layer, keras.Model):
                inner = first_layer(layer)
                if inner is None:  # a nested model of augmentation layers only
                    continue
                return inner
            return layer
        return None

    return isinstance(first_layer(model), (keras.layers.Rescaling, keras.layers.Normalization))


def default_normalize(model, source=None, normalize=None):
    """The grey-level scaling a model without keras-fer's `Preprocessing` gets: `normalize` if
    given, else the run config's `"normalize"`, else `"none"` for a model that scales them
    itself (`normalizes_itself`), else `"unit"` (/255)."""
    config_mode = (source.config or {}).get("normalize") if source is not None else None
    return normalize or config_mode or ("none" if normalizes_itself(model) else "unit")


def serving_model(model, source=None, normalize=None):
    """The model as something that takes raw 48x48x1 faces, and how it was adapted.

    keras-fer models (with a `Preprocessing` layer and a 48x48x1 input) are returned as they
    are. Other models are wrapped: raw faces -> `Preprocessing(normalize, size, channels)` ->
    model, so a `(64, 64, 1)` or `(48, 48, 3)` model is fed resized / replicated faces.

    Args:
        normalize: for models without a `Preprocessing` layer; default: `default_normalize`
            (the run config's `"normalize"`, else `"none"` for a model starting with its own
            `Rescaling`/`Normalization`, else `"unit"`).

    Returns:
        `(model, adapter)`: adapter is None, or the `Preprocessing` options of the wrapper.
    """
    keras = import_keras()
    from keras_fer.models.layers import Preprocessing, find_preprocessing

    name = source.path if source is not None else model.name
    try:
        model_inputs = model.inputs
    except (AttributeError, ValueError):  # Keras: "Sequential model ... has no defined inputs yet"
        raise FerModelError(f"{name}: has no defined input (a subclassed model, or a Sequential never built on "
                            "an Input); expected a model built on an image Input") from None
    try:
        structure = model.output
    except (AttributeError, ValueError):  # Keras 3: a Sequential's `output` raises even when built on an Input
        structure = None
    if isinstance(structure, dict):  # predict would return a dict, not an array
        raise FerModelError(f"{name}: outputs a dict of tensors ({', '.join(map(str, structure))}); "
                            f"expected one tensor of {NUM_CLASSES} class scores (None, {NUM_CLASSES})")
    if isinstance(model_inputs, (list, tuple)) and len(model_inputs) != 1:
        raise FerModelError(f"{name}: takes {len(model_inputs)} inputs; expected one image input")
    input_shape = tuple(model_inputs[0].shape)
    output_shape = tuple(model.outputs[0].shape) if len(model.outputs) == 1 else None
    if output_shape is None or len(output_shape) != 2 or output_shape[1] != NUM_CLASSES:
        raise FerModelError(
            f"{name}: outputs {output_shape if output_shape else len(model.outputs)}; "
            f"expected {NUM_CLASSES} class scores (None, {NUM_CLASSES})"
        )
    if len(input_shape) != 4 or input_shape[3] not in (1, 3, None):
        raise FerModelError(f"{name}: takes input {input_shape}; expected images (None, height, width, 1 or 3)")
    height, width, channels = (input_shape[1] or IMAGE_SIZE), (input_shape[2] or IMAGE_SIZE), (input_shape[3] or 1)
    has_preprocessing = find_preprocessing(model) is not None
    if has_preprocessing and (height, width, channels) == (IMAGE_SIZE, IMAGE_SIZE, 1):
        return model, None
    if has_preprocessing:
        mode = "none"  # the model normalizes; only adapt the geometry
    else:
        mode = default_normalize(model, source, normalize)
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
    """The model's outputs for float32 faces, as a NumPy array, `batch_size` faces at a time.

    `predict_on_batch` per batch, not `model.predict`: predict builds a tf.data pipeline on
    every call, which made one face (a camera's frame, a photo) 19x slower and 16 faces 24x
    slower, 256-1024 faces 1.1-1.2x, with the same outputs (`bench/keras_predict.py`)."""
    faces = np.asarray(faces, np.float32)
    with warnings.catch_warnings():
        # TensorFlow 2.21's tensors lack NumPy 2's `copy` argument: noise, not our concern.
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        parts = [model.predict_on_batch(faces[start:start + batch_size])
                 for start in range(0, max(len(faces), 1), batch_size)]
    if isinstance(parts[0], (list, tuple)):  # several outputs: each joined over the batches, as predict gives
        outputs = range(len(parts[0]))
        return np.asarray([np.concatenate([np.asarray(part[index]) for part in parts]) for index in outputs])
    return np.concatenate([np.asarray(part) for part in parts])


@contextlib.contextmanager
def quiet_native_stderr():
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


def softmax(logits):
    """Row-wise softmax in float64."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
