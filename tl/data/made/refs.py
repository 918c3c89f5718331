"""Made datasets and the runs trained on them: a run records which photos it used (``refs/``),
so they are kept while it exists; what no run and no class holds any more is freed. The rule
for "in use" is :func:`tl.data.quota.live_refs`, the one the disk cap uses."""

import contextlib
from pathlib import Path

from tl.data.core import Data
from tl.data.made.store import MadeDataset, change_lock, list_datasets, read_dataset
from tl.data.quota import live_refs
from tl.errors import UserError
from tl.files import atomic_write_json

def record_use(data: Data, run_path) -> None:
    """Note that the run in ``run_path`` trains on ``data``'s photos, so they are kept while
    the run exists. A no-op for data that is not made in the app."""
    origin = data.origin or {}
    if origin.get("kind") != "made":
        return
    path = Path(origin["path"])
    hashes = sorted({Path(key).stem for key in data.keys})
    try:
        atomic_write_json(path / "refs" / f"{Path(run_path).name}.json",
                          {"run": str(Path(run_path).resolve()), "version": origin["version"], "hashes": hashes})
    except OSError:
        pass  # a dataset folder that cannot be written only loses the keep-alive, never the run


def runs_using(dataset: MadeDataset) -> list:
    """Ids of the existing runs trained on this dataset."""
    return sorted(live_refs(dataset.path))


def release(origin: dict, runs_dir=None) -> None:
    """After a run of the made dataset ``origin`` (its ``labels.json`` record) was deleted:
    free what only that run kept. Never raises: the run is gone either way."""
    try:
        for dataset in list_datasets(runs_dir):
            if dataset.id == origin.get("id"):
                collect(dataset)
    except (UserError, OSError):
        pass


def collect(dataset: MadeDataset) -> int:
    """Free the photos (and thumbnails) neither the dataset nor any existing run refers to.
    Returns how many were freed; failures only leave a file behind."""
    with change_lock(dataset.path / ".lock", dataset.path):
        current = read_dataset(dataset.path)
        keep = {p.hash for photos in current.classes.values() for p in photos}
        for hashes in live_refs(current.path).values():
            keep |= hashes
        freed = 0
        for folder in ("photos", "thumbs"):
            try:
                files = list((current.path / folder).iterdir())
            except OSError:
                continue
            for file in files:
                if file.stem not in keep and not file.name.startswith("."):
                    with contextlib.suppress(OSError):
                        file.unlink()
                        freed += folder == "photos"
    return freed


