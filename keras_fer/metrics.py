"""Accuracy, macro-F1, per-class precision/recall and confusion matrices (scikit-learn beneath)."""

import dataclasses

import numpy as np

from keras_fer.classes import CLASS_NAMES, NUM_CLASSES


@dataclasses.dataclass
class Evaluation:
    """Scores of predictions against labels.

    Attributes:
        accuracy, macro_f1: overall scores; macro-F1 is the mean F1 of the classes that occur
            in the labels or the predictions (scikit-learn's `f1_score(average="macro")`
            without `labels=`): a class with no image and no prediction is not a 0 in it.
        precision, recall, f1: per-class arrays of length 7.
        support: images per class.
        confusion: counts, rows = true class, columns = predicted class.
    """

    accuracy: float
    macro_f1: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    confusion: np.ndarray

    @property
    def confusion_normalized(self):
        """Rows sum to 1 (rows with no images stay 0)."""
        totals = self.confusion.sum(axis=1, keepdims=True)
        return np.divide(self.confusion, totals, out=np.zeros(self.confusion.shape), where=totals > 0)

    def most_confused(self, count=3):
        """The `count` largest off-diagonal shares as `(true name, predicted name, share)`,
        largest first; fewer when fewer pairs are confused at all."""
        shares = self.confusion_normalized.copy()
        np.fill_diagonal(shares, 0.0)
        order = sorted(np.flatnonzero(shares > 0), key=lambda index: (-shares.flat[index], index))  # ties: row order
        return [(CLASS_NAMES[i], CLASS_NAMES[j], float(shares[i, j]))
                for i, j in zip(*np.unravel_index(np.array(order[:count], dtype=np.int64), shares.shape))]

    def report(self):
        """A classification report in scikit-learn's layout, with class names."""
        lines = [f"{'class':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
        for i, name in enumerate(CLASS_NAMES):
            lines.append(f"{name:<10}{self.precision[i]:>10.3f}{self.recall[i]:>10.3f}{self.f1[i]:>10.3f}{self.support[i]:>10d}")
        lines.append("")
        lines.append(f"{'accuracy':<10}{'':>20}{self.accuracy:>10.4f}{int(self.support.sum()):>10d}")
        lines.append(f"{'macro f1':<10}{'':>20}{self.macro_f1:>10.4f}")
        return "\n".join(lines)

    def as_dict(self):
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": {
                name: {"precision": float(self.precision[i]), "recall": float(self.recall[i]),
                       "f1": float(self.f1[i]), "support": int(self.support[i])}
                for i, name in enumerate(CLASS_NAMES)
            },
            "confusion": self.confusion.tolist(),
        }


def macro_f1(f1, support, predicted):
    """The mean of the per-class `f1` over the classes with images (`support`) or predictions
    (`predicted`, per-class counts); 0.0 when there are none."""
    occurring = (np.asarray(support) > 0) | (np.asarray(predicted) > 0)
    return float(np.mean(np.asarray(f1)[occurring])) if occurring.any() else 0.0


def evaluate(labels, predictions):
    """Score integer `predictions` (or `(N, 7)` probabilities/logits) against integer `labels`."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        predictions = predictions.argmax(axis=1)
    classes = list(range(NUM_CLASSES))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0
    )
    confusion = confusion_matrix(labels, predictions, labels=classes)
    return Evaluation(
        accuracy=float(accuracy_score(labels, predictions)) if len(labels) else 0.0,
        macro_f1=macro_f1(f1, support, confusion.sum(axis=0)),
        precision=precision, recall=recall, f1=f1, support=support.astype(np.int64),
        confusion=confusion,
    )
