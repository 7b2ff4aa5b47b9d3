"""The figures of a training run, and the one-page HTML report that holds them all.

A run directory (written by `keras_fer.training`) holds `best.keras`, `config.json`,
`history.csv`, `validation.npz` and `summary.txt`; `read_run` reads it. The figure recipes here
join the data, the model, `keras_fer.explain` and `keras_fer.plots`; the `fer-visualize`
command and `build_report` both use them.

`build_report(run_dir)` writes one self-contained HTML file: every image is embedded as a
base64 PNG `data:` URI, the style sheet is inline, nothing is fetched, so it opens from disk in
any browser and can be mailed as one file. The sections follow the reports' order: architecture,
training history, confusion matrix (with the most confused pairs), calibration, class distribution,
per-class saliency, Grad-CAM, filters of the first and last conv layers, activation maps,
augmentations, configuration.

Example:
>>> from keras_fer.report import build_report
>>> build_report("runs/cnn4")  # doctest: +SKIP
PosixPath('runs/cnn4/report.html')
"""

import base64
import dataclasses
import datetime
import html
import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from keras_fer import plots
from keras_fer.classes import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES
from keras_fer.errors import FerDataError, FerModelError, FerOptionError, short_list
from keras_fer.files import read_json_object, write_text
from keras_fer.loading import one_line, run_options

#: Demo faces generated when neither the run nor the user names data.
DEMO_FACES = 700
#: A per-class example is "confident" at this probability (report 002).
MIN_CONFIDENCE = 0.9
#: Images scanned at most when looking for per-class examples.
SCAN_LIMIT = 5000


# --------------------------------------------------------------------------------------------
# Runs, models and data


@dataclasses.dataclass
class Run:
    """A training run directory.

    Attributes:
        path: the folder.
        config: `config.json` as a dict (empty if the file is missing).
    """

    path: Path
    config: dict

    @property
    def model_path(self):
        return self.path / "best.keras"

    def history(self):
        """`history.csv` as a dict of columns (lists of numbers, one per epoch), or None if there
        is none. Read by `training.read_history`: a malformed file is a FerDataError naming its
        line and column."""
        from keras_fer.training import read_history

        file = self.path / "history.csv"
        if not file.is_file():
            return None
        rows = read_history(file)
        return {name: [row[name] for row in rows] for name in rows[0]}

    def validation(self):
        """`(labels, probabilities, ids or None)` from `validation.npz`, or None if missing.

        Raises:
            FerDataError: naming the file and the array, when the file is not a complete npz
                (truncated, a bad checksum) or its arrays are not `labels` (N integers 0-6),
                `probabilities` (N rows of 7 finite non-negative numbers summing to 1) and
                optionally `ids` (N of them).
        """
        file = self.path / "validation.npz"
        if not file.is_file():
            return None
        arrays, field = {}, None
        try:
            with np.load(file, allow_pickle=False) as saved:
                for field in ("labels", "probabilities", "ids"):
                    if field in saved.files:
                        arrays[field] = np.asarray(saved[field])
        except (ValueError, OSError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error) as error:
            # A truncated file or a flipped byte ("Bad CRC-32") was a zipfile or zlib traceback.
            raise FerDataError(f"unreadable validation file, not a complete .npz ({one_line(error)})", file,
                               field=field) from None
        return _checked_validation(file, arrays.get("labels"), arrays.get("probabilities"), arrays.get("ids"))

    def summary(self):
        """`summary.txt`, or None.

        Raises:
            FerDataError: naming the file, when it cannot be read as UTF-8 text.
        """
        file = self.path / "summary.txt"
        if not file.is_file():
            return None
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise FerDataError(f"unreadable model summary ({one_line(error)})", file) from None

    @property
    def demo_faces(self):
        """How many demo faces the run trained on (when it had no data)."""
        options = run_options(self.config, self.path / "config.json")
        return int(options.get("demo_faces") or self.config.get("demo_faces") or DEMO_FACES)

    @property
    def seed(self):
        return int(self.config.get("seed") or 0)


def _checked_validation(file, labels, probabilities, ids):
    """`(labels, probabilities, ids)` of `validation.npz` if they are what training writes, else
    a FerDataError naming `file` and the array (a (20, 3) or all-NaN probabilities array gave
    a made-up accuracy, labels of 9 a scikit-learn traceback)."""
    for name, array in (("labels", labels), ("probabilities", probabilities)):
        if array is None:
            raise FerDataError("no such array (training writes labels, probabilities and ids)", file,
                               field=name)
    if labels.ndim != 1 or not len(labels):
        raise FerDataError(f"expected a non-empty list of class numbers. Received: shape {labels.shape}", file,
                           field="labels")
    if labels.dtype.kind not in "iu":
        raise FerDataError(f"expected integers 0-{NUM_CLASSES - 1}. Received: dtype {labels.dtype}", file,
                           field="labels")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        bad = labels[(labels < 0) | (labels >= NUM_CLASSES)][0]
        raise FerDataError(f"expected integers 0-{NUM_CLASSES - 1}. Received: {bad}", file, field="labels")
    if probabilities.shape != (len(labels), NUM_CLASSES):
        raise FerDataError(f"expected shape ({len(labels)}, {NUM_CLASSES}), one row per label and a column per "
                           f"class. Received: shape {probabilities.shape}", file, field="probabilities")
    if probabilities.dtype.kind not in "fiu":
        raise FerDataError(f"expected numbers. Received: dtype {probabilities.dtype}", file, field="probabilities")
    probabilities = probabilities.astype(np.float64)
    bad_rows = ~np.isfinite(probabilities).all(axis=1) | (probabilities < 0).any(axis=1)
    bad_rows |= np.abs(probabilities.sum(axis=1) - 1) > 0.01
    if bad_rows.any():
        row = int(np.flatnonzero(bad_rows)[0])
        values = ", ".join(f"{value:.3g}" for value in probabilities[row])
        raise FerDataError(f"expected probabilities (finite, non-negative, summing to 1). Received: row {row + 1} "
                           f"[{values}]", file, field="probabilities")
    if ids is not None and (ids.shape != labels.shape or ids.dtype.kind not in "USiu"):
        raise FerDataError(f"expected {len(labels)} ids, one per label. Received: shape {ids.shape}, dtype "
                           f"{ids.dtype}", file, field="ids")
    return labels.astype(np.int64), probabilities, None if ids is None else ids.astype(str)


