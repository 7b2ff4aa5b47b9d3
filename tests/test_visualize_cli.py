"""fer-visualize: every subcommand writes its figure; bad input is one line and exit 2."""

import base64
import json
import re

import keras
import numpy as np
import pytest
from keras import layers

from keras_fer import synthetic
from keras_fer.classes import CLASS_NAMES
from keras_fer.cli.visualize import main
from keras_fer.errors import FerDataError, FerOptionError
from keras_fer.models import summary_table
from keras_fer.models.layers import Preprocessing

PNG = b"\x89PNG\r\n\x1a\n"
DEMO_FACES, TRAIN, SEED = 350, 280, 3


def tiny_model():
    inputs = keras.Input((48, 48, 1), name="image")
    x = Preprocessing(normalize="image", name="preprocessing")(inputs)
    for index, width in enumerate((8, 16), start=1):
        x = layers.Conv2D(width, 3, padding="same", name=f"conv{index}")(x)
        x = layers.ReLU(name=f"conv{index}_act")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return keras.Model(inputs, layers.Dense(7, name="logits")(x), name="tiny")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as training writes it, from a tiny model trained on demo faces."""
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("run")
    demo = synthetic.generate(DEMO_FACES, seed=SEED).images
    pixels = demo.pixels.astype("float32")
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    fit = model.fit(pixels[:TRAIN], demo.labels[:TRAIN], validation_data=(pixels[TRAIN:], demo.labels[TRAIN:]),
                    batch_size=32, epochs=3, verbose=0)
    model.save(folder / "best.keras")
    logits = model.predict(pixels[TRAIN:], verbose=0)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    np.savez(folder / "validation.npz", labels=demo.labels[TRAIN:], probabilities=probabilities,
             ids=demo.ids[TRAIN:].astype(str))
    (folder / "config.json").write_text(json.dumps({
        "arch": "tiny", "data": None, "val": f"first:{TRAIN}", "seed": SEED, "normalize": "image",
        "augment": "none", "options": {"demo_faces": DEMO_FACES},
    }))
    rows = ["epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds"]
    for epoch in range(3):
        values = [fit.history[key][epoch] for key in ("loss", "accuracy", "val_loss", "val_accuracy")]
        rows.append(",".join([str(epoch + 1)] + [f"{v:.5f}" for v in values] + ["0.003", "1.0"]))
    (folder / "history.csv").write_text("\n".join(rows) + "\n")
    (folder / "summary.txt").write_text(summary_table(model) + "\n")
    return folder


@pytest.fixture(autouse=True)
def no_fer_data(monkeypatch):
    monkeypatch.delenv("FER_DATA", raising=False)


def check_png(path):
    assert path.is_file() and path.stat().st_size > 2000
    assert path.read_bytes()[:8] == PNG


COMMANDS = {
    "saliency": (["saliency", "--image", "00000"], "saliency_00000.png"),
    "saliency-per-class": (["saliency", "--per-class"], "saliency_per_class.png"),
    "smoothgrad": (["smoothgrad", "--image", "3", "--samples", "4"], "smoothgrad_00003.png"),
    "gradcam-per-class": (["gradcam", "--per-class", "--layer", "conv1"], "gradcam_per_class.png"),
    "gradcam-class": (["gradcam", "--image", "00001", "--class", "Happy"], "gradcam_00001.png"),
    "gradcam++": (["gradcam++", "--image", "00001", "--layer", "conv2"], "gradcampp_00001.png"),
    "layercam": (["layercam", "--per-class", "--layer", "conv1"], "layercam_per_class.png"),
    "scorecam": (["scorecam", "--image", "00001", "--max-channels", "4"], "scorecam_00001.png"),
    "occlusion": (["occlusion", "--image", "00001", "--patch", "12", "--stride", "12"], "occlusion_00001.png"),
    "filters": (["filters", "--layer", "conv2", "--count", "4", "--steps", "8"], "filters_conv2.png"),
    "activations": (["activations", "--layer", "conv1", "--image", "00002"], "activations_conv1_00002.png"),
    "kernels": (["kernels"], "kernels_conv1.png"),
    "kernels-subset": (["kernels", "--filters", "0,3"], "kernels_conv1_f0-3.png"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_model_subcommands_write_pngs(name, run_dir, tmp_path, capsys):
    argv, filename = COMMANDS[name]
    assert main(argv + ["--run", str(run_dir), "--out", str(tmp_path)]) == 0
    check_png(tmp_path / filename)
    assert f"wrote {tmp_path / filename}" in capsys.readouterr().out


def test_model_file_and_image_file(run_dir, tmp_path, capsys):
    import cv2

    face = synthetic.generate(1, seed=9).images.pixels[0]
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), cv2.resize(face, (96, 96)))  # any size: made 48x48
    out = tmp_path / "out"
    assert main(["saliency", "--model", str(run_dir / "best.keras"), "--image", str(photo), "--out", str(out)]) == 0
    check_png(out / "saliency_photo.png")
    # An image file is explained without reading --data (it read the whole data first, and a
    # broken or unrelated data file failed the figure).
    broken = tmp_path / "broken.csv"
    broken.write_text("label,feature\n9,1 2 3\n")
    for argv, name in ((["saliency", "--model", str(run_dir / "best.keras")], "saliency_photo.png"),
                       (["augment", "--count", "1"], "augment_photo.png")):
        assert main([*argv, "--image", str(photo), "--data", str(broken), "--out", str(out)]) == 0
        check_png(out / name)
    # Nor is a --data that names nothing (checked before TensorFlow's import, it failed the photo).
    assert main(["saliency", "--model", str(run_dir / "best.keras"), "--image", str(photo),
                 "--data", str(tmp_path / "nowhere.csv"), "--out", str(tmp_path / "out2")]) == 0
    check_png(tmp_path / "out2" / "saliency_photo.png")


@pytest.mark.parametrize("argv, filename", [
    (["history", "{run}"], "history.png"),
    (["confusion", "{run}"], "confusion.png"),
    (["calibration", "{run}"], "calibration.png"),
    (["classes"], "classes.png"),
    (["samples", "--count", "3"], "samples.png"),
    (["augment", "--image", "00002", "--count", "2"], "augment_00002.png"),
])
def test_run_and_data_subcommands_write_pngs(argv, filename, run_dir, tmp_path):
    argv = [part.format(run=run_dir) for part in argv]
    assert main(argv + ["--out", str(tmp_path)]) == 0
    check_png(tmp_path / filename)


def test_per_class_says_how_many_images_it_scanned(monkeypatch):
    from keras_fer import report

    faces = report.Faces(synthetic.generate(14, seed=0).images, None, "14 demo faces")
    monkeypatch.setattr(report, "confident_examples", lambda *args: [])  # no correct prediction among them
    with pytest.raises(FerDataError, match=r"predicts none of the 1 image scanned \(--scan\) of 14 demo faces"):
        report.per_class_picks(None, faces, limit=1)  # it said "no image of 14 demo faces", having seen one
    with pytest.raises(FerDataError, match=r"predicts none of the images of 14 demo faces"):
        report.per_class_picks(None, faces, limit=100)
    with pytest.raises(FerDataError, match=r"predicts none of the 4 held-out images of 14 demo faces"):
        report.per_class_picks(None, faces, limit=100, within=np.arange(4))  # it blamed --scan


def test_samples_shows_at_most_the_faces_a_class_has(tmp_path):
    import cv2

    from keras_fer import report
    from keras_fer.plots import save_figure

    faces = report.Faces(synthetic.generate(14, seed=0).images, None, "14 demo faces")  # two faces a class
    for count in (2, 500):
        save_figure(report.samples_figure(faces, count), tmp_path / f"{count}.png")
    two, many = (cv2.imread(str(tmp_path / f"{count}.png")) for count in (2, 500))
    assert many.shape == two.shape  # 500 a class drew a 62,620-pixel-wide strip of blanks


def test_report_is_one_self_contained_page(run_dir, tmp_path):
    from keras_fer.report import SECTIONS

    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(out), "--filters", "3", "--steps", "8"]) == 0
    page = out.read_text(encoding="utf-8")
    sections = dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', page, re.S))
    assert list(sections) == [key for key, _ in SECTIONS]
    text_only = {"architecture", "configuration"}
    for key, body in sections.items():
        assert "Not available" not in body, key
        if key in text_only:
            assert "<pre>" in body, key
            continue
        images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', body)
        assert images, f"section {key} has no embedded image"
        assert base64.b64decode(images[0])[:8] == PNG
    assert "conv1" in sections["architecture"] and '"seed": 3' in sections["configuration"]
    assert "Most confused pairs" in sections["confusion"]
    assert re.search(r"on the validation split: ECE 0\.\d{3} \(0 is perfect\), mean confidence 0\.\d{3} against "
                     r"accuracy 0\.\d{3}", sections["calibration"])
    # Nothing points outside the page: every src is a data URI, every link an anchor.
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', page))
    assert not re.search(r"url\(|@import|<script|<link", page)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # written atomically


def test_an_image_is_picked_by_row_number_given_as_a_number():
    from keras_fer import report

    faces = report.load_faces(None, None, demo_faces=7)
    for spec in (3, np.int64(3), "3", "00003"):  # a number was a TypeError from Path()
        assert report.select_image(faces, spec).name == str(faces.images.ids[3])



def test_an_id_that_several_images_share_is_noted_with_their_rows(tmp_path):
    # A labelled folder may hold happy/0.png and happy/0.jpg: one id, two faces; --image happy/0
    # explained the first without a word.
    import cv2

    from keras_fer import data, report

    for name, value in (("0.png", 40), ("0.jpg", 200), ("1.png", 90)):
        (tmp_path / "happy").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "happy" / name), np.full((48, 48), value, np.uint8))
    faces = report.Faces(data.read(tmp_path), None, "3 faces")
    picked = report.select_image(faces, "happy/0")
    assert picked.name == "happy/0" and picked.note == (
        "2 images have the id 'happy/0' (rows 0, 1): this is row 0, the first")
    assert abs(float(picked.pixels.mean()) - 200) < 2  # 0.jpg sorts first
    assert report.select_image(faces, "happy/1").note is None
    assert report.select_image(faces, "1").note is None  # a row number names one image

def test_a_summary_that_is_not_utf8_is_a_data_error_the_report_shows(run_dir, tmp_path):
    import shutil

    from keras_fer import report

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "summary.txt").write_bytes(b"\xff\xfe")  # was a UnicodeDecodeError traceback out of the report
    with pytest.raises(FerDataError, match=r"summary\.txt: unreadable model summary"):
        report.read_run(copy).summary()
    out = tmp_path / "report.html"
    assert main(["report", str(copy), "--out", str(out), "--filters", "1", "--steps", "2"]) == 0
    sections = dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', out.read_text(encoding="utf-8"), re.S))
    assert "Not available" in sections["architecture"] and "unreadable model summary" in sections["architecture"]


def test_report_uses_the_validation_split_only_for_the_runs_own_data(run_dir, tmp_path, monkeypatch):
    from keras_fer import report

    searched = []
    real_picks = report.per_class_picks

    def recording_picks(model, faces, *args, within=None, **kwargs):
        searched.append(within)
        return real_picks(model, faces, *args, within=within, **kwargs)

    monkeypatch.setattr(report, "per_class_picks", recording_picks)
    # The run's demo faces with their ids, so the data given holds the validation ids.
    demo = synthetic.generate(DEMO_FACES, seed=SEED).images
    rows = [f"{i},{label},{' '.join(map(str, face.reshape(-1).tolist()))}"
            for i, label, face in zip(demo.ids, demo.labels, demo.pixels)]
    (tmp_path / "faces.csv").write_text("\n".join(["id,label,feature"] + rows) + "\n")
    pages = {}
    for name, data_argv in (("own", []), ("given", ["--data", str(tmp_path / "faces.csv")])):
        out = tmp_path / f"{name}.html"
        assert main(["report", str(run_dir), "--out", str(out), "--filters", "1", "--steps", "2"] + data_argv) == 0
        pages[name] = re.search(r'<section id="saliency">(.*?)</section>', out.read_text(encoding="utf-8"), re.S)[1]
    own, given = searched
    assert list(own) == list(range(TRAIN, DEMO_FACES)) and given is None
    assert "(validation split)" in pages["own"] and "(validation split)" not in pages["given"]


def error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["saliency", "--image", "../../etc/passwd"], "id or row number of"),  # either message, by the cwd
    (["saliency", "--image", "99999"], "no image with id '99999'"),
    (["gradcam", "--image", "0", "--layer", "conv9"], "conv layers are conv1, conv2"),
    (["filters", "--layer", "dense"], "conv layers are conv1, conv2"),
    (["activations", "--layer", "logits"], "no 2-D feature maps"),
    (["kernels", "--filters", "9"], "layer 'conv1' has filters 0-7. Received: filter=9"),
    (["kernels", "--layer", "conv2"], "layer 'conv2' reads the feature maps of the layers before it, not the image"),
    (["saliency", "--model", "missing.keras"], "no such model file"),
])
def test_bad_options_are_one_line_and_exit_2(argv, message, run_dir, tmp_path, capsys):
    if "--model" not in argv:
        argv = argv + ["--run", str(run_dir)]
    assert main(argv + ["--out", str(tmp_path)]) == 2
    assert message in error_line(capsys)
    assert not list(tmp_path.iterdir())


def test_a_model_that_does_not_take_raw_faces_says_how_to_build_one(tmp_path, capsys):
    # A resnet18 built without preprocessing= takes (48, 48, 3): the error gave no way forward.
    from conftest import tiny_model

    path = tmp_path / "rgb.keras"
    tiny_model(input_shape=(48, 48, 3), preprocessing=False).save(path)
    assert main(["saliency", "--model", str(path), "--out", str(tmp_path / "figures")]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {path}: the model takes (None, 48, 48, 3), not raw faces (None, 48, 48, 1)")
    assert "build_model(name, preprocessing={'normalize': 'unit'})" in line
    assert not (tmp_path / "figures").exists()
    # kernels runs no forward pass: it draws the first layer whatever the model's input, summed
    # over the three channels as for a model fed grey faces.
    assert main(["kernels", "--model", str(path), "--out", str(tmp_path / "figures")]) == 0
    (drawn,) = (tmp_path / "figures").glob("kernels_*.png")
    check_png(drawn)


def test_a_filter_subset_does_not_overwrite_the_whole_layers_figure(run_dir, tmp_path):
    from keras_fer.cli.visualize import _subset_suffix

    out = tmp_path / "figures"
    for argv in (["kernels"], ["kernels", "--filters", "3,1,3"],
                 ["filters", "--layer", "conv2", "--count", "1", "--steps", "1"],
                 ["filters", "--layer", "conv2", "--filters", "2", "--steps", "1"]):
        assert main(argv + ["--run", str(run_dir), "--out", str(out)]) == 0
    assert sorted(path.name for path in out.iterdir()) == [
        "filters_conv2.png", "filters_conv2_f2.png", "kernels_conv1.png", "kernels_conv1_f3-1.png"]
    # A filter given twice is drawn once, as kernels does: the figure and its name agree.
    from keras_fer import report

    model = report.load_model(run_dir / "best.keras")
    twice, once = (report.filters_figure(model, "conv2", filters=chosen, steps=1) for chosen in ([2, 2], [2]))
    titles = [[axes.get_title() for axes in figure.axes] for figure in (twice, once)]
    assert len(twice.axes) == len(once.axes) and titles[0] == titles[1]
    # A long list is named by its count and a hash: two long lists differ, one is stable.
    many, others = list(range(40)), list(range(1, 41))
    assert _subset_suffix(many).startswith("_f40filters_") and len(_subset_suffix(many)) < 30
    assert _subset_suffix(many) == _subset_suffix(list(many)) != _subset_suffix(others)


def test_image_must_be_an_image_file(run_dir, tmp_path, capsys, monkeypatch):
    from keras_fer import report

    secret = tmp_path / "secret.csv"
    secret.write_text("label,feature\n")
    assert main(["saliency", "--run", str(run_dir), "--image", str(secret), "--out", str(tmp_path / "o")]) == 2
    assert error_line(capsys).startswith(f"error: {secret}: not a supported image (use .jpg, .jpeg, .png")
    # A GIF said "no image with id"; a mistyped photo loaded the demo faces and said "--image must
    # be an id or row number of 700 demo faces". Neither reads any data now.
    (tmp_path / "anim.gif").write_bytes(b"GIF89a")
    monkeypatch.setattr(report, "load_faces", lambda *args, **kwargs: pytest.fail("read the data"))
    for image, says in (("anim.gif", "not a supported image (use .jpg"), ("nope.png", "no such file"),
                        ("nope.gif", "no such file"), ("photos/nope.JPG", "no such file")):
        assert main(["saliency", "--model", str(run_dir / "best.keras"), "--image", str(tmp_path / image),
                     "--out", str(tmp_path / "o")]) == 2
        assert error_line(capsys).startswith(f"error: {tmp_path / image}: {says}")
    monkeypatch.undo()
    # Any other missing path is looked up as an id ("angry/00012" is one) before it is called missing.
    assert main(["saliency", "--model", str(run_dir / "best.keras"), "--image", str(tmp_path / "notes.txt"),
                 "--out", str(tmp_path / "o")]) == 2
    assert error_line(capsys).startswith(f"error: {tmp_path / 'notes.txt'}: no such file, nor an id or row number "
                                         "of 700 demo faces")
    assert not (tmp_path / "o").exists()


def test_outputs_never_replace_the_photo_or_the_run(run_dir, tmp_path, capsys):
    import cv2

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), synthetic.generate(1, seed=9).images.pixels[0])
    kept = {path: path.read_bytes() for path in (photo, run_dir / "best.keras", run_dir / "history.csv")}
    assert main(["saliency", "--run", str(run_dir), "--image", str(photo), "--out", str(photo)]) == 2
    assert f"--out {photo} would overwrite the --image file" in error_line(capsys)
    for target in ("best.keras", "history.csv"):
        assert main(["report", str(run_dir), "--out", str(run_dir / target)]) == 2
        assert "--out names the HTML file (.html) or a folder for report.html" in error_line(capsys)
    # A new folder is made for report.html, as every command's --out folder (it was refused).
    fresh = tmp_path / "fresh" / "report.v2"  # a dot in a folder's name: "/" says it is one
    assert main(["report", str(run_dir), "--out", f"{fresh}/", "--filters", "1", "--steps", "1"]) == 0
    assert (fresh / "report.html").is_file()
    capsys.readouterr()
    # One command's figure never replaces the other figure training wrote into the run.
    for command, target, kind in (("history", "confusion.png", "confusion"), ("confusion", "history.png", "history")):
        if (run_dir / target).exists():
            kept[run_dir / target] = (run_dir / target).read_bytes()
        assert main([command, str(run_dir), "--out", str(run_dir / target)]) == 2
        assert f"--out {run_dir / target} would replace the {kind} figure of the run in {run_dir}" in error_line(capsys)
    # Nor another run's figure, named or by the folder form's default name.
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    for name in ("history.png", "confusion.png"):
        (other / name).write_bytes(b"run B's own figure")
        kept[other / name] = (other / name).read_bytes()
    for argv, kind in ((["history", str(run_dir), "--out", str(other / "history.png")], "history"),
                       (["confusion", str(run_dir), "--out", str(other)], "confusion")):
        assert main(argv) == 2
        assert f"would replace the {kind} figure of the run in {other}" in error_line(capsys)
    assert main(["classes", "--out", str(tmp_path / "e.gif")]) == 2  # it became a folder named e.gif
    assert "figures are written as .png, .jpg, .jpeg, .pdf, .svg" in error_line(capsys)
    assert not (tmp_path / "e.gif").exists()
    assert {path: path.read_bytes() for path in kept} == kept


def test_a_figure_never_lands_among_the_data_images(tmp_path, capsys):
    import cv2

    (tmp_path / "faces" / "angry").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "faces" / "angry" / "0.png"), np.full((48, 48), 100, np.uint8))
    before = (tmp_path / "faces" / "angry" / "0.png").read_bytes()
    for command in ("classes", "samples"):
        out = tmp_path / "faces" / "angry" / "0.png"
        assert main([command, "--data", str(tmp_path / "faces"), "--out", str(out)]) == 2
        assert "is inside the data folder" in error_line(capsys)
    assert (tmp_path / "faces" / "angry" / "0.png").read_bytes() == before


def test_no_model_asks_for_a_run(monkeypatch, tmp_path, capsys):
    from keras_fer import loading

    monkeypatch.setattr(loading, "WEIGHTS_DIR", tmp_path / "no-weights")  # an install without a packaged model
    assert main(["saliency", "--out", str(tmp_path)]) == 2
    assert "pass --run DIR" in error_line(capsys)


def test_no_model_uses_the_packaged_one(tmp_path, capsys):
    from keras_fer import loading

    if not (loading.WEIGHTS_DIR / "best.keras").is_file():
        pytest.skip("this install has no packaged model")
    assert main(["filters", "--count", "1", "--steps", "2", "--out", str(tmp_path)]) == 0
    # by default the last conv layer's rectified output, as the report's (the linear one drew flat squares)
    from keras_fer import explain, report

    model = report.load_model(loading.default_model_path())
    last = report.rectified_layer(model, explain.conv_layers(model)[-1])
    assert last.endswith("_act") and [p.name for p in tmp_path.iterdir()] == [f"filters_{last}.png"]


def test_run_without_files(tmp_path, capsys):
    assert main(["history", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no history.csv" in error_line(capsys)
    assert main(["history", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not a run directory" in error_line(capsys)


@pytest.mark.parametrize("options, message", [
    (["saliency", "--data", "{tmp}/nowhere.csv"], "{tmp}/nowhere.csv: no such file or folder"),
    (["saliency", "--model", "{tmp}/none.keras"], "{tmp}/none.keras: no such model file"),
    (["gradcam", "--run", "{tmp}/none"], "{tmp}/none: not a run directory (a folder written by train.py --out)"),
    (["report", "{tmp}/none"], "{tmp}/none: not a run directory (a folder written by train.py --out)"),
    (["compare", "{tmp}", "{tmp}/none"], "{tmp}/none: not a run directory (a folder written by train.py --out)"),
    (["saliency", "--image", "{tmp}/face.png"], "{tmp}/face.png: no such file. Received: image='{tmp}/face.png'"),
])
def test_a_mistyped_path_fails_before_tensorflow_is_imported(tmp_path, monkeypatch, capsys, options, message):
    # These failed only after TensorFlow's import, 4-5 s.
    def no_tensorflow():
        raise AssertionError("TensorFlow was imported before the paths were checked")

    monkeypatch.setattr("keras_fer.cli.visualize.import_tensorflow_quietly", no_tensorflow)
    out = tmp_path / "figures"
    assert main([item.replace("{tmp}", str(tmp_path)) for item in options] + ["--out", str(out)]) == 2
    assert error_line(capsys) == "error: " + message.replace("{tmp}", str(tmp_path))
    assert not out.exists()


def test_unwritable_out_is_one_line(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")  # --out names a file where a folder should be
    assert main(["classes", "--out", str(tmp_path / "file.txt")]) == 2
    assert "file.txt" in error_line(capsys)
    (tmp_path / "o" / "classes.png").mkdir(parents=True)  # a folder where the figure should go
    assert main(["classes", "--out", str(tmp_path / "o")]) == 2
    line = error_line(capsys)
    assert str(tmp_path / "o" / "classes.png") in line and "Is a directory" in line
    assert list((tmp_path / "o").iterdir()) == [tmp_path / "o" / "classes.png"]  # no temporary left


@pytest.mark.parametrize("error, words", [
    (PermissionError(13, "Permission denied", "/read-only/out.png"), "error: /read-only/out.png: Permission denied"),
    (IsADirectoryError(21, "Is a directory", "/tmp/.x.png.tmp", None, "/tmp/x.png"),
     "error: /tmp/x.png: Is a directory"),
    (OSError(28, "No space left on device"), "error: No space left on device"),
])
def test_command_turns_any_os_error_into_one_line(error, words, capsys):
    from keras_fer.cli import command

    def failing(argv=None):
        raise error

    assert command(failing)([]) == 2
    assert error_line(capsys) == words


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["saliency", "--bogus"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus" in error_line(capsys)
    with pytest.raises(SystemExit):
        main(["saliency", "--class", "Bored"])
    assert "unknown class 'Bored'" in error_line(capsys)
    with pytest.raises(SystemExit):
        main(["saliency", "--per-class", "--class", "Sad"])
    assert "not allowed with" in error_line(capsys)


def test_cam_titles_give_the_layers_resolution_and_activations_default_to_a_rectified_layer():
    # A 6x6 map upsampled to 48x48 looks as sharp as a 24x24 one; the title now says which it is.
    # The activation maps showed the linear conv output before BatchNorm (no common scale or sign).
    from keras_fer import explain, report

    keras.utils.set_random_seed(1)
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.ReLU(name="conv1_act")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="conv2_act")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(7, name="logits")(x))
    pick = report.Picked(synthetic.generate(1, seed=0).images.pixels[0], 3, "face")
    titles = {method: report.explanation_figure(model, [pick], method).axes[1].get_title()
              for method in ("gradcam", "layercam")}
    assert titles == {"gradcam": "Grad-CAM (conv2, 24x24)", "layercam": "LayerCAM (conv2_act, 24x24)"}
    assert report.explanation_figure(model, [pick], "gradcam", layer="conv1").axes[1].get_title() == \
        "Grad-CAM (conv1, 48x48)"
    assert report.activations_figure(model, pick).texts[0].get_text().startswith("Activation maps of conv1_act ")
    assert report.activations_figure(model, pick, "conv1").texts[0].get_text().startswith("Activation maps of conv1 ")
    # The class named is the label and the prediction, each said to be which
    probabilities = explain.probabilities(model, pick.pixels[None].astype("float32"))[0]
    predicted = f"predicted {CLASS_NAMES[int(np.argmax(probabilities))]} {probabilities.max():.2f}"
    text = " ".join(report.activations_figure(model, pick).texts[0].get_text().split())
    assert f"for face (true Happy, {predicted}):" in text and text.endswith("each scaled to its own range")
    # Occlusion drawn without options says which square the library's defaults used.
    title = " ".join(report.explanation_figure(model, [pick], "occlusion").axes[1].get_title().split())
    patch, stride = explain.OCCLUSION_PATCH, explain.OCCLUSION_STRIDE
    assert title == f"Occlusion ({patch}x{patch} grey square, stride {stride})"
    with pytest.raises(FerOptionError, match="unknown option 'patches'"):  # a typo is not silently ignored
        report.explanation_figure(model, [pick], "occlusion", patches=4)


def test_the_command_line_defaults_are_the_librarys(capsys):
    from keras_fer import explain, report
    from keras_fer.cli.visualize import build_parser

    parser = build_parser()
    per_class = parser.parse_args(["saliency", "--per-class"])
    assert (per_class.min_confidence, per_class.scan) == (report.MIN_CONFIDENCE, report.SCAN_LIMIT)
    occlusion = parser.parse_args(["occlusion"])
    smoothgrad = parser.parse_args(["smoothgrad"])
    assert (occlusion.patch, occlusion.stride) == (explain.OCCLUSION_PATCH, explain.OCCLUSION_STRIDE)
    assert (smoothgrad.samples, smoothgrad.noise) == (explain.SMOOTHGRAD_SAMPLES, explain.SMOOTHGRAD_NOISE)
    for command, defaults in (("saliency", (report.MIN_CONFIDENCE, report.SCAN_LIMIT)),
                              ("occlusion", (explain.OCCLUSION_PATCH, explain.OCCLUSION_STRIDE)),
                              ("smoothgrad", (explain.SMOOTHGRAD_SAMPLES, explain.SMOOTHGRAD_NOISE))):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert all(f"(default {value}" in text for value in defaults), text


def test_a_grad_cam_that_is_zero_everywhere_is_said_so():
    # The README's demo cnn4 gave blank Grad-CAMs for 2 of 5 faces, drawn without a word: it looked
    # like a broken tool. Here every class's evidence at conv1 is negative: ReLU leaves nothing.
    from keras_fer import report

    def model_of(sign):  # class evidence sign x (a positive map): all negative for sign -1
        inputs = keras.Input((48, 48, 1))
        x = keras.layers.Conv2D(1, 3, padding="same", kernel_initializer="ones", name="conv1")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(7, kernel_initializer=keras.initializers.Constant(sign * 0.01),
                                                      name="logits")(x))

    picks = [report.Picked(face, 3, f"face{i}") for i, face in enumerate(synthetic.generate(2, seed=0).images.pixels)]
    notes = []
    figure = report.explanation_figure(model_of(-1), picks, "gradcam", notes=notes)
    assert figure.axes[0].get_ylabel().endswith("\nmap zero everywhere")
    assert notes == ["Grad-CAM at conv1 is zero everywhere for 2 of 2 faces (face0, face1): no position of that "
                     "layer has positive evidence for the class; layercam, or an earlier --layer, shows where the "
                     "evidence is"]
    notes = []  # a map with evidence is neither noted nor titled so
    figure = report.explanation_figure(model_of(+1), picks, "gradcam", notes=notes)
    assert notes == [] and "zero" not in figure.axes[0].get_ylabel()

def test_activations_command_defaults_to_the_rectified_middle_layer(run_dir, tmp_path, capsys):
    # visualize.md and report.activations_figure: a middle conv layer's rectified output
    # (convN_act); the command passed the linear conv layer's name instead, so it drew conv1.
    assert main(["activations", "--run", str(run_dir), "--image", "00002", "--out", str(tmp_path)]) == 0
    check_png(tmp_path / "activations_conv1_act_00002.png")
    assert not (tmp_path / "activations_conv1_00002.png").exists()


def test_activations_of_a_named_layer_in_a_model_without_conv_layers(tmp_path):
    # dnn has feature maps (pool1) but no conv layer: the default layer was looked up even when
    # --layer was given, so it failed with "has no convolution layers".
    import cv2

    from keras_fer.models import build_model

    build_model("dnn", preprocessing={"normalize": "unit"}).save(tmp_path / "dnn.keras")
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), synthetic.generate(1, seed=9).images.pixels[0])
    assert main(["activations", "--model", str(tmp_path / "dnn.keras"), "--layer", "pool1", "--image", str(photo),
                 "--out", str(tmp_path)]) == 0
    check_png(tmp_path / "activations_pool1_face.png")


@pytest.mark.parametrize("command", ["saliency", "smoothgrad", "gradcam", "gradcam++", "layercam", "scorecam",
                                     "occlusion", "filters", "kernels",
                                     "activations",
                                     "history", "confusion", "classes", "samples", "augment", "report"])
def test_help_explains_each_option(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    options = re.findall(r"^\s+(--[a-z-]+)", text, re.M)
    assert options and "--help" in text
    for option in options:
        line = re.search(rf"^\s+{option}\b.*(?:\n\s{{20,}}.*)*", text, re.M).group(0)
        assert len(line.split(option, 1)[1].strip()) > 10, f"{command} {option} has no explanation"


def test_out_names_one_figure_in_any_figure_format_or_a_folder(tmp_path):
    assert main(["samples", "--count", "2", "--out", str(tmp_path / "grid.jpg")]) == 0
    assert (tmp_path / "grid.jpg").is_file() and (tmp_path / "grid.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert main(["samples", "--count", "2", "--out", str(tmp_path / "figures.v2")]) == 0
    check_png(tmp_path / "figures.v2" / "samples.png")  # not a figure suffix: a folder
    assert main(["samples", "--count", "2", "--out", str(tmp_path / "shots.png") + "/"]) == 0
    check_png(tmp_path / "shots.png" / "samples.png")  # a trailing slash names a folder (it was a file)


def test_negative_seed_is_an_option_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["samples", "--seed", "-1", "--out", str(tmp_path)])
    assert caught.value.code == 2 and "a seed must be in [0, 2**32)" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_photos_largest_face_is_explained_not_the_whole_photo(tmp_path, monkeypatch, capsys):
    import cv2

    from keras_fer import faces as face_tools
    from keras_fer import report

    face = synthetic.generate(1, seed=9).images.pixels[0, :, :, 0]
    photo = np.full((240, 320), 30, np.uint8)
    photo[60:180, 150:270] = cv2.resize(face, (120, 120))
    cv2.imwrite(str(tmp_path / "scene.png"), photo)
    monkeypatch.setattr(face_tools, "detect_faces", lambda image, **options: [(10, 10, 40, 40), (150, 60, 120, 120)])
    pick = report.select_image(report.load_faces(None), str(tmp_path / "scene.png"))
    assert pick.note == "scene.png: 2 faces found, the largest at x=150, y=60, 120x120 px"
    np.testing.assert_array_equal(pick.pixels, face_tools.crop_faces(photo, [(150, 60, 120, 120)])[0])
    monkeypatch.setattr(face_tools, "detect_faces", lambda image, **options: [])
    pick = report.select_image(report.load_faces(None), str(tmp_path / "scene.png"))
    assert "no face found; the whole image is explained" in pick.note
    np.testing.assert_array_equal(pick.pixels, cv2.resize(photo, (48, 48), interpolation=cv2.INTER_AREA)[:, :, None])


def test_detector_option_picks_the_face_of_a_tilted_photo(tmp_path, capsys):
    import cv2
    from matplotlib import cbook

    portrait = cv2.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    matrix = cv2.getRotationMatrix2D((256, 300), 25, 1.0)
    cv2.imwrite(str(tmp_path / "tilted.png"), cv2.warpAffine(portrait, matrix, (512, 600),
                                                             borderMode=cv2.BORDER_REPLICATE))
    notes = {}
    for detector in ("haar", "mtcnn"):
        assert main(["saliency", "--image", str(tmp_path / "tilted.png"), "--detector", detector,
                     "--out", str(tmp_path / detector)]) == 0
        notes[detector] = capsys.readouterr().out
        check_png(tmp_path / detector / "saliency_tilted.png")
    assert "tilted.png: no face found" in notes["haar"]
    assert "tilted.png: face found at x=" in notes["mtcnn"]


def damaged_copy(run_dir, tmp_path, name, content):
    """A copy of the run with `name` replaced by `content`."""
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(run_dir, copy)
    (copy / name).write_text(content)
    return copy


@pytest.mark.parametrize("content, where", [
    ("x,y\n1,2\n", "line 1: missing column(s) epoch, loss"),
    ("epoch,loss,accuracy\n1,0.9,0.5\n2,abc,0.6\n", "line 3, field 'loss': expected a number. Received: 'abc'"),
], ids=["header", "text"])
def test_a_malformed_history_names_its_line_and_column(run_dir, tmp_path, capsys, content, where):
    from keras_fer import report
    from keras_fer.errors import FerDataError

    copy = damaged_copy(run_dir, tmp_path, "history.csv", content)
    assert main(["history", str(copy), "--out", str(tmp_path / "o")]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {copy / 'history.csv'}, ") and where in line, line
    # The report's history section (a note in the page, as for any unreadable run file).
    with pytest.raises(FerDataError, match=re.escape(where)):
        report.history_figure(report.read_run(copy))
    # compare reads it with the same reader.
    assert main(["compare", str(copy), str(run_dir), "--out", str(tmp_path / "o")]) == 2
    assert error_line(capsys).startswith(f"error: {copy / 'history.csv'}, ")


@pytest.mark.parametrize("options", [5, [1], "fast"])
def test_run_options_of_a_wrong_type_name_the_config(run_dir, tmp_path, capsys, options):
    config = json.loads((run_dir / "config.json").read_text())
    copy = damaged_copy(run_dir, tmp_path, "config.json", json.dumps({**config, "options": options}))
    expected = f"error: {copy / 'config.json'}, field 'options': expected a JSON object"
    assert main(["saliency", "--run", str(copy), "--image", "00000", "--out", str(tmp_path / "o")]) == 2
    assert error_line(capsys).startswith(expected)
    assert main(["report", str(copy), "--out", str(tmp_path / "r.html")]) == 2
    assert error_line(capsys).startswith(expected)
    assert not (tmp_path / "r.html").exists()
    assert main(["compare", str(copy), "--x", "cpu-hours", "--out", str(tmp_path / "o")]) == 2
    assert error_line(capsys).startswith(expected)


def test_a_run_that_confuses_no_class_says_so(run_dir, tmp_path, capsys):
    # An empty most-confused list printed "most confused: " and an empty table.
    import shutil

    run = tmp_path / "perfect"
    shutil.copytree(run_dir, run)
    saved = dict(np.load(run / "validation.npz"))
    saved["probabilities"] = np.eye(7, dtype=np.float32)[saved["labels"]]
    np.savez(run / "validation.npz", **saved)
    assert main(["confusion", str(run), "--out", str(tmp_path / "figures")]) == 0
    assert "accuracy 1.0000; most confused: none" in capsys.readouterr().out
    from keras_fer import report

    html = report.build_report(run, out=tmp_path / "report.html", filters=1, steps=1).read_text()
    assert "No class was confused with another." in html and "Most confused pairs" not in html


def flip_a_byte_of(path, array_name):
    """Flip one byte inside `array_name`'s data in the npz at `path` (its CRC-32 then fails)."""
    content = bytearray(path.read_bytes())
    with np.load(path) as saved:
        start = bytes(content).index(saved[array_name].tobytes())
    content[start + 3] ^= 0xFF
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("damage, where, says", [
    ("three-columns", "field 'probabilities'", "expected shape (70, 7)"),
    ("nan", "field 'probabilities'", "expected probabilities (finite, non-negative, summing to 1). Received: row 1"),
    ("negative", "field 'probabilities'", "expected probabilities (finite, non-negative"),
    ("label-9", "field 'labels'", "expected integers 0-6. Received: 9"),
    ("float-labels", "field 'labels'", "expected integers 0-6. Received: dtype float64"),
    ("ids", "field 'ids'", "expected 70 ids, one per label"),
    ("no-labels", "field 'labels'", "no such array"),
    ("truncated", "", "not a complete .npz"),
    ("flipped-byte", "field 'probabilities'", "Bad CRC-32"),
])
def test_a_damaged_validation_file_is_one_line_naming_the_array(damage, where, says, run_dir, tmp_path, capsys):
    # A (20, 3) or all-NaN probabilities array gave a made-up "accuracy 0.2500" and exit 0; a
    # truncated file or a flipped byte a zipfile traceback; labels of 9 a scikit-learn one.
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    file = copy / "validation.npz"
    saved = dict(np.load(file))
    count = len(saved["labels"])
    if damage == "three-columns":
        saved["probabilities"] = np.full((count, 3), 1 / 3)
    elif damage == "nan":
        saved["probabilities"] = np.full((count, 7), np.nan)
    elif damage == "negative":
        saved["probabilities"] = saved["probabilities"] - 0.5
    elif damage == "label-9":
        saved["labels"] = np.where(np.arange(count) == 5, 9, saved["labels"])
    elif damage == "float-labels":
        saved["labels"] = saved["labels"] + 0.5
    elif damage == "ids":
        saved["ids"] = saved["ids"][:3]
    elif damage == "no-labels":
        del saved["labels"]
    np.savez(file, **saved)
    if damage == "truncated":
        file.write_bytes(file.read_bytes()[:500])
    elif damage == "flipped-byte":
        flip_a_byte_of(file, "probabilities")
    prefix = f"error: {file}" + (f", {where}: " if where else ": ")
    for argv in (["confusion", str(copy)], ["calibration", str(copy)], ["saliency", "--run", str(copy), "--per-class"]):
        assert main(argv + ["--out", str(tmp_path / "figures")]) == 2
        line = error_line(capsys)
        assert line.startswith(prefix) and says in line, line
    assert not (tmp_path / "figures").exists()
    if damage not in ("nan", "truncated"):  # the report meets every damage through one error path (5 s each)
        return
    # The report is written, its confusion section saying why it is missing (as for any
    # unreadable run file), and the per-class sections that their images may have been trained on.
    out = tmp_path / "report.html"
    assert main(["report", str(copy), "--out", str(out), "--filters", "1", "--steps", "1"]) == 0
    sections = dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', out.read_text(encoding="utf-8"), re.S))
    assert "Not available" in sections["confusion"] and html_escaped(says) in sections["confusion"]
    assert "Not available" in sections["calibration"] and html_escaped(says) in sections["calibration"]
    assert "some may be faces it was trained on" in sections["saliency"]


