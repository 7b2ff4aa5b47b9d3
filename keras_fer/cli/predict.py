"""`python predict.py` / `fer-predict`: classify FER CSVs, face crops, photos and videos; export models.

See `python predict.py --help` and docs/prediction.md.
"""

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

from keras_fer.classes import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES
from keras_fer.cli import Parser, command, progress_bar, stdout_gone
from keras_fer.errors import FerDataError, FerOptionError, check_finite, short_list
from keras_fer.files import (
    atomic_text,
    check_folder_for,
    check_not_input,
    check_not_inside,
    first_repeat,
    orphaned_temporaries,
    staged_folder,
)

EXAMPLES = """\
examples:
  python predict.py test.csv                          submission.csv with the packaged model
  python predict.py test.csv --model runs/cnn4 --tta flip --out sub.csv
  python predict.py test.csv --model a.keras --model b.keras --proba
  python predict.py val.csv --model runs/c --saved-proba a_val.csv b_val.csv
                                                      ensemble with members saved by --proba
  python predict.py fer2013.csv --model runs/cnn4     labelled: also prints and saves metrics
  python predict.py photo.jpg --annotate annotated/   faces found with OpenCV, one line each
  python predict.py crops/ --no-detect                every image is already a face crop
  python predict.py clip.mp4 --every 5 --annotate out/
                                                      every 5th frame's faces, a timeline plot,
                                                      and out/clip.mp4 with boxes and labels
  python predict.py --camera --every 5 --annotate out/
                                                      the first camera, every 5th frame's faces
                                                      printed as they come, until Ctrl-C
  python predict.py --model runs/cnn4 --export tflite
                                                      runs/cnn4/best.tflite, checked against Keras

inputs:
  A CSV (optionally .gz) with a pixel column `feature` or `pixels` (2,304 grey levels) and
  optionally `id`, `label`/`emotion` and Kaggle's `Usage` columns, streamed in chunks. An image
  file or a folder of images (searched recursively) is classified face by face: images of
  exactly 48x48 pixels count as face crops, larger ones are searched for faces (unless
  --no-detect). A folder whose images all sit in class sub-folders (angry/, 0/, ...) is
  labelled, and metrics are reported. A video file (.mp4, .avi, .mov, .mkv, .webm, ...) is
  read frame by frame (every --every-th frame analysed); --camera N reads a camera instead,
  until --frames or Ctrl-C. A FER2013 folder (test.csv[.gz] or test/ beside train..., no images of
  its own) gives its test part. With no input, $FER_DATA's test file is used.
  Put the input before a multi-path --model or --saved-proba (or repeat the flag) so it is not
  read as a model or a saved member.

outputs:
  CSV input: `id,label` (+ a probability column per class with --proba), written atomically.
  Images: `file,face,x,y,w,h,label,class,confidence` (empty label and class "" for a photo with
  no face). With labels: <out stem>_metrics.json, _confusion.csv, _confusion.png and _calibration.png next
  to it.
  Video: `frame,time_s,face,x,y,w,h,label,class,confidence` and <out stem>_timeline.png (each
  class's probability over time for the largest face); --annotate DIR writes DIR/NAME.mp4
  (DIR/cameraN.mp4 for a camera).
"""


@dataclasses.dataclass
class PredictOptions:
    """Everything `predict.py` can be asked to do (the CLI maps its flags onto this)."""

    input: str = None
    models: list = None
    saved_proba: list = None
    out: str = None
    tta: str = "none"
    proba: bool = False
    prior_correction: bool = False
    temperature: float = None
    no_detect: bool = False
    annotate: str = None
    skip_unreadable: bool = False
    min_face: int = 30
    detector: str = "haar"  # faces.DETECTORS[0]
    every: int = 1
    camera: int = None
    frames: int = None
    show: bool = False
    export: str = None
    export_to: str = None
    backend: str = "auto"
    normalize: str = None
    batch_size: int = 256
    chunk_rows: int = 4096
    timings: bool = False


