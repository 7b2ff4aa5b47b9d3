import gzip
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_fer import data
from keras_fer.classes import CLASS_NAMES
from keras_fer.errors import FerDataError, FerError


def random_images(count, seed=0, labelled=True):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(count, 48, 48, 1), dtype=np.uint8)
    labels = rng.integers(0, 7, size=count) if labelled else None
    return data.Images(pixels, labels)


def feature(pixels):
    return " ".join(map(str, pixels.reshape(-1).tolist()))


@pytest.mark.parametrize("name", ["train.csv", "train.csv.gz"])
def test_label_feature_round_trip(tmp_path, name):
    images = random_images(10)
    data.write_csv(images, tmp_path / name)
    back = data.read(tmp_path / name)
    np.testing.assert_array_equal(back.pixels, images.pixels)
    np.testing.assert_array_equal(back.labels, images.labels)
    assert list(back.ids) == [str(i) for i in range(10)]


def test_gzip_detected_by_content_not_name(tmp_path):
    images = random_images(3)
    data.write_csv(images, tmp_path / "a.csv.gz")
    (tmp_path / "a.csv.gz").rename(tmp_path / "renamed.csv")
    np.testing.assert_array_equal(data.read(tmp_path / "renamed.csv").pixels, images.pixels)


def test_id_feature_round_trip(tmp_path):
    images = random_images(5, labelled=False)
    images.ids = np.array(["7", "8", "9", "10", "11"], dtype=object)
    data.write_csv(images, tmp_path / "test.csv")
    back = data.read(tmp_path / "test.csv")
    assert back.labels is None
    assert list(back.ids) == ["7", "8", "9", "10", "11"]
    np.testing.assert_array_equal(back.pixels, images.pixels)
    assert back.index_of("00009") == 2
    with pytest.raises(FerDataError, match="no image with id '9999"):  # not int()'s ValueError for 5,000 digits
        back.index_of("9" * 5000)
    # Ids with a comma or a quote (image names such as "x,y.png") are quoted, not split.
    images.ids = np.array(["x,y", 'say "hi"', "7", "a b", "é"], dtype=object)
    data.write_csv(images, tmp_path / "odd.csv.gz")
    assert list(data.read(tmp_path / "odd.csv.gz").ids) == list(images.ids)


def test_kaggle_emotion_pixels_usage(tmp_path):
    images = random_images(6)
    usage = ["Training", "Training", "PublicTest", "PrivateTest", "Training", "PublicTest"]
    lines = ["emotion,pixels,Usage"] + [
        f"{label},{feature(p)},{u}" for label, p, u in zip(images.labels, images.pixels, usage)
    ]
    with gzip.open(tmp_path / "fer2013.csv.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    back = data.read(tmp_path / "fer2013.csv.gz")
    np.testing.assert_array_equal(back.labels, images.labels)
    assert list(back.usage) == usage
    train, val = data.split(back, "usage")
    assert len(train) == 3 and len(val) == 2
    np.testing.assert_array_equal(val.pixels, images.pixels[[2, 5]])


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=12), st.integers(1, 5))
def test_any_labels_round_trip_in_any_chunking(tmp_path_factory, labels, chunk_rows):
    path = tmp_path_factory.mktemp("csv") / "x.csv"
    images = random_images(len(labels), seed=len(labels))
    images.labels = np.array(labels)
    data.write_csv(images, path)
    chunks = list(data.iter_csv(path, chunk_rows=chunk_rows))
    assert all(len(chunk) <= chunk_rows for chunk in chunks)
    back = data.concatenate(chunks)
    np.testing.assert_array_equal(back.labels, labels)
    np.testing.assert_array_equal(back.pixels, images.pixels)


def write_rows(path, header, rows):
    path.write_text("\n".join([header] + rows) + "\n")
    return path


GOOD = " ".join(["0"] * 2304)


