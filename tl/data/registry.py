"""The dataset registry: name -> loader, whether it needs a folder or a download, and its
card; :func:`load` gives a config's data capped and split."""

from dataclasses import dataclass
from typing import Callable

from tl.data.core import Data, cap, stratified_split
from tl.data.folder import load_folder
from tl.data.public import downloaded_loader, load_cifar10
from tl.data.synthetic import load_synthetic


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
        DatasetSpec("synthetic", load_synthetic, False, False,
                    "Generated shapes on noisy backgrounds (works offline; 32x32 pixels)."),
        DatasetSpec("folder", load_folder, True, False,
                    "Your own images: a folder with one sub-folder per class."),
        DatasetSpec("cifar10", load_cifar10, False, True,
                    "CIFAR-10: 60,000 32x32 photos in 10 classes (downloads 163 MB once)."),
        DatasetSpec("tf_flowers", downloaded_loader("tf_flowers"), False, True,
                    "Flowers: 3,670 photos in 5 classes (downloads 218 MB once).",
                    download="tf_flowers"),
        DatasetSpec("freiburg_groceries", downloaded_loader("freiburg_groceries"), False, True,
                    "Freiburg Groceries: 4,947 shelf photos in 25 imbalanced classes (downloads once).",
                    download="freiburg_groceries"),
        DatasetSpec("stanford_dogs", downloaded_loader("stanford_dogs"), False, True,
                    "Stanford Dogs: 20,580 photos of 120 breeds (downloads 757 MB once).",
                    download="stanford_dogs"),
    )
}

DEFAULT_DATASET = "synthetic"


def spec_of(name: str) -> DatasetSpec:
    """The registry's entry for ``name``; a made dataset (``data:NAME``) gets one of its own.

    Raises:
        KeyError: an unknown built-in name (configs are validated before this is asked).
    """
    from tl.data import made

    if made.is_made(name):
        return DatasetSpec(name, made.load, False, False, f"Made in the app: {made.name_of(name)}.")
    return DATASETS[name]


def load(cfg, runs_dir=None) -> Data:
    """Load the dataset a config names, cap it per class and split it (seeded, stratified).
    ``runs_dir``: the runs folder in use, under which a folder's scan is cached.

    Raises:
        DataError: the data cannot be used (message says what a valid layout is).
        DownloadError: a download is needed and failed.
    """
    data = spec_of(cfg.dataset).load(cfg, runs_dir)
    data = cap(data, cfg.samples_per_class, cfg.seed)
    data.splits = stratified_split(data.labels, data.class_names, cfg.val_fraction,
                                   cfg.test_fraction, cfg.seed)
    return data
