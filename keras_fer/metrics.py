"""Accuracy, macro-F1, per-class precision/recall, confusion matrices (scikit-learn beneath) and
calibration: how far the top-class probability is from the accuracy it claims."""

import dataclasses

import numpy as np

from keras_fer.classes import CLASS_NAMES, NUM_CLASSES

CALIBRATION_BINS = 15  # equal-width confidence bins, as Guo et al. (2017) measured ECE with
PROBABILITY_FLOOR = 1e-12  # log(0) of a class given no probability at all: NLL stays finite


@dataclasses.dataclass
class Calibration:
    """How well the top-class probability ("confidence") matches accuracy, counted in
    equal-width confidence bins; built by `calibration()`, or grown chunk by chunk with `add`.

    Attributes:
        counts: images per bin, `(bins,)`; bin `i` holds confidences in `[i/bins, (i+1)/bins)`
            (the last one includes 1.0).
        confidence_sums: the sum of the confidences per bin.
        correct: correctly classified images per bin.
        log_loss_sum: the sum over images of `-log p(true class)`.

    Example:
    >>> found = calibration([0, 1, 1], np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]), bins=10)
    >>> found.total, round(found.accuracy, 4), round(found.ece, 4)  # (0.1 + 0.6 + 0.2) / 3: one image a bin
    (3, 0.6667, 0.3)
    """

    counts: np.ndarray
    confidence_sums: np.ndarray
    correct: np.ndarray
    log_loss_sum: float = 0.0

    @classmethod
    def empty(cls, bins=CALIBRATION_BINS):
        """No images yet, in `bins` bins."""
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise ValueError(f"bins must be a positive integer. Received: bins={bins!r}")
        return cls(np.zeros(bins, np.int64), np.zeros(bins), np.zeros(bins, np.int64))

    def add(self, labels, probabilities):
        """Count more images: integer `labels` `(N,)` and their probabilities `(N, classes)`."""
        labels = np.asarray(labels, np.int64)
        probabilities = np.asarray(probabilities, np.float64)
        if probabilities.ndim != 2 or len(probabilities) != len(labels):
            raise ValueError(f"probabilities must be (N, classes) for N labels. Received: "
                             f"probabilities.shape={probabilities.shape}, labels.shape={labels.shape}")
        if not len(labels):
            return self
        confidence = probabilities.max(axis=1)
        bins = len(self.counts)
        index = np.clip((confidence * bins).astype(np.int64), 0, bins - 1)
        np.add.at(self.counts, index, 1)
        np.add.at(self.confidence_sums, index, confidence)
        np.add.at(self.correct, index, (probabilities.argmax(axis=1) == labels).astype(np.int64))
        truth = probabilities[np.arange(len(labels)), labels]
        self.log_loss_sum += float(-np.log(np.maximum(truth, PROBABILITY_FLOOR)).sum())
        return self

    @property
    def total(self):
        return int(self.counts.sum())

    @property
    def edges(self):
        """The `bins + 1` bin edges, 0 to 1."""
        return np.linspace(0.0, 1.0, len(self.counts) + 1)

    @property
    def bin_confidence(self):
        """The mean confidence per bin (NaN for an empty bin)."""
        return np.divide(self.confidence_sums, self.counts, out=np.full(len(self.counts), np.nan),
                         where=self.counts > 0)

    @property
    def bin_accuracy(self):
        """The accuracy per bin (NaN for an empty bin)."""
        return np.divide(self.correct, self.counts, out=np.full(len(self.counts), np.nan), where=self.counts > 0)

    @property
    def accuracy(self):
        return float(self.correct.sum() / self.total) if self.total else 0.0

    @property
    def mean_confidence(self):
        return float(self.confidence_sums.sum() / self.total) if self.total else 0.0

    @property
    def direction(self):
        """`"over-confident"`, `"under-confident"` or `"about right"`: the mean confidence against
        the accuracy, a point either way."""
        if self.mean_confidence > self.accuracy + 0.01:
            return "over-confident"
        return "under-confident" if self.mean_confidence < self.accuracy - 0.01 else "about right"

    @property
    def ece(self):
        """Expected calibration error: the image-weighted mean over bins of |accuracy - mean
        confidence| (0: every confidence is the accuracy it claims)."""
        if not self.total:
            return 0.0
        gaps = np.abs(self.correct - self.confidence_sums)  # per bin: count * |accuracy - confidence|
        return float(gaps.sum() / self.total)

    @property
    def mce(self):
        """Maximum calibration error: the largest |accuracy - mean confidence| of a non-empty bin."""
        filled = self.counts > 0
        return float(np.abs(self.bin_accuracy[filled] - self.bin_confidence[filled]).max()) if filled.any() else 0.0

    @property
    def nll(self):
        """The mean negative log-likelihood of the true class (the cross-entropy loss)."""
        return self.log_loss_sum / self.total if self.total else 0.0

    def as_dict(self):
        rounded = lambda value: None if np.isnan(value) else round(float(value), 6)  # noqa: E731
        return {
            "ece": self.ece, "mce": self.mce, "nll": self.nll, "mean_confidence": self.mean_confidence,
            "bins": [{"from": round(float(low), 6), "to": round(float(high), 6), "count": int(count),
                      "confidence": rounded(confidence), "accuracy": rounded(accuracy)}
                     for low, high, count, confidence, accuracy in zip(self.edges[:-1], self.edges[1:], self.counts,
                                                                       self.bin_confidence, self.bin_accuracy)],
        }


