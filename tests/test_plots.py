"""keras_fer.plots: every figure builds without a display, saves atomically, and closes."""

import os

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from keras_fer import plots
from keras_fer.classes import CLASS_NAMES

PNG = b"\x89PNG\r\n\x1a\n"

HISTORY = {
    "epoch": [1, 2, 3],
    "loss": [1.9, 1.4, 1.1],
    "accuracy": [0.25, 0.45, 0.55],
    "val_loss": [1.8, 1.5, 1.4],
    "val_accuracy": [0.3, 0.42, 0.47],
    "lr": [1e-3] * 3,
    "seconds": [10.0] * 3,
}


def is_png(path):
    with open(path, "rb") as handle:
        return handle.read(8) == PNG


@pytest.mark.parametrize("history", [HISTORY, pd.DataFrame(HISTORY)], ids=["dict", "dataframe"])
def test_history_figure_has_loss_and_accuracy_panels(history, tmp_path):
    figure = plots.history_figure(history)
    assert isinstance(figure, Figure)
    loss, accuracy = figure.axes
    assert loss.get_title() == "Loss" and accuracy.get_title() == "Accuracy"
    assert [line.get_label() for line in loss.lines] == ["training", "validation"]
    np.testing.assert_allclose(accuracy.lines[1].get_ydata(), HISTORY["val_accuracy"])
    path = plots.save_figure(figure, tmp_path / "history.png")
    assert is_png(path)


def test_history_without_validation_columns():
    figure = plots.history_figure({"loss": [2.0, 1.0], "accuracy": [0.2, 0.4], "val_loss": [np.nan, np.nan]})
    assert [line.get_label() for line in figure.axes[0].lines] == ["training"]
    with pytest.raises(ValueError, match="loss"):
        plots.history_figure({"accuracy": [0.1]})


def test_confusion_figure_normalizes_rows_and_writes_values():
    confusion = np.diag([10, 2, 8, 20, 9, 7, 10]) + 1
    figure = plots.confusion_figure(confusion, CLASS_NAMES, normalize=True, title="val")
    axes = figure.axes[0]
    assert axes.get_title() == "val"
    assert [label.get_text() for label in axes.get_xticklabels()] == list(CLASS_NAMES)
    counts = confusion.sum(axis=1)
    assert [label.get_text() for label in axes.get_yticklabels()] == [f"{name} ({n})"
                                                                      for name, n in zip(CLASS_NAMES, counts)]
    texts = [text.get_text() for text in axes.texts]
    assert len(texts) == 49
    assert texts[0] == f"{11 / 17:.2f}"  # Angry row: 11 of 10 + 7 = 17
    shown = axes.images[0].get_array()
    np.testing.assert_allclose(np.asarray(shown).sum(axis=1), 1.0)
    counts = plots.confusion_figure(confusion, normalize=False).axes[0]
    assert counts.texts[0].get_text() == "11"
    with pytest.raises(ValueError, match="7x7"):
        plots.confusion_figure(np.ones((3, 3)))


def test_confusion_figure_draws_several_matrices_side_by_side():
    first, second = np.diag([10, 2, 8, 20, 9, 7, 10]) + 1, np.ones((7, 7))
    figure = plots.confusion_figure(np.stack([first, second]), CLASS_NAMES, title=["all rows", "PublicTest"])
    panels = [axes for axes in figure.axes if axes.images]  # the others are colour bars
    assert [axes.get_title() for axes in panels] == ["all rows", "PublicTest"]
    assert panels[0].texts[0].get_text() == f"{11 / 17:.2f}" and panels[1].texts[0].get_text() == f"{1 / 7:.2f}"
    assert figure.get_size_inches()[0] == pytest.approx(2 * plots.confusion_figure(first).get_size_inches()[0])
    with pytest.raises(ValueError, match="one entry per matrix"):
        plots.confusion_figure(np.stack([first, second]), title=["only one"])
    with pytest.raises(ValueError, match="7x7"):
        plots.confusion_figure(np.ones((2, 3, 3)))


def test_save_figure_is_atomic_and_closes(tmp_path):
    figure = plots.history_figure(HISTORY)
    target = tmp_path / "deep" / "folder" / "history.png"
    plots.save_figure(figure, target)
    assert is_png(target)
    assert sorted(os.listdir(target.parent)) == ["history.png"]  # no temporary left behind
    assert not figure.axes  # closed: cleared
    mode = os.stat(target).st_mode & 0o777
    assert mode & 0o044  # readable by others, as a normal file (not mkstemp's 0600)


