"""Datasets made in the app (or with ``python -m tl data``): named classes of photos added
one upload or one camera tap at a time, stored exactly and versioned.

Layout, under ``<data root>/made/<id>/`` (the data root is ``$TL_DATA_DIR`` or
``<runs>/.data``; the uploads' hash folders and their temporary folders sit beside
``made/`` and never inside it)::

    dataset.json        name, id, version, classes -> photos (content hash, type, when added),
                        and the owner's digest when made from the app (tl.owners)
    versions/<n>.json   what version n held, written once (runs name the version they used)
    photos/<hash>.<ext> each photo's bytes as uploaded, stored once per content
    thumbs/<hash>.jpg   a small preview of each photo, for the page's grid
    refs/<run id>.json  the photos a run was trained on: kept while that run exists

Every change takes the dataset's lock, bumps the version and rewrites ``dataset.json``
atomically, so two tabs (or the app and the CLI) never lose each other's photos. A photo
removed from the dataset stays stored while a run's ``refs`` still name it (its
misclassified gallery keeps showing it) and is freed when no run does.

A made dataset is named ``data:NAME`` wherever a dataset is chosen, so no made name can
shadow a built-in one. Plain Python: no TensorFlow, no Streamlit.
"""

import contextlib
import hashlib
import io
import os
import re
import secrets
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tl.data import storage
from tl.data.core import Data, content_hash
from tl.errors import DataError, UserError
from tl.files import atomic_write_bytes, atomic_write_json, os_error_sentence, read_json

PREFIX = "data:"
MANIFEST = "dataset.json"
FORMAT = 1
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif",
              "MPO": ".jpg"}  # MPO: a phone's JPEG with a depth map; read as its first frame
THUMB_SIDE = 160
MIN_PER_CLASS = 3  # one image each for training, validation and test (tl.data.core.stratified_split)
USEFUL_PER_CLASS = 20
ADVICE = (f"Each class needs at least {MIN_PER_CLASS} photos (one each to train, validate and test). About "
          f"{USEFUL_PER_CLASS} or more per class make a useful model: with a pretrained backbone a few dozen varied "
          "photos (angles, light, backgrounds) are enough, and the test score of a handful says little. Classes "
          "that look alike need more.")


@dataclass(frozen=True)
class Limits:
    """What one made dataset may hold: camera taps add up, and a small server is shared."""

    max_photos: int = 2_000
    max_bytes: int = 500 * 1024**2
    max_photo_bytes: int = 25 * 1024**2
    max_classes: int = 50
    max_name: int = 60  # characters of a class or dataset name

    def describe(self) -> str:
        return (f"up to {self.max_photos:,} photos and {self.max_bytes // 1024**2} MB in all, "
                f"{self.max_photo_bytes // 1024**2} MB per photo, {self.max_classes} classes")


LIMITS = Limits()


# -- the dataset ---------------------------------------------------------------------

@dataclass
class Photo:
    """One stored photo of a class: its content hash and file type."""

    hash: str
    ext: str
    bytes: int
    added: float = 0.0

    @property
    def file(self) -> str:
        return self.hash + self.ext

    def to_dict(self) -> dict:
        return {"hash": self.hash, "ext": self.ext, "bytes": self.bytes, "added": self.added}


