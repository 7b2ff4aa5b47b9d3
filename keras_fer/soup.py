"""Model soups: average the weights of models trained from one start, re-estimate BatchNorm.

Runs that branch from one trained model (`train.py --init-from`, with different seeds or
schedules) stay in one basin of the loss, so the mean of their weights is itself a good model
(Wortsman et al. 2022, "Model soups"; Izmailov et al. 2018, SWA), often better than each of them
and as cheap to run as one, where an ensemble of them costs one pass per member. Averaging the
BatchNorm moving statistics is only an approximation of the averaged network's statistics, so
`recalibrate_batch_norm` measures them again on training images, as SWA's `update_bn` does.

Models trained from different random starts do not average: their units are not aligned.
Ensemble those instead (`predict.py --model A --model B`).

Example:
>>> soup = average_models(["runs/finetune-a", "runs/finetune-b"])  # doctest: +SKIP
>>> recalibrate_batch_norm(soup, train_images.pixels)  # doctest: +SKIP
"""

import numpy as np

from keras_fer.errors import FerError, FerModelError, short_list


def average_models(models, names=None):
    """One model whose every floating-point weight is the mean of the models' weights.

    Args:
        models: Keras models, or paths of `.keras` files / run directories (loaded in safe mode),
            all of one architecture with the same options.
        names: what to call each model in errors (default: its path, or its position).

    Returns:
        A new Keras model (a clone of the first) holding the mean weights. Integer variables
        (random-generator states) are taken from the first model.

    Raises:
        FerModelError: when fewer than two models are given, or when a model's weights do not
            match the first's one for one (naming it and the first weight that differs), or its
            layers are set otherwise (another activation, normalization, or final Softmax).
    """
    from keras_fer.loading import import_keras, load_keras_model
    from keras_fer.models import config_mismatch, preprocessing_mismatch, weight_mismatch

    keras = import_keras()
    if names is None:
        names = [str(m) if not isinstance(m, keras.Model) else f"model {i + 1}" for i, m in enumerate(models)]
    if len(models) < 2:
        raise FerModelError(f"a soup needs at least two models. Received: {len(models)} ({', '.join(names)})")
    loaded = [m if isinstance(m, keras.Model) else load_keras_model(m) for m in models]
    for name, model in zip(names[1:], loaded[1:]):
        mismatch = (weight_mismatch(model, loaded[0], names[0]) or preprocessing_mismatch(model, loaded[0], names[0])
                    or config_mismatch(model, loaded[0], names[0]))
        if mismatch is not None:
            raise FerModelError(f"{name}: {mismatch}; a soup needs models of one architecture with the same options")
    soup = keras.models.clone_model(loaded[0])
    for index, variable in enumerate(soup.weights):
        values = [np.asarray(model.weights[index].numpy()) for model in loaded]
        if np.issubdtype(values[0].dtype, np.floating):
            variable.assign(np.mean(np.stack(values).astype(np.float64), axis=0).astype(values[0].dtype))
        else:
            variable.assign(values[0])
    return soup


def batch_norm_layers(model):
    """The model's BatchNormalization layers (top level; nested models are not searched)."""
    import keras

    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)
              and any(isinstance(inner, keras.layers.BatchNormalization) for inner in layer._flatten_layers())]
    if nested:
        raise FerModelError(
            f"{model.name}: BatchNormalization inside nested models ({', '.join(nested)}) cannot be re-estimated"
        )
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate_batch_norm(model, images, batch_size=256, augment=None, seed=0, progress=None):
    """Set every BatchNormalization layer's moving mean and variance to its input's statistics
    over `images`, the network run in training mode (batch statistics, dropout on), as in
    training. Statistics are pooled over all images (not a moving average), so the order of the
    images does not matter and batches of equal size give the exact mean.

    Args:
        model: a Keras model taking raw faces; changed in place.
        images: uint8 or float `(N, 48, 48, 1)` training faces (not the validation ones).
        batch_size: images per forward pass.
        augment: a `pipeline.AugmentConfig` to apply to the images first, or None. Give the
            one the models were trained with: their statistics then describe the shifted,
            flipped and rotated faces they learned on, which test-time augmentation's views
            resemble more than the plain faces do.
        seed: seeds the augmentation.
        progress: an optional callable called with the number of images done after each batch.

    Returns:
        The number of BatchNormalization layers re-estimated (0: nothing to do).
    """
    import keras
    import tensorflow as tf

    layers = batch_norm_layers(model)
    if not layers or not len(images):
        return 0
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, [layer.input for layer in layers])

    def axes(layer, rank):
        kept = {a % rank for a in np.atleast_1d(layer.axis)}
        return [a for a in range(rank) if a not in kept]

    augment = augment if (augment is not None and augment.ops) else None

    @tf.function(reduce_retracing=True)
    def moments(batch, step):
        if augment is not None:
            from keras_fer.pipeline import augment_batch

            batch = augment_batch(batch, tf.stack([tf.constant(seed, tf.int64), step]), augment)
        inputs = probe(batch, training=True)
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        return [(tf.reduce_mean(x, axes(layer, len(x.shape))), tf.reduce_mean(tf.square(x), axes(layer, len(x.shape))))
                for layer, x in zip(layers, inputs)]

    sums = [[0.0, 0.0] for _ in layers]
    seen = 0
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], np.float32)
        for total, (mean, square) in zip(sums, moments(tf.constant(batch), tf.constant(start, tf.int64))):
            total[0] = total[0] + mean.numpy().astype(np.float64) * len(batch)
            total[1] = total[1] + square.numpy().astype(np.float64) * len(batch)
        seen += len(batch)
        if progress is not None:
            progress(seen)
    for layer, (mean_sum, square_sum) in zip(layers, sums):
        mean = mean_sum / seen
        variance = np.maximum(square_sum / seen - mean**2, 0.0)
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
    return len(layers)


