import io
import os
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tl import datasets, ingest
from tl.errors import DataError

from conftest import tiny_config, write_image_folder


@pytest.fixture(autouse=True)
def _scan_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))


def tree(root) -> set:
    """Every path under ``root`` (the whole tmp tree), to compare before and after."""
    return {str(p.relative_to(root)) for p in Path(root).rglob("*")}


def make_zip(entries) -> bytes:
    """A zip from ``(name, bytes)`` pairs or ZipInfo objects."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def photo_entries(tmp_path, counts, top="") -> list:
    src = write_image_folder(tmp_path / "src", counts)
    entries = [(top + str(p.relative_to(src)), p.read_bytes()) for p in sorted(src.rglob("*.png"))]
    shutil.rmtree(src)
    return entries


def test_zip_in_a_top_folder_is_stored_with_junk_skipped_and_counted(tmp_path):
    entries = photo_entries(tmp_path, {"cat": 3, "dog": 4}, top="photos/")
    entries += [("__MACOSX/photos/cat/._000.png", b"mac"), ("photos/cat/.DS_Store", b"x"),
                ("photos/dog/Thumbs.db", b"x"), ("photos/notes.txt", b"hello"),
                ("photos/dog/broken.jpg", b"not a jpeg")]
    stored = ingest.ingest_zip(make_zip(entries), root=tmp_path / "data")
    assert stored.counts == {"cat": 3, "dog": 4} and not stored.reused
    assert stored.skipped == {"junk files": 3, "non-image files": 1, "unreadable images": 1}
    assert sorted(p.name for p in stored.path.iterdir()) == ["cat", "dog"]
    assert "2 classes, 7 images; skipped 3 junk files" in stored.describe()
    data = datasets.load(tiny_config(dataset="folder", data_dir=str(stored.path), samples_per_class=0))
    assert data.counts() == {"cat": 3, "dog": 4}


def test_the_same_zip_twice_is_stored_once(tmp_path):
    blob = make_zip(photo_entries(tmp_path, {"a": 3, "b": 3}))
    first = ingest.ingest_zip(blob, root=tmp_path / "data")
    before = tree(tmp_path / "data")
    second = ingest.ingest_zip(io.BytesIO(blob), root=tmp_path / "data")
    assert second.reused and second.path == first.path and second.counts == first.counts
    assert tree(tmp_path / "data") == before
    assert [p.name for p in (tmp_path / "data").iterdir()] == [first.digest[:16]]


def test_folder_upload_of_relative_paths(tmp_path):
    class Uploaded:  # what st.file_uploader(accept_multiple_files="directory") returns
        def __init__(self, name, data):
            self.name, self._data = name, data

        def getvalue(self):
            return self._data

    files = [Uploaded(name, data) for name, data in photo_entries(tmp_path, {"x": 3, "y": 3}, top="mine/")]
    files.append(Uploaded("mine/.DS_Store", b"junk"))
    stored = ingest.ingest_files(files, root=tmp_path / "data")
    assert stored.counts == {"x": 3, "y": 3} and stored.skipped == {"junk files": 1}
    assert ingest.ingest_files([(f.name, f.getvalue()) for f in files], root=tmp_path / "data").reused


def _symlink_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("a/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _lying_header_zip(tmp_path) -> bytes:
    """An entry whose header claims 10 bytes but that inflates to 2 MB."""
    real = make_zip([("a/big.png", b"\0" * (2 * 1024**2))] + photo_entries(tmp_path, {"b": 3}))
    with zipfile.ZipFile(io.BytesIO(real)) as archive:
        info = archive.getinfo("a/big.png")
    data = bytearray(real)
    # Patch the uncompressed size in the central directory record of a/big.png.
    central = data.rfind(b"PK\x01\x02", 0, data.find(b"a/big.png", data.find(b"PK\x01\x02")) + 1)
    data[central + 24:central + 28] = (10).to_bytes(4, "little")
    assert info.file_size == 2 * 1024**2
    return bytes(data)


@pytest.mark.parametrize("kind, message", [
    ("zip_slip", "leaves its folder ('../../evil.png')"),
    ("zip_slip_backslash", "leaves its folder ('a\\..\\..\\evil.png')"),
    ("absolute", "absolute path ('/tmp/evil.png')"),
    ("drive_letter", "absolute path ('C:\\evil.png')"),
    ("symlink", "symbolic link ('a/link.png')"),
    ("bomb_ratio", "looks like a zip bomb"),
    ("bomb_total", "over the limit of"),
    ("too_many", "more than the limit of 20"),
    ("lying_header", "cannot be read back as its header describes"),
])
def test_malicious_archives_are_refused_and_nothing_is_written(tmp_path, kind, message):
    good = photo_entries(tmp_path, {"a": 3, "b": 3})
    limits = ingest.UploadLimits()
    if kind == "zip_slip":
        blob = make_zip(good + [("../../evil.png", good[0][1])])
    elif kind == "zip_slip_backslash":
        blob = make_zip(good + [("a\\..\\..\\evil.png", good[0][1])])
    elif kind == "absolute":
        blob = make_zip(good + [("/tmp/evil.png", good[0][1])])
    elif kind == "drive_letter":
        blob = make_zip(good + [("C:\\evil.png", good[0][1])])
    elif kind == "symlink":
        blob = _symlink_zip()
    elif kind == "bomb_ratio":
        blob = make_zip(good + [("a/zeros.png", b"\0" * (8 * 1024**2))])
    elif kind == "bomb_total":
        blob = make_zip(good + [("a/zeros.png", bytes(np.random.default_rng(0).integers(0, 255, 200_000,
                                                                                        dtype=np.uint8)))])
        limits = ingest.UploadLimits(max_total_bytes=100_000)
    elif kind == "too_many":
        blob = make_zip(good + [(f"a/{i}.png", good[0][1]) for i in range(20)])
        limits = ingest.UploadLimits(max_files=20)
    else:
        blob = _lying_header_zip(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(DataError) as info:
        ingest.ingest_zip(blob, root=tmp_path / "data", limits=limits)
    assert message in str(info.value)
    after = tree(tmp_path)
    assert after - before <= {"data"}  # at most the (empty) data root itself
    assert not any((tmp_path / "data").iterdir()) if (tmp_path / "data").exists() else True
    assert not (tmp_path.parent / "evil.png").exists() and not Path("/tmp/evil.png").exists()


@pytest.mark.parametrize("counts, extra, message", [
    ({"only": 3}, [], "has only one class ('only')"),
    ({"a": 3, "b": 2}, [("empty/", b"")], "Class folder 'empty' has no images"),
    ({"a": 3, "b": 2}, [("c/readme.txt", b"hi")], "Class folder 'c' has no images"),
    ({}, [("notes.txt", b"hi")], "has no images in class folders"),
])
def test_bad_layouts_are_refused_with_the_valid_layout(tmp_path, counts, extra, message):
    entries = photo_entries(tmp_path, counts) if counts else []
    with pytest.raises(DataError) as info:
        ingest.ingest_zip(make_zip(entries + extra), root=tmp_path / "data")
    assert message in str(info.value)
    if "no images in class folders" in message or "one class" in message:
        assert "one folder per class" in str(info.value)
    assert not any((tmp_path / "data").glob("*")) if (tmp_path / "data").exists() else True


def test_not_a_zip_is_one_sentence(tmp_path):
    with pytest.raises(DataError, match="is not a zip file; upload a .zip of class folders"):
        ingest.ingest_zip(b"hello", root=tmp_path / "data")


def test_second_scan_of_an_unchanged_folder_reads_no_image(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "photos", {"a": 3, "b": 3})
    first = datasets.scan_folder_cached(root)
    from tl import images

    opened = []
    real = images.read_regular_file  # the scan reads every file through it
    monkeypatch.setattr(images, "read_regular_file", lambda path, *a: opened.append(path) or real(path, *a))
    again = datasets.scan_folder_cached(root)
    assert again == first and not opened
    write_image_folder(root, {"a": 4})  # one more file: the key changes, the scan reruns
    assert len(datasets.scan_folder_cached(root).files) == 7 and len(opened) == 7


def test_a_damaged_scan_cache_file_is_scanned_again(tmp_path):
    root = write_image_folder(tmp_path / "photos", {"a": 3, "b": 3})
    first = datasets.scan_folder_cached(root, cache_dir=tmp_path / "scans")
    (cache_file,) = (tmp_path / "scans").iterdir()
    cache_file.write_text('{"class_names": ["a"')  # a torn write
    assert datasets.scan_folder_cached(root, cache_dir=tmp_path / "scans") == first


def test_identical_images_in_two_splits_are_reported(tmp_path):
    root = write_image_folder(tmp_path / "photos", {"a": 10, "b": 10})
    for i in range(10):  # b's images are copies of a's: every copy pair is a duplicate
        shutil.copy(root / "a" / f"{i:03d}.png", root / "b" / f"{i:03d}.png")
    cfg = tiny_config(dataset="folder", data_dir=str(root), samples_per_class=0, val_fraction=0.2,
                      test_fraction=0.2)
    data = datasets.load(cfg)
    report = datasets.leakage(data)
    split_of = {int(i): s for s, idx in data.splits.items() for i in idx}
    expected = sum(split_of[i] != split_of[i + 10] for i in range(10))
    assert expected > 0 and report["groups"] == expected and report["images"] == 2 * expected
    assert sum(report["pairs"].values()) == expected
    clean = datasets.load(tiny_config(dataset="folder", data_dir=str(write_image_folder(
        tmp_path / "clean", {"a": 5, "b": 5}))))
    assert datasets.leakage(clean)["groups"] == 0
    assert datasets.leakage(datasets.load(tiny_config())) is None  # synthetic: no files


def test_folder_splits_are_stratified_and_seeded(tmp_path):
    root = write_image_folder(tmp_path / "photos", {"a": 10, "b": 20})
    cfg = tiny_config(dataset="folder", data_dir=str(root), samples_per_class=0, val_fraction=0.2,
                      test_fraction=0.2)
    one, two = datasets.load(cfg), datasets.load(cfg)
    assert all(np.array_equal(one.splits[k], two.splits[k]) for k in one.splits)
    assert one.counts("test") == {"a": 2, "b": 4} and one.counts("val") == {"a": 2, "b": 4}
    other = datasets.load(cfg.replace(seed=1))
    assert not np.array_equal(one.splits["test"], other.splits["test"])


def test_ingest_imports_no_tensorflow():
    import subprocess
    import sys

    code = "import sys, tl.ingest; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], env={**os.environ})
    assert out.stdout.strip() == "False", out.stderr