def read_run(path):
    """Read a run directory.

    Raises:
        FerOptionError: if `path` is not a folder; FerDataError: for a malformed config.json.
    """
    path = Path(path)
    if not path.is_dir():
        raise FerOptionError(f"{path}: not a run directory (a folder written by train.py --out)")
    file = path / "config.json"
    return Run(path, read_json_object(file) if file.is_file() else {})


def load_model(path, raw_faces=True):
    """Load a model for the figures (`loading.load_keras_model`: a `.keras` file or run
    directory, `safe_mode=True`, uncompiled) and check that it takes raw 48x48x1 faces and
    outputs the 7 classes, as the explanations need.

    Args:
        path: the model file or run directory.
        raw_faces: False to skip the input and output checks, for a figure that runs no
            forward pass (the first layer's kernels).

    Raises:
        FerModelError: for a missing file, a file that is not a Keras model, or (with
            `raw_faces`) a model whose input is not 48x48x1 or that does not have 7 outputs.
    """
    from keras_fer.loading import load_keras_model

    model = load_keras_model(path)
    model.fer_temperature = _recorded_temperature(path)  # the figures' probabilities are predict.py's
    if not raw_faces:
        return model
    shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if shape != IMAGE_SHAPE:
        raise FerModelError(f"{path}: the model takes {model.input_shape}, not raw faces (None, 48, 48, 1): "
                            "train.py's models do; build one with build_model(name, preprocessing={'normalize': "
                            "'unit'}) to take them")
    if model.output_shape[-1] != NUM_CLASSES:
        raise FerModelError(f"{path}: the model has {model.output_shape[-1]} outputs, not {NUM_CLASSES} classes")
    return model


def _recorded_temperature(path):
    """The temperature in the config.json beside the model (`keras_fer.calibrate`), else 1.0."""
    from keras_fer.loading import model_temperature, resolve_model

    return model_temperature(resolve_model(path))


def class_probabilities(model, images):
    """`explain.probabilities` with the model's recorded temperature (`load_model` notes it), so
    the figures' probabilities are those `predict.py` gives."""
    from keras_fer import explain

    return explain.probabilities(model, images, temperature=getattr(model, "fer_temperature", 1.0))


@dataclasses.dataclass
class Faces:
    """The images a figure draws from.

    Attributes:
        images: `keras_fer.data.Images`.
        masks: demo faces' expression regions `(N, 48, 48)`, or None for real data.
        description: where they came from, for titles and messages.
        note: set when nothing named the images and they are the built-in demo faces.
    """

    images: object
    masks: np.ndarray = None
    description: str = ""
    note: str = None


def load_faces(data=None, run=None, demo_faces=DEMO_FACES, seed=0):
    """The images to explain: `data` (a path) if given, else the run's own data (`config.json`
    "data"), else `FER_DATA` when there is no run, else demo faces (the run's own when it
    trained on them)."""
    from keras_fer import data as data_module
    from keras_fer.synthetic import generate

    if data is None and run is not None:
        data = run.config.get("data")
        if data is None:
            demo = generate(run.demo_faces, seed=run.seed)
            return Faces(demo.images, demo.masks, f"{run.demo_faces} demo faces (seed {run.seed})")
        config = run.path / "config.json"
        if not isinstance(data, str) or not data:
            raise FerDataError(f"expected the path of the run's data. Received: data={one_line(repr(data))}", config,
                               field="data")
        if not Path(data).exists():  # moved since training: it said only "/old/x.csv: no such file or folder"
            raise FerDataError(f"{data}: no such file or folder (the run's data, moved or deleted since training?): "
                               "pass --data PATH", config, field="data")
    path = data_module.existing_data_path(data, "train")
    if path is None:
        demo = generate(demo_faces, seed=seed)
        return Faces(demo.images, demo.masks, f"{demo_faces} demo faces (seed {seed})",
                     note="no --data and no $FER_DATA: using the built-in synthetic demo faces (cartoons, not "
                     "FER2013)")
    images = data_module.read(path)
    return Faces(images, None, str(path))


@dataclasses.dataclass
class Picked:
    """One image chosen for a figure: pixels `(48, 48, 1)`, true label or None, a name, and a
    note on how it was made from a photo (None for an image of the data)."""

    pixels: np.ndarray
    label: int = None
    name: str = ""
    mask: np.ndarray = None
    note: str = None


def _photo_pick(path, detector="haar"):
    from keras_fer import faces as face_tools
    from keras_fer.data import to_face

    image = face_tools.read_photo(path)
    if not face_tools.is_face_crop(image):
        boxes = face_tools.detect_faces(image, detector=detector)
        if boxes:
            x, y, w, h = max(boxes, key=lambda box: box[2] * box[3])
            crop = face_tools.crop_faces(image, [(x, y, w, h)])[0]
            found = f"{len(boxes)} faces found, the largest" if len(boxes) > 1 else "face found"
            return Picked(crop, None, path.stem, note=f"{path.name}: {found} at x={x}, y={y}, {w}x{h} px")
        return Picked(to_face(image), None, path.stem,
                      note=f"{path.name}: no face found; the whole image is explained, resized to 48x48")
    return Picked(to_face(image), None, path.stem)


