"""Matplotlib figures: one function per figure, each returns a `matplotlib.figure.Figure`.

Figures are built with the object-oriented API (`matplotlib.figure.Figure`, rendered by Agg), so
nothing here touches pyplot's global state or needs a display, and nothing calls `show()`.
The caller saves a figure with `save_figure` (atomic PNG) or embeds it with `png_bytes`.

Example:
>>> figure = history_figure({"epoch": [1, 2], "loss": [1.9, 1.5], "accuracy": [0.2, 0.4],
...                          "val_loss": [1.8, 1.6], "val_accuracy": [0.25, 0.35]})
>>> save_figure(figure, "history.png")  # doctest: +SKIP
"""

import io
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot; a no-op when a backend is already Agg

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from keras_fer.classes import CLASS_NAMES  # noqa: E402
from keras_fer.files import atomic_open  # noqa: E402

#: Share of the most salient pixels marked in red on the "most influential pixels" panel.
TOP_FRACTION = 0.05
SALIENCY_CMAP = "inferno"
HEATMAP_CMAP = "jet"
#: Saliency maps are drawn up to this percentile of each map (brighter pixels saturate), so a
#: few extreme pixels do not leave the rest of the map black (as PAIR's saliency code does).
SALIENCY_PERCENTILE = 99.0
#: An input found by gradient ascent spreading less than this many grey levels (standard
#: deviation) is drawn as it is and titled "flat": stretched, its noise looks like a pattern.
FLAT_SPREAD = 1.0
#: An ascent whose filter's mean activation rose less than this is titled "no rise" and drawn
#: as it is: a first layer's 3x3 filter, averaged over the map, is driven by the mean grey level
#: alone, and its uniform input stretched to full contrast was a black or white square.
RISE_MIN = 0.05


def _figure(width, height):
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)  # attach a canvas so the figure renders without pyplot
    return figure


def _column(history, name):
    if hasattr(history, "columns"):  # a pandas DataFrame
        return None if name not in history.columns else np.asarray(history[name], dtype=float)
    values = history.get(name)
    return None if values is None else np.asarray(values, dtype=float)


def _face(image):
    """A `(H, W)` float view of one grayscale image, whatever its trailing channel."""
    image = np.asarray(image, dtype=float)
    return image[..., 0] if image.ndim == 3 else image


def _hide_axes(axes):
    axes.set_xticks([])
    axes.set_yticks([])


# --------------------------------------------------------------------------------------------
# Training


def history_figure(history, title=None):
    """Loss and accuracy per epoch, training and validation (the reports' history figure).

    Args:
        history: a dict of lists or a pandas DataFrame with columns `epoch`, `loss`,
            `accuracy`, `val_loss`, `val_accuracy` (any of the `val_` columns may be missing
            or NaN, e.g. when training without a validation split).
        title: optional figure title.
    """
    loss = _column(history, "loss")
    if loss is None:
        raise ValueError("history needs at least a `loss` column")
    epochs = _column(history, "epoch")
    if epochs is None:
        epochs = np.arange(1, len(loss) + 1)
    figure = _figure(11, 4.2)
    panels = figure.subplots(1, 2)
    for axes, metric, label in ((panels[0], "loss", "loss"), (panels[1], "accuracy", "accuracy")):
        for prefix, name, style in (("", "training", "-"), ("val_", "validation", "--")):
            values = _column(history, prefix + metric)
            if values is not None and np.isfinite(values).any():
                axes.plot(epochs, values, style, marker="o" if len(values) <= 30 else None,
                          markersize=3, label=name)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label)
        axes.set_title(label.capitalize())
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend()
    val_accuracy = _column(history, "val_accuracy")
    if val_accuracy is not None and np.isfinite(val_accuracy).any():
        best = int(np.nanargmax(val_accuracy))  # ringed, and labelled above it (below, it sat on the axis)
        panels[1].plot(epochs[best], val_accuracy[best], "o", markersize=9, markerfacecolor="none",
                       markeredgecolor="black", zorder=5)
        panels[1].annotate(
            f"best {val_accuracy[best]:.3f} (epoch {epochs[best]:g})", (epochs[best], val_accuracy[best]),
            textcoords="offset points", xytext=(0, 9), ha="center", va="bottom", fontsize=9,
        )
        panels[1].margins(y=0.12)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


