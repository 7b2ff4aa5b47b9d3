"""Knowledge distillation: train a small model on a larger model's (or an ensemble's) soft labels.

`train.py --teacher RUN [RUN ...]` runs the teachers once over the student's training rows
(each face and its mirror image, averaged over the teachers), softens their probabilities with a
temperature and mixes them with the one-hot labels; the student then trains on those targets
with the usual cross-entropy (Hinton et al. 2015, "Distilling the knowledge in a neural
network", with the teacher's outputs computed once instead of at every step). The soft labels
say which wrong classes a face resembles (a fearful face that looks surprised), which a one-hot
label cannot.

The teachers must have been validated on the student's split of the same data: a teacher
trained on the student's validation rows would pass their labels on, and the student's
validation accuracy would then be flattered.

Example:
>>> targets = soft_targets(np.array([0, 3]), teacher_probabilities, weight=0.5, temperature=2.0)  # doctest: +SKIP
"""

import numpy as np

from keras_fer.errors import FerOptionError

TEACHER_TTA = "flip"


def soften(probabilities, temperature):
    """Probabilities at a higher temperature: `softmax(log(p) / T)`, row by row.

    Example:
    >>> soften(np.array([[0.8, 0.2]]), 1.0).round(2).tolist()
    [[0.8, 0.2]]
    >>> soften(np.array([[0.8, 0.2]]), 2.0).round(2).tolist()
    [[0.67, 0.33]]
    """
    if not temperature > 0:
        raise FerOptionError(f"--temperature must be positive. Received: temperature={temperature!r}")
    logits = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def soft_targets(labels, probabilities, weight, temperature):
    """Training targets `(N, classes)`, float32: `(1 - weight) * one_hot(labels) + weight * soften(p, T)`.

    Args:
        labels: int `(N,)` true classes.
        probabilities: `(N, classes)` teacher probabilities of the same faces.
        weight: the teachers' share of each target, in [0, 1]; at 0.5 or less the true class
            always stays the target's largest entry, so training accuracy keeps its meaning.
        temperature: softens the teachers' probabilities (1 keeps them).
    """
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise FerOptionError(f"teacher probabilities must be one row per face. Received: shape={probabilities.shape} "
                             f"for {len(labels)} faces")
    if not 0.0 <= float(weight) <= 1.0:
        raise FerOptionError(f"--teacher-weight must be in [0, 1]. Received: teacher_weight={weight!r}")
    one_hot = np.eye(probabilities.shape[1])[labels]
    return ((1.0 - weight) * one_hot + weight * soften(probabilities, temperature)).astype(np.float32)


def check_teachers(names, sources, val, split_seed, fingerprint):
    """Refuse teachers that may have trained on the student's validation rows.

    Each teacher needs a run config (`config.json` beside its model) saying it was validated on
    `val` with `split_seed`, on data with this `fingerprint`.
    """
    for name, source in zip(names, sources):
        if not isinstance((source.config or {}).get("options"), dict):
            raise FerOptionError(
                f"{name}: no training config beside the model, so which rows it trained on is unknown: "
                f"a teacher must be a run directory (or 'packaged'). Received: teacher={name!r}"
            )
    from keras_fer.inference import validation_split

    teacher_val, teacher_seed = validation_split(sources, names, "so they cannot teach one student")
    if (teacher_val, teacher_seed) != (val, split_seed):
        raise FerOptionError(
            f"the teachers were validated on {teacher_val} with split seed {teacher_seed}, the student on {val} "
            f"with split seed {split_seed}: they trained on its validation rows. Pass --val {teacher_val} "
            f"--split-seed {teacher_seed}. Received: teacher={names}"
        )
    for name, source in zip(names, sources):
        theirs = source.config.get("data_fingerprint")
        if theirs is not None and theirs != fingerprint:
            raise FerOptionError(
                f"{name} was trained on other data (fingerprint {theirs}, the student's is {fingerprint}): "
                f"its training rows may be the student's validation rows. Received: teacher={name!r}"
            )


def teacher_probabilities(names, faces, progress=None):
    """The teachers' mean probabilities over `faces` and their mirror images, `(N, 7)` float64.

    Args:
        names: run directories, `.keras` files or `"packaged"`.
        faces: uint8 or float `(N, 48, 48, 1)`.
        progress: called with the number of teachers done, or None.
    """
    from keras_fer.inference import default_model_path, load_predictor, predict_proba

    predictors = [load_predictor(default_model_path() if name == "packaged" else name, backend="keras")
                  for name in names]
    total = None
    for done, predictor in enumerate(predictors, start=1):
        probabilities = predict_proba([predictor], faces, tta=TEACHER_TTA)
        total = probabilities if total is None else total + probabilities
        if progress is not None:
            progress(done)
    return total / len(predictors)


def teacher_targets(config, train_images, all_images, previous=None, say=print):
    """The soft training targets of `config.teacher` for `train_images`, and a record for the run config.

    Args:
        config: a `training.TrainConfig` with `teacher`, `teacher_weight`, `temperature`,
            `val` and `seed` / `split_seed`.
        train_images: the student's training rows (`FerImages`).
        all_images: the whole data set, for its fingerprint.
        previous: the `teacher` record of the run being resumed, or None: a teacher whose file
            changed since is refused.
        say: prints one line of figures.

    Returns:
        `(targets, record)`: float32 `(N, 7)` targets and a dict of what was used and measured
        (the teachers' training accuracy and mean top probability before and after softening).
    """
    from keras_fer.data import parse_split
    from keras_fer.inference import default_model_path, file_sha256, resolve_model

    names = [str(name) for name in config.teacher]
    sources = [resolve_model(default_model_path() if name == "packaged" else name) for name in names]
    split_seed = config.seed if config.split_seed is None else config.split_seed
    if parse_split(config.val)[0] != "none":  # with no validation rows there is nothing to flatter
        check_teachers(names, sources, config.val, split_seed, all_images.fingerprint())
    digests = [file_sha256(source.path) for source in sources]
    if previous is not None and previous.get("sha256") not in (None, digests):
        changed = [name for name, old, new in zip(names, previous["sha256"], digests) if old != new]
        raise FerOptionError(
            f"--resume: teacher {', '.join(changed) or names} changed since the run started, so its soft labels "
            f"would too. Received: teacher={names}"
        )
    say(f"teachers: {len(names)} model(s) over the {len(train_images)} training faces and their mirror images "
        "(once, before epoch 1)")
    probabilities = teacher_probabilities(names, train_images.pixels)
    softened = soften(probabilities, config.temperature)
    targets = soft_targets(train_images.labels, probabilities, config.teacher_weight, config.temperature)
    record = {
        "models": [str(source.path) for source in sources],
        "sha256": digests,
        "tta": TEACHER_TTA,
        "weight": float(config.teacher_weight),
        "temperature": float(config.temperature),
        "train_accuracy": float((probabilities.argmax(axis=1) == train_images.labels).mean()),
        "mean_top_probability": float(probabilities.max(axis=1).mean()),
        "mean_top_probability_softened": float(softened.max(axis=1).mean()),
    }
    say(f"teachers: accuracy {record['train_accuracy']:.4f} on the training faces, mean top "
        f"probability {record['mean_top_probability']:.3f} ({record['mean_top_probability_softened']:.3f} at "
        f"temperature {config.temperature:g}); targets are {1 - config.teacher_weight:g} one-hot + "
        f"{config.teacher_weight:g} teachers")
    return targets, record
