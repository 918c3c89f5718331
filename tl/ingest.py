"""Safe ingestion of a user's images: a zip of class folders, or an uploaded folder.

Uploads are untrusted. Every entry's name and size is checked before anything is written
(no ``..``, no absolute paths or drive letters, no links, no control characters, no name too
long for the file system, no path that is both a file and a folder, no two entries sharing
bytes in the zip, no more than the size, ratio and count limits), then the images are
streamed into a temporary folder beside the target with a byte counter (a zip's header
sizes can lie) and the folder is renamed into place, so the store never holds a
half-written upload. The temporary folder's name records the host and process that made it,
so one left by a killed process is removed by the next ingest. Each upload is stored once
per content hash under the data root, so the same zip uploaded twice is stored once. Junk
(``__MACOSX``, ``.DS_Store``, ``Thumbs.db``, hidden and non-image files) is skipped and
counted. Every refusal, and every file-system failure, is a :class:`DataError` of one sentence.
A zip of photos to classify (no class folders asked for) passes the same checks and is
extracted into the caller's temporary folder instead (:func:`extract_images`).

Plain Python: no TensorFlow, no Streamlit.
"""

import errno
import hashlib
import io
import itertools
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tl.data import quota
from tl.errors import DataError
from tl.files import atomic_write_json, read_json, sha256_of
from tl.images import IMAGE_EXTENSIONS, is_junk
from tl.paths import data_root
from tl.processes import same_process
from tl.text import has_control_character, shown

try:
    from lzma import LZMAError
except ImportError:  # Python built without lzma: zipfile cannot read such entries either
    LZMAError = ValueError

