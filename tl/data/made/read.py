"""Reading a made dataset for training and for a run's gallery: its current version as
:class:`tl.data.core.Data`, and where a run's photo is stored."""

from pathlib import Path

import numpy as np

from tl.data.core import Data, content_hash
from tl.data.made.store import MIN_PER_CLASS, MadeDataset, find, list_datasets
from tl.errors import DataError
from tl.text import shown

def load_made(cfg, runs_dir=None) -> Data:
    """The photos of the made dataset ``cfg.dataset`` (``data:NAME``) as :class:`Data`: keys
    ``class/<hash>.<ext>``, classes in sorted order (as a zip of class folders would give),
    its id and version in ``origin``.

    Raises:
        DataError: unknown dataset, fewer than two classes, or a class without photos.
    """
    dataset = find(cfg.dataset, runs_dir)
    return dataset_data(dataset, cfg.image_size)


def dataset_data(dataset: MadeDataset, image_size: int) -> Data:
    """:class:`Data` over a made dataset's current version."""
    classes = sorted(dataset.classes)
    if len(classes) < 2:
        raise DataError(f"'{dataset.name}' has {len(classes)} class(es); a classifier needs at least two, so add "
                        "another class with its photos on the Data page.")
    empty = [name for name in classes if not dataset.classes[name]]
    if empty:
        raise DataError(f"Class '{shown(empty[0], 60)}' of '{dataset.name}' has no photos; add at least "
                        f"{MIN_PER_CLASS} or delete the class.")
    keys, labels, hashes, files = [], [], [], []
    for label, name in enumerate(classes):
        for photo in dataset.classes[name]:
            keys.append(f"{name}/{photo.file}")
            labels.append(label)
            hashes.append(photo.hash)
            files.append(str(dataset.photo_path(photo)))

    def reader(index):
        return read_file(files[index], image_size)

    return Data(name=dataset.ref, class_names=classes, labels=np.asarray(labels, dtype=np.int64), keys=keys,
                fingerprint=content_hash(["made:v1", *keys]), image_size=None, reader=reader,
                content_hashes=hashes,
                origin={"kind": "made", "id": dataset.id, "name": dataset.name, "version": dataset.version,
                        "path": str(dataset.path)})


def read_file(path, image_size: int) -> np.ndarray:
    """A stored photo decoded; a grey square if it went missing (rows stay aligned)."""
    from tl.images import ImageError, decode_image

    try:
        return decode_image(path, name=str(path), draft_size=image_size)
    except ImageError:
        return np.full((image_size, image_size, 3), 128, dtype=np.uint8)


def photo_folder(origin: dict, runs_dir=None) -> Path | None:
    """The photos folder of the made dataset a run's ``origin`` record names (``labels.json``
    or ``split.json``), or ``None`` once that dataset is gone."""
    if not isinstance(origin, dict) or origin.get("kind") != "made":
        return None
    for dataset in list_datasets(runs_dir):
        if dataset.id == origin.get("id"):
            return dataset.path / "photos"
    return None


def key_path(origin: dict, key: str, runs_dir=None, folder: Path | None = None) -> Path | None:
    """Where a run's item ``key`` (``class/<hash>.<ext>``) of the made dataset ``origin`` is
    stored, or ``None`` once the dataset or the photo is gone. ``folder``: the
    :func:`photo_folder` already looked up, for many keys."""
    folder = folder or photo_folder(origin, runs_dir)
    if folder is None:
        return None
    path = folder / Path(key).name
    return path if path.is_file() else None


