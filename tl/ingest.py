"""Safe ingestion of a user's images: a zip of class folders, or an uploaded folder.

Uploads are untrusted. Every entry's name and size is checked before anything is written
(no ``..``, no absolute paths or drive letters, no links, no more than the size, ratio and
count limits), then the images are streamed into a temporary folder beside the target
with a byte counter (a zip's header sizes can lie) and the folder is renamed into place.
Each upload is stored once per content hash under the data root, so the same zip uploaded
twice is stored once. Junk (``__MACOSX``, ``.DS_Store``, ``Thumbs.db``, hidden and
non-image files) is skipped and counted.

Plain Python: no TensorFlow, no Streamlit.
"""

import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tl.data.folder import is_junk
from tl.errors import DataError
from tl.files import atomic_write_json, read_json, sha256_of
from tl.images import IMAGE_EXTENSIONS

CHUNK = 1024 * 1024
SUMMARY_FILE = "summary.json"
DATA_FOLDER = "data"


@dataclass(frozen=True)
class Limits:
    """What an upload may hold. Defaults fit a few thousand photos on a small server."""

    max_total_bytes: int = 2 * 1024**3
    max_file_bytes: int = 50 * 1024**2
    max_files: int = 50_000
    max_ratio: float = 100.0  # uncompressed / compressed, per entry and overall
    ratio_floor_bytes: int = 1024**2  # smaller entries cannot make a bomb on their own


LIMITS = Limits()


@dataclass
class Ingested:
    """Where an upload was stored and what it held.

    Attributes:
        path: the folder of class sub-folders, to use as ``data_dir``.
        digest: the upload's content hash (the folder's name under the data root).
        counts: class name -> images stored.
        skipped: reason -> number of entries left out.
        reused: the same content had been stored before, nothing was written.
    """

    path: Path
    digest: str
    counts: dict
    skipped: dict = field(default_factory=dict)
    reused: bool = False

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """One line: classes, images, what was skipped."""
        text = f"{len(self.counts)} classes, {self.images} images"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return text + "."


def data_root(runs_dir=None) -> Path:
    """Where uploads are stored: ``$TL_DATA_DIR``, else ``<runs root>/.data``."""
    from tl.runs import runs_root

    return Path(os.environ.get("TL_DATA_DIR") or runs_root(runs_dir) / ".data").expanduser()


# -- entry points ----------------------------------------------------------------------

def ingest_zip(source, root=None, limits: Limits = LIMITS, name: str = "The zip") -> Ingested:
    """Store a zip of class folders (a path, bytes or a binary file object).

    Raises:
        DataError: not a zip, an unsafe entry, over a limit, or not a valid layout; nothing
            is left behind.
    """
    handle, close = _binary(source)
    try:
        digest = sha256_of(handle, CHUNK)
        root = Path(root) if root else data_root()
        found = _existing(root, digest)
        if found:
            return found
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError):
            raise DataError(f"{name} is not a zip file; upload a .zip of class folders ({LAYOUT})."
                            ) from None
        with archive:
            entries = [_zip_entry(archive, info) for info in archive.infolist() if not info.is_dir()]
            compressed = sum(info.compress_size for info in archive.infolist())
            _check_entries(entries, limits, name, compressed=compressed)
            folders = [_safe_parts(info.filename, name) for info in archive.infolist() if info.is_dir()]
            return _store(root, digest, entries, limits, name, folders)
    finally:
        if close:
            handle.close()


def ingest_files(files, root=None, limits: Limits = LIMITS, name: str = "The uploaded folder") -> Ingested:
    """Store an uploaded folder: ``(relative path, bytes)`` pairs, or objects with ``.name``
    holding the relative path and ``.getvalue()`` (Streamlit's UploadedFile).

    Raises:
        DataError: an unsafe name, over a limit, or not a valid layout.
    """
    pairs = []
    for item in files:
        if isinstance(item, tuple):
            rel, data = item
        else:
            rel, data = item.name, item.getvalue()
        pairs.append((rel, bytes(data)))
    digest = hashlib.sha256()
    for rel, data in sorted(pairs, key=lambda p: p[0]):
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(hashlib.sha256(data).digest())
    digest = digest.hexdigest()
    root = Path(root) if root else data_root()
    found = _existing(root, digest)
    if found:
        return found
    entries = [_Entry(raw=rel, size=len(data), compressed=len(data), link=False,
                      open=lambda data=data: io.BytesIO(data)) for rel, data in pairs]
    _check_entries(entries, limits, name, compressed=None)
    return _store(root, digest, entries, limits, name)


