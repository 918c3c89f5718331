"""Changing a made dataset: adding photos (each decoded and checked, room made under the disk
cap), removing, moving and dismissing them, and renaming, merging and deleting classes and
datasets. A photo removed from the dataset stays stored while a run's refs still name it (its
misclassified gallery keeps showing it) and is freed when no run does (:mod:`.refs`)."""

import hashlib
import io
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tl.data.made.refs import collect, runs_using
from tl.data.made.store import (EXTENSIONS, LIMITS, THUMB_SIDE, DatasetLimits, MadeDataset, Photo, change_lock,
                                check_name, find, read_dataset, save_dataset)
from tl.data.quota import live_refs, make_room
from tl.errors import DataError, UserError
from tl.files import atomic_write_bytes, atomic_write_json, os_error_sentence, read_json
from tl.text import shown

@dataclass
class Added:
    """What :func:`add_photos` did, one line per file that was not simply added."""

    dataset: MadeDataset
    added: list = field(default_factory=list)  # names of the files stored
    duplicates: list = field(default_factory=list)  # names already in the class
    refused: list = field(default_factory=list)  # (name, one sentence)

    def messages(self) -> list:
        """One line per file that was not added, then one for the ones that were."""
        lines = [sentence for _, sentence in self.refused]
        lines += [f"'{shown(n, 60)}' is already in this class (the same photo), so it is stored once."
                  for n in self.duplicates]
        return lines

    def describe(self) -> str:
        parts = [f"added {len(self.added)} photo(s)"]
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} already there")
        if self.refused:
            parts.append(f"{len(self.refused)} refused")
        return ", ".join(parts).capitalize() + "."


def add_photos(ref, class_name: str, files, runs_dir=None, limits: DatasetLimits = LIMITS) -> Added:
    """Add photos to a class (made when missing). ``files``: ``(name, bytes)`` pairs, or
    objects with ``.name`` and ``.getvalue()`` (Streamlit's UploadedFile).

    Each file is decoded and checked (:func:`tl.images.decode_image`: not an image, empty,
    too large, a decompression bomb); a bad file is refused with one sentence and the others
    are still added. The same photo twice in a class is stored once; a photo already in
    another class is refused, naming both classes. Room is made under the disk cap without
    removing what the runs in ``runs_dir`` were trained on.

    Raises:
        DataError: the dataset or the class name is not valid, or the disk cannot be written.
    """
    dataset = ref if isinstance(ref, MadeDataset) else find(ref, runs_dir)
    class_name = check_name(class_name, "class", limits)
    pairs = [(item if isinstance(item, tuple) else (item.name, item.getvalue())) for item in files]
    checked = [(str(name), *_check_photo(name, bytes(data), limits)) for name, data in pairs]
    make_room(dataset.path.parent.parent, sum(len(c[2]) for c in checked if not c[1]), runs_dir,
                      what="These photos" if len(checked) > 1 else "This photo")
    with change_lock(dataset.path / ".lock", dataset.path):
        dataset = read_dataset(dataset.path)
        report = Added(dataset=dataset)
        if class_name not in dataset.classes and len(dataset.classes) >= limits.max_classes:
            raise DataError(f"The dataset has {len(dataset.classes)} classes, its limit; merge or delete a class "
                            "before adding another.")
        _no_case_twin(dataset, class_name)
        new_class = class_name not in dataset.classes
        photos = dataset.classes.setdefault(class_name, [])
        count, size = dataset.photos, dataset.total_bytes
        for name, problem, data, image in checked:
            label = f"'{shown(name, 60)}'"
            if problem:
                report.refused.append((name, problem))
                continue
            digest = hashlib.sha256(data).hexdigest()[:16]
            other = dataset.class_of(digest)
            if other == class_name:
                report.duplicates.append(name)
                continue
            if other is not None:
                report.refused.append((name, f"{label} is already in class '{shown(other, 60)}', so it was not added "
                                             f"to '{shown(class_name, 60)}'; one photo can be in one class only."))
                continue
            if count + 1 > limits.max_photos or size + len(data) > limits.max_bytes:
                report.refused.append((name, f"{label} was not added: the dataset is at its limit "
                                             f"({limits.describe()}); remove photos or start another dataset."))
                continue
            photo = Photo(hash=digest, ext=EXTENSIONS.get(image.format, ".img"), bytes=len(data), added=time.time())
            try:
                _store_photo(dataset, photo, data, image)
            except OSError as exc:
                if report.added:  # keep what was stored before the disk failed
                    _save_or_explain(dataset)
                raise DataError(f"{label} could not be stored: {os_error_sentence(exc, dataset.path)}") from None
            photos.append(photo)
            report.added.append(name)
            count, size = count + 1, size + len(data)
        if report.added or (new_class and not checked):  # every file refused: no new class either
            _save_or_explain(dataset)
    return report


def add_class(ref, class_name: str, runs_dir=None, limits: DatasetLimits = LIMITS) -> MadeDataset:
    """Add an empty class (a no-op when it exists). Raises DataError for a bad name or a
    dataset at its class limit."""
    return add_photos(ref, class_name, [], runs_dir, limits).dataset


