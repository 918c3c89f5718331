"""Hostile uploads and file-system faults in :mod:`tl.ingest`: names too long for the file
system, paths that are both a file and a folder, duplicate entries, damaged or cut central
directories, names that lie about being UTF-8, control characters, overlapping-entry zip
bombs, entries that stream more bytes than declared, a full disk, a read-only or misplaced
data root, a store slot in the way, a named pipe as the source, and temporary folders left
by a killed ingest. Each refusal must be one sentence (a DataError with no chained
traceback), come within a hard time limit, and leave nothing behind: the test's whole
tmp tree (which also holds the system temp folder here) is compared before and after.
"""

import contextlib
import errno
import functools
import io
import itertools
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tl import ingest
from tl.datasets import synthetic_image
from tl.errors import DataError

from conftest import REPO

SECONDS = 20  # hard limit per hostile call: anything slower counts as a hang


# -- building inputs -----------------------------------------------------------------

def png(i: int, label: int = 0) -> bytes:
    """A small valid PNG, different for each ``(i, label)``."""
    buffer = io.BytesIO()
    Image.fromarray(synthetic_image(7, label * 1000 + i, label % 10, size=12)).save(buffer, "PNG")
    return buffer.getvalue()


def good_entries() -> list:
    """Two classes of three images: a valid upload, to which each case adds its poison."""
    return [(f"{cls}/{i}.png", png(i, label)) for label, cls in enumerate(["cats", "dogs"]) for i in range(3)]


def make_zip(entries, method=zipfile.ZIP_DEFLATED) -> bytes:
    """A zip from ``(name, bytes)`` pairs; a name ending in ``/`` is a folder entry."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on the duplicate names some cases need
        with zipfile.ZipFile(buffer, "w", method) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return buffer.getvalue()


def eocd(blob: bytes) -> int:
    """Offset of the end-of-central-directory record."""
    return blob.rfind(b"PK\x05\x06")


def patched(blob: bytes, offset: int, value: int, width: int = 4) -> bytes:
    """``blob`` with a little-endian integer overwritten at ``offset``."""
    data = bytearray(blob)
    data[offset:offset + width] = value.to_bytes(width, "little")
    return bytes(data)


def central_records(blob: bytes) -> tuple[bytes, list]:
    """``(bytes before the central directory, its records)`` of a zip without a comment."""
    start = struct.unpack_from("<L", blob, eocd(blob) + 16)[0]
    records, pos = [], start
    while blob[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack_from("<3H", blob, pos + 28)
        records.append(blob[pos:pos + 46 + n + m + k])
        pos += 46 + n + m + k
    return blob[:start], records


def rebuilt(head: bytes, records: list) -> bytes:
    """A zip from local data and central records, with a matching end record."""
    central = b"".join(records)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(records), len(records), len(central),
                      len(head), 0)
    return head + central + end


def renamed(record: bytes, old: bytes, new: bytes) -> bytes:
    """A central record with its (same-length) file name changed."""
    assert len(old) == len(new) and old in record
    return record.replace(old, new)


@functools.cache
def overlap_bomb(n: int = 1800, kernel_bytes: int = 256 * 1024) -> bytes:
    """David Fifield's overlapping zip bomb: n entries whose data all end in one shared
    compressed kernel. Entry i's data quotes (as stored deflate blocks) the local headers
    of entries i+1..n-1 and then runs into the kernel, so each entry inflates to about the
    kernel's size while the file holds the kernel once: about 200 KB that expand to
    over 500 MB, with no entry over the ratio floor and the overall ratio under 100."""
    kernel_out = bytes(kernel_bytes)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    kernel = squeeze.compress(kernel_out) + squeeze.flush()
    names = [f"{'cats' if i % 2 else 'dogs'}/{i:04d}.png".encode() for i in range(n)]
    headers = [b""] * n
    prefix, compressed = b"", len(kernel)  # entry i inflates to prefix + kernel_out
    for i in reversed(range(n)):
        crc = zlib.crc32(kernel_out, zlib.crc32(prefix))
        headers[i] = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, compressed,
                                 len(prefix) + kernel_bytes, len(names[i]), 0) + names[i]
        prefix, compressed = headers[i] + prefix, compressed + 5 + len(headers[i])
    quote = [struct.pack("<BHH", 0, len(h), len(h) ^ 0xFFFF) + h for h in headers[1:]] + [kernel]
    # Header i (i > 0) sits just past the 5-byte stored-block header that quotes it.
    offsets = [0] + [start + 5 for start in itertools.accumulate([len(q) for q in quote[:-2]],
                                                                  initial=len(headers[0]))]
    body = headers[0] + b"".join(quote)
    records = []
    for i in range(n):
        crc, csize, usize = struct.unpack_from("<3L", headers[i], 14)
        records.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, csize, usize,
                                   len(names[i]), 0, 0, 0, 0, 0, offsets[i]) + names[i])
    return rebuilt(body, records)


def not_utf8(blob: bytes, old: bytes, new: bytes, count: int = -1) -> bytes:
    """``blob`` with a name's bytes swapped for invalid UTF-8 (the UTF-8 flag stays set)."""
    assert len(old) == len(new) and old in blob
    return blob.replace(old, new, count)


