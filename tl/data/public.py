"""The public datasets that download once into the Keras cache: CIFAR-10 (through Keras)
and the archives of class folders (fetched with progress, checked, extracted)."""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tl.data.core import Data, content_hash
from tl.data.folder import folder_data
from tl.errors import DataError, DownloadError
from tl.files import sha256_of

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def load_cifar10(cfg, runs_dir=None) -> Data:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:
        raise download_error("CIFAR-10", "datasets", str(exc)) from None
    images = np.concatenate([x_train, x_test])
    labels = np.concatenate([y_train, y_test]).reshape(-1).astype(np.int64)
    return Data(
        name="cifar10",
        class_names=list(CIFAR10_CLASSES),
        labels=labels,
        keys=[f"cifar10/{i}" for i in range(len(labels))],
        fingerprint=content_hash(["cifar10:v1"]),
        image_size=32,
        reader=lambda index: images[index],
    )


def download_error(what: str, subdir: str, message: str, url: str | None = None,
                   fname: str | None = None) -> DownloadError:
    """One sentence for a failed download: what, from where, where to put it by hand."""
    from tl.downloads import failed_url, keras_home

    url = url or failed_url(message) or "its source"
    where = Path(keras_home()) / subdir
    return DownloadError(
        f"Could not download {what} from {url} (no internet connection?); download it by "
        f"hand into {where}{f' as {fname}' if fname else ''} or pick another dataset."
    )


# -- downloadable folder datasets ------------------------------------------------------
#
# keras.utils.get_file has no progress callback, so the archive is fetched here (urllib,
# in chunks, reporting bytes) into the very path get_file uses, checked against its
# sha256, and then get_file is called on it: it finds the file in its cache, verifies the
# checksum again and extracts it. A checksum mismatch deletes the file, so a corrupt
# download is never reused.

@dataclass(frozen=True)
class Download:
    """Where a dataset's archive comes from and how it unpacks.

    Attributes:
        title: the dataset's name in messages.
        url: the archive's URL.
        sha256: its checksum, or ``None`` where none is published (then unverified).
        fname: the archive's file name in the Keras cache.
        inner: the folder inside the extracted archive that holds the class folders.
        size: the archive's size in bytes, when known (for progress without a header).
        subdir: the Keras cache sub-folder.
    """

    title: str
    url: str
    sha256: str | None
    fname: str
    inner: str
    size: int | None = None
    subdir: str = "datasets"


DOWNLOADS = {
    # url, size and sha256 as listed in tensorflow_datasets/url_checksums/tf_flowers.txt.
    "tf_flowers": Download(
        "TF Flowers", "http://download.tensorflow.org/example_images/flower_photos.tgz",
        "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c",
        "flower_photos.tgz", "flower_photos", size=228_813_984),
    # url, size and sha256 as listed in tensorflow_datasets/url_checksums/stanford_dogs.txt.
    "stanford_dogs": Download(
        "Stanford Dogs", "http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar",
        "a443fc2f9a851aa1a7b8e4fa4af94b8459fce2c9f5a2f4dd4669cf9673a4ec58",
        "stanford_dogs_images.tar", "Images", size=793_579_520),
    # No checksum is published for this archive (none found in TFDS or the authors'
    # repository), so it is downloaded unverified rather than against an invented hash.
    "freiburg_groceries": Download(
        "Freiburg Groceries",
        "http://aisdatasets.informatik.uni-freiburg.de/freiburg_groceries_dataset/freiburg_groceries_dataset.tar.gz",
        None, "freiburg_groceries_dataset.tar.gz", "images"),
}


def is_cached(download: Download) -> bool:
    """Whether the dataset is already downloaded and extracted."""
    folder, done = _extracted(download)
    return done.is_file() and folder.is_dir()


def fetch(download: Download, progress=None) -> Path:
    """Download (once), verify and extract a dataset archive; return its class folders.

    Args:
        download: what to fetch.
        progress: called as ``progress(done_bytes, total_bytes_or_None)`` while downloading.

    Raises:
        DownloadError: no connection, a server error, or a checksum mismatch.
        DataError: the archive does not hold the expected folder.
    """
    import keras

    folder, done = _extracted(download)
    if done.is_file() and folder.is_dir():
        return folder
    archive = folder.parent.parent / download.fname
    if not (archive.is_file() and _checksum_ok(archive, download.sha256)):
        _download(download, archive, progress)
    try:
        keras.utils.get_file(fname=download.fname, origin=download.url, file_hash=download.sha256,
                             cache_subdir=download.subdir, extract=True)
    except ValueError as exc:  # get_file's checksum mismatch
        archive.unlink(missing_ok=True)
        raise _checksum_error(download, archive) from exc
    except Exception as exc:
        raise download_error(download.title, download.subdir, str(exc), url=download.url,
                             fname=download.fname) from None
    if not folder.is_dir():
        raise DataError(f"The archive from {download.url} has no folder '{download.inner}'; delete "
                        f"{archive} and try again.")
    done.write_text(download.url + "\n")
    return folder


def _extracted(download: Download) -> tuple[Path, Path]:
    """``(class folders, completion marker)`` where get_file extracts the archive."""
    from tl.downloads import keras_home

    stem = download.fname[:download.fname.find(".")] if "." in download.fname else download.fname
    extracted = Path(keras_home()) / download.subdir / f"{stem}_extracted"
    return extracted / download.inner, extracted / ".tl-complete"


def _download(download: Download, target: Path, progress) -> None:
    """Fetch the URL into ``target`` (via a ``.part`` file), then check its checksum."""
    import urllib.error
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(download.url, timeout=30) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or download.size
            done = 0
            if progress:
                progress(0, total)
            while chunk := response.read(1024 * 1024):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise download_error(download.title, download.subdir, str(exc), url=download.url,
                             fname=download.fname) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if not _checksum_ok(part, download.sha256):
        part.unlink(missing_ok=True)
        raise _checksum_error(download, target)
    os.replace(part, target)


def _checksum_ok(path: Path, sha256: str | None) -> bool:
    if sha256 is None:
        return True
    with open(path, "rb") as handle:
        return sha256_of(handle) == sha256


def _checksum_error(download: Download, target: Path) -> DownloadError:
    return DownloadError(
        f"The file downloaded from {download.url} does not match its published sha256 checksum "
        f"(a corrupt or changed download), so it was deleted; try again, or put a good copy in "
        f"{target.parent} as {target.name}."
    )


def download_progress_printer(out, title: str):
    """A ``progress`` callback that prints one line per 10% (or per 50 MB without a size)."""
    state = {"shown": -1}

    def show(done: int, total):
        step = int(done * 10 / total) if total else done // (50 * 1024**2)
        if step != state["shown"]:
            state["shown"] = step
            size = f"{done / 1024**2:.0f}/{total / 1024**2:.0f} MB" if total else f"{done / 1024**2:.0f} MB"
            percent = f" ({done / total:.0%})" if total else ""
            print(f"Downloading {title}: {size}{percent}", file=out, flush=True)

    return show


def downloaded_loader(name: str):
    def load(cfg, runs_dir=None) -> Data:
        return folder_data(name, fetch(DOWNLOADS[name]), cfg.image_size, runs_dir)

    return load
