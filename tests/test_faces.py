"""keras_fer.faces: OpenCV's Haar cascade finds a (demo) face pasted into a larger photo, and
nothing in a blank one; crops come out as FER input."""

import pickle

import cv2
import numpy as np
import pytest

from keras_fer import faces
from keras_fer.errors import FerDataError
from keras_fer.synthetic import generate


def photo_with_face(index=0, scale=4, size=(300, 400), at=(60, 110), colour=True):
    """A photo: one demo face enlarged `scale` times, pasted at `at` (row, column) on a grey
    background with a gradient. Returns `(image, true box (x, y, w, h))`."""
    face = generate(7, seed=0).images.pixels[index, :, :, 0]
    side = 48 * scale
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    rows, columns = size
    background = np.linspace(90, 160, columns)[None, :].repeat(rows, axis=0).astype(np.uint8)
    background[at[0]:at[0] + side, at[1]:at[1] + side] = big
    image = cv2.cvtColor(background, cv2.COLOR_GRAY2BGR) if colour else background
    return image, (at[1], at[0], side, side)


overlap = faces.iou


@pytest.mark.parametrize("index", range(7))
def test_cascade_finds_the_demo_face_of_every_class(index):
    image, truth = photo_with_face(index)
    boxes = faces.detect_faces(image)
    assert len(boxes) == 1, boxes
    assert overlap(boxes[0], truth) > 0.4


def test_two_faces_left_to_right_in_a_gray_photo():
    left, _ = photo_with_face(0, scale=3, size=(260, 520), at=(40, 30), colour=False)
    right, _ = photo_with_face(3, scale=3, size=(260, 520), at=(40, 300), colour=False)
    image = np.concatenate([left[:, :260], right[:, 260:]], axis=1)  # both faces on one background
    boxes = faces.detect_faces(image)
    assert len(boxes) == 2 and boxes[0][0] < boxes[1][0]


def test_blank_and_noise_images_have_no_face():
    assert faces.detect_faces(np.full((240, 320, 3), 128, np.uint8)) == []
    assert faces.detect_faces(np.zeros((100, 100), np.uint8)) == []


def test_crops_are_fer_faces():
    image, truth = photo_with_face(2)
    crops = faces.crop_faces(image, [truth])
    assert crops.shape == (1, 48, 48, 1) and crops.dtype == np.uint8
    original = generate(7, seed=0).images.pixels[2, :, :, 0].astype(int)
    assert np.abs(crops[0, :, :, 0].astype(int) - original).mean() < 3  # back to the demo face
    assert faces.crop_faces(image, []).shape == (0, 48, 48, 1)


def test_face_crop_rule():
    assert faces.is_face_crop(np.zeros((48, 48), np.uint8))
    assert faces.is_face_crop(np.zeros((48, 48, 3), np.uint8))
    assert not faces.is_face_crop(np.zeros((96, 96), np.uint8))


def test_read_photo_and_annotate(tmp_path):
    image, truth = photo_with_face(1)
    cv2.imwrite(str(tmp_path / "p.png"), image)
    loaded = faces.read_photo(tmp_path / "p.png")
    assert loaded.shape == image.shape
    drawn = faces.annotate(loaded, [truth], ["Happy 0.91"])
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    faces.write_image(tmp_path / "out" / "p.png", drawn)
    assert (tmp_path / "out" / "p.png").is_file()
    small = faces.annotate(np.zeros((48, 48), np.uint8), [(0, 0, 48, 48)], ["Sad 0.5"])
    assert small.shape == (192, 192, 3)  # enlarged so the caption is readable
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(FerDataError, match="bad.jpg: unreadable image"):
        faces.read_photo(tmp_path / "bad.jpg")
    floats = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    assert cv2.imwrite(str(tmp_path / "f.tiff"), floats)
    assert faces.read_photo(tmp_path / "f.tiff").dtype == np.uint8  # scaled to 0-255
    floats[3, 5] = np.nan
    cv2.imwrite(str(tmp_path / "nan.tiff"), floats)
    with pytest.raises(FerDataError, match="nan.tiff: NaN or infinite pixel values"):
        faces.read_photo(tmp_path / "nan.tiff")