def html_escaped(text):
    import html

    return html.escape(text, quote=False)


@pytest.mark.parametrize("layer, noted", [("conv1_act", True), ("conv1", True), ("conv2", False)])
def test_filters_of_the_first_layer_point_at_its_kernels(layer, noted, run_dir, tmp_path, capsys):
    argv = ["filters", "--run", str(run_dir), "--layer", layer, "--count", "1", "--steps", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert ("note: conv1 reads the image: its weights show more than gradient ascent can (visualize.py kernels)"
            in printed) == noted


def test_the_reports_first_filters_ascend_the_rectified_conv_layer(run_dir, tmp_path):
    # It ascended conv1, the linear output before the activation: its objective is about the
    # weight sum times the image mean, and the panels came out flat grey or black.
    from keras_fer import report

    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(out), "--filters", "2", "--steps", "2"]) == 0
    sections = dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', out.read_text(encoding="utf-8"), re.S))
    assert "random filters of conv1_act (the rectified output of conv1)" in sections["filters-first"]
    assert 'alt="filters of conv1_act"' in sections["filters-first"]
    assert "The weights of conv1, the layer that reads the image" in sections["kernels"]
    assert 'alt="kernels of conv1"' in sections["kernels"]
    # A model without `_act` layers (the activation inside the conv layer) keeps the conv layer.
    inputs = keras.Input((48, 48, 1))
    x = layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
    plain = keras.Model(inputs, layers.Dense(7)(layers.GlobalAveragePooling2D()(x)))
    assert report.rectified_layer(plain, "conv1") == "conv1"
    assert report.rectified_layer(tiny_model(), "conv1") == "conv1_act"