# -- checks ----------------------------------------------------------------------------

LAYOUT = ("one folder per class with its images inside, for example cats/1.jpg and "
          "dogs/2.jpg (optionally inside one top folder)")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass
class _Entry:
    raw: str
    size: int
    compressed: int
    link: bool
    open: object
    parts: tuple = ()
    skip: str | None = None


def _zip_entry(archive, info) -> _Entry:
    mode = info.external_attr >> 16
    return _Entry(raw=info.filename, size=info.file_size, compressed=info.compress_size,
                  link=stat.S_ISLNK(mode), open=lambda: archive.open(info))


def _safe_parts(raw: str, name: str) -> tuple:
    """The path's components, or a DataError for a path that could escape the target."""
    text = raw.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text):
        raise DataError(f"{name} holds an absolute path ('{raw}'); only relative paths inside "
                        "the upload are allowed, so it was not extracted.")
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if ".." in parts:
        raise DataError(f"{name} holds a path that leaves its folder ('{raw}'); it was not "
                        "extracted.")
    if any("\0" in p for p in parts):
        raise DataError(f"{name} holds a file name with a NUL byte; it was not extracted.")
    return parts


def _check_entries(entries, limits: Limits, name: str, compressed) -> None:
    """Refuse the whole upload on the first unsafe entry; mark junk to skip."""
    if len(entries) > limits.max_files:
        raise DataError(f"{name} holds {len(entries):,} files, more than the limit of "
                        f"{limits.max_files:,}; upload fewer images.")
    total = 0
    for entry in entries:
        entry.parts = _safe_parts(entry.raw, name)
        if entry.link:
            raise DataError(f"{name} holds a symbolic link ('{entry.raw}'); links are not "
                            "allowed, so it was not extracted.")
        if entry.size > limits.max_file_bytes:
            raise DataError(f"{name} holds '{entry.raw}' of "
                            f"{entry.size / 1024**2:.0f} MB, over the limit of "
                            f"{limits.max_file_bytes / 1024**2:.0f} MB per file; shrink it or leave it out.")
        if entry.size > limits.ratio_floor_bytes and entry.size > limits.max_ratio * max(entry.compressed, 1):
            raise DataError(f"{name} looks like a zip bomb ('{entry.raw}' expands "
                            f"{entry.size / max(entry.compressed, 1):.0f} times, the limit is "
                            f"{limits.max_ratio:.0f}); it was not extracted.")
        total += entry.size
        entry.skip = _junk_reason(entry.parts)
    if total > limits.max_total_bytes:
        raise DataError(f"{name} expands to {total / 1024**3:.1f} GB, over the limit of "
                        f"{limits.max_total_bytes / 1024**3:.1f} GB; upload fewer or smaller images.")
    if compressed is not None and total > limits.ratio_floor_bytes and total > limits.max_ratio * max(compressed, 1):
        raise DataError(f"{name} looks like a zip bomb (it expands {total / max(compressed, 1):.0f} "
                        f"times, the limit is {limits.max_ratio:.0f}); it was not extracted.")


def _junk_reason(parts) -> str | None:
    if not parts or any(is_junk(p) for p in parts):
        return "junk files"
    if Path(parts[-1]).suffix.lower() not in IMAGE_EXTENSIONS:
        return "non-image files"
    return None


