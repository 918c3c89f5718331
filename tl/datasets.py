"""Datasets, the public face of :mod:`tl.data`: name -> loader of labelled items, a seeded
split, and tf.data streams, importable as before (``from tl import datasets``).

A :class:`Data` is a list of items (labels, stable keys) plus a reader that turns one item
into an RGB uint8 array. Pipelines stream items through ``tf.data`` (read, batch,
prefetch); resizing to the model's input size happens inside the model, so a resized copy
of the dataset is never held in memory. Where each part lives:

- :mod:`tl.data.core`: ``Data``, the per-class cap, the stratified split, class weights;
- :mod:`tl.data.synthetic`: the generated shapes;
- :mod:`tl.data.folder`: folders of class sub-folders, the cached scan, leakage;
- :mod:`tl.data.public`: CIFAR-10 and the downloadable archives;
- :mod:`tl.data.catalogue`: the names, the dataset cards and the ``data:NAME`` rule;
- :mod:`tl.data.registry`: each name's loader and :func:`load`;
- :mod:`tl.data.made`: datasets made in the app (``data:NAME``), stored and versioned;
- :mod:`tl.data.quota`: the disk cap over uploads and made datasets;
- :mod:`tl.data.pipeline`: the tf.data pipelines and augmentation.
"""

from tl.data.core import Data, balanced_class_weights, stratified_split
from tl.data.folder import (LAYOUT_HINT, FolderScan, folder_data, leakage,
                            scan_folder_cached, skipped_message)
from tl.data.pipeline import image_pipeline, make_augmenter
from tl.data.public import (CIFAR10_CLASSES, DOWNLOADS, Download, download_error, download_progress_printer,
                            fetch, is_cached)
from tl.data.catalogue import CARDS
from tl.data.registry import DATASETS, DatasetSpec, load, spec_of
from tl.data.synthetic import SYNTHETIC_DEFAULT_PER_CLASS, SYNTHETIC_SHAPES, SYNTHETIC_SIZE, synthetic_image

__all__ = [
    "CARDS", "CIFAR10_CLASSES", "DATASETS", "DOWNLOADS", "Data", "DatasetSpec", "Download",
    "FolderScan", "LAYOUT_HINT", "SYNTHETIC_DEFAULT_PER_CLASS", "SYNTHETIC_SHAPES", "SYNTHETIC_SIZE",
    "balanced_class_weights", "download_error", "download_progress_printer", "fetch", "folder_data",
    "image_pipeline", "is_cached", "leakage", "load", "make_augmenter", "scan_folder_cached",
    "skipped_message", "spec_of", "stratified_split", "synthetic_image",
]