@dataclass
class MadeDataset:
    """A made dataset as stored: ``classes`` maps each class name to its photos in the order
    they were added."""

    path: Path
    id: str
    name: str
    version: int = 0
    created: float = 0.0
    classes: dict = field(default_factory=dict)
    owner: str | None = None  # digest of the owner token of the app session that made it (tl.owners)

    @property
    def ref(self) -> str:
        """How configs name it: ``data:NAME``."""
        return PREFIX + self.name

    def counts(self) -> dict:
        return {name: len(photos) for name, photos in self.classes.items()}

    @property
    def photos(self) -> int:
        return sum(len(p) for p in self.classes.values())

    @property
    def total_bytes(self) -> int:
        return sum(p.bytes for photos in self.classes.values() for p in photos)

    def photo_path(self, photo: Photo) -> Path:
        return self.path / "photos" / photo.file

    def thumb_path(self, photo: Photo) -> Path:
        return self.path / "thumbs" / f"{photo.hash}.jpg"

    def class_of(self, digest: str) -> str | None:
        for name, photos in self.classes.items():
            if any(p.hash == digest for p in photos):
                return name
        return None

    def describe(self) -> str:
        """One line: classes, photos, version."""
        return f"{len(self.classes)} classes, {self.photos} photos (version {self.version})"

    def to_dict(self) -> dict:
        record = {"format": FORMAT, "id": self.id, "name": self.name, "version": self.version,
                  "created": self.created,
                  "classes": {name: [p.to_dict() for p in photos] for name, photos in self.classes.items()}}
        if self.owner:
            record["owner"] = self.owner
        return record

    def summary(self) -> dict:
        """What ``tl data show --json`` prints."""
        return {"name": self.name, "ref": self.ref, "id": self.id, "version": self.version,
                "classes": self.counts(), "photos": self.photos, "bytes": self.total_bytes,
                "path": str(self.path)}


def made_root(runs_dir=None) -> Path:
    """Where made datasets live: ``<data root>/made``."""
    from tl.ingest import data_root

    return data_root(runs_dir) / "made"


def is_made(dataset: str) -> bool:
    """Whether a config's ``dataset`` names a made dataset (``data:NAME``)."""
    return isinstance(dataset, str) and dataset.startswith(PREFIX)


def name_of(dataset: str) -> str:
    """``NAME`` of ``data:NAME``."""
    return dataset[len(PREFIX):] if is_made(dataset) else dataset


def list_datasets(runs_dir=None) -> list:
    """Every readable made dataset, by name. A damaged folder is left out, never raised."""
    root = made_root(runs_dir)
    try:
        entries = sorted(root.iterdir()) if root.is_dir() else []
    except OSError:
        return []
    found = []
    for path in entries:
        if path.name.startswith("."):
            continue
        try:
            found.append(_read(path))
        except DataError:
            continue
    return sorted(found, key=lambda d: d.name.lower())


def find(ref: str, runs_dir=None) -> MadeDataset:
    """The made dataset named ``ref`` (``NAME`` or ``data:NAME``; its id works too).

    Raises:
        DataError: no such dataset, in one sentence that says how to list them.
    """
    wanted = name_of(str(ref))
    every = list_datasets(runs_dir)
    for match in (lambda d: d.name == wanted, lambda d: d.name.lower() == wanted.lower(), lambda d: d.id == wanted):
        for dataset in every:
            if match(dataset):
                return dataset
    names = ", ".join(f"'{d.name}'" for d in every[:10]) or "none yet"
    raise DataError(f"There is no made dataset '{shown(wanted, 80)}' in {made_root(runs_dir)} (made ones: {names}); "
                    "check the name with `python -m tl data list` or make it on the Data page.")


def create(name: str, runs_dir=None, owner: str | None = None) -> MadeDataset:
    """A new, empty made dataset called ``name``; ``owner``: the digest of the owner token
    of the app session making it (:mod:`tl.owners`), ``None`` from the command line.

    Raises:
        DataError: the name is not allowed or already taken, or the folder cannot be written.
    """
    name = check_name(name, "dataset")
    root = made_root(runs_dir)
    with _lock(root / ".lock", root):
        if any(d.name.lower() == name.lower() for d in list_datasets(runs_dir)):
            raise DataError(f"A made dataset called '{name}' already exists; pick another name or add photos to it.")
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32] or "data"
        ident = f"{slug}-{secrets.token_hex(3)}"
        dataset = MadeDataset(path=root / ident, id=ident, name=name, version=1, created=time.time(), owner=owner)
        try:
            for sub in ("photos", "thumbs", "versions", "refs"):
                (dataset.path / sub).mkdir(parents=True, exist_ok=True)
            _save(dataset)
        except OSError as exc:
            shutil.rmtree(dataset.path, ignore_errors=True)
            raise DataError(f"The dataset could not be made: {os_error_sentence(exc, root)}") from None
    return dataset


