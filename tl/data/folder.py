"""Folder datasets: a folder of class sub-folders, scanned once (cached by path, size and
modification time) and read lazily; identical files across splits (leakage)."""

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tl.data.core import Data, content_hash
from tl.errors import DataError
from tl.files import read_json
from tl.images import IMAGE_EXTENSIONS, ImageError, decode_image, is_junk


LAYOUT_HINT = ("one sub-folder per class with its images inside, for example "
               "data/cats/1.jpg and data/dogs/2.jpg")


@dataclass
class FolderScan:
    """What :func:`scan_folder_cached` found in a folder of class sub-folders.

    Attributes:
        class_names: sorted class folder names, index = label.
        files: relative path of each readable image.
        labels: class index of each image.
        hashes: sha256 (16 hex digits) of each image file's bytes.
        skipped: ``(relative path, reason)`` for junk and unreadable files.
    """

    class_names: list
    files: list
    labels: list
    hashes: list
    skipped: list


def scan_folder_cached(root, cache_dir=None) -> FolderScan:
    """List a folder of class sub-folders; the result is cached in a JSON file keyed by
    every file's path, size and modification time, so scanning an unchanged folder again
    reads no image.

    Args:
        root: the folder of class sub-folders.
        cache_dir: where the JSON files go (default: ``<cache root>/scans``).

    Raises:
        DataError: the folder is missing, has no or one class, or a class has no images.
    """
    root = Path(root).expanduser()
    class_dirs = _class_dirs(root)
    # Relative path strings, not Path objects, and a streamed key: at 20k files a list of
    # Paths alone costs about 10 MB.
    listing = [(label, [os.path.relpath(p, root) for p in _walk_files(class_dir)])
               for label, class_dir in enumerate(class_dirs)]
    key = hashlib.sha256(f"scan:v2:{root.resolve()}".encode())  # v2: every image decoded, not just its header
    for label, files in listing:
        for rel in files:
            try:
                st = os.stat(os.path.join(root, rel))
                stamp = f"{st.st_size}|{st.st_mtime_ns}|{st.st_mode}"
            except OSError:  # a broken link or a file gone meanwhile: _scan skips it by name
                stamp = "unreadable"
            key.update(f"{label}|{rel}|{stamp}\0".encode())
    cache_file = Path(cache_dir or _scan_cache_dir()) / f"{key.hexdigest()[:16]}.json"
    try:
        cached = read_json(cache_file)
    except (OSError, ValueError):  # a damaged cache file only costs a rescan
        cached = None
    if cached:
        return FolderScan(**cached)
    scan = _scan(root, class_dirs, listing)
    del listing
    _write_scan(cache_file, scan)
    return scan


def _write_scan(path: Path, scan: FolderScan) -> None:
    """Atomically write the scan as JSON, streamed to the file (no whole-text copy)."""
    import json
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(scan.__dict__, handle, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass  # a read-only cache only costs a rescan next time


def _class_dirs(root: Path) -> list:
    if root.exists() and not root.is_dir():
        raise DataError(f"Data folder '{root}' is a file, not a folder; give a folder with {LAYOUT_HINT}.")
    if not root.is_dir():
        raise DataError(f"Data folder '{root}' does not exist; give a folder with {LAYOUT_HINT}.")
    try:
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not is_junk(p.name))
    except OSError as exc:
        raise DataError(f"Data folder '{root}' cannot be read ({exc.strerror or exc}); fix its permissions "
                        "or give another folder.") from None
    if not class_dirs:
        raise DataError(f"Data folder '{root}' has no class sub-folders; it needs {LAYOUT_HINT}.")
    if len(class_dirs) == 1:
        raise DataError(
            f"Data folder '{root}' has only one class ('{class_dirs[0].name}'); a classifier "
            f"needs at least two, as {LAYOUT_HINT}."
        )
    return class_dirs


def _scan(root: Path, class_dirs, listing) -> FolderScan:
    files, labels, hashes, skipped = [], [], [], []
    for label, rels in listing:
        found = 0
        for rel in rels:
            path = root / rel
            if is_junk(path.name):
                skipped.append((rel, "junk file"))
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append((rel, "not an image file"))
                continue
            reason, data = _check_image(path, rel)
            if reason:
                skipped.append((rel, reason))
                continue
            files.append(rel)
            labels.append(label)
            hashes.append(hashlib.sha256(data).hexdigest()[:16])
            found += 1
        if not found:
            raise DataError(
                f"Class folder '{class_dirs[label].name}' has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images to it or remove it."
            )
    return FolderScan([p.name for p in class_dirs], files, labels, hashes, skipped)


