"""Built-in demo faces: deterministic cartoon faces in the 7 expression classes.

They are the default data when no FER2013 is given, the data of the tests, and the ground truth
of the saliency tests: the class signal lives only in the eyes, the brows and the mouth, and
every face comes with a mask of those regions. Everything else (position, scale, face shape,
skin tone, lighting, noise) is nuisance drawn independently of the class.

Example:
>>> demo = generate(70, seed=0)
>>> demo.images.pixels.shape, demo.masks.shape
((70, 48, 48, 1), (70, 48, 48))
"""

import dataclasses

import numpy as np

from keras_fer.classes import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES
from keras_fer.data import Images

# Expression parameters per class:
#   brow_tilt  > 0 raises the inner ends (worry, sadness), < 0 lowers them (anger)
#   brow_lift  raises both brows (surprise, fear)
#   eye_open   eye height relative to neutral
#   mouth_curve > 0 smiles, < 0 frowns
#   mouth_open  how far the mouth opens
#   mouth_width relative to neutral
#   mouth_skew  one-sided lift (disgust)
EXPRESSIONS = {
    "Angry":    dict(brow_tilt=-1.0, brow_lift=-0.6, eye_open=0.65,
                     mouth_curve=-0.35, mouth_open=0.0, mouth_width=0.85, mouth_skew=0.0),
    "Disgust":  dict(brow_tilt=-0.5, brow_lift=-0.4, eye_open=0.45,
                     mouth_curve=-0.5, mouth_open=0.15, mouth_width=0.9, mouth_skew=0.8),
    "Fear":     dict(brow_tilt=0.8, brow_lift=0.6, eye_open=1.4,
                     mouth_curve=-0.2, mouth_open=0.45, mouth_width=1.15, mouth_skew=0.0),
    "Happy":    dict(brow_tilt=0.0, brow_lift=0.1, eye_open=0.8,
                     mouth_curve=1.0, mouth_open=0.35, mouth_width=1.2, mouth_skew=0.0),
    "Sad":      dict(brow_tilt=0.9, brow_lift=0.0, eye_open=0.75,
                     mouth_curve=-0.9, mouth_open=0.0, mouth_width=0.95, mouth_skew=0.0),
    "Surprise": dict(brow_tilt=0.1, brow_lift=1.0, eye_open=1.5,
                     mouth_curve=0.0, mouth_open=1.0, mouth_width=0.7, mouth_skew=0.0),
    "Neutral":  dict(brow_tilt=0.0, brow_lift=0.0, eye_open=1.0,
                     mouth_curve=0.0, mouth_open=0.0, mouth_width=1.0, mouth_skew=0.0),
}
PARAMETERS = tuple(EXPRESSIONS["Neutral"])
# How much each expression parameter varies within a class: enough that neighbouring classes
# overlap a little, so a model does not reach 100% at once.
EXPRESSION_SPREAD = dict(brow_tilt=0.35, brow_lift=0.3, eye_open=0.2,
                         mouth_curve=0.3, mouth_open=0.15, mouth_width=0.12, mouth_skew=0.25)


@dataclasses.dataclass
class DemoFaces:
    """Demo faces with the regions where their expression lives.

    Attributes:
        images: the faces as `Images` (labelled, ids `"00000"`, `"00001"`, ...).
        masks: bool `(N, 48, 48)`: True on the eyes, brows and mouth regions.
    """

    images: Images
    masks: np.ndarray


def _nuisance(rng):
    """Everything about a face that is not its expression."""
    return dict(
        center_x=IMAGE_SIZE / 2 + rng.uniform(-3, 3),
        center_y=IMAGE_SIZE / 2 + rng.uniform(-2, 3),
        scale=rng.uniform(0.85, 1.1),
        face_aspect=rng.uniform(0.78, 0.92),
        eye_spacing=rng.uniform(0.33, 0.42),
        skin=rng.uniform(120, 200),
        background=rng.uniform(20, 90),
        feature_darkness=rng.uniform(0.15, 0.4),
        light_gradient=rng.uniform(-40, 40, size=2),
        noise_seed=int(rng.integers(2**31)),
        noise_level=rng.uniform(3, 9),
    )


def _expression(label, rng):
    base = EXPRESSIONS[CLASS_NAMES[label]]
    return {name: base[name] + rng.normal(0, EXPRESSION_SPREAD[name]) for name in PARAMETERS}


