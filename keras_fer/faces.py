"""Faces in photos: detection (OpenCV's Haar cascade, or MTCNN), cropping to 48x48 grayscale,
annotation.

A photo is any image that is not already a FER-style crop. Images of exactly 48x48 pixels
(grayscale or colour) count as crops: they are classified whole, without detection, because
the cascade cannot find a face that fills the whole frame (its 24x24 detector needs a margin).

Example:
>>> image = read_photo("party.jpg")  # doctest: +SKIP
>>> boxes = detect_faces(image)  # doctest: +SKIP
>>> crops = crop_faces(image, boxes)  # (n, 48, 48, 1) uint8, ready for a model  # doctest: +SKIP
"""

import functools
import threading
from pathlib import Path

import numpy as np

from keras_fer.classes import IMAGE_SIZE
from keras_fer.data import (
    IMAGE_EXTENSIONS,
    check_name,
    decode_image,
    read_file_bytes,
    to_face,
    to_uint8,
    walk_files,
)
from keras_fer.errors import FerDataError, FerModelError, FerOptionError
from keras_fer.files import atomic_path

CASCADE_FILE = "haarcascade_frontalface_default.xml"
DEFAULT_MIN_FACE = 30
#: The face detectors `detect_faces` knows; the first is the default.
DETECTORS = ("haar", "mtcnn")


@functools.lru_cache(maxsize=1)
def haar_cascade():
    """OpenCV's frontal-face Haar cascade (loaded once)."""
    import cv2

    path = cv2.data.haarcascades + CASCADE_FILE
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FerModelError(f"{path}: OpenCV could not load its face detector (reinstall opencv-python-headless)")
    return cascade


def read_photo(path):
    """Read an image file as uint8 gray `(H, W)` or BGR `(H, W, 3)` (alpha dropped; 16-bit and float
    images scaled to 0-255 by `data.to_uint8`)."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise FerDataError("no such file", path)
    if path.is_dir():
        raise FerDataError("a folder, not an image file", path)
    image = decode_image(read_file_bytes(path), path)
    if image is None:
        raise FerDataError("unreadable image (corrupt or not an image)", path)
    if image.dtype != np.uint8:
        if not np.isfinite(image).all():  # a float TIFF or EXR with NaN or infinite pixels
            raise FerDataError("NaN or infinite pixel values", path)
        image = to_uint8(image)  # as a viewer shows it: 16 bits scaled by 1/257, no contrast stretch
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image


def grayscale(image):
    import cv2

    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def is_face_crop(image):
    """Whether an image is already a FER-style face crop: exactly 48x48 pixels."""
    return tuple(image.shape[:2]) == (IMAGE_SIZE, IMAGE_SIZE)


def face_boxes(image, detect=True, min_size=DEFAULT_MIN_FACE, detector="haar"):
    """The boxes to classify in `image`: the whole image when `detect` is False or the image is
    already a 48x48 face crop, else `detect_faces`'s."""
    return face_boxes_each([image], detect, min_size, detector)[0]


#: MTCNN runs images of one size together up to this many pixels a batch (its first pyramid level
#: of a batch is this many float32 RGB pixels: ~100 MB).
MTCNN_BATCH_PIXELS = 8_000_000


