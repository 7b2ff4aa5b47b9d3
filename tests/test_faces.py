"""keras_fer.faces: OpenCV's Haar cascade finds a (demo) face pasted into a larger photo, and
nothing in a blank one; crops come out as FER input."""

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


def overlap(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter = max(0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0, min(ay + ah, by + bh) - max(ay, by))
    return inter / float(aw * ah + bw * bh - inter)


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


def test_list_images_recurses_and_skips_hidden(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ("a/1.png", "2.jpg", ".hidden/3.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [str(p) for p in faces.list_images(tmp_path)] == ["2.jpg", "a/1.png"]
