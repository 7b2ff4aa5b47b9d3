"""Training presets: each report's recipe, and ours, as overrides of `TrainConfig`.

Explicit command-line options override a recipe's values.
"""

from keras_fer.errors import FerOptionError

RECIPES = {
    "report000": dict(
        description="Report 000: cnn4, first 25,000 rows train, rest validate, Adam 1e-4, 30 epochs",
        arch="cnn4", val="first:25000", optimizer="adam", lr=1e-4, epochs=30, batch_size=64,
        augment="none", normalize="unit",
    ),
    "report001": dict(
        description="Report 001: ResNet18 (3-channel input), Adam 1e-3, 20 epochs; it overfits",
        arch="resnet18", val="fraction:0.1", optimizer="adam", lr=1e-3, epochs=20, batch_size=64,
        augment="none", normalize="unit",
    ),
    "report002": dict(
        description="Report 002: vgg12, shift/flip/rotation/crop augmentation, per-image normalization, "
        "Adadelta phase then SGD phase",
        arch="vgg12", val="fraction:0.1", batch_size=64, augment="shift,flip,rotate,zoom", normalize="image",
        phases=(
            dict(optimizer="adadelta", lr=1.0, epochs=20),
            dict(optimizer="sgd", lr=0.01, epochs=20),
        ),
    ),
    "report003": dict(
        description="Report 003: cnn39m at 64x64, SGD, batch 128, 12% stratified validation, strong "
        "augmentation, stop once validation accuracy reaches 0.66 (the report ran up to 1000 epochs)",
        arch="cnn39m", val="fraction:0.12", optimizer="sgd", lr=0.01, momentum=0.9, batch_size=128,
        epochs=1000, augment="strong", normalize="unit", stop_at_accuracy=0.66,
    ),
    "report004": dict(
        description="Report 004: cnn4d with dropout everywhere, Adam, 100 epochs",
        arch="cnn4d", val="fraction:0.1", optimizer="adam", lr=1e-3, epochs=100, batch_size=128,
        augment="none", normalize="unit",
    ),
    "report004-dnn": dict(
        description="Report 004's DNN at the same recipe, for the DNN vs CNN comparison",
        arch="dnn", val="fraction:0.1", optimizer="adam", lr=1e-3, epochs=100, batch_size=128,
        augment="none", normalize="unit",
    ),
    "best": dict(
        description="Ours: fervgg, Adam with a 50-epoch cosine schedule, shift/flip/rotation augmentation: "
        "0.679 validation accuracy, 0.690 with predict.py --tta crops, in one run with --seed 2 (docs/RESULTS.md); "
        "about 2 CPU-hours on an AVX-512 CPU, resumable",
        arch="fervgg", val="fraction:0.1", optimizer="adam", lr=1e-3, batch_size=64, epochs=50,
        schedule="cosine", augment="basic", normalize="unit",
    ),
}


def list_recipes():
    return sorted(RECIPES)


def recipe(name):
    """The overrides of recipe `name` (without its description)."""
    if name not in RECIPES:
        raise FerOptionError(f"unknown recipe: choose one of {', '.join(list_recipes())}. Received: recipe={name!r}")
    return {key: value for key, value in RECIPES[name].items() if key != "description"}


def cut_phases(phases, epochs):
    """The first `epochs` epochs of a phased recipe: later phases dropped, the last one kept shortened.

    This is how a run that does not fit the machine is cut ("report 002's first 2 epochs").

    Example:
    >>> cut_phases(({"optimizer": "adadelta", "epochs": 20}, {"optimizer": "sgd", "epochs": 20}), 25)
    ({'optimizer': 'adadelta', 'epochs': 20}, {'optimizer': 'sgd', 'epochs': 5})
    """
    total = sum(int(phase["epochs"]) for phase in phases)
    if not 1 <= int(epochs) <= total:
        raise FerOptionError(f"--epochs on a phased recipe cuts it, so it must be between 1 and {total}. "
                             f"Received: epochs={epochs}")
    kept, left = [], int(epochs)
    for phase in phases:
        if left <= 0:
            break
        kept.append({**phase, "epochs": min(int(phase["epochs"]), left)})
        left -= int(phase["epochs"])
    return tuple(kept)