# -- names ---------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_name(name, what: str = "class", limits: Limits = LIMITS) -> str:
    """``name`` stripped, or a DataError saying what a name may be. Class names become
    folder names in the exported zip, so they follow the file system's rules."""
    if not isinstance(name, str):
        raise DataError(f"A {what} name must be text.")
    name = name.strip()
    if not name:
        raise DataError(f"Give the {what} a name (for example 'cat' or 'Lucy').")
    if _CONTROL.search(name):
        raise DataError(f"The {what} name '{shown(name, 60)}' holds a control character; type it again "
                        "with letters, digits and spaces.")
    if "/" in name or "\\" in name:
        raise DataError(f"The {what} name '{shown(name, 60)}' holds a '/' or '\\'; {what} names cannot hold "
                        "slashes (they become folder names), so use another character.")
    if name in (".", "..") or name.startswith("."):
        raise DataError(f"The {what} name '{shown(name, 60)}' starts with a dot; such names are hidden folders, "
                        "so start it with a letter or digit.")
    if len(name) > limits.max_name:
        raise DataError(f"The {what} name is {len(name)} characters long ('{shown(name, 40)}'); the limit is "
                        f"{limits.max_name}, so shorten it.")
    try:
        name.encode("utf-8")  # strict: a lone surrogate (which os.fsencode lets through) cannot go in a zip
    except UnicodeError:
        raise DataError(f"The {what} name '{shown(name, 60)}' is not valid text; type it again.") from None
    return name


def shown(text, limit: int | None = None) -> str:
    """``text`` safe in a one-line message (see :func:`tl.ingest._shown`)."""
    from tl.ingest import _shown

    return _shown(text, limit)


# -- adding and removing photos ----------------------------------------------------------

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


def add_photos(ref, class_name: str, files, runs_dir=None, limits: Limits = LIMITS) -> Added:
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
    storage.make_room(dataset.path.parent.parent, sum(len(c[2]) for c in checked if not c[1]), runs_dir,
                      what="These photos" if len(checked) > 1 else "This photo")
    with _lock(dataset.path / ".lock", dataset.path):
        dataset = _read(dataset.path)
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


def add_class(ref, class_name: str, runs_dir=None, limits: Limits = LIMITS) -> MadeDataset:
    """Add an empty class (a no-op when it exists). Raises DataError for a bad name or a
    dataset at its class limit."""
    return add_photos(ref, class_name, [], runs_dir, limits).dataset


def _save_or_explain(dataset: MadeDataset) -> None:
    dataset.version += 1
    try:
        _save(dataset)
    except OSError as exc:
        raise DataError(f"The dataset '{dataset.name}' could not be saved: "
                        f"{os_error_sentence(exc, dataset.path)}") from None


def _check_photo(name, data: bytes, limits: Limits):
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
    with _lock(dataset.path / ".lock", dataset.path):
        dataset = _read(dataset.path)
        photos = _class(dataset, class_name)
        matches = [p for p in photos if p.hash.startswith(digest)]
        if len(matches) != 1:
            raise DataError(f"Class '{shown(class_name, 60)}' of '{dataset.name}' has "
                            f"{'no' if not matches else 'more than one'} photo matching '{shown(photo, 40)}'; "
                            f"`python -m tl data show '{dataset.name}' --photos` lists them by hash.")
        photos.remove(matches[0])
        _save_or_explain(dataset)
    freed = collect(dataset)
    keeping = [run for run, hashes in _live_refs(dataset).items() if matches[0].hash in hashes]
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
    with _lock(dataset.path / ".lock", dataset.path):
        dataset = _read(dataset.path)
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
    with _lock(dataset.path / ".lock", dataset.path):
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
    with _lock(dataset.path / ".lock", dataset.path):
        dataset = _read(dataset.path)
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
    with _lock(dataset.path / ".lock", dataset.path):
        dataset = _read(dataset.path)
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
    with _lock(dataset.path / ".lock", dataset.path):
        dataset = _read(dataset.path)
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


# -- runs that used a dataset ----------------------------------------------------------

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


