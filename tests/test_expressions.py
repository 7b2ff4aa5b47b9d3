"""keras_fer.recognize: an image (path or array) to its faces' expressions."""

import cv2
import numpy as np
import pytest

import keras_fer
from keras_fer import inference
from keras_fer.classes import CLASS_NAMES
from keras_fer.errors import FerDataError, FerOptionError
from keras_fer.synthetic import generate

from conftest import PRIOR, save_run, tiny_model

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [save_run(root / f"run{seed}", tiny_model(seed), PRIOR) for seed in (5, 6)]


@pytest.fixture(scope="module")
def face():
    return generate(7, seed=1).images.pixels[3]  # (48, 48, 1) uint8


def test_a_crop_path_or_array_is_one_face_classified_as_predict_proba_does(tmp_path, runs, face):
    cv2.imwrite(str(tmp_path / "face.png"), face[:, :, 0])
    expected = inference.predict_proba([inference.load_predictor(runs[0], backend="keras")], face[None])[0]
    for image in (tmp_path / "face.png", str(tmp_path / "face.png"), face[:, :, 0], face,
                  cv2.cvtColor(face[:, :, 0], cv2.COLOR_GRAY2BGR)):
        (found,) = keras_fer.recognize(image, model=runs[0], backend="keras")
        assert found.box == (0, 0, 48, 48)
        np.testing.assert_allclose(found.probabilities, expected, atol=1e-6)
        assert found.label == int(expected.argmax()) and found.name == CLASS_NAMES[found.label]
        assert found.confidence == pytest.approx(float(expected.max()))
        assert list(found.emotions()) == list(CLASS_NAMES) and sum(found.emotions().values()) == pytest.approx(1.0)


def test_an_ensemble_averages_and_tta_and_detect_are_honoured(runs, face):
    big = cv2.resize(face[:, :, 0], (100, 80))  # not a crop: detection would run, unless detect=False
    members = [inference.load_predictor(run, backend="keras") for run in runs]
    crop = cv2.resize(big, (48, 48), interpolation=cv2.INTER_AREA)[:, :, None]
    (found,) = keras_fer.recognize(big, model=runs, detect=False, tta="flip", backend="keras")
    assert found.box == (0, 0, 100, 80)
    np.testing.assert_allclose(found.probabilities, inference.predict_proba(members, crop[None], "flip")[0],
                               atol=1e-6)
    assert keras_fer.recognize(np.full((200, 200), 90, np.uint8), model=members) == []  # a wall: no face


def test_bad_images_and_options_are_package_errors_naming_what_was_received(tmp_path, runs):
    for image, words in ((np.zeros((48, 48), np.float32), "image.dtype=float32"),
                         (np.zeros((48, 48, 2), np.uint8), "image.shape=(48, 48, 2)"),
                         (np.zeros((0, 48), np.uint8), "image is empty")):
        with pytest.raises(FerOptionError, match=words.replace("(", r"\(").replace(")", r"\)")):
            keras_fer.recognize(image, model=runs[0])
    with pytest.raises(FerOptionError, match="Received: tta='twirl'"):
        keras_fer.recognize(np.zeros((48, 48), np.uint8), model=runs[0], tta="twirl")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(FerDataError, match="unreadable image"):
        keras_fer.recognize(tmp_path / "broken.png", model=runs[0])
    with pytest.raises(FerDataError, match="nope.png: no such file"):
        keras_fer.recognize(tmp_path / "nope.png", model=runs[0])
    for detect in ("no", "", None, 2):  # "no" is true: faces were looked for
        with pytest.raises(FerOptionError, match=f"detect must be True or False. Received: detect={detect!r}"):
            keras_fer.recognize(np.zeros((48, 48), np.uint8), model=runs[0], detect=detect)
    with pytest.raises(FerOptionError, match="Received: detector='yolo'"):
        keras_fer.recognize(np.zeros((48, 48), np.uint8), model=runs[0], detector="yolo")
    for min_face in (float("nan"), None, 0, -5, "30"):  # the CLI refuses < 1; nan and None were tracebacks
        with pytest.raises(FerOptionError, match=r"min_face \(pixels\) must be a finite number >= 1\. Received: "):
            keras_fer.recognize(np.zeros((48, 48), np.uint8), model=runs[0], min_face=min_face)
    with pytest.raises(FerOptionError, match="Received: model=''"):  # it was the current folder
        keras_fer.recognize(np.zeros((48, 48), np.uint8), model="")
    # A model of the wrong type was a TypeError from pathlib.
    for model in (5, [runs[0], 5.0]):
        with pytest.raises(FerOptionError, match=r"model must be None .* Received: model=5"):
            keras_fer.recognize(np.zeros((48, 48), np.uint8), model=model)