@pytest.mark.parametrize(
    "rows, line, field, words",
    [
        ([f"0,{GOOD}", "1," + " ".join(["1"] * 2303)], 3, "feature", "expected 2304 pixels, found 2303"),
        ([f"0,{GOOD}", f"2,{GOOD}", "3," + " ".join(["1"] * 2303 + ["x"])], 4, "feature", "not an integer"),
        ([f"0,{GOOD}", "3," + " ".join(["1"] * 2303 + ["256"])], 3, "feature", "out of range"),
        ([f"0,{GOOD}", f"9,{GOOD}"], 3, "label", "unknown label '9': expected 0-6 or a class name (angry, disgust,"),
        ([f"0,{GOOD}", f"\u0663,{GOOD}"], 3, "label", "unknown label '\u0663'"),  # an Arabic-Indic 3
        ([f"0,{GOOD}", f"0,{GOOD},extra"], 3, None, "expected 2 fields"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, rows, line, field, words):
    path = write_rows(tmp_path / "bad.csv", "label,feature", rows)
    with pytest.raises(FerDataError) as caught:
        data.read(path, chunk_rows=2)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.row == line and error.field == field
    assert words in str(error) and str(path) in str(error) and f"line {line}" in str(error)
    assert "\n" not in str(error)


def test_an_empty_id_is_a_bad_row(tmp_path):
    path = write_rows(tmp_path / "test.csv", "id,feature", [f"7,{GOOD}", f" ,{GOOD}"])
    with pytest.raises(FerDataError, match="empty id") as caught:
        data.read(path)
    assert (caught.value.row, caught.value.field) == (3, "id")


def test_short_row_then_long_row_is_caught_in_one_chunk(tmp_path):
    # 2303 + 2305 pixels add up to two full rows: each row's count must still be checked.
    rows = [f"0,{GOOD}", "1," + " ".join(["1"] * 2303), "2," + " ".join(["2"] * 2305), f"3,{GOOD}"]
    path = write_rows(tmp_path / "shifted.csv", "label,feature", rows)
    with pytest.raises(FerDataError, match="expected 2304 pixels, found 2303") as caught:
        data.read(path, chunk_rows=4096)
    assert caught.value.row == 3 and caught.value.field == "feature"


@pytest.mark.parametrize(
    "header, later_row",
    [
        ("label,feature", f"9,{GOOD}"),  # unknown label
        ("label,feature", f"0,{GOOD},extra"),  # wrong field count
        ("emotion,pixels,Usage", f"0,{GOOD},Validation"),  # unknown Usage
    ],
)
def test_first_bad_line_wins_within_a_chunk(tmp_path, header, later_row):
    usage = ",Training" if "Usage" in header else ""
    rows = [f"0,{GOOD}{usage}", "1," + " ".join(["1"] * 2303) + usage, f"2,{GOOD}{usage}", later_row]
    path = write_rows(tmp_path / "bad.csv", header, rows)
    with pytest.raises(FerDataError, match="expected 2304 pixels, found 2303") as caught:
        data.read(path, chunk_rows=4096)
    assert caught.value.row == 3


def test_later_bad_label_still_reported_when_earlier_pixels_are_good(tmp_path):
    path = write_rows(tmp_path / "bad.csv", "label,feature", [f"0,{GOOD}", f"1,{GOOD}", f"9,{GOOD}"])
    with pytest.raises(FerDataError, match="unknown label '9'") as caught:
        data.read(path, chunk_rows=4096)
    assert caught.value.row == 4 and caught.value.field == "label"


def test_corrupt_and_truncated_gzip(tmp_path):
    data.write_csv(random_images(20), tmp_path / "good.csv")
    packed = gzip.compress((tmp_path / "good.csv").read_bytes())
    # gzip.compress writes a 10-byte header, then the deflate stream: 0xff there makes the
    # first block an invalid type, which zlib reports as zlib.error (not an OSError).
    (tmp_path / "corrupt.csv.gz").write_bytes(packed[:10] + b"\xff" * 16 + packed[26:])
    (tmp_path / "truncated.csv.gz").write_bytes(packed[: len(packed) // 2])
    for name in ("corrupt.csv.gz", "truncated.csv.gz"):
        with pytest.raises(FerDataError, match="not a readable CSV file") as caught:
            data.read(tmp_path / name)
        assert name in str(caught.value)


def test_missing_column_empty_file_and_missing_file(tmp_path):
    with pytest.raises(FerDataError, match="missing pixel column"):
        data.read(write_rows(tmp_path / "a.csv", "label,image", [f"0,{GOOD}"]))
    # A file without its header line: the error held the whole first row (7.8 KB) as "found".
    headless = write_rows(tmp_path / "headless.csv", f"3,{GOOD}", [f"0,{GOOD}"])
    with pytest.raises(FerDataError, match="no header line: the first line holds pixel values; add a header such "
                                           "as label,feature as line 1") as caught:
        data.read(headless)
    assert len(str(caught.value)) < 300
    with pytest.raises(FerDataError, match="empty file"):
        data.read(write_rows(tmp_path / "b.csv", "", []))
    with pytest.raises(FerDataError, match="no data rows"):
        data.read(write_rows(tmp_path / "c.csv", "label,feature", []))
    with pytest.raises(FerDataError, match="no such file"):
        data.read(tmp_path / "nothing.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(FerDataError):
        data.read(tmp_path / "binary.csv")
    ok, png = cv2.imencode(".png", np.zeros((48, 48), np.uint8))  # an image under a name that is not an image's
    (tmp_path / "face.txt").write_bytes(png.tobytes())
    with pytest.raises(FerDataError, match=r"face.txt: not a CSV file but a PNG image: give it its image extension "
                                           r"\(\.png\)"):
        data.read(tmp_path / "face.txt")


def test_two_unlabelled_rows_or_images_with_one_id_are_refused(tmp_path):
    # A submission with two predictions for one id: the scorer takes one of them.
    path = write_rows(tmp_path / "test.csv", "id,feature", [f"7,{GOOD}", f"8,{GOOD}", f" 7 ,{GOOD}"])
    with pytest.raises(FerDataError, match=r"id '7' again \(first at line 2\): ids must be unique") as caught:
        data.read(path)
    assert (caught.value.row, caught.value.field) == (4, "id")
    for folder in (tmp_path / "flat", tmp_path / "labelled" / "happy"):
        folder.mkdir(parents=True)
        for name in ("0.png", "0.jpg", "1.png"):
            cv2.imwrite(str(folder / name), np.full((48, 48), 100, np.uint8))
    with pytest.raises(FerDataError, match=r"0\.jpg and 0\.png would both have the id '0'"):
        data.read(tmp_path / "flat")
    # Labelled data names no prediction by id: training data with repeated ids still loads.
    assert data.read(tmp_path / "labelled").labels.tolist() == [3, 3, 3]
    labelled = write_rows(tmp_path / "train.csv", "id,label,feature", [f"7,3,{GOOD}", f"7,4,{GOOD}"])
    assert data.read(labelled).labels.tolist() == [3, 4]
    # ... but a reader that writes results by id (predict.py) refuses it as it refuses a test set's,
    # so data split does not write such files (it wrote them, and predict.py refused its val.csv).
    with pytest.raises(FerDataError, match=r"train\.csv, line 3, field 'id': id '7' again \(first at line 2\)"):
        list(data.iter_csv(labelled, unique_ids=True))
    out = tmp_path / "val.csv"
    assert data.main(["split", str(tmp_path / "labelled"), "--val", "first:1", "--out-val", str(out)]) == 2
    assert not out.exists()


def test_class_folders_with_images_the_reader_would_leave_out_are_refused(tmp_path):
    # Training read 2 of 4 images and said nothing (predict.py noted the GIF and the nested image).
    png = cv2.imencode(".png", np.full((48, 48), 100, np.uint8))[1].tobytes()
    for name in ("angry/0.png", "happy/1.png", "angry/more/deep.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(png)
    with pytest.raises(FerDataError) as raised:
        data.read(tmp_path)
    assert str(raised.value) == (f"{tmp_path}: angry/more/deep.png would be left out: in a sub-folder of its class "
                                 "folder: only a class folder's own images are read; move it up")
    (tmp_path / "angry" / "more" / "deep.png").unlink()
    (tmp_path / "happy" / "x.gif").write_bytes(b"GIF89a")
    (tmp_path / "happy" / "y.heic").write_bytes(b"x")
    with pytest.raises(FerDataError, match=r"happy/x\.gif \(and 1 more\) would be left out: a format that is not "
                                           r"read: convert to one of \.jpg"):
        data.read(tmp_path)
    for name in ("happy/x.gif", "happy/y.heic"):
        (tmp_path / name).unlink()
    (tmp_path / "angry" / "more" / "notes.txt").write_text("not an image")  # other files are no images
    for name in ("happy/@eaDir/1.png/SYNOFILE_THUMB_M.jpg", "__MACOSX/happy/._1.png"):  # a NAS's, a macOS zip's
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(png)
    assert data.read(tmp_path).labels.tolist() == [0, 3]


def test_file_names_that_are_not_utf8_are_refused_by_name(tmp_path, capsys):
    # A zip made on another system (cp1252 names): predict.py and data split wrote the name into a
    # UTF-8 CSV and failed with a traceback.
    import os

    from keras_fer.cli.predict import main as predict

    folder = tmp_path / "flat"
    folder.mkdir()
    bad = Path(os.fsdecode(bytes(folder) + b"/caf\xe9.png"))
    png = cv2.imencode(".png", np.full((48, 48), 100, np.uint8))[1].tobytes()  # cv2.imwrite crashes on such names
    for path in (bad, folder / "ok.png"):
        path.write_bytes(png)
    expected = f"{folder}/caf\\xe9.png: its name is not UTF-8 text (made on another system?): rename it"
    with pytest.raises(FerDataError) as raised:
        data.read(folder)
    assert str(raised.value) == expected
    for target in (folder, bad):
        assert predict([str(target), "--out", str(tmp_path / "out.csv")]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {expected}"
    assert not (tmp_path / "out.csv").exists()
    # Folders above the data may be named anyhow: the ids are the names below them.
    bad.unlink()
    above = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))
    folder.rename(above)
    assert list(data.read(above).ids) == ["ok"]
    assert predict([str(above), "--out", str(tmp_path / "out.csv")]) == 0
    assert (tmp_path / "out.csv").read_text().splitlines()[1].startswith("ok.png,")


def test_ids_one_as_numbers_are_one_id(tmp_path):
    # A scorer reading the ids as numbers, and Images.index_of, take "007" for 7.
    path = write_rows(tmp_path / "test.csv", "id,feature", [f"7,{GOOD}", f"8,{GOOD}", f"007,{GOOD}"])
    with pytest.raises(FerDataError, match=r"id '007' is id '7' again \(first at line 2\)") as caught:
        data.read(path)
    assert (caught.value.row, caught.value.field) == (4, "id")
    # Ids that only look alike stay apart; a labelled file may repeat ids.
    path = write_rows(tmp_path / "ok.csv", "id,feature", [f"7,{GOOD}", f"7a,{GOOD}", f"²,{GOOD}", f"07.5,{GOOD}"])
    assert list(data.read(path).ids) == ["7", "7a", "²", "07.5"]
    path = write_rows(tmp_path / "labelled.csv", "id,label,feature", [f"7,0,{GOOD}", f"007,1,{GOOD}"])
    assert data.read(path).labels.tolist() == [0, 1]
    folder = tmp_path / "flat"
    folder.mkdir()
    for name in ("7.png", "007.png"):
        cv2.imwrite(str(folder / name), np.full((48, 48), 100, np.uint8))
    with pytest.raises(FerDataError, match=r"007\.png and 7\.png would both have the id '007' / '7'"):
        data.read(folder)
    # Signs and zeros as a number-reading scorer takes them; a 5,000-digit id without int()'s limit.
    assert [data.id_key(text) for text in ("+7", "-0", "-007", "0", "+", "-x", "٣")] == ["7", "0", "-7", "0", "+",
                                                                                       "-x", "٣"]
    long = "9" * 5000
    path = write_rows(tmp_path / "long.csv", "id,feature", [f"{long},{GOOD}", f"+{long},{GOOD}"])
    with pytest.raises(FerDataError, match=r"is id '9{5000}' again"):
        data.read(path)


def test_usage_values_are_read_whatever_their_case(tmp_path):
    path = write_rows(tmp_path / "fer2013.csv", "emotion,pixels,Usage",
                      [f"0,{GOOD},training", f"1,{GOOD},PUBLICTEST", f"2,{GOOD},PrivateTest", f"3,{GOOD},Training"])
    images = data.read(path)
    assert list(images.usage) == ["Training", "PublicTest", "PrivateTest", "Training"]
    train, val = data.split(images, "usage")
    assert train.labels.tolist() == [0, 3] and val.labels.tolist() == [1]


def test_split_keeps_the_ids_of_labelled_data_that_has_them(tmp_path):
    # id,label,feature in, id,label,feature out: the validation rows can be traced back.
    rows = [f"face{i},{i % 7},{GOOD}" for i in range(30)]
    path = write_rows(tmp_path / "named.csv", "id,label,feature", rows)
    assert data.main(["split", str(path), "--val", "first:20", "--out-val", str(tmp_path / "val.csv")]) == 0
    assert (tmp_path / "val.csv").read_text().splitlines()[0] == "id,label,feature"
    back = data.read(tmp_path / "val.csv")
    assert list(back.ids) == [f"face{i}" for i in range(20, 30)]
    assert back.labels.tolist() == [i % 7 for i in range(20, 30)]
    # label,feature in (ids are row numbers): label,feature out, as before.
    data.write_csv(random_images(30), tmp_path / "plain.csv")
    assert data.main(["split", str(tmp_path / "plain.csv"), "--val", "first:20", "--out-val",
                      str(tmp_path / "val2.csv")]) == 0
    assert (tmp_path / "val2.csv").read_text().splitlines()[0] == "label,feature"


def test_class_folders_by_name_and_number(tmp_path):
    rng = np.random.default_rng(1)
    expected = {}
    for folder, label in [("angry", 0), ("Happy", 3), ("6", 6)]:
        (tmp_path / folder).mkdir()
        for i in range(2):
            image = rng.integers(0, 256, (48, 48), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / folder / f"{i}.png"), image)
            expected[f"{folder}/{i}"] = (image, label)
    images = data.read(tmp_path)
    assert len(images) == 6
    for image_id, pixels, label in zip(images.ids, images.pixels, images.labels):
        np.testing.assert_array_equal(pixels[:, :, 0], expected[image_id][0])
        assert label == expected[image_id][1]


def test_a_stray_image_beside_class_folders_is_an_error_not_an_unlabelled_folder(tmp_path, capsys):
    (tmp_path / "faces" / "happy").mkdir(parents=True)
    for name in ("happy/0.png", "cover.png"):
        cv2.imwrite(str(tmp_path / "faces" / name), np.full((48, 48), 100, np.uint8))
    with pytest.raises(FerDataError, match=r"images at the top level \(cover.png, ...\) beside class sub-folders"):
        data.read(tmp_path / "faces")
    (tmp_path / "faces" / "cover.png").unlink()
    assert data.read(tmp_path / "faces").labels.tolist() == [3]
    # Outputs inside an image folder would replace its images or become data: refused.
    for out in (tmp_path / "faces" / "happy" / "0.png", tmp_path / "faces" / "val.csv"):
        assert data.main(["split", str(tmp_path / "faces"), "--val", "first:1", "--out-val", str(out)]) == 2
        assert f"--out-val {out} is inside the data folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "faces").rglob("*")) == ["0.png", "happy"]


def test_flat_folder_any_size_and_colour(tmp_path):
    cv2.imwrite(str(tmp_path / "00000.png"), np.full((48, 48), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "00001.jpg"), np.full((96, 120, 3), (0, 0, 255), np.uint8))  # red, BGR
    images = data.read(tmp_path)
    assert images.labels is None and list(images.ids) == ["00000", "00001"]
    assert images.pixels.shape == (2, 48, 48, 1)
    assert images.pixels[0].min() == images.pixels[0].max() == 100
    assert abs(int(images.pixels[1].mean()) - 76) <= 2  # BT.601 grey of pure red


@pytest.mark.parametrize("name", ["u16.csv", "u16.csv.gz"])
def test_a_utf16_csv_is_named_as_such(tmp_path, name):
    # It was told "images and videos are recognized by their extension".
    text = f"id,feature\n0,{' '.join(['1'] * 2304)}\n".encode("utf-16")
    path = tmp_path / name
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    with pytest.raises(FerDataError, match="a UTF-16 text file: save the CSV as UTF-8"):
        data.read(path)


def test_a_device_is_not_called_missing():
    with pytest.raises(FerDataError, match="/dev/null: not a regular file"):  # it said "no such file"
        list(data.iter_csv("/dev/null"))


def test_a_truncated_image_is_one_error_without_opencv_warnings(tmp_path, capfd):
    ok, encoded = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (100, 100), np.uint8))
    (tmp_path / "cut.png").write_bytes(encoded.tobytes()[:300])
    level = cv2.utils.logging.getLogLevel()
    with pytest.raises(FerDataError, match="cut.png: unreadable image"):
        data.read(tmp_path / "cut.png")
    assert "WARN" not in capfd.readouterr().err  # "[ WARN:0@0.02] ... PNG input buffer is incomplete"
    assert cv2.utils.logging.getLogLevel() == level  # the caller's own level is back


def huge_png():
    """A valid 60-byte PNG whose header declares 200000x200000 pixels, over OpenCV's limit."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 200000, 200000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def test_an_image_opencv_refuses_or_a_file_that_cannot_be_read_is_a_data_error(tmp_path, monkeypatch):
    from keras_fer import faces

    # cv2.imdecode asserted (a traceback, exit 1): the image's header declares 4e10 pixels.
    (tmp_path / "huge.png").write_bytes(huge_png())
    for read in (data.read, faces.read_photo):
        with pytest.raises(FerDataError, match=r"huge.png: too large to decode: its header declares more than 2\^30"):
            read(tmp_path / "huge.png")
    # A permission or I/O error named the file but was an OSError, which a folder's reader cannot tell
    # from a full disk (root reads any file: the refusal is simulated).
    cv2.imwrite(str(tmp_path / "locked.png"), np.zeros((48, 48), np.uint8))
    real = np.fromfile

    def refuse(path, *args, **kwargs):
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(data.np, "fromfile", refuse)
    for read in (data.read, faces.read_photo):
        with pytest.raises(FerDataError, match=r"locked.png: cannot be read \(Permission denied\)$"):
            read(tmp_path / "locked.png")


def test_unreadable_image_and_bad_subfolder(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "00000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(FerDataError, match="unreadable image") as caught:
        data.read(tmp_path / "flat")
    assert "00000.jpg" in str(caught.value)
    (tmp_path / "classes" / "smirk").mkdir(parents=True)
    with pytest.raises(FerDataError, match="not a class"):
        data.read(tmp_path / "classes")


def test_first_n_split():
    images = random_images(50)
    train, val = data.split(images, "first:40")
    np.testing.assert_array_equal(train.pixels, images.pixels[:40])
    np.testing.assert_array_equal(val.pixels, images.pixels[40:])
    with pytest.raises(FerError, match="first:N"):
        data.split(images, "first:50")


def test_fraction_split_is_disjoint_complete_stratified_and_seeded():
    images = random_images(700, seed=3)
    images.labels = np.repeat(np.arange(7), [200, 20, 100, 150, 100, 80, 50])
    train, val = data.split(images, "fraction:0.1", seed=5)
    assert len(train) + len(val) == 700
    assert not set(train.ids) & set(val.ids)
    assert set(train.ids) | set(val.ids) == set(images.ids)
    np.testing.assert_array_equal(data.class_counts(val.labels), [20, 2, 10, 15, 10, 8, 5])
    again = data.split(images, "fraction:0.1", seed=5)[1]
    assert list(again.ids) == list(val.ids)
    assert list(data.split(images, "fraction:0.1", seed=6)[1].ids) != list(val.ids)
    with pytest.raises(FerError, match="Received: val='fraction:2'"):
        data.split(images, "fraction:2")
    with pytest.raises(FerError, match="--val must be"):
        data.split(images, "random")


def test_class_distribution_and_weights():
    labels = np.array([0] * 6 + [3] * 3 + [6])
    rows = data.class_distribution(labels)
    assert rows[0] == (0, "Angry", 6, 0.6) and rows[1][2] == 0
    weights = data.class_weights(labels)
    assert weights[0] == pytest.approx(10 / (7 * 6)) and weights[1] == 0.0
    assert weights[6] > weights[3] > weights[0]


def test_info_command(tmp_path, capsys):
    images = random_images(14)
    images.labels = np.arange(14) % 7
    data.write_csv(images, tmp_path / "t.csv")
    assert data.main(["info", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "14 images" in out and "no ids: rows are numbered 0..13" in out  # it said "ids: 0..13" of row numbers
    for name in CLASS_NAMES:
        assert f"{name}" in out
    named = write_rows(tmp_path / "named.csv", "id,feature", [f"7,{GOOD}", f"9,{GOOD}"])
    assert data.main(["info", str(named)]) == 0
    assert "\nids: 7..9" in capsys.readouterr().out
    assert data.main(["info", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.csv" in err and err.count("\n") == 1


def test_split_command_writes_the_rows_train_py_validates_on(tmp_path, capsys):
    images = random_images(70, seed=4)
    data.write_csv(images, tmp_path / "train.csv")
    val_out, train_out = tmp_path / "val.csv.gz", tmp_path / "rest.csv"
    argv = ["split", str(tmp_path / "train.csv"), "--val", "fraction:0.2", "--split-seed", "3",
            "--out-val", str(val_out), "--out-train", str(train_out)]
    assert data.main(argv) == 0
    expected_train, expected_val = data.split(data.read(tmp_path / "train.csv"), "fraction:0.2", seed=3)
    for path, expected in ((val_out, expected_val), (train_out, expected_train)):
        back = data.read(path)
        np.testing.assert_array_equal(back.pixels, expected.pixels)
        np.testing.assert_array_equal(back.labels, expected.labels)
    assert f"{len(expected_val)} validation rows" in capsys.readouterr().out
    assert 0 < len(expected_val) < 70 and len(expected_val) + len(expected_train) == 70


def test_split_command_bad_spec_or_unlabelled_data_exit_2_no_output(tmp_path, capsys):
    data.write_csv(random_images(10, labelled=False), tmp_path / "test.csv")
    data.write_csv(random_images(10), tmp_path / "train.csv")
    for source, spec, message in (("train.csv", "fraction:2", "0 < F < 1"),
                                  ("test.csv", "fraction:0.1", "has no labels"),
                                  ("test.csv", "first:5", "has no labels"), ("test.csv", "usage", "has no labels")):
        out = tmp_path / "val.csv"
        assert data.main(["split", str(tmp_path / source), "--val", spec, "--out-val", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
        assert not out.exists()


@pytest.mark.parametrize("name", ["bom.csv", "bom.csv.gz"])
def test_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path, name):
    # Excel's "CSV UTF-8" starts the file with a BOM; it must not hide the id or label column.
    opener = gzip.open if name.endswith(".gz") else open
    with opener(tmp_path / name, "wb") as out:
        out.write(b"\xef\xbb\xbfid,feature\n" + f"100,{GOOD}\n101,{GOOD}\n".encode())
    assert list(data.read(tmp_path / name).ids) == ["100", "101"]
    (tmp_path / "labelled.csv").write_bytes(b"\xef\xbb\xbflabel,feature\n" + f"3,{GOOD}\n".encode())
    assert data.read(tmp_path / "labelled.csv").labels.tolist() == [3]


def test_a_non_ascii_digit_is_not_a_pixel(tmp_path):
    # '²'.isdigit() is True, but int('²') fails: the error must still be the one-line data error.
    path = write_rows(tmp_path / "sup.csv", "label,feature", [f"0,{GOOD}", "1," + " ".join(["1"] * 2303 + ["²"])])
    with pytest.raises(FerDataError, match="pixel 2304 is not an integer") as caught:
        data.read(path)
    assert caught.value.row == 3 and caught.value.field == "feature"


@pytest.mark.parametrize("bad_line", [2, 4, 26])
def test_undecodable_bytes_name_their_own_line(tmp_path, bad_line):
    rows = [f"{i % 7},{GOOD}".encode() for i in range(30)]
    rows[bad_line - 2] = rows[bad_line - 2].replace(b" 0 ", b" 0\xe9 ", 1)  # latin-1 e-acute
    (tmp_path / "latin1.csv").write_bytes(b"\n".join([b"label,feature", *rows]) + b"\n")
    with pytest.raises(FerDataError, match="not UTF-8 text") as caught:
        data.read(tmp_path / "latin1.csv")
    assert caught.value.row == bad_line and "latin1.csv" in str(caught.value)


def test_an_undecodable_byte_does_not_hide_an_earlier_bad_row(tmp_path):
    rows = [f"0,{GOOD}".encode(), f"9,{GOOD}".encode(), f"1,{GOOD}".encode().replace(b" 0 ", b" 0\xe9 ", 1)]
    (tmp_path / "mixed.csv").write_bytes(b"\n".join([b"label,feature", *rows]) + b"\n")
    with pytest.raises(FerDataError, match="unknown label '9'") as caught:
        data.read(tmp_path / "mixed.csv")
    assert caught.value.row == 3
    rows[1] = f"1,{' '.join(['7'] * 2303)}".encode()  # bad pixels, found only when the chunk is parsed
    (tmp_path / "mixed.csv").write_bytes(b"\n".join([b"label,feature", *rows]) + b"\n")
    with pytest.raises(FerDataError, match="expected 2304 pixels") as caught:
        data.read(tmp_path / "mixed.csv")
    assert caught.value.row == 3


def test_hidden_files_in_image_folders_are_skipped(tmp_path):
    folder = tmp_path / "faces" / "happy"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "0.png"), np.full((48, 48), 50, np.uint8))
    (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")  # AppleDouble, not an image
    images = data.read(tmp_path / "faces")
    assert len(images) == 1 and images.labels.tolist() == [3]


def test_write_csv_of_no_rows_writes_the_header_only(tmp_path):
    data.write_csv(random_images(3).subset(np.zeros(0, dtype=np.int64)), tmp_path / "empty.csv")
    assert (tmp_path / "empty.csv").read_text() == "label,feature\n"


def test_split_command_refuses_an_empty_part_or_overwriting_its_input(tmp_path, capsys):
    data.write_csv(random_images(10), tmp_path / "train.csv")
    before = (tmp_path / "train.csv").read_bytes()
    cases = ((["--val", "none", "--out-val", str(tmp_path / "val.csv")], "leaves no validation rows"),
             (["--val", "first:2", "--out-val", str(tmp_path / "train.csv")], "would overwrite the input"),
             (["--out-val", str(tmp_path / "v.csv"), "--out-train", str(tmp_path / "train.csv")],
              "--out-train"),
             (["--val", "first:2", "--out-val", str(tmp_path / "same.csv"), "--out-train", str(tmp_path / "same.csv")],
              "are the same file"),
             # a file where --out-train needs a folder: found before --out-val is written
             (["--val", "first:2", "--out-val", str(tmp_path / "v.csv"), "--out-train",
               str(tmp_path / "train.csv" / "t.csv")],
              f"{tmp_path / 'train.csv'}: not a folder (a file is in the way)"))
    cases += ((["--val", "fraction:0.01", "--out-val", str(tmp_path / "v.csv")], "leaves no validation rows"),)
    for options, message in cases:
        assert data.main(["split", str(tmp_path / "train.csv"), *options]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert (tmp_path / "train.csv").read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train.csv"]
    with pytest.raises(SystemExit) as caught:
        data.main(["split", str(tmp_path / "train.csv"), "--split-seed", "-1", "--out-val", str(tmp_path / "v.csv")])
    assert caught.value.code == 2 and "a seed must be in [0, 2**32)" in capsys.readouterr().err


def test_data_command_os_errors_are_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    data.write_csv(random_images(10), tmp_path / "train.csv")
    (tmp_path / "folder.csv").mkdir()
    assert data.main(["split", str(tmp_path / "train.csv"), "--val", "first:2", "--out-val",
                      str(tmp_path / "folder.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'folder.csv'}: ") and err.count("\n") == 1  # not the temporary file

    def failing_describe(images):
        raise OSError(5, "Input/output error", str(tmp_path / "train.csv"))
    monkeypatch.setattr(data, "describe", failing_describe)
    assert data.main(["info", str(tmp_path / "train.csv")]) == 2  # `info` has no --out-val to fall back on
    assert capsys.readouterr().err == f"error: {tmp_path / 'train.csv'}: Input/output error\n"


def test_a_data_folder_resolves_to_its_csv_or_its_image_folder_of_that_kind(tmp_path, monkeypatch):
    monkeypatch.delenv("FER_DATA", raising=False)
    for kind in ("train", "test"):  # msambare/fer2013: train/angry/*.png, test/angry/*.png
        (tmp_path / "images" / kind / "happy").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "images" / kind / "happy" / "0.png"), np.full((48, 48), 9, np.uint8))
        assert data.resolve_data_path(tmp_path / "images", kind) == tmp_path / "images" / kind
    assert data.read(data.resolve_data_path(tmp_path / "images", "train")).labels.tolist() == [3]
    data.write_csv(random_images(3), tmp_path / "csvs" / "train.csv.gz")
    (tmp_path / "csvs" / "train").mkdir()  # a CSV wins over a folder of the same kind
    assert data.resolve_data_path(tmp_path / "csvs", "train") == tmp_path / "csvs" / "train.csv.gz"
    assert data.resolve_data_path(tmp_path / "csvs", "test") == tmp_path / "csvs"  # nothing of that kind
    monkeypatch.setenv("FER_DATA", str(tmp_path / "images"))
    assert data.resolve_data_path(None, "test") == tmp_path / "images" / "test"


def upright_photo(alpha=False):
    """A 64x96 BGR(A) image whose every mirror and rotation differs: smooth, so JPEG keeps it."""
    rows, columns = np.mgrid[0:64, 0:96]
    channels = [rows * 4, columns * 2, 255 - rows * 2] + ([128 + columns] if alpha else [])
    return np.stack(channels, axis=-1).astype(np.uint8)


# How a camera stores the pixels of an upright scene under each EXIF orientation: the inverse of
# what a viewer does to show it.
STORED_AS = {1: lambda image: image, 2: lambda image: image[:, ::-1], 3: lambda image: image[::-1, ::-1],
             4: lambda image: image[::-1], 5: lambda image: image.swapaxes(0, 1),
             6: lambda image: np.rot90(image, 1), 7: lambda image: image.swapaxes(0, 1)[::-1, ::-1],
             8: lambda image: np.rot90(image, -1)}


def save_with_orientation(path, bgr, orientation):
    from PIL import Image

    rgb = np.ascontiguousarray(bgr[..., [2, 1, 0, 3][:bgr.shape[2]]])
    photo = Image.fromarray(rgb)
    exif = photo.getexif()
    exif[0x0112] = orientation
    photo.save(path, exif=exif, **({"quality": 95} if str(path).endswith(".jpg") else {}))
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("alpha", [False, True])
def test_exif_orientation_is_applied_as_viewers_do(tmp_path, orientation, alpha):
    # A phone stores a portrait photo sideways with orientation 6; IMREAD_UNCHANGED ignored it.
    from PIL import Image, ImageOps

    upright = upright_photo(alpha)
    path = save_with_orientation(tmp_path / "photo.png", np.ascontiguousarray(STORED_AS[orientation](upright)),
                                 orientation)
    with Image.open(path) as stored:  # Pillow's viewer-like reading agrees with the test's inverses
        np.testing.assert_array_equal(np.asarray(ImageOps.exif_transpose(stored))[..., 2::-1], upright[..., :3])
    decoded = data.decode_image(np.fromfile(str(path), np.uint8))
    assert decoded.shape == upright.shape and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, upright)  # alpha kept, turned with the colours
    np.testing.assert_array_equal(data.load_image(path), data.to_face(upright))


def test_a_phone_jpeg_tagged_rotate_90_is_read_upright(tmp_path):
    upright = upright_photo()
    path = save_with_orientation(tmp_path / "phone_exif6.jpg", np.ascontiguousarray(np.rot90(upright, 1)), 6)
    decoded = data.decode_image(np.fromfile(str(path), np.uint8))
    assert decoded.shape == upright.shape
    assert np.abs(decoded.astype(int) - upright).mean() < 2  # up to JPEG's error
    assert data.exif_orientation(np.fromfile(str(path), np.uint8)) == 6
    # No EXIF data, or a broken one: as stored.
    ok, png = cv2.imencode(".png", upright)
    assert data.exif_orientation(png) == 1
    assert data.exif_orientation(np.frombuffer(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00broken", np.uint8)) == 1


def test_16_bit_and_float_images_keep_their_grey_levels(tmp_path):
    # They were min-max stretched: a 16-bit copy of a face came out brighter, a uniform one black.
    from keras_fer import faces

    face = np.random.default_rng(3).integers(40, 180, (60, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "face8.png"), face)
    cv2.imwrite(str(tmp_path / "face16.png"), face.astype(np.uint16) * 257)
    assert cv2.imread(str(tmp_path / "face16.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    np.testing.assert_array_equal(data.read(tmp_path / "face16.png").pixels, data.read(tmp_path / "face8.png").pixels)
    np.testing.assert_array_equal(faces.read_photo(tmp_path / "face16.png"), face)
    cv2.imwrite(str(tmp_path / "flat16.png"), np.full((48, 48), 30000, np.uint16))
    assert np.unique(data.read(tmp_path / "flat16.png").pixels).tolist() == [117]  # 30000 / 257, not 0
    assert np.unique(faces.read_photo(tmp_path / "flat16.png")).tolist() == [117]
    # Floats: 0-1 when at most 1, else 0-255; clipped, not stretched.
    np.testing.assert_array_equal(data.to_uint8(np.array([0.0, 0.2, 0.5, 1.0], np.float32)), [0, 51, 128, 255])
    np.testing.assert_array_equal(data.to_uint8(np.array([-3.0, 20.4, 100.0, 300.0])), [0, 20, 100, 255])
    np.testing.assert_array_equal(data.to_uint8(np.array([-5, 0, 32767], np.int16)), [0, 0, 255])
    uniform = np.full((48, 48), 0.25, np.float32)
    cv2.imwrite(str(tmp_path / "flat.tiff"), uniform)
    assert np.unique(data.read(tmp_path / "flat.tiff").pixels).tolist() == [64]
    eight = np.arange(256, dtype=np.uint8).reshape(16, 16)  # 8-bit images are untouched
    assert data.to_uint8(eight) is eight
    uniform[3, 4] = np.nan
    cv2.imwrite(str(tmp_path / "nan.tiff"), uniform)
    with pytest.raises(FerDataError, match="nan.tiff: NaN or infinite pixel values"):
        data.read(tmp_path / "nan.tiff")


@pytest.mark.parametrize("header, row, words", [
    ("label,emotion,feature", f"3,4,{GOOD}", "columns 1 ('label') and 2 ('emotion') both name the labels"),
    ("feature,pixels", f"{GOOD},{GOOD}", "columns 1 ('feature') and 2 ('pixels') both name the pixels"),
    ("label,LABEL,feature", f"3,4,{GOOD}", "columns 1 ('label') and 2 ('LABEL') both name the labels"),
    ("id,feature,Id", f"7,{GOOD},8", "columns 1 ('id') and 3 ('Id') both name the ids"),
    ("emotion,pixels,Usage,usage", f"3,{GOOD},Training,PublicTest", "columns 3 ('Usage') and 4 ('usage') both"),
])
def test_a_header_naming_one_column_twice_is_refused_naming_both(tmp_path, header, row, words):
    # The first match was taken silently: label,emotion,feature read its labels from `label`.
    path = write_rows(tmp_path / "two.csv", header, [row])
    with pytest.raises(FerDataError) as caught:
        data.read(path)
    assert str(caught.value).startswith(f"{path}, line 1: {words}") and caught.value.row == 1
    assert "\n" not in str(caught.value)


def test_split_command_writes_both_parts_or_neither(tmp_path, capsys, monkeypatch):
    # An --out-train that was a folder failed only after --out-val was written, leaving it behind.
    data.write_csv(random_images(20), tmp_path / "train.csv")
    (tmp_path / "o").mkdir()
    argv = ["split", str(tmp_path / "train.csv"), "--val", "first:5", "--out-val", str(tmp_path / "o" / "v.csv")]
    assert data.main([*argv, "--out-train", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'o'}: ") and "Is a directory" in err and err.count("\n") == 1
    assert sorted(path.name for path in (tmp_path / "o").iterdir()) == []  # no v.csv, no temporary file
    assert data.main([*argv, "--out-train", "/dev/null"]) == 2
    assert "/dev/null: not a regular file" in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "o").iterdir()) == []
    written = []

    def failing_rows(images, out):  # the disk fills up while the training rows are written
        if written:
            raise OSError(28, "No space left on device")
        written.append(len(images))
        out.write("label,feature\n")
    monkeypatch.setattr(data, "_write_csv_rows", failing_rows)
    assert data.main([*argv, "--out-train", str(tmp_path / "o" / "t.csv")]) == 2
    assert "No space left on device" in capsys.readouterr().err and written == [15]
    assert sorted(path.name for path in (tmp_path / "o").iterdir()) == []
    monkeypatch.undo()
    assert data.main([*argv, "--out-train", str(tmp_path / "o" / "t.csv")]) == 0
    assert len(data.read(tmp_path / "o" / "v.csv")) == 15 and len(data.read(tmp_path / "o" / "t.csv")) == 5


def test_a_no_break_space_between_pixels_is_named_on_its_own_line(tmp_path):
    # It was "line 2, field 'feature': unreadable pixel values": str.split() took it for a
    # separator, np.fromstring did not, and the error fell back to the chunk's first line.
    pixels = ["7"] * 2304
    pixels[10] = "\u00a0" + pixels[10]
    rows = [f"0,{GOOD}", f"1,{GOOD}", "2," + " ".join(pixels), f"3,{GOOD}"]
    path = write_rows(tmp_path / "nbsp.csv", "label,feature", rows)
    with pytest.raises(FerDataError) as caught:
        data.read(path)
    assert str(caught.value) == (f"{path}, line 4, field 'feature': U+00A0 (no-break space) after pixel 10: "
                                 "only plain spaces (or tabs) separate pixels")
    rows[2] = "2," + "\u2003" + GOOD
    write_rows(path, "label,feature", rows)
    with pytest.raises(FerDataError, match=r"line 4, field 'feature': U\+2003 \(em space\) before pixel 1"):
        data.read(path)
    # The slow path reads as the fast one: a sign is allowed ("+5" loads), "--5" is named, not a crash.
    rows[2] = "2," + " ".join(["+5"] + ["1"] * 2303)
    write_rows(path, "label,feature", rows)
    assert data.read(path).pixels[2].reshape(-1)[:2].tolist() == [5, 1]
    rows[3] = "3," + " ".join(["1"] * 2303 + ["--5"])
    write_rows(path, "label,feature", rows)
    with pytest.raises(FerDataError, match=r"line 5, field 'feature': pixel 2304 is not an integer: '--5'"):
        data.read(path)


def test_an_unclosed_quote_is_named_on_the_line_where_it_opens(tmp_path):
    # It was "line 81, field 'feature': expected 2304 pixels, found 179712": the reader ran on to the end.
    rows = [f"{i % 7},{GOOD}" for i in range(80)]
    rows[2] = f'1,"{GOOD}'  # line 4
    path = write_rows(tmp_path / "quote.csv", "label,feature", rows)
    with pytest.raises(FerDataError) as caught:
        data.read(path, chunk_rows=16)
    assert str(caught.value) == (f"{path}, line 4, field 'feature': a quote opened on this line is never closed: "
                                 "lines 4-81 (the end) were read as one row")
    rows[4] = f'2,{GOOD}"'  # closed on line 6 after all
    write_rows(path, "label,feature", rows)
    with pytest.raises(FerDataError, match=r"line 4, field 'feature': a quote opened on this line is closed only "
                                           r"on line 6: lines 4-6 were read as one row"):
        data.read(path)
    rows[2], rows[4] = f'"1,{GOOD}', f"2,{GOOD}"  # in the label: the field count is off too
    write_rows(path, "label,feature", rows)
    with pytest.raises(FerDataError, match=r"line 4, field 'label': a quote opened on this line is never closed"):
        data.read(path)
    rows[1] = f"9,{GOOD}"  # an earlier bad row is still the first error
    write_rows(path, "label,feature", rows)
    with pytest.raises(FerDataError, match=r"line 3, field 'label': unknown label '9'"):
        data.read(path)
    # An id may hold a line break (a file name can), and rows after it keep their line numbers.
    images = random_images(3, labelled=False)
    images.ids = np.array(["a\nb", "c", "d"], dtype=object)
    data.write_csv(images, tmp_path / "ids.csv")
    assert list(data.read(tmp_path / "ids.csv").ids) == ["a\nb", "c", "d"]


def test_videos_gifs_and_zip_archives_are_named_not_called_csv_files(tmp_path, capsys):
    # All were "not a CSV file ... images and videos are recognized by their extension (.png, .jpg,
    # .mp4, ...)", even for clip.mp4, which has the extension.
    from PIL import Image

    mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256))
    (tmp_path / "clip.mp4").write_bytes(mp4)
    assert data.main(["info", str(tmp_path / "clip.mp4")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path / 'clip.mp4'}: a video (.mp4), not a FER CSV, image folder or image: "
                   "only predict.py reads videos\n")
    (tmp_path / "clip.csv").write_bytes(mp4)
    with pytest.raises(FerDataError, match=r"clip\.csv: a video \(MP4, QuickTime, Matroska, WebM or AVI\), not a "
                                           r"CSV: only predict\.py reads videos, by their extension \(\.mp4"):
        data.read(tmp_path / "clip.csv")
    frames = [Image.fromarray(np.full((20, 20), level, np.uint8)) for level in (0, 128, 255)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(FerDataError, match=r"anim\.gif: a GIF image, which keras-fer does not read: convert it"):
        data.read(tmp_path / "anim.gif")
    import zipfile

    with zipfile.ZipFile(tmp_path / "train.csv", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.csv", f"label,feature\n0,{GOOD}\n")
    with pytest.raises(FerDataError, match=r"train\.csv: a zip archive, not a CSV: unzip it first"):
        data.read(tmp_path / "train.csv")
    # Text that merely starts like a signature is still read as a CSV.
    path = write_rows(tmp_path / "pk.csv", "PK,label,feature", [f"1,3,{GOOD}"])
    assert data.read(path).labels.tolist() == [3]
    # A spreadsheet is a zip too: unzipping is the wrong advice.
    (tmp_path / "fer.xlsx").write_bytes((tmp_path / "train.csv").read_bytes())
    with pytest.raises(FerDataError, match=r"fer\.xlsx: a spreadsheet \(\.xlsx\), not a CSV: save it as CSV"):
        data.read(tmp_path / "fer.xlsx")
    # Kaggle's own download, fer2013.tar.gz: its header merged with the tar's, and after every row had
    # been parsed came an error 865 NUL bytes long.
    import io
    import tarfile

    body = f"emotion,pixels,Usage\n0,{GOOD},Training\n".encode()
    for name, mode in (("fer2013.tar.gz", "w:gz"), ("fer2013.tar", "w")):
        with tarfile.open(tmp_path / name, mode) as archive:
            member = tarfile.TarInfo("fer2013/fer2013.csv")
            member.size = len(body)
            archive.addfile(member, io.BytesIO(body))
        with pytest.raises(FerDataError) as raised:
            data.read(tmp_path / name)
        assert str(raised.value) == (f"{tmp_path / name}: a tar archive, not a CSV: extract it first (tar xzf / "
                                     "tar xf; Kaggle's fer2013.tar.gz holds fer2013/fer2013.csv)")
    # Semicolons (Excel in many locales) or tabs: "missing pixel column ... found emotion;pixels" named the
    # column it says is missing.
    for mark in (";", "\t"):
        path = tmp_path / "excel.csv"
        path.write_text(f"emotion{mark}pixels{mark}Usage\n0{mark}{GOOD}{mark}Training\n")
        with pytest.raises(FerDataError, match=re.escape(f"excel.csv, line 1: its fields are separated by {mark!r}, "
                                                         "not commas: save it as a comma-separated CSV")):
            data.read(path)
    for separator in (",", ", "):  # said "expected 2304 pixels, found 1" and "pixel 1 is not an integer: '7,'"
        path.write_text('emotion,pixels\n0,"' + separator.join(["7"] * 2304) + '"\n')
        with pytest.raises(FerDataError, match=r"line 2, field 'pixels': its 2304 pixels are separated by commas: "
                                               r"separate them by spaces"):
            data.read(path)
    path.write_bytes(b"emotion,\x00pix\n0,1\n")  # control characters in a header are shown escaped
    with pytest.raises(FerDataError, match=r"found emotion, \\x00pix$"):
        data.read(path)


def test_existing_data_path_resolves_a_folder_and_names_fer_data_when_it_names_nothing(tmp_path, monkeypatch):
    (tmp_path / "train.csv.gz").write_bytes(gzip.compress(b"label,feature\n"))
    monkeypatch.delenv("FER_DATA", raising=False)
    assert data.existing_data_path(None) is None  # no data: the demo faces
    assert data.existing_data_path(str(tmp_path)) == tmp_path / "train.csv.gz"
    with pytest.raises(FerDataError) as given:
        data.existing_data_path(str(tmp_path / "nowhere"))
    assert str(given.value) == f"{tmp_path / 'nowhere'}: no such file or folder"
    monkeypatch.setenv("FER_DATA", "../nowhere")
    with pytest.raises(FerDataError, match=r"^\.\./nowhere: no such file or folder \(from FER_DATA: an absolute"):
        data.existing_data_path(None, "test")
    assert data.existing_data_path(str(tmp_path)) == tmp_path / "train.csv.gz"  # --data wins over FER_DATA
    monkeypatch.setenv("FER_DATA", str(tmp_path / "nowhere"))  # absolute: no advice to make it so
    with pytest.raises(FerDataError) as given:
        data.existing_data_path(None)
    assert str(given.value) == f"{tmp_path / 'nowhere'}: no such file or folder (from FER_DATA)"
    # A FER2013 folder without the part asked for was read as an image folder: "no images ...".
    with pytest.raises(FerDataError) as given:
        data.existing_data_path(str(tmp_path), "test")
    assert str(given.value) == f"{tmp_path}: no test.csv[.gz] or test/ in this folder: it holds train.csv.gz"
    (tmp_path / "msambare" / "test" / "angry").mkdir(parents=True)
    with pytest.raises(FerDataError, match=re.escape("no train.csv[.gz] or train/ in this folder: it holds test/")):
        data.existing_data_path(str(tmp_path / "msambare"))
    assert data.existing_data_path(str(tmp_path / "msambare"), "test") == tmp_path / "msambare" / "test"


def test_info_and_split_take_a_fer2013_folder(tmp_path, capsys):
    # train.py and predict.py take the folder; `data info` and `data split` said "no images".
    data.write_csv(random_images(14, seed=1), tmp_path / "train.csv")
    data.write_csv(random_images(5, seed=2, labelled=False), tmp_path / "test.csv")
    assert data.main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'train.csv'}: 14 images" in out and f"{tmp_path / 'test.csv'}: 5 images" in out
    assert data.main(["split", str(tmp_path), "--val", "first:4", "--out-val", str(tmp_path / "v.csv")]) == 0
    _, expected = data.split(data.read(tmp_path / "train.csv"), "first:4")
    np.testing.assert_array_equal(data.read(tmp_path / "v.csv").pixels, expected.pixels)
    (tmp_path / "train.csv").unlink()
    assert data.main(["split", str(tmp_path), "--out-val", str(tmp_path / "w.csv")]) == 2
    assert "no train.csv[.gz] or train/ in this folder: it holds test.csv" in capsys.readouterr().err
    data.write_csv(random_images(1, seed=3), tmp_path / "one.csv")
    assert data.main(["info", str(tmp_path / "one.csv")]) == 0
    assert "one.csv: 1 image of 48x48" in capsys.readouterr().out  # "1 images"
