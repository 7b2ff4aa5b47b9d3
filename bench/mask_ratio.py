"""How well each explanation method points at where the expression lives, on the demo faces.

The demo faces carry their class only in the eyes, brows and mouth, and `synthetic.generate`
returns masks of those regions. A small CNN (tests/test_explain.py's `small_cnn`: 3 conv layers
16/32/64) is trained for 8 epochs on 840 faces, and each method's maps of 140 held-out faces are
scored by `explain.mask_ratio` = (share of the map's mass inside the masks) / (their share of the
area): 1 is no better than uniform. The same setup as the tests' bounds, with every method and layer.

    PYTHONPATH=. python bench/mask_ratio.py [--faces 140] [--seed 0]

Ends with `RESULT accuracy=... saliency=... smoothgrad=... gradcampp_conv3_act=... layercam_conv3_act=...
scorecam_conv3_act=... gradcam_conv3=... ...` (Grad-CAM++'s, LayerCAM's and Score-CAM's default layer
is the rectified `conv3_act`).
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=140, help="held-out faces scored (default 140, at most 280)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and batches (default 0)")
    args = parser.parse_args(argv)

    import keras

    from keras_fer import explain, synthetic

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_explain import small_cnn

    keras.utils.set_random_seed(args.seed)
    demo = synthetic.generate(1120, seed=1)
    pixels, labels = demo.images.pixels.astype("float32"), demo.images.labels
    model = small_cnn()
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(pixels[:840], labels[:840], batch_size=32, epochs=8, verbose=0)
    faces, masks = pixels[840:840 + args.faces], demo.masks[840:840 + args.faces]
    results = {"accuracy": float(model.evaluate(pixels[840:], labels[840:], verbose=0)[1])}
    results["saliency"] = explain.mask_ratio(explain.saliency(model, faces), masks)
    results["smoothgrad"] = explain.mask_ratio(explain.smoothgrad(model, faces, samples=25), masks)
    results["gradcampp_conv3_act"] = explain.mask_ratio(explain.grad_cam(model, faces, plus_plus=True), masks)
    for layer in ("conv3", "conv2", "conv1"):
        results[f"layercam_{layer}_act"] = explain.mask_ratio(explain.layer_cam(model, faces, f"{layer}_act"), masks)
        results[f"scorecam_{layer}_act"] = explain.mask_ratio(explain.score_cam(model, faces, f"{layer}_act"), masks)
        results[f"gradcam_{layer}"] = explain.mask_ratio(explain.grad_cam(model, faces, layer), masks)
        results[f"gradcampp_{layer}"] = explain.mask_ratio(explain.grad_cam(model, faces, layer, plus_plus=True),
                                                           masks)
    for name, value in results.items():
        print(f"{name:>20}  {value:.2f}")
    print("RESULT " + " ".join(f"{name}={value:.2f}" for name, value in results.items()))


if __name__ == "__main__":
    main()
