"""`python visualize.py` / `fer-visualize`: figures and the HTML report of a model or a run.

Every subcommand writes PNG files (the report: one HTML file) and prints where they went.
"""

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

# Grappler logs a harmless "remapper failed" C++ error when a gradient runs through a fused
# conv + bias + LeakyReLU; without TF's C++ logs a figure command prints only what it wrote.
# Set before TensorFlow loads (the @command wrapper would default it to 2).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_fer.cli import Parser, command, import_tensorflow_quietly, seed_value
from keras_fer.errors import FerModelError, FerOptionError
from keras_fer.faces import DETECTORS
from keras_fer.files import check_not_input, check_not_inside, first_repeat, same_file

DEFAULT_OUT = "figures"

EPILOG = """\
examples:
  python visualize.py saliency --run runs/cnn4 --image 00000
  python visualize.py saliency --run runs/cnn4 --per-class            # one confident face per class
  python visualize.py gradcam --run runs/cnn4 --image photo.jpg --class Happy
  python visualize.py scorecam --per-class --max-channels 64           # gradient-free heatmaps
  python visualize.py occlusion --image 00000                          # what it needs to see
  python visualize.py filters --run runs/cnn4 --layer conv4 --count 10
  python visualize.py kernels --run runs/cnn4                          # the first layer's weights
  python visualize.py activations --run runs/cnn4 --layer conv2 --image 00000
  python visualize.py history runs/cnn4
  python visualize.py compare runs/cnn4 runs/fervgg --x cpu-hours      # accuracy against CPU time
  python visualize.py confusion runs/cnn4
  python visualize.py calibration runs/cnn4                           # is a 0.9 confidence right 90%?
  python visualize.py classes --data fer2013/train.csv.gz
  python visualize.py samples --data fer2013/train.csv.gz
  python visualize.py augment --image 00000
  python visualize.py report runs/cnn4                               # runs/cnn4/report.html

Data: --data, else the run's own data (its config.json), else $FER_DATA, else built-in demo faces.
Model: --run DIR (its best.keras) or --model FILE.keras, else the packaged model.
"""


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number. Received: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1]. Received: {text!r}")
    return value


