"""How good EfficientNet-Lite0's ImageNet features are on real images with few labels, and
how fast Lite0 is beside ResNet-50 on this CPU.

    python bench/lite_features.py [--per-class 5,10,20] [--repeats 3] [--speed-images 256]

1. Linear probes. Real images shipped with scikit-learn and scikit-image: the 8x8 digit
   scans (10 classes) and scikit-image's LFW subset (25x25 faces vs non-faces), enlarged
   to 224 px inside the model as the app does, and 96-pixel crops of scikit-image's brick,
   grass and gravel photos (3 classes, 60 each). For N training images per class (the rest of
   a fixed, stratified 40% test split is the test set), a logistic regression (standardised
   features, L-BFGS, default C) on the pooled features of:
   - Lite0 with its ImageNet weights, last layer (1280-d) and the earlier cut the
     ``earlier_layer`` strategy uses (block6a_expand_activation, 672-d);
   - the same architecture with random weights (last layer);
   and beside them ``small_cnn`` trained from scratch on the same images at 32 px (all
   layers, Adam 1e-3, 300 steps of 32 images). Mean test accuracy over ``--repeats``
   draws of the training images.
2. Throughput: feature extraction images/s of Lite0 and ResNet-50 at 224 px (random
   weights: the same arithmetic), batch 32, measured alternately, median of 3.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tasks() -> dict:
    """name -> (uint8 RGB images, labels)."""
    import skimage.data
    from sklearn.datasets import load_digits

    digits = load_digits()
    scans = (digits.images / 16 * 255).round().astype(np.uint8)
    faces = (skimage.data.lfw_subset() * 255).round().astype(np.uint8)
    face_labels = np.array([1] * 100 + [0] * 100)  # the subset holds 100 faces, then 100 non-faces
    textures, texture_labels = texture_crops()
    return {"digits (10 classes)": (np.repeat(scans[..., None], 3, -1), digits.target),
            "lfw faces vs not (2)": (np.repeat(faces[..., None], 3, -1), face_labels),
            "brick/grass/gravel crops (3)": (textures, texture_labels)}


def texture_crops(per_class: int = 60, side: int = 96):
    """Random ``side``-pixel crops of scikit-image's brick, grass and gravel photos."""
    import skimage.data

    rng = np.random.default_rng(0)
    images, labels = [], []
    for label, photo in enumerate((skimage.data.brick(), skimage.data.grass(), skimage.data.gravel())):
        for _ in range(per_class):
            y, x = rng.integers(0, np.array(photo.shape[:2]) - side)
            images.append(np.repeat(photo[y:y + side, x:x + side, None], 3, -1))
            labels.append(label)
    return np.stack(images).astype(np.uint8), np.array(labels)


def pooled_features(backbone: str, weights, images, cut=None, size: int = 224) -> np.ndarray:
    import keras

    from tl.backbones import BACKBONES, build_backbone
    from tl.models import image_input

    inputs, x = image_input(size, BACKBONES[backbone].preprocess)
    trunk = build_backbone(backbone, size, weights=weights, cut=cut)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(trunk(x)))
    return model.predict(images.astype("float32"), batch_size=32, verbose=0)


def probe(features, labels, train, test) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features[train])
    classifier = LogisticRegression(max_iter=5000).fit(scaler.transform(features[train]), labels[train])
    return float(classifier.score(scaler.transform(features[test]), labels[test]))


def scratch_cnn(images, labels, train, test, seed: int) -> float:
    import keras

    from tl.config import RunConfig
    from tl.models import build

    keras.utils.set_random_seed(seed)
    cfg = RunConfig(backbone="small_cnn", weights="none", strategy="scratch", image_size=32)
    model = build(cfg, int(labels.max()) + 1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x, y = images[train].astype("float32"), labels[train]
    steps_per_epoch = max(1, int(np.ceil(len(x) / 32)))
    model.fit(x, y, batch_size=32, epochs=max(1, 300 // steps_per_epoch), verbose=0)
    return float(model.evaluate(images[test].astype("float32"), labels[test], verbose=0)[1])


def splits(labels, per_class: int, seed: int):
    """A fixed 40% test split (seed 0), and ``per_class`` training images per class drawn
    with ``seed`` from the rest."""
    fixed = np.random.default_rng(0)
    test, pool = [], []
    for c in np.unique(labels):
        members = fixed.permutation(np.flatnonzero(labels == c))
        cut = int(round(0.4 * len(members)))
        test.append(members[:cut])
        pool.append(members[cut:])
    rng = np.random.default_rng(seed + 1)
    train = [rng.permutation(p)[:per_class] for p in pool]
    return np.concatenate(train), np.concatenate(test)


def linear_probes(per_class_list, repeats: int) -> None:
    from tl.backbones import BACKBONES

    cut = BACKBONES["efficientnet_lite0"].earlier_cut
    for task, (images, labels) in tasks().items():
        features = {
            "Lite0 ImageNet, last layer": pooled_features("efficientnet_lite0", "imagenet", images),
            f"Lite0 ImageNet, {cut}": pooled_features("efficientnet_lite0", "imagenet", images, cut=cut),
            "Lite0 random weights, last layer": pooled_features("efficientnet_lite0", None, images),
        }
        print(f"\n{task}: {len(labels)} images; test accuracy, mean of {repeats} draws")
        print(f"{'features':42} " + " ".join(f"{n:>6}/cl" for n in per_class_list))
        rows = {name: [] for name in list(features) + ["small_cnn from scratch (32 px)"]}
        for n in per_class_list:
            draws = [splits(labels, n, seed) for seed in range(repeats)]
            for name, found in features.items():
                rows[name].append(np.mean([probe(found, labels, tr, te) for tr, te in draws]))
            rows["small_cnn from scratch (32 px)"].append(
                np.mean([scratch_cnn(images, labels, tr, te, seed) for seed, (tr, te) in enumerate(draws)]))
        for name, values in rows.items():
            print(f"{name:42} " + " ".join(f"{v:9.3f}" for v in values), flush=True)


def throughput(count: int) -> None:
    import keras

    from tl.backbones import BACKBONES, build_backbone
    from tl.models import image_input

    images = np.random.default_rng(0).integers(0, 256, (count, 224, 224, 3)).astype("float32")
    models = {}
    for name in ("efficientnet_lite0", "resnet50"):
        inputs, x = image_input(224, BACKBONES[name].preprocess)
        models[name] = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(build_backbone(name, 224)(x)))
        models[name].predict(images[:32], batch_size=32, verbose=0)  # trace once
    rates = {name: [] for name in models}
    for _ in range(3):
        for name, model in models.items():
            started = time.perf_counter()
            model.predict(images, batch_size=32, verbose=0)
            rates[name].append(count / (time.perf_counter() - started))
    lite, resnet = (statistics.median(rates[n]) for n in ("efficientnet_lite0", "resnet50"))
    ratios = [a / b for a, b in zip(rates["efficientnet_lite0"], rates["resnet50"])]
    print(f"\nfeature extraction at 224 px, batch 32, {count} images, {os.cpu_count()} CPU cores: "
          f"efficientnet_lite0 {lite:.1f} images/s, resnet50 {resnet:.1f} images/s; "
          f"median paired ratio {statistics.median(ratios):.2f}x")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", default="5,10,20")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--speed-images", type=int, default=256)
    args = parser.parse_args(argv)
    linear_probes([int(n) for n in args.per_class.split(",")], args.repeats)
    throughput(args.speed_images)


if __name__ == "__main__":
    main()
