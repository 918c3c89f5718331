"""Datasets: name -> loader of a list of labelled items, a seeded split, and tf.data streams.

A :class:`Data` is a list of items (labels, stable keys) plus a reader that turns one item
into an RGB uint8 array. Pipelines stream items through ``tf.data`` (read, batch,
prefetch); resizing to the model's input size happens inside the model, so a resized copy
of the dataset is never held in memory.
"""

import hashlib
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tl.errors import DataError, DownloadError
from tl.files import read_json, sha256_of
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
        content_hashes: a hash of each item's file bytes (folder datasets), to find
            identical images across splits (:func:`leakage`); ``None`` otherwise.
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
    content_hashes: list | None = None

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
    download: str | None = None  # key in DOWNLOADS for archives fetched with fetch()

    @property
    def card(self) -> dict | None:
        """Source, license, classes, image counts and citation, where known."""
        return CARDS.get(self.name)


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


@dataclass
class FolderScan:
    """What :func:`scan_folder_cached` found in a folder of class sub-folders.

    Attributes:
        class_names: sorted class folder names, index = label.
        files: relative path of each readable image.
        labels: class index of each image.
        hashes: sha256 (16 hex digits) of each image file's bytes.
        skipped: ``(relative path, reason)`` for junk and unreadable files.
    """

    class_names: list
    files: list
    labels: list
    hashes: list
    skipped: list


def is_junk(name: str) -> bool:
    """Whether a file or folder name is OS clutter or hidden (skipped in image folders)."""
    return name.lower() in JUNK_NAMES or name.startswith(".")


def scan_folder_cached(root, cache_dir=None) -> FolderScan:
    """List a folder of class sub-folders; the result is cached in a JSON file keyed by
    every file's path, size and modification time, so scanning an unchanged folder again
    reads no image.

    Args:
        root: the folder of class sub-folders.
        cache_dir: where the JSON files go (default: ``<cache root>/scans``).

    Raises:
        DataError: the folder is missing, has no or one class, or a class has no images.
    """
    root = Path(root).expanduser()
    class_dirs = _class_dirs(root)
    # Relative path strings, not Path objects, and a streamed key: at 20k files a list of
    # Paths alone costs about 10 MB.
    listing = [(label, [os.path.relpath(p, root) for p in _walk_files(class_dir)])
               for label, class_dir in enumerate(class_dirs)]
    key = hashlib.sha256(f"scan:v1:{root.resolve()}".encode())
    for label, files in listing:
        for rel in files:
            st = os.stat(os.path.join(root, rel))
            key.update(f"{label}|{rel}|{st.st_size}|{st.st_mtime_ns}\0".encode())
    cache_file = Path(cache_dir or _scan_cache_dir()) / f"{key.hexdigest()[:16]}.json"
    try:
        cached = read_json(cache_file)
    except (OSError, ValueError):  # a damaged cache file only costs a rescan
        cached = None
    if cached:
        return FolderScan(**cached)
    scan = _scan(root, class_dirs, listing)
    del listing
    _write_scan(cache_file, scan)
    return scan