def _looks_like_a_file(spec):
    path = Path(spec) if isinstance(spec, (str, os.PathLike)) else None
    return path is not None and (bool(path.suffix.strip(".")) or os.sep in str(spec) or "/" in str(spec))


def image_file(spec):
    """The image file an `--image` spec names, or None when it can only be an id or row number of
    the data. Reads no data, so `visualize.py` checks `--image` before TensorFlow's import.

    Raises:
        FerOptionError: for a file that is no supported image, or a photo's path that names
            nothing (it loaded the data and said "--image must be an id ... of 700 demo faces").
    """
    from keras_fer.data import IMAGE_EXTENSIONS, OTHER_IMAGE_SUFFIXES, check_name, is_image_file

    if not _looks_like_a_file(spec):
        return None
    path = Path(spec)
    if path.is_file():
        if is_image_file(path):
            return check_name(path)  # its name titles the figure
        if path.suffix:  # a GIF, say: it was looked up as an id ("no image with id 'anim.gif'")
            raise FerOptionError(f"{spec}: not a supported image (use {', '.join(IMAGE_EXTENSIONS)}). "
                                 f"Received: image={spec!r}")
    if is_image_file(path) or path.suffix.lower() in OTHER_IMAGE_SUFFIXES:
        raise FerOptionError(f"{spec}: no such file. Received: image={spec!r}")
    return None


def select_image(faces, spec, detector="haar"):
    """The image `spec` names: the path of an existing image file, or else an id (or row number)
    of `faces`. Ids are never turned into paths, so an id cannot reach outside the data. In a
    photo (any image but a 48x48 crop) the largest face is found as `predict.py` finds faces (by
    `detector`, `"haar"` or `"mtcnn"`), and explained; without one, the whole image is.

    Args:
        faces: a `Faces`, or a function returning one: called only when `spec` is no image
            file, so a photo is explained without reading any data.
        spec: an image file path, an id or a row number.
        detector: the face detector for photos.

    Raises:
        FerOptionError: when `spec` is neither an image file nor an id of the data.
    """
    from keras_fer.data import id_key

    photo = image_file(spec)
    if photo is not None:
        return _photo_pick(photo, detector)
    path = Path(spec) if isinstance(spec, (str, os.PathLike)) else None
    looks_like_a_file = _looks_like_a_file(spec)
    faces = faces() if callable(faces) else faces
    try:
        index = faces.images.index_of(spec)
    except FerDataError as error:
        if looks_like_a_file and not path.exists():  # a path, not an id ("angry/00012" is both)
            raise FerOptionError(f"{spec}: no such file, nor an id or row number of {faces.description}. "
                                 f"Received: image={spec!r}") from None
        raise FerOptionError(
            f"--image must be an id or row number of {faces.description} or an existing image file "
            f"({error}). Received: image={spec!r}"
        ) from None
    picked = pick_row(faces, index)
    shared = np.flatnonzero(faces.images.ids == faces.images.ids[index])
    named = picked.name in (str(spec), id_key(str(spec)))  # by its id, not by a row number
    if named and len(shared) > 1:  # e.g. happy/0.png and happy/0.jpg in a labelled folder, or a CSV's repeated id
        rows = short_list(shared, 5)
        picked.note = f"{len(shared)} images have the id {picked.name!r} (rows {rows}): this is row {index}, the first"
    return picked


def pick_row(faces, index):
    """Row `index` of `faces` as a `Picked` (its id for a name)."""
    images = faces.images
    label = None if images.labels is None else int(images.labels[index])
    mask = None if faces.masks is None else faces.masks[index]
    return Picked(images.pixels[index], label, str(images.ids[index]), mask)


@dataclasses.dataclass
class Example:
    """A correctly predicted image chosen for its class."""

    label: int
    index: int
    probability: float
    confident: bool


def confident_examples(model, images, labels, min_confidence=MIN_CONFIDENCE, limit=SCAN_LIMIT, chunk=256):
    """One correctly predicted image per class, predicted with at least `min_confidence`
    (report 002), or else the most confident correct one (`confident=False`). Classes with no
    correct prediction are left out. Scans at most `limit` images, stopping early once every
    class has a confident example.

    Returns:
        A list of `Example`, in class order.
    """

    if labels is None:
        raise FerDataError("per-class examples need labelled data")
    labels = np.asarray(labels, dtype=np.int64)
    count = len(images) if limit is None else min(len(images), int(limit))
    best = {}
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        probabilities = class_probabilities(model, np.asarray(images[start:stop], np.float32))
        predicted = probabilities.argmax(axis=1)
        for offset in np.flatnonzero(predicted == labels[start:stop]):
            label = int(labels[start + offset])
            probability = float(probabilities[offset, label])
            if label not in best or (best[label][1] < min_confidence and probability > best[label][1]):
                best[label] = (start + offset, probability)
        if len(best) == NUM_CLASSES and all(p >= min_confidence for _, p in best.values()):
            break
    return [Example(label, int(best[label][0]), best[label][1], best[label][1] >= min_confidence)
            for label in sorted(best)]


