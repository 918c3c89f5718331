"""Datasets made in the app (the tl.data.made package): naming and finding, adding photos stored once
per content with thumbnails and versions, the limits, class edits, removing photos while runs
keep what they trained on, loading for training, the zip round trip, damaged manifests and
the lock that keeps concurrent adds."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tl import datasets
from tl.config import RunConfig
from tl.data import made
from tl.errors import DataError

from conftest import REPO, photo, photos


# -- real photographs: crops of scikit-image's sample pictures ------------------------------

def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def stored(dataset) -> set:
    """Names of the files in the dataset's photos folder."""
    return {p.name for p in (dataset.path / "photos").iterdir()}


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "data"
    monkeypatch.setenv("TL_DATA_DIR", str(path))
    return path


@pytest.fixture
def pets(data_dir):
    """A dataset 'Pets' with 4 cat photos and 4 coffee photos."""
    made.create_dataset("Pets")
    made.add_photos("Pets", "cat", photos(4, "chelsea"))
    return made.add_photos("Pets", "coffee", photos(4, "coffee")).dataset


# -- making and finding -----------------------------------------------------------------------

def test_create_then_find_by_name_ref_any_case_and_id(data_dir):
    made.create_dataset("Other")
    dataset = made.create_dataset("My Pets")
    assert dataset.path.parent == data_dir / "made" and dataset.path.name == dataset.id
    assert dataset.id.startswith("my-pets-") and dataset.version == 1 and dataset.classes == {}
    assert json.loads((dataset.path / "dataset.json").read_text())["name"] == "My Pets"
    for ref in ("My Pets", "data:My Pets", "my pets", "data:MY PETS", dataset.id):
        assert made.find(ref).id == dataset.id, ref
    assert [d.name for d in made.list_datasets()] == ["My Pets", "Other"]
    assert made.find("data:My Pets").ref == "data:My Pets"


def test_without_tl_data_dir_datasets_live_under_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("TL_DATA_DIR", raising=False)
    runs_dir = tmp_path / "runs"
    dataset = made.create_dataset("Pets", runs_dir)
    assert dataset.path.parent == runs_dir / ".data" / "made"
    assert made.find("pets", runs_dir).id == dataset.id
    with pytest.raises(DataError, match="no made dataset 'pets'"):
        made.find("pets", tmp_path / "elsewhere")


@pytest.mark.parametrize("again", ["Pets", "pets", " PETS "])
def test_a_taken_name_is_refused_in_any_case(data_dir, again):
    made.create_dataset("Pets")
    with pytest.raises(DataError, match="^A made dataset called '.*' already exists; pick another name"):
        made.create_dataset(again)
    assert len(list((data_dir / "made").iterdir())) == 2  # the dataset and the root's lock file
    assert [d.name for d in made.list_datasets()] == ["Pets"]


def test_an_unknown_name_says_which_ones_exist(data_dir):
    made.create_dataset("Pets")
    with pytest.raises(DataError) as caught:
        made.find("data:Plants")
    assert "no made dataset 'Plants'" in str(caught.value) and "'Pets'" in str(caught.value)


# -- adding photos ----------------------------------------------------------------------------

def test_adding_photos_stores_exact_bytes_thumbnails_and_a_version_each_time(data_dir):
    dataset = made.create_dataset("Pets")
    cats = photos(3, "chelsea")
    report = made.add_photos("Pets", "cat", cats)
    assert report.added == [name for name, _ in cats] and not report.refused and not report.duplicates
    assert report.describe() == "Added 3 photo(s)."
    dataset = made.find("Pets")
    assert dataset.version == 2 and dataset.counts() == {"cat": 3}
    for name, data in cats:
        file = dataset.path / "photos" / f"{digest(data)}.jpg"
        assert file.read_bytes() == data
        thumb = Image.open(dataset.path / "thumbs" / f"{digest(data)}.jpg")
        assert thumb.format == "JPEG" and max(thumb.size) == made.THUMB_SIDE
    assert [p.hash for p in dataset.classes["cat"]] == [digest(d) for _, d in cats]  # the order added

    made.add_photos("Pets", "coffee", photos(2, "coffee", start=5))
    made.add_photos("Pets", "coffee", [("png one", photo(9, "coffee", "PNG"))])
    dataset = made.find("Pets")
    assert dataset.version == 4 and dataset.counts() == {"cat": 3, "coffee": 3}
    assert dataset.classes["coffee"][-1].ext == ".png"
    assert sorted(p.name for p in (dataset.path / "versions").iterdir()) == ["1.json", "2.json", "3.json", "4.json"]
    v2 = json.loads((dataset.path / "versions" / "2.json").read_text())
    assert v2["classes"] == {"cat": [f"{digest(d)}.jpg" for _, d in cats]}
    assert dataset.photos == 6 and dataset.total_bytes == sum(p.bytes for ps in dataset.classes.values() for p in ps)


