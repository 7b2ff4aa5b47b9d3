import json
import os

# Quiet TensorFlow and keep tf.data from auto-tuning threads in many short fits.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

# Helpers shared by test modules (`from conftest import ...`); they import Keras lazily, so the
# settings above come first.

#: A training class prior, as `config.json` holds it.
PRIOR = [0.14, 0.015, 0.145, 0.25, 0.17, 0.11, 0.17]


def tiny_model(seed=0, softmax=False, input_shape=(48, 48, 1), preprocessing=True):
    """Input -> [Preprocessing(unit)] -> Conv2D(4) -> GAP -> Dense(7, "logits") [-> Softmax]."""
    import keras

    from keras_fer.classes import NUM_CLASSES
    from keras_fer.models.layers import Preprocessing

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=input_shape, name="image")
    x = Preprocessing(normalize="unit", name="preprocessing")(inputs) if preprocessing else inputs
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(NUM_CLASSES, name="logits",
                                 kernel_initializer=keras.initializers.RandomNormal(stddev=3.0, seed=seed))(x)
    if softmax:
        outputs = keras.layers.Softmax(name="probabilities")(outputs)
    return keras.Model(inputs, outputs)


def save_run(folder, model, prior=None):
    """`folder` as a minimal run directory: `best.keras` and a `config.json` (with `prior`)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "best.keras")
    config = {"arch": "tiny", "normalize": "unit"}
    if prior is not None:
        config["class_prior"] = list(prior)
    (folder / "config.json").write_text(json.dumps(config))
    return folder