CHUNK = 1024 * 1024
SUMMARY_FILE = "summary.json"
DATA_FOLDER = "data"
NAME_MAX = 255  # bytes per path component on ext4, XFS, btrfs, APFS and NTFS
STALE_SECONDS = 24 * 3600  # a temporary folder this old is left over whoever made it


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may hold. Defaults fit a few thousand photos on a small server."""

    max_total_bytes: int = 2 * 1024**3
    max_file_bytes: int = 50 * 1024**2
    max_files: int = 50_000
    max_ratio: float = 100.0  # uncompressed / compressed, per entry and overall
    ratio_floor_bytes: int = 1024**2  # smaller entries cannot make a bomb on their own


LIMITS = UploadLimits()


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


# -- entry points ----------------------------------------------------------------------

def ingest_zip(source, root=None, limits: UploadLimits = LIMITS, name: str = "The zip", runs_dir=None) -> Ingested:
    """Store a zip of class folders (a path, bytes or a binary file object) under ``root``
    (default: the data root of ``runs_dir``). Room is made under the disk cap without
    removing what the runs in ``runs_dir`` were trained on.

    Raises:
        DataError: not a zip, an unsafe entry, over a limit, not a valid layout, or the data
            root cannot be written; nothing is left behind.
    """
    name = shown(name)
    handle, close = _binary(source)
    try:
        digest = sha256_of(handle, CHUNK)
        root = Path(root) if root else data_root(runs_dir)
        _prepare_root(root)
        found = _existing(root, digest)
        if found:
            return found
        with _open_zip(handle, name) as archive:
            entries, folders = _checked_zip(archive, limits, name)
            quota.make_room(root, sum(e.size for e in entries), runs_dir, what=name)
            return _store(root, digest, entries, limits, name, folders)
    finally:
        if close:
            handle.close()


def extract_images(source, target, limits: UploadLimits = LIMITS, name: str = "The zip") -> dict:
    """Extract the images of a zip that need not be class folders (a pool of photos to
    classify, :mod:`tl.batch`) into ``target``, an existing empty folder the caller owns (a
    temporary one), keeping their paths inside the zip. Every entry passes the same checks as
    :func:`ingest_zip`'s before a byte is written, and the bytes are counted as they stream;
    junk and non-image files are skipped. Nothing is written outside ``target``, and nothing is
    stored under the data root.

    Returns:
        reason -> number of entries skipped.

    Raises:
        DataError: not a zip, an unsafe entry, over a limit, no images, or ``target`` cannot
            be written; what was extracted so far is left in ``target`` for its owner to remove.
    """
    name = shown(name)
    handle, close = _binary(source)
    try:
        with _open_zip(handle, name, "a .zip of photos") as archive:
            entries, _ = _checked_zip(archive, limits, name)
            if not any(entry.skip is None for entry in entries):
                raise DataError(f"{name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); zip the photos "
                                "and try again.")
            try:
                _extract(entries, Path(target), 0, limits, name)
            except OSError as exc:
                raise DataError(f"{name} could not be unpacked in '{shown(target)}' "
                                f"({shown(exc.strerror or exc)}); free some space there and try again.") from None
            return dict(Counter(entry.skip for entry in entries if entry.skip))
    finally:
        if close:
            handle.close()


def ingest_files(files, root=None, limits: UploadLimits = LIMITS, name: str = "The uploaded folder",
                 runs_dir=None) -> Ingested:
    """Store an uploaded folder: ``(relative path, bytes)`` pairs, or objects with ``.name``
    holding the relative path and ``.getvalue()`` (Streamlit's UploadedFile), as
    :func:`ingest_zip` stores a zip.

    Raises:
        DataError: an unsafe name, over a limit, not a valid layout, or the data root
            cannot be written; nothing is left behind.
    """
    name = shown(name)
    pairs = []
    for item in files:
        if isinstance(item, tuple):
            rel, data = item
        else:
            rel, data = item.name, item.getvalue()
        pairs.append((rel, bytes(data)))
    entries = [_Entry(raw=rel, size=len(data), compressed=len(data), link=False,
                      open=lambda data=data: io.BytesIO(data)) for rel, data in pairs]
    # Checked before hashing: a name that cannot be encoded must be refused, not crash.
    _check_entries(entries, limits, name, compressed=None)
    digest = hashlib.sha256()
    for rel, data in sorted(pairs, key=lambda p: p[0]):
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(hashlib.sha256(data).digest())
    digest = digest.hexdigest()
    root = Path(root) if root else data_root(runs_dir)
    _prepare_root(root)
    found = _existing(root, digest)
    if found:
        return found
    quota.make_room(root, sum(e.size for e in entries), runs_dir, what=name)
    return _store(root, digest, entries, limits, name)


# -- checks ----------------------------------------------------------------------------

LAYOUT = ("one folder per class with its images inside, for example cats/1.jpg and "
          "dogs/2.jpg (optionally inside one top folder)")
REZIP = "zip the folder again and upload the new zip"
_DRIVE = re.compile(r"^[A-Za-z]:")
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile's structFileHeader, 30 bytes


@dataclass
class _Entry:
    raw: str
    size: int
    compressed: int
    link: bool
    open: object
    parts: tuple = ()
    skip: str | None = None


def _open_zip(handle, name: str, wanted: str = f"a .zip of class folders ({LAYOUT})") -> zipfile.ZipFile:
    """The zip's table of contents, or one sentence saying why it cannot be read (``wanted``:
    what to upload instead of a file that is no zip at all)."""
    try:
        return zipfile.ZipFile(handle)
    except UnicodeDecodeError:
        raise DataError(f"{name} holds a file name that is not valid UTF-8 although the zip says "
                        f"it is; {REZIP}.") from None
    except Exception as exc:  # noqa: BLE001 - only the table of contents is parsed here: any failure is the file's
        handle.seek(0)
        looks_like_zip = handle.read(2) == b"PK"
        handle.seek(0)
        if not looks_like_zip and str(exc) == "File is not a zip file":
            raise DataError(f"{name} is not a zip file; upload {wanted}.") from None
        raise DataError(f"{name} is not a readable zip (its table of contents is damaged or the "
                        f"file was cut short); {REZIP}.") from None


def _check_placement(archive: zipfile.ZipFile, infos, name: str) -> None:
    """Refuse entries whose bytes lie outside the file or overlap another entry's.

    An overlapping zip bomb points many entries at the same compressed bytes, so every
    entry passes the ratio check while together they expand without bound; a valid zip
    never shares bytes between entries.
    """
    handle = archive.fp
    spans = []
    for info in infos:
        start = info.header_offset
        header = b""
        if 0 <= start <= archive.start_dir - _LOCAL_HEADER.size:
            handle.seek(start)
            header = handle.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != zipfile.stringFileHeader:
            raise DataError(f"{name} is not a readable zip ('{shown(info.filename, 80)}' is not "
                            f"where its table of contents says); {REZIP}.")
        fields = _LOCAL_HEADER.unpack(header)
        end = start + _LOCAL_HEADER.size + fields[10] + fields[11] + info.compress_size
        if end > archive.start_dir:
            raise DataError(f"{name} is not a readable zip ('{shown(info.filename, 80)}' runs past "
                            f"the end of its data, so the file was cut or damaged); {REZIP}.")
        spans.append((start, end, info.filename))
    spans.sort()
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        if start < end:
            raise DataError(f"{name} looks like a zip bomb ('{shown(first, 60)}' and "
                            f"'{shown(second, 60)}' share the same bytes); it was not extracted.")


def _checked_zip(archive: zipfile.ZipFile, limits: UploadLimits, name: str) -> tuple:
    """``(file entries, folder entries' parts)`` of an open zip, after every check that
    needs no writing (placement, names, links, sizes, ratios, the tree)."""
    infos = archive.infolist()
    _check_placement(archive, infos, name)
    folders = [_safe_parts(info.filename, name) for info in infos if info.is_dir()]
    entries = [_zip_entry(archive, info) for info in infos if not info.is_dir()]
    compressed = sum(info.compress_size for info in infos)
    _check_entries(entries, limits, name, compressed=compressed, folders=folders)
    return entries, folders


def _zip_entry(archive, info) -> _Entry:
    mode = info.external_attr >> 16
    return _Entry(raw=info.filename, size=info.file_size, compressed=info.compress_size,
                  link=stat.S_ISLNK(mode), open=lambda: archive.open(info))


def _safe_parts(raw: str, name: str) -> tuple:
    """The path's components, or a DataError for a path that could escape the target or
    that no file system can hold."""
    text = raw.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text):
        raise DataError(f"{name} holds an absolute path ('{shown(raw)}'); only relative paths "
                        "inside the upload are allowed, so it was not extracted.")
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if ".." in parts:
        raise DataError(f"{name} holds a path that leaves its folder ('{shown(raw)}'); it was not "
                        "extracted.")
    if any("\0" in p for p in parts):
        raise DataError(f"{name} holds a file name with a NUL byte; it was not extracted.")
    if any(has_control_character(p) for p in parts):
        raise DataError(f"{name} holds a file name with a control character ('{shown(raw)}'); "
                        "rename it and upload it again.")
    try:
        for part in parts:
            os.fsencode(part)
    except UnicodeError:
        raise DataError(f"{name} holds a file name that cannot be stored ('{shown(raw)}' is not "
                        "valid Unicode); rename it and upload it again.") from None
    return parts


def _check_entries(entries, limits: UploadLimits, name: str, compressed, folders=()) -> None:
    """Refuse the whole upload on the first unsafe entry; mark junk to skip."""
    if len(entries) > limits.max_files:
        raise DataError(f"{name} holds {len(entries):,} files, more than the limit of "
                        f"{limits.max_files:,}; upload fewer images.")
    total = 0
    for entry in entries:
        entry.parts = _safe_parts(entry.raw, name)
        if entry.link:
            raise DataError(f"{name} holds a symbolic link ('{shown(entry.raw)}'); links are not "
                            "allowed, so it was not extracted.")
        if entry.size > limits.max_file_bytes:
            raise DataError(f"{name} holds '{shown(entry.raw)}' of {_size(entry.size)}, over the "
                            f"limit of {_size(limits.max_file_bytes)} per file; shrink it or leave it out.")
        if entry.size > limits.ratio_floor_bytes and entry.size > limits.max_ratio * max(entry.compressed, 1):
            raise DataError(f"{name} looks like a zip bomb ('{shown(entry.raw)}' expands "
                            f"{entry.size / max(entry.compressed, 1):.0f} times, the limit is "
                            f"{limits.max_ratio:.0f}); it was not extracted.")
        total += entry.size
        entry.skip = _junk_reason(entry.parts)
        if entry.skip is None and any(len(os.fsencode(p)) > NAME_MAX for p in entry.parts):
            raise DataError(f"{name} holds a name too long for the file system "
                            f"('{shown(entry.raw, 80)}', over {NAME_MAX} bytes); shorten that name "
                            "and upload again.")
    _check_tree(entries, folders, name)
    if total > limits.max_total_bytes:
        raise DataError(f"{name} expands to {_size(total)}, over the limit of "
                        f"{_size(limits.max_total_bytes)}; upload fewer or smaller images.")
    if compressed is not None and total > limits.ratio_floor_bytes and total > limits.max_ratio * max(compressed, 1):
        raise DataError(f"{name} looks like a zip bomb (it expands {total / max(compressed, 1):.0f} "
                        f"times, the limit is {limits.max_ratio:.0f}); it was not extracted.")


def _check_tree(entries, folders, name: str) -> None:
    """Refuse a path stored twice, or both as a file and as a folder, before anything is
    written (extracting it would fail half way, or overwrite)."""
    files = set()
    for entry in entries:
        if entry.parts in files:
            raise DataError(f"{name} holds '{shown('/'.join(entry.parts), 80)}' twice; remove the "
                            "duplicate entry and upload it again.")
        if entry.parts:
            files.add(entry.parts)
    dirs = {parts[:i] for parts in [*files, *folders] for i in range(1, len(parts))} | set(folders)
    clashes = sorted(files & dirs)
    if clashes:
        raise DataError(f"{name} holds '{shown('/'.join(clashes[0]), 80)}' both as a file and as a "
                        "folder; rename one of them and upload it again.")


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
        raise DataError(f"{name} has only one class ('{shown(next(iter(counts)))}'); a classifier "
                        f"needs at least two, as {LAYOUT}.")
    for class_name, n in sorted(counts.items()):
        if not n:
            raise DataError(f"Class folder '{shown(class_name)}' has no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); add images to it or remove it.")
    return strip, dict(sorted(counts.items()))


# -- storing ---------------------------------------------------------------------------

def _prepare_root(root: Path) -> None:
    """Refuse a data root that is (or lies under) a file; remove temporary folders left by
    ingests that were killed."""
    for path in (root, *root.parents):
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path):
            break
        where = "it" if path == root else f"'{shown(path)}'"
        raise DataError(f"The data folder '{shown(root)}' cannot be used because {where} is a file, "
                        "not a folder; move that file away or set TL_DATA_DIR to another folder.")
    _sweep(root)


_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_TEMP = re.compile(r"^\.tmp-[0-9a-f]{16}-(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-)?[a-z0-9_]{8}$")


def _temp_prefix(digest: str) -> str:
    """``.tmp-<digest>-<host>-<pid>-``: enough for a later ingest to tell a leftover."""
    return f".tmp-{digest[:16]}-{_HOST}-{os.getpid()}-"


def _sweep(root: Path) -> None:
    """Remove temporary folders whose process is gone (same host, pid not alive) or that
    are older than a day; nothing else is touched, and failures are ignored."""
    try:
        listing = list(os.scandir(root))
    except OSError:
        return
    now = time.time()
    for item in listing:
        match = _TEMP.match(item.name)
        try:
            if not match or not item.is_dir(follow_symlinks=False):
                continue
            dead = match["host"] == _HOST and not same_process(int(match["pid"]))
            if dead or now - item.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                shutil.rmtree(item.path, ignore_errors=True)
        except OSError:
            continue


def _store(root: Path, digest: str, entries, limits: UploadLimits, name: str, folders=()) -> Ingested:
    strip, counts = _layout(entries, folders, name)
    skipped = Counter(e.skip for e in entries if e.skip)
    for entry in entries:
        if entry.skip is None and len(entry.parts) < strip + 2:
            entry.skip = "files outside class folders"
            skipped[entry.skip] += 1
    try:
        return _write(root, digest, entries, strip, counts, skipped, limits, name)
    except OSError as exc:
        raise DataError(_store_failed(exc, root, name)) from None


def _write(root: Path, digest: str, entries, strip: int, counts: dict, skipped: Counter,
           limits: UploadLimits, name: str) -> Ingested:
    """Extract into a temporary folder beside the target and rename it into place; the
    temporary folder is removed on any failure."""
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root, prefix=_temp_prefix(digest)))
    final = root / digest[:16]
    try:
        target = work / DATA_FOLDER
        target.mkdir()
        _extract(entries, target, strip, limits, name)
        unreadable = _check_images(target, counts, name)
        if unreadable:
            skipped["unreadable images"] += unreadable
        info = {"digest": digest, "counts": counts, "skipped": dict(skipped)}
        atomic_write_json(work / SUMMARY_FILE, info)
        try:
            os.rename(work, final)
        except OSError:
            if not os.path.lexists(final):
                raise
            found = _existing(root, digest)  # stored meanwhile by another upload?
            if not found:
                raise DataError(f"{name} could not be stored because '{shown(final)}' is in the way "
                                "(a damaged earlier copy?); delete it and upload again.") from None
            shutil.rmtree(work, ignore_errors=True)
            return found
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Ingested(path=final / DATA_FOLDER, digest=digest, counts=counts, skipped=dict(skipped))


def _store_failed(exc: OSError, root: Path, name: str) -> str:
    """One sentence for a file-system failure while storing: which folder, what to do."""
    where = shown(root)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{name} could not be stored because the disk holding '{where}' is full; free some "
                "space there or set TL_DATA_DIR to a folder on a larger disk, then upload it again.")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"{name} could not be stored because '{where}' is not writable "
                f"({shown(exc.strerror or exc)}); set TL_DATA_DIR to a writable folder, then upload "
                "it again.")
    return (f"{name} could not be stored in '{where}' ({shown(exc.strerror or exc)}); check that the "
            "folder is writable and has free space, then upload it again.")


def _extract(entries, target: Path, strip: int, limits: UploadLimits, name: str) -> None:
    resolved = target.resolve()
    total = 0
    for entry in entries:
        if entry.skip:
            continue
        label = shown(entry.raw, 80)
        dest = target.joinpath(*entry.parts[strip:])
        try:
            if resolved not in dest.resolve().parents:  # belt and braces: _safe_parts ran already
                raise DataError(f"{name} holds a path that leaves its folder ('{label}'); it was "
                                "not extracted.")
            dest.parent.mkdir(parents=True, exist_ok=True)
            total = _copy(entry, dest, total, limits, name)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            # _check_tree refused exact clashes; these are names equal only to this file
            # system (case-insensitive, or normalising Unicode).
            raise DataError(f"{name} holds '{label}' twice or as both a file and a folder (names "
                            "that differ only in case count as one here); rename one and upload it "
                            "again.") from None
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            raise DataError(f"{name} holds a path too long for the file system ('{label}'); "
                            "shorten its folder or file names and upload it again.") from None


# What reading an entry's bytes can raise: a lying header shows up as a CRC mismatch
# (zipfile stops at the stated size), encrypted or unknown compression as RuntimeError or
# NotImplementedError, a bad stream as zlib/bz2 (OSError)/lzma errors.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
                ValueError, struct.error, LZMAError, OSError)


def _read(action, entry, name: str):
    """``action()``, a read of the upload; its failure is the upload's, said in one sentence."""
    try:
        return action()
    except _READ_ERRORS:
        raise DataError(f"{name} is corrupt or encrypted ('{shown(entry.raw, 80)}' cannot be read "
                        "back as its header describes); it was not extracted.") from None


def _copy(entry, dest: Path, total: int, limits: UploadLimits, name: str) -> int:
    """Stream one entry to ``dest``, counting bytes; return the new running total.

    Read errors become a DataError here; write errors (disk full, ...) stay OSError for
    :func:`_store` to explain."""
    written = 0
    src = _read(entry.open, entry, name)
    try:
        with open(dest, "xb") as out:
            while chunk := _read(lambda: src.read(CHUNK), entry, name):
                written += len(chunk)
                total += len(chunk)
                # Count the bytes really read, before writing them: a header can lie.
                if written > max(entry.size, 0) or written > limits.max_file_bytes:
                    raise DataError(f"{name} holds '{shown(entry.raw, 80)}', which expands beyond "
                                    "the size its header states (a zip bomb?); it was not extracted.")
                if total > limits.max_total_bytes:
                    raise DataError(f"{name} expands beyond the limit of "
                                    f"{_size(limits.max_total_bytes)}; it was not extracted.")
                out.write(chunk)
    finally:
        try:
            src.close()
        except _READ_ERRORS:
            pass
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
            raise DataError(f"Class folder '{shown(class_name)}' has no readable images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); add images to it or remove it.")
    return unreadable


def _existing(root: Path, digest: str) -> Ingested | None:
    """The stored copy of ``digest``, or None when there is none (or it is damaged)."""
    folder = root / digest[:16]
    try:
        info = read_json(folder / SUMMARY_FILE)
    except (OSError, ValueError):  # a file in the way, unreadable, or torn: not a usable copy
        return None
    if (not isinstance(info, dict) or info.get("digest") != digest
            or not isinstance(info.get("counts"), dict) or not os.path.isdir(folder / DATA_FOLDER)):
        return None
    quota.touch(folder)  # used again: the store's clean-up removes it last
    return Ingested(path=folder / DATA_FOLDER, digest=digest, counts=info["counts"],
                    skipped=info.get("skipped") or {}, reused=True)


# -- helpers ---------------------------------------------------------------------------

def _size(n: int) -> str:
    """``n`` bytes for a message: GB from one GB up, MB from one MB, else KB."""
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if unit == "GB" else f"{n / scale:.0f} {unit}"
    return f"{n / 1024:.0f} KB"


def _binary(source):
    """``(binary file object, whether to close it)`` for a path, bytes or file object.

    A path must be a regular file: it is opened without blocking and checked on the open
    descriptor, so a named pipe cannot hang the read."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, (str, os.PathLike)):
        try:
            fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise DataError(f"Cannot read '{shown(os.fspath(source))}' ({shown(exc.strerror or exc)}); "
                            "check the path and try again.") from None
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            regular = False
        if not regular:
            os.close(fd)
            raise DataError(f"'{shown(os.fspath(source))}' is not a regular file (a folder, pipe or "
                            "device); give the path of a .zip file.")
        return os.fdopen(fd, "rb"), True
    return source, False