def render(expression, nuisance):
    """Draw one face. Returns `(image uint8 (48, 48), mask bool (48, 48))`.

    The mask covers the feature boxes and every stroke drawn, so the same `nuisance` with a
    different `expression` changes pixels only inside the two faces' masks.
    """
    import cv2

    upscale = 4  # draw at 4x and shrink, for smooth anti-aliased strokes
    size = IMAGE_SIZE * upscale
    s = nuisance["scale"] * upscale
    cx, cy = nuisance["center_x"] * upscale, nuisance["center_y"] * upscale
    canvas = np.full((size, size), nuisance["background"], np.float32)
    face_w, face_h = 17 * s * nuisance["face_aspect"] / 0.85, 21 * s
    cv2.ellipse(canvas, (int(cx), int(cy)), (int(face_w), int(face_h)), 0, 0, 360, nuisance["skin"], -1, cv2.LINE_AA)
    ink = nuisance["skin"] * nuisance["feature_darkness"]
    mask = np.zeros((size, size), np.uint8)
    strokes = np.zeros((size, size), np.uint8)  # what was drawn: an extreme frown leaves the mouth's box
    e = expression

    eye_dx = nuisance["eye_spacing"] * face_w * 1.2
    eye_y = cy - 4 * s
    for side in (-1, 1):
        ex = cx + side * eye_dx
        eye_h = max(0.4, 2.0 * e["eye_open"]) * s
        cv2.ellipse(canvas, (int(ex), int(eye_y)), (int(3.2 * s), int(eye_h)), 0, 0, 360, ink, -1, cv2.LINE_AA)
        cv2.ellipse(strokes, (int(ex), int(eye_y)), (int(3.2 * s), int(eye_h)), 0, 0, 360, 1, -1)
        cv2.rectangle(mask, (int(ex - 5 * s), int(eye_y - 4.5 * s)), (int(ex + 5 * s), int(eye_y + 4.5 * s)), 1, -1)
        # Brow: a thick line whose inner end moves with brow_tilt, both ends with brow_lift.
        brow_y = eye_y - (5.5 + 1.6 * e["brow_lift"]) * s
        inner = (ex - side * 1.0 * s, brow_y - 1.6 * e["brow_tilt"] * s)
        outer = (ex + side * 4.5 * s, brow_y + 0.4 * e["brow_tilt"] * s)
        cv2.line(canvas, (int(inner[0]), int(inner[1])), (int(outer[0]), int(outer[1])), ink, int(1.6 * s), cv2.LINE_AA)
        cv2.line(strokes, (int(inner[0]), int(inner[1])), (int(outer[0]), int(outer[1])), 1, int(1.6 * s))
        cv2.rectangle(mask, (int(ex - 6 * s), int(eye_y - 11 * s)), (int(ex + 6.5 * s), int(eye_y - 2.5 * s)), 1, -1)

    mouth_y = cy + 9 * s
    half_width = 6.0 * s * e["mouth_width"]
    xs = np.linspace(-1, 1, 25)
    curve = e["mouth_curve"] * 2.6 * s * (1 - xs**2) + e["mouth_skew"] * 1.6 * s * xs
    upper = np.stack([cx + xs * half_width, mouth_y + curve - e["mouth_open"] * 0.5 * s * (1 - xs**2)], axis=1)
    lower = np.stack([cx + xs * half_width, mouth_y + curve + e["mouth_open"] * 4.5 * s * (1 - xs**2)], axis=1)
    outline = np.concatenate([upper, lower[::-1]]).astype(np.int32)
    cv2.fillPoly(canvas, [outline], ink * 0.6, cv2.LINE_AA)
    cv2.polylines(canvas, [upper.astype(np.int32)], False, ink, int(1.2 * s), cv2.LINE_AA)
    cv2.fillPoly(strokes, [outline], 1)
    cv2.polylines(strokes, [upper.astype(np.int32)], False, 1, int(1.2 * s))
    cv2.rectangle(mask, (int(cx - 10 * s), int(mouth_y - 5.5 * s)), (int(cx + 10 * s), int(mouth_y + 8 * s)), 1, -1)

    image = cv2.resize(canvas, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    # The boxes and every stroke, widened by the anti-aliasing, count for any 48x48 pixel they
    # touch: the expression changes no pixel outside the mask (nearest-neighbour shrinking and the
    # boxes alone missed frowns above the mouth's box and the brows' soft edges).
    strokes = cv2.dilate(strokes, np.ones((2 * upscale + 1, 2 * upscale + 1), np.uint8))
    mask = cv2.resize(np.maximum(mask, strokes).astype(np.float32), (IMAGE_SIZE, IMAGE_SIZE),
                      interpolation=cv2.INTER_AREA) > 0
    grid = np.linspace(-1, 1, IMAGE_SIZE)
    gx, gy = nuisance["light_gradient"]
    image = image + gx * grid[None, :] + gy * grid[:, None]
    noise = np.random.default_rng(nuisance["noise_seed"]).normal(0, nuisance["noise_level"], image.shape)
    # Noise outside the expression regions must not depend on the expression, so it is added
    # after drawing, with its own seed.
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8), mask


def generate(num_images=1400, seed=0, labels=None):
    """Generate demo faces, balanced over the 7 classes unless `labels` is given.

    Args:
        num_images: how many faces (ignored when `labels` is given).
        seed: the same seed gives the same faces.
        labels: optional int array of the class of each face.

    Returns:
        A `DemoFaces` with labelled `Images` (source `"demo faces"`) and masks.
    """
    rng = np.random.default_rng(seed)
    if labels is None:
        labels = rng.permutation(np.arange(num_images) % NUM_CLASSES)
    labels = np.asarray(labels, dtype=np.int64)
    # Separate streams: the nuisance of face i does not depend on any label.
    nuisance_rng, expression_rng = (np.random.default_rng(s) for s in rng.spawn(2))
    pixels = np.empty((len(labels), IMAGE_SIZE, IMAGE_SIZE, 1), np.uint8)
    masks = np.empty((len(labels), IMAGE_SIZE, IMAGE_SIZE), bool)
    for i, label in enumerate(labels):
        pixels[i, :, :, 0], masks[i] = render(_expression(int(label), expression_rng), _nuisance(nuisance_rng))
    ids = np.array([f"{i:05d}" for i in range(len(labels))], dtype=object)
    return DemoFaces(Images(pixels, labels, ids, None, "demo faces"), masks)