def test_any_path_like_names_an_image(tmp_path, runs, face):
    from pathlib import PurePosixPath

    cv2.imwrite(str(tmp_path / "face.png"), face[:, :, 0])
    (found,) = keras_fer.recognize(PurePosixPath(tmp_path / "face.png"), model=runs[0])  # was refused
    assert found.box == (0, 0, 48, 48)


def test_a_keras_model_in_memory_is_a_model_too(runs, face, monkeypatch):
    import keras

    real = inference.keras_predictor

    loaded = keras.saving.load_model(runs[0] / "best.keras")
    (found,) = keras_fer.recognize(face, model=loaded)
    expected = inference.predict_proba([inference.load_predictor(runs[0], backend="keras")], face[None])[0]
    np.testing.assert_allclose(found.probabilities, expected, atol=1e-6)
    made = []
    monkeypatch.setattr(inference, "keras_predictor", lambda model: made.append(model) or real(model))
    other = keras.saving.load_model(runs[1] / "best.keras")
    for _ in range(3):
        keras_fer.recognize(face, model=other)
    assert made == [other]  # its serving wrapper is made once, not on every call


def test_the_mtcnn_detector_finds_a_tilted_face(runs):
    from matplotlib import cbook

    portrait = cv2.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    matrix = cv2.getRotationMatrix2D((256, 300), 30, 1.0)
    tilted = cv2.warpAffine(portrait, matrix, (512, 600), borderMode=cv2.BORDER_REPLICATE)
    assert keras_fer.recognize(tilted, model=runs[0]) == []
    (found,) = keras_fer.recognize(tilted, model=runs[0], detector="mtcnn")
    assert 150 < found.box[2] < 300 and found.box[2] == found.box[3]


def test_the_packaged_model_is_the_default(face):
    from keras_fer import loading

    if not (loading.WEIGHTS_DIR / "best.keras").is_file():
        pytest.skip("this install has no packaged model")
    (found,) = keras_fer.recognize(face, backend="keras")
    packaged = inference.load_predictor(loading.default_model_path(), backend="keras")
    np.testing.assert_allclose(found.probabilities, inference.predict_proba([packaged], face[None])[0], atol=1e-6)


def test_an_rgb_array_is_read_as_rgb_when_told(runs):
    from matplotlib import cbook
    from PIL import Image

    photo = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    rgb = np.asarray(photo)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    (expected,) = keras_fer.recognize(bgr, model=runs[0])
    for image in (rgb, np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])):  # RGB and RGBA
        (found,) = keras_fer.recognize(image, model=runs[0], channels="rgb")
        assert found.box == expected.box
        np.testing.assert_allclose(found.probabilities, expected.probabilities, atol=1e-6)
    # Taken as BGR (the default), the same array is another picture to the model.
    (as_bgr,) = keras_fer.recognize(rgb, model=runs[0])
    assert not np.allclose(as_bgr.probabilities, expected.probabilities, atol=1e-6)
    # A PIL Image carries its own order: channels= does not flip it again.
    (from_pil,) = keras_fer.recognize(photo, model=runs[0], channels="rgb")
    np.testing.assert_allclose(from_pil.probabilities, expected.probabilities, atol=1e-6)
    # A grey array has no channels to reorder.
    grey = np.asarray(photo.convert("L"))
    np.testing.assert_allclose(keras_fer.recognize(grey, model=runs[0], channels="rgb")[0].probabilities,
                               keras_fer.recognize(grey, model=runs[0])[0].probabilities, atol=1e-6)
    with pytest.raises(FerOptionError, match="channels must be 'bgr' or 'rgb'. Received: channels='RGB'"):
        keras_fer.recognize(rgb, model=runs[0], channels="RGB")


def test_a_pil_image_is_read_by_its_mode_not_taken_as_bgr(runs, face):
    from matplotlib import cbook
    from PIL import Image

    photo = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    for mode in ("RGB", "RGBA", "P", "CMYK", "L"):
        image = photo.convert(mode)
        bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)  # as cv2.imread gives it
        expected = keras_fer.recognize(bgr, model=runs[0])
        found = keras_fer.recognize(image, model=runs[0])  # RGB was taken as BGR, P's palette indices as grey
        assert len(expected) == 1 and [f.box for f in found] == [f.box for f in expected], mode
        np.testing.assert_allclose(found[0].probabilities, expected[0].probabilities, atol=1e-6)
    sixteen = Image.fromarray(face[:, :, 0].astype(np.uint16) * 257)  # a 16-bit crop: scaled as its file is
    (found,) = keras_fer.recognize(sixteen, model=runs[0])
    np.testing.assert_allclose(found.probabilities, keras_fer.recognize(face, model=runs[0])[0].probabilities)