def demo_csv(path, count, seed):
    """`count` demo faces as a FER2013-style CSV (no id column: ids are row numbers)."""
    demo = synthetic.generate(count, seed=seed).images
    rows = [f"{label},{' '.join(map(str, face.reshape(-1).tolist()))}" for label, face in zip(demo.labels, demo.pixels)]
    path.write_text("\n".join(["emotion,pixels"] + rows) + "\n")
    return demo


def test_per_class_picks_from_the_validation_split_a_models_config_records(run_dir, tmp_path, monkeypatch, capsys):
    # The packaged model has a config.json (split seed 0, fraction 0.1) but no validation.npz:
    # --per-class --data FER2013 picked mostly faces it was trained on.
    import shutil

    from keras_fer import data as data_module
    from keras_fer import report

    searched = []
    real_picks = report.per_class_picks

    def recording_picks(model, faces, *args):
        searched.append(args[2])  # within
        return real_picks(model, faces, *args)

    monkeypatch.setattr(report, "per_class_picks", recording_picks)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(run_dir / "best.keras", model_dir / "best.keras")
    demo_csv(tmp_path / "faces.csv", 140, seed=7)
    read = data_module.read(tmp_path / "faces.csv")
    config = {"data": str(tmp_path / "faces.csv"), "data_fingerprint": read.fingerprint(), "val": "fraction:0.2",
              "train_images": 112, "val_images": 28, "options": {"val": "fraction:0.2", "seed": 0, "split_seed": 5}}
    (model_dir / "config.json").write_text(json.dumps(config))
    argv = ["saliency", "--per-class", "--model", str(model_dir / "best.keras"), "--out", str(tmp_path / "o")]
    assert main(argv + ["--data", str(tmp_path / "faces.csv")]) == 0
    _, validation = data_module.split(read, "fraction:0.2", seed=5)
    assert sorted(searched[-1]) == sorted(int(i) for i in validation.ids)
    assert "some may be faces it was trained on" not in capsys.readouterr().out
    # Other data (or the same without a recorded fingerprint, but another size): searched
    # whole, with a note.
    demo_csv(tmp_path / "other.csv", 140, seed=8)
    assert main(argv + ["--data", str(tmp_path / "other.csv")]) == 0
    assert searched[-1] is None
    out = capsys.readouterr().out
    assert "note: which of these images the model was validated on is unknown (" in out
    assert "is not the data the model was trained on (fingerprint" in out
    assert "some may be faces it was trained on" in out
    del config["data_fingerprint"]
    config["train_images"] = 100
    (model_dir / "config.json").write_text(json.dumps(config))
    assert main(argv + ["--data", str(tmp_path / "faces.csv")]) == 0
    assert searched[-1] is None and "has 140 images; the model's data had 128" in capsys.readouterr().out
    config["train_images"] = 112  # the size recorded and matching: the split is rebuilt
    (model_dir / "config.json").write_text(json.dumps(config))
    assert main(argv + ["--data", str(tmp_path / "faces.csv")]) == 0
    assert sorted(searched[-1]) == sorted(int(i) for i in validation.ids)
    # Demo faces for a model trained on other data: none of them was trained on, no note.
    assert main(argv) == 0
    assert searched[-1] is None and "some may be faces it was trained on" not in capsys.readouterr().out
    # ... nor for a model trained on demo faces, shown other data (it said "may include some the
    # model was trained on: ... is not the data the model was trained on").
    (model_dir / "config.json").write_text(json.dumps({**config, "data": None, "data_fingerprint": "0123456789abcdef"}))
    assert main(argv + ["--data", str(tmp_path / "other.csv")]) == 0
    assert searched[-1] is None and "some may be faces it was trained on" not in capsys.readouterr().out