def face_boxes_each(images, detect=True, min_size=DEFAULT_MIN_FACE, detector="haar"):
    """`face_boxes` of each image, in order. MTCNN runs the images of one size as batches (video
    frames, photos from one camera), with the same boxes as one by one: 92 against 414 ms a
    320x320 photo (bench/detectors.py, docs/prediction.md)."""
    found = [None] * len(images)
    searched = []
    for position, image in enumerate(images):
        if not detect or is_face_crop(image):
            found[position] = [(0, 0, int(image.shape[1]), int(image.shape[0]))]
        elif detector != "mtcnn":
            found[position] = detect_faces(image, min_size=min_size, detector=detector)
        else:
            searched.append(position)
    by_shape = {}
    for position in searched:
        by_shape.setdefault(images[position].shape, []).append(position)
    for shape, positions in by_shape.items():
        step = max(1, MTCNN_BATCH_PIXELS // (shape[0] * shape[1]))
        for start in range(0, len(positions), step):
            chunk = positions[start:start + step]
            for position, boxes in zip(chunk, _mtcnn_boxes([images[p] for p in chunk], min_size)):
                found[position] = boxes
    return found


def check_detector(detector):
    """Fail early, before any model loads, for an unknown detector or a missing `mtcnn` package.

    Raises:
        FerOptionError: saying what to choose or install.
    """
    from importlib import metadata

    if detector not in DETECTORS:
        raise FerOptionError(f"detector must be one of {', '.join(DETECTORS)}. Received: detector={detector!r}")
    if detector != "mtcnn":
        return
    versions = {}
    for package in ("mtcnn", "lz4", "joblib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            raise FerOptionError('the mtcnn detector needs the mtcnn package: pip install "keras-fer[mtcnn]"') from None
    if versions["mtcnn"] != MTCNN_VERSION or not versions["joblib"].startswith("1.6."):
        raise FerOptionError(f"the mtcnn detector needs mtcnn {MTCNN_VERSION} and joblib 1.6 (found mtcnn "
                             f"{versions['mtcnn']}, joblib {versions['joblib']}): pip install \"keras-fer[mtcnn]\"")


def detect_faces(image, min_size=DEFAULT_MIN_FACE, scale_factor=1.1, min_neighbors=5, detector="haar"):
    """Find faces.

    Args:
        image: uint8 gray or BGR array.
        min_size: smallest face side in pixels.
        scale_factor, min_neighbors: the cascade's usual settings (OpenCV's tutorial values).
        detector: `"haar"` (OpenCV's frontal-face cascade, the default) or `"mtcnn"` (the
            `mtcnn` package's three-stage CNN, Zhang et al. 2016: turned and tilted faces too;
            needs `pip install "keras-fer[mtcnn]"`). See `DETECTORS`.

    Returns:
        A list of `(x, y, w, h)` int boxes, left to right, then top to bottom.

    Raises:
        FerOptionError: for an unknown detector, or `mtcnn` when the package is missing.
    """
    if detector == "mtcnn":  # mtcnn_detector() checks the packages, once
        return _mtcnn_boxes([image], min_size)[0]
    check_detector(detector)  # an unknown name
    import cv2

    gray = cv2.equalizeHist(grayscale(image))
    boxes = haar_cascade().detectMultiScale(
        gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(int(min_size), int(min_size))
    )
    return _left_to_right([tuple(int(v) for v in box) for box in np.asarray(boxes).reshape(-1, 4)])


def _left_to_right(boxes):
    """Boxes sorted left to right, then top to bottom (the order every detector returns)."""
    return sorted(boxes, key=lambda box: (box[0], box[1]))


# --------------------------------------------------------------------------------------------
# MTCNN

#: Each MTCNN box becomes a square of this many times its longer side, about the same centre, to
#: frame faces as FER2013's crops do: bench/detectors.py measured MTCNN's squared boxes 1/0.95
#: times the FER2013 frame (median of 175 faces found out of 200, `--faces 200 --seed 0`); with
#: 0.95, another draw (`--faces 400 --seed 1`) measured a remaining scale of 1.000.
MTCNN_BOX_SCALE = 0.95


#: The SHA-256 of the weight files of mtcnn 1.0.0 (the pinned release): nothing else is loaded.
MTCNN_WEIGHTS_SHA256 = {
    "pnet.lz4": "ea6b0c3e685ebee3165326ad6484acc95f2ef78f1c94fbf40a55704fa989f7b5",
    "rnet.lz4": "cb00e6460f3c98b0bfafaba3c0a0ded4bdf6e62cee7174d969e8670d7e757fee",
    "onet.lz4": "94f6ea2f4cf985275ee958cdd762d17b6009348a4fb9d8c6be39ba73ffd22ca3",
}
MTCNN_VERSION = "1.0.0"
_WRAPPER_STATE = {"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"}
#: The dtypes a weight file may name: numpy's own integer and float type codes (never a name, which
#: could reach a dtype another package registered), in any byte order.
_NUMERIC_CODES = {f"{order}{kind}{size}" for order in ("", "<", ">", "|", "=")
                  for kind, sizes in (("f", (2, 4, 8)), ("i", (1, 2, 4, 8)), ("u", (1, 2, 4, 8))) for size in sizes}


def _refuse(what):
    import pickle

    raise pickle.UnpicklingError(f"refused {what}: only numeric arrays are loaded")


def _weights_unpickler():
    """joblib's unpickler limited to what the `mtcnn` weight files hold: a list of numeric arrays.

    Globals: only joblib's array wrapper, `numpy.ndarray` (as the wrapper's `subclass`) and
    `numpy.dtype`. Calls: only `numpy.dtype(code, bool, ...)` with a numeric type code, and the
    wrapper's empty constructor. State (BUILD): on a dtype this file made, only the plain state
    numpy writes for a numeric dtype; on a wrapper, only its own fields with such a dtype (made
    afresh from its type string). Every other way pickle has of making or changing an object is
    refused. (Two reviews found five ways past earlier versions: tests/test_faces.py.)
    """
    import pickle

    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    allowed = {("joblib.numpy_pickle", "NumpyArrayWrapper"), ("numpy", "ndarray"), ("numpy", "dtype")}

    class ArraysOnly(NumpyUnpickler):
        dispatch = NumpyUnpickler.dispatch.copy()

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.made_dtypes, self.kept = set(), []

        def find_class(self, module, name):
            if (module, name) not in allowed:
                _refuse(f"global {module}.{name}")
            return super().find_class(module, name)

        def load_reduce(self):
            function, arguments = self.stack[-2], self.stack[-1]
            if (function is not np.dtype or type(arguments) is not tuple or not arguments
                    or type(arguments[0]) is not str or arguments[0] not in _NUMERIC_CODES
                    or not all(type(flag) is bool for flag in arguments[1:])):
                _refuse(f"call of {getattr(function, '__name__', type(function).__name__)}")
            pickle._Unpickler.load_reduce(self)
            self.made_dtypes.add(id(self.stack[-1]))
            self.kept.append(self.stack[-1])  # alive while loading, so its id is not reused

        def load_newobj(self):
            if self.stack[-2] is not NumpyArrayWrapper or self.stack[-1] != ():
                _refuse("object construction")
            pickle._Unpickler.load_newobj(self)

        def load_build(self):
            state, target = self.stack[-1], self.stack[-2]
            if isinstance(target, np.dtype):  # numpy's own dtype pickles carry a state: only the plain one
                if (id(target) not in self.made_dtypes or type(state) is not tuple or len(state) != 8
                        or state[0] != 3 or state[1] not in ("<", ">", "|", "=")
                        or state[2:] != (None, None, None, -1, -1, 0)):
                    _refuse("dtype state")
                pickle._Unpickler.load_build(self)
                return
            if type(target) is not NumpyArrayWrapper or not isinstance(state, dict) or not set(state) <= _WRAPPER_STATE:
                _refuse("object state")
            dtype = state.get("dtype")
            if state.get("subclass") is not np.ndarray or not isinstance(dtype, np.dtype) or dtype.kind not in "fiu":
                _refuse(f"array of dtype {dtype!r}")
            state["dtype"] = np.dtype(dtype.str)  # a fresh dtype: no state carried over
            NumpyUnpickler.load_build(self)

        def refused(self):
            _refuse("opcode")

        dispatch[pickle.REDUCE[0]] = load_reduce
        dispatch[pickle.NEWOBJ[0]] = load_newobj
        dispatch[pickle.BUILD[0]] = load_build
        for opcode in (pickle.INST, pickle.OBJ, pickle.NEWOBJ_EX, pickle.PERSID, pickle.BINPERSID,
                       pickle.EXT1, pickle.EXT2, pickle.EXT4):
            dispatch[opcode[0]] = refused

    return ArraysOnly


def _read_arrays(path):
    """The list of numeric arrays in a joblib `.lz4` file, read by `_weights_unpickler`.

    Raises:
        FerModelError: naming the file, when it cannot be read or holds anything else.
    """
    import lz4.frame

    try:
        with lz4.frame.open(path, "rb") as stream:
            weights = _weights_unpickler()(str(path), stream, ensure_native_byte_order=True).load()
    except Exception as error:  # corrupt, truncated or refused: one clear line
        raise FerModelError(f"{path}: not an MTCNN weight file of plain arrays ({error})") from None
    if not isinstance(weights, list) or not all(
        type(array) is np.ndarray and array.dtype.kind in "fiu" for array in weights
    ):
        raise FerModelError(f"{path}: not an MTCNN weight file of plain arrays (got {type(weights).__name__})")
    return weights


def load_mtcnn_weights(path):
    """The arrays of one of mtcnn 1.0.0's weight files (`pnet.lz4`, `rnet.lz4`, `onet.lz4`).

    The package loads them with `joblib.load`, which is pickle and could run any code. Here the
    file must have the SHA-256 of that release's file of the same name, and is then read by a
    joblib reader that makes nothing but numeric arrays (`_read_arrays`).

    Raises:
        FerModelError: naming the file, when it is not one of those files.
    """
    from keras_fer.files import file_sha256

    path = Path(path)
    expected = MTCNN_WEIGHTS_SHA256.get(path.name)
    if expected is None:
        raise FerModelError(f"{path}: not an mtcnn {MTCNN_VERSION} weight file ({', '.join(MTCNN_WEIGHTS_SHA256)})")
    try:
        digest = file_sha256(path)
    except OSError as error:
        raise FerModelError(f"{path}: cannot read it ({error.strerror or error})") from None
    if digest != expected:
        raise FerModelError(f"{path}: not mtcnn {MTCNN_VERSION}'s {path.name} (its SHA-256 differs): "
                            f"reinstall it, pip install mtcnn=={MTCNN_VERSION}")
    return _read_arrays(path)


_MTCNN_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def mtcnn_detector():
    """The `mtcnn` package's detector (all three stages), built once, its weights loaded by
    `load_mtcnn_weights` instead of the package's own `joblib.load`."""
    from importlib import resources
    from unittest import mock

    from keras_fer.loading import import_keras, quiet_native_stderr

    check_detector("mtcnn")
    import_keras()  # TensorFlow's native start-up lines silenced, as for the model
    with quiet_native_stderr():  # and the second copy the mtcnn package's import prints
        import mtcnn
        from mtcnn.stages import stage_onet, stage_pnet, stage_rnet

    folder = resources.files("mtcnn.assets.weights")

    def weights(name):
        return load_mtcnn_weights(folder / name)

    # The stages call the `load_weights` their modules imported; it is swapped while they are built.
    with _MTCNN_LOCK, mock.patch.object(stage_pnet, "load_weights", weights), mock.patch.object(
        stage_rnet, "load_weights", weights
    ), mock.patch.object(stage_onet, "load_weights", weights):
        return mtcnn.MTCNN(stages="face_and_landmarks_detection")


def iou(first, second):
    """Intersection over union of two `(x, y, w, h)` boxes (0 for disjoint ones)."""
    ax, ay, aw, ah = first
    bx, by, bw, bh = second
    inter = max(0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - inter
    return inter / float(union) if union > 0 else 0.0


def square_box(x, y, w, h, scale, width, height):
    """A square of side `scale * max(w, h)` about the centre of box `(x, y, w, h)`, moved (or, if
    larger than the image, shrunk) to lie inside a `width` x `height` image, as int `(x, y, side,
    side)`: a crop is never stretched out of square nor cut off at an image edge."""
    side = int(round(min(scale * max(w, h), width, height)))
    left = int(round(x + w / 2 - side / 2))
    top = int(round(y + h / 2 - side / 2))
    left, top = min(max(left, 0), width - side), min(max(top, 0), height - side)
    return left, top, side, side


def _mtcnn_boxes(images, min_size):
    """MTCNN's boxes of each of `images` (all of one size, run as one batch), as `square_box`es
    scaled by `MTCNN_BOX_SCALE`, those of side `min_size` or more, left to right."""
    import cv2

    rgb = [cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
           for image in images]
    # The package's own min_face_size fails inside TensorFlow for some values (30 on a 320x400
    # photo: "Incompatible shapes"), so it keeps its default (faces from 20 px) and small faces
    # are dropped here. Its boxes are taken unclipped (fit_to_image=False): clipping first would
    # make an edge face's square off-centre. A list in gives one list of faces per image.
    found = mtcnn_detector().detect_faces(rgb, fit_to_image=False)
    height, width = images[0].shape[:2]
    result = []
    for faces_of_image in found:
        boxes = [square_box(*(float(v) for v in face["box"]), MTCNN_BOX_SCALE, width, height)
                 for face in faces_of_image]
        result.append(_left_to_right([box for box in boxes if box[2] >= max(int(min_size), 2)]))
    return result


def crop_faces(image, boxes):
    """The faces in `boxes` as FER input: uint8 `(n, 48, 48, 1)` grayscale crops."""
    gray = grayscale(image)
    crops = [to_face(gray[y:y + h, x:x + w]) for x, y, w, h in boxes]
    return np.stack(crops) if crops else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 1), np.uint8)


def annotate(image, boxes, captions):
    """A BGR copy of `image` with each box drawn and captioned (small images are enlarged first)."""
    import cv2

    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    scale = max(1, int(np.ceil(192 / max(canvas.shape[:2]))))
    if scale > 1:
        canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    font_scale = max(0.4, max(canvas.shape[:2]) / 1000)
    for (x, y, w, h), caption in zip(boxes, captions):
        x, y, w, h = (v * scale for v in (x, y, w, h))
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), (0, 255, 0), thickness)
        (text_w, text_h), baseline = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = y - text_h - baseline - 2 if y - text_h - baseline - 2 >= 0 else y + 1
        cv2.rectangle(canvas, (x, top), (x + text_w + 2, top + text_h + baseline + 2), (0, 255, 0), -1)
        cv2.putText(canvas, caption, (x + 1, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return canvas


def write_image(path, image):
    """Write an image with OpenCV (format from the suffix), creating the folder. Written
    atomically: an interrupted write leaves any earlier file at `path` as it was."""
    import cv2

    path = Path(path)
    suffix = path.suffix.lower() or ".png"
    if suffix == ".pgm" and image.ndim == 3:  # a grey-only format: the coloured boxes become grey
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    try:
        ok, encoded = cv2.imencode(suffix, image)
    except cv2.error as error:
        ok, encoded = False, str(error).strip().splitlines()[-1]
    if not ok:
        raise FerDataError(f"cannot encode the annotated image as {suffix}" + (
            f" ({encoded})" if isinstance(encoded, str) else ""), path)
    with atomic_path(path) as temporary:
        encoded.tofile(str(temporary))


def list_images(folder, suffixes=IMAGE_EXTENSIONS):
    """Image files in `folder` and its sub-folders, sorted, as paths relative to `folder`
    (`suffixes`: which files count, e.g. `data.OTHER_IMAGE_SUFFIXES` for those not read)."""
    folder = Path(folder)
    found = []
    for root, name in walk_files(folder):  # linked sub-folders too, as data.read_folder reads them
        path = root / name
        if path.suffix.lower() in suffixes and path.is_file():
            found.append(check_name(path, path.relative_to(folder)).relative_to(folder))  # the id part
    return sorted(found)