COMPARE_AXES = {"epoch": "epoch", "cpu_hours": "CPU-hours"}


def compare_figure(histories, title=None, x="epoch"):
    """Several runs' curves on shared axes: an ablation or a model comparison as one figure.

    Left, validation accuracy (solid) and training accuracy (dotted, same colour); right,
    validation loss. Each validation curve's best value is marked and given in the legend.

    Args:
        histories: `{label: history}`, each history a dict of lists or a DataFrame with the
            columns `history_figure` reads.
        title: optional figure title.
        x: the column on the horizontal axis: `"epoch"`, or `"cpu_hours"` (the CPU time spent
            by the end of each epoch, e.g. from `keras_fer.ablation.cpu_hours_column`), which
            puts runs of different cost, or a run and the runs it continued, on one cost axis
            (drawn in CPU-minutes when all of them together end under a CPU-hour).
    """
    if not histories:
        raise ValueError("compare_figure needs at least one history. Received: histories={}")
    if x not in COMPARE_AXES:
        raise ValueError(f"x must be one of {', '.join(COMPARE_AXES)}. Received: x={x!r}")
    scale, x_label = 1.0, COMPARE_AXES[x]
    if x == "cpu_hours":  # runs of under a CPU-hour in all: minutes (0.0012 CPU-hours read badly)
        ends = [np.nanmax(column) for column in (_column(history, x) for history in histories.values())
                if column is not None and np.isfinite(column).any()]
        if ends and max(ends) < 1.0:
            scale, x_label = 60.0, "CPU-minutes"
    figure = _figure(12, 4.6)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    # Ten distinct colours while they suffice, else twenty (no two runs share one up to 20).
    colors = matplotlib.colormaps["tab10" if len(histories) <= 10 else "tab20"].colors
    for index, (label, history) in enumerate(histories.items()):
        color = colors[index % len(colors)]
        loss = _column(history, "loss")
        positions = _column(history, x)
        if positions is None and x == "epoch":
            positions = np.arange(1, 1 + (0 if loss is None else len(loss)))
        elif positions is None:
            raise ValueError(f"history {label!r} has no {x!r} column. Received: x={x!r}")
        positions = np.asarray(positions, dtype=float) * scale
        val_accuracy = _column(history, "val_accuracy")
        legend = label
        if val_accuracy is not None and np.isfinite(val_accuracy).any():
            best = int(np.nanargmax(val_accuracy))
            legend = f"{label}: best {val_accuracy[best]:.3f}"  # "run (demo faces) (best 0.157)" read badly
            accuracy_axes.plot(positions, val_accuracy, "-", color=color, label=legend)
            accuracy_axes.plot(positions[best], val_accuracy[best], "o", color=color, markersize=5)
        accuracy = _column(history, "accuracy")
        if accuracy is not None:
            accuracy_axes.plot(positions, accuracy, ":", color=color)
        val_loss = _column(history, "val_loss")
        if val_loss is not None and np.isfinite(val_loss).any():
            loss_axes.plot(positions, val_loss, "-", color=color, label=label)
    for axes, name in ((accuracy_axes, "accuracy (solid: validation, dotted: training)"),
                       (loss_axes, "validation loss")):
        axes.set_xlabel(x_label)
        if x == "epoch":
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(name.split(" (")[0])
        axes.set_title(name.capitalize())
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            handles, labels = axes.get_legend_handles_labels()
            if axes is accuracy_axes:  # the line styles, in the key as well as the title
                handles += [Line2D([], [], color="grey", linestyle=style) for style in ("-", ":")]
                labels += ["validation", "training"]
            axes.legend(handles, labels, fontsize=9)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def timeline_figure(positions, probabilities, xlabel="seconds", class_names=CLASS_NAMES, title=None, source=None):
    """Expressions over time (a video): each class's probability as a line, and beneath it a
    strip coloured by the top class; NaN rows (no face) leave gaps.

    Args:
        positions: `(T,)` times (or frame numbers) of the rows.
        probabilities: `(T, K)` class probabilities, NaN rows where there was no face.
        source: the video's name, to begin the default title with.
    """
    positions = np.asarray(positions, dtype=float)
    probabilities = np.asarray(probabilities, dtype=float).reshape(len(positions), len(class_names))
    colors = matplotlib.colormaps["tab10"].colors
    figure = _figure(10, 4.4)
    lines_axes, strip_axes = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [5, 1]})
    for index, name in enumerate(class_names):
        # Markers too: a frame whose neighbours have no face is a lone point, which a line alone would not show.
        lines_axes.plot(positions, probabilities[:, index], "-o", color=colors[index], label=name, linewidth=1.2,
                        markersize=2.5)
    lines_axes.set_ylim(0, 1)
    lines_axes.set_ylabel("probability")
    lines_axes.grid(alpha=0.3)
    lines_axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    seen = ~np.isnan(probabilities).any(axis=1)
    if len(positions):
        # One mesh for the whole strip (a span per frame would be 100,000 artists for an hour of
        # video): cell edges halfway between frames, the ends half a step out.
        step = float(np.median(np.diff(positions))) if len(positions) > 1 else 1.0
        middles = (positions[1:] + positions[:-1]) / 2
        edges = np.concatenate([[positions[0] - step / 2], middles, [positions[-1] + step / 2]])
        top = np.ma.masked_array(np.nan_to_num(probabilities, nan=0.0).argmax(axis=1), mask=~seen)
        strip_axes.pcolormesh(edges, [0, 1], top[None, :], cmap=ListedColormap(colors[:len(class_names)]),
                              vmin=-0.5, vmax=len(class_names) - 0.5)
    strip_axes.set_yticks([])
    strip_axes.set_ylabel("top", rotation=0, ha="right", va="center")
    strip_axes.set_xlabel(xlabel)
    frames_with_face = int(seen.sum())
    figure.suptitle(title or f"{source + ': e' if source else 'E'}xpressions over time ({frames_with_face} of "
                    f"{len(positions)} analysed frames with a face; the largest face of each)")
    figure.tight_layout()
    return figure