def test_files_given_as_uploaded_file_objects_are_added(data_dir):
    class Upload:  # what Streamlit's UploadedFile offers
        def __init__(self, name, data):
            self.name, self._data = name, data

        def getvalue(self):
            return self._data

    made.create_dataset("Pets")
    report = made.add_photos("Pets", "cat", [Upload("tap.jpg", photo(1))])
    assert report.added == ["tap.jpg"] and made.find("Pets").counts() == {"cat": 1}


def test_the_same_photo_twice_in_a_class_is_stored_once_and_said(data_dir):
    made.create_dataset("Pets")
    data = photo(3)
    first = made.add_photos("Pets", "cat", [("a.jpg", data), ("again.jpg", data)])
    assert first.added == ["a.jpg"] and first.duplicates == ["again.jpg"]
    second = made.add_photos("Pets", "cat", [("third.jpg", data)])
    assert second.added == [] and second.duplicates == ["third.jpg"]
    assert second.messages() == ["'third.jpg' is already in this class (the same photo), so it is stored once."]
    assert second.describe() == "Added 0 photo(s), 1 already there."
    dataset = made.find("Pets")
    assert dataset.counts() == {"cat": 1} and stored(dataset) == {f"{digest(data)}.jpg"}
    assert dataset.version == 2  # nothing changed the second time, so no new version


def test_the_same_photo_in_a_second_class_is_refused_naming_both_classes(data_dir):
    made.create_dataset("Pets")
    made.add_photos("Pets", "cat", [("lucy.jpg", photo(1))])
    report = made.add_photos("Pets", "dog", [("lucy again.jpg", photo(1)), ("rex.jpg", photo(2, "coffee"))])
    assert report.added == ["rex.jpg"]
    [(name, sentence)] = report.refused
    assert name == "lucy again.jpg"
    assert sentence == ("'lucy again.jpg' is already in class 'cat', so it was not added to 'dog'; one photo can be "
                        "in one class only.")
    assert made.find("Pets").counts() == {"cat": 1, "dog": 1}


def test_the_photo_count_limit_adds_up_to_it_and_refuses_the_rest_in_one_sentence_each(data_dir):
    limits = made.DatasetLimits(max_photos=3)
    made.create_dataset("Pets")
    made.add_photos("Pets", "cat", photos(2), limits=limits)
    report = made.add_photos("Pets", "coffee", photos(3, "coffee"), limits=limits)
    assert report.added == ["coffee-0.jpg"] and [n for n, _ in report.refused] == ["coffee-1.jpg", "coffee-2.jpg"]
    for _, sentence in report.refused:
        assert "\n" not in sentence and sentence.endswith(".") and "at its limit (up to 3 photos" in sentence
    dataset = made.find("Pets")
    assert dataset.photos == 3 and len(stored(dataset)) == 3 and len(list((dataset.path / "thumbs").iterdir())) == 3
    again = made.add_photos("Pets", "cat", photos(1, start=7), limits=limits)
    assert again.added == [] and len(again.refused) == 1 and made.find("Pets").version == dataset.version


def test_the_bytes_limit_refuses_the_photo_that_would_pass_it(data_dir):
    cats = photos(3)
    limits = made.DatasetLimits(max_bytes=len(cats[0][1]) + len(cats[1][1]) + 10)
    made.create_dataset("Pets")
    report = made.add_photos("Pets", "cat", cats, limits=limits)
    assert report.added == ["chelsea-0.jpg", "chelsea-1.jpg"]
    assert [n for n, _ in report.refused] == ["chelsea-2.jpg"] and "at its limit" in report.refused[0][1]
    dataset = made.find("Pets")
    assert stored(dataset) == {f"{digest(cats[0][1])}.jpg", f"{digest(cats[1][1])}.jpg"}


def test_a_photo_over_the_per_photo_limit_is_refused(data_dir):
    small, large = sorted((photo(1, "coffee", "PNG"), photo(1)), key=len)
    limits = made.DatasetLimits(max_photo_bytes=len(small) + 1)
    made.create_dataset("Pets")
    report = made.add_photos("Pets", "cat", [("small", small), ("large", large)], limits=limits)
    assert report.added == ["small"] and [n for n, _ in report.refused] == ["large"]
    assert "over the limit" in report.refused[0][1] and report.refused[0][1].endswith(".")


