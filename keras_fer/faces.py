"""Faces in photos: OpenCV Haar-cascade detection, cropping to 48x48 grayscale, annotation.

A photo is any image that is not already a FER-style crop. Images of exactly 48x48 pixels
(grayscale or colour) count as crops: they are classified whole, without detection, because
the cascade cannot find a face that fills the whole frame (its 24x24 detector needs a margin).

Example:
>>> image = read_photo("party.jpg")  # doctest: +SKIP
>>> boxes = detect_faces(image)  # doctest: +SKIP
>>> crops = crop_faces(image, boxes)  # (n, 48, 48, 1) uint8, ready for a model  # doctest: +SKIP
"""

import functools
from pathlib import Path

import numpy as np

from keras_fer.classes import IMAGE_SIZE
from keras_fer.data import IMAGE_EXTENSIONS, to_face
from keras_fer.errors import FerDataError, FerModelError
from keras_fer.files import atomic_path

CASCADE_FILE = "haarcascade_frontalface_default.xml"
DEFAULT_MIN_FACE = 30


@functools.lru_cache(maxsize=1)
def detector():
    """OpenCV's frontal-face Haar cascade (loaded once)."""
    import cv2

    path = cv2.data.haarcascades + CASCADE_FILE
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FerModelError(f"{path}: OpenCV could not load its face detector (reinstall opencv-python-headless)")
    return cascade


def read_photo(path):
    """Read an image file as uint8 gray `(H, W)` or BGR `(H, W, 3)` (alpha and 16 bits dropped)."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise FerDataError("no such file", path)
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data is not None and data.size else None
    if image is None:
        raise FerDataError("unreadable image (corrupt or not an image)", path)
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
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


def detect_faces(image, min_size=DEFAULT_MIN_FACE, scale_factor=1.1, min_neighbors=5):
    """Find frontal faces.

    Args:
        image: uint8 gray or BGR array.
        min_size: smallest face side in pixels.
        scale_factor, min_neighbors: the cascade's usual settings (OpenCV's tutorial values).

    Returns:
        A list of `(x, y, w, h)` int boxes, left to right, then top to bottom.
    """
    import cv2

    gray = cv2.equalizeHist(grayscale(image))
    boxes = detector().detectMultiScale(
        gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(int(min_size), int(min_size))
    )
    boxes = [tuple(int(v) for v in box) for box in np.asarray(boxes).reshape(-1, 4)]
    return sorted(boxes, key=lambda box: (box[0], box[1]))


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
    ok, encoded = cv2.imencode(path.suffix if path.suffix else ".png", image)
    if not ok:
        raise FerDataError("cannot encode the annotated image", path)
    with atomic_path(path) as temporary:
        encoded.tofile(str(temporary))


def list_images(folder):
    """Image files in `folder` and its sub-folders, sorted, as paths relative to `folder`."""
    folder = Path(folder)
    return sorted(
        path.relative_to(folder)
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