def confusion_title(name, evaluation):
    """The title of a confusion matrix of `evaluation` (a `metrics.Evaluation`), one format for
    training's, visualize's and predict's: `"Validation: 2,872 images\naccuracy 0.6630,
    macro-F1 0.6226"`."""
    count = int(np.sum(evaluation.support))
    return (f"{name}: {count:,} image{'s' if count != 1 else ''}\n"
            f"accuracy {evaluation.accuracy:.4f}, macro-F1 {evaluation.macro_f1:.4f}")


def confusion_figure(confusion, class_names=CLASS_NAMES, normalize=True, title=None):
    """A confusion matrix: rows are true classes, columns predicted, a value in every cell;
    normalized, each true class is labelled with its number of images (a row of 1.00 may be one).

    Args:
        confusion: `(C, C)` counts (rows true, columns predicted), or a sequence of them
            (e.g. one per data split), drawn side by side.
        class_names: the names on both axes.
        normalize: show each row's shares (rows sum to 1) instead of counts.
        title: the title (default "Confusion matrix (normalized)" or "... (counts)"), or one
            per matrix when there are several.
    """
    several = np.ndim(confusion) == 3
    matrices = list(confusion) if several else [confusion]
    titles = list(title) if several and title is not None and not isinstance(title, str) else [title] * len(matrices)
    if len(titles) != len(matrices):
        raise ValueError(f"title needs one entry per matrix ({len(matrices)}). Received {len(titles)}")
    values = [_confusion_values(matrix, class_names, normalize) for matrix in matrices]
    size = len(class_names)
    figure = _figure((1.0 + 0.9 * size) * len(matrices), 0.6 + 0.85 * size)
    panels = figure.subplots(1, len(matrices), squeeze=False)[0]
    for axes, matrix, shown, panel_title in zip(panels, matrices, values, titles):
        counts = np.asarray(matrix, dtype=float).sum(axis=1) if normalize else None
        _confusion_panel(figure, axes, shown, class_names, normalize, panel_title, counts)
    figure.tight_layout()
    return figure