def test_what_is_not_one_image_or_a_known_backend_is_named(tmp_path, runs, face):
    for image, words in ((None, "Received: image=None"),
                         ([face, face], "call recognize once per image. Received: image=<list of 2 items>"),
                         ((str(tmp_path / "a.png"),), "Received: image=<tuple of 1 item>"),
                         (b"\x89PNG", "Received: image of type bytes")):  # were image.shape=(), (2, 48, 48, 1) ...
        with pytest.raises(FerOptionError, match=words.replace("(", r"\(").replace(")", r"\)") + "$"):
            keras_fer.recognize(image, model=runs[0])
    with pytest.raises(FerDataError, match="a folder, not an image file$"):  # was 'unreadable image (corrupt ...)'
        keras_fer.recognize(tmp_path, model=runs[0])
    predictor = inference.load_predictor(runs[0], backend="keras")
    for model in (predictor, runs[0]):  # an in-memory model ignored the typo; a path said --backend, Received: 'lite'
        with pytest.raises(FerOptionError, match=r"^backend must be one of auto, litert, keras\. "
                                                 r"Received: backend='lite'$"):
            keras_fer.recognize(face, model=model, backend="lite")


def test_a_model_file_saved_again_is_loaded_again(tmp_path, runs, face):
    import os
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    first = keras_fer.recognize(face, model=run)[0].probabilities
    np.testing.assert_allclose(keras_fer.recognize(face, model=run)[0].probabilities, first)  # kept
    shutil.copyfile(runs[1] / "best.keras", run / "best.keras")  # training wrote a better epoch
    os.utime(run / "best.keras", ns=(os.stat(run / "best.keras").st_mtime_ns + 10**9,) * 2)
    expected = keras_fer.recognize(face, model=runs[1])[0].probabilities
    assert not np.allclose(expected, first)
    # The first model was kept by its path, and answered for the new one.
    np.testing.assert_allclose(keras_fer.recognize(face, model=run)[0].probabilities, expected, atol=1e-6)


def test_a_video_path_is_pointed_to_predict_video(tmp_path, runs, face):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (48, 48))
    for _ in range(3):
        writer.write(cv2.cvtColor(face[:, :, 0], cv2.COLOR_GRAY2BGR))
    writer.release()
    with pytest.raises(FerDataError, match=r"clip\.avi: a video, not an image: keras_fer\.video\.predict_video"):
        keras_fer.recognize(path, model=runs[0])  # was 'unreadable image (corrupt or not an image)'
    with pytest.raises(FerDataError, match=r"nope\.mp4: no such file$"):
        keras_fer.recognize(tmp_path / "nope.mp4", model=runs[0])


def test_recognizes_example_leaves_the_user_cache_alone(tmp_path, monkeypatch):
    # The docstring's example runs as a doctest: with backend "auto" it made a LiteRT copy of the
    # packaged model in the user's ~/.cache/keras-fer on every fresh machine that ran the tests.
    import doctest

    from keras_fer import expressions

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    expressions._load.cache_clear()  # a model kept from an earlier test would hide it
    finder = doctest.DocTestFinder()
    [test] = finder.find(expressions.recognize, "recognize", globs=vars(expressions).copy())
    assert doctest.DocTestRunner().run(test).failed == 0
    assert not (tmp_path / "cache" / "keras-fer").exists()


def test_a_16_bit_pil_image_of_mode_i_is_scaled_as_its_file_is(tmp_path, runs, face):
    # Pillow opens a 16-bit PGM (and, before 10.3, a 16-bit PNG) as mode I, int32: its levels were
    # divided as 32-bit ones, a black face, where the same file read from disk is 16-bit.
    from PIL import Image

    path = tmp_path / "face16.pgm"
    cv2.imwrite(str(path), face[:, :, 0].astype(np.uint16) * 257)
    image = Image.open(path)
    assert image.mode == "I"
    (found,) = keras_fer.recognize(image, model=runs[0])
    np.testing.assert_allclose(found.probabilities, keras_fer.recognize(path, model=runs[0])[0].probabilities,
                               atol=1e-6)