def test_the_class_limit_refuses_one_more_class_and_keeps_adding_to_existing_ones(data_dir):
    limits = made.DatasetLimits(max_classes=2)
    made.create_dataset("Pets")
    made.add_photos("Pets", "cat", photos(1), limits=limits)
    made.add_class("Pets", "coffee", limits=limits)
    with pytest.raises(DataError, match="has 2 classes, its limit"):
        made.add_photos("Pets", "astronaut", photos(1, "astronaut"), limits=limits)
    made.add_photos("Pets", "coffee", photos(1, "coffee"), limits=limits)
    assert made.find("Pets").counts() == {"cat": 1, "coffee": 1}


def test_add_class_makes_an_empty_class_once(data_dir):
    made.create_dataset("Pets")
    made.add_class("Pets", "cat")
    made.add_class("Pets", "cat")
    dataset = made.find("Pets")
    assert dataset.counts() == {"cat": 0} and dataset.version == 2


# -- class edits ------------------------------------------------------------------------------

def test_rename_class_keeps_its_photos_and_order(pets):
    made.rename_class("Pets", "cat", "Lucy")
    dataset = made.find("Pets")
    assert list(dataset.classes) == ["Lucy", "coffee"] and dataset.counts() == {"Lucy": 4, "coffee": 4}
    assert dataset.version == pets.version + 1
    with pytest.raises(DataError, match="already has a class 'coffee'"):
        made.rename_class("Pets", "Lucy", "coffee")
    with pytest.raises(DataError, match="has no class 'cat'"):
        made.rename_class("Pets", "cat", "kitty")
    with pytest.raises(DataError, match="slashes"):
        made.rename_class("Pets", "Lucy", "a/b")
    assert made.find("Pets").counts() == {"Lucy": 4, "coffee": 4}


def test_merge_class_moves_every_photo_once(pets):
    made.add_photos("Pets", "mug", photos(2, "coffee", start=10))
    made.merge_class("Pets", "mug", "coffee")
    dataset = made.find("Pets")
    assert dataset.counts() == {"cat": 4, "coffee": 6}
    assert len(stored(dataset)) == 10
    with pytest.raises(DataError, match="two different classes"):
        made.merge_class("Pets", "cat", "cat")
    with pytest.raises(DataError, match="has no class 'mug'"):
        made.merge_class("Pets", "mug", "cat")


def test_delete_class_frees_its_photos_when_no_run_used_them(pets):
    coffee = {p.file for p in pets.classes["coffee"]}
    made.delete_class("Pets", "coffee")
    dataset = made.find("Pets")
    assert dataset.counts() == {"cat": 4}
    assert not stored(dataset) & coffee and len(stored(dataset)) == 4
    assert not {p.name for p in (dataset.path / "thumbs").iterdir()} & coffee


# -- removing photos, and runs keeping what they trained on ---------------------------------------

def test_remove_a_photo_by_hash_prefix_and_by_its_file(pets, tmp_path):
    first, second = pets.classes["cat"][:2]
    dataset, sentence = made.remove_photo("Pets", "cat", first.hash[:6])
    assert sentence == "Removed one photo from 'cat' (3 left)."
    assert first.file not in stored(dataset) and not dataset.thumb_path(first).exists()
    file = tmp_path / "same bytes.jpg"
    file.write_bytes(photos(2)[1][1])
    assert digest(file.read_bytes()) == second.hash
    dataset, sentence = made.remove_photo("data:pets", "cat", str(file))
    assert dataset.counts() == {"cat": 2, "coffee": 4} and second.file not in stored(dataset)
    assert dataset.version == pets.version + 2
    with pytest.raises(DataError, match="has no photo matching"):
        made.remove_photo("Pets", "cat", first.hash)


def _a_run_trained_on(runs_dir: Path, name: str, run_id: str = "20990101-000000-run-beef"):
    """A run folder that trained on the dataset's current photos (as training records it)."""
    run = runs_dir / run_id
    run.mkdir(parents=True)
    data = made.dataset_data(made.find(name), 32)
    made.record_use(data, run)
    return run, data