def _confusion_values(confusion, class_names, normalize):
    counts = np.asarray(confusion, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise ValueError(f"confusion must be {len(class_names)}x{len(class_names)}. Received shape {counts.shape}")
    if not normalize:
        return counts
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def _confusion_panel(figure, axes, values, class_names, normalize, title, counts=None):
    size = len(class_names)
    image = axes.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(values.max(), 1.0))
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(size), labels=class_names, rotation=45, ha="right")
    rows = class_names if counts is None else [f"{name} ({int(n):,})" for name, n in zip(class_names, counts)]
    axes.set_yticks(range(size), labels=rows)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = (1.0 if normalize else values.max()) / 2.0
    for row in range(size):
        for column in range(size):
            value = values[row, column]
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            axes.text(column, row, text, ha="center", va="center", fontsize=9,
                      color="white" if value > threshold else "black")
    axes.set_title(title or f"Confusion matrix ({'normalized' if normalize else 'counts'})")


def calibration_title(name, calibration):
    """`"Validation: 2,872 images\nECE 0.041, NLL 0.921"`."""
    count = calibration.total
    return (f"{name}: {count:,} image{'s' if count != 1 else ''}\n"
            f"ECE {calibration.ece:.3f}, NLL {calibration.nll:.3f}")


def calibration_figure(calibrations, titles=None):
    """Reliability diagrams: for each confidence bin, the accuracy of the images in it (bars)
    against the mean confidence they were given (red marks; the diagonal is perfect
    calibration), over the share of images in each bin (the strip below).

    Args:
        calibrations: a `metrics.Calibration`, or a sequence of them drawn side by side (e.g.
            one per data split).
        titles: one title per panel (default: ECE and NLL).
    """
    several = isinstance(calibrations, (list, tuple))
    panels = list(calibrations) if several else [calibrations]
    titles = [None] * len(panels) if titles is None else [titles] if isinstance(titles, str) else list(titles)
    if len(titles) != len(panels):
        raise ValueError(f"titles needs one entry per calibration ({len(panels)}). Received {len(titles)}")
    figure = _figure(4.2 * len(panels), 5.0)
    grid = figure.add_gridspec(2, len(panels), height_ratios=(3, 1), hspace=0.08)
    for column, (found, title) in enumerate(zip(panels, titles)):
        top = figure.add_subplot(grid[0, column])
        bottom = figure.add_subplot(grid[1, column], sharex=top)
        edges = found.edges
        width = edges[1] - edges[0]
        centres = edges[:-1] + width / 2
        filled = found.counts > 0
        top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
        top.bar(centres[filled], found.bin_accuracy[filled], width=width * 0.9, color="#4c72b0",
                edgecolor="white", label="accuracy")
        top.scatter(centres[filled], found.bin_confidence[filled], marker="_", s=160, color="#c44e52", zorder=3,
                    linewidths=2, label="mean confidence")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy")
        top.set_title(title or f"ECE {found.ece:.3f}, NLL {found.nll:.3f}")
        top.legend(loc="upper left", fontsize=8)
        top.tick_params(labelbottom=False)
        shares = found.counts / max(found.total, 1)
        bottom.bar(centres, shares, width=width * 0.9, color="#8c8c8c")
        bottom.set_ylim(0, max(shares.max(), 0.01) * 1.15)
        bottom.set_xlabel("confidence (top-class probability)")
        bottom.set_ylabel("images")
        bottom.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    figure.subplots_adjust(left=0.12 / len(panels) + 0.04, right=0.97 - 0.02 / len(panels), top=0.88, bottom=0.11,
                           wspace=0.28)
    return figure


# --------------------------------------------------------------------------------------------
# Saving


FIGURE_FORMATS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def save_figure(figure, path, dpi=100):
    """Write `figure` at `path` atomically (a temporary file in the same folder, then
    `os.replace`), creating the folder if needed, and close the figure. Returns the path.

    The format follows the name's suffix when it is one of `FIGURE_FORMATS`, else PNG."""
    suffix = Path(path).suffix.lower()
    kind = suffix[1:] if suffix in FIGURE_FORMATS else "png"
    try:
        with atomic_open(path, "wb") as stream:
            figure.savefig(stream, format=kind, dpi=dpi)
    finally:
        close_figure(figure)
    return Path(path)