def test_save_figure_leaves_no_partial_file_on_error(tmp_path):
    figure = plots.history_figure(HISTORY)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    figure.savefig = fail
    with pytest.raises(RuntimeError):
        plots.save_figure(figure, tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


def test_top_pixels_marks_the_requested_share():
    saliency = np.arange(100, dtype=float).reshape(10, 10)
    mask = plots.top_pixels(saliency, 0.05)
    assert mask.sum() == 5 and mask.ravel()[-5:].all()
    assert not plots.top_pixels(np.zeros((10, 10))).any()


def test_every_other_figure_renders(tmp_path):
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (3, 48, 48, 1)).astype(np.uint8)
    maps = rng.uniform(0, 1, (3, 48, 48))
    labels = np.arange(70) % 7
    figures = {
        "saliency": plots.saliency_figure(faces, maps, ["a", "b", "c"]),
        "heatmap": plots.heatmap_figure(faces, maps, ["a", "b", "c"]),
        "grid": plots.image_grid(faces, ["a", "b", "c"], columns=2, title="grid"),
        "filters": plots.filters_figure(faces.astype(float), [1.5, 2.0, 0.3], [0, 4, 9], "conv4"),
        "activations": plots.activations_figure(rng.normal(size=(12, 12, 20)), "conv2", image=faces[0], count=15),
        "classes": plots.class_distribution_figure(labels),
        "samples": plots.samples_figure(rng.integers(0, 256, (70, 48, 48, 1)), labels, per_class=3),
        "augment": plots.augment_figure(faces[0], {"shift": [faces[1], faces[2]], "flip": [faces[1]]}),
        "text": plots.text_figure("Model: x\nconv1  (None, 48, 48, 32)  320"),
    }
    assert len([axes for axes in figures["activations"].axes if axes.images]) == 16  # input + 15 maps
    bars = figures["classes"].axes[0].patches
    assert [bar.get_height() for bar in bars] == [10] * 7
    for name, figure in figures.items():
        assert isinstance(figure, Figure), name
        assert len(plots.png_bytes(figure)) > 1000, name


@pytest.mark.parametrize("name, magic", [("h.png", b"\x89PNG"), ("h.JPG", b"\xff\xd8\xff"), ("h.pdf", b"%PDF"),
                                         ("h.svg", b"<?xml"), ("h.figure", b"\x89PNG")])
def test_save_figure_takes_its_format_from_the_suffix(tmp_path, name, magic):
    plots.save_figure(plots.history_figure(HISTORY), tmp_path / name)
    assert (tmp_path / name).read_bytes().startswith(magic)  # an unknown suffix stays PNG


def test_saliency_maps_are_drawn_to_their_99th_percentile_with_a_scale():
    # One extreme pixel set each map's maximum, and the rest of the map was drawn nearly black.
    rng = np.random.default_rng(1)
    maps = rng.uniform(0.0, 0.1, (2, 48, 48))
    maps[:, 10, 10] = 1.0
    figure = plots.saliency_figure(np.full((2, 48, 48, 1), 128, np.uint8), maps, ["a", "b"])
    shown = np.asarray(figure.axes[1].images[0].get_array())
    top = np.percentile(maps[0], plots.SALIENCY_PERCENTILE)
    np.testing.assert_allclose(shown, np.clip(maps[0] / top, 0, 1))
    assert np.median(shown) > 0.45 and shown[10, 10] == 1.0  # was 0.05: the map was black
    (bar,) = [axes for axes in figure.axes if axes.get_xlabel().startswith("share of")]  # under the maps
    assert "99th percentile" in bar.get_xlabel()
    # Grad-CAM maps keep their maximum, and say so.
    figure = plots.heatmap_figure(np.full((1, 48, 48, 1), 128, np.uint8), maps[:1] / 2, ["a"])
    assert np.asarray(figure.axes[1].images[0].get_array()).max() == pytest.approx(0.5)
    assert any(axes.get_xlabel() == "share of each map's maximum" for axes in figure.axes)
    assert len(plots.png_bytes(figure)) > 1000