def _accuracy(model, images):
    from keras_fer.pipeline import make_dataset

    scores = np.asarray(model.predict(make_dataset(images.pixels, batch_size=256), verbose=0))
    return float((scores.argmax(axis=1) == images.labels).mean())


def make_soup(config, ingredients, recalibrate=True, say=print, progress=None):
    """Average trained models into a run directory and validate it.

    The soup is validated on the split its ingredients were trained beside (read from their
    run configs; `config.val` and `config.split_seed` must agree when given), and its
    BatchNorm statistics are re-estimated on that split's training rows
    (`config.max_images` caps how many).

    Args:
        config: a `training.TrainConfig`: its `data`, `val`, `seed`/`split_seed`, `max_images`,
            `demo_faces` and `out` are used; `val=None` takes the ingredients' split; `augment`
            augments the images BatchNorm statistics are measured on (default none; see
            `recalibrate_batch_norm`).
        ingredients: `.keras` files or run directories (or `"packaged"`), of one architecture.
        recalibrate: re-estimate the BatchNorm statistics (else keep their average).
        say: prints progress lines.
        progress: a factory `progress(total, description) -> callable(done)` for the
            recalibration, or None.

    Returns:
        A dict: `run_dir`, `ingredients` (name and validation accuracy of each), `averaged`
        (the soup's accuracy with averaged BatchNorm statistics), `accuracy` (the soup's).

    Raises:
        FerOptionError: for a run directory that already holds a model, a model given twice,
            or ingredients validated on different splits; FerModelError: for models that do not average.
    """
    import dataclasses
    import sys
    from pathlib import Path

    from keras_fer.classes import CLASS_NAMES
    from keras_fer.data import class_counts, split_identity
    from keras_fer.errors import FerOptionError
    from keras_fer.files import first_repeat, write_json, write_text
    from keras_fer.loading import (
        TEMPERATURE_KEYS,
        load_keras_model,
        resolve_model_argument,
        run_options,
        validation_split,
    )
    from keras_fer.pipeline import AugmentConfig
    from keras_fer.training import (
        DATA_OPTIONS,
        TrainConfig,
        data_record,
        finish_run,
        load_training_data,
        model_summary,
        save_model,
    )

    names = [str(item) for item in ingredients]
    sources = [resolve_model_argument(name, "--soup") for name in names]
    repeat = first_repeat([source.path for source in sources])
    if repeat is not None:  # by another spelling, a link or a run directory and its best.keras
        index, earlier = repeat
        raise FerOptionError(
            f"{names[index]}: the same model as {names[earlier]} ({sources[index].path}): a soup of a model with "
            f"itself is that model. Received: ingredients={names!r}"
        )
    split = validation_split(sources, names, "so the soup could not be validated")
    if split is not None:
        val, split_seed = split
        asked_val = val if config.val is None else config.val
        asked_seed = split_seed if config.split_seed is None else config.split_seed
        if split_identity(asked_val, asked_seed) != split_identity(val, split_seed):
            raise FerOptionError(
                f"the models were validated on {val} with split seed {split_seed}; the soup must be too. "
                f"Received: val={config.val!r}, split_seed={config.split_seed!r}"
            )
        config = dataclasses.replace(config, val=val, split_seed=split_seed)
    elif config.val is None:
        config = dataclasses.replace(config, val=TrainConfig.val)
    run_dir = Path(config.out or Path("runs") / "soup")
    from keras_fer.training import check_run_dir_path

    check_run_dir_path(run_dir)  # a file in the way fails before the members load
    if (run_dir / "best.keras").exists() or (run_dir / "state.json").exists():
        raise FerOptionError(f"{run_dir} already holds a model: choose another --out. Received: out={str(run_dir)!r}")
    if run_dir.is_dir():  # the user's config.json, summary.txt, metrics.json were replaced without a word
        from keras_fer.files import read_json_object

        present = sorted(path.name for path in run_dir.iterdir() if not path.name.startswith("."))
        try:
            earlier = "config.json" in present and "soup" in read_json_object(run_dir / "config.json")
        except FerError:
            earlier = False
        if present and not earlier:  # only an earlier soup's files, stopped before its model, are replaced
            raise FerOptionError(f"{run_dir} holds files that are not an earlier soup's ({short_list(present)}): "
                                 f"choose a new or empty folder for --out")

    models = [load_keras_model(source.path) for source in sources]
    soup = average_models(models, names)
    starts = {}  # member -> the model it started from (itself when trained from scratch); bare files: unknown
    for name, source in zip(names, sources):
        if source.config is not None:
            start = ((source.config.get("init_from") or {}).get("model")) or str(source.path)
            starts[name] = str(Path(start).resolve())
    if len(set(starts.values())) > 1:
        told = "; ".join(f"{name} from {start}" for name, start in starts.items())
        print(f"note: these models did not start from one model ({told}): runs trained apart do not average "
              "into a good model; ensemble them instead (predict.py --model A B)", file=sys.stderr)
    train_images, val_images, all_images = load_training_data(config)
    report = {"ingredients": [], "val": config.val, "split_seed": config.split_seed}
    for name, source, model in zip(names, sources, models):
        fingerprint = (source.config or {}).get("data_fingerprint")
        if fingerprint not in (None, all_images.fingerprint()):
            print(f"note: {name} was trained on other data ({fingerprint}, not {all_images.fingerprint()}): "
                  "its training rows may be among these validation rows", file=sys.stderr)
        accuracy = _accuracy(model, val_images) if len(val_images) else None
        report["ingredients"].append({"model": str(source.path), "val_accuracy": accuracy})
        if accuracy is not None:
            say(f"{accuracy:.4f}  {name}")
    has_batch_norm = bool(batch_norm_layers(soup))
    if len(val_images):
        report["averaged"] = _accuracy(soup, val_images)
        say(f"{report['averaged']:.4f}  soup" + (", BatchNorm statistics averaged" if has_batch_norm else ""))
    if recalibrate and has_batch_norm:
        done = progress(len(train_images), "BatchNorm statistics") if progress is not None else None
        augment = AugmentConfig.parse(config.augment)
        recalibrate_batch_norm(soup, train_images.pixels, augment=augment, seed=config.seed, progress=done)
        report["recalibrated_on"] = len(train_images)
        report["recalibration_augment"] = config.augment
    run_dir.mkdir(parents=True, exist_ok=True)
    # The first ingredient's config says what the model is (its architecture, preprocessing);
    # what it was validated on, and where it is, are the soup's own: visualize rebuilds them.
    base = dict(sources[0].config or {})
    for key in TEMPERATURE_KEYS:  # fitted on that ingredient's logits, not the soup's
        base.pop(key, None)
    if "class_prior" not in base and train_images.labels is not None:
        counts = class_counts(train_images.labels)
        base["class_prior"] = (counts / counts.sum()).tolist()
    base.setdefault("class_names", list(CLASS_NAMES))
    options = run_options(base, sources[0].config_path)
    if options:
        base["options"] = {**options, **{name: getattr(config, name) for name in DATA_OPTIONS},
                           "out": str(run_dir), "resume": False}
    base.update({"soup": report, "train_images": len(train_images), "val_images": len(val_images),
                 **data_record(config, all_images)})
    write_json(run_dir / "config.json", base)
    write_text(run_dir / "summary.txt", model_summary(soup) + "\n")
    evaluation = finish_run(run_dir, soup, val_images, []).get("evaluation")
    # The model last: it is what marks the folder as holding one. Written first, a soup stopped
    # in the report (Ctrl-C, a full disk) left best.keras alone, and the retry was refused.
    save_model(soup, run_dir / "best.keras")
    if evaluation is not None and report.get("recalibrated_on"):
        augmented = "" if config.augment in (None, "none") else f" ({config.augment} augmentation)"
        say(f"{evaluation.accuracy:.4f}  soup, BatchNorm statistics re-estimated on {len(train_images)} training images"
            f"{augmented}")
    return {"run_dir": run_dir, **report, "accuracy": None if evaluation is None else evaluation.accuracy}
