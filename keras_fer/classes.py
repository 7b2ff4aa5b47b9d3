"""The FER2013 label set and image geometry: the one place they live."""

CLASS_NAMES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 48
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE

#: Lower-case aliases accepted for folder names (Kaggle's msambare layout uses these).
CLASS_ALIASES = {name.lower(): index for index, name in enumerate(CLASS_NAMES)}


def class_index(name_or_number):
    """Return the class index for a class name (any case) or number (int or digit string).

    Raises:
        ValueError: for anything that is not one of the 7 classes.
    """
    text = str(name_or_number).strip()
    if text.lower() in CLASS_ALIASES:
        return CLASS_ALIASES[text.lower()]
    # ASCII digits only: isdigit() also takes other scripts' digits ('\u0663', an Arabic-Indic 3)
    if text.isascii() and text.isdigit() and 0 <= int(text) < NUM_CLASSES:
        return int(text)
    raise ValueError(
        f"unknown class {text!r}: expected 0-{NUM_CLASSES - 1} or one of {', '.join(CLASS_NAMES)}"
    )