def _layout(entries, folders, name: str) -> tuple[int, dict]:
    """Strip common top folders; return ``(levels stripped, class -> image count)``.

    ``folders`` are the parts of folder entries (a zip lists empty folders that way).

    Raises:
        DataError: no images, one class, or a class folder without images.
    """
    images = [e.parts for e in entries if e.skip is None]
    strip = 0
    while images and all(len(p) >= strip + 3 for p in images) and len({p[strip] for p in images}) == 1:
        strip += 1
    counts = Counter(p[strip] for p in images if len(p) >= strip + 2)
    if not counts:
        raise DataError(f"{name} has no images in class folders ({', '.join(IMAGE_EXTENSIONS)}); "
                        f"it needs {LAYOUT}.")
    others = [e.parts for e in entries if e.skip == "non-image files"] + [p + ("",) for p in folders]
    prefix = images[0][:strip]
    for parts in others:
        if len(parts) >= strip + 2 and parts[:strip] == prefix and not any(is_junk(p) for p in parts[:-1]):
            counts.setdefault(parts[strip], 0)
    if len(counts) == 1:
        raise DataError(f"{name} has only one class ('{next(iter(counts))}'); a classifier needs at "
                        f"least two, as {LAYOUT}.")
    for class_name, n in sorted(counts.items()):
        if not n:
            raise DataError(f"Class folder '{class_name}' has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            "add images to it or remove it.")
    return strip, dict(sorted(counts.items()))


# -- storing ---------------------------------------------------------------------------

def _store(root: Path, digest: str, entries, limits: Limits, name: str, folders=()) -> Ingested:
    strip, counts = _layout(entries, folders, name)
    skipped = Counter(e.skip for e in entries if e.skip)
    for entry in entries:
        if entry.skip is None and len(entry.parts) < strip + 2:
            entry.skip = "files outside class folders"
            skipped[entry.skip] += 1
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{digest[:16]}-"))
    try:
        target = work / DATA_FOLDER
        target.mkdir()
        _extract(entries, target, strip, limits, name)
        unreadable = _check_images(target, counts, name)
        if unreadable:
            skipped["unreadable images"] += unreadable
        info = {"digest": digest, "counts": counts, "skipped": dict(skipped)}
        atomic_write_json(work / SUMMARY_FILE, info)
        final = root / digest[:16]
        try:
            os.rename(work, final)
        except OSError:
            if not (final / SUMMARY_FILE).is_file():
                raise
            shutil.rmtree(work, ignore_errors=True)  # stored meanwhile by another upload
            return _existing(root, digest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Ingested(path=final / DATA_FOLDER, digest=digest, counts=counts, skipped=dict(skipped))


def _extract(entries, target: Path, strip: int, limits: Limits, name: str) -> None:
    resolved = target.resolve()
    total = 0
    for entry in entries:
        if entry.skip:
            continue
        dest = target.joinpath(*entry.parts[strip:])
        if resolved not in dest.resolve().parents:  # belt and braces: _safe_parts ran already
            raise DataError(f"{name} holds a path that leaves its folder ('{entry.raw}'); it was "
                            "not extracted.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            total = _copy(entry, dest, total, limits, name)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError):
            # zipfile stops at the size the header states, so a lying header shows up
            # here as a CRC mismatch; encrypted or unknown compression lands here too.
            raise DataError(f"{name} is corrupt or encrypted ('{entry.raw}' cannot be read back "
                            "as its header describes); it was not extracted.") from None
        except FileExistsError:
            raise DataError(f"{name} holds '{entry.raw}' twice; remove the duplicate entry and upload "
                            "it again.") from None


def _copy(entry, dest: Path, total: int, limits: Limits, name: str) -> int:
    """Stream one entry to ``dest``, counting bytes; return the new running total."""
    written = 0
    with entry.open() as src, open(dest, "xb") as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            total += len(chunk)
            # Count the bytes really written: a crafted header can claim a small size.
            if written > max(entry.size, 0) or written > limits.max_file_bytes:
                raise DataError(f"{name} holds '{entry.raw}', which expands beyond the size its "
                                "header states (a zip bomb?); it was not extracted.")
            if total > limits.max_total_bytes:
                raise DataError(f"{name} expands beyond the limit of "
                                f"{limits.max_total_bytes / 1024**3:.1f} GB; it was not extracted.")
            out.write(chunk)
    return total


def _check_images(target: Path, counts: dict, name: str) -> int:
    """Move unreadable images aside (deleted) and count them; refuse a class left empty."""
    from PIL import Image

    unreadable = 0
    for class_name in counts:
        kept = 0
        for dirpath, _, filenames in os.walk(target / class_name):
            for filename in filenames:
                path = Path(dirpath) / filename
                try:
                    with Image.open(path) as image:
                        image.size  # reads the header only
                    kept += 1
                except Exception:
                    path.unlink()
                    unreadable += 1
        counts[class_name] = kept
        if not kept:
            raise DataError(f"Class folder '{class_name}' has no readable images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); add images to it or remove it.")
    return unreadable


def _existing(root: Path, digest: str) -> Ingested | None:
    info = read_json(root / digest[:16] / SUMMARY_FILE)
    if not info or info.get("digest") != digest:
        return None
    return Ingested(path=root / digest[:16] / DATA_FOLDER, digest=digest, counts=info["counts"],
                    skipped=info["skipped"], reused=True)


# -- helpers ---------------------------------------------------------------------------

def _binary(source):
    """``(binary file object, whether to close it)`` for a path, bytes or file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, (str, os.PathLike)):
        try:
            return open(source, "rb"), True
        except OSError as exc:
            raise DataError(f"Cannot read '{source}' ({exc.strerror}).") from None
    return source, False
