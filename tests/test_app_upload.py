import io
import zipfile

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO, write_image_folder

APP = str(REPO / "streamlit_app.py")


@pytest.fixture(autouse=True)
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TL_DATA_DIR", str(tmp_path / "data"))


def zip_of(root) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, "photos/" + str(path.relative_to(root)))
        archive.writestr("__MACOSX/photos/._x.png", b"junk")
    return buffer.getvalue()


def open_folder_dataset():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("app_pages/train.py").run()
    at.selectbox(key="train_dataset").set_value("folder").run()
    assert not at.exception, at.exception
    return at


def test_zip_upload_on_the_train_page_is_stored_and_previewed(tmp_path):
    at = open_folder_dataset()
    at.radio(key="train_source").set_value("zip").run()
    blob = zip_of(write_image_folder(tmp_path / "src", {"cats": 4, "dogs": 5}))
    at.file_uploader(key="train_zip").set_value(("photos.zip", blob, "application/zip")).run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == ["Stored: 2 classes, 9 images; skipped 1 junk files."]
    assert not at.error, [e.value for e in at.error]
    at.run()  # a rerun keeps the session's result: ingesting again would say "Already stored"
    assert [s.value for s in at.success] == ["Stored: 2 classes, 9 images; skipped 1 junk files."]
    assert any("Images per class" in str(c.proto.spec) for c in at.get("plotly_chart"))  # the preview
    stored = list((tmp_path / "data").iterdir())
    assert len(stored) == 1 and sorted(p.name for p in (stored[0] / "data").iterdir()) == ["cats", "dogs"]


def test_a_bad_zip_is_one_error_on_the_page(tmp_path):
    at = open_folder_dataset()
    at.radio(key="train_source").set_value("zip").run()
    blob = zip_of(write_image_folder(tmp_path / "src", {"only": 3}))
    at.file_uploader(key="train_zip").set_value(("one.zip", blob, "application/zip")).run()
    assert not at.exception, at.exception
    assert at.error[0].value.startswith("'one.zip' has only one class ('only')")


def test_downloadable_dataset_shows_its_card():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("app_pages/train.py").run()
    at.selectbox(key="train_dataset").set_value("stanford_dogs").run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "Stanford Dogs" in text and "120 dog breeds" in text and "20,580" in text


def test_folder_upload_on_the_train_page(tmp_path):
    at = open_folder_dataset()
    at.radio(key="train_source").set_value("upload_dir").run()
    root = write_image_folder(tmp_path / "src", {"cats": 3, "dogs": 3})
    files = [("mine/" + str(p.relative_to(root)), p.read_bytes(), "image/png") for p in sorted(root.rglob("*.png"))]
    at.file_uploader(key="train_upload_dir").set_value(files).run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == ["Stored: 2 classes, 6 images."]
