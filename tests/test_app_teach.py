"""Teach the model what it got wrong (AppTest): a photo tried on Classify goes into the run's
made dataset with the model's guess chosen first (a new version, the run unchanged), "Update
the model" queues the same settings on the new version and opens Train on it, and a visitor
who does not own the dataset sees the controls disabled with the reason. The real-browser
version with the camera is in tests/test_browser_teach.py."""

import time

import pytest
from streamlit.testing.v1 import AppTest

from tl import background, batch_jobs, pool_jobs, predict, runs
from tl.data import made, quota
from tl.paths import data_root

from conftest import REPO, tiny_config, train_run, wait_for
from test_app_data import photo
from test_app_export import open_run

APP = str(REPO / "streamlit_app.py")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run on a made dataset of two classes, 6 photos each (version 3)."""
    root = tmp_path_factory.mktemp("runs")
    made.create_dataset("Pets", root)
    made.add_photos("Pets", "cat", [(f"c{i}.png", photo(i)) for i in range(6)], root)
    made.add_photos("Pets", "dog", [(f"d{i}.png", photo(100 + i)) for i in range(6)], root)
    run = train_run(root, tiny_config(dataset="data:Pets", synthetic_classes=2, strategy="feature_extraction"))
    assert run.status()["status"] == "done", run.status()
    return root, run


@pytest.fixture
def root(trained, tmp_path, monkeypatch):
    """A copy of the trained runs folder (its dataset included) for each test to change."""
    import shutil

    source, _ = trained
    copy = tmp_path / "runs"
    shutil.copytree(source, copy)
    monkeypatch.setenv("TL_RUNS_DIR", str(copy))
    monkeypatch.delenv("TL_DATA_DIR", raising=False)
    monkeypatch.setattr(predict, "IMAGENET_WEIGHTS", None)
    return copy


def classify(new_photo: bytes):
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("app_pages/classify.py").run()
    at.file_uploader(key="classify_files").set_value([("new.png", new_photo, "image/png")]).run()
    assert not at.exception, at.exception
    return at


def messages(at) -> str:
    return " ".join(e.value for kind in (at.success, at.warning, at.error, at.caption) for e in kind)


def test_an_answer_goes_into_the_dataset_and_the_update_opens_train(root, trained):
    _, run = trained
    before = made.find("Pets", root)
    at = classify(photo(555))
    update = at.button(key="teach_update_classify")
    assert update.disabled  # nothing added yet
    assert "has not changed since this run trained on it" in messages(at)
    choice = at.selectbox(key="teach_class_0")
    guess = choice.value
    assert guess in ("cat", "dog") and choice.options == ["cat", "dog", "A new class..."]
    other = "dog" if guess == "cat" else "cat"
    choice.set_value(other).run()
    at.button(key="teach_go_0").click().run()
    assert not at.exception, at.exception
    after = made.find("Pets", root)
    assert after.version == before.version + 1
    assert after.counts()[other] == before.counts()[other] + 1
    assert f"Added to '{other}'" in messages(at) and f"version {after.version}" in messages(at)
    assert runs.get(run.id, root).data_origin["version"] == before.version  # the run is unchanged

    at.button(key="teach_go_0").click().run()  # the same photo again: said, nothing added
    assert made.find("Pets", root).version == after.version
    assert "already" in messages(at)

    data_page = AppTest.from_file(APP, default_timeout=120)
    data_page.query_params["data"] = after.id
    data_page.run()
    data_page.switch_page("app_pages/data.py").run()
    assert not data_page.exception, data_page.exception
    assert not data_page.button(key="teach_update_data").disabled  # Data offers the same update

    at.button(key="teach_update_classify").click().run()
    assert not at.exception, at.exception
    newer = [r for r in runs.list_runs(root) if r.id != run.id]
    assert len(newer) == 1 and f"updates:{run.id}" in newer[0].config.tags
    assert newer[0].config.dataset == after.ref
    assert at.query_params.get("run") in (newer[0].id, [newer[0].id])

    # The update trains in a worker process; its results say what changed.
    deadline = time.time() + 180
    while runs.get(newer[0].id, root).status()["status"] not in ("done", "failed", "cancelled"):
        assert time.time() < deadline, "the update did not finish in 3 minutes"
        time.sleep(0.5)
    updated = runs.get(newer[0].id, root)
    assert updated.status()["status"] == "done", updated.status()
    record = updated.metrics["update"]
    assert record["updates"] == run.id and record["added"] == {other: 1}
    assert (record["version_before"], record["version_after"]) == (before.version, after.version)
    page = open_run(updated.id)
    shown = " ".join(m.value for m in page.markdown)
    assert f"What changed since run `{run.id}`" in shown
    assert f"the dataset went from version {before.version} to {after.version}; added 1 to '{other}'." in shown


def test_a_new_class_from_an_answer(root):
    at = classify(photo(777))
    at.selectbox(key="teach_class_0").set_value("A new class...").run()
    at.button(key="teach_go_0").click().run()
    assert "Type a name for the new class first." in messages(at)
    at.text_input(key="teach_new_0").input("bird").run()
    at.button(key="teach_go_0").click().run()
    assert made.find("Pets", root).counts().get("bird") == 1


def test_on_a_shared_app_a_dataset_not_ones_own_shows_the_controls_disabled_with_why(root, monkeypatch):
    monkeypatch.setenv("TL_SHARED", "1")  # the dataset records no owner: only the secret may change it
    at = classify(photo(888))
    go = at.button(key="teach_go_0")
    assert go.disabled and "only someone with the owner secret can change it" in go.help
    assert at.selectbox(key="teach_class_0").disabled


def test_a_pool_is_ranked_and_one_tap_adds_a_suggested_photo(root, trained):
    _, run = trained
    before = made.find("Pets", root)
    at = open_suggest()
    pool = [(f"pool{i}.png", photo(1000 + i), "image/png") for i in range(5)] + [("bad.png", b"not a photo", "image/png")]
    at.file_uploader(key="teach_pool_files").set_value(pool).run()
    assert not at.exception, at.exception
    assert "5 photo(s) ranked" in messages(at) and "Not ranked:" in messages(at)
    first = at.markdown[[i for i, m in enumerate(at.markdown) if m.value.startswith("**1. ")][0]].value
    at.button(key="teach_pool_add_0_1").click().run()  # the second class: dog
    assert not at.exception, at.exception
    after = made.find("Pets", root)
    assert after.version == before.version + 1 and after.counts()["dog"] == before.counts()["dog"] + 1
    assert "1 added, 4 left" in messages(at)
    assert not any(m.value == first for m in at.markdown)  # the added photo left the list
    assert not at.button(key="teach_update_pool").disabled

    # The pool is stored under the data root (where the disk cap counts it) and a reload,
    # with nothing uploaded, finds it as it was left.
    job = pool_jobs.latest(run, root)
    assert job.path.parent == data_root(root) / "pools" and len(list(job.photos.iterdir())) == 6
    assert [e["kind"] for e in quota.entries(data_root(root), root)].count("pool") == 1
    later = open_suggest()
    assert "The last pool uploaded for this run:" in messages(later) and "1 added, 4 left" in messages(later)
    later.button(key="teach_pool_forget").click().run()
    assert not job.path.exists() and pool_jobs.latest(run, root) is None
    assert "photo(s) ranked" not in messages(later)
    # Forgotten with its files still in the uploader: not stored again until asked.
    at.run()  # the first session still has the pool uploaded: it is stored and ranked again
    assert "5 photo(s) ranked" in messages(at) and pool_jobs.latest(run, root) is not None
    at.button(key="teach_pool_forget").click().run()
    assert "This pool was forgotten" in messages(at) and pool_jobs.latest(run, root) is None
    at.button(key="teach_pool_again").click().run()
    assert "5 photo(s) ranked" in messages(at) and pool_jobs.latest(run, root) is not None


def open_suggest():
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("app_pages/classify.py").run()
    at.segmented_control(key="classify_mode").set_value("suggest").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.slow
def test_a_large_pool_is_ranked_in_the_background_and_found_after_a_reload(root, trained, monkeypatch):
    _, run = trained
    monkeypatch.setattr(batch_jobs, "INLINE_MAX", 3)
    at = open_suggest()
    at.file_uploader(key="teach_pool_files").set_value(
        [(f"pool{i}.png", photo(3000 + i), "image/png") for i in range(6)]).run()
    assert not at.exception, at.exception
    job = pool_jobs.latest(run, root)
    assert job.status()["status"] in background.ACTIVE
    assert at.get("progress") and "Ranking in the background" in at.get("progress")[0].proto.text
    assert at.button(key="teach_pool_stop")
    wait_for(lambda: job.status()["status"] == "done", "the background ranking", 240)
    later = open_suggest()  # a reload: a new session, nothing uploaded
    assert "6 photo(s) ranked" in messages(later), messages(later)
    assert later.button(key="teach_pool_add_0_0")


def test_the_pool_mode_is_offered_only_for_a_run_on_a_made_dataset(tmp_path, monkeypatch):
    other = tmp_path / "other"
    monkeypatch.setenv("TL_RUNS_DIR", str(other))
    monkeypatch.setattr(predict, "IMAGENET_WEIGHTS", None)
    train_run(other, tiny_config(strategy="feature_extraction"))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("app_pages/classify.py").run()
    assert at.segmented_control(key="classify_mode").options == ["Photos one by one", "A zip or a folder of photos"]


def test_a_photo_of_the_folder_table_goes_into_a_class(root):
    from test_app_batch import open_batch, upload, zip_of

    before = made.find("Pets", root)
    at = open_batch()
    upload(at, [("pool.zip", zip_of([(f"new/p{i}.png", photo(2000 + i)) for i in range(3)]), "application/zip")])
    assert len(at.dataframe[0].value) == 3
    at.selectbox(key="classify_table_pick").set_value("new/p1.png").run()
    guess = at.selectbox(key="teach_class_table").value
    assert guess == at.dataframe[0].value.set_index("File").loc["new/p1.png", "Class"]  # the run's answer first
    at.button(key="teach_go_table").click().run()
    assert not at.exception, at.exception
    after = made.find("Pets", root)
    assert after.version == before.version + 1 and after.counts()[guess] == before.counts()[guess] + 1
    assert f"Added to '{guess}'" in messages(at)