def test_write_image_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out" / "p.jpg"
    faces.write_image(target, np.full((20, 30, 3), 200, np.uint8))
    assert cv2.imread(str(target)).shape == (20, 30, 3)  # a JPEG, from the suffix
    assert [p.name for p in target.parent.iterdir()] == ["p.jpg"]
    before = target.read_bytes()

    class HalfWritten:
        def tofile(self, name):
            with open(name, "wb") as stream:
                stream.write(b"half")
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(cv2, "imencode", lambda suffix, image: (True, HalfWritten()))
    with pytest.raises(OSError, match="No space left"):
        faces.write_image(target, np.zeros((20, 30, 3), np.uint8))
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["p.jpg"]


def test_an_annotated_copy_of_a_grey_only_format_is_grey(tmp_path):
    # A .pgm photo with --annotate failed the run: OpenCV cannot write colour boxes into PGM.
    drawn = np.zeros((20, 30, 3), np.uint8)
    drawn[5:10, 5:10] = (0, 255, 0)
    faces.write_image(tmp_path / "p.pgm", drawn)
    back = cv2.imread(str(tmp_path / "p.pgm"), cv2.IMREAD_UNCHANGED)
    assert back.shape == (20, 30) and back[7, 7] == cv2.cvtColor(drawn, cv2.COLOR_BGR2GRAY)[7, 7] > 0
    with pytest.raises(FerDataError, match=r"p\.xyz: cannot encode the annotated image as \.xyz \("):
        faces.write_image(tmp_path / "p.xyz", drawn)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pgm"]


def test_list_images_recurses_and_skips_hidden(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "a" / "@eaDir").mkdir()  # a NAS's thumbnails
    for name in ("a/1.png", "2.jpg", ".hidden/3.png", "notes.txt", "a/@eaDir/t.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert [str(p) for p in faces.list_images(tmp_path)] == ["2.jpg", "a/1.png"]
    # Linked sub-folders are walked (class folders linked from elsewhere were skipped without a word,
    # while training read them), and a link back up is not walked twice.
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    (elsewhere / "4.png").write_bytes(b"x")
    (tmp_path / "linked").symlink_to(elsewhere, target_is_directory=True)
    (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)
    assert [str(p) for p in faces.list_images(tmp_path)] == ["2.jpg", "a/1.png", "linked/4.png"]


# --------------------------------------------------------------------------------------------
# MTCNN (the mtcnn extra, installed with the test extra)


@pytest.fixture(scope="module")
def portrait():
    """matplotlib's sample photo of Grace Hopper (600x512 BGR): a real face, no data file of ours."""
    from matplotlib import cbook

    return faces.read_photo(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def rotate(image, angle):
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE), matrix


def centre(box):
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2])


def test_mtcnn_frames_an_upright_face_as_the_cascade_does(portrait):
    (mtcnn_box,) = faces.detect_faces(portrait, detector="mtcnn")
    (haar_box,) = faces.detect_faces(portrait)
    assert mtcnn_box[2] == mtcnn_box[3]  # square, as FER2013's crops
    assert overlap(mtcnn_box, haar_box) > 0.6
    assert faces.detect_faces(np.full((240, 320, 3), 128, np.uint8), detector="mtcnn") == []
    assert faces.detect_faces(portrait, detector="mtcnn", min_size=400) == []  # smaller than min_size


@pytest.mark.parametrize("angle", [20, 35])
def test_mtcnn_finds_a_tilted_face_the_cascade_misses(portrait, angle):
    (upright,) = faces.detect_faces(portrait, detector="mtcnn")
    tilted, matrix = rotate(portrait, angle)
    assert faces.detect_faces(tilted) == []  # why MTCNN is offered
    (box,) = faces.detect_faces(tilted, detector="mtcnn")
    expected = matrix @ np.append(centre(upright), 1.0)  # where the face's centre went
    assert np.linalg.norm(centre(box) - expected) < 0.15 * upright[2]
    assert 0.8 < box[2] / upright[2] < 1.35