class Endless(io.RawIOBase):
    """A stream that never ends: what an entry inflating without bound looks like."""

    def readable(self):
        return True

    def read(self, n=-1):
        return b"\0" * (n if n and n > 0 else ingest.CHUNK)


# -- checking outcomes ---------------------------------------------------------------

def tree(root) -> set:
    """Every path under ``root``, to compare before and after."""
    return {str(p.relative_to(root)) for p in Path(root).rglob("*")}


class Hung(BaseException):
    """Raised by :func:`deadline`; a BaseException, so no ``except OSError`` (TimeoutError's
    family) or ``except Exception`` in the code under test can swallow it."""


@contextlib.contextmanager
def deadline(seconds: float = SECONDS):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""
    def expired(*_):
        raise Hung(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_one_sentence(exc: BaseException) -> None:
    """The text the user sees is one sentence, and no traceback is chained to it."""
    text = str(exc)
    assert "\n" not in text and text.endswith("."), text
    assert not re.search(r"[.!?] +[A-Z]", text), f"more than one sentence: {text}"
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__), text


def refused(tmp_path, call, match: str, root: Path) -> str:
    """Run ``call``; it must raise one DataError sentence matching ``match`` in time, and
    leave the tmp tree as it was apart from an empty data root."""
    before = tree(tmp_path)
    with deadline(), pytest.raises(DataError, match=match) as info:
        call()
    assert_one_sentence(info.value)
    after = tree(tmp_path)
    assert before <= after, f"lost: {before - after}"
    created = after - before
    allowed = {str(root.relative_to(tmp_path))} if root.is_dir() and not any(root.iterdir()) else set()
    assert created <= allowed, f"left behind: {sorted(created - allowed)}"
    return str(info.value)


@pytest.fixture(autouse=True)
def _contained(tmp_path, monkeypatch):
    """The system temp folder moves inside tmp_path, so a stray temp file shows up in the
    before/after comparison."""
    (tmp_path / "systmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "systmp"))
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))


# -- hostile zips --------------------------------------------------------------------

LONG = "a" * 300