def test_report_prefers_validation_rows_it_rebuilds_from_the_config(run_dir, tmp_path, monkeypatch):
    # "Activation maps" drew the first Sad row of the whole data and "Augmentations" row 0, both
    # training images; without validation.npz the split config.json records is rebuilt.
    import shutil

    from keras_fer import report

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "validation.npz").unlink()
    demo = synthetic.generate(DEMO_FACES, seed=SEED).images
    config = json.loads((copy / "config.json").read_text())
    config["data_fingerprint"] = demo.fingerprint()
    config["options"].update(val=f"first:{TRAIN}", seed=SEED)
    (copy / "config.json").write_text(json.dumps(config))
    drawn, searched = {}, []
    real = {name: getattr(report, name) for name in ("activations_figure", "augment_figure", "per_class_picks")}

    def activations_figure(model, pick, *args):
        drawn["activations"] = pick
        return real["activations_figure"](model, pick, *args)

    def augment_figure(pick, **options):
        drawn["augment"] = pick
        return real["augment_figure"](pick, **options)

    def per_class_picks(model, faces, within=None):
        searched.append(within)
        return real["per_class_picks"](model, faces, within=within)

    for function in (activations_figure, augment_figure, per_class_picks):
        monkeypatch.setattr(report, function.__name__, function)
    page = report.build_report(copy, out=tmp_path / "report.html", filters=1, steps=1).read_text()
    assert list(searched[0]) == list(range(TRAIN, DEMO_FACES)) and "(validation split)" in page
    first_sad = TRAIN + int(np.flatnonzero(demo.labels[TRAIN:] == 4)[0])
    assert drawn["activations"].name == str(demo.ids[first_sad]) and drawn["activations"].label == 4
    assert drawn["augment"].name == str(demo.ids[TRAIN])


