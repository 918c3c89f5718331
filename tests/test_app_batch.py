"""Classify many photos at once: a zip or a folder in, a table, filters, CSV and a zip sorted
into class folders out; a few photos in the page, more in a background process found again
after a reload; hostile zips and other bad input one sentence each, nothing left behind."""

import csv
import io
import zipfile

import pytest
from streamlit.testing.v1 import AppTest

from tl import background, batch_jobs

from conftest import LITE0_RUN, REPO, photos, tiny_config, wait_for

APP = str(REPO / "streamlit_app.py")


def zip_of(files) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files:
            archive.writestr(name, data)
    return out.getvalue()



@pytest.fixture
def lite_app(tmp_path, monkeypatch, trained_once):
    root = tmp_path / "runs"
    run = trained_once(tiny_config(**LITE0_RUN), root)
    monkeypatch.setenv("TL_RUNS_DIR", str(root))
    return run


def open_batch():
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("app_pages/classify.py").run()
    at.segmented_control(key="classify_mode").set_value("batch").run()
    assert not at.exception, at.exception
    return at


def upload(at, files) -> None:
    at.file_uploader(key="classify_batch_files").set_value(files).run()
    assert not at.exception, at.exception


def classified(run) -> list:
    folder = run.path / "classified"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.slow
def test_a_small_zip_is_classified_here_into_a_table_filters_and_downloads(lite_app, downloads):
    run = lite_app
    at = open_batch()
    pictures = photos(4) + photos(2, picture="astronaut")
    upload_zip = zip_of([(f"in/{n}", d) for n, d in pictures] + [("in/broken.jpg", b"not a jpeg")])
    upload(at, [("photos.zip", upload_zip, "application/zip")])
    (table,) = at.dataframe
    frame = table.value
    assert sorted(frame["File"]) == sorted(f"in/{n}" for n, _ in pictures)
    assert set(frame["Class"]) <= set(run.labels)
    assert frame["Confidence"].between(0, 1).all()
    assert all(str(t).startswith("data:image/jpeg;base64,") for t in frame["Photo"])
    assert "None of my classes" in frame.columns
    assert at.success[0].value.startswith("6 photos classified")
    assert any(c.value.startswith("in/broken\\.jpg: ") for c in at.caption)

    answers = list(csv.DictReader(io.StringIO(downloads[f"answers-{run.id}.csv"].decode())))
    assert [a["file"] for a in answers if not a["error"]] == sorted(f"in/{n}" for n, _ in pictures)
    assert [a["file"] for a in answers if a["error"]] == ["in/broken.jpg"]
    (job,) = classified(run)
    with zipfile.ZipFile(run.path / "classified" / job / "sorted.zip") as archive:
        names = archive.namelist()
    assert len(names) == 6 and "broken.jpg" not in " ".join(names)
    expected = {f"{'_unknown' if a['unknown'] == 'true' else a['class']}/{a['file'].split('/')[-1]}"
                for a in answers if not a["error"]}
    assert set(names) == expected
    assert not (run.path / "classified" / job / "photos").exists()

    first = frame["Class"].iloc[0]
    at.multiselect(key="classify_table_classes").set_value([first]).run()
    assert set(at.dataframe[0].value["Class"]) == {first}
    at.multiselect(key="classify_table_classes").set_value([]).run()
    at.toggle(key="classify_table_unknown").set_value(True).run()
    assert at.dataframe[0].value["None of my classes"].all()
    assert len(at.dataframe[0].value) == sum(a["unknown"] == "true" for a in answers)

    # The same upload in a new session: the result is found, nothing classified again.
    again = open_batch()
    upload(again, [("photos.zip", upload_zip, "application/zip")])
    assert len(again.dataframe[0].value) == 6
    assert classified(run) == [job]


@pytest.mark.slow
def test_many_photos_run_in_the_background_and_are_found_again_after_a_reload(lite_app, monkeypatch):
    run = lite_app
    monkeypatch.setattr(batch_jobs, "INLINE_MAX", 3)
    at = open_batch()
    files = [(name, data, "image/jpeg") for name, data in photos(8)]
    upload(at, files)
    (job,) = classified(run)
    folder = run.path / "classified" / job
    assert batch_jobs.BatchJob(folder).status()["status"] in background.ACTIVE
    assert at.get("progress") and "Classifying in the background" in at.get("progress")[0].proto.text
    assert at.button(key="classify_batch_stop")
    wait_for(lambda: batch_jobs.BatchJob(folder).status()["status"] == "done", "the background job", 240)

    later = open_batch()  # a reload: a new session, the same upload
    upload(later, files)
    assert sorted(later.dataframe[0].value["File"]) == sorted(name for name, *_ in files)
    assert (folder / "answers.csv").is_file() and not (folder / "photos").exists()


@pytest.mark.slow
def test_stop_ends_the_background_job_and_leaves_no_photos(lite_app, monkeypatch):
    run = lite_app
    monkeypatch.setattr(batch_jobs, "INLINE_MAX", 3)
    at = open_batch()
    upload(at, [(name, data, "image/jpeg") for name, data in photos(6)])
    at.button(key="classify_batch_stop").click().run()
    (job,) = classified(run)
    job = batch_jobs.BatchJob(run.path / "classified" / job)
    assert job.status()["status"] == "cancelled"
    assert not job.photos.exists()
    assert at.warning[0].value == "Stopped by the user."
    assert at.button(key="classify_batch_again")


def bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("huge.png", b"\0" * (300 * 1024 * 1024))
    return out.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("files, sentence", [
    ([("notes.zip", zip_of([("a.txt", b"hello")]), "application/zip")], "holds no images"),
    ([("odd.zip", zip_of([("../escape.jpg", photos(1)[0][1])]), "application/zip")], "escape.jpg"),
    ([("bomb.zip", bomb(), "application/zip")], "huge.png"),
    ([("not.zip", b"PK not really", "application/zip")], "is not a readable zip"),
    ([("a.zip", zip_of(photos(1)), "application/zip"), ("b.jpg", photos(1)[0][1], "image/jpeg")],
     "Upload one zip, or photos, not both"),
])
def test_bad_uploads_are_one_sentence_and_leave_nothing(lite_app, files, sentence):
    run = lite_app
    at = open_batch()
    upload(at, files)
    (error,) = at.error
    assert sentence in error.value, error.value
    assert not at.dataframe
    assert classified(run) == []


def test_a_run_still_training_is_one_sentence(tmp_path, trained_once):
    run = trained_once(tiny_config(), tmp_path / "runs")
    status = run.path / "status.json"
    status.write_text(status.read_text().replace('"done"', '"running"'))
    from tl.errors import UserError

    with pytest.raises(UserError, match="has not finished training"):
        batch_jobs.prepare(run, "key", photos(2))
    assert not (run.path / "classified" / "key").exists()
