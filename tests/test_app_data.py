"""The Data page (AppTest): pick a made dataset by link, make one, add a class, remove a
photo, rename, merge and delete classes, and hand the dataset to Train. Uploads and the
camera need a browser (tests/test_browser_data.py); photos are added here through
:mod:`tl.data.made`, the call the page makes."""

import io

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tl.data import made

from conftest import REPO

APP = str(REPO / "streamlit_app.py")


def photo(seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def root(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("TL_RUNS_DIR", str(runs))
    monkeypatch.delenv("TL_DATA_DIR", raising=False)
    return runs


def two_classes(root, name="Pets", per_class=4):
    made.create_dataset(name, root)
    made.add_photos(name, "cat", [(f"c{i}.png", photo(i)) for i in range(per_class)], root)
    made.add_photos(name, "dog", [(f"d{i}.png", photo(100 + i)) for i in range(per_class)], root)
    return made.find(name, root)


def open_data(query=None):
    at = AppTest.from_file(APP, default_timeout=60)
    if query:
        at.query_params.update(query)
    at.run()
    at.switch_page("app_pages/data.py").run()
    assert not at.exception, at.exception
    return at


def texts(at) -> str:
    return " ".join(e.value for kind in (at.markdown, at.caption, at.success, at.warning, at.error, at.info)
                    for e in kind)


def test_no_dataset_yet_offers_to_make_one_and_makes_it(root):
    at = open_data()
    assert at.selectbox(key="data_pick").value == "\u0000new"
    at.text_input(key="data_new_name").set_value("Lucy vs others")
    at.button[[b.label for b in at.button].index("Make dataset")].click().run()
    assert not at.exception, at.exception
    dataset = made.find("Lucy vs others", root)
    assert at.selectbox(key="data_pick").value == dataset.id
    assert at.query_params["data"] == dataset.id  # a reload or a shared link finds it
    # No class yet: the first-class form and the advice on counts are shown before anything else.
    assert at.text_input(key="data_class_name").label == "First class name"
    assert "at least 3 photos" in texts(at)


def test_add_class_then_taken_and_bad_names_are_said(root):
    made.create_dataset("Pets", root)
    at = open_data()
    at.text_input(key="data_class_name").set_value("cat")
    at.button[[b.label for b in at.button].index("Add class")].click().run()
    assert not at.exception, at.exception
    assert list(made.find("Pets", root).classes) == ["cat"]
    assert at.selectbox(key="data_class").value == "cat"  # chosen, ready for its photos
    at.button(key="data_new_class").click().run()
    at.text_input(key="data_class_name").set_value("a/b")
    at.button[[b.label for b in at.button].index("Add class")].click().run()
    assert not at.exception, at.exception
    assert "cannot hold slashes" in " ".join(e.value for e in at.error)
    assert list(made.find("Pets", root).classes) == ["cat"]


def test_link_opens_the_dataset_with_counts_and_advice(root):
    dataset = two_classes(root)
    at = open_data({"data": dataset.id})
    assert at.selectbox(key="data_pick").value == dataset.id
    shown = texts(at)
    assert "**cat** · 4 photo(s)" in shown and "**dog** · 4 photo(s)" in shown
    assert len([b for b in at.button if b.key.startswith("data_rm_0_")]) == 4
    assert "About 20 or more per class" in shown
    assert not at.button(key="data_train").disabled


def test_unknown_link_is_said_and_the_page_goes_on(root):
    dataset = two_classes(root)
    at = open_data({"data": "nope-123"})
    assert any("no made dataset 'nope-123'" in w.value for w in at.warning)
    assert at.selectbox(key="data_pick").value == dataset.id


def test_remove_a_photo_from_the_grid(root):
    dataset = two_classes(root)
    at = open_data({"data": dataset.id})
    first = dataset.classes["cat"][0].hash
    at.button(key=f"data_rm_0_{first}").click().run()
    assert not at.exception, at.exception
    assert made.find("Pets", root).counts() == {"cat": 3, "dog": 4}
    assert any("Removed one photo from 'cat' (3 left)" in s.value for s in at.success)
    assert "**cat** · 3 photo(s)" in texts(at)


def test_too_few_photos_keep_train_disabled_and_say_why(root):
    made.create_dataset("Pets", root)
    made.add_photos("Pets", "cat", [(f"c{i}.png", photo(i)) for i in range(3)], root)
    made.add_photos("Pets", "dog", [("d.png", photo(50))], root)
    at = open_data()
    assert at.button(key="data_train").disabled
    assert "'dog' needs 2 more" in " ".join(e.value for e in at.info)


def test_rename_merge_and_delete_a_class(root):
    dataset = two_classes(root)
    made.add_class(dataset, "kitten")
    made.add_photos("Pets", "kitten", [("k.png", photo(7))], root)
    at = open_data()
    names = list(made.find("Pets", root).classes)
    kitten = names.index("kitten")
    at.text_input(key=f"data_rename_{kitten}").set_value("kitty")
    at.button(key=f"data_rename_go_{kitten}").click().run()
    assert not at.exception, at.exception
    assert "kitty" in made.find("Pets", root).classes
    at.selectbox(key=f"data_merge_{kitten}").set_value("cat")
    at.button(key=f"data_merge_go_{kitten}").click().run()
    assert made.find("Pets", root).counts() == {"cat": 5, "dog": 4}
    at.checkbox(key="data_del_ok_1").check().run()
    at.button(key="data_del_1").click().run()
    assert not at.exception, at.exception
    assert made.find("Pets", root).counts() == {"cat": 5}


def test_train_on_it_opens_train_with_the_dataset_chosen_and_previewed(root):
    dataset = two_classes(root)
    at = open_data({"data": dataset.id})
    at.button(key="data_train").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="train_dataset").value == "data:Pets"
    assert "Made on the Data page: 2 classes, 8 photos" in texts(at)
    # The preview reads the made dataset (images per class, a split for each class).
    assert "**Pets**" in at.caption[0].value or any("Pets" in c.value for c in at.caption)


def test_train_form_keeps_a_deleted_made_dataset_and_says_so(root):
    dataset = two_classes(root)
    at = open_data({"data": dataset.id})
    at.button(key="data_train").click().run()
    made.delete_dataset(dataset, root)
    at.switch_page("app_pages/train.py").run()  # a rerun of the Train page
    assert not at.exception, at.exception
    assert at.selectbox(key="train_dataset").value == "data:Pets"
    shown = texts(at)
    assert "not found here now" in shown
    assert "There is no made dataset 'Pets'" in shown


def test_new_photos_are_seen_by_the_train_preview_at_once(root):
    """The app caches datasets per config; a made dataset's version is part of the key."""
    from ui.state import data_key

    from tl.config import RunConfig

    two_classes(root)
    cfg = RunConfig(dataset="data:Pets")
    before = data_key(cfg)
    made.add_photos("Pets", "cat", [("new.png", photo(999))], root)
    assert data_key(cfg) != before


def test_gallery_still_shows_a_photo_removed_after_training(root):
    """A finished run reads its test photos by the keys it recorded: removing one from the
    dataset (even the last of its class) keeps it stored and shown while the run exists."""
    from conftest import tiny_config, train_run
    from tl import jobs, runs
    from ui.results_view import _item_reader

    two_classes(root, per_class=6)
    run = train_run(root, tiny_config(dataset="data:Pets", synthetic_classes=2))
    test_keys = runs.get(run.id, root)._json("split.json", dict)["test"]
    for key in test_keys:
        made.remove_photo("Pets", key.split("/")[0], key.split("/")[1].split(".")[0], root)
    read = _item_reader(runs.get(run.id, root))
    for key in test_keys:
        image = read({"key": key, "item": 0})
        assert image is not None and image.ndim == 3, key
    assert run.summary()["data_version"] == 3  # made, then one version per class added
    jobs.delete_run(run.id, root)  # deleting it for a user frees what only this run kept
    assert read({"key": test_keys[0], "item": 0}) is None  # freed once no run refers to it


@pytest.mark.slow
def test_a_finished_runs_test_images_are_mapped_right_and_wrong(root):
    """Results of a run on cached features: its test images on a PCA map, coloured by
    whether the run got them right; a run trained on images says why it has none."""
    from conftest import tiny_config, train_run
    from test_app_export import open_run

    frozen = train_run(root, tiny_config(strategy="feature_extraction", samples_per_class=20, epochs=2))
    at = open_run(frozen.id)
    figures = [c.proto.spec for c in at.get("plotly_chart") if '"Test images (PCA' in c.proto.spec]
    assert len(figures) == 1
    assert '"name":"right"' in figures[0] or '"name":"wrong"' in figures[0]
    assert f"{frozen.metrics['test_size']} test images" in texts(at)

    scratch = train_run(root, tiny_config(strategy="scratch"))
    at = open_run(scratch.id)
    assert "No map: this run trained on images" in texts(at)
