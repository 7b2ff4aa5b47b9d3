"""One call from an image to the expressions of its faces, as the PyPI `fer` package's
`FER().detect_emotions(image)` gives them: `keras_fer.recognize(image)`.

Faces are found with OpenCV's Haar cascade, or MTCNN with `detector="mtcnn"` (`keras_fer.faces`;
an image of exactly 48x48 pixels is taken as a face crop) and classified by the packaged model, or
by any model or ensemble
`predict.py` takes. Models are loaded once and reused by later calls (loaded again when their
file changes, as a run's best.keras does while it trains).

Example:
>>> import keras_fer
>>> faces = keras_fer.recognize("party.jpg")  # doctest: +SKIP
>>> [(face.box, face.name, face.confidence) for face in faces]  # box (x, y, w, h)  # doctest: +SKIP
>>> faces[0].emotions()  # {'Angry': ..., 'Disgust': ..., ..., 'Neutral': ...}: all seven  # doctest: +SKIP
"""

import dataclasses
import functools
import os
import sys
from pathlib import Path

import numpy as np

from keras_fer import faces as face_tools
from keras_fer.classes import CLASS_NAMES, NUM_CLASSES
from keras_fer.errors import FerDataError, FerOptionError, check_finite


@dataclasses.dataclass(frozen=True, eq=False)
class Face:
    """One face: its box in the image and the model's class probabilities.

    Attributes:
        box: `(x, y, w, h)` in pixels of the image given.
        probabilities: `(7,)` float probabilities, in the order of `CLASS_NAMES`.
    """

    box: tuple
    probabilities: np.ndarray

    @property
    def label(self):
        """The class index (0-6) of the most probable expression."""
        return int(np.argmax(self.probabilities))

    @property
    def name(self):
        """The most probable expression's name, e.g. `"Happy"`."""
        return CLASS_NAMES[self.label]

    @property
    def confidence(self):
        """The most probable expression's probability."""
        return float(np.max(self.probabilities))

    def emotions(self):
        """`{class name: probability}` for all seven classes."""
        return {name: float(value) for name, value in zip(CLASS_NAMES, self.probabilities)}


@functools.lru_cache(maxsize=8)
def _load(path, mtime_ns, size, backend, config_stamp=None):
    """`load_predictor(path, backend)`, kept for later calls while the file and the config.json
    beside it (`config_stamp`: its time and size; a temperature written by `keras_fer.calibrate`)
    keep their time and size (a run's best.keras rewritten by training, or a model saved again,
    is loaded again)."""
    from keras_fer.inference import load_predictor

    return load_predictor(path, backend)


def _predictors(model, backend):
    from keras_fer.inference import Predictor
    from keras_fer.loading import default_model_path, resolve_model_argument

    models = model if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise FerOptionError("model must name at least one model. Received: model=[]")
    keras = sys.modules.get("keras")  # an in-memory model means Keras is imported already
    found = []
    for item in models:
        if isinstance(item, Predictor):
            found.append(item)
        elif keras is not None and isinstance(item, keras.Model):
            found.append(_keras_model_predictor(item))
        elif isinstance(item, (str, os.PathLike)) and not str(item).strip():  # "" would be the current folder
            raise FerOptionError(f"model must name a model file or run directory. Received: model={item!r}")
        elif item is None or isinstance(item, (str, os.PathLike)):
            path = default_model_path() if item is None else resolve_model_argument(item).path
            path = Path(path).resolve()
            stat = path.stat()
            config = path.parent / "config.json"
            config_stamp = (config.stat().st_mtime_ns, config.stat().st_size) if config.is_file() else None
            found.append(_load(str(path), stat.st_mtime_ns, stat.st_size, backend, config_stamp))
        else:
            raise FerOptionError(
                "model must be None (the packaged model), a model file or run directory, a keras.Model, an "
                f"inference.Predictor, or a list of those. Received: model={item!r}"
            )
    return found


@functools.lru_cache(maxsize=4)  # by identity; a few models, as a predictor keeps its model alive
def _keras_model_predictor(model):
    """A Keras model's `Predictor`, made on its first call and kept for the next calls."""
    from keras_fer.inference import keras_predictor

    return keras_predictor(model)