def per_class_note(examples, min_confidence=MIN_CONFIDENCE):
    """A sentence naming the classes that fell back or had no correct example, or ''."""
    notes = []
    missing = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if c not in {e.label for e in examples}]
    fallback = [f"{CLASS_NAMES[e.label]} ({e.probability:.2f})" for e in examples if not e.confident]
    if fallback:
        notes.append(f"no correct prediction reached {min_confidence:.0%} for {', '.join(fallback)}: "
                     "the most confident correct image is shown instead")
    if missing:
        notes.append(f"no correct prediction at all for {', '.join(missing)}: left out")
    return "; ".join(notes)


# --------------------------------------------------------------------------------------------
# Figure recipes


EXPLANATIONS = {"saliency": "Saliency", "smoothgrad": "SmoothGrad", "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++",
                "layercam": "LayerCAM", "scorecam": "Score-CAM", "occlusion": "Occlusion"}
#: The methods drawn as heatmaps of a conv layer (the others mark pixels).
CAM_METHODS = ("gradcam", "gradcam++", "layercam", "scorecam")


#: The options each method's function in `keras_fer.explain` takes from `explain_maps`.
METHOD_OPTIONS = {"smoothgrad": ("samples", "noise", "seed"), "scorecam": ("max_channels",),
                  "occlusion": ("patch", "stride")}


def explain_maps(model, pixels, method, class_index=None, layer=None, **options):
    """Maps `(N, 48, 48)` in [0, 1] by `method` (one of `EXPLANATIONS`).

    `options` go to the method's function in `keras_fer.explain` (`METHOD_OPTIONS`); those not
    given keep that function's defaults, and those another method takes are ignored.
    """
    from keras_fer import explain

    known = {name for names in METHOD_OPTIONS.values() for name in names}
    unknown = sorted(set(options) - known)
    if unknown:
        takes = ", ".join(f"{'/'.join(names)} ({name})" for name, names in METHOD_OPTIONS.items())
        raise FerOptionError(f"unknown option {unknown[0]!r}: the methods take {takes}. "
                             f"Received: {unknown[0]}={options[unknown[0]]!r}")
    pixels = np.asarray(pixels, np.float32)
    given = {name: options[name] for name in METHOD_OPTIONS.get(method, ()) if name in options}
    if method == "saliency":
        return explain.saliency(model, pixels, class_index)
    if method == "smoothgrad":
        return explain.smoothgrad(model, pixels, class_index, **given)
    if method in ("gradcam", "gradcam++"):
        return explain.grad_cam(model, pixels, layer=layer, class_index=class_index, plus_plus=method == "gradcam++")
    if method == "layercam":
        return explain.layer_cam(model, pixels, layer=layer, class_index=class_index)
    if method == "scorecam":
        return explain.score_cam(model, pixels, layer=layer, class_index=class_index, **given)
    if method == "occlusion":
        return explain.occlusion(model, pixels, class_index, **given)
    raise FerOptionError(f"method must be one of {', '.join(EXPLANATIONS)}. Received: method={method!r}")


def row_title(name, label, probabilities, class_index):
    """'00042: true Happy, predicted Happy 0.97' (and 'map of Sad' when a class is forced)."""
    predicted = int(np.argmax(probabilities))
    parts = [f"{name}"]
    if label is not None:
        parts.append(f"true {CLASS_NAMES[label]}")
    parts.append(f"pred {CLASS_NAMES[predicted]} {probabilities[predicted]:.2f}")
    if class_index is not None and class_index != predicted:
        parts.append(f"map of {CLASS_NAMES[class_index]} ({probabilities[class_index]:.2f})")
    return "\n".join(parts)


def explanation_figure(model, picks, method="saliency", class_index=None, layer=None, notes=None, **options):
    """The original / map / marked-original rows for `picks` (a list of `Picked`).

    Args:
        notes: a list to which what a reader should know is appended (a CAM that is zero
            everywhere), or None.
    """
    from keras_fer import explain

    pixels = np.stack([p.pixels for p in picks]).astype(np.float32)
    probabilities = class_probabilities(model, pixels)
    maps = explain_maps(model, pixels, method, class_index, layer, **options)
    titles = [row_title(p.name, p.label, probabilities[i], class_index) for i, p in enumerate(picks)]
    label = EXPLANATIONS[method]
    if method in CAM_METHODS:
        chosen = explain.cam_layer(model, layer, rectified=method != "gradcam")
        height, width = chosen.output.shape[1:3]  # the map's own resolution, upsampled to 48x48
        empty = [i for i in range(len(picks)) if not np.asarray(maps[i]).max() > 0]
        for i in empty:  # drawn as a blank map, it looked like a broken tool or model
            titles[i] += "\nmap zero everywhere"
        if empty and notes is not None:
            names = short_list([picks[i].name for i in empty], 5)
            notes.append(f"{label} at {chosen.name} is zero everywhere for {len(empty)} of {len(picks)} faces "
                         f"({names}): no position of that layer has positive evidence for the class; "
                         f"layercam, or an earlier --layer, shows where the evidence is")
        return plots.heatmap_figure(pixels, maps, titles, method=f"{label} ({chosen.name}, {height}x{width})")
    if method == "occlusion":
        patch = options.get("patch", explain.OCCLUSION_PATCH)
        stride = options.get("stride", explain.OCCLUSION_STRIDE)
        return plots.heatmap_figure(pixels, maps, titles,
                                    method=f"{label} ({patch}x{patch} grey square, stride {stride})")
    return plots.saliency_figure(pixels, maps, titles, method=label)


def validation_indices(run, faces):
    """Positions in `faces` of the run's validation images (ids in validation.npz), or None when
    the run has no such file or the data does not hold those ids."""
    saved = run.validation() if run is not None else None
    if saved is None or saved[2] is None:
        return None
    found = np.flatnonzero(np.isin(faces.images.ids.astype(str), saved[2]))
    return found if len(found) else None