def test_a_flat_ascended_input_is_drawn_as_it_is_and_said_to_be_flat():
    # A filter that is zero on the grey start has no gradient: its input stays grey, and stretched
    # to full contrast its noise (a fraction of a grey level) looked like a strong texture.
    rng = np.random.default_rng(2)
    flat = 128 + rng.normal(0, 0.2, (48, 48, 1))
    textured = 128 + rng.normal(0, 30, (48, 48, 1))
    # An input that moved but whose filter barely rose (a first layer's filter, averaged over
    # the map, sees only the mean grey level) was a black or white square, stretched.
    uniform = 128 + rng.normal(0, 30, (48, 48, 1))
    figure = plots.filters_figure(np.stack([flat, textured, uniform]), [-0.001, 1.5, 0.02], [81, 3, 5], "conv8_act",
                                  start=np.array([0.0, 0.1, -0.01]))
    panels = [axes for axes in figure.axes if axes.images]
    assert [axes.get_title() for axes in panels] == ["conv8_act:81\n0.00 → 0.00  flat", "conv8_act:3\n0.10 → 1.50",
                                                     "conv8_act:5\n-0.01 → 0.02  no rise"]  # no "-0.00"
    assert panels[0].images[0].get_clim() == (0, 255)  # grey levels as they are
    assert panels[1].images[0].get_clim() == pytest.approx((textured.min(), textured.max()))  # stretched
    assert panels[2].images[0].get_clim() == (0, 255)


@pytest.mark.parametrize("count, shape", [(6, (2, 3)), (8, (2, 4)), (10, (2, 5)), (3, (1, 3)), (12, (3, 4))])
def test_filter_grids_fill_their_rows_evenly(count, shape):
    # 6 filters on 5 columns left 4 empty cells.
    faces = np.random.default_rng(0).integers(0, 256, (count, 48, 48)).astype(np.uint8)
    figure = plots.filters_figure(faces, np.ones(count), list(range(count)), "conv8")
    grid = figure.axes[0].get_subplotspec().get_gridspec()
    assert (grid.nrows, grid.ncols) == shape and sum(1 for axes in figure.axes if axes.images) == count


@pytest.mark.parametrize("count", [1, 2, 5])
def test_grid_titles_fit_their_figure_however_few_the_images(count):
    faces = np.random.default_rng(0).integers(0, 256, (count, 48, 48)).astype(np.uint8)
    figure = plots.filters_figure(faces, np.ones(count), list(range(count)), "conv8")
    figure.canvas.draw()
    box = figure._suptitle.get_window_extent()
    assert 0 <= box.x0 and box.x1 <= figure.bbox.width and box.y1 <= figure.bbox.height
    assert figure._suptitle.get_text().replace("\n", " ") == "What activates the filters of conv8 (gradient ascent)"


def test_timeline_draws_each_class_and_leaves_gaps_without_a_face():
    probabilities = np.full((4, 7), 1 / 7)
    probabilities[1] = np.nan  # no face in the second frame
    probabilities[3] = np.eye(7)[3]
    figure = plots.timeline_figure([0.0, 0.5, 1.0, 1.5], probabilities)
    lines_axes, strip_axes = figure.axes[:2]
    assert [line.get_label() for line in lines_axes.get_lines()] == list(CLASS_NAMES)
    assert np.isnan(lines_axes.get_lines()[0].get_ydata()[1])
    (mesh,) = strip_axes.collections  # one artist for the strip, however long the video
    top = mesh.get_array().reshape(-1)
    assert top.mask.tolist() == [False, True, False, False]  # no colour where there was no face
    assert top[0] == 0 and top[3] == 3  # the top class (a tie goes to the first)
    assert "3 of 4 analysed frames" in figure._suptitle.get_text()
    with pytest.raises(ValueError):
        plots.timeline_figure([0.0, 1.0], np.ones((3, 7)))


@pytest.mark.parametrize("draw", [plots.saliency_figure, plots.heatmap_figure])
@pytest.mark.parametrize("count", [1, 3])
def test_map_panels_line_up_with_the_faces_beside_them(draw, count):
    # The colour bar was taken from the maps' column: its panels came out smaller and 22 px lower.
    images = np.full((count, 48, 48, 1), 128, np.uint8)
    maps = np.random.default_rng(0).random((count, 48, 48))
    figure = draw(images, maps, [f"row {row}" for row in range(count)])
    figure.canvas.draw()
    images_axes = [axes for axes in figure.axes if axes.get_images()]
    assert len(images_axes) == 3 * count
    boxes = np.array([axes.get_position().bounds for axes in images_axes]).reshape(count, 3, 4)
    for row in boxes:  # y, width and height equal across a row
        np.testing.assert_allclose(row[:, 1:], np.repeat(row[:1, 1:], 3, axis=0), atol=1e-3)
    bar = [axes for axes in figure.axes if not axes.get_images()]
    assert len(bar) == 1 and bar[0].get_position().y1 <= boxes[-1, 1, 1] + 1e-6  # under the maps
    plots.close_figure(figure)