def _from_pil(image):
    """A PIL Image as uint8 gray `(H, W)` or BGR `(H, W, 3)`, read by its mode: its array is RGB,
    palette indices (mode P), CMYK, YCbCr ..., never the BGR an OpenCV array is. Single-channel
    16-bit and float images are scaled as such files are read (`data.to_uint8`); alpha is dropped."""
    from keras_fer.data import to_uint8

    if image.mode == "L":
        return np.asarray(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        array = np.asarray(image)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise FerOptionError(f"image holds NaN or infinite pixel values. Received: PIL image of mode {image.mode}")
        if image.mode == "I" and array.size and array.min() >= 0 and array.max() <= 65535:
            array = array.astype(np.uint16)  # a 16-bit file's levels (PGM; PNG before Pillow 10.3), held as int32
        return to_uint8(array)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _as_image(image, channels="bgr"):
    """A path, an OpenCV-style uint8 array or a PIL Image, as uint8 gray `(H, W)` or BGR `(H, W, 3)`.
    `channels="rgb"` reads a colour array's channels as RGB(A); files and PIL Images carry their own."""
    if isinstance(image, (str, os.PathLike)):
        if not str(image).strip():
            raise FerOptionError(f"image must name an image file. Received: image={image!r}")
        try:
            return face_tools.read_photo(Path(image))
        except FerDataError as error:
            from keras_fer.video import VIDEO_EXTENSIONS

            if Path(image).suffix.lower() in VIDEO_EXTENSIONS and error.reason.startswith("unreadable image"):
                raise FerDataError("a video, not an image: keras_fer.video.predict_video reads videos",
                                   image) from None
            raise
    pil = sys.modules.get("PIL.Image")  # a PIL Image means Pillow is imported already
    if pil is not None and isinstance(image, pil.Image):
        image, channels = _from_pil(image), "bgr"
    if isinstance(image, (list, tuple)):  # it was refused as an array of shape (n,) or (n, H, W)
        items = f"{len(image)} item" + "s" * (len(image) != 1)
        raise FerOptionError("image must be one image (a file path, a uint8 array or a PIL Image): call recognize "
                             f"once per image. Received: image=<{type(image).__name__} of {items}>")
    if image is None or not hasattr(image, "__array__") and not hasattr(image, "__array_interface__"):
        raise FerOptionError("image must be a file path, a uint8 array or a PIL Image. Received: "
                             + ("image=None" if image is None else f"image of type {type(image).__name__}"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))):
        raise FerOptionError(
            "image must be a file path, a PIL Image or a uint8 array of shape (H, W), (H, W, 1), (H, W, 3) (BGR, as "
            f"OpenCV reads it) or (H, W, 4). Received: image.shape={array.shape}, image.dtype={array.dtype}"
        )
    if min(array.shape[:2]) < 1:
        raise FerOptionError(f"image is empty. Received: image.shape={array.shape}")
    if array.ndim == 3 and array.shape[2] == 1:
        return array[:, :, 0]
    if array.ndim == 3 and channels == "rgb":
        return array[:, :, 2::-1]  # RGB(A) -> BGR, alpha dropped
    if array.ndim == 3 and array.shape[2] == 4:
        return array[:, :, :3]
    return array


def recognize(image, model=None, tta="none", detect=True, min_face=face_tools.DEFAULT_MIN_FACE, backend="auto",
              detector="haar", channels="bgr"):
    """Find the faces in an image and classify their expressions.

    Args:
        image: an image file path, a uint8 array as OpenCV reads one: gray `(H, W)` or BGR
            `(H, W, 3)` (or RGB with `channels="rgb"`), or a PIL Image (read by its mode: RGB,
            palette, CMYK, 16-bit ..., alpha dropped).
        model: a `.keras` or `.tflite` file or a training run directory, a `keras.Model` (run
            with Keras whatever `backend` says), an `inference.Predictor`, or a list of those
            (an ensemble, their softmax averaged); None for the packaged model. Models are
            loaded once and kept for later calls, and loaded again when their file changes.
        tta: test-time augmentation: `"none"`, `"flip"` or `"crops"` (ten-crop).
        detect: False to take the whole image as one face.
        min_face: smallest face side the detector looks for, in pixels.
        backend: `"auto"` (a verified LiteRT copy, else Keras), `"litert"` or `"keras"`.
        detector: `"haar"` (OpenCV's cascade) or `"mtcnn"` (finds turned faces too; needs the
            `mtcnn` extra), as in `faces.detect_faces`.
        channels: the colour order of a `(H, W, 3)` or `(H, W, 4)` array: `"bgr"` (OpenCV's
            `imread` and `VideoCapture`) or `"rgb"` (PIL's `np.asarray`, matplotlib, imageio).
            Taken as BGR, an RGB face's grey levels are weighted differently (red at 0.114
            instead of 0.299), so its skin turns darker. Files and PIL Images need no option.

    Returns:
        A list of `Face`, left to right; empty when no face is found.

    Raises:
        FerDataError: for an unreadable image file.
        FerModelError: for a missing or unloadable model.
        FerOptionError: for an image array of the wrong type or shape, or a bad option.

    Example:
    >>> crop = np.full((48, 48), 128, np.uint8)  # a 48x48 crop: one face, the whole image
    >>> (face,) = recognize(crop, backend="keras")  # (keras: as a test, no LiteRT copy in ~/.cache)
    >>> face.box, face.name in CLASS_NAMES, round(sum(face.emotions().values()), 6)
    ((0, 0, 48, 48), True, 1.0)
    >>> [(f.box, f.name) for f in recognize("party.jpg", tta="flip")]  # [((x, y, w, h), name), ...]  # doctest: +SKIP
    """
    from keras_fer.inference import TTA_MODES, check_backend, predict_proba

    check_backend(backend)  # also for in-memory models, which never reach load_predictor's check
    if tta not in TTA_MODES:
        raise FerOptionError(f"tta must be one of {', '.join(TTA_MODES)}. Received: tta={tta!r}")
    check_finite(min_face, "min_face (pixels)", 1, received="min_face")  # as predict.py --min-face
    if isinstance(detect, str) or detect not in (True, False):  # detect="no" is true: it looked for faces
        raise FerOptionError(f"detect must be True or False. Received: detect={detect!r}")
    if detect:
        face_tools.check_detector(detector)
    if channels not in ("bgr", "rgb"):
        raise FerOptionError(f"channels must be 'bgr' or 'rgb'. Received: channels={channels!r}")
    picture = _as_image(image, channels)
    predictors = _predictors(model, backend)
    boxes = face_tools.face_boxes(picture, detect, min_face, detector)
    probabilities = predict_proba(predictors, face_tools.crop_faces(picture, boxes), tta)
    return [Face(tuple(int(v) for v in box), np.asarray(row, dtype=float).reshape(NUM_CLASSES))
            for box, row in zip(boxes, probabilities)]
