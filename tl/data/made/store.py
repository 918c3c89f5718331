"""A made dataset as stored: its limits, its records (:class:`MadeDataset`, :class:`Photo`),
names, listing and finding, making one, and the manifest read and written under a lock.

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
atomically, so two tabs (or the app and the CLI) never lose each other's photos.
"""

import contextlib
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tl.data.catalogue import made_name, made_ref
from tl.errors import DataError
from tl.files import atomic_write_json, os_error_sentence, read_json
from tl.paths import made_root
from tl.text import has_control_character, shown

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
class DatasetLimits:
    """What one made dataset may hold: camera taps add up, and a small server is shared."""

    max_photos: int = 2_000
    max_bytes: int = 500 * 1024**2
    max_photo_bytes: int = 25 * 1024**2
    max_classes: int = 50
    max_name: int = 60  # characters of a class or dataset name

    def describe(self) -> str:
        return (f"up to {self.max_photos:,} photos and {self.max_bytes // 1024**2} MB in all, "
                f"{self.max_photo_bytes // 1024**2} MB per photo, {self.max_classes} classes")


LIMITS = DatasetLimits()


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
        return made_ref(self.name)

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
            found.append(read_dataset(path))
        except DataError:
            continue
    return sorted(found, key=lambda d: d.name.lower())


def find(ref: str, runs_dir=None) -> MadeDataset:
    """The made dataset named ``ref`` (``NAME`` or ``data:NAME``; its id works too).

    Raises:
        DataError: no such dataset, in one sentence that says how to list them.
    """
    wanted = made_name(str(ref))
    every = list_datasets(runs_dir)
    for match in (lambda d: d.name == wanted, lambda d: d.name.lower() == wanted.lower(), lambda d: d.id == wanted):
        for dataset in every:
            if match(dataset):
                return dataset
    names = ", ".join(f"'{d.name}'" for d in every[:10]) or "none yet"
    raise DataError(f"There is no made dataset '{shown(wanted, 80)}' in {made_root(runs_dir)} (made ones: {names}); "
                    "check the name with `python -m tl data list` or make it on the Data page.")


def create_dataset(name: str, runs_dir=None, owner: str | None = None) -> MadeDataset:
    """A new, empty made dataset called ``name``; ``owner``: the digest of the owner token
    of the app session making it (:mod:`tl.owners`), ``None`` from the command line.

    Raises:
        DataError: the name is not allowed or already taken, or the folder cannot be written.
    """
    name = check_name(name, "dataset")
    root = made_root(runs_dir)
    with change_lock(root / ".lock", root):
        if any(d.name.lower() == name.lower() for d in list_datasets(runs_dir)):
            raise DataError(f"A made dataset called '{name}' already exists; pick another name or add photos to it.")
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32] or "data"
        ident = f"{slug}-{secrets.token_hex(3)}"
        dataset = MadeDataset(path=root / ident, id=ident, name=name, version=1, created=time.time(), owner=owner)
        try:
            for sub in ("photos", "thumbs", "versions", "refs"):
                (dataset.path / sub).mkdir(parents=True, exist_ok=True)
            save_dataset(dataset)
        except OSError as exc:
            shutil.rmtree(dataset.path, ignore_errors=True)
            raise DataError(f"The dataset could not be made: {os_error_sentence(exc, root)}") from None
    return dataset


# -- names ---------------------------------------------------------------------------


def check_name(name, what: str = "class", limits: DatasetLimits = LIMITS) -> str:
    """``name`` stripped, or a DataError saying what a name may be. Class names become
    folder names in the exported zip, so they follow the file system's rules."""
    if not isinstance(name, str):
        raise DataError(f"A {what} name must be text.")
    name = name.strip()
    if not name:
        raise DataError(f"Give the {what} a name (for example 'cat' or 'Lucy').")
    if has_control_character(name):
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



# -- storage -------------------------------------------------------------------------------

_HASH = re.compile(r"[0-9a-f]{16}")
_STORED_EXTS = {*EXTENSIONS.values(), ".img"}
_ANY_LENGTH = DatasetLimits(max_name=10**6)  # a name stored under an older, longer limit still reads


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


def read_dataset(path: Path) -> MadeDataset:
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


def save_dataset(dataset: MadeDataset) -> None:
    """The manifest, and the version's record (written once)."""
    record = dataset.path / "versions" / f"{dataset.version}.json"
    if not record.exists():
        atomic_write_json(record, {"version": dataset.version, "saved": time.time(),
                                   "classes": {n: [p.file for p in ps] for n, ps in dataset.classes.items()}})
    atomic_write_json(dataset.path / MANIFEST, dataset.to_dict())


@contextlib.contextmanager
def change_lock(path: Path, folder: Path):
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