def build_parser():
    from keras_fer.export import EXPORT_FORMATS
    from keras_fer.faces import DETECTORS
    from keras_fer.inference import BACKENDS, TTA_MODES

    parser = Parser(
        prog="predict.py",
        description="Classify facial expressions (7 FER2013 classes: "
        + ", ".join(f"{i} {name}" for i, name in enumerate(CLASS_NAMES))
        + ") in a FER CSV, face crops, photos or videos, and export models for serving.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", nargs="?", help="a FER CSV (.csv or .csv.gz), an image file, a folder of images "
                        "or a video file; default: the test file of $FER_DATA")
    parser.add_argument("--model", "-m", dest="models", action="extend", nargs="+", metavar="PATH",
                        help="a .keras model, a training run directory (its best.keras and config.json) or a "
                        ".tflite file from --export; several (--model a b, or --model a --model b) average their "
                        "softmax (an ensemble). Default: the packaged pretrained model in keras_fer/weights/")
    parser.add_argument("--saved-proba", dest="saved_proba", action="extend", nargs="+", metavar="CSV",
                        help="ensemble members saved as files: the output of an earlier --proba run on this same "
                        "input CSV (.csv or .csv.gz; same ids, same order), e.g. from a model trained on another "
                        "machine. Each file counts as one member and is averaged in as written (its TTA and prior "
                        "correction stay). With --saved-proba and no --model, only the files are averaged (so --tta "
                        "and --prior-correction are errors)")
    parser.add_argument("--out", "-o", metavar="FILE",
                        help="where to write the predictions CSV (default: submission.csv for CSV input, "
                        "faces.csv for images and videos; gzip-compressed when the name ends in .gz); metrics "
                        "files (and a video's timeline plot) go next to it")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="test-time augmentation, averaging the softmax over: flip = the face and its mirror "
                        "(2 passes); crops = ten-crop: 44x44 crops at the 4 corners and centre, resized to 48x48, "
                        "plain and mirrored (10 passes). Default: none")
    parser.add_argument("--proba", action="store_true",
                        help="add one probability column per class, named by class")
    parser.add_argument("--prior-correction", action="store_true",
                        help="logit adjustment: divide each model's probabilities by its training class prior "
                        "(\"class_prior\" in the config.json next to the model) and renormalize, which favours "
                        "rare classes such as Disgust")
    parser.add_argument("--temperature", type=float, metavar="T",
                        help="divide each model's logits by T before the softmax, instead of the temperature its "
                        "config.json records (python -m keras_fer.calibrate); 1 gives the models' own softmax")
    parser.add_argument("--no-detect", action="store_true",
                        help="images and video frames: take each as an already-cropped face (no face detection)")
    parser.add_argument("--annotate", metavar="DIR",
                        help="images: write copies of the images into DIR with face boxes and labels drawn; "
                        "video: DIR/NAME.mp4, every frame with the boxes of the last analysed one")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="a folder of images: a corrupt or unreadable image is named on stderr and left out, "
                        "and the others are classified (default: it stops the run, before anything is written)")
    parser.add_argument("--min-face", type=int, default=30, metavar="PX",
                        help="images and videos: smallest face side the detector looks for, in pixels "
                        "(default: 30; mtcnn finds none below 20)")
    parser.add_argument("--detector", choices=DETECTORS, default=DETECTORS[0],
                        help="images and videos: the face detector - haar (OpenCV's frontal-face cascade, fast) or "
                        "mtcnn (a CNN: finds turned and tilted faces too, about 5x slower; needs "
                        "pip install \"keras-fer[mtcnn]\"). Default: haar")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="video: analyse every Nth frame (default: 1, every frame)")
    parser.add_argument("--camera", type=int, nargs="?", const=0, metavar="N",
                        help="read camera N (default 0: the first, /dev/video0 on Linux) instead of an input, "
                        "until --frames or Ctrl-C; each analysed frame's faces are printed as they come, and the "
                        "CSV, the timeline (and --annotate's DIR/cameraN.mp4) are written when it stops")
    parser.add_argument("--show", action="store_true",
                        help="video and camera: show each frame with its faces in a window as it is classified; q or "
                        "Esc in the window stops (and writes what was read). Needs OpenCV with window support "
                        "(opencv-python, not the opencv-python-headless keras-fer installs) and a display")
    parser.add_argument("--frames", type=int, metavar="N",
                        help="video and camera: stop after N frames (default: the whole video; a camera until "
                        "Ctrl-C)")
    parser.add_argument("--export", choices=EXPORT_FORMATS,
                        help="write a serving artifact of each --model and check it gives the Keras model's "
                        "predictions (prints the max |difference|): tflite = X.tflite next to X.keras (LiteRT; "
                        "also the fast path predict.py uses), savedmodel = X_savedmodel/ (TensorFlow SavedModel, "
                        "endpoint 'serve'), keras = X-inference.keras (the model without optimizer state, for "
                        "serving or packaging; config.json goes beside it), keras-float16 = X-float16-inference.keras "
                        "(the same with float16 weights: half the file, probabilities within 1e-2). "
                        "Predicts too when an input is given. The packaged model's go to ./keras-fer-packaged/")
    parser.add_argument("--export-to", metavar="PATH", help="where --export writes (one model only)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto (default): a verified LiteRT copy of the model, made on first use and cached "
                        "as X.tflite, so later runs skip importing TensorFlow; Keras if LiteRT cannot run it. "
                        "litert: LiteRT or an error. keras: always Keras")
    parser.add_argument("--normalize", choices=("none", "unit", "image"),
                        help="for models without keras-fer's Preprocessing layer (not made by keras-fer): how to "
                        "scale grey levels: unit = /255, image = per-image standardization, none = 0-255. "
                        "Default: config.json's \"normalize\", else none for a model starting with its own "
                        "Rescaling or Normalization layer, else unit. Faces are also resized and the grey channel "
                        "replicated to fit such a model's input")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N",
                        help="faces per forward pass (default: 256)")
    parser.add_argument("--chunk-rows", type=int, default=4096, metavar="N",
                        help="CSV rows read and classified at a time; memory is flat in the file size (default: 4096)")
    parser.add_argument("--timings", action="store_true",
                        help="print a line of seconds per stage to stderr (imports, model load, read, "
                        "inference, write, metrics)")
    return parser


