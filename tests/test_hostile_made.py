"""The hostile-input battery for datasets made in the app (the tl.data.made package, ``python -m tl
data``): files that are not photos, bombs, names that would be paths or hide control
characters, duplicates, the limits, unknown names, damaged manifests, and removing what a
finished run trained on.

Every case expects one sentence (one line, no traceback, a full stop) and checks that
nothing already stored is lost or changed: the counts and every file under the made
datasets' folder are the same before and after. Cases run in an empty working directory,
bounded in time, and write nothing there.
"""

import functools
import hashlib
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tl import datasets
from tl.config import RunConfig
from tl.data import made
from tl.errors import UserError

from conftest import REPO, photo, photos, tiny_config, train_run

CASE_SECONDS = 120


@pytest.fixture(autouse=True)
def bounded(tmp_path, monkeypatch):
    """Each case in an empty working directory, stopped with TimeoutError if it hangs."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    def timeout(signum, frame):
        raise TimeoutError(f"the case took more than {CASE_SECONDS} s (a hang)")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(CASE_SECONDS)
    try:
        yield cwd
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not list(cwd.iterdir()), f"written into the working directory: {list(cwd.iterdir())}"


def one_sentence(text: str) -> str:
    """The message, checked to be one finished line of words (no traceback, no repr dump)."""
    text = str(text).strip()
    assert text, "no message at all"
    assert "\n" not in text and "\r" not in text, f"more than one line: {text!r}"
    assert "Traceback" not in text and not re.match(r"^[A-Za-z.]*(Error|Exception)\b", text), text
    assert text.endswith((".", ".)")), f"not a finished sentence: {text!r}"
    assert len(text) < 600, f"too long for one sentence: {text!r}"
    return text


# -- real photographs, and a dataset to keep safe -----------------------------------------------

@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "data"
    monkeypatch.setenv("TL_DATA_DIR", str(path))
    return path


@pytest.fixture
def pets(data_dir):
    """'Pets': cat 4 photos, coffee 4 photos (version 3)."""
    made.create_dataset("Pets")
    made.add_photos("Pets", "cat", photos(4))
    return made.add_photos("Pets", "coffee", photos(4, "coffee")).dataset


def state(data_dir: Path) -> tuple:
    """Each readable dataset's classes and counts, and every file under made/ with its hash."""
    counts = {d.name: (d.version, d.counts()) for d in made.list_datasets()}
    files = {}
    for path in sorted((data_dir / "made").rglob("*")):
        files[str(path.relative_to(data_dir))] = (hashlib.sha256(path.read_bytes()).hexdigest()
                                                  if path.is_file() else None)
    return counts, files


@pytest.fixture
def unchanged(pets, data_dir):
    """Asserts, after the case, that nothing stored changed."""
    before = state(data_dir)
    yield pets
    assert state(data_dir) == before


# -- bad files ------------------------------------------------------------------------------------