def test_mtcnn_weights_are_the_pinned_files(tmp_path):
    from importlib import resources

    import joblib

    from keras_fer.errors import FerModelError

    shipped = faces.load_mtcnn_weights(resources.files("mtcnn.assets.weights") / "pnet.lz4")
    assert len(shipped) == 13 and all(array.dtype == np.float32 for array in shipped)
    joblib.dump([np.ones(3, np.float32)], tmp_path / "pnet.lz4", compress="lz4")  # arrays, but not the release's
    with pytest.raises(FerModelError, match="pnet.lz4: not mtcnn 1.0.0's pnet.lz4 \\(its SHA-256 differs\\)"):
        faces.load_mtcnn_weights(tmp_path / "pnet.lz4")
    with pytest.raises(FerModelError, match="other.lz4: not an mtcnn 1.0.0 weight file"):
        faces.load_mtcnn_weights(tmp_path / "other.lz4")


def test_mtcnn_detector_loads_its_weights_through_the_pinned_reader(monkeypatch):
    import joblib

    def no_pickle(*args, **kwargs):
        raise AssertionError("joblib.load was called")

    read = []
    real = faces.load_mtcnn_weights
    monkeypatch.setattr(joblib, "load", no_pickle)
    monkeypatch.setattr(faces, "load_mtcnn_weights", lambda path: read.append(path.name) or real(path))
    faces.mtcnn_detector.cache_clear()
    try:
        faces.mtcnn_detector()
    finally:
        faces.mtcnn_detector.cache_clear()
    assert read == ["pnet.lz4", "rnet.lz4", "onet.lz4"]


