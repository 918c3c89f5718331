"""The default head on cached features against the best the same features allow.

    python bench/head_convergence.py [--per-class 40]

For three real-image tasks (scikit-learn's digit scans, scikit-image's LFW faces vs
non-faces and crops of its brick/grass/gravel photos; at most ``--per-class`` images per
class, written as a folder of PNG files), one ``python -m tl train``-equivalent run per
strategy (feature_extraction, earlier_layer) at every default (EfficientNet-Lite0 with
ImageNet weights, 224 px, the default head), then on the very same cached features and split:

- scikit-learn's LogisticRegression (standardised, L-BFGS, default C): the reference;
- what the head training did before it was fitted exactly: a Dense softmax on the raw
  features, Adam 1e-3, batch 32, for 5 epochs (the old default) and for 30.

Prints the test accuracy of each and the run's head-fit time.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_folder(images, labels, per_class: int) -> Path:
    from PIL import Image

    root = Path(tempfile.mkdtemp(prefix="head-bench-"))
    for label in np.unique(labels):
        folder = root / f"class_{label}"
        folder.mkdir()
        for i, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            Image.fromarray(images[index]).save(folder / f"{i:03d}.png")
    return root


def cached_split(run, runs_dir):
    from tl import datasets, features
    from tl.paths import cache_root

    key = next(e["key"] for e in run.events()[0] if e["type"] == "features")
    store = features.lookup(cache_root(runs_dir), key)
    data = datasets.load(run.config)
    train, test = data.splits["train"], data.splits["test"]
    return store.read(train), data.labels[train], store.read(test), data.labels[test]


def logistic_regression(x_train, y_train, x_test, y_test) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(max_iter=1000).fit(scaler.transform(x_train), y_train)
    return float(model.score(scaler.transform(x_test), y_test))


def old_head(x_train, y_train, x_test, y_test, epochs: int) -> float:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((x_train.shape[1],)), keras.layers.Dropout(0.3),
                              keras.layers.Dense(int(y_train.max()) + 1, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=0)
    return float(model.evaluate(x_test, y_test, verbose=0)[1])


def main(argv=None) -> None:
    from lite_features import tasks
    from tl import training
    from tl.config import RunConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=40)
    args = parser.parse_args(argv)
    runs_dir = tempfile.mkdtemp(prefix="head-bench-runs-")
    print(f"{'task':30} {'strategy':18} {'test n':>6} {'tl run':>7} {'LR ref':>7} {'Adam 5':>7} {'Adam 30':>8} "
          f"{'fit s':>6}  how the head ended")
    for task, (images, labels) in tasks().items():
        root = write_folder(images, labels, args.per_class)
        for strategy in ("feature_extraction", "earlier_layer"):
            run = training.prepare(RunConfig(dataset="folder", data_dir=str(root), strategy=strategy), runs_dir)
            training.execute(run, runs_dir)
            metrics = run.metrics
            split = cached_split(run, runs_dir)
            (report,) = metrics["convergence"]
            print(f"{task:30} {strategy:18} {metrics['test_size']:6d} {metrics['test_accuracy']:7.3f} "
                  f"{logistic_regression(*split):7.3f} {old_head(*split, 5):7.3f} {old_head(*split, 30):8.3f} "
                  f"{metrics['train_seconds'] - metrics['extract_seconds']:6.2f}  {report['summary']}", flush=True)


if __name__ == "__main__":
    main()
