"""keras-fer: facial expression recognition on FER2013 with Keras 3."""

from keras_fer.classes import CLASS_NAMES, IMAGE_SHAPE, IMAGE_SIZE, NUM_CLASSES
from keras_fer.errors import FerDataError, FerError, FerModelError, FerOptionError

__version__ = "0.1.0"

__all__ = [
    "CLASS_NAMES", "IMAGE_SHAPE", "IMAGE_SIZE", "NUM_CLASSES",
    "FerDataError", "FerError", "FerModelError", "FerOptionError",
]