def _save_or_explain(dataset: MadeDataset) -> None:
    dataset.version += 1
    try:
        save_dataset(dataset)
    except OSError as exc:
        raise DataError(f"The dataset '{dataset.name}' could not be saved: "
                        f"{os_error_sentence(exc, dataset.path)}") from None


def _check_photo(name, data: bytes, limits: DatasetLimits):
    """``(problem sentence or None, bytes, PIL image opened)`` for one file."""
    from PIL import Image

    from tl.images import ImageError, decode_image

    label = f"'{shown(name, 60)}'"
    if len(data) > limits.max_photo_bytes:
        return (f"{label} is {len(data) / 1024**2:.0f} MB, over the limit of "
                f"{limits.max_photo_bytes // 1024**2} MB per photo; shrink it and add it again."), data, None
    try:
        decode_image(data, name=label, draft_size=64)
        image = Image.open(io.BytesIO(data))
    except ImageError as exc:
        return f"{exc} It was not added.", data, None
    return None, data, image


def _store_photo(dataset: MadeDataset, photo: Photo, data: bytes, image) -> None:
    """The photo's bytes (once per content) and its thumbnail."""
    path = dataset.photo_path(photo)
    if not path.exists():
        atomic_write_bytes(path, data)
    thumb = dataset.thumb_path(photo)
    if not thumb.exists():
        atomic_write_bytes(thumb, thumbnail_bytes(data))


def thumbnail_bytes(data: bytes, side: int = THUMB_SIDE) -> bytes:
    """A JPEG at most ``side`` pixels on its longer side, oriented as the photo is seen."""
    from PIL import Image

    from tl.images import decode_image

    image = Image.fromarray(decode_image(data, draft_size=side))
    image.thumbnail((side, side))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def remove_photo(ref, class_name: str, photo: str, runs_dir=None) -> tuple:
    """Remove one photo (its content hash, a prefix of it of 6+ digits, or a file whose
    bytes are that photo) from a class. Returns ``(dataset, sentence)``: the sentence says
    what happened and which runs still keep the photo.

    Raises:
        DataError: unknown dataset, class or photo.
    """
    dataset = ref if isinstance(ref, MadeDataset) else find(ref, runs_dir)
    digest = _photo_hash(photo)
    with change_lock(dataset.path / ".lock", dataset.path):
        dataset = read_dataset(dataset.path)
        photos = _class(dataset, class_name)
        matches = [p for p in photos if p.hash.startswith(digest)]
        if len(matches) != 1:
            raise DataError(f"Class '{shown(class_name, 60)}' of '{dataset.name}' has "
                            f"{'no' if not matches else 'more than one'} photo matching '{shown(photo, 40)}'; "
                            f"`python -m tl data show '{dataset.name}' --photos` lists them by hash.")
        photos.remove(matches[0])
        _save_or_explain(dataset)
    collect(dataset)
    keeping = [run for run, hashes in live_refs(dataset.path).items() if matches[0].hash in hashes]
    sentence = f"Removed one photo from '{class_name}' ({len(photos)} left)"
    if keeping:
        sentence += f"; run(s) {', '.join(keeping[:5])} trained on it, so it stays stored until they are deleted."
    else:
        sentence += "."
    return dataset, sentence


def move_photo(ref, class_name: str, photo: str, target: str, runs_dir=None) -> MadeDataset:
    """Move one photo (as :func:`remove_photo` names it) from ``class_name`` to the existing
    class ``target``: a new version; runs trained before keep the label they saw.

    Raises:
        DataError: unknown dataset, class or photo, or ``target`` is not another class.
    """
    dataset = ref if isinstance(ref, MadeDataset) else find(ref, runs_dir)
    digest = _photo_hash(photo)
    with change_lock(dataset.path / ".lock", dataset.path):
        dataset = read_dataset(dataset.path)
        photos, into = _class(dataset, class_name), _class(dataset, target)
        if target == class_name:
            raise DataError(f"The photo is already in '{shown(target, 60)}'; pick another class to move it to.")
        matches = [p for p in photos if p.hash.startswith(digest)]
        if len(matches) != 1:
            raise DataError(f"Class '{shown(class_name, 60)}' of '{dataset.name}' has no single photo matching "
                            f"'{shown(photo, 40)}' (moved or removed meanwhile?); run the check again.")
        photos.remove(matches[0])
        into.append(matches[0])
        _save_or_explain(dataset)
    return dataset


DISMISSED = "dismissed.json"


def dismiss(ref, photo: str, label: str, runs_dir=None) -> None:
    """Record that ``photo`` is right in class ``label`` ("this one is right"), so checks
    leave it out of their suspects while it keeps that label (moved, it is judged again)."""
    dataset = ref if isinstance(ref, MadeDataset) else find(ref, runs_dir)
    digest = _photo_hash(photo)
    with change_lock(dataset.path / ".lock", dataset.path):
        marks = dismissed(dataset)
        marks[digest] = label
        try:
            atomic_write_json(dataset.path / DISMISSED, marks)
        except OSError as exc:
            raise DataError(f"The mark could not be saved: {os_error_sentence(exc, dataset.path)}") from None


