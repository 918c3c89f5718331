"""A made dataset in and out as a zip of class folders: the download that keeps it (Streamlit
Community Cloud wipes its disk on restart) and the import that makes a new one from such a zip
(checked by the upload ingester first)."""

import io
import re
import shutil
import zipfile
from pathlib import Path

from tl import ingest
from tl.data.made.edit import add_photos
from tl.data.made.store import LIMITS, DatasetLimits, MadeDataset, check_name, create_dataset, find, list_datasets
from tl.errors import DataError
from tl.files import atomic_write_bytes, os_error_sentence
from tl.text import shown

def export_zip(ref, out=None, runs_dir=None) -> bytes | None:
    """The dataset as a zip of class folders (``NAME/class/<hash>.<ext>``), the layout the
    Train page's zip upload and ``import_zip`` read back. Written to ``out`` (a path) when
    given, else returned as bytes.

    Raises:
        DataError: unknown dataset, or ``out`` cannot be written.
    """
    dataset = ref if isinstance(ref, MadeDataset) else find(ref, runs_dir)
    if out is not None and not Path(out).expanduser().parent.is_dir():
        raise DataError(f"'{shown(Path(out).expanduser().parent, 200)}' is not an existing folder; create it or "
                        "choose another path for the zip.")
    top = re.sub(r"[^\w.-]+", "_", dataset.name).strip("._") or "photos"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, photos in dataset.classes.items():
            for photo in photos:
                try:
                    archive.write(dataset.photo_path(photo), f"{top}/{name}/{photo.file}")
                except OSError:
                    continue  # a photo lost on disk: the rest of the zip is still worth having
    data = buffer.getvalue()
    if out is None:
        return data
    try:
        atomic_write_bytes(Path(out).expanduser(), data)
    except OSError as exc:
        raise DataError(f"The zip could not be written: {os_error_sentence(exc, out)}") from None
    return None


def import_zip(name: str, source, runs_dir=None, limits: DatasetLimits = LIMITS, owner: str | None = None) -> tuple:
    """A new made dataset called ``name`` from a zip of class folders (checked by
    :func:`tl.ingest.ingest_zip` first), owned by ``owner`` (as :func:`create`). Returns
    ``(dataset, [refusal sentences])``.

    Raises:
        DataError: the zip is refused, or the name is taken or not allowed.
    """
    name = check_name(name, "dataset", limits)
    if any(d.name.lower() == name.lower() for d in list_datasets(runs_dir)):
        raise DataError(f"A made dataset called '{name}' already exists; pick another name.")
    stored = ingest.ingest_zip(source, name="The zip", runs_dir=runs_dir)
    if len(stored.counts) > limits.max_classes:
        raise DataError(f"The zip has {len(stored.counts)} classes, more than a made dataset's limit of "
                        f"{limits.max_classes}; use it as an uploaded zip on the Train page instead.")
    if stored.images > limits.max_photos:
        raise DataError(f"The zip has {stored.images:,} images, more than a made dataset's limit of "
                        f"{limits.max_photos:,}; use it as an uploaded zip on the Train page instead.")
    dataset = create_dataset(name, runs_dir, owner=owner)
    problems = []
    for class_name in stored.counts:
        try:
            check_name(class_name, "class", limits)
        except DataError as exc:
            problems.append(str(exc))
            continue
        folder = stored.path / class_name
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        report = add_photos(dataset, class_name, [(p.name, p.read_bytes()) for p in files], runs_dir, limits)
        problems += report.messages()
    if not stored.reused:  # unpacked only to be copied in here: not kept twice
        shutil.rmtree(stored.path.parent, ignore_errors=True)
    return find(dataset.id, runs_dir), problems