def calibration(labels, probabilities, bins=CALIBRATION_BINS):
    """The `Calibration` of `probabilities` `(N, classes)` against integer `labels`."""
    return Calibration.empty(bins).add(labels, probabilities)


TEMPERATURE_RANGE = (0.05, 20.0)


def _log_probabilities(probabilities):
    return np.log(np.maximum(np.asarray(probabilities, np.float64), PROBABILITY_FLOOR))


def scale_temperature(probabilities, temperature):
    """`softmax(log p / temperature)` over the last axis: probabilities softened (temperature
    above 1) or sharpened (below 1); the same as dividing a model's logits by it. The top class
    never changes."""
    scaled = _log_probabilities(probabilities) / float(temperature)
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def scaled_views(probabilities, temperature):
    """The probabilities predictions with TTA give at `temperature`: `(N, classes)` scaled, or
    `(views, N, classes)` (one model's probabilities of each TTA view) each view scaled and
    then averaged, as `inference.predict_proba` does."""
    scaled = scale_temperature(probabilities, temperature)
    return scaled.mean(axis=0) if scaled.ndim == 3 else scaled


def fit_temperature(labels, probabilities):
    """Temperature scaling (Guo et al., 2017): the one temperature T that minimizes the negative
    log-likelihood of `softmax(log p / T)` on these labelled probabilities, searched in
    `TEMPERATURE_RANGE`. The NLL is convex in 1/T, so a golden-section search finds it.
    `probabilities` `(views, N, classes)` are TTA views: T is fitted for their average of
    scaled views (`scaled_views`), which averaging softens, so it wants a lower T.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 3, 20000)
    >>> logits = np.eye(3)[labels] + rng.normal(size=(20000, 3))  # an honest model's: softmax is calibrated
    >>> over = scale_temperature(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 0.5)  # made over-confident
    >>> round(fit_temperature(labels, over), 2)  # undoes the 0.5
    2.01
    """
    labels = np.asarray(labels, np.int64)
    log = _log_probabilities(probabilities)
    views = log[None] if log.ndim == 2 else log
    if views.ndim != 3 or views.shape[1] != len(labels) or not len(labels) or not len(views):
        raise ValueError(f"probabilities must be (N, classes) or (views, N, classes) for N > 0 labels. Received: "
                         f"probabilities.shape={log.shape}, labels.shape={labels.shape}")
    rows = np.arange(len(labels))

    def nll(inverse):  # of the views' mean of softmax(log p * inverse), inverse = 1 / T
        scaled = views * inverse
        top = scaled.max(axis=2)
        chosen = scaled[:, rows, labels] - top - np.log(np.exp(scaled - top[..., None]).sum(axis=2))  # (views, N)
        peak = chosen.max(axis=0)
        return float(-np.mean(peak + np.log(np.exp(chosen - peak).mean(axis=0))))

    low, high = 1.0 / TEMPERATURE_RANGE[1], 1.0 / TEMPERATURE_RANGE[0]
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    left_value, right_value = nll(left), nll(right)
    while high - low > 1e-6:
        if left_value < right_value:
            high, right, right_value = right, left, left_value
            left = high - ratio * (high - low)
            left_value = nll(left)
        else:
            low, left, left_value = left, right, right_value
            right = low + ratio * (high - low)
            right_value = nll(right)
    return float(1.0 / ((low + high) / 2.0))