def parse_options(argv):
    from keras_fer.data import IMAGE_EXTENSIONS
    from keras_fer.video import VIDEO_EXTENSIONS

    args = build_parser().parse_args(argv)
    options = PredictOptions(**{field.name: getattr(args, field.name) for field in dataclasses.fields(PredictOptions)})
    models = list(options.models or [])
    # `--model a b data.csv`: argparse gives data.csv to --model; a data file is never a model.
    if options.input is None and len(models) >= 2:
        last = models[-1].lower()
        if last.endswith((".csv", ".gz")) or last.endswith(IMAGE_EXTENSIONS) or last.endswith(VIDEO_EXTENSIONS):
            options.input = models.pop()
    options.models = models
    options.saved_proba = list(options.saved_proba or [])
    for name in ("input", "out", "annotate", "export_to"):
        if getattr(options, name) == "":  # `--out "$UNSET"`: not the current folder, not the default name
            option = "the input" if name == "input" else f"--{name.replace('_', '-')}"
            raise FerOptionError(f"{option} is an empty path. Received: {name}=''")
    if "" in options.models or "" in options.saved_proba:
        raise FerOptionError("--model and --saved-proba take file or folder paths, not empty ones. Received: ''")
    if options.camera is not None and options.input is not None:
        raise FerOptionError(f"--camera reads a camera instead of an input: give one of them. "
                             f"Received: input={options.input}, camera={options.camera}")
    if options.camera is not None and options.camera < 0:
        raise FerOptionError(f"--camera takes a camera index >= 0. Received: camera={options.camera}")
    for name in ("batch_size", "chunk_rows", "min_face", "every", "frames"):
        if getattr(options, name) is not None and getattr(options, name) < 1:
            raise FerOptionError(f"--{name.replace('_', '-')} must be a positive integer. "
                                 f"Received: {name}={getattr(options, name)}")
    if options.temperature is not None:
        check_finite(options.temperature, "--temperature", positive=True, received="temperature")
    if options.saved_proba and not options.models and options.export:
        # it exported the packaged model and averaged it into the files' ensemble, without a word
        raise FerOptionError("--export exports the --model models, and there is none: with --saved-proba, name the "
                             "model to export with --model, or export the packaged model in a run of its own "
                             f"(predict.py --export {options.export}). Received: export={options.export!r}")
    if options.saved_proba and not options.models:  # only files to average: no model runs
        given = [(flag, value) for flag, value, unset in (("tta", options.tta, "none"),
                                                          ("prior_correction", options.prior_correction, False),
                                                          ("temperature", options.temperature, None))
                 if value != unset]
        if given:  # it did nothing, without a word
            name, value = given[0]
            flag = "--" + name.replace("_", "-")
            raise FerOptionError(f"{flag} applies to the --model predictions, and there is no --model: the "
                                 f"--saved-proba files are averaged as written (with the TTA and prior correction "
                                 f"chosen when they were saved). Drop {flag}. Received: {name}={value!r}")
    if options.export_to and not options.export:
        raise FerOptionError("--export-to needs --export tflite, savedmodel, keras or keras-float16")
    if options.export_to and len(options.models) > 1:
        raise FerOptionError("--export-to names one artifact: give one --model")
    return options


