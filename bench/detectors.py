"""How well each face detector finds FER2013 faces, and how its boxes frame them.

Each of `--faces` FER2013 training faces (a seeded random draw) is enlarged 4x (cubic, 192 px)
and set in a 320x320 frame with its edges replicated outward, so the right box is known: the
original 48x48 frame. For each detector (`faces.DETECTORS`):

- found: share of faces with a box overlapping the true one (IoU > 0.3; the best box counts);
- IoU: mean overlap of those boxes with the true one;
- scale: median (true side / box side) - what a box must still be multiplied by to frame the
  face as FER2013 does (1 is right; `faces.MTCNN_BOX_SCALE` is its earlier value times the scale
  measured with it: 1.0 x 0.950 with `--faces 200 --seed 0`);
- accuracy: the packaged model (ten-crop) on the crops of the found boxes, next to its accuracy
  on the same faces' original 48x48 images - how much the framing costs (the draw is from the
  training data, which the packaged model was trained on, so only the difference means something);
- ms/photo: wall time per detection, one photo a call; for MTCNN also `batched_ms`, all the
  photos (one size) through `faces.face_boxes_each`, as video frames go, which must give the
  same boxes.

    PYTHONPATH=. python bench/detectors.py --data ../shared/fer2013 [--faces 400] [--seed 0]

Ends with `RESULT haar_found=... haar_iou=... haar_scale=... haar_drop=... mtcnn_found=... ...`
(drop = accuracy on the originals minus accuracy on the crops, in points).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

ENLARGE, FRAME = 4, 320


def photo(face):
    """The face enlarged and framed; returns (photo, true box)."""
    import cv2

    side = 48 * ENLARGE
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    margin = (FRAME - side) // 2
    framed = cv2.copyMakeBorder(big, margin, FRAME - side - margin, margin, FRAME - side - margin, cv2.BORDER_REPLICATE)
    return framed, (margin, margin, side, side)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="FER2013 train CSV or its folder (default $FER_DATA)")
    parser.add_argument("--faces", type=int, default=400, help="faces drawn (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    parser.add_argument("--detectors", default="haar,mtcnn", help="comma-separated (default haar,mtcnn)")
    args = parser.parse_args(argv)

    from keras_fer import data, faces
    from keras_fer.inference import load_predictor, predict_proba
    from keras_fer.loading import default_model_path

    images = data.read(data.resolve_data_path(args.data))
    if images.labels is None:
        parser.error("the data needs labels")
    chosen = np.sort(np.random.default_rng(args.seed).choice(len(images), min(args.faces, len(images)), replace=False))
    pixels, labels = images.pixels[chosen], images.labels[chosen]
    predictors = [load_predictor(default_model_path())]
    original = predict_proba(predictors, pixels, "crops").argmax(axis=1) == labels
    framed = [photo(face) for face in pixels[:, :, :, 0]]  # (photo, true box)
    photos = [image for image, _ in framed]
    results = {}
    for name in args.detectors.split(","):
        faces.detect_faces(photos[0], detector=name)  # load and trace once
        found, ious, ratios, crops, kept, seconds, single = 0, [], [], [], [], 0.0, []
        for index, (image, truth) in enumerate(framed):
            start = time.perf_counter()
            boxes = faces.detect_faces(image, detector=name)
            seconds += time.perf_counter() - start
            single.append(boxes)
            best = max(boxes, key=lambda box: faces.iou(box, truth), default=None)
            if best is None or faces.iou(best, truth) <= 0.3:
                continue
            found += 1
            ious.append(faces.iou(best, truth))
            ratios.append(truth[2] / max(best[2], best[3]))
            crops.append(faces.crop_faces(image, [best])[0])
            kept.append(index)
        if name == "mtcnn":
            start = time.perf_counter()
            batched = faces.face_boxes_each(photos, detector=name)
            batched_ms = 1000 * (time.perf_counter() - start) / len(photos)
            print(f"{name:>6}: batched {batched_ms:.0f} ms/photo, same boxes as one by one: {batched == single}")
        if not found:
            print(f"{name:>6}: found no face of {len(pixels)}")
            results[name] = dict(found=0.0, ms=1000 * seconds / len(pixels))
            continue
        kept = np.asarray(kept, dtype=int)
        right = predict_proba(predictors, np.stack(crops), "crops").argmax(axis=1) == labels[kept]
        before, after = float(np.mean(original[kept])), float(np.mean(right))
        results[name] = dict(found=found / len(pixels), iou=float(np.mean(ious)), scale=float(np.median(ratios)),
                             drop=100 * (before - after), ms=1000 * seconds / len(pixels))
        if name == "mtcnn":
            results[name]["batched_ms"] = batched_ms
        print(f"{name:>6}: found {found}/{len(pixels)} ({results[name]['found']:.1%}), IoU {results[name]['iou']:.2f}, "
              f"scale {results[name]['scale']:.3f}, accuracy on originals {before:.3f} -> crops {after:.3f}, "
              f"{results[name]['ms']:.0f} ms/photo")
    print("RESULT " + " ".join(f"{name}_{key}={value:.3f}" for name, values in results.items()
                               for key, value in values.items()))


if __name__ == "__main__":
    main()