def _class(text):
    from keras_fer.classes import class_index

    try:
        return class_index(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _filter_list(text):
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated filter numbers. Received: {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated filter numbers >= 0. Received: {text!r}")
    return values


def build_parser():
    parser = Parser(
        prog="visualize.py",
        description="Draw what a facial expression model learned: saliency maps, Grad-CAM, filters, feature "
        "maps, training history, confusion matrix, calibration, data figures, and a one-file HTML report of a run.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    out = Parser(add_help=False)
    out.add_argument("--out", default=DEFAULT_OUT, metavar="DIR|FILE.png",
                     help=f"folder the PNG files go to (created if needed; default {DEFAULT_OUT}/), or a "
                     "FILE.png (or .jpg, .pdf, .svg) to write one figure under that name and format")
    model = Parser(add_help=False)
    source = model.add_mutually_exclusive_group()
    source.add_argument("--run", metavar="DIR", help="a training run directory: uses its best.keras and its data "
                        "(with neither --run nor --model: the packaged pretrained model)")
    source.add_argument("--model", metavar="FILE", help="a .keras model taking raw 48x48x1 faces (grey levels 0-255; "
                        "kernels: any model with a conv layer), or a run directory; default: the packaged "
                        "pretrained model")
    data = Parser(add_help=False)
    data.add_argument("--data", metavar="PATH",
                      help="FER2013 CSV (.gz ok), a folder holding train.csv.gz, or an image folder. Default: the "
                      "run's data, else $FER_DATA, else built-in demo faces")
    image = Parser(add_help=False)
    image.add_argument("--image", metavar="ID",
                       help="the image: an id or row number of the data (e.g. 00000), or the path of an image file "
                       "(any size or colour; in a photo the largest face is found and explained). Default: the "
                       "first image")
    image.add_argument("--detector", choices=DETECTORS, default=DETECTORS[0],
                       help="with a photo as --image: the face detector, haar or mtcnn (as predict.py's; default "
                       "haar)")
    seed = Parser(add_help=False)
    seed.add_argument("--seed", type=seed_value, default=0, help="seed of random choices (default 0)")

    def add(name, help, parents, description=None):
        return commands.add_parser(name, help=help, description=description or help, parents=parents)

    for name, help in (("saliency", "saliency maps: |d class score / d pixel| (Simonyan et al. 2014)"),
                       ("smoothgrad", "SmoothGrad: saliency averaged over noisy copies (Smilkov et al. 2017)"),
                       ("gradcam", "Grad-CAM heatmaps of a conv layer (Selvaraju et al. 2017)"),
                       ("gradcam++", "Grad-CAM++ heatmaps: Grad-CAM with per-position gradient weights, which "
                        "covers every region that raises the class (Chattopadhay et al. 2018)"),
                       ("layercam", "LayerCAM heatmaps: each position weighted by its own positive gradient, "
                        "fine detail and shallow layers too (Jiang et al. 2021)"),
                       ("scorecam", "Score-CAM heatmaps: each feature map masks the face and is weighted by the "
                        "class probability it keeps, no gradients (Wang et al. 2020)"),
                       ("occlusion", "occlusion sensitivity: how much the class probability drops when a grey square "
                        "hides each part of the face, no gradients (Zeiler & Fergus 2014)")):
        sub = add(name, help, [model, data, image, out] + ([seed] if name == "smoothgrad" else []),
                  description=f"{help}. Draws the original, the map, and the original with the most influential "
                  "pixels marked (or the heatmap overlaid), for one image or one image per class.")
        choice = sub.add_mutually_exclusive_group()
        choice.add_argument("--per-class", action="store_true",
                            help="one correctly predicted image per class, predicted with at least --min-confidence "
                            "(falling back to the most confident correct one, and saying so); with --run and no "
                            "--data, chosen from the run's validation split")
        choice.add_argument("--class", dest="class_index", type=_class, metavar="CLASS",
                            help="explain this class (name or 0-6) instead of the predicted one")
        sub.add_argument("--min-confidence", type=_fraction, default=0.9, metavar="P",
                         help="with --per-class: the confidence an example needs (default 0.9, as report 002)")
        sub.add_argument("--scan", type=_positive, default=5000, metavar="N",
                         help="with --per-class: look at most at the first N images (default 5000)")
        if name in ("gradcam", "gradcam++", "layercam", "scorecam"):
            sub.add_argument("--layer", metavar="NAME", help="the conv layer (default the last one; for gradcam++, "
                             "layercam and scorecam its rectified output, e.g. conv8_act, or resnet18's block8_act)")
        if name == "scorecam":
            sub.add_argument("--max-channels", type=_positive, metavar="N",
                             help="use only the N feature maps of largest variance: N forward passes per image "
                             "instead of one per feature map (Faster Score-CAM; default all)")
        if name == "occlusion":
            sub.add_argument("--patch", type=_positive, default=8, metavar="PX",
                             help="side of the grey square, in pixels (default 8)")
            sub.add_argument("--stride", type=_positive, default=4, metavar="PX",
                             help="step between squares, at most --patch (default 4: 121 forward passes a face)")
        if name == "smoothgrad":
            sub.add_argument("--samples", type=_positive, default=50,
                             help="noisy copies per image (default 50, as in the paper; more give steadier maps, "
                             "at that many gradients' cost)")
            # --seed (from the parent) seeds the noise.
            sub.add_argument("--noise", type=_fraction, default=0.15,
                             help="noise standard deviation as a fraction of the image's pixel range (default 0.15)")

    sub = add("filters", "inputs that excite a layer's filters most, by gradient ascent", [model, out, seed])
    sub.add_argument("--layer", metavar="NAME", help="the conv layer (default the last one; --layer x lists them)")
    sub.add_argument("--count", type=_positive, default=10, help="how many random filters (default 10)")
    sub.add_argument("--filters", type=_filter_list, metavar="I,J,..", help="these filters instead of random ones")
    sub.add_argument("--steps", type=_positive, default=64, help="gradient-ascent steps (default 64)")

    sub = add("kernels", "the weights of the first conv layer, the one that reads the image: one kernel per "
              "filter, on one colour scale", [model, out])
    sub.add_argument("--filters", type=_filter_list, metavar="I,J,..", help="these filters only (default all)")
    sub.add_argument("--layer", metavar="NAME", help="the first conv layer (the default): a later one reads feature "
                     "maps, not the image, and is refused; draw what excites it with `filters --layer NAME`")

    sub = add("activations", "the feature maps of a layer for one image", [model, data, image, out])
    sub.add_argument("--layer", metavar="NAME", help="the layer (default a middle conv layer's rectified output, "
                     "e.g. conv2_act)")
    sub.add_argument("--count", type=_positive, default=31,
                     help="feature maps shown at most (default 31: with the input, a 4x8 grid)")

    for name, help in (("history", "loss and accuracy per epoch of a run (its history.csv)"),
                       ("confusion", "the normalized confusion matrix of a run's validation split (validation.npz)"),
                       ("calibration", "the reliability diagram of a run's validation split (validation.npz): "
                        "accuracy against confidence, and the expected calibration error (ECE)")):
        sub = add(name, help, [out])
        sub.add_argument("run", metavar="RUN", help="the run directory")

    sub = add("compare", "several runs' validation curves on shared axes (an ablation, or models side by side)", [out])
    sub.add_argument("runs", metavar="RUN", nargs="+", help="run directories; each is labelled by its folder name")
    sub.add_argument("--title", help="figure title")
    sub.add_argument("--x", choices=("epoch", "cpu-hours"), default="epoch",
                     help="horizontal axis (default epoch); cpu-hours: CPU time spent by each epoch's end, a run "
                     "continued with --init-from starting where the weights it took were reached (accuracy "
                     "against cost)")

    sub = add("classes", "a bar chart of images per class of the data (report 003)", [data, out])
    sub = add("samples", "a grid of example faces, one row per class", [data, out, seed])
    sub.add_argument("--count", type=_positive, default=8, help="faces per class (default 8)")
    sub = add("augment", "one face under each training augmentation", [data, image, out, seed])
    sub.add_argument("--count", type=_positive, default=4, help="random draws per augmentation (default 4)")

    sub = add("report", "a self-contained HTML page with every figure of a run", [data, seed],
              description="Write one HTML file (images embedded, no server needed) with the architecture, history, "
              "confusion matrix, calibration, class distribution, per-class saliency, Grad-CAM and LayerCAM, the "
              "first conv layer's kernels, filters of the first and last conv layers, activation maps, augmentations "
              "and the run's configuration.")
    sub.add_argument("run", metavar="RUN", help="the run directory")
    sub.add_argument("--out", metavar="FILE", help="the HTML file (default RUN/report.html)")
    sub.add_argument("--filters", type=_positive, default=8, help="filters shown per conv layer (default 8)")
    sub.add_argument("--steps", type=_positive, default=64, help="gradient-ascent steps (default 64)")
    return parser


# --------------------------------------------------------------------------------------------


def _safe_name(text):
    """A file-name-safe version of an image id ('angry/00012' -> 'angry_00012')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "image"


def _save(figure, out, name):
    from keras_fer.plots import FIGURE_FORMATS, save_figure

    folder = str(out).endswith(("/", os.sep))  # "figures.png/" names a folder; Path() drops the slash
    out = Path(out)
    path = save_figure(figure, out if out.suffix.lower() in FIGURE_FORMATS and not (folder or out.is_dir())
                       else out / name)
    print(f"wrote {path}")
    return path


def _context(args, raw_faces=True):
    """`(model, run)` from --run / --model (the faces are read by `_faces`, when needed);
    `raw_faces=False` takes a model whatever its input (`report.load_model`)."""
    from keras_fer import report

    run = report.read_run(args.run) if getattr(args, "run", None) else None
    packaged = False
    if run is not None:
        model_path = run.model_path
        if not model_path.is_file():
            raise FerOptionError(f"{run.path}: no best.keras in the run directory")
    elif getattr(args, "model", None):
        model_path = Path(args.model)
    else:
        from keras_fer.loading import default_model_path

        try:
            model_path = default_model_path()
        except FerModelError:
            raise FerOptionError(
                "no model: pass --run DIR (a training run directory) or --model FILE.keras "
                "(this install has no packaged model)"
            ) from None
        packaged = True
    model = report.load_model(model_path, raw_faces)
    print(f"model: the packaged model ({model_path})" if packaged else f"model: {model_path}")  # no figure says it
    return model, run


def _model_config(args, run=None):
    """`(config, path)`: the config.json beside the model (a run's, or the packaged model's, which
    records how its validation split was made); `(None, path)` when there is none."""
    from keras_fer.loading import default_model_path, resolve_model

    if run is not None:
        return run.config, run.path / "config.json"
    source = resolve_model(args.model if getattr(args, "model", None) else default_model_path())
    return source.config, source.config_path


def _faces(args, run=None):
    """The images (`report.load_faces`), saying so when they are the built-in demo faces: the
    README's `saliency --image 00000` explained one with the real-FER model, unannounced."""
    from keras_fer import report

    faces = report.load_faces(getattr(args, "data", None), run)
    if faces.note:
        packaged = hasattr(args, "model") and run is None and not args.model
        print(f"note: {faces.note}" + (", which the packaged model was not trained on" if packaged else ""))
    else:
        print(f"faces: {faces.description}")
    return faces


def _pick(args, run=None, faces=None):
    """The image `--image` names (default: the data's first); the data (`faces`, or else
    `_faces(args, run)`) is read only if `--image` is not an image file."""
    from keras_fer import report

    def load():
        return faces if faces is not None else _faces(args, run)

    if getattr(args, "image", None) is None:
        faces = load()
        if len(faces.images) == 0:
            raise FerOptionError(f"{faces.description} holds no images")
        return report.pick_row(faces, 0)
    pick = report.select_image(load, args.image, getattr(args, "detector", DETECTORS[0]))
    if pick.note:
        print(f"note: {pick.note}")
    return pick


def _file_stem(command):
    """The figure's file name stem: the command, with `++` spelled `pp` (gradcampp_00042.png)."""
    return command.replace("++", "pp")


def _explain(args):
    from keras_fer import report

    model, run = _context(args)
    if getattr(args, "layer", None) is not None:
        from keras_fer import explain

        explain.find_layer(model, args.layer)  # an unknown layer fails before any work
    options = {}
    if args.command == "smoothgrad":
        options = dict(samples=args.samples, noise=args.noise, seed=args.seed)
    if args.command == "scorecam":
        options = dict(max_channels=args.max_channels)
    if args.command == "occlusion":
        options = dict(patch=args.patch, stride=args.stride)
    if args.per_class:
        faces = _faces(args, run)
        config, config_path = _model_config(args, run)
        within, unseen = report.held_out_rows(faces, run, config, config_path, own_data=args.data is None)
        if unseen:
            print(f"note: {unseen}")
        picks, note = report.per_class_picks(model, faces, args.min_confidence, args.scan, within)
        if note:
            print(f"note: {note}")
        class_index, name = None, "per_class"
    else:
        pick = _pick(args, run)
        picks, class_index, name = [pick], args.class_index, _safe_name(pick.name)
    notes = []  # e.g. a Grad-CAM zero everywhere
    figure = report.explanation_figure(model, picks, args.command, class_index, getattr(args, "layer", None), notes,
                                       **options)
    for text in notes:
        print(f"note: {text}")
    return _save(figure, args.out, f"{_file_stem(args.command)}_{name}.png")


def _filters(args):
    from keras_fer import explain, report

    model, _ = _context(args)
    layer = explain.find_layer(model, args.layer).name
    if args.layer is None:  # the report's and activations' default: ascent on a linear output drew flat squares
        layer = report.rectified_layer(model, layer)
    figure = report.filters_figure(model, layer, args.count, args.filters, steps=args.steps, seed=args.seed)
    path = _save(figure, args.out, f"filters_{_safe_name(layer)}{_subset_suffix(args.filters)}.png")
    first = explain.conv_layers(model)[:1]
    if first and layer in (first[0], report.rectified_layer(model, first[0])):
        print(f"note: {first[0]} reads the image: its weights show more than gradient ascent can "
              f"(visualize.py kernels)")
    return path


def _kernels(args):
    from keras_fer import explain, report

    model, _ = _context(args, raw_faces=False)  # no forward pass: any input shape will do
    figure = report.kernels_figure(model, args.layer, args.filters)  # refuses a model without conv layers
    name = f"kernels_{_safe_name(explain.conv_layers(model)[0])}{_subset_suffix(args.filters)}.png"
    return _save(figure, args.out, name)


def _subset_suffix(filters):
    """The file name's mark of a --filters subset, so that it does not overwrite the figure of
    the whole layer: `_f3-7-12` (a long list: `_f40filters_` and a short hash of it)."""
    if filters is None:
        return ""
    unique = list(dict.fromkeys(filters))
    text = "-".join(str(index) for index in unique)
    if len(text) <= 40:
        return f"_f{text}"
    return f"_f{len(unique)}filters_{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _activations(args):
    from keras_fer import explain, report

    model, run = _context(args)
    # looked up only without --layer, as a model without conv layers (dnn) has no default
    layer = args.layer or report.default_activation_layer(model)
    layer = explain.find_layer(model, layer).name
    pick = _pick(args, run)
    figure = report.activations_figure(model, pick, layer, args.count)
    return _save(figure, args.out, f"activations_{_safe_name(layer)}_{_safe_name(pick.name)}.png")


def _history(args):
    from keras_fer import report

    return _save(report.history_figure(report.read_run(args.run)), args.out, "history.png")


def _compare(args):
    from keras_fer.ablation import cpu_hours_column, describe_run, lineage, summarize_run
    from keras_fer.plots import compare_figure

    repeat = first_repeat(args.runs)  # drawn once and listed once, it looked like a run left out
    if repeat is not None:
        run, earlier = (args.runs[index] for index in repeat)
        raise FerOptionError(f"{run} is given twice{'' if earlier == run else f' (as {earlier})'}: give each run "
                             f"once. Received: runs={args.runs}")
    rows = [summarize_run(run) for run in args.runs]
    histories, names, notes = {}, [], []
    for row in rows:
        name = Path(row["run"]).name or row["run"]
        name = name if name not in names else row["run"]
        names.append(name)
        label = name + (" (demo faces)" if row["demo"] else "")  # beside FER2013 runs, its 0.9 is no measurement
        histories[label] = row["history"]
        if args.x == "cpu-hours":
            ancestors, origin = lineage(row["run"])
            row["history"]["cpu_hours"], start = cpu_hours_column(row["run"], ancestors)
            chain = ", ".join(Path(folder).name for folder, _ in reversed(ancestors))
            after = f"; starts at {start:.2f} CPU-hours, after {chain}" if ancestors else ""
            if origin == "packaged":
                after += "; from the packaged model, whose own training is not counted"
            elif origin:
                after += f"; from {origin}, not a run directory with a history here: its cost is not counted"
            notes.append(after)
        else:
            notes.append("")
    figure = compare_figure(histories, title=args.title, x=args.x.replace("-", "_"))
    path = _save(figure, args.out, "compare.png")
    for name, row, note in zip(names, rows, notes):
        print(describe_run(name, row, note))
    return path


def _confusion(args):
    from keras_fer import report

    run = report.read_run(args.run)
    evaluation = report.run_evaluation(run)
    path = _save(report.confusion_figure(run, evaluation), args.out, "confusion.png")
    pairs = ", ".join(f"{t} -> {p} {s:.1%}" for t, p, s in evaluation.most_confused(3)) or "none"
    print(f"accuracy {evaluation.accuracy:.4f}; most confused: {pairs}")
    return path


def _calibration(args):
    from keras_fer import report

    run = report.read_run(args.run)
    evaluation = report.run_evaluation(run)
    scaled = report.recorded_temperature_calibration(run)  # an invalid temperature fails before any figure
    path = _save(report.calibration_figure(run, evaluation), args.out, "calibration.png")
    found = evaluation.calibration
    print(f"ECE {found.ece:.4f}, mean confidence {found.mean_confidence:.4f}, accuracy {found.accuracy:.4f}, "
          f"NLL {found.nll:.4f}")
    if scaled is not None:
        temperature, scaled = scaled
        print(f"with the temperature {temperature:g} its config.json records (what predict.py applies): ECE "
              f"{scaled.ece:.4f}, mean confidence {scaled.mean_confidence:.4f} (on the rows it was fitted on)")
    else:
        print(f"python -m keras_fer.calibrate {args.run} fits a temperature that makes predictions' confidences "
              "match (--dry-run shows what it gives)")
    return path


def _classes(args):
    from keras_fer import report

    return _save(report.classes_figure(_faces(args)), args.out, "classes.png")


def _samples(args):
    from keras_fer import report

    return _save(report.samples_figure(_faces(args), args.count, args.seed), args.out, "samples.png")


def _augment(args):
    from keras_fer import report

    pick = _pick(args)
    figure = report.augment_figure(pick, variants=args.count, seed=args.seed)
    return _save(figure, args.out, f"augment_{_safe_name(pick.name)}.png")


def _report(args):
    from keras_fer import report

    out = Path(args.out) if args.out else None
    if out is not None and args.out.endswith(("/", os.sep)):  # a folder, whatever its name: Path drops the "/"
        out = out / "report.html"
    if out is not None and not out.is_dir() and out.suffix.lower() not in (".html", ".htm"):
        # a name without a suffix (or ending in /) is a new folder for report.html, as every command's
        # --out folder; one with another suffix could be the run's model, history or config, or a data CSV
        if out.suffix or out.exists():
            raise FerOptionError(f"--out names the HTML file (.html) or a folder for report.html. "
                                 f"Received: out={args.out}")
    path = report.build_report(
        args.run, args.data, out, filters=args.filters, steps=args.steps, seed=args.seed,
        progress=lambda title: print(f"  {title}", file=sys.stderr),
    )
    print(f"wrote {path}")
    return path


HANDLERS = {
    "saliency": _explain, "smoothgrad": _explain, "gradcam": _explain, "gradcam++": _explain, "layercam": _explain,
    "scorecam": _explain, "occlusion": _explain, "filters": _filters, "kernels": _kernels,
    "activations": _activations,
    "history": _history, "compare": _compare,
    "confusion": _confusion, "calibration": _calibration, "classes": _classes, "samples": _samples,
    "augment": _augment, "report": _report,
}


# The figures training writes into a run directory, and the command that draws each.
RUN_FIGURES = {"history.png": "history", "confusion.png": "confusion", "calibration.png": "calibration"}
# Suffixes that name a file no figure is written as (anything else without a figure suffix is a folder).
NOT_FIGURES = (".gif", ".tif", ".tiff", ".webp", ".bmp", ".eps", ".ps", ".txt", ".csv", ".json", ".html", ".htm",
               ".keras", ".npz")


def _check_not_run_figure(args):
    """Refuse `--out` landing on a figure training wrote into a run directory, unless it is this
    command redrawing that run's own figure (`history --out RUN/confusion.png` replaced the
    confusion matrix, `history RUN_A --out RUN_B` run B's curves)."""
    from keras_fer.plots import FIGURE_FORMATS

    out = Path(args.out)
    if args.command != "report" and out.suffix.lower() in NOT_FIGURES and not out.is_dir():
        # it became a folder of that name holding the figure
        raise FerOptionError(f"--out {args.out}: figures are written as {', '.join(FIGURE_FORMATS)}; give one of "
                             "those, or a folder")
    if out.suffix.lower() not in FIGURE_FORMATS or out.is_dir():  # a folder: the command's default name
        out = out / {command: name for name, command in RUN_FIGURES.items()}.get(args.command, "")
    drawn_by = RUN_FIGURES.get(out.name)
    if drawn_by is None or not any((out.parent / name).is_file() for name in ("config.json", "history.csv",
                                                                               "best.keras")):
        return
    own = drawn_by == args.command and getattr(args, "run", None) and same_file(out.parent, args.run)
    if not own:
        raise FerOptionError(f"--out {args.out} would replace the {drawn_by} figure of the run in {out.parent}: "
                             "choose another file name or folder")


def _check_paths(args):
    """Check the run directories, `--model`, `--data` and an `--image` file before TensorFlow's
    import (4-5 s), so a mistyped path fails at once, with the message the command itself would give."""
    from keras_fer import report
    from keras_fer.data import existing_data_path
    from keras_fer.loading import resolve_model

    runs = getattr(args, "runs", None) or ([args.run] if getattr(args, "run", None) else [])
    for run in runs:
        report.read_run(run)
    if getattr(args, "model", None):
        resolve_model(args.model)
    photo = report.image_file(args.image) if getattr(args, "image", None) else None  # a mistyped photo fails
    if getattr(args, "data", None) and photo is None:  # a photo is explained without reading any data
        existing_data_path(args.data)


@command
def main(argv=None):
    args = build_parser().parse_args(argv)
    _check_paths(args)
    if getattr(args, "out", None):
        _check_not_run_figure(args)
    image = getattr(args, "image", None)
    if image and Path(image).is_file() and getattr(args, "out", None):  # a figure over the photo it explains
        check_not_input([("--out", args.out)], image, "the --image file")
    if getattr(args, "data", None) and getattr(args, "out", None):  # over, or among, the images of the data
        check_not_inside([("--out", args.out)], args.data)
    import_tensorflow_quietly()
    HANDLERS[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