class Exploit:
    """Unpickling this would create `path`: what a hostile weight file could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _text(value):
    data = value.encode()
    return pickle.BINUNICODE + len(data).to_bytes(4, "little") + data


def _global(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


WRAPPER, NDARRAY, DTYPE = (_global("joblib.numpy_pickle", "NumpyArrayWrapper"), _global("numpy", "ndarray"),
                           _global("numpy", "dtype"))


def _dtype(code):
    return DTYPE + _text(code) + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3 + pickle.REDUCE


def _build_state(pairs):
    return pickle.EMPTY_DICT + pickle.MARK + b"".join(_text(key) + value for key, value in pairs) + pickle.SETITEMS


def _array_of_ones():
    """A float64 array of two ones, as joblib writes it (wrapper, then the raw bytes)."""
    state = _build_state([("subclass", NDARRAY), ("shape", pickle.BININT1 + b"\x02" + pickle.TUPLE1),
                          ("order", _text("C")), ("dtype", _dtype("<f8")), ("allow_mmap", pickle.NEWFALSE)])
    return WRAPPER + pickle.EMPTY_TUPLE + pickle.NEWOBJ + state + pickle.BUILD + np.ones(2).astype("<f8").tobytes()


def _payloads(marker):
    """Hand-made pickles that use only the allowed globals (a review found each got past an
    earlier version of the reader), and the plain ones."""
    int32 = lambda n: pickle.BININT + n.to_bytes(4, "little", signed=True)  # noqa: E731
    # 1. An object dtype whose flags a BUILD clears, so it no longer says it holds objects.
    cleared = (_dtype("O8") + pickle.MARK + pickle.BININT1 + b"\x03" + _text("|") + pickle.NONE * 3 + int32(-1)
               + int32(-1) + pickle.BININT1 + b"\x00" + pickle.TUPLE + pickle.BUILD)
    flags = (WRAPPER + pickle.MARK + NDARRAY + pickle.BININT1 + b"\x02" + pickle.TUPLE1 + _text("C") + cleared
             + pickle.TUPLE + pickle.REDUCE + _build_state([("subclass", NDARRAY)]) + pickle.BUILD
             + b"\x00" + b"\x41" * 16)
    # 2. A BUILD on the wrapper class itself, giving it a __setstate__ that swallows the checked state.
    setstate = (WRAPPER + pickle.NONE + pickle.EMPTY_DICT + _text("__setstate__") + DTYPE + pickle.SETITEM
                + pickle.TUPLE2 + pickle.BUILD + pickle.POP)
    # 3. numpy.ndarray called directly with an object dtype, filled by its own BUILD.
    direct = (NDARRAY + pickle.BININT1 + b"\x01" + pickle.TUPLE1 + _dtype("O8") + pickle.TUPLE2 + pickle.REDUCE
              + pickle.MARK + pickle.BININT1 + b"\x01" + pickle.BININT1 + b"\x01" + pickle.TUPLE1 + _dtype("O8")
              + pickle.NEWFALSE + pickle.EMPTY_LIST + _text("not a number") + pickle.APPEND + pickle.TUPLE
              + pickle.BUILD)
    # A second review: 4. a dtype registered by name (ml_dtypes', kind 'f', shared by the whole
    # process) given an object field by a BUILD; 5. a dtype made an array of itself (hashing it
    # overflows the C stack); 6. a dict as numpy.dtype's arguments, checked as one thing, called as another.
    shared = (_dtype("float8_e5m2") + pickle.MARK + pickle.BININT1 + b"\x03" + _text("<") + pickle.NONE
              + _text("a") + pickle.TUPLE1 + pickle.EMPTY_DICT + _text("a") + _dtype("O") + pickle.BININT1 + b"\x00"
              + pickle.TUPLE2 + pickle.SETITEM + pickle.BININT1 + b"\x01" + pickle.BININT1 + b"\x01"
              + pickle.BININT1 + b"\x3f" + pickle.TUPLE + pickle.BUILD + pickle.POP)
    itself = (DTYPE + _text("f8") + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3 + pickle.REDUCE
              + pickle.BINPUT + b"\x00" + pickle.MARK + pickle.BININT1 + b"\x03" + _text("<") + pickle.BINGET + b"\x00"
              + pickle.BININT1 + b"\x01" + pickle.TUPLE1 + pickle.TUPLE2 + pickle.NONE + pickle.NONE
              + pickle.BININT1 + b"\x08" + pickle.BININT1 + b"\x08" + pickle.BININT1 + b"\x00" + pickle.TUPLE
              + pickle.BUILD + pickle.POP + pickle.EMPTY_DICT + pickle.BINGET + b"\x00" + pickle.NONE
              + pickle.SETITEM + pickle.POP)
    arguments = (DTYPE + pickle.EMPTY_DICT + WRAPPER + pickle.NONE + pickle.SETITEM + pickle.NEWFALSE + _text("f8")
                 + pickle.SETITEM + pickle.REDUCE)
    raw = {name: pickle.PROTO + b"\x02" + pickle.EMPTY_LIST + body + pickle.APPEND + pickle.STOP
           for name, body in (("flags", flags), ("setstate", setstate + flags), ("direct", direct),
                              ("arguments", arguments))}
    plain = pickle.PROTO + b"\x02" + pickle.EMPTY_LIST + _array_of_ones() + pickle.APPEND + pickle.STOP
    for name, prefix in (("shared", shared), ("itself", itself)):  # each before a plain array
        raw[name] = pickle.PROTO + b"\x02" + prefix + plain[2:]
    raw["code"] = pickle.dumps([Exploit(marker)], protocol=4)
    raw["objects"] = pickle.dumps([np.array([Exploit(marker)], dtype=object)], protocol=4)
    raw["dict"] = pickle.dumps({"weights": np.ones(2)}, protocol=4)
    return raw


def test_the_weight_reader_makes_numeric_arrays_and_nothing_else(tmp_path):
    import joblib
    import lz4.frame
    import ml_dtypes  # comes with keras: it registers dtypes by name, which payload 4 goes for

    from keras_fer.errors import FerModelError

    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.float64), np.arange(3, dtype=np.int64)]
    joblib.dump(arrays, tmp_path / "good.lz4", compress="lz4")
    loaded = faces._read_arrays(tmp_path / "good.lz4")
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(loaded, arrays))
    marker = tmp_path / "ran"
    for name, raw in _payloads(marker).items():
        with lz4.frame.open(tmp_path / f"{name}.lz4", "wb") as stream:
            stream.write(raw)
        with pytest.raises(FerModelError, match=f"{name}.lz4: not an MTCNN weight file of plain arrays"):
            faces._read_arrays(tmp_path / f"{name}.lz4")
    (tmp_path / "corrupt.lz4").write_bytes(b"\x04\x22\x4d\x18 not really lz4")
    with pytest.raises(FerModelError, match="corrupt.lz4"):
        faces._read_arrays(tmp_path / "corrupt.lz4")
    assert not marker.exists()  # nothing pickled ran
    assert faces._read_arrays(tmp_path / "good.lz4")[0].dtype == np.float32  # joblib itself left as it was
    assert not np.dtype(ml_dtypes.float8_e5m2).hasobject and np.dtype(ml_dtypes.float8_e5m2).names is None
    with lz4.frame.open(tmp_path / "plain.lz4", "wb") as stream:  # the hand-made plain array is accepted
        stream.write(pickle.PROTO + b"\x02" + pickle.EMPTY_LIST + _array_of_ones() + pickle.APPEND + pickle.STOP)
    (ones,) = faces._read_arrays(tmp_path / "plain.lz4")
    assert ones.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("box, expected", [
    ((100, 100, 40, 50), (95, 100, 50, 50)),   # squared about the centre
    ((0, 10, 30, 40), (0, 10, 40, 40)),        # at the left edge: moved inside, not cut
    ((70, 10, 30, 40), (60, 10, 40, 40)),      # at the right edge
    ((-10, -10, 300, 300), (0, 20, 100, 100)),  # larger than the image: shrunk to it
])
def test_square_boxes_stay_square_and_inside(box, expected):
    image_width, image_height = (200, 200) if expected[2] == 50 else (100, 120)
    assert faces.square_box(*box, 1.0, image_width, image_height) == expected


def test_unknown_or_missing_detector_is_an_option_error(monkeypatch):
    from keras_fer.errors import FerOptionError

    with pytest.raises(FerOptionError, match="detector must be one of haar, mtcnn. Received: detector='yolo'"):
        faces.detect_faces(np.zeros((64, 64), np.uint8), detector="yolo")
    from importlib import metadata

    real = metadata.version

    def installed(versions):
        def version(name):
            if name not in versions:
                return real(name)
            if versions[name] is None:
                raise metadata.PackageNotFoundError(name)
            return versions[name]
        return version

    monkeypatch.setattr(metadata, "version", installed({"mtcnn": None}))
    with pytest.raises(FerOptionError, match=r'needs the mtcnn package: pip install "keras-fer\[mtcnn\]"'):
        faces.check_detector("mtcnn")
    faces.check_detector("haar")
    for versions in ({"mtcnn": "0.1.1"}, {"joblib": "1.5.3"}):  # the fer package's mtcnn; a joblib not checked
        monkeypatch.setattr(metadata, "version", installed(versions))
        with pytest.raises(FerOptionError, match=r"needs mtcnn 1.0.0 and joblib 1.6 \(found mtcnn"):
            faces.check_detector("mtcnn")


def test_mtcnn_batches_give_each_image_its_own_boxes(portrait, monkeypatch):
    frames = [cv2.resize(np.roll(portrait, 40 * i, axis=1), (320, 376)) for i in range(3)]  # the face moves
    images = frames[:2] + [portrait, np.full((100, 100, 3), 128, np.uint8), frames[2], portrait[:48, :48]]
    monkeypatch.setattr(faces, "MTCNN_BATCH_PIXELS", 2 * 320 * 376)  # the three frames: batches of 2 and 1
    calls = []
    real = faces._mtcnn_boxes
    monkeypatch.setattr(faces, "_mtcnn_boxes", lambda batch, size: calls.append(len(batch)) or real(batch, size))
    found = faces.face_boxes_each(images, detector="mtcnn")
    assert sorted(calls) == [1, 1, 1, 2]  # 2 + 1 frames, the portrait, the blank; the crop is not searched
    assert found[5] == [(0, 0, 48, 48)] and found[3] == []
    assert found == [faces.face_boxes(image, detector="mtcnn") for image in images]
    assert found[0][0][0] < found[1][0][0] < found[4][0][0]  # each frame's face where it moved


def test_face_boxes_take_crops_whole_and_detect_otherwise(portrait):
    crop = np.zeros((48, 48), np.uint8)
    assert faces.face_boxes(crop) == [(0, 0, 48, 48)]
    assert faces.face_boxes(portrait, detect=False) == [(0, 0, 512, 600)]
    assert faces.face_boxes(portrait, detector="mtcnn") == faces.detect_faces(portrait, detector="mtcnn")
