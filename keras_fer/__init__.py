"""keras-fer: facial expression recognition on FER2013 with Keras 3.

`keras_fer.recognize(image)` finds the faces in an image and classifies their expressions with
the packaged model (`keras_fer.expressions`); the modules below hold the rest (docs/design.md).
"""

from keras_fer.classes import CLASS_NAMES, IMAGE_SHAPE, IMAGE_SIZE, NUM_CLASSES
from keras_fer.errors import FerDataError, FerError, FerModelError, FerOptionError

__version__ = "0.1.0"

__all__ = [
    "CLASS_NAMES", "IMAGE_SHAPE", "IMAGE_SIZE", "NUM_CLASSES",
    "FerDataError", "FerError", "FerModelError", "FerOptionError",
    "Face", "recognize",
]


def __getattr__(name):
    # Imported on first use, so `import keras_fer` stays instant (PEP 562).
    if name in ("Face", "recognize"):
        from keras_fer import expressions

        return getattr(expressions, name)
    raise AttributeError(f"module 'keras_fer' has no attribute {name!r}")