def split_validation_indices(faces, config, config_path=None):
    """Positions in `faces` of the validation rows of the split a model's `config.json` records
    (its `val` and split seed), rebuilt by `data.split` as training made it, when `faces` are
    the data it was split from: the fingerprint recorded in the config (or, without one, the
    number of rows) must match. The packaged model has a config but no validation.npz.

    Returns:
        `(indices, None)`, or `(None, why)` when the split cannot be rebuilt on `faces`.
    """
    from keras_fer import data as data_module
    from keras_fer.errors import FerError
    from keras_fer.loading import ModelSource, validation_split

    if not config:
        return None, "the model has no config.json recording its validation split"
    recorded = validation_split([ModelSource(None, config, config_path)], ["model"], "")
    if recorded is None or recorded[0] in (None, "none"):
        return None, f"{config_path or 'config.json'} records no validation split"
    val, seed = recorded
    images = faces.images
    if not images.labelled:
        return None, f"{faces.description} has no labels to split"
    fingerprint = config.get("data_fingerprint")
    counts = [config.get(key) for key in ("train_images", "val_images")]
    options = run_options(config, config_path)
    if fingerprint is not None:
        if str(fingerprint) != images.fingerprint():
            return None, (f"{faces.description} is not the data the model was trained on (fingerprint "
                          f"{images.fingerprint()}; {config_path or 'config.json'} records {fingerprint})")
    elif all(isinstance(count, int) for count in counts) and not options.get("max_images"):
        if sum(counts) != len(images):
            return None, f"{faces.description} has {len(images)} images; the model's data had {sum(counts)}"
    else:
        return None, f"{config_path or 'config.json'} records neither the data's fingerprint nor its size"
    numbered = data_module.Images(images.pixels, images.labels, np.arange(len(images)), images.usage,
                                  images.source)  # the split's ids are then positions
    try:
        _, validation = data_module.split(numbered, val, seed=seed)
    except FerError as error:
        return None, f"its validation split {val} cannot be made on {faces.description} ({one_line(error)})"
    recorded_count = config.get("val_images")
    if isinstance(recorded_count, int) and recorded_count != len(validation):
        return None, (f"the validation split {val} made again has {len(validation)} images; "
                      f"{config_path or 'config.json'} records {recorded_count}")
    return np.sort(validation.ids.astype(np.int64)), None


def held_out_rows(faces, run=None, config=None, config_path=None, own_data=True):
    """`(indices, note)`: the positions in `faces` of the images the model was validated on, not
    trained on, for the per-class pictures: the ids in the run's validation.npz (when `faces`
    are the run's `own_data`), else the split its config.json records rebuilt on `faces`
    (`split_validation_indices`). When neither is known, `(None, note)`, the note saying the
    images may include training images, and why (None when `faces` are demo faces and the
    model trained on a file, or the other way round: it has seen none of them).

    Args:
        config, config_path: the model's config.json and its path (default the run's).

    Raises:
        FerDataError: for a damaged validation.npz of the run.
    """
    if run is not None:
        config = run.config if config is None else config
        config_path = run.path / "config.json" if config_path is None else config_path
        recorded = (config or {}).get("data_fingerprint")
        # The run's data file changed since training: validation.npz's ids now name other rows
        if own_data and (recorded is None or str(recorded) == faces.images.fingerprint()):
            found = validation_indices(run, faces)
            if found is not None:
                return found, None
    found, why = split_validation_indices(faces, config, config_path)
    if found is not None:
        return found, None
    if config and "data" in config and (faces.masks is not None) != (config["data"] is None):
        return None, None  # demo faces and a model trained on a file, or the other way round: none seen
    return None, (f"which of these images the model was validated on is unknown ({why}): where they overlap "
                  "its training data, some may be faces it was trained on")


def per_class_picks(model, faces, min_confidence=MIN_CONFIDENCE, limit=SCAN_LIMIT, within=None):
    """`(picks, note)`: one confidently and correctly predicted image per class.

    Args:
        within: optional index array restricting the search (e.g. the validation split).
    """
    images = faces.images
    if images.labels is None:
        raise FerDataError(f"--per-class needs labelled data; {faces.description} has no labels")
    indices = np.arange(len(images)) if within is None else np.asarray(within)
    examples = confident_examples(model, images.pixels[indices], images.labels[indices], min_confidence, limit)
    if not examples:
        scanned = min(len(indices), limit)
        plural = "s" if scanned != 1 else ""
        if scanned < len(indices):
            which = f"the {scanned} image{plural} scanned (--scan)"
        elif within is not None:  # not --scan's doing: the held-out rows are all there is to search
            which = f"the {scanned} held-out image{plural}"
        else:
            which = "the images"
        raise FerDataError(f"the model predicts none of {which} of {faces.description} correctly: nothing to show")
    picks = []
    for example in examples:
        index = int(indices[example.index])
        mask = None if faces.masks is None else faces.masks[index]
        picks.append(Picked(images.pixels[index], int(images.labels[index]), str(images.ids[index]), mask))
    return picks, per_class_note(examples, min_confidence)


def filters_figure(model, layer=None, count=10, filters=None, steps=64, seed=0):
    """Gradient-ascent inputs of `count` random filters (or the given `filters`) of `layer`
    (default the last conv layer), each titled with the activation it reached; a filter given
    twice is drawn once."""
    from keras_fer import explain

    target = explain.find_layer(model, layer).name
    if filters is None:
        chosen = explain.pick_filters(model, target, count, seed)
    else:
        chosen = np.asarray(list(dict.fromkeys(np.asarray(filters).ravel().tolist())))
    found = explain.filter_ascent(model, target, chosen, steps=steps, seed=seed)
    return plots.filters_figure(found.images, found.final, found.filters, target, start=found.start)


