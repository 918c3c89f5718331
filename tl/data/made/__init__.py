"""Datasets made in the app (or with ``python -m tl data``): named classes of photos added
one upload or one camera tap at a time, stored exactly and versioned. A made dataset is
named ``data:NAME`` wherever a dataset is chosen (:mod:`tl.data.catalogue`), so no made name
can shadow a built-in one. Plain Python: no TensorFlow, no Streamlit.

The package's face; each part lives in its own module, in the order they build on each other:

- :mod:`.store`: the records, limits, names, listing, finding and making one, the manifest;
- :mod:`.refs`: the runs trained on a dataset, and freeing what none of them keeps;
- :mod:`.read`: a dataset as training data, and where a run's photo is stored;
- :mod:`.edit`: adding, removing and moving photos; renaming, merging, deleting;
- :mod:`.zips`: the zip of class folders out and in.
"""

from tl.data.made.edit import (DISMISSED, Added, add_class, add_photos, delete_class, delete_dataset, dismiss,
                               dismissed, merge_class, move_photo, remove_photo, rename_class, thumbnail_bytes)
from tl.data.made.read import dataset_data, key_path, load_made, photo_folder, read_file
from tl.data.made.refs import collect, record_use, release, runs_using
from tl.data.made.store import (ADVICE, EXTENSIONS, LIMITS, MANIFEST, MIN_PER_CLASS, THUMB_SIDE, USEFUL_PER_CLASS,
                                DatasetLimits, MadeDataset, Photo, check_name, create_dataset, find, list_datasets)
from tl.data.made.zips import export_zip, import_zip

__all__ = [
    "ADVICE", "DISMISSED", "EXTENSIONS", "LIMITS", "MANIFEST", "MIN_PER_CLASS", "THUMB_SIDE", "USEFUL_PER_CLASS",
    "Added", "DatasetLimits", "MadeDataset", "Photo", "add_class", "add_photos", "check_name", "collect",
    "create_dataset", "dataset_data", "delete_class", "delete_dataset", "dismiss", "dismissed", "export_zip", "find",
    "import_zip", "key_path", "list_datasets", "load_made", "merge_class", "move_photo", "photo_folder", "read_file",
    "record_use", "release", "remove_photo", "rename_class", "runs_using", "thumbnail_bytes",
]