def dismissed(dataset: MadeDataset) -> dict:
    """photo hash -> the class it was confirmed in (see :func:`dismiss`); ``{}`` when none
    or when the file is damaged (a mark lost only brings a suspect back)."""
    try:
        marks = read_json(dataset.path / DISMISSED, {})
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in marks.items()} if isinstance(marks, dict) else {}


def _photo_hash(photo: str) -> str:
    text = str(photo).strip().lower()
    if re.fullmatch(r"[0-9a-f]{6,16}", text):
        return text
    path = Path(str(photo)).expanduser()
    stem = path.stem.lower()
    if re.fullmatch(r"[0-9a-f]{16}", stem) and not path.is_file():
        return stem  # a key or stored file name: <hash>.<ext>
    from tl.images import MAX_BYTES, read_regular_file

    try:
        return hashlib.sha256(read_regular_file(path, f"'{shown(photo, 60)}'", MAX_BYTES)).hexdigest()[:16]
    except UserError:
        raise DataError(f"'{shown(photo, 60)}' is neither a photo's hash nor a readable file; give the hash "
                        "shown by `python -m tl data show NAME --photos` or the photo's file.") from None


def _class(dataset: MadeDataset, class_name: str) -> list:
    if class_name not in dataset.classes:
        names = ", ".join(f"'{shown(n, 40)}'" for n in dataset.classes) or "none yet"
        raise DataError(f"'{dataset.name}' has no class '{shown(class_name, 60)}' (its classes: {names}); check "
                        "the name.")
    return dataset.classes[class_name]


def rename_class(ref, old: str, new: str, runs_dir=None) -> MadeDataset:
    """Rename a class (its photos stay). Raises DataError for an unknown class or a bad or
    taken name."""
    dataset = ref if isinstance(ref, MadeDataset) else find(ref, runs_dir)
    new = check_name(new)
    with change_lock(dataset.path / ".lock", dataset.path):
        dataset = read_dataset(dataset.path)
        _class(dataset, old)
        if new == old:
            return dataset
        if new in dataset.classes:
            raise DataError(f"'{dataset.name}' already has a class '{shown(new, 60)}'; merge into it instead.")
        _no_case_twin(dataset, new, besides=old)
        dataset.classes = {(new if name == old else name): photos for name, photos in dataset.classes.items()}
        _save_or_explain(dataset)
    return dataset


def _no_case_twin(dataset: MadeDataset, class_name: str, besides: str | None = None) -> None:
    """Refuse a class name that differs from another class's only in case: unpacked from the
    zip on a case-insensitive disk (Windows, macOS) the two would become one folder."""
    for other in dataset.classes:
        if other not in (class_name, besides) and other.casefold() == class_name.casefold():
            raise DataError(f"'{dataset.name}' already has a class '{shown(other, 60)}', which differs from "
                            f"'{shown(class_name, 60)}' only in case; use that class or another name.")


def merge_class(ref, source: str, target: str, runs_dir=None) -> MadeDataset:
    """Move every photo of ``source`` into ``target`` and drop ``source``."""
    dataset = ref if isinstance(ref, MadeDataset) else find(ref, runs_dir)
    with change_lock(dataset.path / ".lock", dataset.path):
        dataset = read_dataset(dataset.path)
        moved, kept = _class(dataset, source), _class(dataset, target)
        if source == target:
            raise DataError("Pick two different classes to merge.")
        known = {p.hash for p in kept}
        kept.extend(p for p in moved if p.hash not in known)
        del dataset.classes[source]
        _save_or_explain(dataset)
    return dataset


def delete_class(ref, class_name: str, runs_dir=None) -> MadeDataset:
    """Delete a class and its photos (those a run used stay stored while the run exists)."""
    dataset = ref if isinstance(ref, MadeDataset) else find(ref, runs_dir)
    with change_lock(dataset.path / ".lock", dataset.path):
        dataset = read_dataset(dataset.path)
        _class(dataset, class_name)
        del dataset.classes[class_name]
        _save_or_explain(dataset)
    collect(dataset)
    return dataset


def delete_dataset(ref, runs_dir=None) -> list:
    """Delete a made dataset with all its photos. Returns the ids of runs that had used it
    (they still open, classify and export; their gallery no longer shows its photos)."""
    dataset = ref if isinstance(ref, MadeDataset) else find(ref, runs_dir)
    used = runs_using(dataset)
    trash = dataset.path.with_name(f".{dataset.path.name}.deleting")
    try:
        os.rename(dataset.path, trash)
    except OSError as exc:
        raise DataError(f"'{dataset.name}' could not be deleted: {os_error_sentence(exc, dataset.path)}") from None
    shutil.rmtree(trash, ignore_errors=True)
    return used