def cross_fitted_calibration(labels, probabilities, bins=CALIBRATION_BINS):
    """The `Calibration` temperature scaling would give on images it was not fitted on: the
    even rows scaled by the temperature fitted on the odd ones and the other way round (a
    temperature fitted and measured on the same rows flatters itself). `probabilities` may be
    `(views, N, classes)` TTA views (`fit_temperature`)."""
    labels = np.asarray(labels, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    found = Calibration.empty(bins)
    for measured, fitted in ((slice(0, None, 2), slice(1, None, 2)), (slice(1, None, 2), slice(0, None, 2))):
        if len(labels[measured]) and len(labels[fitted]):
            temperature = fit_temperature(labels[fitted], probabilities[..., fitted, :])
            found.add(labels[measured], scaled_views(probabilities[..., measured, :], temperature))
    return found


def is_probabilities(values, tolerance=0.01):
    """True when each row of the 2-D `values` is a probability distribution (not logits)."""
    values = np.asarray(values, np.float64)
    return bool(values.ndim == 2 and len(values) and values.min() >= 0.0
                and np.abs(values.sum(axis=1) - 1.0).max() <= tolerance)


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
        calibration: a `Calibration` when probabilities were scored, else None.
    """

    accuracy: float
    macro_f1: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    confusion: np.ndarray
    calibration: Calibration = None

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
        if self.calibration is not None:
            found = self.calibration
            lines.append(f"{'ECE':<10}{'':>20}{found.ece:>10.4f}  (mean confidence {found.mean_confidence:.4f}, "
                         f"NLL {found.nll:.4f})")
        return "\n".join(lines)

    def as_dict(self):
        found = {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class": {
                name: {"precision": float(self.precision[i]), "recall": float(self.recall[i]),
                       "f1": float(self.f1[i]), "support": int(self.support[i])}
                for i, name in enumerate(CLASS_NAMES)
            },
            "confusion": self.confusion.tolist(),
        }
        if self.calibration is not None:
            found["calibration"] = self.calibration.as_dict()
        return found


def macro_f1(f1, support, predicted):
    """The mean of the per-class `f1` over the classes with images (`support`) or predictions
    (`predicted`, per-class counts); 0.0 when there are none."""
    occurring = (np.asarray(support) > 0) | (np.asarray(predicted) > 0)
    return float(np.mean(np.asarray(f1)[occurring])) if occurring.any() else 0.0


def evaluate(labels, predictions):
    """Score integer `predictions` (or `(N, 7)` probabilities or logits) against integer
    `labels`; probabilities (rows summing to 1) are scored for their `calibration` too."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions)
    if not len(labels):  # scikit-learn refuses empty input: nothing scored is all zeros
        zeros = np.zeros(NUM_CLASSES)
        return Evaluation(accuracy=0.0, macro_f1=0.0, precision=zeros, recall=zeros.copy(), f1=zeros.copy(),
                          support=np.zeros(NUM_CLASSES, np.int64),
                          confusion=np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64), calibration=None)
    found = None
    if predictions.ndim == 2:
        found = calibration(labels, predictions) if is_probabilities(predictions) else None
        predictions = predictions.argmax(axis=1)
    classes = list(range(NUM_CLASSES))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0
    )
    confusion = confusion_matrix(labels, predictions, labels=classes)
    return Evaluation(
        accuracy=float(accuracy_score(labels, predictions)),
        macro_f1=macro_f1(f1, support, confusion.sum(axis=0)),
        precision=precision, recall=recall, f1=f1, support=support.astype(np.int64),
        confusion=confusion, calibration=found,
    )
