"""Knowledge distillation: train a small model on a larger model's (or an ensemble's) soft labels.

`train.py --teacher RUN [RUN ...]` runs the teachers once over the student's training rows
(each face and its mirror image, averaged over the teachers), softens their probabilities with a
temperature and mixes them with the one-hot labels; the student then trains on those targets
with the usual cross-entropy. This is the soft-target half of Hinton et al. 2015 ("Distilling
the knowledge in a neural network") in its simplest form: the student's own logits are not
divided by the temperature (so no T^2 scaling), and the teachers' outputs are computed once, on
plain faces, instead of on each augmented batch. The soft labels say which wrong classes a face
resembles (a fearful face that looks surprised), which a one-hot label cannot. Above a weight of
0.5 a teacher can outvote the label: training accuracy then follows each target's largest
entry, not the label (`--class-weight` follows the label: each image is weighted by its own
class).

The teachers must have been validated on the student's split of the same data: a teacher
trained on the student's validation rows would pass their labels on, and the student's
validation accuracy would then be flattered.

Example:
>>> targets = soft_targets(np.array([0, 3]), teacher_probabilities, weight=0.5, temperature=2.0)  # doctest: +SKIP
"""

from pathlib import Path

import numpy as np

from keras_fer.classes import NUM_CLASSES
from keras_fer.errors import FerOptionError

TEACHER_TTA = "flip"
# The teachers' probabilities of the training faces, kept in the run directory for --resume.
CACHE_NAME = "teacher_probabilities.npy"