def png_bytes(figure, dpi=100, close=True):
    """The figure rendered as PNG bytes (for embedding in HTML); closes it unless `close=False`."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    if close:
        close_figure(figure)
    return buffer.getvalue()


def close_figure(figure):
    """Release a figure; only pyplot-managed figures need pyplot's close."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(figure)
    figure.clear()


# --------------------------------------------------------------------------------------------
# Explanations


def top_pixels(saliency, fraction=TOP_FRACTION):
    """A bool mask of the `fraction` most salient pixels of one `(H, W)` map."""
    saliency = np.asarray(saliency, dtype=float)
    count = max(1, int(round(fraction * saliency.size)))
    threshold = np.partition(saliency.ravel(), -count)[-count]
    return saliency >= threshold if threshold > 0 else np.zeros(saliency.shape, bool)


def _marked(image, mask):
    """The grayscale `image` as RGB with `mask` pixels painted red."""
    gray = np.clip(_face(image), 0, 255) / 255.0
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgb[mask] = (1.0, 0.0, 0.0)
    return rgb


def _map_rows(count):
    """`(figure, grid, bar axes)`: `count` rows of three panels (original, map, third view), and
    under the maps' column a thin row of its own for the colour bar. A colour bar taken from the
    maps' axes (`colorbar(ax=...)`) shrank that column only, and its panels sat lower than the
    others'."""
    figure = _figure(7.2, 2.5 * count + 0.6)  # the colour bar's room, under the maps
    figure.set_layout_engine("constrained")
    spec = figure.add_gridspec(count + 1, 3, height_ratios=[1.0] * count + [0.05])
    grid = np.array([[figure.add_subplot(spec[row, column]) for column in range(3)] for row in range(count)])
    return figure, grid, figure.add_subplot(spec[count, 1])


def _scale_bar(figure, bar_axes, image, label):
    """The maps' colour bar, in its row under them."""
    bar = figure.colorbar(image, cax=bar_axes, orientation="horizontal")
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def saliency_figure(images, maps, titles=None, top_fraction=TOP_FRACTION, method="saliency"):
    """Per image one row: the original, the saliency map, and the original with the
    `top_fraction` most influential pixels marked in red (report 002's layout).

    Each map is drawn up to its `SALIENCY_PERCENTILE`-th percentile, so that one extreme pixel
    does not leave the rest dark; the colour bar says so.

    Args:
        images: `(N, H, W, 1)` faces (grey levels).
        maps: `(N, H, W)` maps normalized to [0, 1].
        titles: one label per row (e.g. "Happy (p=0.97)").
        method: the name shown over the middle column.
    """
    images, maps = np.asarray(images), np.asarray(maps, dtype=float)
    count = len(images)
    figure, grid, bar_axes = _map_rows(count)
    for row in range(count):
        face = _face(images[row])
        top = np.percentile(maps[row], SALIENCY_PERCENTILE)
        shown = np.clip(maps[row] / top, 0.0, 1.0) if top > 0 else np.zeros_like(maps[row])
        grid[row, 0].imshow(face, cmap="gray", vmin=0, vmax=255)
        image = grid[row, 1].imshow(shown, cmap=SALIENCY_CMAP, vmin=0.0, vmax=1.0)
        grid[row, 2].imshow(_marked(face, top_pixels(maps[row], top_fraction)))
        grid[row, 0].set_ylabel(titles[row] if titles is not None else "", fontsize=9)
        for axes in grid[row]:
            _hide_axes(axes)
    grid[0, 0].set_title("original", fontsize=10)
    grid[0, 1].set_title(textwrap.fill(method, 30), fontsize=10)  # a long one would run over its neighbours
    grid[0, 2].set_title(f"top {top_fraction:.0%} pixels", fontsize=10)
    _scale_bar(figure, bar_axes, image, f"share of each map's {SALIENCY_PERCENTILE:.0f}th percentile")
    return figure