def test_a_photo_a_run_used_stays_until_the_run_is_gone_then_collect_frees_it(pets, tmp_path):
    run, data = _a_run_trained_on(tmp_path / "runs", "Pets")
    ref = json.loads((pets.path / "refs" / f"{run.name}.json").read_text())
    assert ref["version"] == pets.version and len(ref["hashes"]) == 8
    gone = pets.classes["cat"][0]
    dataset, sentence = made.remove_photo("Pets", "cat", gone.hash)
    assert sentence == (f"Removed one photo from 'cat' (3 left); run(s) {run.name} trained on it, so it stays "
                        "stored until they are deleted.")
    assert gone.file in stored(dataset) and dataset.thumb_path(gone).exists()
    assert made.runs_using(dataset) == [run.name]
    key = next(k for k in data.keys if gone.hash in k)
    assert made.key_path(data.origin, key) == dataset.path / "photos" / gone.file

    assert made.collect(dataset) == 0  # the run still exists
    shutil.rmtree(run)
    assert made.collect(dataset) == 1
    assert gone.file not in stored(dataset) and not dataset.thumb_path(gone).exists()
    assert made.runs_using(dataset) == [] and not list((dataset.path / "refs").iterdir())
    assert made.key_path(data.origin, key) is None
    assert len(stored(dataset)) == 7  # the photos still in the dataset are never collected


def test_record_use_ignores_data_that_is_not_made(tmp_path):
    data = datasets.load(RunConfig(dataset="synthetic", image_size=16, samples_per_class=4,
                                   backbone="small_cnn", weights="none"))
    made.record_use(data, tmp_path / "run")
    assert not list(tmp_path.iterdir())


# -- loading for training -----------------------------------------------------------------------

def test_load_gives_class_hash_keys_sorted_classes_and_the_version(data_dir, tmp_path):
    made.create_dataset("Kitchen")
    made.add_photos("Kitchen", "zebra mug", photos(4, "coffee"))
    made.add_photos("Kitchen", "Cat", photos(5, "chelsea"))
    dataset = made.find("Kitchen")
    cfg = RunConfig(dataset="data:kitchen", image_size=32, samples_per_class=0, backbone="small_cnn", weights="none")
    data = datasets.load(cfg, tmp_path / "runs")
    assert data.class_names == ["Cat", "zebra mug"] and data.name == "data:Kitchen"
    assert data.origin == {"kind": "made", "id": dataset.id, "name": "Kitchen", "version": dataset.version,
                           "path": str(dataset.path)}
    expected = [f"Cat/{p.file}" for p in dataset.classes["Cat"]] + [f"zebra mug/{p.file}"
                                                                    for p in dataset.classes["zebra mug"]]
    assert data.keys == expected and list(data.labels) == [0] * 5 + [1] * 4
    assert data.content_hashes == [k.split("/")[1][:16] for k in expected]
    assert sorted(i for idx in data.splits.values() for i in idx) == list(range(9))
    image = data.read(0)
    assert image.dtype.name == "uint8" and image.shape[2] == 3 and image.std() > 10  # a real photo, not grey
    assert made.load_made(cfg).fingerprint == data.fingerprint


def test_a_dataset_with_one_class_or_an_empty_class_cannot_be_loaded(data_dir):
    made.create_dataset("Pets")
    cfg = RunConfig(dataset="data:Pets", image_size=32, backbone="small_cnn", weights="none")
    with pytest.raises(DataError) as caught:
        made.load_made(cfg)
    assert str(caught.value) == ("'Pets' has 0 class(es); a classifier needs at least two, so add another class "
                                 "with its photos on the Data page.")
    made.add_photos("Pets", "cat", photos(3))
    with pytest.raises(DataError, match="^'Pets' has 1 class\\(es\\); a classifier needs at least two"):
        made.load_made(cfg)
    made.add_class("Pets", "dog")
    with pytest.raises(DataError) as caught:
        datasets.load(cfg)
    assert str(caught.value) == "Class 'dog' of 'Pets' has no photos; add at least 3 or delete the class."


# -- zip out and in -------------------------------------------------------------------------------

def test_export_then_import_round_trips_classes_and_photos(pets, tmp_path, data_dir):
    out = tmp_path / "pets.zip"
    assert made.export_zip("Pets", out) is None
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert sorted(names) == sorted(f"Pets/{c}/{p.file}" for c, ps in pets.classes.items() for p in ps)
        assert archive.read(names[0]) == (pets.path / "photos" / Path(names[0]).name).read_bytes()
    assert made.export_zip(pets) == out.read_bytes()

    copy, problems = made.import_zip("Pets copy", out)
    assert problems == []
    assert copy.name == "Pets copy" and copy.id != pets.id and copy.counts() == pets.counts()
    assert {c: {p.hash for p in ps} for c, ps in copy.classes.items()} == \
           {c: {p.hash for p in ps} for c, ps in pets.classes.items()}
    assert stored(copy) == stored(pets)
    assert sorted(p.name for p in data_dir.iterdir()) == ["made"]  # the zip's unpacked copy is not kept twice
    with pytest.raises(DataError, match="already exists"):
        made.import_zip("pets", out)
    assert [d.name for d in made.list_datasets()] == ["Pets", "Pets copy"]


