import numpy as np

from keras_fer import synthetic
from keras_fer.classes import NUM_CLASSES


def test_deterministic_per_seed_and_balanced():
    first = synthetic.generate(70, seed=4)
    second = synthetic.generate(70, seed=4)
    other = synthetic.generate(70, seed=5)
    np.testing.assert_array_equal(first.images.pixels, second.images.pixels)
    np.testing.assert_array_equal(first.masks, second.masks)
    assert not np.array_equal(first.images.pixels, other.images.pixels)
    np.testing.assert_array_equal(np.bincount(first.images.labels, minlength=7), [10] * 7)
    assert first.images.pixels.dtype == np.uint8 and first.images.pixels.shape == (70, 48, 48, 1)
    assert list(first.images.ids[:2]) == ["00000", "00001"]


def test_masks_cover_every_pixel_that_differs_between_classes():
    rng = np.random.default_rng(0)
    for _trial in range(5):
        nuisance = synthetic._nuisance(rng)
        images, class_masks = [], []
        for label in range(NUM_CLASSES):
            expression = synthetic.EXPRESSIONS[synthetic.CLASS_NAMES[label]]
            image, mask = synthetic.render(expression, nuisance)
            images.append(image.astype(int))
            class_masks.append(mask)
        masks = np.logical_or.reduce(class_masks)
        for label in range(1, NUM_CLASSES):
            changed = images[label] != images[0]
            assert changed.any(), "classes must differ"
            assert not (changed & ~masks).any(), "a class changed pixels outside the masks"
        # The masks are regions, not the whole face.
        assert 0.1 < masks.mean() < 0.5


def test_masks_cover_what_drawn_expressions_change_too():
    # Drawn expressions vary around the classes': 22 of 300 pairs changed pixels outside the masks
    # (a deep frown above the mouth's box, the brows' anti-aliased edges), up to 32 grey levels.
    rng = np.random.default_rng(1)
    for _pair in range(300):
        nuisance = synthetic._nuisance(rng)
        first, first_mask = synthetic.render(synthetic._expression(int(rng.integers(NUM_CLASSES)), rng), nuisance)
        second, second_mask = synthetic.render(synthetic._expression(int(rng.integers(NUM_CLASSES)), rng), nuisance)
        assert not ((first != second) & ~(first_mask | second_mask)).any()


def test_class_signal_is_not_trivial():
    # Within a class the expression parameters vary, so neighbouring classes overlap a little.
    faces = synthetic.generate(140, seed=1)
    per_class = [faces.images.pixels[faces.images.labels == c].std(axis=0).mean() for c in range(7)]
    assert min(per_class) > 5
