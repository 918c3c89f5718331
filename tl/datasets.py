"""Datasets: name -> loader of a list of labelled items, a seeded split, and tf.data streams.

A :class:`Data` is a list of items (labels, stable keys) plus a reader that turns one item
into an RGB uint8 array. Pipelines stream items through ``tf.data`` (read, batch,
prefetch); resizing to the model's input size happens inside the model, so a resized copy
of the dataset is never held in memory.
"""

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tl.errors import DataError, DownloadError
from tl.images import IMAGE_EXTENSIONS, ImageError, decode_image

SYNTHETIC_SHAPES = ("disk", "square", "triangle", "ring", "cross",
                    "stripes", "checker", "diamond", "frame", "dots")
SYNTHETIC_SIZE = 32
SYNTHETIC_DEFAULT_PER_CLASS = 200
JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "__macosx"}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


@dataclass
class Data:
    """A labelled image collection, already capped and split.

    Attributes:
        name: dataset name.
        class_names: one name per class, index = label.
        labels: ``(N,)`` int class index of each item.
        keys: a stable identity per item (relative path, or generator index).
        fingerprint: hash of where the items come from and which items were selected.
        image_size: the side of the square images :meth:`read` returns, or ``None`` when
            sizes vary (files), in which case pipelines resize each image to batch them.
        reader: item index -> RGB uint8 array.
        splits: "train", "val", "test" -> item indices.
        skipped: ``(key, reason)`` for files left out (not images, unreadable).
    """

    name: str
    class_names: list
    labels: np.ndarray
    keys: list
    fingerprint: str
    image_size: int | None
    reader: Callable
    splits: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def read(self, index: int) -> np.ndarray:
        """Return item ``index`` as an RGB uint8 array."""
        return self.reader(int(index))

    def read_batch(self, indices) -> np.ndarray:
        """Return several same-size items as one ``(B, H, W, 3)`` uint8 array."""
        return np.stack([self.reader(int(i)) for i in indices])

    def counts(self, split: str | None = None) -> dict:
        """Images per class, for the whole data or one split."""
        labels = self.labels if split is None else self.labels[self.splits[split]]
        found = np.bincount(labels, minlength=self.num_classes)
        return {name: int(n) for name, n in zip(self.class_names, found)}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    load: Callable
    needs_dir: bool
    downloads: bool
    description: str


# -- synthetic -------------------------------------------------------------------------

def synthetic_image(seed: int, index: int, label: int, size: int = SYNTHETIC_SIZE) -> np.ndarray:
    """Draw item ``index`` of the synthetic dataset: a shape of class ``label`` on noise.

    Deterministic in ``(seed, index)``. Position, size, colours, a background gradient and
    pixel noise vary, so the task is learnable but not trivial.
    """
    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    r = rng.uniform(0.22, 0.36) * size
    dx, dy = xx - cx, yy - cy
    mask = _shape_mask(SYNTHETIC_SHAPES[label], dx, dy, r, rng, size)

    background = rng.uniform(0, 255, 3)
    foreground = rng.uniform(0, 255, 3)
    while np.linalg.norm(foreground - background) < 110:
        foreground = rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy) / size * rng.uniform(-40, 40)
    image = np.where(mask[..., None], foreground, background + gradient[..., None])
    image += rng.normal(0, 12, image.shape)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _shape_mask(shape, dx, dy, r, rng, size):
    dist = np.hypot(dx, dy)
    box = np.maximum(np.abs(dx), np.abs(dy))
    if shape == "disk":
        return dist <= r
    if shape == "square":
        return box <= 0.85 * r
    if shape == "triangle":
        inside = (dy >= -r) & (dy <= 0.7 * r)
        return inside & (np.abs(dx) <= (dy + r) / 1.7)
    if shape == "ring":
        return (dist <= r) & (dist >= 0.6 * r)
    if shape == "cross":
        arm = 0.3 * r
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    if shape == "stripes":
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(0.35, 0.5) * r
        phase = (np.cos(theta) * dx + np.sin(theta) * dy) / period
        return (box <= r) & (np.floor(phase) % 2 == 0)
    if shape == "checker":
        cell = rng.uniform(0.4, 0.6) * r
        return (box <= r) & ((np.floor(dx / cell) + np.floor(dy / cell)) % 2 == 0)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.1 * r
    if shape == "frame":
        return (box <= r) & (box >= 0.6 * r)
    if shape == "dots":
        mask = np.zeros(dx.shape, dtype=bool)
        for _ in range(3):
            ox, oy = rng.uniform(-0.7, 0.7, 2) * r
            mask |= np.hypot(dx - ox, dy - oy) <= 0.3 * r
        return mask
    raise ValueError(shape)


