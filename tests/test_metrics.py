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


def reference_ece(labels, probabilities, bins):
    """ECE as Guo et al. (2017) write it, one bin at a time, with a plain loop."""
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    total = 0.0
    for low, high in zip(np.linspace(0, 1, bins + 1)[:-1], np.linspace(0, 1, bins + 1)[1:]):
        inside = [i for i, c in enumerate(confidence) if low <= c < high or (high == 1.0 and c == 1.0)]
        if inside:
            accuracy = np.mean([predicted[i] == labels[i] for i in inside])
            total += len(inside) / len(labels) * abs(accuracy - np.mean(confidence[inside]))
    return total


def test_calibration_matches_a_reference_and_grows_chunk_by_chunk():
    from sklearn.metrics import log_loss

    from keras_fer.metrics import calibration

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(500, 7)) * rng.uniform(0.2, 4.0, size=(500, 1))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 7, 500)
    labels[:200] = probabilities[:200].argmax(axis=1)  # some right, so the bins differ in accuracy
    found = calibration(labels, probabilities)
    assert found.total == 500 and found.accuracy == pytest.approx(np.mean(probabilities.argmax(1) == labels))
    assert found.ece == pytest.approx(reference_ece(labels, probabilities, 15))
    assert found.nll == pytest.approx(log_loss(labels, probabilities, labels=range(7)))
    assert found.mean_confidence == pytest.approx(probabilities.max(axis=1).mean())
    assert 0 < found.ece <= found.mce <= 1
    # Chunks add up to the whole (predict.py counts a CSV chunk by chunk).
    pieces = calibration(labels[:123], probabilities[:123]).add(labels[123:], probabilities[123:])
    assert pieces.ece == pytest.approx(found.ece) and pieces.nll == pytest.approx(found.nll)
    assert (pieces.counts == found.counts).all()
    # Perfectly confident and right: no gap; confident and wrong: the whole gap.
    one_hot = np.eye(7)[labels]
    assert calibration(labels, one_hot).ece == 0.0 and calibration((labels + 1) % 7, one_hot).ece == 1.0
    # A confidence of exactly 1.0 falls in the last bin, not past it.
    assert calibration([0], [[1.0, 0.0]], bins=4).counts.tolist() == [0, 0, 0, 1]


def test_evaluate_scores_the_calibration_of_probabilities_not_of_logits_or_labels():
    labels = np.array([0, 1, 2, 3])
    probabilities = np.full((4, 7), 0.05) + np.eye(7)[[0, 1, 2, 4]] * 0.65
    evaluation = evaluate(labels, probabilities)
    assert evaluation.calibration is not None and evaluation.calibration.total == 4
    assert evaluation.as_dict()["calibration"]["ece"] == pytest.approx(evaluation.calibration.ece)
    assert len(evaluation.as_dict()["calibration"]["bins"]) == 15
    assert "ECE" in evaluation.report()
    assert evaluate(labels, np.log(probabilities)).calibration is None  # logits: no probabilities to judge
    assert evaluate(labels, labels).calibration is None and "calibration" not in evaluate(labels, labels).as_dict()


def test_evaluate_of_no_rows_is_zeros_not_a_scikit_learn_error():
    nothing = evaluate(np.zeros(0, np.int64), np.zeros((0, 7)))
    assert nothing.accuracy == 0.0 and nothing.macro_f1 == 0.0 and nothing.calibration is None
    assert nothing.confusion.shape == (7, 7) and nothing.confusion.sum() == 0 and nothing.support.sum() == 0
