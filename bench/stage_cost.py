"""Where a model's training time goes: CPU milliseconds per image, stage by stage.

The model is cut after the last layer of each feature-map size (48x48, 24x24, ...), a small
head (global average pooling -> 7 logits) is put on each cut, and each cut model is trained for
a few steps on random faces, as in `bench/zoo_cost.py`. A stage's cost is the difference
between its cut and the previous one, next to its share of the multiply-adds, so a stage that
runs far below the others' speed stands out.

    PYTHONPATH=. python bench/stage_cost.py --model resnet18 [--steps 4] [--batch-size 64] [--plain-conv]

`--plain-conv` swaps keras-fer's `ForwardGradConv2D` layers back to Keras' `Conv2D` (same
weights), to measure what the faster input gradient saves.

Ends with `RESULT <model>_<cut>_cpu_ms=... ...` (CPU milliseconds per training image, per stage).
"""

import argparse
import os

from zoo_cost import fit_cost, random_faces  # bench/ is the script's folder, first on sys.path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def stage_cuts(model):
    """Names of the last layer of each feature-map size, in layer order (padding layers skipped)."""
    from keras import layers

    last = {}
    for layer in model.layers:
        shape = getattr(layer, "output", None) is not None and layer.output.shape
        if not shape or len(shape) != 4 or isinstance(layer, (layers.ZeroPadding2D, layers.InputLayer)):
            continue
        last[tuple(shape[1:3])] = layer.name
    order = [layer.name for layer in model.layers]
    return sorted(set(last.values()), key=order.index)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="a registered model (default resnet18)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per cut (default 4)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    parser.add_argument("--plain-conv", action="store_true", help="use Keras' Conv2D for ForwardGradConv2D layers")
    args = parser.parse_args()

    import keras
    from keras import layers

    from keras_fer.models import build_model, count_flops
    from keras_fer.training import TrainConfig, compile_model

    keras.utils.set_random_seed(0)
    full = build_model(args.model, preprocessing={"normalize": "unit"})
    if args.plain_conv:
        from keras_fer.models.layers import ForwardGradConv2D

        def plain(layer):
            if isinstance(layer, ForwardGradConv2D):
                return layers.Conv2D.from_config(layer.get_config())
            return layer.__class__.from_config(layer.get_config())

        full = keras.models.clone_model(full, clone_function=plain)
        print(f"plain Conv2D: {sum(isinstance(layer, ForwardGradConv2D) for layer in full.layers)} "
              "ForwardGradConv2D left")
    faces, labels = random_faces(args.batch_size, args.steps)
    print(f"{'cut after':<16}{'map':>12}{'stage M MACs':>14}{'stage CPU ms/img':>18}{'GFLOP/s':>9}")
    previous_ms = previous_macs = 0.0
    results = {}
    for cut in stage_cuts(full):
        output = full.get_layer(cut).output
        head = layers.Dense(7, name="bench_logits")(layers.GlobalAveragePooling2D(name="bench_pool")(output))
        model = keras.Model(full.input, head)
        compile_model(model, "adam", 1e-4, TrainConfig())
        cpu_ms, _ = fit_cost(model, faces, labels, args.batch_size)
        macs = count_flops(model) / 2 - 7 * int(output.shape[-1])  # without the bench head
        stage_ms, stage_macs = cpu_ms - previous_ms, macs - previous_macs
        # Training is ~3x the forward multiply-adds (forward, input gradient, weight gradient).
        rate = 2 * 3 * stage_macs / (stage_ms / 1000) / 1e9 if stage_ms > 0 else float("nan")
        shape = "x".join(str(size) for size in output.shape[1:])
        print(f"{cut:<16}{shape:>12}{stage_macs / 1e6:>14.1f}{stage_ms:>18.2f}{rate:>9.1f}", flush=True)
        results[cut] = stage_ms
        previous_ms, previous_macs = cpu_ms, macs
    print(f"total {previous_ms:.2f} CPU-ms per training image for {previous_macs / 1e6:.1f} M MACs")
    print("RESULT " + " ".join(f"{args.model}_{cut}_cpu_ms={value:.2f}" for cut, value in results.items()))


if __name__ == "__main__":
    main()