def test_a_uniform_activation_map_is_titled_with_its_value():
    # A rectified channel that is 0 everywhere, scaled to its own (empty) range, could not be read.
    maps = np.random.default_rng(0).random((6, 6, 3))
    maps[..., 1] = 0.0
    figure = plots.activations_figure(maps, "conv4_act")
    assert [axes.get_title() for axes in figure.axes if axes.images] == ["#0", "#1 all 0.00", "#2"]
    plots.close_figure(figure)


def test_history_rings_the_best_epoch_and_labels_it_above():
    figure = plots.history_figure(HISTORY)
    accuracy = figure.axes[1]
    ring = [line for line in accuracy.lines if line.get_markerfacecolor() == "none"]
    assert len(ring) == 1 and list(ring[0].get_xdata()) == [3] and list(ring[0].get_ydata()) == [0.47]
    label = [text for text in accuracy.texts if text.get_text().startswith("best")]
    assert label[0].get_text() == "best 0.470 (epoch 3)" and label[0].get_va() == "bottom"
    plots.close_figure(figure)


def test_a_normalized_confusion_matrix_gives_each_true_class_its_count():
    # A row of 1.00 may be one image: the row labels say how many.
    from keras_fer.metrics import evaluate

    labels = np.array([0, 0, 1, 2, 3, 4, 5, 6, 6])
    probabilities = np.eye(7)[labels]
    evaluation = evaluate(labels, probabilities)
    figure = plots.confusion_figure(evaluation.confusion, title=plots.confusion_title("Validation", evaluation))
    axes = [axes for axes in figure.axes if axes.images][0]
    assert [label.get_text() for label in axes.get_yticklabels()] == [
        "Angry (2)", "Disgust (1)", "Fear (1)", "Happy (1)", "Sad (1)", "Surprise (1)", "Neutral (2)"]
    assert axes.get_title() == "Validation: 9 images\naccuracy 1.0000, macro-F1 1.0000"
    plots.close_figure(figure)


def test_kernels_share_one_symmetric_colour_scale_and_fill_rows_evenly():
    weights = np.random.default_rng(0).normal(0, 0.1, (12, 5, 5))
    weights[3, 2, 2] = -0.9  # the strongest weight sets the scale of every panel
    figure = plots.kernels_figure(weights, np.arange(12), "conv1", channels=3)
    panels = [axes for axes in figure.axes if axes.images and axes.get_title()]
    assert [axes.get_title() for axes in panels] == [str(i) for i in range(12)]
    assert {axes.images[0].get_clim() for axes in panels} == {(-0.9, 0.9)}
    grid = panels[0].get_subplotspec().get_gridspec()
    assert (grid.nrows, grid.ncols - 1) == (2, 6)  # 12 on at most 8 columns: 2 rows of 6, then the colour bar
    title = figure._suptitle.get_text().replace("\n", " ")
    assert "Kernels of conv1: 12 filters, 5x5, summed over its 3 input channels" in title
    assert plots.png_bytes(figure)[:8] == PNG


@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_few_kernels_keep_the_layers_scale_and_a_title_that_fits(count):
    # Two of 21 filters cut both title lines at the figure's edges, and took the colours of
    # their own largest weight.
    weights = np.random.default_rng(0).normal(0, 0.1, (count, 7, 7))
    figure = plots.kernels_figure(weights, list(range(count)), "conv1", channels=3, scale=2.0, total=64)
    panels = [axes for axes in figure.axes if axes.images and axes.get_title()]
    assert {axes.images[0].get_clim() for axes in panels} == {(-2.0, 2.0)}
    text = figure._suptitle.get_text()
    assert f"{count} of 64 filters" in text.replace("\n", " ")
    figure.canvas.draw()
    box = figure._suptitle.get_window_extent()
    assert 0 <= box.x0 and box.x1 <= figure.bbox.width and box.y1 <= figure.bbox.height