def _process_age():
    """Seconds since this process started (Linux), or None."""
    try:
        import os

        with open("/proc/self/stat") as handle:
            start_ticks = float(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _say(*parts):
    """Print to stdout; once its reader has gone (`| head`), the lines stop and the command goes
    on to write its outputs (it lost the CSV of an image folder, or a video's timeline)."""
    try:
        print(*parts, flush=True)
    except BrokenPipeError:
        stdout_gone(go_on=True)


def _note(text):
    print(f"note: {text}", file=sys.stderr, flush=True)


def _models_or_default(options):
    """The --model paths; the packaged model when there are none and no --saved-proba either."""
    from keras_fer.loading import default_model_path

    if options.models or options.saved_proba:
        return options.models
    return [str(default_model_path())]


def run_export(options, models):
    from keras_fer.export import export_model

    for model in models:
        result = export_model(model, options.export, options.export_to, options.normalize)
        _say(
            f"exported {model} -> {result.path} ({result.format}): max |difference| vs Keras "
            f"{result.max_abs_diff:.2e} in probabilities, {result.max_abs_diff_outputs:.2e} in raw outputs, "
            f"on {result.sample_size} faces"
        )


def print_evaluations(evaluations):
    """Print the scores of each split, the report and the normalized confusion matrix."""
    from keras_fer.inference import split_order

    for split in split_order(evaluations):
        evaluation = evaluations[split]
        title = "all rows" if split == "all" else split
        calibrated = f", ECE {evaluation.calibration.ece:.4f}" if evaluation.calibration is not None else ""
        _say(f"\n{title}: accuracy {evaluation.accuracy:.4f}, macro-F1 {evaluation.macro_f1:.4f}{calibrated} "
             f"({int(evaluation.support.sum())} rows)")
        _say(evaluation.report())
        _say("normalized confusion (rows: true class, columns: predicted)")
        _say(" " * 9 + "".join(f"{name:>9}" for name in CLASS_NAMES))
        for i, row in enumerate(evaluation.confusion_normalized):
            _say(f"{CLASS_NAMES[i]:<9}" + "".join(f"{value:>9.2f}" for value in row))


def save_and_report(evaluations, out, timings):
    from keras_fer.inference import save_evaluations

    start = time.perf_counter()
    print_evaluations(evaluations)
    paths = save_evaluations(evaluations, out)
    timings.metrics_s += time.perf_counter() - start
    _say(f"\nsaved metrics: {', '.join(str(path) for path in paths.values())}")


def run_csv(options, predictors, timings, saved=()):
    from keras_fer.inference import predict_csv

    out = _out_path(options)
    bar = progress_bar(" faces")
    try:
        result = predict_csv(options.input, predictors, out, options.tta, options.prior_correction, options.proba,
                             options.chunk_rows, on_chunk=bar.update, timings=timings, saved=saved)
    finally:
        bar.close()
    _say(f"wrote {result.out}: {result.rows} rows")
    if result.labelled:
        for predictor in predictors:
            trained_on = _trained_on(predictor, options.input, result.rows)
            if trained_on:
                _note(f"{predictor.name} was trained on {trained_on}: the accuracies below count its training rows "
                      "too (a validation split, e.g. python -m keras_fer.data split FILE --out-val val.csv.gz, "
                      "measures it)")
        save_and_report(result.evaluations(), result.out, timings)
    return result.rows


def _trained_on(predictor, path, rows):
    """How a model's config.json says it was trained on the labelled CSV `path` (`rows` rows): that
    file itself, or one of its name and row count (the packaged model's data, elsewhere); else None."""
    config = predictor.source.config if predictor.source is not None else None
    if not isinstance(config, dict) or not isinstance(config.get("data"), str):
        return None
    data, path = Path(config["data"]), Path(path)
    if data.exists() and path.exists() and os.path.samefile(data, path):
        return "this file"
    counts = [config.get(key) for key in ("train_images", "val_images")]
    if data.name == path.name and all(isinstance(count, int) for count in counts) and sum(counts) == rows:
        return f"a file of this name and size ({rows:,} rows)"
    return None


def _image_plan(root, outputs=()):
    """`(files, labels or None, base folder)` for an image file or folder input. A folder's
    images leave out this run's own outputs (`outputs`, `(option, path)` pairs), such as the
    `faces_confusion.png` an earlier run wrote into it."""
    from keras_fer.classes import class_index
    from keras_fer.data import IMAGE_EXTENSIONS, OTHER_IMAGE_SUFFIXES, check_name
    from keras_fer.faces import list_images

    root = Path(root)
    if root.is_file():
        return [check_name(root)], None, root.parent
    ours = {Path(path).resolve() for _, path in outputs}
    found = list_images(root, IMAGE_EXTENSIONS + OTHER_IMAGE_SUFFIXES)  # one walk of a big folder
    files = [file for file in found if file.suffix.lower() in IMAGE_EXTENSIONS and (root / file).resolve() not in ours]
    unread = [file for file in found if file.suffix.lower() in OTHER_IMAGE_SUFFIXES]  # a GIF, HEIC: said so
    shown = short_list(unread)
    formats = ", ".join(IMAGE_EXTENSIONS)
    if not files:
        unread_part = f" ({shown}: a format that is not read)" if unread else ""
        raise FerDataError(f"no images in this folder (or its sub-folders){unread_part}: use {formats}", root)
    if unread:
        _note(f"skipped {len(unread)} image{'s' if len(unread) > 1 else ''} in a format that is not read ({shown}): "
              f"convert {'them' if len(unread) > 1 else 'it'} to {formats}")
    labels, outside = [], None
    for file in files:
        try:
            labels.append(class_index(file.parts[0]) if len(file.parts) == 2 else None)
        except ValueError:
            labels.append(None)
        if labels[-1] is None and outside is None:
            outside = file
    if outside is not None:
        if any(label is not None for label in labels):  # a mistyped class folder dropped every label unsaid
            classes = ", ".join(name.lower() for name in CLASS_NAMES)
            _note(f"{root}: not scored against its class folders: {outside} is not in one (sub-folders 0-6 or "
                  f"{classes}, directly holding the images)")
        labels = None
    return [root / file for file in files], labels, root


def run_images(options, predictors, timings, plan):
    """Classify the faces of an image file or folder; print one line per face; write a CSV."""
    import csv

    import numpy as np

    from keras_fer import faces as face_tools
    from keras_fer.inference import _count, predict_proba

    files, labels, base = plan
    out = _out_path(options)
    annotate_dir = Path(options.annotate) if options.annotate else None  # not over an input: check_outputs
    confusions, calibrations = {}, {}
    faces_found = 0
    unscored = 0  # labelled images with no face found: no row of the scores
    skipped = []  # --skip-unreadable: the files left out
    bar = progress_bar(" images")
    header = ["file", "face", "x", "y", "w", "h", "label", "class", "confidence"]
    header += ["true_label"] if labels is not None else []
    header += list(CLASS_NAMES) if options.proba else []
    group_size = 64
    try:
        # the copies move into place after the CSV is complete: a failed run leaves neither
        with (staged_folder(annotate_dir) if annotate_dir is not None else contextlib.nullcontext()) as staging, \
                atomic_text(out) as stream:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(header)
            for start in range(0, len(files), group_size):
                read_start = time.perf_counter()
                group, images = _read_group(files[start:start + group_size], labels, start, options.skip_unreadable,
                                            skipped)
                found = face_tools.face_boxes_each(images, not options.no_detect, options.min_face, options.detector)
                items = [(file, image, boxes, face_tools.crop_faces(image, boxes))  # (file, image, boxes, crops)
                         for (file, _), image, boxes in zip(group, images, found)]
                timings.read_s += time.perf_counter() - read_start
                infer_start = time.perf_counter()
                crops = np.concatenate([item[3] for item in items]) if items else np.zeros((0, *IMAGE_SHAPE), np.uint8)
                probabilities = predict_proba(predictors, crops, options.tta, options.prior_correction)
                timings.infer_s += time.perf_counter() - infer_start
                write_start = time.perf_counter()
                offset = 0
                for (file, image, boxes, _), (_, truth) in zip(items, group):
                    shown = file.relative_to(base) if base in file.parents else file
                    mine = probabilities[offset:offset + len(boxes)]
                    offset += len(boxes)
                    if not boxes:
                        unscored += truth is not None
                        _say(f"{shown}: no face found")
                        writer.writerow([shown, "", "", "", "", "", "", "", ""]
                                        + ([truth] if labels is not None else [])
                                        + ([""] * NUM_CLASSES if options.proba else []))
                    captions = []
                    for number, (box, row) in enumerate(zip(boxes, mine), start=1):
                        label = int(row.argmax())
                        captions.append(f"{CLASS_NAMES[label]} {row[label]:.2f}")
                        _say(f"{shown}  face {number}  box=({box[0]},{box[1]},{box[2]},{box[3]})  "
                             f"{CLASS_NAMES[label]}  {row[label]:.3f}")
                        writer.writerow([shown, number, *box, label, CLASS_NAMES[label], f"{row[label]:.6f}"]
                                        + ([truth] if labels is not None else [])
                                        + ([f"{value:.6f}" for value in row] if options.proba else []))
                        if truth is not None:
                            _count(confusions, "all", [truth], [label], calibrations, row[None])
                    faces_found += len(boxes)
                    if annotate_dir is not None:
                        face_tools.write_image(staging / shown, face_tools.annotate(image, boxes, captions))
                timings.write_s += time.perf_counter() - write_start
                bar.update(min(group_size, len(files) - start))
            if len(skipped) == len(files):
                what = "its one image could not" if len(files) == 1 else f"none of its {len(files)} images could"
                raise FerDataError(f"{what} be read (named above): nothing written", base)
    finally:
        bar.close()
    left_out = f"; {len(skipped)} unreadable, left out" if skipped else ""
    _say(f"wrote {out}: {_count_of(faces_found, 'face')} in {_count_of(len(files) - len(skipped), 'image')}{left_out}")
    if annotate_dir is not None:
        _say(f"annotated copies in {annotate_dir}")
    if unscored:  # the scores said "accuracy 1.0000 (2 rows)" of 3 labelled images, without a word
        _note(f"{_count_of(unscored, 'labelled image')} with no face found {'is' if unscored == 1 else 'are'} not in "
              "the scores below (they score the faces found, each against its image's label)")
    if confusions:
        from keras_fer.inference import evaluation_from_confusion

        evaluations = {split: evaluation_from_confusion(matrix, calibrations.get(split))
                       for split, matrix in confusions.items()}
        save_and_report(evaluations, out, timings)
    return faces_found


def _read_group(files, labels, start, skip_unreadable, skipped):
    """`([(file, true label or None)], [image])` for one group of a folder's files (`start`: the
    first one's index in `labels`). An unreadable file stops the run, or with `skip_unreadable`
    is named on stderr, added to `skipped` and left out."""
    from keras_fer import faces as face_tools

    group, images = [], []
    for index, file in enumerate(files, start=start):
        try:
            images.append(face_tools.read_photo(file))
        except FerDataError as error:
            if not skip_unreadable:
                if len(files) == 1 and start == 0:  # one image (a file, or a folder of one): no others
                    raise
                raise FerDataError(f"{error.reason}; --skip-unreadable leaves such files out and classifies the "
                                   "others", error.path, error.row, error.field) from None
            skipped.append(file)
            _note(f"{error}: left out (--skip-unreadable)")
            continue
        group.append((file, labels[index] if labels is not None else None))
    return group, images


def _count_of(count, noun):
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _source(options):
    """The video to read: the input, or the camera index of --camera."""
    return options.camera if options.camera is not None else options.input


def _say_faces(index, second, boxes, rows):
    """A camera's live line for one analysed frame. When stdout's reader has gone (`| tee`,
    killed by the same Ctrl-C), the lines stop and the recording goes on to be written."""
    faces = "; ".join(f"face {number} {CLASS_NAMES[int(row.argmax())]} {row.max():.2f}"
                      for number, row in enumerate(rows, start=1)) or "no face"
    _say(f"frame {index} ({second:.1f} s): {faces}")


def run_video(options, predictors, timings, frame_count=0):
    """Classify the faces of a video's (or camera's) frames; write the CSV and the timeline;
    summarize. `frame_count`: the frames the container claims, for the progress bar (0: unknown)."""
    import numpy as np

    from keras_fer.inference import companion_path
    from keras_fer.plots import save_figure, timeline_figure
    from keras_fer.video import predict_video, source_name

    out = _out_path(options)
    camera = options.camera is not None
    if camera:
        _say(f"reading {source_name(options.camera)}: Ctrl-C stops it and writes {out}")
    total = min(frame_count, options.frames or frame_count) or options.frames
    bar = progress_bar(" frames", enabled=not camera, total=total or None)  # a camera prints its lines
    start = time.perf_counter()
    try:
        result = predict_video(_source(options), predictors, out, options.every, options.tta,
                               options.prior_correction, options.proba, options.min_face, not options.no_detect,
                               options.annotate, detector=options.detector,
                               on_frames=lambda done: bar.update(done - bar.n), max_frames=options.frames,
                               on_analysed=_say_faces if camera else None, show=options.show)
    finally:
        bar.close()
    timings.infer_s += time.perf_counter() - start
    if camera:
        span = f", {result.times[-1]:.1f} s" if len(result.times) else ""
    else:
        span = f", {result.frames / result.fps:.1f} s at {result.fps:g} fps" if result.fps else ""
    if result.stopped:
        span += {(True, False): ", stopped by Ctrl-C", (True, True): ", stopped (Ctrl-C or q)"}.get(
            (camera, options.show), ", stopped (q)")
    _say(f"wrote {result.out}: {_count_of(result.faces, 'face')} in {result.analysed} analysed of "
         f"{_count_of(result.frames, 'frame')}{span}")
    # Container counts can be off by one; --frames and q stop early on purpose.
    if frame_count > result.frames + 1 and not options.frames and not result.stopped:
        _note(f"{options.input}: read {result.frames} of the {frame_count} frames its header announces "
              "(a truncated or damaged file?)")
    if result.annotated is not None:
        _say(f"annotated video: {result.annotated}")
    shares = result.dominant_shares()
    if shares.any():
        ranked = sorted(range(NUM_CLASSES), key=lambda index: -shares[index])
        _say("top expression of the largest face, by share of the frames with a face: "
             + ", ".join(f"{CLASS_NAMES[index]} {shares[index]:.0%}" for index in ranked if shares[index] > 0))
    else:
        _say("no face found in the analysed frames (try --min-face, or --no-detect for a video of a face)")
    timeline = companion_path(out, "_timeline.png")
    positions, xlabel = (result.times, "seconds") if result.fps or camera else (
        np.arange(result.analysed) * options.every, "frame")
    name = source_name(options.camera) if camera else Path(options.input).name
    save_figure(timeline_figure(positions, result.timeline, xlabel=xlabel, source=name), timeline)
    _say(f"timeline: {timeline}")
    return result.faces


def _out_path(options):
    """`--out`, or its default: `submission.csv` for a CSV input, `faces.csv` for photos and videos."""
    from keras_fer.data import is_image_file
    from keras_fer.video import is_video_file

    if options.out:
        return Path(options.out)
    if options.camera is not None:
        return Path("faces.csv")
    photos = Path(options.input).is_dir() or is_image_file(options.input) or is_video_file(options.input)
    return Path("faces.csv" if photos else "submission.csv")


def _outputs(options):
    """`(option, path)` of the files a run writes: `--out`, the metrics files beside it (written
    when the input has labels) and a video's timeline (its annotated copy: `video.check_video`)."""
    from keras_fer.inference import companion_path, metrics_paths
    from keras_fer.video import is_video_file

    out = _out_path(options)
    beside = f"--out {out}: the file beside it,"
    outputs = [("--out", out)] + [(beside, path) for path in metrics_paths(out).values()]
    if options.camera is not None or is_video_file(options.input):
        outputs.append((beside, companion_path(out, "_timeline.png")))
    return outputs


def check_given_once(options, models, sources):
    """Refuse an ensemble member given twice (by one path or two, such as a run and its
    best.keras, as `sources`, the model files, say): it was averaged in at twice the weight,
    without a word."""
    for flag, given, paths in (("--model", models, sources), ("--saved-proba", options.saved_proba,
                                                             options.saved_proba)):
        repeat = first_repeat(paths)
        if repeat is not None:
            name, earlier = (given[index] for index in repeat)
            raise FerOptionError(f"{flag} {name} is given twice{'' if earlier == name else f' (as {earlier})'}: "
                                 f"an ensemble averages each member once; give it once. Received: {given}")


def check_outputs(options, sources, plan=None):
    """Refuse, before any model loads, outputs that would replace an input: the data (a CSV, a
    photo, a folder's images as `plan` lists them, a video), a `--saved-proba` file or a model
    (`sources`, the model files)."""
    outputs = _outputs(options)
    inputs = plan[0] if plan is not None else [options.input] if options.input is not None else []
    check_not_input(outputs, inputs, "the input")
    if options.annotate:  # a file in the way fails now, not after --out's folder was made
        check_folder_for(Path(options.annotate) / "copy")
    if plan is not None and options.annotate:  # the copies go to --annotate/<path in the input folder>
        files, _, base = plan
        if Path(options.input).is_dir():
            check_not_inside([("--annotate", options.annotate)], options.input, "the input folder")
        copies = [("--annotate", Path(options.annotate) / file.relative_to(base)) for file in files]
        check_not_input(copies, files, "an input image with its annotated copy")
        # the copies land after the CSV: one named like an output replaced it without a word
        for option, path in outputs:
            if path is not None:
                check_not_input(copies, [path], f"the {option} file (an annotated copy goes there)")
    check_not_input(outputs, options.saved_proba, "a --saved-proba file")
    check_not_input(outputs, sources, "a model")
    copies = [Path(str(path.with_suffix(".tflite")) + suffix) for path in sources for suffix in ("", ".json")]
    check_not_input(outputs, copies, "a model's LiteRT copy")  # which the run may read, or make
    for option, path in outputs:  # e.g. a folder named like the confusion plot: found before any file is written
        if path is not None and Path(path).is_dir():
            raise FerOptionError(f"{option} {path} is a folder: remove it or choose another --out")


def _resolve_input(options):
    from keras_fer.data import data_parts, existing_data_path, is_image_file

    if options.input is not None:
        path = Path(options.input)
        if not path.exists():
            raise FerDataError("no such file or folder", path)
        # a FER2013 folder, as FER_DATA names one: its test part (not a folder of photos beside a test/)
        parts = data_parts(path) if path.is_dir() and not any(is_image_file(item) for item in path.iterdir()) else {}
        if "test" in parts:
            _note(f"{path} is a FER2013 folder: predicting its {parts['test'].name}")
            return str(parts["test"])
        if parts:
            held = ", ".join(part.name for part in parts.values())
            raise FerDataError(f"a FER2013 folder without a test part (it holds {held}): give the file or folder "
                               "of faces to predict", path)
        return str(path)
    found = existing_data_path(None, "test")
    if found is None:
        taken = [(flag, paths) for flag, paths in (("--model", options.models), ("--saved-proba", options.saved_proba))
                 if len(paths) >= 2]  # `--model run photos/`: argparse gave the input to --model
        hint = "".join(f"; {flag} took {', '.join(paths)}: if the last is the input, give it before {flag}"
                       for flag, paths in taken[:1])
        raise FerOptionError("no input: give a CSV, an image, a folder or a video (or set FER_DATA to a folder with "
                             f"test.csv.gz or test.csv){hint}")
    if Path(found).is_dir() and Path(found).name != "test":  # a test/ image folder is an input
        raise FerDataError("no test.csv, test.csv.gz or test/ in this folder (from FER_DATA): give an input", found)
    return str(found)


@command  # an unwritable --out or --annotate folder, a full disk...: one line naming the file
def main(argv=None):
    entered = time.perf_counter()
    imports_s = _process_age()
    from keras_fer.data import is_image_file
    from keras_fer.inference import Timings, load_predictor, read_saved_probabilities
    from keras_fer.loading import class_prior, resolve_model, trained_on_demo_faces
    from keras_fer.video import is_video_file

    options = parse_options(argv)
    timings = Timings()
    camera = options.camera is not None
    if options.export and options.input is None and not camera:
        run_export(options, _models_or_default(options))
        return 0
    if not camera:
        options.input = _resolve_input(options)  # a missing input fails before an export is written
    video = camera or is_video_file(options.input)
    images = not camera and (Path(options.input).is_dir() or is_image_file(options.input))
    plan = _image_plan(options.input, _outputs(options)) if images else None  # listed once
    if options.skip_unreadable and not (images and Path(options.input).is_dir()):
        raise FerOptionError(f"--skip-unreadable is for a folder of images; {_source(options)} is not one: "
                             "drop --skip-unreadable")
    if not (images or video) and options.annotate:
        raise FerOptionError(f"--annotate draws on photos and videos; {options.input} holds face crops: "
                             "drop --annotate")
    if not video and (options.every != 1 or options.frames is not None or options.show):
        flag, value = (("every", options.every) if options.every != 1 else ("frames", options.frames)
                       if options.frames is not None else ("show", True))
        raise FerOptionError(f"--{flag} is for videos and cameras; {options.input} is no video. "
                             f"Received: {flag}={value}")
    if not (images or video):  # a CSV holds face crops: nothing to detect
        given = [(flag, value) for flag, value, default in (
            ("no-detect", options.no_detect, False), ("detector", options.detector, PredictOptions.detector),
            ("min-face", options.min_face, PredictOptions.min_face)) if value != default]
        if given:  # noted, not refused: one command line may serve photos and CSVs alike
            _note(f"{', '.join('--' + flag for flag, _ in given)}: for photos and videos; {options.input} holds "
                  "face crops, classified as they are")
    if (images or video) and options.saved_proba:
        raise FerOptionError(f"--saved-proba averages in probabilities saved for a CSV: give that CSV as the input. "
                             f"Received: input={_source(options)}")
    saved = [read_saved_probabilities(path) for path in options.saved_proba]  # bad files fail before any model loads
    if (images or video) and not options.no_detect:  # a CSV holds faces already: no detector needed
        from keras_fer.faces import check_detector

        check_detector(options.detector)  # a missing mtcnn package fails before any model loads
    frame_count = 0
    if video:  # so does a bad video, or an output over it
        from keras_fer.video import check_video

        frame_count = check_video(_source(options), _out_path(options), options.annotate)
        if options.show:
            from keras_fer.video import check_window

            check_window()

    start = time.perf_counter()
    models = _models_or_default(options)
    sources = [resolve_model(path) for path in models]  # a missing model fails here, before any loads
    check_given_once(options, models, [source.path for source in sources])
    check_outputs(options, [source.path for source in sources], plan)
    for _, path in _outputs(options):  # what a run killed while writing these files left beside them
        for leftover in orphaned_temporaries(path):
            try:
                leftover.unlink(missing_ok=True)
            except OSError:  # another user's, in a shared sticky folder: theirs to remove, no reason to stop
                continue
            _note(f"removed {leftover}, half-written by a run that was killed")
    if options.prior_correction:
        for source in sources:  # fail now, before loading or exporting anything, if a model has no prior
            class_prior(source)
    if options.export:
        run_export(options, models)
    predictors = [load_predictor(path, options.backend, options.normalize, options.batch_size, options.temperature)
                  for path in models]
    timings.load_s = time.perf_counter() - start
    for predictor in predictors:
        for note in predictor.notes:
            _note(f"{predictor.name}: {note}")
        if predictor.source is not None and trained_on_demo_faces(predictor.source.config):  # the README's 1st run
            _note(f"{predictor.name}: trained on the built-in demo faces (cartoons), not FER2013: its answers for "
                  "real faces mean little; train with --data for a real model")

    if video:
        rows = run_video(options, predictors, timings, frame_count)
    elif images:
        rows = run_images(options, predictors, timings, plan)
    else:
        rows = run_csv(options, predictors, timings, saved)
    if options.timings:
        total = time.perf_counter() - entered + (imports_s or 0.0)
        stages = " ".join(f"{key}={value:.3f}" for key, value in dataclasses.asdict(timings).items())
        imports = "" if imports_s is None else f" imports_s={imports_s:.3f}"
        backends = ",".join([predictor.backend for predictor in predictors] + ["saved"] * len(saved))
        print(f"timings{imports} {stages} total_s={total:.3f} rows={rows} backend={backends}", file=sys.stderr)
    return 0
