"""keras_fer.metrics: scores against scikit-learn, and the cases a small split meets."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from keras_fer import inference
from keras_fer.metrics import evaluate


def test_macro_f1_leaves_out_classes_with_no_image_and_no_prediction():
    # Perfect predictions on a split without Disgust scored 6/7 = 0.857: Disgust counted as F1 0.
    labels = np.array([0, 2, 3, 3, 4, 5, 6, 6])
    evaluation = evaluate(labels, labels)
    assert evaluation.macro_f1 == 1.0 and evaluation.f1[1] == 0.0
    rng = np.random.default_rng(0)
    for _ in range(5):
        truth, guess = rng.choice([0, 2, 3, 6], size=60), rng.choice([0, 1, 3, 6], size=60)
        expected = f1_score(truth, guess, average="macro", zero_division=0)  # over the 5 classes that occur
        matrix = np.zeros((7, 7), np.int64)
        np.add.at(matrix, (truth, guess), 1)
        assert evaluate(truth, guess).macro_f1 == pytest.approx(expected)
        assert inference.evaluation_from_confusion(matrix).macro_f1 == pytest.approx(expected)


def test_most_confused_lists_only_confused_pairs_largest_first():
    # Perfect predictions listed "Neutral predicted as Neutral 0.0%" (the zeroed diagonal) and 0% pairs.
    labels = np.array([0, 0, 0, 0, 3, 3, 6, 6])
    assert evaluate(labels, labels).most_confused(3) == []
    predictions = np.array([0, 0, 2, 4, 3, 3, 6, 0])
    assert evaluate(labels, predictions).most_confused(5) == [
        ("Neutral", "Angry", 0.5), ("Angry", "Fear", 0.25), ("Angry", "Sad", 0.25)]  # ties in row order
