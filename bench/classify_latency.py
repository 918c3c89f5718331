"""Per-image latency of classifying with both heads, against one bare backbone pass.

    python bench/classify_latency.py [--backbone resnet50] [--size 224] [--repeats 5]

Trains a tiny ``feature_extraction`` run (so the shared path applies), then times, on real
photographs from scikit-image and scikit-learn, image by image and in alternating order:

(a) one forward pass of the backbone alone (resize + preprocessing + backbone, as a compiled
    Keras model), and
(b) ``Predictor.predict``: the shared backbone pass plus both heads, top-k selection and
    ImageNet label decoding, i.e. everything the Classify page and ``tl predict`` do per
    image after decoding the file.

It also prints (c) the same with the two models run separately (``share=False``), for
reference. Offline, the ImageNet top has random weights: the same layers and arithmetic,
so the same time. Target: median (b) / median (a) <= 1.3.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def seed_keras_home() -> None:
    """Offline, ImageNet labels need Keras's class index: use the shared copy if there is one."""
    import shutil

    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    if (home / "models" / "imagenet_class_index.json").is_file():
        return
    for shared in (REPO.parent / "shared" / "keras", REPO.parent.parent / "shared" / "keras"):
        if (shared / "models" / "imagenet_class_index.json").is_file():
            copy = Path(tempfile.mkdtemp(prefix="keras-home-"))
            shutil.copytree(shared, copy, dirs_exist_ok=True)
            os.environ["KERAS_HOME"] = str(copy)
            return


def photos() -> list:
    import skimage
    import sklearn.datasets

    from tl.images import decode_image
    from tl.predict import DRAFT_SIZE

    skdata = Path(skimage.data.__file__).parent
    files = [Path(sklearn.datasets.__file__).parent / "images" / name for name in ("china.jpg", "flower.jpg")]
    files += [skdata / name for name in ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")]
    return [decode_image(path.read_bytes(), name=path.name, draft_size=DRAFT_SIZE) for path in files]


def bare_backbone(backbone: str, size: int):
    import keras

    from tl.backbones import BACKBONES, build_backbone, preprocess_layer

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Resizing(size, size, interpolation="bilinear", antialias=True)(inputs)
    x = preprocess_layer(BACKBONES[backbone].preprocess)(x)
    return keras.Model(inputs, build_backbone(backbone, size)(x))


def time_each(fn, images) -> list:
    seconds = []
    for image in images:
        started = time.perf_counter()
        fn(image)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    seed_keras_home()

    import numpy as np

    from tl import predict, training
    from tl.config import RunConfig

    runs_dir = tempfile.mkdtemp(prefix="classify-bench-")
    cfg = RunConfig(dataset="synthetic", backbone=args.backbone, weights="none", strategy="feature_extraction",
                    head="linear", image_size=args.size, samples_per_class=8, synthetic_classes=4,
                    epochs=1, batch_size=32)
    run = training.prepare(cfg, runs_dir)
    training.execute(run, runs_dir)
    shared = predict.Predictor(run, imagenet_weights=None)
    separate = predict.Predictor(run, imagenet_weights=None, share=False)
    assert shared.shared and not separate.shared
    assert shared.predict(photos()[0]).imagenet is not None, "ImageNet labels could not be decoded"
    bare = bare_backbone(args.backbone, args.size)
    images = photos()

    def forward(image):
        bare.predict_on_batch(np.asarray(image, dtype=np.float32)[None])

    sides = {"a": forward, "b": lambda image: shared.predict(image, 5),
             "c": lambda image: separate.predict(image, 5)}
    for fn in sides.values():  # trace every input shape once
        time_each(fn, images)
        time_each(fn, images)
    found = {name: [] for name in sides}
    ratios = []
    for repeat in range(args.repeats):
        order = ["a", "b", "c"] if repeat % 2 == 0 else ["c", "b", "a"]
        this = {}
        for name in order:
            this[name] = time_each(sides[name], images)
            found[name] += this[name]
        ratios += [b / a for a, b in zip(this["a"], this["b"])]

    def ms(values):
        return f"{statistics.median(values) * 1000:7.1f} ms"

    print(f"{args.backbone} at {args.size}px, {len(images)} photos x {args.repeats} repeats, "
          f"{os.cpu_count()} CPU cores")
    print(f"(a) one backbone forward pass          median {ms(found['a'])}")
    print(f"(b) both heads, shared backbone pass   median {ms(found['b'])}")
    print(f"(c) both heads, two separate models    median {ms(found['c'])}")
    print(f"(b)/(a) ratio of medians: {statistics.median(found['b']) / statistics.median(found['a']):.3f}; "
          f"median of per-image paired ratios: {statistics.median(ratios):.3f} (target <= 1.3)")
    print(f"(c)/(a) ratio of medians: {statistics.median(found['c']) / statistics.median(found['a']):.3f}")


if __name__ == "__main__":
    main()