def heatmap_figure(images, heatmaps, titles=None, method="Grad-CAM", alpha=0.45):
    """Per image one row: the original, the heatmap, and the heatmap over the original.

    Args:
        images: `(N, H, W, 1)` faces; heatmaps: `(N, H, W)` in [0, 1].
    """
    images, heatmaps = np.asarray(images), np.asarray(heatmaps)
    count = len(images)
    colormap = matplotlib.colormaps[HEATMAP_CMAP]
    figure, grid, bar_axes = _map_rows(count)
    for row in range(count):
        face = _face(images[row])
        gray = np.repeat((np.clip(face, 0, 255) / 255.0)[..., None], 3, axis=2)
        overlay = (1 - alpha) * gray + alpha * colormap(heatmaps[row])[..., :3]
        grid[row, 0].imshow(face, cmap="gray", vmin=0, vmax=255)
        image = grid[row, 1].imshow(heatmaps[row], cmap=HEATMAP_CMAP, vmin=0.0, vmax=1.0)
        grid[row, 2].imshow(np.clip(overlay, 0, 1))
        grid[row, 0].set_ylabel(titles[row] if titles is not None else "", fontsize=9)
        for axes in grid[row]:
            _hide_axes(axes)
    grid[0, 0].set_title("original", fontsize=10)
    grid[0, 1].set_title(textwrap.fill(method, 30), fontsize=10)  # a long one would run over its neighbours
    grid[0, 2].set_title("overlay", fontsize=10)
    # Each map is scaled to its own maximum: a class at probability 0.00 fills the scale too.
    _scale_bar(figure, bar_axes, image, "share of each map's maximum")
    return figure


def image_grid(images, titles=None, columns=5, title=None, cmap="gray", normalize_each=True, cell=1.6):
    """A grid of single-channel images with optional per-image titles.

    Args:
        images: `(N, H, W)` or `(N, H, W, 1)`, or a list of 2-D images of any sizes.
        normalize_each: stretch each image to its own min-max (feature maps, ascended inputs);
            otherwise show grey levels 0-255 as they are. One bool, or one per image.
        cmap: a colormap name, or one per image.
    """
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    width = cell * columns + 0.2
    # A narrow grid (one or two images) wraps its title rather than cut it at the edges:
    # about 8 characters of the 12-point title fit in an inch.
    title_lines = textwrap.wrap(title, max(12, int(width * 8))) if title else []
    title_height = 0.2 + 0.25 * len(title_lines) if title_lines else 0.1
    lines = max((str(text).count("\n") + 1 for text in titles), default=0) if titles is not None else 0
    figure = _figure(width, cell * rows + title_height + 0.25 * lines * rows)  # two-line titles: twice the room
    grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(grid.ravel()):
        _hide_axes(axes)
        if index >= count:
            axes.set_axis_off()
            continue
        face = _face(images[index])
        colors = cmap if isinstance(cmap, str) else cmap[index]
        if normalize_each if isinstance(normalize_each, (bool, np.bool_)) else normalize_each[index]:
            axes.imshow(face, cmap=colors)
        else:
            axes.imshow(face, cmap=colors, vmin=0, vmax=255)
        if titles is not None:
            axes.set_title(titles[index], fontsize=8)
    if title_lines:
        figure.suptitle("\n".join(title_lines))
    figure.tight_layout()
    return figure