def soften(probabilities, temperature):
    """Probabilities at a higher temperature: `softmax(log(p) / T)`, row by row.

    Args:
        probabilities: `(N, classes)`, rows summing to 1.
        temperature: > 1 flattens, 1 keeps, < 1 sharpens.

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


def resolve_teachers(names):
    """The `loading.ModelSource` of each teacher argument, before any data is read.

    Raises:
        FerModelError / FerOptionError: one line naming the teacher, for a missing file, a
            folder without a model, or a `.tflite` file (a teacher runs in Keras).
    """
    from keras_fer.errors import FerError
    from keras_fer.loading import resolve_model_argument

    sources = []
    for name in map(str, names):
        try:
            source = resolve_model_argument(name, "--teacher")
        except FerError as error:
            raise type(error)(f"{str(error).rstrip('.')}. Received: teacher={name!r}") from None
        if source.path.suffix.lower() != ".keras":
            raise FerOptionError(f"{source.path}: a teacher must be a Keras model (.keras file or run directory). "
                                 f"Received: teacher={name!r}")
        sources.append(source)
    return sources


def check_teachers(names, sources, val, split_seed, fingerprint):
    """Refuse teachers that may have trained on the student's validation rows.

    Args:
        names: the teachers as the user named them; sources: their `loading.ModelSource`s.
        val, split_seed: the student's validation split.
        fingerprint: the student's data fingerprint.

    Each teacher needs a run config (`config.json` beside its model) saying it was validated on
    `val` with `split_seed`, on data with this `fingerprint`. Not checked: the rows of a model a
    teacher started from (`--init-from`); keep such chains on one split, as `--split-seed` does.
    """
    from keras_fer.data import split_identity
    from keras_fer.loading import run_options, validation_split

    for name, source in zip(names, sources):
        if not run_options(source.config, source.config_path):  # of a wrong type: one line naming the file
            raise FerOptionError(
                f"{name}: no training config beside the model, so which rows it trained on is unknown: "
                f"a teacher must be a run directory (or 'packaged'). Received: teacher={name!r}"
            )
    teacher_val, teacher_seed = validation_split(sources, names, "so they cannot teach one student")
    if split_identity(teacher_val, teacher_seed) != split_identity(val, split_seed):
        raise FerOptionError(
            f"the teachers were validated on {teacher_val} with split seed {teacher_seed}, the student on {val} "
            f"with split seed {split_seed}: they may have trained on its validation rows. Pass --val {teacher_val} "
            f"--split-seed {teacher_seed}. Received: teacher={names}"
        )
    for name, source in zip(names, sources):
        theirs = source.config.get("data_fingerprint")
        if theirs is not None and theirs != fingerprint:
            raise FerOptionError(
                f"{name} was trained on other data (fingerprint {theirs}, the student's is {fingerprint}): "
                f"its training rows may be the student's validation rows. Received: teacher={name!r}"
            )


def teacher_probabilities(sources, faces, progress=None, chunk_rows=4096):
    """The teachers' mean probabilities over `faces` and their mirror images, `(N, 7)` float64.

    Args:
        sources: `loading.ModelSource`s of Keras models (`resolve_teachers`).
        faces: uint8 or float `(N, 48, 48, 1)`.
        progress: an optional callable called with the number of faces done after each chunk.
        chunk_rows: faces a chunk.
    """
    from keras_fer.inference import load_predictor, predict_proba

    # the teachers' own softmax: --temperature softens it, not a calibration (keras_fer.calibrate) too
    predictors = [load_predictor(source.path, backend="keras", temperature=1.0) for source in sources]
    parts = []
    for start in range(0, len(faces), chunk_rows):
        parts.append(predict_proba(predictors, faces[start:start + chunk_rows], tta=TEACHER_TTA))
        if progress is not None:
            progress(min(start + chunk_rows, len(faces)))
    if not parts:
        if progress is not None:
            progress(0)  # nothing to do: the bar still ends
        return np.zeros((0, NUM_CLASSES))
    return np.concatenate(parts)


def _read_kept(path, rows, say):
    """The teachers' probabilities kept in `path`, or None (with a note) when the file is damaged:
    unreadable, of another shape, or not probabilities. They are then computed again."""
    from keras_fer.loading import one_line

    try:
        kept = np.load(path, allow_pickle=False).astype(np.float64)
    except (OSError, ValueError, EOFError) as error:
        problem = f"unreadable ({one_line(error) or type(error).__name__})"
    else:
        if kept.shape != (rows, NUM_CLASSES):
            problem = f"of shape {kept.shape}, not ({rows}, {NUM_CLASSES})"
        elif not (np.isfinite(kept).all() and (kept >= 0).all() and np.allclose(kept.sum(axis=1), 1.0, atol=1e-3)):
            problem = "not probabilities (NaN, negative, or rows that do not sum to 1)"
        else:
            return kept
    say(f"note: {path} is {problem}: the teachers run again")
    return None


def _same_pass(record, kept, pass_record):
    """Whether the `teacher` record of an earlier run describes this very teachers' pass and the
    file `kept`: the same teacher files and their configs (by SHA-256: a config's `normalize`
    feeds a model without its own scaling), views and training rows, and `kept` the file that
    run saved (a later run that failed before its config.json leaves its own file beside the
    earlier record)."""
    from keras_fer.files import file_sha256

    if not isinstance(record, dict) or kept is None or not kept.is_file():
        return False
    if any(record.get(key) != value for key, value in pass_record.items()):
        return False
    return record.get("probabilities_sha256") == file_sha256(kept)


def teacher_targets(config, sources, train_images, all_images, previous=None, run_dir=None, write=True, say=print,
                    progress=None, unfinished=None):
    """The soft training targets of the teachers for `train_images`, and a record for the run config.

    The teachers' probabilities are kept in `run_dir/teacher_probabilities.npy`, so a resumed run
    reads them back instead of running the teachers again.

    Args:
        config: a `training.TrainConfig` with `teacher`, `teacher_weight`, `temperature`,
            `val` and `seed` / `split_seed`.
        sources: the teachers' `loading.ModelSource`s (`resolve_teachers(config.teacher)`).
        train_images: the student's training rows (`FerImages`).
        all_images: the whole data set, for its fingerprint.
        previous: the `teacher` record of the run being resumed, or None: a teacher whose file
            changed since is refused.
        unfinished: the `teacher` record of a run stopped in `run_dir` before its first epoch
            ended, which this run starts again: its kept probabilities are used when they came
            from these very teachers (same SHA-256) over these very training faces.
        run_dir: the run directory, or None to keep nothing.
        write: whether this process writes the run directory (the chief).
        say: prints progress and figures.
        progress: a factory `progress(total, description) -> callable(done)` for the teachers'
            pass, or None.

    Returns:
        `(targets, record)`: float32 `(N, 7)` targets and a dict of what was used and measured
        (the teachers' training accuracy and mean top probability before and after softening).
    """
    from keras_fer.data import parse_split
    from keras_fer.files import atomic_open, file_sha256

    names = [str(name) for name in config.teacher]
    if parse_split(config.val)[0] != "none":  # with no validation rows there is nothing to flatter
        check_teachers(names, sources, config.val, config.effective_split_seed, all_images.fingerprint())
    digests = [file_sha256(source.path) for source in sources]
    if previous is not None and previous.get("sha256") not in (None, digests):
        changed = [name for name, old, new in zip(names, previous["sha256"], digests) if old != new]
        raise FerOptionError(
            f"--resume: teacher {', '.join(changed) or names} changed since the run started, so its soft labels "
            f"would too. Received: teacher={names}"
        )
    kept = Path(run_dir) / CACHE_NAME if run_dir is not None else None
    pass_record = {  # what decides the teachers' probabilities
        "sha256": digests,
        "config_sha256": [file_sha256(source.config_path) if source.config_path is not None
                          and Path(source.config_path).is_file() else None for source in sources],
        "tta": TEACHER_TTA,
        "train_fingerprint": train_images.fingerprint(),  # the rows they are of
    }
    probabilities = None
    if previous is not None and kept is not None and kept.is_file():
        probabilities = _read_kept(kept, len(train_images), say)
    elif _same_pass(unfinished, kept, pass_record):
        probabilities = _read_kept(kept, len(train_images), say)
        if probabilities is not None:
            say(f"teachers: their probabilities over the {len(train_images):,} training faces from the run stopped "
                f"in its first epoch ({kept})")
    if probabilities is None:
        say(f"teachers: {len(names)} model(s) over the {len(train_images):,} training faces and their mirror "
            "images (once, before epoch 1)")
        done = progress(len(train_images), "teachers") if progress is not None else None
        probabilities = teacher_probabilities(sources, train_images.pixels, progress=done)
        if kept is not None and write:
            with atomic_open(kept, "wb") as stream:
                np.save(stream, probabilities.astype(np.float32))
            probabilities = probabilities.astype(np.float32).astype(np.float64)  # as a resume will read them
    softened = soften(probabilities, config.temperature)
    targets = soft_targets(train_images.labels, probabilities, config.teacher_weight, config.temperature)
    record = {
        "models": [str(source.path) for source in sources],
        **pass_record,
        "probabilities_sha256": file_sha256(kept) if kept is not None and write else None,
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
