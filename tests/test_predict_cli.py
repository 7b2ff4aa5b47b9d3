"""predict.py end to end: main([...]) in-process (fast), plus a few real subprocesses for the
shim, --help and the no-traceback error path."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from keras_fer.classes import CLASS_NAMES, NUM_CLASSES
from keras_fer.cli.predict import main
from keras_fer.errors import FerDataError
from keras_fer.synthetic import generate

from conftest import PRIOR, save_run, tiny_model

REPO = Path(__file__).resolve().parents[1]

# TensorFlow 2.21 tensors lack NumPy 2's __array__(copy=...): Keras-internal noise.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def tiny_run(folder, seed):
    return save_run(folder, tiny_model(seed), PRIOR)


def write_csv(path, pixels, first=None, first_name="id", usage=None):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(([first_name] if first is not None else []) + ["feature"]
                        + (["Usage"] if usage is not None else []))
        for i, face in enumerate(pixels):
            writer.writerow(([first[i]] if first is not None else []) + [" ".join(map(str, face.reshape(-1).tolist()))]
                            + ([usage[i]] if usage is not None else []))
    return path


def read_rows(path):
    with open(path) as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def demo():
    return generate(30, seed=5).images


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli-runs")
    return tiny_run(base / "a", 11), tiny_run(base / "b", 12)


@pytest.fixture(scope="module")
def test_csv(tmp_path_factory, demo):
    ids = [str(1000 + i) for i in range(len(demo))]
    return write_csv(tmp_path_factory.mktemp("data") / "test.csv", demo.pixels, ids), ids


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--saved-proba", "--out", "--tta", "--proba", "--prior-correction", "--no-detect",
                   "--annotate", "--min-face", "--export", "--export-to", "--backend", "--normalize", "--batch-size",
                   "--chunk-rows", "--timings"):
        assert option in text
    assert "ten-crop" in text and "Usage" in text


def test_submission_format(tmp_path, run_dirs, test_csv, capsys):
    path, ids = test_csv
    out = tmp_path / "submission.csv"
    assert main([str(path), "--model", str(run_dirs[0]), "--out", str(out), "--timings"]) == 0
    rows = read_rows(out)
    assert rows[0] == ["id", "label"]
    assert [row[0] for row in rows[1:]] == ids
    assert all(row[1] in {str(i) for i in range(NUM_CLASSES)} for row in rows[1:])
    captured = capsys.readouterr()
    assert f"wrote {out}: {len(ids)} rows" in captured.out
    assert "timings" in captured.err and "infer_s=" in captured.err and "backend=litert" in captured.err
    assert (run_dirs[0] / "best.tflite").is_file()  # the lean path's cached copy


def test_ensemble_tta_proba_prior(tmp_path, run_dirs, test_csv, demo):
    from keras_fer import inference

    path, ids = test_csv
    out = tmp_path / "sub.csv"
    # `--model a b data.csv`: the data file is not taken for a model
    argv = ["--model", str(run_dirs[0]), str(run_dirs[1]), str(path), "--out", str(out),
            "--tta", "flip", "--proba", "--prior-correction", "--backend", "keras"]
    assert main(argv) == 0
    rows = read_rows(out)
    assert rows[0] == ["id", "label", *CLASS_NAMES] and len(rows) == len(ids) + 1
    probabilities = np.array([[float(v) for v in row[2:]] for row in rows[1:]])
    predictors = [inference.load_predictor(run, backend="keras") for run in run_dirs]
    expected = inference.predict_proba(predictors, demo.pixels, tta="flip", prior_correction=True)
    np.testing.assert_allclose(probabilities, expected, atol=2e-6)
    assert [int(row[1]) for row in rows[1:]] == expected.argmax(axis=1).tolist()


def test_labelled_kaggle_csv_reports_metrics(tmp_path, run_dirs, demo, capsys):
    from sklearn.metrics import accuracy_score, f1_score

    from keras_fer import inference
    from keras_fer.metrics import calibration

    usage = ["PublicTest" if i % 3 else "PrivateTest" for i in range(len(demo))]
    path = write_csv(tmp_path / "fer2013.csv", demo.pixels, demo.labels.tolist(), "emotion", usage)
    out = tmp_path / "preds.csv"
    assert main([str(path), "--model", str(run_dirs[1]), "--out", str(out), "--tta", "crops"]) == 0
    text = capsys.readouterr().out
    predictor = inference.load_predictor(run_dirs[1])
    probabilities = inference.predict_proba([predictor], demo.pixels, tta="crops")
    predictions = probabilities.argmax(axis=1)
    accuracy = accuracy_score(demo.labels, predictions)
    macro_f1 = f1_score(demo.labels, predictions, average="macro", zero_division=0)
    ece = calibration(demo.labels, probabilities).ece
    assert f"all rows: accuracy {accuracy:.4f}, macro-F1 {macro_f1:.4f}, ECE {ece:.4f} ({len(demo)} rows)" in text
    assert "PublicTest: accuracy" in text and "PrivateTest: accuracy" in text
    for suffix in ("_metrics.json", "_confusion.csv", "_confusion.png", "_calibration.png"):
        assert (tmp_path / f"preds{suffix}").is_file() and f"preds{suffix}" in text
    metrics = json.loads((tmp_path / "preds_metrics.json").read_text())
    assert metrics["splits"]["all"]["accuracy"] == pytest.approx(accuracy)
    assert set(metrics["splits"]) == {"all", "PublicTest", "PrivateTest"}


def test_malformed_row_exit_2_no_partial_file(tmp_path, run_dirs, demo, capsys):
    path = write_csv(tmp_path / "bad.csv", demo.pixels[:10], [str(i) for i in range(10)])
    lines = path.read_text().splitlines()
    lines[8] = "7,1 2 x"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "submission.csv"
    assert main([str(path), "--model", str(run_dirs[0]), "--out", str(out), "--chunk-rows", "3"]) == 2
    line = one_error_line(capsys)
    assert "bad.csv" in line and "line 9" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]
    # Nor the folders a new --out would have gone in (they were made, and left empty)
    assert main([str(path), "--model", str(run_dirs[0]), "--out", str(tmp_path / "new" / "sub" / "s.csv")]) == 2
    assert "line 9" in one_error_line(capsys) and sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


@pytest.mark.parametrize("model, message", [
    ("missing.keras", "missing.keras: no such model file"),
    ("folder", "no best.keras"),
    ("notes.keras", "notes.keras: not a Keras model file"),
])
def test_bad_models_exit_2(tmp_path, test_csv, capsys, model, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.keras").write_text("just text")
    out = tmp_path / "submission.csv"
    assert main([str(test_csv[0]), "--model", str(tmp_path / model), "--out", str(out)]) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


def test_prior_correction_without_config_says_so(tmp_path, run_dirs, test_csv, capsys):
    lone = tmp_path / "lone.keras"
    lone.write_bytes((run_dirs[0] / "best.keras").read_bytes())
    assert main([str(test_csv[0]), "--model", str(lone), "--prior-correction", "--out", str(tmp_path / "s.csv")]) == 2
    assert "config.json" in one_error_line(capsys)


def test_missing_input_and_bad_options(tmp_path, run_dirs, capsys, monkeypatch):
    monkeypatch.delenv("FER_DATA", raising=False)
    assert main(["--model", str(run_dirs[0])]) == 2
    assert "no input" in one_error_line(capsys)
    (tmp_path / "photos").mkdir()  # after --model, a folder input is taken as a model: the error says so
    assert main(["--model", str(run_dirs[0]), str(tmp_path / "photos")]) == 2
    assert one_error_line(capsys).endswith(f"; --model took {run_dirs[0]}, {tmp_path / 'photos'}: if the last is the "
                                           "input, give it before --model")
    (tmp_path / "photos").rmdir()
    assert main([str(tmp_path / "nothing.csv"), "--model", str(run_dirs[0])]) == 2
    assert "nothing.csv" in one_error_line(capsys)
    assert main([str(tmp_path), "--model", str(run_dirs[0]), "--batch-size", "0"]) == 2
    assert one_error_line(capsys).endswith("--batch-size must be a positive integer. Received: batch_size=0")
    monkeypatch.chdir(tmp_path)
    for argv, words in ((["", "--model", str(run_dirs[0])], "the input is an empty path"),
                        ([str(tmp_path), "--out", ""], "--out is an empty path"),
                        ([str(tmp_path), "--model", ""], "not empty ones")):
        assert main(argv) == 2
        assert words in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_out_is_one_line(tmp_path, run_dirs, test_csv, capsys):
    (tmp_path / "file.txt").write_text("x")
    assert main([str(test_csv[0]), "--model", str(run_dirs[0]), "--out", str(tmp_path / "file.txt" / "s.csv")]) == 2
    assert "file.txt" in one_error_line(capsys)
    nested = tmp_path / "new" / "folder" / "s.csv"  # a missing folder is created
    assert main([str(test_csv[0]), "--model", str(run_dirs[0]), "--out", str(nested)]) == 0
    assert nested.is_file()


def test_mtcnn_is_needed_only_where_faces_are_detected(tmp_path, run_dirs, test_csv, capsys, monkeypatch):
    from importlib import metadata

    real = metadata.version

    def version(name):
        if name == "mtcnn":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    out = tmp_path / "s.csv"
    assert main([str(test_csv[0]), "--model", str(run_dirs[0]), "--detector", "mtcnn", "--out", str(out)]) == 0
    assert len(read_rows(out)) == len(test_csv[1]) + 1  # a CSV holds faces already: no detector runs
    # ...and the options that do not apply are named (they were ignored without a word).
    assert f"note: --detector: for photos and videos; {test_csv[0]} holds face crops" in capsys.readouterr().err
    assert main([str(test_csv[0]), "--model", str(run_dirs[0]), "--no-detect", "--min-face", "20",
                 "--out", str(out)]) == 0
    assert "note: --no-detect, --min-face: for photos and videos" in capsys.readouterr().err
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "blank.png"), np.full((96, 96), 128, np.uint8))
    out = tmp_path / "f.csv"
    assert main([str(folder), "--model", str(run_dirs[0]), "--detector", "mtcnn", "--out", str(out)]) == 2
    assert 'needs the mtcnn package: pip install "keras-fer[mtcnn]"' in one_error_line(capsys)
    assert not out.exists()
    assert main([str(folder), "--model", str(run_dirs[0]), "--detector", "mtcnn", "--no-detect",
                 "--out", str(tmp_path / "f.csv")]) == 0


def test_out_that_is_the_input_is_refused_and_the_input_kept(tmp_path, run_dirs, test_csv, capsys):
    source = tmp_path / "test.csv"
    source.write_bytes(Path(test_csv[0]).read_bytes())
    os.link(source, tmp_path / "linked.csv")
    for out in (source, tmp_path / "sub" / ".." / "test.csv", tmp_path / "linked.csv"):
        assert main([str(source), "--model", str(run_dirs[0]), "--out", str(out)]) == 2
        assert f"--out {out} would overwrite the input" in one_error_line(capsys)
    assert source.read_bytes() == Path(test_csv[0]).read_bytes()


def test_outputs_that_would_replace_any_input_are_refused(tmp_path, run_dirs, demo, test_csv, capsys):
    """The data (an image too), the metrics files beside --out, a --saved-proba member, a model."""
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), demo.pixels[0])
    labelled = write_csv(tmp_path / "a_confusion.csv", demo.pixels, [str(v) for v in demo.labels], "label")
    member = tmp_path / "member.csv"
    assert main([str(test_csv[0]), "--model", str(run_dirs[1]), "--proba", "--out", str(member)]) == 0
    model = Path(run_dirs[0]) / "best.keras"
    cases = [
        ([str(photo), "--out", str(photo)], f"--out {photo} would overwrite the input"),
        ([str(labelled), "--out", str(tmp_path / "a.csv")],
         f"--out {tmp_path / 'a.csv'}: the file beside it, {labelled} would overwrite the input"),
        ([str(test_csv[0]), "--saved-proba", str(member), "--out", str(member)],
         f"--out {member} would overwrite a --saved-proba file"),
        ([str(test_csv[0]), "--out", str(model)], f"--out {model} would overwrite a model"),
        # The model's LiteRT copy, which the run reads (it was replaced by the submission).
        ([str(test_csv[0]), "--out", str(model.with_suffix(".tflite"))],
         f"--out {model.with_suffix('.tflite')} would overwrite a model's LiteRT copy"),
        # A folder where a metrics file goes: found before --out and two metrics files were written.
        ([str(labelled), "--out", str(tmp_path / "m" / "m.csv")],
         f"--out {tmp_path / 'm' / 'm.csv'}: the file beside it, {tmp_path / 'm' / 'm_confusion.png'} is a folder"),
    ]
    (tmp_path / "m" / "m_confusion.png").mkdir(parents=True)
    inputs = {path: path.read_bytes() for path in (photo, labelled, member, model)}
    capsys.readouterr()
    for argv, message in cases:
        assert main(argv + ["--model", str(run_dirs[0])]) == 2
        assert message in one_error_line(capsys)
    assert {path: path.read_bytes() for path in inputs} == inputs
    assert not (tmp_path / "a.csv").exists()
    assert sorted(path.name for path in (tmp_path / "m").iterdir()) == ["m_confusion.png"]


def test_annotated_copies_never_land_on_or_among_the_input_images(tmp_path, run_dirs, demo, capsys):
    folder = tmp_path / "pin"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.png"), demo.pixels[0])
    cv2.imwrite(str(folder / "sub" / "a.png"), demo.pixels[1])
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), demo.pixels[2])
    inputs = {path: path.read_bytes() for path in (folder / "a.png", folder / "sub" / "a.png", photo)}
    out = tmp_path / "o" / "f.csv"
    # pin/a.png's copy was written over pin/sub/a.png, and pin/sub/sub/a.png appeared (exit 0).
    for argv, message in [([str(folder), "--annotate", str(folder / "sub")], "is inside the input folder"),
                          ([str(folder), "--annotate", str(folder)], "is inside the input folder"),
                          ([str(photo), "--annotate", str(tmp_path)], "would overwrite an input image with its")]:
        assert main(argv + ["--model", str(run_dirs[0]), "--out", str(out)]) == 2
        assert message in one_error_line(capsys)
    assert {path: path.read_bytes() for path in inputs} == inputs
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == ["a.png", "sub", "sub/a.png"]
    assert not out.exists()


def test_options_the_input_cannot_use_are_refused_not_ignored(tmp_path, run_dirs, demo, test_csv, capsys):
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), demo.pixels[0])
    (tmp_path / "afile").write_text("mine")
    out = tmp_path / "o" / "f.csv"
    crops = str(test_csv[0])
    for argv, message in [([crops, "--annotate", str(tmp_path / "ann")], "holds face crops: drop --annotate"),
                          ([str(test_csv[0]), "--every", "2"], "is no video. Received: every=2"),
                          ([str(photo), "--every", "3"], "is no video. Received: every=3"),
                          ([str(photo), "--annotate", str(tmp_path / "afile")], "not a folder")]:
        assert main(argv + ["--model", str(run_dirs[0]), "--out", str(out)]) == 2
        assert message in one_error_line(capsys)
    assert not (tmp_path / "o").exists() and not (tmp_path / "ann").exists()  # "afile" left an empty o/


def test_export_waits_for_a_valid_input(tmp_path, run_dirs, capsys):
    target = tmp_path / "exported.keras"
    assert main([str(tmp_path / "missing.csv"), "--model", str(run_dirs[0]), "--export", "keras",
                 "--export-to", str(target)]) == 2
    assert "missing.csv: no such file or folder" in one_error_line(capsys)
    assert not target.exists()  # it was exported, then the input was found missing


def test_fer_data_supplies_the_input(tmp_path, run_dirs, demo, monkeypatch, capsys):
    write_csv(tmp_path / "test.csv", demo.pixels[:5], [str(i) for i in range(5)])
    monkeypatch.setenv("FER_DATA", str(tmp_path))
    out = tmp_path / "s.csv"
    assert main(["--model", str(run_dirs[0]), "--out", str(out)]) == 0
    assert len(read_rows(out)) == 6
    (tmp_path / "test.csv").rename(tmp_path / "train.csv")  # a FER2013 folder without its test part
    assert main(["--model", str(run_dirs[0]), "--out", str(tmp_path / "t.csv")]) == 2
    assert one_error_line(capsys) == (f"error: {tmp_path}: no test.csv[.gz] or test/ in this folder (from FER_DATA): "
                                      "it holds train.csv")
    # The same folder given as the input: its test part, as from FER_DATA; it said "no images".
    monkeypatch.delenv("FER_DATA")
    assert main([str(tmp_path), "--model", str(run_dirs[0]), "--out", str(tmp_path / "t.csv")]) == 2
    assert one_error_line(capsys) == (f"error: {tmp_path}: a FER2013 folder without a test part (it holds train.csv): "
                                      "give the file or folder of faces to predict")
    (tmp_path / "train.csv").rename(tmp_path / "test.csv")
    assert main([str(tmp_path), "--model", str(run_dirs[0]), "--out", str(tmp_path / "u.csv")]) == 0
    assert read_rows(tmp_path / "u.csv") == read_rows(out)
    assert f"note: {tmp_path} is a FER2013 folder: predicting its test.csv" in capsys.readouterr().err
    from keras_fer.data import read

    with pytest.raises(FerDataError, match=r"a FER2013 folder: name the part to read, .*test\.csv"):
        read(tmp_path)  # calibrate --data FOLDER, visualize --data FOLDER/...
    # A folder of photos beside a test/ sub-folder is a folder of photos: every image is predicted.
    photos = tmp_path / "photos"
    (photos / "test").mkdir(parents=True)
    for name in ("a.png", "b.png", "test/c.png"):
        cv2.imwrite(str(photos / name), demo.pixels[0, :, :, 0])
    assert main([str(photos), "--model", str(run_dirs[0]), "--no-detect", "--out", str(tmp_path / "p.csv")]) == 0
    assert sorted(row[0] for row in read_rows(tmp_path / "p.csv")[1:]) == ["a.png", "b.png", "test/c.png"]


def test_fer_data_with_msambare_image_folders_supplies_its_test_folder(tmp_path, run_dirs, demo, monkeypatch, capsys):
    for index in range(3):  # test/happy/*.png: labelled, so scored
        folder = tmp_path / "fer2013" / "test" / "happy"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{index}.png"), demo.pixels[index, :, :, 0])
    (tmp_path / "fer2013" / "train").mkdir()
    monkeypatch.setenv("FER_DATA", str(tmp_path / "fer2013"))
    out = tmp_path / "faces.csv"
    assert main(["--model", str(run_dirs[0]), "--out", str(out)]) == 0
    assert [row[0] for row in read_rows(out)[1:]] == ["happy/0.png", "happy/1.png", "happy/2.png"]
    assert "accuracy" in capsys.readouterr().out


def photo(face_index, blank=False):
    face = generate(7, seed=0).images.pixels[face_index, :, :, 0]
    image = np.full((300, 400), 120, np.uint8)
    if not blank:
        image[60:252, 110:302] = cv2.resize(face, (192, 192), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


def test_photos_folder_with_faces_and_a_blank(tmp_path, run_dirs, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "face.jpg"), photo(3))
    cv2.imwrite(str(folder / "blank.png"), photo(0, blank=True))
    out, annotated = tmp_path / "faces.csv", tmp_path / "annotated"
    assert main([str(folder), "--model", str(run_dirs[0]), "--out", str(out), "--annotate", str(annotated)]) == 0
    text = capsys.readouterr().out
    assert "blank.png: no face found" in text
    face_lines = [line for line in text.splitlines() if line.startswith("face.jpg  face 1  box=(")]
    assert len(face_lines) == 1 and any(name in face_lines[0] for name in CLASS_NAMES)
    rows = read_rows(out)
    assert rows[0] == ["file", "face", "x", "y", "w", "h", "label", "class", "confidence"]
    by_file = {row[0]: row for row in rows[1:]}
    assert by_file["blank.png"][1:] == [""] * 8
    x, y, w, h = (int(v) for v in by_file["face.jpg"][2:6])
    assert abs(x - 110) < 40 and abs(y - 60) < 40 and 100 < w < 260
    assert 0 <= int(by_file["face.jpg"][6]) < NUM_CLASSES and 0 < float(by_file["face.jpg"][8]) <= 1
    assert (annotated / "face.jpg").is_file() and (annotated / "blank.png").is_file()


def test_mtcnn_detector_finds_the_tilted_face(tmp_path, run_dirs, capsys):
    from matplotlib import cbook

    portrait = cv2.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    matrix = cv2.getRotationMatrix2D((256, 300), 25, 1.0)
    folder = tmp_path / "photos"
    folder.mkdir()
    tilted = cv2.warpAffine(portrait, matrix, (512, 600), borderMode=cv2.BORDER_REPLICATE)
    cv2.imwrite(str(folder / "tilted.png"), tilted)
    counts = {}
    for detector in ("haar", "mtcnn"):
        out = tmp_path / f"{detector}.csv"
        assert main([str(folder), "--model", str(run_dirs[0]), "--out", str(out), "--detector", detector]) == 0
        counts[detector] = sum(1 for row in read_rows(out)[1:] if row[1])
    capsys.readouterr()
    assert counts == {"haar": 0, "mtcnn": 1}
    with pytest.raises(SystemExit) as caught:
        main([str(folder), "--model", str(run_dirs[0]), "--detector", "yolo"])
    assert caught.value.code == 2 and "invalid choice: 'yolo'" in capsys.readouterr().err


def test_no_detect_and_labelled_crop_folders(tmp_path, run_dirs, demo, capsys, monkeypatch):
    for i in range(14):
        folder = tmp_path / "crops" / CLASS_NAMES[int(demo.labels[i])].lower()
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i}.png"), demo.pixels[i, :, :, 0])
    out = tmp_path / "crops.csv"
    assert main([str(tmp_path / "crops"), "--model", str(run_dirs[0]), "--out", str(out), "--proba"]) == 0
    rows = read_rows(out)
    assert rows[0][:10] == ["file", "face", "x", "y", "w", "h", "label", "class", "confidence", "true_label"]
    assert len(rows) == 15 and all(row[2:6] == ["0", "0", "48", "48"] for row in rows[1:])
    assert "all rows: accuracy" in capsys.readouterr().out and (tmp_path / "crops_metrics.json").is_file()
    found = json.loads((tmp_path / "crops_metrics.json").read_text())["splits"]["all"]["calibration"]
    confidences = [float(row[8]) for row in rows[1:]]  # one face a crop: the image's confidence
    assert found["mean_confidence"] == pytest.approx(np.mean(confidences), abs=1e-5)
    assert (tmp_path / "crops_calibration.png").is_file()
    # Run twice inside the folder: the first run's faces_confusion.png there is not an input of the second
    monkeypatch.chdir(tmp_path / "crops")
    for _ in range(2):
        assert main([".", "--model", str(run_dirs[0])]) == 0
        assert "all rows: accuracy" in capsys.readouterr().out
    assert (tmp_path / "crops" / "faces_confusion.png").is_file()
    # --no-detect: a big photo is classified whole, as one face
    cv2.imwrite(str(tmp_path / "big.png"), photo(1))
    out2 = tmp_path / "big.csv"
    assert main([str(tmp_path / "big.png"), "--no-detect", "--model", str(run_dirs[0]), "--out", str(out2)]) == 0
    assert read_rows(out2)[1][1:6] == ["1", "0", "0", "400", "300"]
    # One mistyped class folder: the faces are still classified, and the lost scoring is said
    for folder, i in (("happy", 0), ("suprise", 1), ("happy", 2)):
        (tmp_path / "typo" / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "typo" / folder / f"{i}.png"), demo.pixels[i, :, :, 0])
    out3 = tmp_path / "typo.csv"
    assert main([str(tmp_path / "typo"), "--model", str(run_dirs[0]), "--out", str(out3)]) == 0
    captured = capsys.readouterr()
    assert f"typo: not scored against its class folders: {Path('suprise', '1.png')} is not in one" in captured.err
    assert "true_label" not in read_rows(out3)[0] and len(read_rows(out3)) == 4 and "accuracy" not in captured.out


def write_saved(path, ids, probabilities):
    """A file as `predict.py --proba` writes it (gzipped when `path` ends in .gz)."""
    import gzip

    lines = [",".join(["id", "label", *CLASS_NAMES])]
    lines += [",".join([str(i), str(int(np.argmax(row))), *(f"{v:.6f}" for v in row)])
              for i, row in zip(ids, probabilities)]
    text = "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        Path(path).write_bytes(gzip.compress(text.encode()))
    else:
        Path(path).write_text(text)
    return path


def saved_probabilities(rows, seed):
    return np.random.default_rng(seed).dirichlet(np.full(NUM_CLASSES, 0.5), size=rows)


def test_saved_proba_members_average_with_models_and_score(tmp_path, run_dirs, demo, capsys):
    from keras_fer import inference

    path = write_csv(tmp_path / "val.csv", demo.pixels, demo.labels.tolist(), "emotion")  # ids: row numbers
    ids = [str(i) for i in range(len(demo))]
    first = tmp_path / "first.csv.gz"
    assert main([str(path), "--model", str(run_dirs[0]), "--tta", "flip", "--proba", "--out", str(first)]) == 0
    assert first.read_bytes()[:2] == b"\x1f\x8b" and (tmp_path / "first_metrics.json").is_file()  # gzipped as named
    assert first.read_bytes()[10:].split(b"\0")[0] == b"first.csv"  # the header's name: gunzip -N restores it
    other = saved_probabilities(len(demo), seed=3)
    write_saved(tmp_path / "other.csv.gz", ids, other)
    out = tmp_path / "ensemble.csv"
    assert main([str(path), "--model", str(run_dirs[1]), "--saved-proba", str(first), str(tmp_path / "other.csv.gz"),
                 "--proba", "--out", str(out)]) == 0
    rows = read_rows(out)
    probabilities = np.array([[float(v) for v in row[2:]] for row in rows[1:]])
    first_probabilities = inference.predict_proba([inference.load_predictor(run_dirs[0])], demo.pixels, tta="flip")
    model = inference.predict_proba([inference.load_predictor(run_dirs[1])], demo.pixels)
    expected = (first_probabilities + model + other) / 3  # the files as written, the model without TTA
    np.testing.assert_allclose(probabilities, expected, atol=2e-6)
    assert [row[0] for row in rows[1:]] == ids

    capsys.readouterr()
    only = tmp_path / "only.csv"  # no --model: the saved members alone, scored against the labels
    assert main([str(path), "--saved-proba", str(tmp_path / "other.csv.gz"), "--out", str(only)]) == 0
    assert [int(row[1]) for row in read_rows(only)[1:]] == other.argmax(axis=1).tolist()
    accuracy = float(np.mean(other.argmax(axis=1) == demo.labels))
    assert f"all rows: accuracy {accuracy:.4f}" in capsys.readouterr().out
    # A member given twice was averaged in at twice the weight, without a word.
    twice = tmp_path / "twice.csv"
    for members, words in (
        (["--model", str(run_dirs[1]), str(run_dirs[1] / "best.keras")],
         f"--model {run_dirs[1] / 'best.keras'} is given twice (as {run_dirs[1]}): an ensemble averages each member"),
        (["--saved-proba", str(first), str(first)], f"--saved-proba {first} is given twice: an ensemble averages"),
    ):
        assert main([str(path), *members, "--out", str(twice)]) == 2
        assert words in one_error_line(capsys) and not twice.exists()


@pytest.mark.parametrize("option, message", [
    (["--tta", "flip"], "--tta applies to the --model predictions, and there is no --model"),
    (["--prior-correction"], "Drop --prior-correction. Received: prior_correction=True"),
])
def test_saved_proba_alone_refuses_the_options_of_models(tmp_path, test_csv, option, message, capsys):
    # --tta and --prior-correction apply to the --models only (docs/prediction.md): with --saved-proba
    # alone they changed nothing, without a word.
    path, ids = test_csv
    saved = write_saved(tmp_path / "saved.csv", list(ids), saved_probabilities(len(ids), seed=1))
    out = tmp_path / "s.csv"
    assert main([str(path), "--saved-proba", str(saved), *option, "--out", str(out)]) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("change, message", [
    (lambda ids, p: (ids[:-1], p[:-1]), "ends after 29 rows, but the input goes on (id '1029')"),
    (lambda ids, p: (ids + ["2000"], np.vstack([p, p[:1]])), "has 31 rows but the input only 30"),
    (lambda ids, p: (ids[:3] + ids[4:5] + ids[3:4] + ids[5:], p),
     "line 5, field 'id': id '1004' where the input has '1003'"),
    (lambda ids, p: (ids, p * 1.1), "line 2: the class probabilities sum to 1.1"),
])
def test_saved_proba_of_another_file_exit_2_no_output(tmp_path, test_csv, change, message, capsys):
    path, ids = test_csv
    saved = write_saved(tmp_path / "saved.csv", *change(list(ids), saved_probabilities(len(ids), seed=1)))
    out = tmp_path / "s.csv"
    assert main([str(path), "--saved-proba", str(saved), "--out", str(out), "--chunk-rows", "7"]) == 2
    line = one_error_line(capsys)
    assert "saved.csv" in line and message in line, line
    assert not out.exists()


def test_saved_proba_malformed_files_and_image_input(tmp_path, test_csv, run_dirs, capsys):
    path, ids = test_csv
    good = write_saved(tmp_path / "good.csv", ids, saved_probabilities(len(ids), seed=2))
    lines = good.read_text().splitlines()
    cases = {
        "word.csv": (lines[:3] + [lines[3].rsplit(",", 2)[0] + ",high," + lines[3].rsplit(",", 1)[1]] + lines[4:],
                     "word.csv, line 4, field 'Surprise': not a probability: 'high'"),
        "header.csv": ([lines[0].replace(",Neutral", "")] + [line.rsplit(",", 1)[0] for line in lines[1:]],
                       "header.csv, line 1: missing column(s) Neutral"),
        "repeat.csv": (lines[:3] + [lines[2]] + lines[4:], "repeat.csv, line 4, field 'id': id '1001' repeats line 3"),
        "negative.csv": (lines[:2] + [lines[2].replace(",0.", ",-0.", 1)] + lines[3:], "negative.csv, line 3, field"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text("\n".join(content) + "\n")
        out = tmp_path / f"out-{name}"
        assert main([str(path), "--model", str(run_dirs[0]), "--saved-proba", str(tmp_path / name),
                     "--out", str(out)]) == 2, name
        assert message in one_error_line(capsys), name
        assert not out.exists()
    (tmp_path / "probabilities").mkdir()  # it said "no such file"
    assert main([str(path), "--saved-proba", str(tmp_path / "probabilities"), "--out", str(tmp_path / "f.csv")]) == 2
    assert "probabilities: a folder, not a file of saved probabilities" in one_error_line(capsys)
    photo_path = tmp_path / "face.png"
    cv2.imwrite(str(photo_path), generate(1, seed=0).images.pixels[0, :, :, 0])
    assert main([str(photo_path), "--saved-proba", str(good), "--out", str(tmp_path / "faces.csv")]) == 2
    assert "--saved-proba" in one_error_line(capsys)


def test_export_tflite_reports_difference(tmp_path, run_dirs, capsys):
    destination = tmp_path / "model.tflite"
    assert main(["--model", str(run_dirs[1]), "--export", "tflite", "--export-to", str(destination)]) == 0
    text = capsys.readouterr().out
    assert "max |difference| vs Keras" in text and destination.is_file()
    difference = float(text.split("vs Keras ")[1].split()[0])
    assert difference <= 1e-4


def run_script(*args, env=None):
    environment = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, str(REPO / "predict.py"), *args], capture_output=True, text=True,
                          env=environment, cwd=REPO, timeout=300)


def test_lean_path_never_imports_tensorflow(tmp_path, run_dirs, test_csv):
    from keras_fer import inference

    inference.load_predictor(run_dirs[0])  # makes sure the verified LiteRT copy exists
    code = ("import sys; from keras_fer.cli.predict import main; "
            f"code = main([{str(test_csv[0])!r}, '--model', {str(run_dirs[0])!r}, "
            f"'--out', {str(tmp_path / 's.csv')!r}]); "
            "print(code, sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                               env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=tmp_path)
    assert completed.stdout.strip().splitlines()[-1] == "0 []", completed.stderr
    assert len(read_rows(tmp_path / "s.csv")) == len(test_csv[1]) + 1


def test_script_help_and_clean_error(tmp_path):
    help_run = run_script("--help")
    assert help_run.returncode == 0 and "--tta" in help_run.stdout
    (tmp_path / "not_a_model.keras").write_bytes(b"PK\x03\x04garbage")
    (tmp_path / "in.csv").write_text("id,feature\n0," + " ".join(["1"] * 2304) + "\n")
    failed = run_script(str(tmp_path / "in.csv"), "--model", str(tmp_path / "not_a_model.keras"),
                        "--out", str(tmp_path / "s.csv"))
    assert failed.returncode == 2
    assert (failed.stderr.count("\n") == 1 and failed.stderr.startswith("error: ")
            and "not_a_model.keras" in failed.stderr)
    assert not (tmp_path / "s.csv").exists()


def test_the_mtcnn_detector_prints_no_tensorflow_start_up_lines(tmp_path, run_dirs):
    # The mtcnn package imports TensorFlow itself, and its native start-up lines ("WARNING: All
    # log messages before absl::InitializeLog()", "oneDNN custom operations are on") reached stderr.
    from matplotlib import cbook

    photo = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    completed = run_script(str(photo), "--detector", "mtcnn", "--model", str(run_dirs[0]), "--backend", "keras",
                           "--out", str(tmp_path / "faces.csv"))
    assert completed.returncode == 0 and completed.stderr == ""
    assert f"wrote {tmp_path / 'faces.csv'}: 1 face in 1 image\n" in completed.stdout  # not "1 faces in 1 images"


def test_saved_proba_truncated_or_corrupt_gzip_is_one_line_naming_it(tmp_path, test_csv, capsys):
    path, ids = test_csv
    good = write_saved(tmp_path / "good.csv.gz", ids, saved_probabilities(len(ids), seed=4)).read_bytes()
    damaged = {
        "truncated.csv.gz": good[: len(good) // 2],  # EOFError
        "corrupt.csv.gz": good[:10] + bytes(byte ^ 0xFF for byte in good[10:60]) + good[60:],  # zlib.error
    }
    for name, content in damaged.items():
        (tmp_path / name).write_bytes(content)
        out = tmp_path / f"out-{name}.csv"
        assert main([str(path), "--saved-proba", str(tmp_path / name), "--out", str(out)]) == 2, name
        assert one_error_line(capsys).startswith(f"error: {tmp_path / name}: not a readable CSV file ("), name
        assert not out.exists()


def test_a_bad_image_late_in_a_folder_leaves_no_annotated_copies(tmp_path, run_dirs, demo, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(70):  # more than one group of 64
        cv2.imwrite(str(folder / f"{i:03d}.png"), demo.pixels[i % len(demo.pixels)])
    (folder / "069.png").write_bytes((folder / "069.png").read_bytes()[:40])  # truncated: the last group
    annotated, out = tmp_path / "annotated", tmp_path / "faces.csv"
    assert main([str(folder), "--model", str(run_dirs[0]), "--out", str(out), "--annotate", str(annotated)]) == 2
    line = one_error_line(capsys)
    assert f"{folder / '069.png'}: unreadable image (corrupt or not an image); --skip-unreadable leaves" in line
    assert not annotated.exists() and not out.exists()
    (folder / "069.png").unlink()
    from keras_fer import files

    real_replace = files.os.replace

    def fail_on_the_csv(source, target, *args, **kwargs):
        if str(target) == str(out):
            raise OSError(28, "No space left on device", str(target))
        return real_replace(source, target, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:  # the CSV fails last: the copies must not have moved
        patch.setattr(files.os, "replace", fail_on_the_csv)
        assert main([str(folder), "--model", str(run_dirs[0]), "--out", str(out), "--annotate", str(annotated)]) == 2
    assert "No space left on device" in one_error_line(capsys)
    assert not annotated.exists() and not out.exists()
    (annotated / "keep.txt").parent.mkdir()
    (annotated / "keep.txt").write_text("mine")
    assert main([str(folder), "--model", str(run_dirs[0]), "--out", str(out), "--annotate", str(annotated)]) == 0
    assert sorted(path.name for path in annotated.iterdir()) == sorted([f"{i:03d}.png" for i in range(69)]
                                                                        + ["keep.txt"])


def test_a_killed_runs_half_written_submission_is_removed_by_the_next_run(tmp_path, run_dirs, test_csv, capsys,
                                                                          monkeypatch):
    import signal

    out = tmp_path / "submission.csv"
    dead = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert dead.wait() == -signal.SIGKILL
    from keras_fer.files import _host_tag

    orphan = tmp_path / f".submission.csv.{dead.pid}@{_host_tag()}-k3x9_a2b.csv"  # as atomic_path names it, writer gone
    orphan.write_text("id,label\n1000,")
    live = tmp_path / f".submission.csv.{os.getpid()}@{_host_tag()}-q7w8e9r0.csv"  # a writer still running
    live.write_text("")
    assert main([str(test_csv[0]), "--model", str(run_dirs[0]), "--out", str(out)]) == 0
    assert not orphan.exists() and live.exists() and len(read_rows(out)) == len(test_csv[1]) + 1
    assert f"note: removed {orphan}, half-written by a run that was killed" in capsys.readouterr().err
    # One that cannot be removed (another user's, in a sticky /tmp) is left, and the run goes on.
    orphan.write_text("id,label\n1000,")
    real_unlink = Path.unlink

    def refuse(self, missing_ok=False):
        if self == orphan:
            raise PermissionError(1, "Operation not permitted", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    assert main([str(test_csv[0]), "--model", str(run_dirs[0]), "--out", str(out)]) == 0
    assert orphan.exists() and "removed" not in capsys.readouterr().err


def test_a_folders_images_in_formats_not_read_are_named_not_skipped_silently(tmp_path, run_dirs, demo, capsys):
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    cv2.imwrite(str(folder / "0.png"), demo.pixels[0, :, :, 0])
    (folder / "party.gif").write_bytes(b"GIF89a" + bytes(20))  # read as a single input it is refused by name
    (folder / "more" / "phone.heic").write_bytes(bytes(20))
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "faces.csv"
    assert main([str(folder), "--model", str(run_dirs[0]), "--no-detect", "--out", str(out)]) == 0
    assert len(read_rows(out)) == 2
    assert ("note: skipped 2 images in a format that is not read (more/phone.heic, party.gif): convert them to "
            ".jpg, .jpeg, .png") in capsys.readouterr().err
    (folder / "0.png").unlink()
    assert main([str(folder), "--model", str(run_dirs[0]), "--no-detect", "--out", str(out)]) == 2
    assert "no images in this folder (or its sub-folders) (more/phone.heic, party.gif: a format that is not read)" in (
        one_error_line(capsys))


def test_a_model_trained_on_the_demo_faces_is_noted_as_such(tmp_path, test_csv, capsys):
    # The README's first run trains on cartoons; applied to FER2013 it wrote a submission without a word.
    demo_run = save_run(tmp_path / "demo", tiny_model(13), PRIOR)
    config = json.loads((demo_run / "config.json").read_text())
    (demo_run / "config.json").write_text(json.dumps({**config, "data": None}))
    real_run = save_run(tmp_path / "real", tiny_model(14), PRIOR)
    (real_run / "config.json").write_text(json.dumps({**config, "data": "/data/fer2013/train.csv.gz"}))
    assert main([str(test_csv[0]), "--model", str(demo_run), str(real_run), "--out", str(tmp_path / "s.csv")]) == 0
    err = capsys.readouterr().err
    assert f"note: {demo_run}: trained on the built-in demo faces (cartoons), not FER2013" in err
    assert f"{real_run}: trained on" not in err


def test_accuracy_on_a_models_own_training_file_is_noted(tmp_path, demo, capsys):
    # FER_DATA at train.csv.gz: predict.py printed "accuracy 0.6760" of rows the model trained on.
    labelled = tmp_path / "train.csv"
    with open(labelled, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "feature"])
        for face, label in zip(demo.pixels[:20], demo.labels[:20]):
            writer.writerow([int(label), " ".join(map(str, face.reshape(-1).tolist()))])
    run = save_run(tmp_path / "run", tiny_model(15), PRIOR)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "data": str(labelled)}))
    elsewhere = save_run(tmp_path / "elsewhere", tiny_model(16), PRIOR)  # the packaged model's case: another path
    (elsewhere / "config.json").write_text(json.dumps(
        {**config, "data": "/data/fer2013/train.csv", "train_images": 18, "val_images": 2}))
    other = save_run(tmp_path / "other", tiny_model(17), PRIOR)
    (other / "config.json").write_text(json.dumps({**config, "data": "/data/fer2013/train.csv", "train_images": 9,
                                                   "val_images": 1}))
    assert main([str(labelled), "--model", str(run), str(elsewhere), str(other), "--out", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    assert f"note: {run} was trained on this file: the accuracies below count its training rows too" in err
    assert f"note: {elsewhere} was trained on a file of this name and size (20 rows)" in err
    assert f"{other} was trained" not in err


def test_skip_unreadable_classifies_a_folders_other_images(tmp_path, run_dirs, demo, capsys):
    folder = tmp_path / "crops"
    for i in range(70):  # two groups of 64: a bad file in each, one of them a whole group's last
        (folder / CLASS_NAMES[int(demo.labels[i % len(demo.labels)])].lower()).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / CLASS_NAMES[int(demo.labels[i % len(demo.labels)])].lower() / f"{i:03d}.png"),
                    demo.pixels[i % len(demo.pixels), :, :, 0])
    bad = sorted(folder.rglob("*.png"))
    for path in (bad[5], bad[69]):
        path.write_bytes(path.read_bytes()[:40])  # truncated
    from test_data import huge_png

    bad[30].write_bytes(huge_png())  # OpenCV asserted on it: a traceback, and no way to skip it
    real = np.fromfile

    def refuse(path, *args, **kwargs):  # root reads any file: a permission error is simulated
        if str(path) == str(bad[40]):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    out, annotated = tmp_path / "faces.csv", tmp_path / "annotated"
    argv = [str(folder), "--model", str(run_dirs[0]), "--out", str(out), "--no-detect", "--annotate", str(annotated)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, "fromfile", refuse)
        assert main(argv + ["--skip-unreadable"]) == 0
    captured = capsys.readouterr()
    for path, reason in ((bad[5], "unreadable image (corrupt or not an image)"), (bad[69], "unreadable image"),
                         (bad[30], "too large to decode"), (bad[40], "cannot be read (Permission denied)")):
        assert f"note: {path}: {reason}" in captured.err
    assert captured.err.count("left out (--skip-unreadable)") == 4 and "Traceback" not in captured.err
    assert f"wrote {out}: 66 faces in 66 images; 4 unreadable, left out" in captured.out
    rows = read_rows(out)
    listed = {row[0] for row in rows[1:]}
    assert len(rows) == 67 and str(bad[5].relative_to(folder)) not in listed
    assert str(bad[4].relative_to(folder)) in listed and str(bad[6].relative_to(folder)) in listed
    # each row keeps its own true label: the files after a skipped one did not shift
    assert all(row[9] == str(CLASS_NAMES.index(row[0].split("/")[0].capitalize())) for row in rows[1:])
    assert len(list(annotated.rglob("*.png"))) == 66
    assert "all rows: accuracy" in captured.out

    # A folder with nothing readable writes nothing; --skip-unreadable is refused for other inputs.
    empty = tmp_path / "broken"
    empty.mkdir()
    for i in range(2):
        (empty / f"{i}.png").write_bytes(b"not a png")
    assert main([str(empty), "--model", str(run_dirs[0]), "--out", str(tmp_path / "none.csv"),
                 "--skip-unreadable"]) == 2
    assert one_error_line(capsys).startswith(f"error: {empty}: none of its 2 images could be read (named above)")
    assert not (tmp_path / "none.csv").exists()
    (tmp_path / "data.csv").write_text("label,feature\n0," + " ".join(["0"] * 2304) + "\n")
    for given in (str(bad[4]), str(tmp_path / "data.csv")):
        assert main([given, "--model", str(run_dirs[0]), "--out", str(tmp_path / "x.csv"), "--skip-unreadable"]) == 2
        assert one_error_line(capsys).startswith(f"error: --skip-unreadable is for a folder of images; {given}")


def test_prediction_doc_has_a_row_for_every_option_and_no_other():
    import re

    from keras_fer.cli.predict import build_parser

    doc = (Path(__file__).resolve().parents[1] / "docs" / "prediction.md").read_text(encoding="utf-8")
    section = doc.split("\n## Options\n", 1)[1].split("\n## ", 1)[0]  # the model table above has --model rows
    documented = re.findall(r"^\| `(--[a-z-]+)[^`]*` \| .+ \|$", section, re.MULTILINE)
    options = {option for action in build_parser()._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"}
    assert len(documented) == len(set(documented)) and set(documented) == options


def test_photo_runs_keep_their_outputs_and_say_what_they_leave_out(tmp_path, run_dirs, monkeypatch, capsys):
    folder = tmp_path / "labelled"
    for name, image in (("angry/face.jpg", photo(3)), ("happy/blank.png", photo(0, blank=True))):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), image)
    # A labelled image with no face is not in the scores: said so (it said "accuracy 1.0000" of 1 of 2).
    out = tmp_path / "faces.csv"
    assert main([str(folder), "--model", str(run_dirs[0]), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "note: 1 labelled image with no face found is not in the scores below" in printed.err
    assert "(1 rows)" in printed.out  # of the 2 labelled images
    # An annotated copy named like the --out file replaced the CSV after it was written.
    assert main([str(folder), "--model", str(run_dirs[0]), "--annotate", str(tmp_path / "a"),
                 "--out", str(tmp_path / "a" / "angry" / "face.jpg")]) == 2
    assert "would overwrite the --out file (an annotated copy goes there)" in one_error_line(capsys)
    assert not (tmp_path / "a").exists()
    # stdout's reader gone (| head): the lines stop and the CSV is still written (it was lost, exit 1).
    class Gone:
        def write(self, text):
            raise BrokenPipeError

        def flush(self):
            raise BrokenPipeError

        def fileno(self):  # its descriptor is pointed at /dev/null
            return descriptor

    descriptor = os.open(os.devnull, os.O_WRONLY)

    monkeypatch.setattr("sys.stdout", Gone())
    piped = tmp_path / "piped.csv"
    assert main([str(folder), "--model", str(run_dirs[0]), "--out", str(piped)]) == 0
    monkeypatch.undo()
    assert read_rows(piped) == read_rows(out)


def test_export_with_only_saved_probabilities_is_refused(tmp_path, test_csv, capsys):
    # It exported the packaged model and averaged it into the files' ensemble without a word.
    saved = tmp_path / "saved.csv"
    saved.write_text("id,label," + ",".join(CLASS_NAMES) + "\n")
    assert main([str(test_csv[0]), "--saved-proba", str(saved), "--export", "keras", "--out",
                 str(tmp_path / "s.csv")]) == 2
    assert "--export exports the --model models, and there is none: with --saved-proba, name the model" in (
        one_error_line(capsys))
    assert not (tmp_path / "s.csv").exists()


def test_an_image_in_a_format_not_read_is_named_not_read_as_a_csv(tmp_path, capsys):
    image = tmp_path / "face.ppm"
    cv2.imwrite(str(image), photo(3))
    assert main([str(image), "--out", str(tmp_path / "o.csv")]) == 2
    assert one_error_line(capsys) == (f"error: {image}: a PPM image, which keras-fer does not read: convert it to "
                                      "one of .jpg, .jpeg, .png, .bmp, .pgm, .tif, .tiff, .webp")