def _write_scan(path: Path, scan: FolderScan) -> None:
    """Atomically write the scan as JSON, streamed to the file (no whole-text copy)."""
    import json
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(scan.__dict__, handle, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass  # a read-only cache only costs a rescan next time


def _class_dirs(root: Path) -> list:
    if not root.is_dir():
        raise DataError(f"Data folder '{root}' does not exist; give a folder with {LAYOUT_HINT}.")
    class_dirs = sorted(
        p for p in root.iterdir()
        if p.is_dir() and not is_junk(p.name)
    )
    if not class_dirs:
        raise DataError(f"Data folder '{root}' has no class sub-folders; it needs {LAYOUT_HINT}.")
    if len(class_dirs) == 1:
        raise DataError(
            f"Data folder '{root}' has only one class ('{class_dirs[0].name}'); a classifier "
            f"needs at least two, as {LAYOUT_HINT}."
        )
    return class_dirs


def _scan(root: Path, class_dirs, listing) -> FolderScan:
    from PIL import Image

    files, labels, hashes, skipped = [], [], [], []
    for label, rels in listing:
        found = 0
        for rel in rels:
            path = root / rel
            if is_junk(path.name):
                skipped.append((rel, "junk file"))
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append((rel, "not an image file"))
                continue
            try:
                data = path.read_bytes()
                with Image.open(io.BytesIO(data)) as image:
                    image.size  # parses the header only
            except Exception:
                skipped.append((rel, "not a readable image"))
                continue
            files.append(rel)
            labels.append(label)
            hashes.append(hashlib.sha256(data).hexdigest()[:16])
            found += 1
        if not found:
            raise DataError(
                f"Class folder '{class_dirs[label].name}' has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images to it or remove it."
            )
    return FolderScan([p.name for p in class_dirs], files, labels, hashes, skipped)


def _scan_cache_dir() -> Path:
    from tl.runs import cache_root

    return cache_root() / "scans"


def _walk_files(folder: Path):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
        for filename in sorted(filenames):
            yield os.path.join(dirpath, filename)


def _load_folder(cfg) -> Data:
    return folder_data("folder", cfg.data_dir, cfg.image_size)


def folder_data(name: str, root, image_size: int) -> Data:
    """A :class:`Data` over a folder of class sub-folders (scan cached, images read lazily)."""
    root = str(Path(root).expanduser())
    scan = scan_folder_cached(root)
    files = scan.files
    draft = image_size

    def reader(index):
        path = os.path.join(root, files[index])
        try:
            return decode_image(path, name=path, draft_size=draft)
        except ImageError:
            # Keep rows aligned with labels: a file that broke after the scan reads as grey.
            return np.full((draft, draft, 3), 128, dtype=np.uint8)

    return Data(
        name=name,
        class_names=scan.class_names,
        labels=np.asarray(scan.labels, dtype=np.int64),
        keys=files,
        fingerprint=_hash([f"{name}:v2"] + [f"{rel}|{h}" for rel, h in zip(files, scan.hashes)]),
        image_size=None,
        reader=reader,
        skipped=[tuple(item) for item in scan.skipped],
        content_hashes=scan.hashes,
    )


def leakage(data: Data) -> dict | None:
    """Identical images (same file content) that fall in more than one split.

    Returns:
        ``None`` when the data has no content hashes (generated or in-memory datasets),
        else ``{"groups": n, "images": n, "pairs": {"train/test": n, ...},
        "examples": [[key, ...], ...]}`` where a group is one content seen in 2+ splits.
    """
    if data.content_hashes is None or not data.splits:
        return None
    split_of = {}
    for split, indices in data.splits.items():
        for i in indices:
            split_of[int(i)] = split
    groups = {}
    for i, digest in enumerate(data.content_hashes):
        groups.setdefault(digest, []).append(i)
    leaked, pairs, examples, images = 0, Counter(), [], 0
    for members in groups.values():
        splits = sorted({split_of[i] for i in members if i in split_of}, key=list(data.splits).index)
        if len(splits) < 2:
            continue
        leaked += 1
        images += len(members)
        for a in range(len(splits)):
            for b in range(a + 1, len(splits)):
                pairs[f"{splits[a]}/{splits[b]}"] += 1
        if len(examples) < 5:
            examples.append([data.keys[i] for i in members])
    return {"groups": leaked, "images": images, "pairs": dict(pairs), "examples": examples}


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


def download_error(what: str, subdir: str, message: str, url: str | None = None,
                   fname: str | None = None) -> DownloadError:
    """One sentence for a failed download: what, from where, where to put it by hand."""
    from tl.downloads import failed_url, keras_home

    url = url or failed_url(message) or "its source"
    where = Path(keras_home()) / subdir
    return DownloadError(
        f"Could not download {what} from {url} (no internet connection?); download it by "
        f"hand into {where}{f' as {fname}' if fname else ''} or pick another dataset."
    )


# -- downloadable folder datasets ------------------------------------------------------
#
# keras.utils.get_file has no progress callback, so the archive is fetched here (urllib,
# in chunks, reporting bytes) into the very path get_file uses, checked against its
# sha256, and then get_file is called on it: it finds the file in its cache, verifies the
# checksum again and extracts it. A checksum mismatch deletes the file, so a corrupt
# download is never reused.

@dataclass(frozen=True)
class Download:
    """Where a dataset's archive comes from and how it unpacks.

    Attributes:
        title: the dataset's name in messages.
        url: the archive's URL.
        sha256: its checksum, or ``None`` where none is published (then unverified).
        fname: the archive's file name in the Keras cache.
        inner: the folder inside the extracted archive that holds the class folders.
        size: the archive's size in bytes, when known (for progress without a header).
        subdir: the Keras cache sub-folder.
    """

    title: str
    url: str
    sha256: str | None
    fname: str
    inner: str
    size: int | None = None
    subdir: str = "datasets"


DOWNLOADS = {
    # url, size and sha256 as listed in tensorflow_datasets/url_checksums/tf_flowers.txt.
    "tf_flowers": Download(
        "TF Flowers", "http://download.tensorflow.org/example_images/flower_photos.tgz",
        "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c",
        "flower_photos.tgz", "flower_photos", size=228_813_984),
    # url, size and sha256 as listed in tensorflow_datasets/url_checksums/stanford_dogs.txt.
    "stanford_dogs": Download(
        "Stanford Dogs", "http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar",
        "a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58",
        "stanford_dogs_images.tar", "Images", size=793_579_520),
    # No checksum is published for this archive (none found in TFDS or the authors'
    # repository), so it is downloaded unverified rather than against an invented hash.
    "freiburg_groceries": Download(
        "Freiburg Groceries",
        "http://aisdatasets.informatik.uni-freiburg.de/freiburg_groceries_dataset/freiburg_groceries_dataset.tar.gz",
        None, "freiburg_groceries_dataset.tar.gz", "images"),
}


def is_cached(download: Download) -> bool:
    """Whether the dataset is already downloaded and extracted."""
    folder, done = _extracted(download)
    return done.is_file() and folder.is_dir()


def fetch(download: Download, progress=None) -> Path:
    """Download (once), verify and extract a dataset archive; return its class folders.

    Args:
        download: what to fetch.
        progress: called as ``progress(done_bytes, total_bytes_or_None)`` while downloading.

    Raises:
        DownloadError: no connection, a server error, or a checksum mismatch.
        DataError: the archive does not hold the expected folder.
    """
    import keras

    folder, done = _extracted(download)
    if done.is_file() and folder.is_dir():
        return folder
    archive = folder.parent.parent / download.fname
    if not (archive.is_file() and _checksum_ok(archive, download.sha256)):
        _download(download, archive, progress)
    try:
        keras.utils.get_file(fname=download.fname, origin=download.url, file_hash=download.sha256,
                             cache_subdir=download.subdir, extract=True)
    except ValueError as exc:  # get_file's checksum mismatch
        archive.unlink(missing_ok=True)
        raise _checksum_error(download, archive) from exc
    except Exception as exc:
        raise download_error(download.title, download.subdir, str(exc), url=download.url,
                             fname=download.fname) from None
    if not folder.is_dir():
        raise DataError(f"The archive from {download.url} has no folder '{download.inner}'; delete "
                        f"{archive} and try again.")
    done.write_text(download.url + "\n")
    return folder


def _extracted(download: Download) -> tuple[Path, Path]:
    """``(class folders, completion marker)`` where get_file extracts the archive."""
    from tl.downloads import keras_home

    stem = download.fname[:download.fname.find(".")] if "." in download.fname else download.fname
    extracted = Path(keras_home()) / download.subdir / f"{stem}_extracted"
    return extracted / download.inner, extracted / ".tl-complete"


def _download(download: Download, target: Path, progress) -> None:
    """Fetch the URL into ``target`` (via a ``.part`` file), then check its checksum."""
    import urllib.error
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(download.url, timeout=30) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or download.size
            done = 0
            if progress:
                progress(0, total)
            while chunk := response.read(1024 * 1024):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise download_error(download.title, download.subdir, str(exc), url=download.url,
                             fname=download.fname) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if not _checksum_ok(part, download.sha256):
        part.unlink(missing_ok=True)
        raise _checksum_error(download, target)
    os.replace(part, target)


def _checksum_ok(path: Path, sha256: str | None) -> bool:
    if sha256 is None:
        return True
    with open(path, "rb") as handle:
        return sha256_of(handle) == sha256


def _checksum_error(download: Download, target: Path) -> DownloadError:
    return DownloadError(
        f"The file downloaded from {download.url} does not match its published sha256 checksum "
        f"(a corrupt or changed download), so it was deleted; try again, or put a good copy in "
        f"{target.parent} as {target.name}."
    )


def download_progress_printer(out, title: str):
    """A ``progress`` callback that prints one line per 10% (or per 50 MB without a size)."""
    state = {"shown": -1}

    def show(done: int, total):
        step = int(done * 10 / total) if total else done // (50 * 1024**2)
        if step != state["shown"]:
            state["shown"] = step
            size = f"{done / 1024**2:.0f}/{total / 1024**2:.0f} MB" if total else f"{done / 1024**2:.0f} MB"
            percent = f" ({done / total:.0%})" if total else ""
            print(f"Downloading {title}: {size}{percent}", file=out, flush=True)

    return show


def _downloaded_loader(name: str):
    def load(cfg) -> Data:
        return folder_data(name, fetch(DOWNLOADS[name]), cfg.image_size)

    return load


CARDS = {
    "tf_flowers": {
        "title": "TF Flowers",
        "source": "https://www.tensorflow.org/datasets/catalog/tf_flowers",
        "license": "CC BY 2.0: photos from Flickr, each credited in the archive's LICENSE.txt",
        "classes": "5: daisy, dandelion, roses, sunflowers, tulips",
        "images": "3,670 photos of varying size (about 218 MB)",
        "citation": "The TensorFlow Team, Flowers, 2019. "
                    "http://download.tensorflow.org/example_images/flower_photos.tgz",
    },
    "stanford_dogs": {
        "title": "Stanford Dogs",
        "source": "http://vision.stanford.edu/aditya86/ImageNetDogs/",
        "license": "images from ImageNet: its terms apply (non-commercial research and education)",
        "classes": "120 dog breeds (folder names are ImageNet ids with the breed)",
        "images": "20,580 photos (about 757 MB)",
        "citation": "A. Khosla, N. Jayadevaprakash, B. Yao, L. Fei-Fei. Novel Dataset for "
                    "Fine-Grained Image Categorization. First Workshop on Fine-Grained Visual "
                    "Categorization, CVPR 2011.",
    },
    "freiburg_groceries": {
        "title": "Freiburg Groceries",
        "source": "http://aisdatasets.informatik.uni-freiburg.de/freiburg_groceries_dataset/",
        "license": "see the source page for the authors' terms",
        "classes": "25 grocery products (BEANS ... WATER), imbalanced",
        "images": "4,947 images of 256x256 pixels; no published checksum, so the download is not verified",
        "citation": "P. Jund, N. Abdo, A. Eitel, W. Burgard. The Freiburg Groceries Dataset. "
                    "arXiv:1611.05799, 2016.",
    },
}


DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec("synthetic", _load_synthetic, False, False,
                    "Generated shapes on noisy backgrounds (works offline; 32x32 pixels)."),
        DatasetSpec("folder", _load_folder, True, False,
                    "Your own images: a folder with one sub-folder per class."),
        DatasetSpec("cifar10", _load_cifar10, False, True,
                    "CIFAR-10: 60,000 32x32 photos in 10 classes (downloads 163 MB once)."),
        DatasetSpec("tf_flowers", _downloaded_loader("tf_flowers"), False, True,
                    "Flowers: 3,670 photos in 5 classes (downloads 218 MB once).",
                    download="tf_flowers"),
        DatasetSpec("freiburg_groceries", _downloaded_loader("freiburg_groceries"), False, True,
                    "Freiburg Groceries: 4,947 shelf photos in 25 imbalanced classes (downloads once).",
                    download="freiburg_groceries"),
        DatasetSpec("stanford_dogs", _downloaded_loader("stanford_dogs"), False, True,
                    "Stanford Dogs: 20,580 photos of 120 breeds (downloads 757 MB once).",
                    download="stanford_dogs"),
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
        content_hashes=None if data.content_hashes is None else [data.content_hashes[i] for i in keep],
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