def _zip_case(kind: str) -> bytes:
    """The hostile zip for ``kind``."""
    good = good_entries()
    image = good[0][1]
    plain = make_zip(good)
    if kind == "long_file_name":
        return make_zip(good + [(f"cats/{LONG}.png", image)])
    if kind == "long_folder_name":
        return make_zip(good + [(f"{LONG}/1.png", image)])
    if kind == "long_path":  # each part fits, the whole path does not (PATH_MAX is 4096)
        return make_zip(good + [("/".join(["cats"] + ["b" * 250] * 18 + ["1.png"]), image)])
    if kind == "file_then_folder":
        return make_zip(good + [("cats/0.png/b.png", image)])
    if kind == "file_is_class_folder":
        return make_zip([("cats", b"x")] + good)
    if kind == "folder_entry_is_file":
        return make_zip([("cats/0.png/", b"")] + good)
    if kind == "duplicate_entry":
        return make_zip(good + [("cats/0.png", image)])
    if kind == "duplicate_after_normalising":
        return make_zip(good + [("cats//./0.png", image)])
    if kind == "control_character":
        return make_zip(good + [("cats/evil\n.png", image)])
    if kind == "eocd_offset_too_small":
        return patched(plain, eocd(plain) + 16, 10)
    if kind == "eocd_offset_too_large":
        return patched(plain, eocd(plain) + 16, len(plain) - 40)
    if kind == "eocd_size_wrong":
        return patched(plain, eocd(plain) + 12, 7)
    if kind == "cut_in_half":
        return plain[:len(plain) // 2]
    if kind == "cut_end_record":
        return plain[:-5]
    if kind == "central_signature_broken":
        start = plain.find(b"PK\x01\x02")
        return plain[:start] + b"PK\x09\x09" + plain[start + 4:]
    if kind == "entry_offset_past_end":
        head, records = central_records(plain)
        records[1] = patched(records[1], 42, 0x7FFFFFF0)
        return rebuilt(head, records)
    if kind == "entry_size_past_end":
        head, records = central_records(plain)
        records[-1] = patched(records[-1], 20, len(plain) * 4)
        return rebuilt(head, records)
    if kind == "name_not_utf8":
        return not_utf8(make_zip(good + [("cats/é.png", image)]), "é".encode(), b"\xff\xfe")
    if kind == "local_name_not_utf8":  # only the local header's copy is broken
        return not_utf8(make_zip(good + [("cats/é.png", image)]), "é".encode(), b"\xff\xfe", 1)
    if kind == "local_name_differs":
        blob = make_zip(good)
        return blob.replace(b"cats/1.png", b"cats/X.png", 1)
    if kind == "shared_local_header":  # two central records, one set of bytes
        head, records = central_records(plain)
        return rebuilt(head, records + [renamed(records[0], b"cats/0.png", b"dogs/9.png")])
    if kind == "overlapping_bomb":
        return overlap_bomb()
    raise AssertionError(kind)


ZIP_CASES = [
    ("long_file_name", "holds a name too long for the file system \\('cats/aaa"),
    ("long_folder_name", "holds a name too long for the file system \\('aaa"),
    ("long_path", "holds a path too long for the file system \\('cats/bbb"),
    ("file_then_folder", "holds 'cats/0.png' both as a file and as a folder"),
    ("file_is_class_folder", "holds 'cats' both as a file and as a folder"),
    ("folder_entry_is_file", "holds 'cats/0.png' both as a file and as a folder"),
    ("duplicate_entry", "holds 'cats/0.png' twice"),
    ("duplicate_after_normalising", "holds 'cats/0.png' twice"),
    ("control_character", r"holds a file name with a control character \('cats/evil\\n.png'\)"),
    ("eocd_offset_too_small", "is not a readable zip \\('cats/0.png' is not where its table"),
    ("eocd_offset_too_large", "is not a readable zip"),
    ("eocd_size_wrong", "is not a readable zip \\(its table of contents is damaged"),
    ("cut_in_half", "is not a readable zip \\(its table of contents is damaged or the file was cut"),
    ("cut_end_record", "is not a readable zip"),
    ("central_signature_broken", "is not a readable zip"),
    ("entry_offset_past_end", "is not a readable zip \\('cats/1.png' is not where"),
    ("entry_size_past_end", "is not a readable zip \\('dogs/2.png' runs past the end"),
    ("name_not_utf8", "holds a file name that is not valid UTF-8 although the zip says it is"),
    ("local_name_not_utf8", "cannot be read back as its header describes"),
    ("local_name_differs", "'cats/1.png' cannot be read back as its header describes"),
    ("shared_local_header", "looks like a zip bomb \\('cats/0.png' and 'dogs/9.png' share the same bytes"),
    ("overlapping_bomb", "looks like a zip bomb \\('dogs/0000.png' and 'cats/0001.png' share the same bytes"),
]


@pytest.mark.parametrize("kind, match", ZIP_CASES, ids=[c[0] for c in ZIP_CASES])
def test_hostile_zip_is_one_sentence_and_leaves_nothing(tmp_path, kind, match):
    blob = _zip_case(kind)
    root = tmp_path / "data"
    text = refused(tmp_path, lambda: ingest.ingest_zip(blob, root=root, name="'up.zip'"), match, root)
    assert text.startswith("'up.zip' ")


def test_overlapping_bomb_passes_every_other_check_and_is_still_refused(tmp_path):
    """The size, count and ratio limits all let this bomb through; the overlap check
    refuses it before a byte is written."""
    blob, limits = overlap_bomb(), ingest.LIMITS
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        infos = archive.infolist()
        assert archive.read(infos[-1]) == bytes(256 * 1024)  # a valid zip, entry by entry
        assert archive.read(infos[0]).endswith(bytes(256 * 1024))
    total, compressed = sum(i.file_size for i in infos), sum(i.compress_size for i in infos)
    assert all(i.file_size <= limits.ratio_floor_bytes for i in infos) and len(infos) <= limits.max_files
    assert 500 * 1024**2 < total <= limits.max_total_bytes and total < limits.max_ratio * compressed
    assert total > 2000 * len(blob)  # what it would cost: thousands of times its size
    root = tmp_path / "data"
    refused(tmp_path, lambda: ingest.ingest_zip(blob, root=root),
            "^The zip looks like a zip bomb .* share the same bytes\\); it was not extracted\\.$", root)


class Unseekable:
    """An output zipfile cannot seek in, so it writes sizes after the data (bit 3)."""

    def __init__(self):
        self.buffer = io.BytesIO()

    def write(self, data):
        return self.buffer.write(data)

    def flush(self):
        pass


def _valid_variant(kind: str) -> bytes:
    """A valid zip written in an unusual but legitimate way."""
    good = good_entries()
    if kind == "prepended_bytes":  # a self-extractor stub, or a zip appended to a file
        return b"MZ" + bytes(1000) + make_zip(good)
    if kind == "data_descriptors":
        out = Unseekable()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in good:
                archive.writestr(name, data)
        return out.buffer.getvalue()
    if kind == "zip64":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in good:
                with archive.open(name, "w", force_zip64=True) as entry:
                    entry.write(data)
        return buffer.getvalue()
    if kind == "stored":
        return make_zip(good, zipfile.ZIP_STORED)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["prepended_bytes", "data_descriptors", "zip64", "stored"])