def _load_synthetic(cfg) -> Data:
    n_classes = cfg.synthetic_classes
    per_class = cfg.samples_per_class or SYNTHETIC_DEFAULT_PER_CLASS
    labels = np.arange(n_classes * per_class) % n_classes
    seed = cfg.seed

    def reader(index):
        return synthetic_image(seed, index, int(labels[index]))

    identity = f"synthetic:v1:classes={n_classes}:per_class={per_class}:seed={seed}"
    return Data(
        name="synthetic",
        class_names=list(SYNTHETIC_SHAPES[:n_classes]),
        labels=labels,
        keys=[f"synthetic/{i}" for i in range(len(labels))],
        fingerprint=_hash([identity]),
        image_size=SYNTHETIC_SIZE,
        reader=reader,
    )


# -- folder ----------------------------------------------------------------------------

LAYOUT_HINT = ("one sub-folder per class with its images inside, for example "
               "data/cats/1.jpg and data/dogs/2.jpg")


def scan_folder(root) -> tuple[list, list, list, list]:
    """List a folder of class sub-folders.

    Returns:
        ``(class_names, paths, labels, skipped)`` where ``skipped`` holds
        ``(relative path, reason)`` for junk and files that are not readable images.

    Raises:
        DataError: the folder is missing, has no or one class, or a class has no images.
    """
    from PIL import Image

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"Data folder '{root}' does not exist; give a folder with {LAYOUT_HINT}.")
    class_dirs = sorted(
        p for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name.lower() not in JUNK_NAMES
    )
    if not class_dirs:
        raise DataError(f"Data folder '{root}' has no class sub-folders; it needs {LAYOUT_HINT}.")
    if len(class_dirs) == 1:
        raise DataError(
            f"Data folder '{root}' has only one class ('{class_dirs[0].name}'); a classifier "
            f"needs at least two, as {LAYOUT_HINT}."
        )
    paths, labels, skipped = [], [], []
    for label, class_dir in enumerate(class_dirs):
        found = 0
        for path in _walk_files(class_dir):
            rel = str(path.relative_to(root))
            if path.name.lower() in JUNK_NAMES or path.name.startswith("."):
                skipped.append((rel, "junk file"))
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append((rel, "not an image file"))
                continue
            try:
                with Image.open(path) as image:
                    image.size  # reads the header only
            except Exception:
                skipped.append((rel, "not a readable image"))
                continue
            paths.append(path)
            labels.append(label)
            found += 1
        if not found:
            raise DataError(
                f"Class folder '{class_dir.name}' has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images to it or remove it."
            )
    return [p.name for p in class_dirs], paths, labels, skipped


def _walk_files(folder: Path):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d.lower() not in JUNK_NAMES and not d.startswith("."))
        for filename in sorted(filenames):
            yield Path(dirpath) / filename


def _load_folder(cfg) -> Data:
    root = Path(cfg.data_dir).expanduser()
    class_names, paths, labels, skipped = scan_folder(root)
    draft = cfg.image_size

    def reader(index):
        try:
            return decode_image(paths[index], name=str(paths[index]), draft_size=draft)
        except ImageError:
            # Keep rows aligned with labels: a file that broke after the scan reads as grey.
            return np.full((draft, draft, 3), 128, dtype=np.uint8)

    stats = []
    for path in paths:
        st = path.stat()
        stats.append(f"{path.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}")
    return Data(
        name="folder",
        class_names=class_names,
        labels=np.asarray(labels, dtype=np.int64),
        keys=[str(p.relative_to(root)) for p in paths],
        fingerprint=_hash(["folder:v1"] + stats),
        image_size=None,
        reader=reader,
        skipped=skipped,
    )


# -- cifar10 ---------------------------------------------------------------------------

def _load_cifar10(cfg) -> Data:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:
        raise download_error("CIFAR-10", "datasets", str(exc)) from None
    images = np.concatenate([x_train, x_test])
    labels = np.concatenate([y_train, y_test]).reshape(-1).astype(np.int64)
    return Data(
        name="cifar10",
        class_names=list(CIFAR10_CLASSES),
        labels=labels,
        keys=[f"cifar10/{i}" for i in range(len(labels))],
        fingerprint=_hash(["cifar10:v1"]),
        image_size=32,
        reader=lambda index: images[index],
    )


def download_error(what: str, subdir: str, message: str) -> DownloadError:
    """One sentence for a failed Keras download: what, from where, where to put it."""
    from tl.downloads import failed_url, keras_home

    url = failed_url(message) or "its source"
    return DownloadError(
        f"Could not download {what} from {url} (no internet connection?); download it by "
        f"hand into {Path(keras_home()) / subdir} or pick another dataset."
    )


DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec("synthetic", _load_synthetic, False, False,
                    "Generated shapes on noisy backgrounds (works offline; 32x32 pixels)."),
        DatasetSpec("folder", _load_folder, True, False,
                    "Your own images: a folder with one sub-folder per class."),
        DatasetSpec("cifar10", _load_cifar10, False, True,
                    "CIFAR-10: 60,000 32x32 photos in 10 classes (downloads 163 MB once)."),
    )
}

