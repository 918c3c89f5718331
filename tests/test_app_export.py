"""The Train page's export downloads: built on request, kept in the run folder."""

import zipfile

from streamlit.testing.v1 import AppTest

from conftest import REPO, tiny_config, train_run

APP = str(REPO / "streamlit_app.py")


def open_run(run_id):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = run_id
    at.run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception, at.exception
    return at


def download_labels(at):
    return [b.proto.label for b in at.get("download_button")]


def test_build_then_download_tflite_and_reuse_it(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("TL_RUNS_DIR", str(root))
    run = train_run(root, tiny_config())
    at = open_run(run.id)
    assert download_labels(at) == ["model.keras", "config.json", "metrics.json", "labels.txt",
                                   "Model card (.md)"]
    assert (run.path / "exports" / "labels.txt").read_text().splitlines() == run.labels

    at.button(key=f"build_tflite_{run.id}").click().run()
    assert not at.exception, at.exception
    assert "TFLite, float" in download_labels(at)
    assert not any(b.key == f"build_tflite_{run.id}" for b in at.button)  # the download took its place
    built = run.path / "exports" / f"{run.id}.tflite"
    stamp = (built.stat().st_ino, built.stat().st_mtime_ns)  # a rebuild is a new file: new inode

    again = open_run(run.id)  # another session: no Build button, the same file
    assert "TFLite, float" in download_labels(again)
    assert not any(b.key == f"build_tflite_{run.id}" for b in again.button)
    assert (built.stat().st_ino, built.stat().st_mtime_ns) == stamp


def test_build_then_download_the_web_page(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("TL_RUNS_DIR", str(root))
    run = train_run(root, tiny_config())
    at = open_run(run.id)
    at.button(key=f"build_web_{run.id}").click().run()
    assert not at.exception, at.exception
    assert "Web page (zip)" in download_labels(at)
    built = run.path / "exports" / f"{run.id}-web.zip"
    with zipfile.ZipFile(built) as archive:
        assert {name.split("/", 1)[1] for name in archive.namelist()} == {
            "index.html", "model.tflite", "metadata.json", "README.md"}