def _truncated_jpeg() -> bytes:
    data = photo(20)
    return data[: len(data) // 2]


def _declared_huge_png() -> bytes:
    """A tiny PNG whose header declares 60000 x 60000 pixels."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
            + chunk(b"IEND", b""))


@functools.cache
def _real_huge_png() -> bytes:
    """A valid 20000 x 20000 grey PNG: 400 million pixels in well under a megabyte."""
    out = io.BytesIO()
    Image.new("L", (20000, 20000)).save(out, "PNG")
    return out.getvalue()


BAD_FILES = {
    "text": (lambda: b"just some notes, not a photo\n", "is not an image"),
    "html named jpg": (lambda: b"<html><body>404 not found</body></html>", "is not an image"),
    "random bytes": (lambda: os.urandom(3000), "is not an image"),
    "zero bytes": (lambda: b"", "is empty"),
    "truncated jpeg": (_truncated_jpeg, ""),
    "declared huge png": (_declared_huge_png, "decompression bomb"),
    "real huge png": (_real_huge_png, "decompression bomb"),
}


@pytest.mark.parametrize("class_name", ["cat", "dog"], ids=["existing class", "new class"])
@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_bad_file_is_refused_in_one_sentence_and_nothing_changes(unchanged, kind, class_name):
    make, words = BAD_FILES[kind]
    report = made.add_photos("Pets", class_name, [("bad\nname.jpg", make())])
    assert report.added == [] and report.duplicates == []
    [(name, sentence)] = report.refused
    assert report.messages() == [sentence]
    assert words in one_sentence(sentence) and "bad\\nname.jpg" in sentence and sentence.endswith("not added.")


def test_a_bad_file_among_good_ones_is_refused_and_the_others_land(pets, data_dir):
    report = made.add_photos("Pets", "cat", [("good.jpg", photo(30)), ("empty.jpg", b""), ("also.jpg", photo(31))])
    assert report.added == ["good.jpg", "also.jpg"] and [n for n, _ in report.refused] == ["empty.jpg"]
    one_sentence(report.refused[0][1])
    assert made.find("Pets").counts() == {"cat": 6, "coffee": 4}


# -- names --------------------------------------------------------------------------------------

BAD_NAMES = {
    "slash": "cats/dogs",
    "backslash": "cats\\dogs",
    "dot dot": "..",
    "dot": ".",
    "dot dot slash": "../../etc",
    "hidden": ".cats",
    "nul": "ca\x00t",
    "newline": "cat\nsecond line",
    "tab": "ca\tt",
    "escape": "\x1b[31mred",
    "delete": "cat\x7f",
    "300 characters": "c" * 300,
    "empty": "",
    "spaces": "   ",
    "lone surrogate": "cat\udc80",
    "not text": 42,
}


@pytest.mark.parametrize("name", list(BAD_NAMES))
def test_a_bad_class_name_is_one_sentence_and_nothing_changes(unchanged, name):
    with pytest.raises(UserError) as caught:
        made.add_photos("Pets", BAD_NAMES[name], photos(1, "astronaut"))
    one_sentence(caught.value)
    with pytest.raises(UserError) as caught:
        made.rename_class("Pets", "cat", BAD_NAMES[name])
    one_sentence(caught.value)


@pytest.mark.parametrize("name", list(BAD_NAMES))
def test_a_bad_dataset_name_is_one_sentence_and_makes_nothing(unchanged, name):
    with pytest.raises(UserError) as caught:
        made.create_dataset(BAD_NAMES[name])
    one_sentence(caught.value)
    with pytest.raises(UserError) as caught:
        made.import_zip(BAD_NAMES[name], made.export_zip("Pets"))
    one_sentence(caught.value)


def test_a_taken_dataset_name_is_one_sentence_for_create_and_import(unchanged):
    for call in (lambda: made.create_dataset("PETS"), lambda: made.import_zip(" pets", made.export_zip("Pets"))):
        with pytest.raises(UserError) as caught:
            call()
        assert "already exists" in one_sentence(caught.value)


# -- duplicates and limits -------------------------------------------------------------------------

def test_the_same_photo_again_is_said_once_and_nothing_changes(unchanged):
    report = made.add_photos("Pets", "cat", [("again.jpg", photo(0))])
    assert report.added == [] and report.duplicates == ["again.jpg"]
    [sentence] = report.messages()
    assert "already in this class" in one_sentence(sentence)


@pytest.mark.parametrize("target", ["coffee", "dog"], ids=["other class", "new class"])
def test_the_same_photo_in_another_class_names_both_and_nothing_changes(unchanged, target):
    report = made.add_photos("Pets", target, [("lucy.jpg", photo(2))])
    [(name, sentence)] = report.refused
    assert f"already in class 'cat', so it was not added to '{target}'" in one_sentence(sentence)


LIMIT_CASES = {
    "photos": (made.DatasetLimits(max_photos=8), "cat"),
    "bytes": (None, "cat"),  # set to the dataset's size in the case
    "photo bytes": (made.DatasetLimits(max_photo_bytes=1000), "cat"),
    "classes": (made.DatasetLimits(max_classes=2), "dog"),
    "photos, new class": (made.DatasetLimits(max_photos=8), "dog"),
}


@pytest.mark.parametrize("case", list(LIMIT_CASES))
def test_a_dataset_at_its_limits_refuses_in_one_sentence_and_keeps_everything(unchanged, case):
    limits, target = LIMIT_CASES[case]
    limits = limits or made.DatasetLimits(max_bytes=unchanged.total_bytes)
    try:
        report = made.add_photos("Pets", target, photos(2, "astronaut"), limits=limits)
    except UserError as exc:
        assert case == "classes"
        assert "limit" in one_sentence(exc)
        return
    assert case != "classes" and report.added == [] and len(report.refused) == 2
    for _, sentence in report.refused:
        assert "limit" in one_sentence(sentence)


# -- unknown names ---------------------------------------------------------------------------------

def _fifo(tmp_path):
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    return str(path)


UNKNOWN = {
    "add to unknown dataset": lambda t: made.add_photos("Plants", "rose", photos(1, "astronaut")),
    "remove from unknown dataset": lambda t: made.remove_photo("Plants", "rose", "0123456789abcdef"),
    "remove from unknown class": lambda t: made.remove_photo("Pets", "dog", made.find("Pets").classes["cat"][0].hash),
    "remove unknown hash": lambda t: made.remove_photo("Pets", "cat", "0123456789abcdef"),
    "remove a hash of another class": lambda t: made.remove_photo("Pets", "cat",
                                                                  made.find("Pets").classes["coffee"][0].hash),
    "remove too short a hash": lambda t: made.remove_photo("Pets", "cat", "ab"),
    "remove a folder": lambda t: made.remove_photo("Pets", "cat", str(t)),
    "remove a named pipe": lambda t: made.remove_photo("Pets", "cat", _fifo(t)),
    "remove a missing file": lambda t: made.remove_photo("Pets", "cat", str(t / "no\nsuch.jpg")),
    "rename unknown class": lambda t: made.rename_class("Pets", "dog", "wolf"),
    "merge unknown class": lambda t: made.merge_class("Pets", "dog", "cat"),
    "delete unknown class": lambda t: made.delete_class("Pets", "dog"),
    "delete unknown dataset": lambda t: made.delete_dataset("Plants"),
    "export unknown dataset": lambda t: made.export_zip("Plants", t / "x.zip"),
    "export under a file": lambda t: made.export_zip("Pets", _file(t) / "x.zip"),
    "export into a missing folder": lambda t: made.export_zip("Pets", t / "no" / "x.zip"),
    "import not a zip": lambda t: made.import_zip("Plants", b"PK\x03\x04 not really a zip"),
    "import a zip of one text file": lambda t: made.import_zip("Plants", _zip({"roses/notes.txt": b"hello"})),
    "load unknown dataset": lambda t: datasets.load(RunConfig(dataset="data:Plants", backbone="small_cnn",
                                                              weights="none", image_size=16)),
    "empty data: name": lambda t: RunConfig(dataset="data:"),
    "blank data: name": lambda t: RunConfig(dataset="data:   "),
}


def _file(tmp_path):
    path = tmp_path / "a file"
    path.write_text("x")
    return path


def _zip(entries: dict) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize("case", list(UNKNOWN))
def test_an_unknown_name_or_unusable_argument_is_one_sentence_and_nothing_changes(unchanged, tmp_path, case):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(UserError) as caught:
        UNKNOWN[case](scratch)
    one_sentence(caught.value)


def test_training_data_with_one_class_or_an_empty_class_is_one_sentence(unchanged):
    made.create_dataset("Solo")
    made.add_photos("Solo", "cat", photos(3, start=10))
    made.add_class("Solo", "dog")
    cfg = RunConfig(dataset="data:solo", backbone="small_cnn", weights="none", image_size=16)
    with pytest.raises(UserError) as caught:
        datasets.load(cfg)
    assert "has no photos" in one_sentence(caught.value)
    made.delete_class("Solo", "dog")
    with pytest.raises(UserError) as caught:
        datasets.load(cfg)
    assert "needs at least two" in one_sentence(caught.value)
    made.delete_dataset("Solo")


# -- damaged manifests --------------------------------------------------------------------------

def _edit(field_path, value):
    def change(info):
        target = info
        for key in field_path[:-1]:
            target = target[key]
        target[field_path[-1]] = value
        return json.dumps(info)
    return change


GOOD_PHOTO = {"hash": "0123456789abcdef", "ext": ".jpg", "bytes": 10, "added": 0}
MANIFESTS = {
    "truncated": lambda info: json.dumps(info)[:40],
    "empty": lambda info: "",
    "null": lambda info: "null",
    "list": lambda info: "[1, 2]",
    "binary": lambda info: "\udcff\x00garbage",
    "no classes": lambda info: json.dumps({k: v for k, v in info.items() if k != "classes"}),
    "name a number": _edit(["name"], 5),
    "name null": _edit(["name"], None),
    "name with a newline": _edit(["name"], "Plants\nsecond line"),
    "id a list": _edit(["id"], [1]),
    "version text": _edit(["version"], "two"),
    "classes a list": _edit(["classes"], []),
    "class a path": _edit(["classes"], {"../../x": [GOOD_PHOTO]}),
    "photos a dict": _edit(["classes"], {"rose": {"a": 1}}),
    "photo a string": _edit(["classes"], {"rose": ["x.jpg"]}),
    "photo extra field": _edit(["classes"], {"rose": [{**GOOD_PHOTO, "evil": 1}]}),
    "hash a number": _edit(["classes"], {"rose": [{**GOOD_PHOTO, "hash": 5}]}),
    "hash a path": _edit(["classes"], {"rose": [{**GOOD_PHOTO, "hash": "../../../etc/passwd"}]}),
    "ext a path": _edit(["classes"], {"rose": [{**GOOD_PHOTO, "ext": "/../../x"}]}),
    "bytes text": _edit(["classes"], {"rose": [{**GOOD_PHOTO, "bytes": "10"}]}),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_a_damaged_manifest_is_left_out_and_every_other_dataset_still_works(pets, data_dir, capsys, case):
    plants = made.create_dataset("Plants")
    info = json.loads((plants.path / "dataset.json").read_text())
    text = MANIFESTS[case](info)
    (plants.path / "dataset.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    assert [d.name for d in made.list_datasets()] == ["Pets"]
    with pytest.raises(UserError) as caught:
        made.find("Plants")
    one_sentence(caught.value)
    for call in (lambda: made.add_photos(plants, "rose", photos(1, "astronaut")),
                 lambda: made.remove_photo(plants, "rose", "0123456789abcdef"),
                 lambda: made.rename_class(plants, "rose", "tulip"), lambda: made.collect(plants)):
        with pytest.raises(UserError) as caught:
            call()
        assert "is damaged" in one_sentence(caught.value)
    assert made.key_path({"kind": "made", "id": info["id"]}, "rose/0123456789abcdef.jpg") is None
    made.add_photos("Pets", "cat", photos(1, start=40))
    assert made.find("Pets").counts() == {"cat": 5, "coffee": 4}
    assert (plants.path / "dataset.json").read_bytes() == text.encode("utf-8", "surrogateescape")

    from tl import cli

    assert cli.main(["data", "list", "--json"]) == 0
    assert [d["name"] for d in json.loads(capsys.readouterr().out)] == ["Pets"]


# -- a finished run keeps what it trained on ----------------------------------------------------

def test_removing_the_last_photo_of_a_class_a_finished_run_used_keeps_it_for_the_run(data_dir, tmp_path):
    made.create_dataset("Pets")
    made.add_photos("Pets", "cat", photos(3))
    made.add_photos("Pets", "coffee", photos(3, "coffee"))
    runs_dir = tmp_path / "runs"
    run = train_run(runs_dir, tiny_config(dataset="data:Pets", samples_per_class=0))
    assert run.status()["status"] == "done"
    split = json.loads((run.path / "split.json").read_text())
    keys = split["train"] + split["val"] + split["test"]
    assert len(keys) == 6 and split["origin"]["version"] == 3

    for i, cat in enumerate(made.find("Pets").classes["cat"]):
        dataset, sentence = made.remove_photo("Pets", "cat", cat.hash)
        assert f"({2 - i} left); run(s) {run.id} trained on it, so it stays stored" in one_sentence(sentence)
    assert dataset.counts() == {"cat": 0, "coffee": 3} and dataset.version == 6
    for key in keys:
        path = made.key_path(split["origin"], key)
        assert path is not None and path.is_file(), key
        assert hashlib.sha256(path.read_bytes()).hexdigest()[:16] == Path(key).stem
    with pytest.raises(UserError) as caught:
        datasets.load(tiny_config(dataset="data:Pets"))
    assert "Class 'cat' of 'Pets' has no photos" in one_sentence(caught.value)

    made.collect(dataset)
    assert all(made.key_path(split["origin"], k) for k in keys)  # the run still exists
    shutil.rmtree(run.path)
    made.collect(dataset)
    assert [k for k in keys if made.key_path(split["origin"], k)] == [k for k in keys if k.startswith("coffee/")]


# -- through the command line ----------------------------------------------------------------------

def tl_data(env_dir: Path, *args, cwd: Path):
    env = {**os.environ, "TL_DATA_DIR": str(env_dir), "TL_RUNS_DIR": str(env_dir.parent / "runs"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "tl", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def refusal(result, code: int) -> str:
    """The one line on stderr of a refused command."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    return one_sentence(line[len("error: "):] if line.startswith("error: ") else line)


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


CLI_CASES = {
    "not an image": (lambda f: ["add", "Pets", "cat", _write(f, "notes.jpg", b"not a photo")], 1, "is not an image"),
    "zero bytes": (lambda f: ["add", "Pets", "cat", _write(f, "empty.jpg", b"")], 1, "is empty"),
    "bomb": (lambda f: ["add", "Pets", "cat", _write(f, "bomb.png", _declared_huge_png())], 1, "bomb"),
    "named pipe": (lambda f: ["add", "Pets", "cat", _fifo(f)], 1, "not a regular file"),
    "missing file with a newline": (lambda f: ["add", "Pets", "cat", f / "no\nsuch.jpg"], 1, "cannot be read"),
    "same photo in two classes": (lambda f: ["add", "Pets", "coffee", _write(f, "c.jpg", photo(1))], 1,
                                  "already in class 'cat', so it was not added to 'coffee'"),
    "class with a slash": (lambda f: ["add", "Pets", "a/b", _write(f, "n.jpg", photo(50))], 2, "slashes"),
    "class of 300 characters": (lambda f: ["add", "Pets", "c" * 300, _write(f, "n.jpg", photo(50))], 2, "limit"),
    "class with a control character": (lambda f: ["add", "Pets", "a\x1bb", _write(f, "n.jpg", photo(50))], 2,
                                       "control character"),
    "remove from unknown dataset": (lambda f: ["remove", "Plants", "cat", "0123456789abcdef"], 2,
                                    "no made dataset 'Plants'"),
    "remove from unknown class": (lambda f: ["remove", "Pets", "dog", "0123456789abcdef"], 2, "has no class 'dog'"),
    "remove unknown photo": (lambda f: ["remove", "Pets", "cat", "0123456789abcdef"], 2, "no photo matching"),
    "show unknown": (lambda f: ["show", "Plants"], 2, "no made dataset"),
    "import not a zip": (lambda f: ["import", "Plants", _write(f, "x.zip", b"not a zip")], 2, ""),
    "export into a missing folder": (lambda f: ["export", "Pets", "--out", f / "no" / "x.zip"], 2, "zip"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_refusals_are_one_line_and_change_nothing(unchanged, data_dir, tmp_path, bounded, case):
    make, code, words = CLI_CASES[case]
    files = tmp_path / "files"
    files.mkdir()
    result = tl_data(data_dir, "data", *make(files), cwd=bounded)
    assert words in refusal(result, code)


@pytest.mark.parametrize("args, code, words", [
    (["cat", "{bad}"], 1, "is not an image"),
    (["a/b", "{good}"], 2, "slashes"),
    (["", "{good}"], 2, "Give the class a name"),
], ids=["only bad files", "bad class name", "empty class name"])
def test_cli_add_that_adds_nothing_makes_no_dataset(unchanged, data_dir, tmp_path, bounded, args, code, words):
    bad = _write(tmp_path, "bad.jpg", b"no")
    good = _write(tmp_path, "good.jpg", photo(60))
    args = [a.format(bad=bad, good=good) for a in args]
    result = tl_data(data_dir, "data", "add", "Plants", *args, cwd=bounded)
    assert words in refusal(result, code)
    assert [d.name for d in made.list_datasets()] == ["Pets"]


def test_cli_train_on_an_empty_or_unknown_made_dataset_is_one_line_and_makes_no_run(data_dir, tmp_path, bounded):
    for dataset, words in (("data:", "Expected `dataset` as data:NAME"), ("data:Plants", "no made dataset 'Plants'")):
        result = tl_data(data_dir, "train", "--dataset", dataset, "--backbone", "small_cnn", "--weights", "none",
                         "--image-size", "16", cwd=bounded)
        assert words in refusal(result, 2)
    runs_dir = tmp_path / "runs"
    assert not runs_dir.exists() or not [p for p in runs_dir.iterdir() if not p.name.startswith(".")]