def kernels_figure(model, layer=None, filters=None):
    """The kernels of the first conv layer (`explain.conv_kernels`), all filters or `filters`."""
    from keras_fer import explain

    return _draw_kernels(explain.conv_kernels(model, layer, filters))


def _draw_kernels(found):
    """The figure of an `explain.Kernels`."""
    return plots.kernels_figure(found.weights, found.filters, found.layer, found.channels, scale=found.scale,
                                total=found.total)


def rectified_layer(model, conv):
    """`conv`'s activation output (`convN_act` in the zoo's models, whose conv layers output
    before BatchNorm and activation) when the model has one with 2-D feature maps, else `conv`
    itself. Filter ascent on the linear output of the first conv layer maximizes about its
    weight sum times the image mean, and drew flat grey or black squares."""
    from keras_fer import explain

    return f"{conv}_act" if f"{conv}_act" in explain.feature_layers(model) else conv


def default_activation_layer(model):
    """A middle conv layer's rectified output (`rectified_layer`), what the next layer sees: early
    layers show edges only, late ones are too coarse (report 002), and the linear conv output
    before BatchNorm has no common scale or sign."""
    from keras_fer import explain

    convs = explain.conv_layers(model)
    if not convs:
        raise FerOptionError(f"model {model.name!r} has no convolution layers")
    return rectified_layer(model, convs[(len(convs) - 1) // 2])


def activations_figure(model, pick, layer=None, count=31):
    """The feature maps of `layer` for one image (the input first)."""
    from keras_fer import explain

    target = explain.find_layer(model, layer or default_activation_layer(model)).name
    maps = explain.activation_maps(model, pick.pixels.astype(np.float32), target)
    probabilities = class_probabilities(model, pick.pixels[None].astype(np.float32))[0]
    predicted = int(np.argmax(probabilities))
    # "for 00000 (Surprise)" did not say whether the class was the label or the prediction
    truth = f"true {CLASS_NAMES[pick.label]}, " if pick.label is not None else ""
    what = f"{pick.name} ({truth}predicted {CLASS_NAMES[predicted]} {probabilities[predicted]:.2f})"
    return plots.activations_figure(
        maps, target, image=pick.pixels, count=count,
        title=f"Activation maps of {target} for {what}: {min(count, maps.shape[-1])} of {maps.shape[-1]} channels, "
              f"{maps.shape[0]}x{maps.shape[1]}, each scaled to its own range",
    )


def augment_figure(pick, variants=4, seed=0):
    """One face under each augmentation of `pipeline.AUGMENTATIONS`, `variants` draws each.
    Random blur and erasing are shown at probability 1, and the flip (a mirror image, drawn at
    probability 0.5 in training) always mirrored, so every draw shows them: with the random
    flip half the draws were the face unchanged, as if the flip did nothing."""
    import tensorflow as tf

    from keras_fer.pipeline import AUGMENTATIONS, AugmentConfig, augment_batch

    batch = np.repeat(pick.pixels[None].astype(np.float32), variants, axis=0)
    augmented = {}
    for index, name in enumerate(AUGMENTATIONS):
        if name == "flip":  # the pipeline's flip mirrors left-right (the width axis)
            augmented[name] = list(batch[:, :, ::-1])
            continue
        config = AugmentConfig(ops=(name,), blur_probability=1.0, erase_probability=1.0)
        result = augment_batch(batch, tf.constant([seed, index], tf.int64), config)
        augmented[name] = list(np.asarray(result))
    return plots.augment_figure(pick.pixels, augmented, title=f"Augmentations of {pick.name}")


def history_figure(run):
    history = run.history()
    if history is None:
        raise FerDataError("no history.csv", run.path)
    return plots.history_figure(history, title=f"Training history: {run.path.name}")


def run_evaluation(run):
    """`metrics.Evaluation` of the run's best model on its validation split (validation.npz)."""
    from keras_fer import metrics

    saved = run.validation()
    if saved is None:
        raise FerDataError("no validation.npz (the run had no validation split?)", run.path)
    labels, probabilities, _ = saved
    return metrics.evaluate(labels, probabilities)


def confusion_figure(run, evaluation=None):
    evaluation = evaluation or run_evaluation(run)
    return plots.confusion_figure(
        evaluation.confusion, CLASS_NAMES, normalize=True,
        title=plots.confusion_title("Validation", evaluation),
    )


def calibration_figure(run, evaluation=None):
    """The reliability diagram of the run's validation split (`plots.calibration_figure`)."""
    evaluation = evaluation or run_evaluation(run)
    if evaluation.calibration is None:
        raise FerDataError("validation.npz holds no probabilities (rows summing to 1) to judge", run.path)
    return plots.calibration_figure(evaluation.calibration,
                                    plots.calibration_title("Validation", evaluation.calibration))


def recorded_temperature_calibration(run):
    """`(temperature, metrics.Calibration)` of the run's validation probabilities divided by the
    temperature its config.json records (`keras_fer.calibrate`): what its predictions give; None
    without one. FerModelError for an invalid one."""
    if "temperature" not in (run.config or {}):
        return None
    from keras_fer.loading import ModelSource, model_temperature
    from keras_fer.metrics import calibration, scale_temperature

    temperature = model_temperature(ModelSource(run.model_path, run.config, run.path / "config.json"))
    saved = run.validation()
    if saved is None:
        return None
    labels, probabilities, _ = saved
    return temperature, calibration(labels, scale_temperature(probabilities, temperature))


def classes_figure(faces):
    if faces.images.labels is None:
        raise FerDataError(f"{faces.description} has no labels: no class distribution")
    return plots.class_distribution_figure(faces.images.labels, title=f"Class distribution: {faces.description}")


def samples_figure(faces, per_class=6, seed=0):
    if faces.images.labels is None:
        raise FerDataError(f"{faces.description} has no labels: no examples per class")
    largest = int(np.bincount(faces.images.labels, minlength=NUM_CLASSES).max())
    per_class = min(per_class, largest)  # 500 on 20 faces a class drew a 62,620-pixel-wide strip of blanks
    return plots.samples_figure(faces.images.pixels, faces.images.labels, per_class, seed=seed,
                                title=f"Examples per class: {faces.description}")


# --------------------------------------------------------------------------------------------
# HTML


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1em 2em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
nav ol { columns: 2; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: 12px; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; border-bottom: 1px solid #ddd; text-align: left; }
.note { color: #8a5300; } .missing { color: #a00; }
"""


@dataclasses.dataclass
class Section:
    key: str
    title: str
    parts: list = dataclasses.field(default_factory=list)

    def text(self, text, css=None):
        attribute = f' class="{css}"' if css else ""
        self.parts.append(f"<p{attribute}>{html.escape(text, quote=False)}</p>")

    def pre(self, text):
        self.parts.append(f"<pre>{html.escape(text, quote=False)}</pre>")

    def image(self, figure, alt):
        data = base64.b64encode(plots.png_bytes(figure)).decode("ascii")
        self.parts.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">')

    def raw(self, markup):
        self.parts.append(markup)

    def render(self):
        return (f'<section id="{self.key}">\n<h2>{html.escape(self.title)}</h2>\n'
                + "\n".join(self.parts) + "\n</section>")


#: The report's sections, in order: (id, title).
SECTIONS = (
    ("architecture", "Architecture"),
    ("history", "Training history"),
    ("confusion", "Confusion matrix"),
    ("calibration", "Calibration"),
    ("classes", "Class distribution"),
    ("saliency", "Saliency maps per class"),
    ("gradcam", "Grad-CAM per class"),
    ("layercam", "LayerCAM per class"),
    ("kernels", "Kernels of the first conv layer"),
    ("filters-first", "Filters of the first conv layer"),
    ("filters-last", "Filters of the last conv layer"),
    ("activations", "Activation maps"),
    ("augmentation", "Augmentations"),
    ("configuration", "Configuration"),
)


def _guard(section, build):
    """Run `build(section)`; a missing file or bad data becomes a note in the page, not a crash."""
    try:
        build(section)
    except (FerDataError, FerOptionError, FerModelError) as error:
        section.text(f"Not available: {error}", css="missing")


def build_report(run_dir, data=None, out=None, *, filters=8, steps=64, seed=0, model=None, progress=None):
    """Write the HTML report of a run.

    Args:
        run_dir: the run directory.
        data: the images to explain; default the run's own data (demo faces when it had none).
        out: the HTML file to write, or a folder (existing, or a new name without a suffix) for
            `report.html`; default `run_dir/report.html`.
        filters: filters shown per conv layer; steps: gradient-ascent steps.
        seed: seed of the random choices (filters, samples, augmentations).
        model: an already loaded model (default: load `best.keras`).
        progress: optional callable taking a line of text, called as each section starts.

    Returns:
        The path of the written file.
    """
    run = read_run(run_dir)
    out = Path(out) if out is not None else run.path / "report.html"
    if out.is_dir() or not out.suffix:  # a folder, made if it is new
        out = out / "report.html"
    say = progress or (lambda text: None)
    model = model if model is not None else load_model(run.model_path)
    faces = load_faces(data, run)
    from keras_fer import explain

    sections = {key: Section(key, title) for key, title in SECTIONS}

    # Pick from the validation images (unseen in training): the ids validation.npz lists when the
    # faces are the run's own data, else the split config.json records, rebuilt when the faces
    # are the data it was made from. A damaged validation.npz leaves the split unknown: the
    # confusion section says why, the per-class sections that their images may have been
    # trained on.
    try:
        within, unknown_split = held_out_rows(faces, run, own_data=data is None)
    except FerDataError as error:
        within, unknown_split = None, (f"which of these images the model was validated on is unknown ({error}): "
                                       "some may be faces it was trained on")

    def architecture(section):
        summary = run.summary()
        if summary is None:
            from keras_fer.models import summary_table

            summary = summary_table(model)
        section.pre(summary.rstrip())

    def history(section):
        section.image(history_figure(run), "training and validation loss and accuracy per epoch")

    evaluation_cache = {}

    def validation_evaluation():
        """`run_evaluation(run)`, computed once for the confusion and calibration sections (a
        failure is not kept: each section says why it is missing)."""
        if "value" not in evaluation_cache:
            evaluation_cache["value"] = run_evaluation(run)
        return evaluation_cache["value"]

    def confusion(section):
        evaluation = validation_evaluation()
        section.image(confusion_figure(run, evaluation), "normalized confusion matrix of the validation split")
        rows = "".join(
            f"<tr><td>{html.escape(true)}</td><td>{html.escape(predicted)}</td><td>{share:.1%}</td></tr>"
            for true, predicted, share in evaluation.most_confused(5)
        )
        if rows:
            section.raw("<p>Most confused pairs (share of the true class predicted as the other):</p>"
                        f"<table><tr><th>true</th><th>predicted as</th><th>share</th></tr>{rows}</table>")
        else:
            section.raw("<p>No class was confused with another.</p>")
        section.pre(evaluation.report())

    def calibration(section):
        evaluation = validation_evaluation()
        figure = calibration_figure(run, evaluation)  # refuses a validation.npz without probabilities
        found = evaluation.calibration
        section.text("How far the model's confidence (its top-class probability) is from the accuracy it "
                     f"has at that confidence, on the validation split: ECE {found.ece:.3f} (0 is perfect), "
                     f"mean confidence {found.mean_confidence:.3f} against accuracy {found.accuracy:.3f}"
                     + ("" if found.direction == "about right" else f" ({found.direction})")
                     + f", NLL {found.nll:.3f}.")
        scaled = recorded_temperature_calibration(run)
        if scaled is not None:
            section.text(f"Its config.json records a temperature of {scaled[0]:g} (python -m keras_fer.calibrate), "
                         "which its predictions apply: with it, ECE "
                         f"{scaled[1].ece:.3f} and mean confidence {scaled[1].mean_confidence:.3f}, on the rows "
                         "it was fitted on. The diagram is of the model's own probabilities.")
        section.image(figure, "reliability diagram of the validation split")

    def classes(section):
        section.image(classes_figure(faces), "images per class")

    picks_cache = {}

    def picks():
        if "value" not in picks_cache:
            picks_cache["value"] = per_class_picks(model, faces, within=within)
        return picks_cache["value"]

    def saliency(section):
        chosen, note = picks()
        section.text(f"One correctly predicted image per class from {faces.description}"
                     f"{' (validation split)' if within is not None else ''}, predicted with at least "
                     f"{MIN_CONFIDENCE:.0%} confidence. Red: the 5% most influential pixels.")
        if unknown_split is not None:
            section.text(f"Note: {unknown_split}.", css="note")
        if note:
            section.text(note, css="note")
        section.image(explanation_figure(model, chosen, "saliency"), "saliency map per class")

    def gradcam(section):
        chosen, note = picks()
        section.text(f"Grad-CAM of the last conv layer ({explain.find_layer(model).name}) on the same images.")
        section.image(explanation_figure(model, chosen, "gradcam"), "Grad-CAM per class")

    def layercam(section):
        chosen, _ = picks()
        section.text(f"LayerCAM of {explain.cam_layer(model, rectified=True).name} on the same images: each position "
                     "weighted by its own positive gradient, so finer than Grad-CAM.")
        section.image(explanation_figure(model, chosen, "layercam"), "LayerCAM per class")

    convs = explain.conv_layers(model)

    def filters_of(layer):
        def build(section):
            if layer is None:
                raise FerModelError("the model has no convolution layers")
            rectified = f" (the rectified output of {layer[:-4]})" if layer.endswith("_act") else ""
            section.text(f"Inputs found by {steps} steps of gradient ascent on {filters} random filters of {layer}"
                         f"{rectified}, starting from grey; each title gives the filter's mean activation at the "
                         "start and at the end.")
            section.image(filters_figure(model, layer, filters, steps=steps, seed=seed), f"filters of {layer}")
        return build

    def kernels(section):
        found = explain.conv_kernels(model)
        section.text(f"The weights of {found.layer}, the layer that reads the image, one kernel per filter"
                     + (f" (summed over its {found.channels} input channels, which all get the grey face)"
                        if found.channels > 1 else "")
                     + ", on one colour scale; trained, they are mostly edge, spot and gradient detectors. "
                     "Gradient ascent (next section) finds little more than each first-layer filter's sign pattern.")
        section.image(_draw_kernels(found), f"kernels of {found.layer}")

    def activations(section):
        rows = np.arange(len(faces.images)) if within is None else within  # validation rows when known
        labels = faces.images.labels
        index = int(rows[0])
        if labels is not None and (labels[rows] == CLASS_NAMES.index("Sad")).any():
            index = int(rows[np.flatnonzero(labels[rows] == CLASS_NAMES.index("Sad"))[0]])  # report 002: a Sad face
        pick = pick_row(faces, index)
        section.image(activations_figure(model, pick), "activation maps")

    def augmentation(section):
        pick = pick_row(faces, 0 if within is None else int(within[0]))
        section.image(augment_figure(pick, seed=seed), "augmentations")

    def configuration(section):
        section.pre(json.dumps(run.config, indent=2, sort_keys=True, default=str) if run.config else "(no config.json)")

    builders = {
        "architecture": architecture, "history": history, "confusion": confusion, "calibration": calibration,
        "classes": classes,
        "saliency": saliency, "gradcam": gradcam, "layercam": layercam,
        "kernels": kernels,
        "filters-first": filters_of(rectified_layer(model, convs[0]) if convs else None),
        "filters-last": filters_of(convs[-1] if convs else None),
        "activations": activations, "augmentation": augmentation, "configuration": configuration,
    }
    for key, title in SECTIONS:
        say(title)
        _guard(sections[key], builders[key])

    name = html.escape(run.path.resolve().name)
    navigation = "".join(f'<li><a href="#{key}">{html.escape(title)}</a></li>' for key, title in SECTIONS)
    created = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>keras-fer report: {name}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>keras-fer report: {name}</h1>",
        f"<p>Model <b>{html.escape(str(run.config.get('arch') or model.name))}</b>, run "
        f"<code>{html.escape(str(run.path))}</code>, images: {html.escape(faces.description)}. Written {created}.</p>",
        f"<nav><ol>{navigation}</ol></nav>",
        *[sections[key].render() for key, _ in SECTIONS],
        "</body></html>",
    ])
    write_text(out, page)
    return out

