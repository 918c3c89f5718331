"""The catalogue of dataset names: the built-in datasets (what each is, whether it reads a
folder or downloads an archive, its card) and the ``data:NAME`` rule for datasets made in
the app. Names only: no loader is imported here, so checking a config's dataset name costs
nothing (the loaders are attached in :mod:`tl.data.registry`)."""

from dataclasses import dataclass

MADE_PREFIX = "data:"  # data:NAME names a dataset made in the app, so no made name shadows a built-in one


def is_made(dataset) -> bool:
    """Whether a config's ``dataset`` names a made dataset (``data:NAME``)."""
    return isinstance(dataset, str) and dataset.startswith(MADE_PREFIX)


def made_name(dataset: str) -> str:
    """``NAME`` of ``data:NAME`` (anything else as it is)."""
    return dataset[len(MADE_PREFIX):] if is_made(dataset) else dataset


def made_ref(name: str) -> str:
    """``data:NAME``: how a made dataset called ``name`` is chosen."""
    return MADE_PREFIX + name


@dataclass(frozen=True)
class DatasetInfo:
    """What a built-in dataset is, without its loader."""

    name: str
    needs_dir: bool
    downloads: bool
    description: str
    download: str | None = None  # key in tl.data.public.DOWNLOADS for archives fetched with fetch()

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


BUILT_IN = {
    info.name: info
    for info in (
        DatasetInfo("synthetic", False, False, "Generated shapes on noisy backgrounds (works offline; 32x32 pixels)."),
        DatasetInfo("folder", True, False, "Your own images: a folder with one sub-folder per class."),
        DatasetInfo("cifar10", False, True, "CIFAR-10: 60,000 32x32 photos in 10 classes (downloads 163 MB once)."),
        DatasetInfo("tf_flowers", False, True, "Flowers: 3,670 photos in 5 classes (downloads 218 MB once).",
                    download="tf_flowers"),
        DatasetInfo("freiburg_groceries", False, True,
                    "Freiburg Groceries: 4,947 shelf photos in 25 imbalanced classes (downloads once).",
                    download="freiburg_groceries"),
        DatasetInfo("stanford_dogs", False, True, "Stanford Dogs: 20,580 photos of 120 breeds (downloads 757 MB once).",
                    download="stanford_dogs"),
    )
}