SCAN_DECODE_SIDE = 64  # JPEGs are decoded at about this size: a full check, at a fraction of the cost


def _check_image(path: Path, rel: str):
    """``(reason, bytes)``: why the file cannot be trained on (``None`` if it can) and its
    bytes. Only regular files are opened (a named pipe would block the scan for ever),
    and each image is decoded once, so a truncated or corrupt file is found here, skipped
    and named, instead of reaching training as a grey picture."""
    from tl.images import MAX_BYTES, ImageError, decode_image, read_regular_file

    try:
        data = read_regular_file(path, rel, MAX_BYTES + 1)
        decode_image(data, name=rel, draft_size=SCAN_DECODE_SIDE)
    except ImageError as exc:
        return ("not a regular file" if "not a regular file" in str(exc) else "not a readable image"), None
    return None, data


def _scan_cache_dir(runs_dir=None) -> Path:
    from tl.paths import cache_root

    return cache_root(runs_dir) / "scans"


def _walk_files(folder: Path):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
        for filename in sorted(filenames):
            yield os.path.join(dirpath, filename)


def load_folder(cfg, runs_dir=None) -> Data:
    return folder_data("folder", cfg.data_dir, cfg.image_size, runs_dir)


def folder_data(name: str, root, image_size: int, runs_dir=None) -> Data:
    """A :class:`Data` over a folder of class sub-folders (scan cached under the runs
    folder in use, images read lazily)."""
    root = str(Path(root).expanduser())
    scan = scan_folder_cached(root, _scan_cache_dir(runs_dir))
    files = scan.files
    draft = image_size

    def reader(index):
        path = os.path.join(root, files[index])
        try:
            return decode_image(path, name=path, draft_size=draft)
        except ImageError:
            # Keep rows aligned with labels: a file that broke after the scan reads as grey.
            return np.full((draft, draft, 3), 128, dtype=np.uint8)

    return Data(
        name=name,
        class_names=scan.class_names,
        labels=np.asarray(scan.labels, dtype=np.int64),
        keys=files,
        fingerprint=content_hash([f"{name}:v2"] + [f"{rel}|{h}" for rel, h in zip(files, scan.hashes)]),
        image_size=None,
        reader=reader,
        skipped=[tuple(item) for item in scan.skipped],
        content_hashes=scan.hashes,
    )


def skipped_message(skipped, shown: int = 10) -> str:
    """One line on the files a folder scan left out, naming the ones that looked like
    images but could not be read (the user can fix or remove them)."""
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(Counter(r for _, r in skipped).items()))
    broken = [key for key, reason in skipped if reason in ("not a readable image", "not a regular file")]
    names = ""
    if broken:
        names = f"; not trained on: {', '.join(broken[:shown])}" + (f" and {len(broken) - shown} more"
                                                                     if len(broken) > shown else "")
    return f"Skipped {len(skipped)} file(s) ({reasons}){names}."


def leakage(data: Data) -> dict | None:
    """Identical images (same file content) that fall in more than one split.

    Returns:
        ``None`` when the data has no content hashes (generated or in-memory datasets),
        else ``{"groups": n, "images": n, "pairs": {"train/test": n, ...},
        "examples": [[key, ...], ...]}`` where a group is one content seen in 2+ splits.
    """
    if data.content_hashes is None or not data.splits:
        return None
    split_of = {}
    for split, indices in data.splits.items():
        for i in indices:
            split_of[int(i)] = split
    groups = {}
    for i, digest in enumerate(data.content_hashes):
        groups.setdefault(digest, []).append(i)
    leaked, pairs, examples, images = 0, Counter(), [], 0
    for members in groups.values():
        splits = sorted({split_of[i] for i in members if i in split_of}, key=list(data.splits).index)
        if len(splits) < 2:
            continue
        leaked += 1
        images += len(members)
        for a in range(len(splits)):
            for b in range(a + 1, len(splits)):
                pairs[f"{splits[a]}/{splits[b]}"] += 1
        if len(examples) < 5:
            examples.append([data.keys[i] for i in members])
    return {"groups": leaked, "images": images, "pairs": dict(pairs), "examples": examples}
