"""The dataset registry: each catalogued name (:mod:`tl.data.catalogue`) with its loader;
:func:`load` gives a config's data capped and split."""

from dataclasses import dataclass
from typing import Callable

from tl.data.catalogue import BUILT_IN, DatasetInfo, is_made, made_name
from tl.data.core import Data, cap, stratified_split
from tl.data.folder import load_folder
from tl.data.made import load_made
from tl.data.public import downloaded_loader, load_cifar10
from tl.data.synthetic import load_synthetic


@dataclass(frozen=True)
class DatasetSpec(DatasetInfo):
    """A catalogued dataset and the function that loads it: ``load(cfg, runs_dir) -> Data``."""

    load: Callable = None


LOADERS = {
    "synthetic": load_synthetic,
    "folder": load_folder,
    "cifar10": load_cifar10,
    "tf_flowers": downloaded_loader("tf_flowers"),
    "freiburg_groceries": downloaded_loader("freiburg_groceries"),
    "stanford_dogs": downloaded_loader("stanford_dogs"),
}

DATASETS = {name: DatasetSpec(**vars(info), load=LOADERS[name]) for name, info in BUILT_IN.items()}


def spec_of(name: str) -> DatasetSpec:
    """The registry's entry for ``name``; a made dataset (``data:NAME``) gets one of its own.

    Raises:
        KeyError: an unknown built-in name (configs are validated before this is asked).
    """
    if is_made(name):
        return DatasetSpec(name, False, False, f"Made in the app: {made_name(name)}.", load=load_made)
    return DATASETS[name]


def load(cfg, runs_dir=None) -> Data:
    """Load the dataset a config names, cap it per class and split it (seeded, stratified;
    a made dataset's split stays put as photos are added: :func:`stratified_split`).
    ``runs_dir``: the runs folder in use, under which a folder's scan is cached.

    Raises:
        DataError: the data cannot be used (message says what a valid layout is).
        DownloadError: a download is needed and failed.
    """
    data = spec_of(cfg.dataset).load(cfg, runs_dir)
    grows = (data.origin or {}).get("kind") == "made"  # its photos keep their split as it grows
    data = cap(data, cfg.samples_per_class, cfg.seed, by_hash=grows)
    data.splits = stratified_split(data.labels, data.class_names, cfg.val_fraction, cfg.test_fraction,
                                   cfg.seed, hashes=data.content_hashes if grows else None)
    return data