def test_demo_faces_are_announced(run_dir, tmp_path, capsys):
    # The README's `saliency --image 00000` without FER2013 explained a synthetic demo face with
    # the real-FER model ("true Surprise / pred Happy 0.50"), and nothing said the face was synthetic.
    import cv2

    from keras_fer import loading

    demo = "note: no --data and no $FER_DATA: using the built-in synthetic demo faces (cartoons, not FER2013)"
    packaged = demo + ", which the packaged model was not trained on\n"
    if (loading.WEIGHTS_DIR / "best.keras").is_file():
        assert main(["saliency", "--image", "00000", "--out", str(tmp_path / "o")]) == 0
        assert packaged in capsys.readouterr().out
    assert main(["saliency", "--model", str(run_dir / "best.keras"), "--image", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert demo + "\n" in out
    for argv in (["classes"], ["augment", "--image", "3", "--count", "1"]):
        assert main(argv + ["--out", str(tmp_path)]) == 0
        assert demo + "\n" in capsys.readouterr().out
    # Not for a run's own demo faces, data given, or a photo (no data read).
    cv2.imwrite(str(tmp_path / "photo.png"), synthetic.generate(1, seed=9).images.pixels[0])
    demo_csv(tmp_path / "faces.csv", 14, seed=1)
    for argv in (["saliency", "--run", str(run_dir), "--image", "1"],
                 ["classes", "--data", str(tmp_path / "faces.csv")],
                 ["saliency", "--image", str(tmp_path / "photo.png")]):
        assert main(argv + ["--out", str(tmp_path / "o")]) == 0
        out = capsys.readouterr().out
        assert demo not in out
        # Said instead: the model (classes draws faces only) and the faces when data is read (a figure names
        # neither).
        assert out.startswith("faces: " if argv[0] == "classes" else "model: ")
        assert (f"model: {run_dir / 'best.keras'}\nfaces: 350 demo faces" in out) == ("--run" in argv)


@pytest.mark.parametrize("data, says", [
    ("/nonexistent/x.csv", "/nonexistent/x.csv: no such file or folder (the run's data, moved or deleted since "
     "training?): pass --data PATH"),
    (5, "expected the path of the run's data. Received: data=5"),
])
def test_a_runs_data_that_moved_names_the_config_and_suggests_data(data, says, run_dir, tmp_path, capsys):
    # It said only "error: /nonexistent/x.csv: no such file or folder", not where the path came from.
    config = json.loads((run_dir / "config.json").read_text())
    copy = damaged_copy(run_dir, tmp_path, "config.json", json.dumps({**config, "data": data}))
    for argv in (["saliency", "--run", str(copy)], ["saliency", "--run", str(copy), "--per-class"]):
        assert main(argv + ["--out", str(tmp_path / "o")]) == 2
        assert error_line(capsys) == f"error: {copy / 'config.json'}, field 'data': {says}"
    assert not (tmp_path / "o").exists()
    # --data replaces it.
    demo_csv(tmp_path / "faces.csv", 14, seed=1)
    assert main(["saliency", "--run", str(copy), "--data", str(tmp_path / "faces.csv"), "--out", str(tmp_path)]) == 0


def test_the_augment_figure_shows_every_draw_flipped(monkeypatch):
    # The flip row drew the random flip of training (p=0.5): half its draws were the face
    # unchanged, so the flip looked like it did nothing.
    from keras_fer import plots, report

    shown = {}
    monkeypatch.setattr(plots, "augment_figure", lambda image, augmented, **options: shown.update(augmented))
    face = synthetic.generate(1, seed=2).images.pixels[0]
    report.augment_figure(report.Picked(face, None, "face"), variants=8, seed=0)
    assert len(shown["flip"]) == 8
    for draw in shown["flip"]:
        np.testing.assert_array_equal(draw, face[:, ::-1].astype(np.float32))
    assert not np.array_equal(face[:, ::-1], face)
    assert len(shown["blur"]) == 8 and not any(np.array_equal(draw, face) for draw in shown["blur"])


def test_per_class_of_a_run_whose_data_changed_since_training_is_not_taken_as_held_out(run_dir, tmp_path,
                                                                                       monkeypatch, capsys):
    # Without --data, a run's validation.npz ids were looked up in its data file as it is now:
    # rows reordered since training made them other faces, training ones among them, unsaid.
    import shutil

    from keras_fer import data as data_module
    from keras_fer import report

    searched = []
    real_picks = report.per_class_picks
    monkeypatch.setattr(report, "per_class_picks",
                        lambda model, faces, *args: searched.append(args[2]) or real_picks(model, faces, *args))
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(run_dir / "best.keras", run / "best.keras")
    demo = demo_csv(tmp_path / "faces.csv", 140, seed=7)
    read = data_module.read(tmp_path / "faces.csv")
    held = np.arange(112, 140)
    (run / "config.json").write_text(json.dumps({
        "data": str(tmp_path / "faces.csv"), "data_fingerprint": read.fingerprint(), "val": "last:28",
        "train_images": 112, "val_images": 28, "options": {"val": "last:28", "seed": 0}}))
    np.savez(run / "validation.npz", labels=demo.labels[held], probabilities=np.full((28, 7), 1 / 7),
             ids=read.ids[held].astype(str))
    argv = ["saliency", "--per-class", "--min-confidence", "0", "--run", str(run), "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    assert sorted(searched[-1]) == held.tolist()
    capsys.readouterr()
    lines = (tmp_path / "faces.csv").read_text().splitlines()
    (tmp_path / "faces.csv").write_text("\n".join(lines[:1] + lines[:0:-1]) + "\n")  # the rows reversed
    assert main(argv) == 0
    assert searched[-1] is None
    out = capsys.readouterr().out
    assert "some may be faces it was trained on" in out and "is not the data the model was trained on" in out


def test_calibration_prints_the_figures_of_its_reliability_diagram(run_dir, tmp_path, capsys):
    from keras_fer.metrics import calibration

    saved = np.load(run_dir / "validation.npz")
    expected = calibration(saved["labels"], saved["probabilities"])
    assert main(["calibration", str(run_dir), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert (f"ECE {expected.ece:.4f}, mean confidence {expected.mean_confidence:.4f}, accuracy "
            f"{expected.accuracy:.4f}, NLL {expected.nll:.4f}") in printed
    check_png(tmp_path / "calibration.png")
    assert f"python -m keras_fer.calibrate {run_dir} fits a temperature" in printed
    # a run's own calibration.png is only replaced by its own calibration command
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "history.csv").write_text("epoch,loss\n")
    assert main(["confusion", str(run_dir), "--out", str(tmp_path / "other" / "calibration.png")]) == 2
    assert "would replace the calibration figure of the run" in error_line(capsys)