DEFAULT_DATASET = "synthetic"


# -- selection and split ---------------------------------------------------------------

def load(cfg) -> Data:
    """Load the dataset a config names, cap it per class and split it (seeded, stratified).

    Raises:
        DataError: the data cannot be used (message says what a valid layout is).
        DownloadError: a download is needed and failed.
    """
    data = DATASETS[cfg.dataset].load(cfg)
    data = _cap(data, cfg.samples_per_class, cfg.seed)
    data.splits = stratified_split(data.labels, data.class_names, cfg.val_fraction,
                                   cfg.test_fraction, cfg.seed)
    return data


def _cap(data: Data, per_class: int, seed: int) -> Data:
    """Keep at most ``per_class`` items of each class (a seeded choice), in item order."""
    if not per_class or np.bincount(data.labels).max() <= per_class:
        return data
    rng = np.random.default_rng([seed, 1])
    keep = []
    for label in range(data.num_classes):
        members = np.flatnonzero(data.labels == label)
        keep.append(np.sort(rng.permutation(members)[:per_class]))
    keep = np.sort(np.concatenate(keep))
    reader = data.reader
    return Data(
        name=data.name,
        class_names=data.class_names,
        labels=data.labels[keep],
        keys=[data.keys[i] for i in keep],
        fingerprint=_hash([data.fingerprint, "cap"] + [str(i) for i in keep]),
        image_size=data.image_size,
        reader=lambda index: reader(int(keep[index])),
        skipped=data.skipped,
    )


def stratified_split(labels, class_names, val_fraction, test_fraction, seed) -> dict:
    """Split item indices per class into train/val/test, the same for the same seed.

    Every class gets at least one item in each split.

    Raises:
        DataError: a class has fewer than 3 items.
    """
    rng = np.random.default_rng([seed, 2])
    parts = {"train": [], "val": [], "test": []}
    for label, name in enumerate(class_names):
        members = rng.permutation(np.flatnonzero(labels == label))
        n = len(members)
        n_test = max(1, round(n * test_fraction))
        n_val = max(1, round(n * val_fraction))
        if n - n_test - n_val < 1:
            raise DataError(
                f"Class '{name}' has only {n} image(s); each class needs at least 3 (one each "
                "for training, validation and test), so add images or remove the class."
            )
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test:n_test + n_val])
        parts["train"].append(members[n_test + n_val:])
    return {split: np.sort(np.concatenate(chunks)) for split, chunks in parts.items()}


def balanced_class_weights(labels, num_classes) -> np.ndarray:
    """Weights ``n / (k * n_c)`` so every class contributes equally to the loss."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1))
    return weights.astype(np.float32)


def _hash(parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


# -- tf.data pipelines -----------------------------------------------------------------

def image_pipeline(data: Data, indices, batch_size: int, *, image_size: int, shuffle: bool = False,
                   seed: int = 0, augment: bool = False, class_weights=None):
    """Stream items ``indices`` as ``(images, labels[, sample_weights])`` batches.

    Images stay uint8 at their stored size (the model resizes them) unless the items vary
    in size, in which case each is resized to ``image_size`` so they can be batched.
    """
    import tensorflow as tf

    indices = np.asarray(indices, dtype=np.int64)
    labels = data.labels[indices].astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((indices, labels))
    if shuffle:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    autotune = tf.data.AUTOTUNE

    if data.image_size is None:
        def read_one(index):
            image = tf.numpy_function(data.read, [index], tf.uint8, stateful=False)
            image.set_shape([None, None, 3])
            image = tf.image.resize(image, (image_size, image_size), antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

        ds = ds.map(lambda i, y: (read_one(i), y), num_parallel_calls=autotune)
        ds = ds.batch(batch_size)
    else:
        side = data.image_size

        def read_many(batch_indices):
            images = tf.numpy_function(data.read_batch, [batch_indices], tf.uint8, stateful=False)
            images.set_shape([None, side, side, 3])
            return images

        ds = ds.batch(batch_size).map(lambda i, y: (read_many(i), y), num_parallel_calls=autotune)

    if augment:
        augmenter = make_augmenter(seed)
        ds = ds.map(lambda x, y: (augmenter(tf.cast(x, tf.float32), training=True), y),
                    num_parallel_calls=autotune)
    if class_weights is not None:
        table = tf.constant(np.asarray(class_weights, dtype=np.float32))
        ds = ds.map(lambda x, y: (x, y, tf.gather(table, y)))
    return ds.prefetch(autotune)


def make_augmenter(seed: int = 0):
    """Random flips, small rotations, zooms and shifts, applied in the input pipeline.

    They run in ``tf.data`` rather than inside the model, so the saved model holds no
    training-only layers.
    """
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1),
            layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
            layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed + 3),
        ],
        name="augment",
    )