# -- damaged manifests --------------------------------------------------------------------------

def test_a_damaged_manifest_is_left_out_of_the_list_and_unknown_to_find(pets, data_dir):
    other = made.create_dataset("Plants")
    (other.path / "dataset.json").write_text('{"name": "Plants", "id": ')
    assert [d.name for d in made.list_datasets()] == ["Pets"]
    with pytest.raises(DataError, match="no made dataset 'Plants'"):
        made.find("Plants")
    with pytest.raises(DataError, match="is damaged"):
        made.add_photos(other, "rose", photos(1, "astronaut"))
    assert made.find("Pets").counts() == {"cat": 4, "coffee": 4}


# -- the lock: concurrent adds all land ------------------------------------------------------------

def test_adds_from_two_threads_all_land(data_dir):
    made.create_dataset("Pets")
    barrier = threading.Barrier(2)
    errors = []

    def add(picture):
        try:
            barrier.wait()
            for name, data in photos(8, picture):
                made.add_photos("Pets", picture, [(name, data)])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(p,)) for p in ("chelsea", "coffee")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    dataset = made.find("Pets")
    assert dataset.counts() == {"chelsea": 8, "coffee": 8}
    assert dataset.version == 1 + 16 and len(stored(dataset)) == 16
    assert len(list((dataset.path / "versions").iterdir())) == 17


CHILD = """
import io, os, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
import skimage.data
from PIL import Image
from tl.data import made
picture, go = sys.argv[1], Path(sys.argv[2])
image = getattr(skimage.data, picture)()
files = []
for i in range(10):
    out = io.BytesIO()
    Image.fromarray(image[i * 5:i * 5 + 120, i * 9:i * 9 + 160]).save(out, "JPEG")
    files.append((f"{{i}}.jpg", out.getvalue()))
(go.parent / (picture + ".ready")).touch()
while not go.exists():
    time.sleep(0.01)
for file in files:
    made.add_photos("Pets", "class " + picture, [file])
"""


def test_adds_from_two_processes_all_land(data_dir, tmp_path):
    made.create_dataset("Pets")
    go = tmp_path / "go"
    script = CHILD.format(repo=str(REPO))
    env = {**os.environ, "TL_DATA_DIR": str(data_dir)}
    children = [subprocess.Popen([sys.executable, "-c", script, picture, str(go)], env=env, cwd=tmp_path,
                                 stderr=subprocess.PIPE, text=True) for picture in ("chelsea", "coffee")]
    for picture in ("chelsea", "coffee"):
        deadline = 120
        while not (tmp_path / f"{picture}.ready").exists() and deadline > 0:
            assert all(c.poll() is None for c in children), [c.stderr.read() for c in children]
            threading.Event().wait(0.05)
            deadline -= 0.05
    go.touch()
    for child in children:
        assert child.wait(120) == 0, child.stderr.read()
    dataset = made.find("Pets")
    assert dataset.counts() == {"class chelsea": 10, "class coffee": 10}
    assert dataset.version == 1 + 20 and len(stored(dataset)) == 20


def test_class_names_that_differ_only_in_case_are_refused(pets):
    """On a case-insensitive disk the exported zip would hold them as one folder."""
    with pytest.raises(DataError, match="differs from 'CAT' only in case"):
        made.add_photos(pets, "CAT", photos(1, "astronaut"))
    made.add_class(pets, "bird")
    with pytest.raises(DataError, match="only in case"):
        made.rename_class(pets, "bird", "Cat")
    before = made.find(pets.id).version
    made.rename_class(pets, "bird", "bird")  # to its own name: nothing to do, no new version
    assert made.find(pets.id).version == before


def test_move_a_photo_to_another_class_and_dismiss_marks(pets):
    cat = pets.classes["cat"][0]
    before = made.find(pets.id).version
    moved = made.move_photo("Pets", "cat", cat.hash, "coffee")
    assert moved.counts() == {"cat": 3, "coffee": 5} and moved.version == before + 1
    assert cat.hash in {p.hash for p in moved.classes["coffee"]}
    with pytest.raises(DataError, match="no single photo matching"):
        made.move_photo("Pets", "cat", cat.hash, "coffee")  # moved already
    with pytest.raises(DataError, match="already in 'coffee'"):
        made.move_photo("Pets", "coffee", cat.hash, "coffee")
    made.dismiss("Pets", cat.hash, "coffee")
    assert made.dismissed(made.find("Pets")) == {cat.hash: "coffee"}
    (made.find("Pets").path / made.DISMISSED).write_text("{not json")
    assert made.dismissed(made.find("Pets")) == {}  # a damaged file only brings suspects back