def _number(value):
    """`value` to 2 decimals, without a negative zero ("-0.00")."""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def filters_figure(images, activations, filters, layer, columns=5, start=None):
    """Inputs found by gradient ascent, one per filter, titled with the filter and, on a second
    line, the mean activation reached (`start → reached` when `start` is given), each stretched
    to its own range. Drawn as they are (grey levels 0-255), not stretched:

    - "flat": an input spreading less than `FLAT_SPREAD` grey levels; the ascent could not move
      it (a filter that is zero on the grey start has no gradient there);
    - "no rise": an activation that rose less than `RISE_MIN` from `start`.

    The grid has at most `columns` columns, as few as fill its rows evenly (6 filters: 3 by 2).
    """
    images = np.asarray(images, dtype=float)
    spread = images.reshape(len(images), -1).std(axis=1) if len(images) else np.zeros(0)
    flat = spread < FLAT_SPREAD
    rose = np.ones(len(images), bool) if start is None else (
        np.asarray(activations, float) - np.asarray(start, float) >= RISE_MIN)
    reached = [f"{_number(s)} → {_number(a)}" for s, a in zip(start, activations)] if start is not None else [
        f"act {_number(a)}" for a in activations]
    marks = ["  flat" if is_flat else "" if has_risen else "  no rise" for is_flat, has_risen in zip(flat, rose)]
    titles = [f"{layer}:{f}\n{text}{mark}" for f, text, mark in zip(filters, reached, marks)]
    rows = max(1, -(-len(images) // columns))
    return image_grid(images, titles, columns=-(-len(images) // rows), normalize_each=list(~flat & rose),
                      title=f"What activates the filters of {layer} (gradient ascent)")


KERNEL_CMAP = "RdBu_r"


def kernels_figure(weights, filters, layer, channels=1, columns=8, scale=None, total=None):
    """A conv layer's kernels `(F, kh, kw)`, one panel per filter, on one symmetric colour
    scale (red positive, blue negative, white zero) so that kernels compare by strength as well
    as shape; one colour bar.

    Args:
        weights: `(F, kh, kw)` kernels; filters: their filter indices (panel titles).
        channels: > 1 says the kernels are sums over that many input channels.
        columns: the grid has at most this many columns, as few as fill its rows evenly.
        scale: the colour scale's end (default the largest absolute weight drawn): the layer's
            largest, so that some filters drawn alone keep their colours.
        total: the layer's number of filters, when `weights` are some of them.
    """
    weights = np.asarray(weights, dtype=float)
    count = len(weights)
    if weights.ndim != 3 or not count:
        raise ValueError(f"weights must be (filters, height, width) with at least one filter. "
                         f"Received: weights.shape={weights.shape}")
    rows = -(-count // columns)
    columns = -(-count // rows)
    limit = float(scale or np.abs(weights).max()) or 1.0
    cell = 0.85
    shown = f"{count} of {total} filters" if total and total > count else f"{count} filter{'s' * (count != 1)}"
    width = max(3.6, cell * columns + 0.9)
    lines = [f"Kernels of {layer}: {shown}, {weights.shape[1]}x{weights.shape[2]}"
             + (f", summed over its {channels} input channels" if channels > 1 else ""),
             "red positive, blue negative weights; one scale for all"]
    # About 15 characters of the 9-point title fit in an inch: a narrow grid wraps it (a single
    # filter's figure is wider than its grid, so that the title wraps little).
    title = "\n".join(part for line in lines for part in textwrap.wrap(line, max(16, int(width * 15.5))))
    figure = _figure(width, (cell + 0.12) * rows + 0.25 + 0.16 * (title.count("\n") + 1))
    figure.set_layout_engine("constrained")
    spec = figure.add_gridspec(rows, columns + 1, width_ratios=[1.0] * columns + [0.12])
    image = None
    for index in range(rows * columns):
        axes = figure.add_subplot(spec[index // columns, index % columns])
        _hide_axes(axes)
        if index >= count:
            axes.set_axis_off()
            continue
        image = axes.imshow(weights[index], cmap=KERNEL_CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
        axes.set_title(str(filters[index]), fontsize=7, pad=2)
    bar = figure.colorbar(image, cax=figure.add_subplot(spec[:, columns]))
    bar.set_label("weight", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=9)
    return figure


def activations_figure(maps, layer, image=None, count=None, columns=8, title=None):
    """The feature maps `(H, W, C)` of `layer` for one image, one panel per channel (the first
    `count` channels), with the input first when `image` is given."""
    maps = np.asarray(maps, dtype=float)
    channels = maps.shape[-1] if count is None else min(count, maps.shape[-1])
    panels = [maps[..., index] for index in range(channels)]
    # A uniform map (a rectified channel that is 0 everywhere) has no range to scale to: said so
    titles = [f"#{index}" + ("" if np.ptp(panel) > 0 else f" all {_number(panel.flat[0])}")
              for index, panel in enumerate(panels)]
    colors = ["viridis"] * channels
    if image is not None:
        panels.insert(0, _face(image))
        titles.insert(0, "input")
        colors.insert(0, "gray")
    return image_grid(
        panels, titles, columns=columns, cmap=colors,
        title=title or f"Activation maps of {layer} ({maps.shape[0]}x{maps.shape[1]}, "
                       f"{channels} of {maps.shape[-1]} channels)",
    )


# --------------------------------------------------------------------------------------------
# Data


def class_distribution_figure(labels, class_names=CLASS_NAMES, title=None):
    """A bar chart of images per class, with count and share over each bar (report 003)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=len(class_names))[: len(class_names)]
    total = max(int(counts.sum()), 1)
    figure = _figure(8, 4.2)
    axes = figure.subplots()
    bars = axes.bar(range(len(class_names)), counts, color="tab:blue")
    for bar, count in zip(bars, counts):
        axes.annotate(f"{count}\n{count / total:.1%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      textcoords="offset points", xytext=(0, 2), ha="center", va="bottom", fontsize=8)
    axes.set_xticks(range(len(class_names)), labels=class_names)
    axes.set_ylabel("images")
    axes.set_ylim(0, max(counts.max(), 1) * 1.22)
    axes.set_title(title or f"Class distribution ({total} images)")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def samples_figure(pixels, labels, per_class=6, class_names=CLASS_NAMES, seed=0, title=None):
    """A grid of example faces: one row per class, `per_class` random faces in each."""
    pixels, labels = np.asarray(pixels), np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    size = len(class_names)
    figure = _figure(1.25 * per_class + 1.2, 1.3 * size + 0.5)
    grid = figure.subplots(size, per_class, squeeze=False)
    for label in range(size):
        members = np.flatnonzero(labels == label)
        chosen = rng.permutation(members)[:per_class]
        for column in range(per_class):
            axes = grid[label, column]
            _hide_axes(axes)
            if column < len(chosen):
                axes.imshow(_face(pixels[chosen[column]]), cmap="gray", vmin=0, vmax=255)
            else:
                for spine in axes.spines.values():
                    spine.set_visible(False)
        grid[label, 0].set_ylabel(f"{class_names[label]}\n({len(members)})", fontsize=9)
    figure.suptitle(title or "Examples per class")
    figure.tight_layout()
    return figure


def augment_figure(original, augmented, title=None):
    """One face and its versions under each augmentation.

    Args:
        original: `(H, W, 1)` grey levels.
        augmented: dict `{augmentation name: list of (H, W, 1) images}` (one or more each).
    """
    names = list(augmented)
    variants = max((len(images) for images in augmented.values()), default=1)
    figure = _figure(1.5 * (variants + 1) + 0.4, 1.55 * len(names) + 0.6)
    grid = figure.subplots(len(names), variants + 1, squeeze=False)
    for row, name in enumerate(names):
        grid[row, 0].imshow(_face(original), cmap="gray", vmin=0, vmax=255)
        grid[row, 0].set_ylabel(name, fontsize=9)
        for column in range(variants):
            axes = grid[row, column + 1]
            if column < len(augmented[name]):
                axes.imshow(_face(augmented[name][column]), cmap="gray", vmin=0, vmax=255)
            else:
                axes.set_axis_off()
        for axes in grid[row]:
            _hide_axes(axes)
    grid[0, 0].set_title("original", fontsize=9)
    figure.suptitle(title or "Augmentations")
    figure.tight_layout()
    return figure


def text_figure(text, title=None, fontsize=8):
    """Monospaced text as a figure (e.g. a model summary for a PNG)."""
    lines = str(text).splitlines() or [""]
    figure = _figure(max(4.0, 0.075 * fontsize * max(len(line) for line in lines)),
                     0.2 + 0.16 * fontsize / 8 * len(lines))
    figure.text(0.01, 0.99, "\n".join(lines), family="monospace", fontsize=fontsize, va="top", ha="left")
    if title:
        figure.suptitle(title)
    return figure