def _live_refs(dataset: MadeDataset) -> dict:
    """run id -> photo hashes it trained on, for runs that still exist."""
    found = {}
    try:
        files = sorted((dataset.path / "refs").glob("*.json"))
    except OSError:
        return found
    for file in files:
        try:
            ref = read_json(file)
            if isinstance(ref, dict) and Path(ref["run"]).is_dir():
                found[file.stem] = set(ref["hashes"])
            else:
                file.unlink()
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def runs_using(dataset: MadeDataset) -> list:
    """Ids of the existing runs trained on this dataset."""
    return sorted(_live_refs(dataset))


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
    with _lock(dataset.path / ".lock", dataset.path):
        current = _read(dataset.path)
        keep = {p.hash for photos in current.classes.values() for p in photos}
        for hashes in _live_refs(current).values():
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


# -- reading for training -----------------------------------------------------------------

def load(cfg, runs_dir=None) -> Data:
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


# -- zip in and out ---------------------------------------------------------------------

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


def import_zip(name: str, source, runs_dir=None, limits: Limits = LIMITS, owner: str | None = None) -> tuple:
    """A new made dataset called ``name`` from a zip of class folders (checked by
    :func:`tl.ingest.ingest_zip` first), owned by ``owner`` (as :func:`create`). Returns
    ``(dataset, [refusal sentences])``.

    Raises:
        DataError: the zip is refused, or the name is taken or not allowed.
    """
    from tl import ingest

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
    dataset = create(name, runs_dir, owner=owner)
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


# -- storage -------------------------------------------------------------------------------

_HASH = re.compile(r"[0-9a-f]{16}")
_STORED_EXTS = {*EXTENSIONS.values(), ".img"}
_ANY_LENGTH = Limits(max_name=10**6)  # a name stored under an older, longer limit still reads


def _stored_name(name) -> str:
    """A dataset or class name read from a manifest, as :func:`check_name` would have let it
    in (else ValueError: the manifest was edited or damaged)."""
    if not isinstance(name, str) or check_name(name, "stored", _ANY_LENGTH) != name:
        raise ValueError(name)
    return name


def _stored_photo(record) -> Photo:
    """A manifest's photo record; ValueError or TypeError unless its hash, type and size are
    what :func:`add_photos` writes (a hash like '../x' would name a file outside ``photos/``)."""
    photo = Photo(**record)
    if not (isinstance(photo.hash, str) and _HASH.fullmatch(photo.hash) and photo.ext in _STORED_EXTS
            and type(photo.bytes) is int and isinstance(photo.added, (int, float))):
        raise ValueError(record)
    return photo


def _read(path: Path) -> MadeDataset:
    try:
        info = read_json(Path(path) / MANIFEST)
        classes = {_stored_name(name): [_stored_photo(p) for p in photos]
                   for name, photos in info["classes"].items()}
        if not isinstance(info["id"], str) or not info["id"]:
            raise ValueError(info["id"])
        owner = info.get("owner")  # absent in datasets made before owners were recorded, or by the CLI
        return MadeDataset(path=Path(path), id=info["id"], name=_stored_name(info["name"]),
                           version=int(info["version"]), created=float(info.get("created", 0)), classes=classes,
                           owner=owner if isinstance(owner, str) else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f"The made dataset in '{path}' is damaged (its {MANIFEST} cannot be read); restore it "
                        "from a downloaded zip, or delete that folder.") from None


def _save(dataset: MadeDataset) -> None:
    """The manifest, and the version's record (written once)."""
    record = dataset.path / "versions" / f"{dataset.version}.json"
    if not record.exists():
        atomic_write_json(record, {"version": dataset.version, "saved": time.time(),
                                   "classes": {n: [p.file for p in ps] for n, ps in dataset.classes.items()}})
    atomic_write_json(dataset.path / MANIFEST, dataset.to_dict())


@contextlib.contextmanager
def _lock(path: Path, folder: Path):
    """An exclusive lock across processes (tabs, the CLI, workers) for one change."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError as exc:
        raise DataError(f"The made datasets cannot be changed: {os_error_sentence(exc, folder)}") from None
    try:
        try:
            import fcntl
        except ImportError:  # Windows: one process at a time is the user's own care
            fcntl = None
        if fcntl:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()