def test_unusual_but_valid_zips_are_still_stored(tmp_path, kind):
    """The placement and overlap checks must not refuse what real zip tools write."""
    blob = _valid_variant(kind)
    with deadline():
        stored = ingest.ingest_zip(blob, root=tmp_path / "data")
    assert stored.counts == {"cats": 3, "dogs": 3} and not stored.skipped
    assert [p.name for p in (tmp_path / "data").iterdir()] == [stored.digest[:16]]


# -- hostile folder uploads ----------------------------------------------------------

FOLDER_CASES = [
    ("long_file_name", [(f"mine/cats/{LONG}.png", 0)], "holds a name too long for the file system"),
    ("file_and_folder", [("mine/cats/0.png/x.png", 0)], "holds 'mine/cats/0.png' both as a file and as a folder"),
    ("duplicate_name", [("mine/cats/0.png", 0)], "holds 'mine/cats/0.png' twice"),
    ("lone_surrogate", [("mine/cats/\ud800.png", 0)], r"cannot be stored \('mine/cats/\\ud800.png' is not valid"),
    ("hidden_lone_surrogate", [("mine/.\ud800", 0)], "cannot be stored"),
    ("newline_in_name", [("mine/dogs/a\nb.png", 0)], "control character"),
]


@pytest.mark.parametrize("kind, extra, match", FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_hostile_folder_upload_is_one_sentence_and_leaves_nothing(tmp_path, kind, extra, match):
    files = [("mine/" + rel, data) for rel, data in good_entries()]
    files += [(rel, png(i)) for rel, i in extra]
    root = tmp_path / "data"
    text = refused(tmp_path, lambda: ingest.ingest_files(files, root=root), match, root)
    assert text.startswith("The uploaded folder ")


# -- faults while storing ------------------------------------------------------------

class FullDiskFile(io.FileIO):
    """A file on a disk that fills up after the first few bytes."""

    def write(self, data):
        super().write(bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")


def _full_disk_open(path, mode="r", *args, **kwargs):
    return FullDiskFile(path, mode.replace("b", "")) if "x" in mode else open(path, mode, *args, **kwargs)


def _raise(code: int):
    def fail(*_, **__):
        raise OSError(code, os.strerror(code))
    return fail


def _fault(kind: str, tmp_path, monkeypatch) -> Path:
    """Arrange the fault for ``kind``; return the data root to ingest into."""
    root = tmp_path / "data"
    if kind == "disk_full_writing_an_image":
        monkeypatch.setattr(ingest, "open", _full_disk_open, raising=False)
    elif kind == "disk_full_writing_the_summary":
        monkeypatch.setattr(ingest, "atomic_write_json", _raise(errno.ENOSPC))
    elif kind == "read_only_file_system":
        monkeypatch.setattr(ingest.tempfile, "mkdtemp", _raise(errno.EROFS))
    elif kind == "io_error_on_rename":
        monkeypatch.setattr(ingest.os, "rename", _raise(errno.EIO))
    elif kind == "data_root_is_a_file":
        root.write_text("not a folder")
    elif kind == "data_root_parent_is_a_file":
        (tmp_path / "parent").write_text("not a folder")
        root = tmp_path / "parent" / "data"
    elif kind == "data_root_is_a_dangling_link":
        root.symlink_to(tmp_path / "gone")
    elif kind == "store_slot_is_a_file":
        root.mkdir()
        (root / ingest.hashlib.sha256(FAULT_ZIP).hexdigest()[:16]).write_text("in the way")
    elif kind == "store_slot_is_damaged":
        slot = root / ingest.hashlib.sha256(FAULT_ZIP).hexdigest()[:16]
        (slot / "data").mkdir(parents=True)
        (slot / "summary.json").write_text('{"digest": "torn')
    elif kind == "data_root_not_writable":
        root.mkdir(mode=0o500)
    else:
        raise AssertionError(kind)
    return root


FAULT_ZIP = make_zip(good_entries())

FAULT_CASES = [pytest.param(*case, id=case[0]) for case in [
    ("disk_full_writing_an_image", "could not be stored because the disk holding '.*/data' is full; free some space"),
    ("disk_full_writing_the_summary", "the disk holding '.*/data' is full"),
    ("read_only_file_system", ("could not be stored because '.*/data' is not writable \\(Read-only file system\\); "
                               "set TL_DATA_DIR to a writable folder")),
    ("io_error_on_rename", "could not be stored in '.*/data' \\(Input/output error\\); check that the folder"),
    ("data_root_is_a_file", "The data folder '.*/data' cannot be used because it is a file, not a folder; move"),
    ("data_root_parent_is_a_file", "The data folder '.*/parent/data' cannot be used because '.*/parent' is a file"),
    ("data_root_is_a_dangling_link", "The data folder '.*/data' cannot be used because it is a file"),
    ("store_slot_is_a_file", "could not be stored because '.*/data/[0-9a-f]{16}' is in the way"),
    ("store_slot_is_damaged", "could not be stored because '.*/data/[0-9a-f]{16}' is in the way"),
]] + [
    pytest.param("data_root_not_writable", "is not writable \\(Permission denied\\)", id="data_root_not_writable",
                 marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 folder")),
]


@pytest.mark.parametrize("kind, match", FAULT_CASES)
def test_storage_fault_is_one_sentence_and_leaves_nothing(tmp_path, monkeypatch, kind, match):
    root = _fault(kind, tmp_path, monkeypatch)
    try:
        refused(tmp_path, lambda: ingest.ingest_zip(FAULT_ZIP, root=root), match, root)
    finally:
        if root.is_dir() and not root.is_symlink():
            root.chmod(0o700)  # so pytest can remove it
    leftovers = [p for p in root.iterdir() if p.name.startswith(".tmp-")] if root.is_dir() else []
    assert not leftovers


def test_folder_upload_on_a_full_disk_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "open", _full_disk_open, raising=False)
    files = [("mine/" + rel, data) for rel, data in good_entries()]
    root = tmp_path / "data"
    refused(tmp_path, lambda: ingest.ingest_files(files, root=root),
            "^The uploaded folder could not be stored because the disk holding .* is full", root)


def test_a_named_pipe_as_the_source_is_refused_without_blocking(tmp_path):
    """Opening a pipe for reading waits for a writer for ever; it must be refused at once."""
    pipe = tmp_path / "upload.zip"
    os.mkfifo(pipe)
    root = tmp_path / "data"
    refused(tmp_path, lambda: ingest.ingest_zip(pipe, root=root),
            "upload.zip' is not a regular file \\(a folder, pipe or device\\); give the path", root)


# -- the byte counter ----------------------------------------------------------------

def _counting_open(counter: list):
    """An ``open`` for :mod:`tl.ingest` that adds every byte it writes to ``counter``."""
    class Counting(io.FileIO):
        def write(self, data):
            counter.append(len(data))
            return super().write(data)

    return lambda path, mode="r", *a, **k: Counting(path, mode.replace("b", "")) if "x" in mode else open(path, mode, *a, **k)


def test_an_entry_streaming_past_its_declared_size_is_stopped_mid_entry(tmp_path, monkeypatch):
    """zipfile stops at the declared size itself; this checks ingest's own counter by
    giving one entry a stream without end."""
    real = ingest._zip_entry

    def endless_entry(archive, info):
        entry = real(archive, info)
        if info.filename == "dogs/2.png":
            entry.open = Endless
        return entry

    written = []
    monkeypatch.setattr(ingest, "_zip_entry", endless_entry)
    monkeypatch.setattr(ingest, "open", _counting_open(written), raising=False)
    root = tmp_path / "data"
    refused(tmp_path, lambda: ingest.ingest_zip(FAULT_ZIP, root=root),
            "holds 'dogs/2.png', which expands beyond the size its header states", root)
    assert sum(written) <= sum(len(data) for _, data in good_entries())  # nothing past the lie


def test_the_running_total_stops_extraction_at_the_limit(tmp_path, monkeypatch):
    """With the declared-size check passed (here: made with default limits), the running
    total of bytes really written still stops at ``max_total_bytes``."""
    real = ingest._check_entries
    monkeypatch.setattr(ingest, "_check_entries",
                        lambda entries, limits, name, **kw: real(entries, ingest.UploadLimits(), name, **kw))
    written = []
    monkeypatch.setattr(ingest, "open", _counting_open(written), raising=False)
    sizes = [len(data) for _, data in good_entries()]
    limit = sum(sizes[:3]) + 1  # room for the first class, not the second
    root = tmp_path / "data"
    refused(tmp_path, lambda: ingest.ingest_zip(FAULT_ZIP, root=root,
                                                limits=ingest.UploadLimits(max_total_bytes=limit)),
            "^The zip expands beyond the limit of [0-9]+ KB; it was not extracted\\.$", root)
    assert 0 < sum(written) <= limit


# -- leftovers of killed ingests -----------------------------------------------------

CHILD = """
import os, signal, sys, time
sys.path.insert(0, {repo!r})
from tl import ingest
def stop(*_):
    print("extracted", flush=True)
    if {kill}:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)
ingest._check_images = stop
ingest.ingest_zip({blob!r}, root={root!r})
"""


def _child_ingest(root: Path, kill: bool) -> subprocess.Popen:
    """A process that starts an ingest into ``root`` and, once its files are extracted,
    is killed (``kill``) or hangs until the test kills it."""
    blob = make_zip([(f"{c}/{i}.png", png(i, 5)) for c in ("x", "y") for i in range(3)])
    code = CHILD.format(repo=str(REPO), kill=kill, blob=blob, root=str(root))
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                            stdout=subprocess.PIPE, text=True)


def _leftovers(root: Path) -> list:
    """Names of the temporary folders in the data root."""
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp-"))


def _wait_for_leftover(child: subprocess.Popen, root: Path) -> str:
    """The child's temporary folder, once all its images are extracted (it says so on
    stdout; waiting for files instead would race with its last writes)."""
    with deadline(60):
        assert child.stdout.readline() == "extracted\n", "the child ingest ended early"
    (leftover,) = _leftovers(root)
    return leftover


def test_a_killed_ingests_temporary_folder_is_removed_by_the_next_ingest(tmp_path):
    root = tmp_path / "data"
    stored = ingest.ingest_zip(FAULT_ZIP, root=root)
    child = _child_ingest(root, kill=True)
    leftover = _wait_for_leftover(child, root)
    child.communicate(timeout=60)  # reaps it and closes its pipe
    assert child.returncode == -signal.SIGKILL
    # Things that merely look similar are not ours to remove: other names, and a file
    # (not a folder) named exactly like a leftover of the same dead process.
    others = [".tmp-notes", f"{leftover}x", leftover[:-1] + ("b" if leftover[-1] != "b" else "c")]
    (root / others[0]).mkdir()
    (root / others[1]).mkdir()
    (root / others[2]).write_text("keep me")
    again = ingest.ingest_zip(FAULT_ZIP, root=root)
    assert again.reused and again.path == stored.path and again.counts == {"cats": 3, "dogs": 3}
    assert not (root / leftover).exists()
    assert sorted(p.name for p in root.iterdir()) == sorted(others + [stored.digest[:16]])
    assert sorted(p.name for p in stored.path.iterdir()) == ["cats", "dogs"]


def test_a_live_ingests_temporary_folder_is_kept_unless_a_day_old(tmp_path):
    root = tmp_path / "data"
    child = _child_ingest(root, kill=False)
    try:
        leftover = _wait_for_leftover(child, root)
        stored = ingest.ingest_zip(FAULT_ZIP, root=root)
        assert (root / leftover).is_dir()  # its process is still at work
        old = time.time() - 2 * 24 * 3600
        os.utime(root / leftover, (old, old))
        ingest.ingest_zip(FAULT_ZIP, root=root)
        assert not (root / leftover).exists() and stored.path.is_dir()
    finally:
        child.kill()
        child.communicate(timeout=60)
