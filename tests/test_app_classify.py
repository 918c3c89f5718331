"""The Classify page: real photos through both heads, bad files one line each, Grad-CAM."""

import io
import json
import os
from pathlib import Path

import pytest
import skimage
import sklearn.datasets
from PIL import Image
from streamlit.testing.v1 import AppTest

from tl import predict
from tl.images import decode_image

from conftest import REPO, tiny_config, train_run


APP = str(REPO / "streamlit_app.py")
CHINA = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
CHELSEA = Path(skimage.data.__file__).parent / "chelsea.png"


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def open_classify():
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("app_pages/classify.py").run()
    assert not at.exception, at.exception
    return at


def bars(chart) -> tuple:
    spec = json.loads(chart.proto.spec)
    trace = spec["data"][0]
    return trace["y"][::-1], trace["x"][::-1], spec["layout"]["title"]["text"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run = train_run(root, tiny_config(backbone="resnet50", image_size=32, strategy="feature_extraction",
                                      synthetic_classes=3))
    return root, run


@pytest.fixture
def app_with_run(finished_run, monkeypatch):
    root, run = finished_run
    monkeypatch.setenv("TL_RUNS_DIR", str(root))
    # Offline there are no ImageNet top weights: a random top exercises the same code.
    monkeypatch.setattr(predict, "IMAGENET_WEIGHTS", None)
    return run


def test_no_finished_run_points_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    at = open_classify()
    assert "No finished run yet" in at.info[0].value
    assert not at.get("file_uploader")


@pytest.mark.slow
def test_real_photos_and_bad_files(app_with_run):
    run = app_with_run
    at = open_classify()
    assert at.selectbox(key="classify_run").value == run.id
    truncated = CHINA.read_bytes()[:4000]
    bomb = png(Image.new("1", (9000, 6000)))
    at.file_uploader(key="classify_files").set_value([
        ("china.jpg", CHINA.read_bytes(), "image/jpeg"),
        ("empty.jpg", b"", "image/jpeg"),
        ("chelsea.png", CHELSEA.read_bytes(), "image/png"),
        ("notes.png", b"just some text, not a picture\n", "image/png"),
        ("cut.jpg", truncated, "image/jpeg"),
        ("bomb.png", bomb, "image/png"),
    ]).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 4 and all("\n" not in e for e in errors)
    assert errors[0].startswith("empty.jpg is empty")
    assert errors[1].startswith("notes.png is not an image")
    assert errors[2].startswith("cut.jpg is truncated or corrupt")
    assert errors[3].startswith("bomb.png is too large")
    charts = at.get("plotly_chart")
    assert len(charts) == 4  # two heads x two good photos
    assert "Backbone on OpenVINO (fp32)." in [c.value for c in at.caption]  # the default engine, said

    index = json.loads((Path(os.environ["KERAS_HOME"]) / "models" / "imagenet_class_index.json").read_text())
    names = {name.replace("_", " ") for _, name in index.values()}
    predictor = predict.Predictor(run, imagenet_weights=None)
    for (imagenet, transfer), path in zip((charts[0:2], charts[2:4]), (CHINA, CHELSEA)):
        expected = predictor.predict(decode_image(path.read_bytes(), draft_size=predict.DRAFT_SIZE), k=5)
        assert expected.transfer.probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert expected.imagenet.probs.sum() == pytest.approx(1.0, abs=1e-5)
        labels, scores, title = bars(imagenet)
        assert title.startswith("ImageNet head (resnet50)")
        assert len(labels) == 5 and set(labels) <= names  # decoded by Keras from the real index
        # (the random top differs between builds, so compare its shape of answer, not values)
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
        labels, scores, title = bars(transfer)
        assert title.startswith("Transferred head")
        assert labels == expected.transfer.labels and set(labels) == set(run.labels)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)  # 3 classes, all shown
    assert any("One backbone pass for both heads" in c.value for c in at.caption)

    # k and Grad-CAM: fewer bars, and a heat map under each chart.
    pictures = len(at.get("image"))
    at.slider(key="classify_k").set_value(2)
    at.toggle(key="classify_gradcam").set_value(True).run()
    assert not at.exception, at.exception
    assert all(len(bars(chart)[0]) == 2 for chart in at.get("plotly_chart"))
    assert len(at.get("image")) == pictures + 4
    captions = [c for image in at.get("image") for c in image.captions]
    assert sum("where it looks for" in c for c in captions) == 4


def test_camera_photo(app_with_run):
    at = open_classify()
    at.toggle(key="classify_use_camera").set_value(True).run()
    at.camera_input(key="classify_camera").set_value(("photo.jpg", CHINA.read_bytes(), "image/jpeg")).run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 2
    assert any("camera photo" in c for image in at.get("image") for c in image.captions)


def test_a_model_the_memory_budget_cannot_take_is_one_sentence(app_with_run, monkeypatch):
    from tl import memory

    monkeypatch.setattr(memory, "IDLE_SECONDS", 0.0)
    memory.release_caches()  # no model held from the tests above
    monkeypatch.setenv("TL_MEMORY_BUDGET_MB", "200")  # less than this test process alone
    at = open_classify()
    at.file_uploader(key="classify_files").set_value([("china.jpg", CHINA.read_bytes(), "image/jpeg")]).run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith("Loading this run's model")
    assert "needs about" in error.value and "of its 200 MB (TL_MEMORY_BUDGET_MB) right now" in error.value
    assert error.value.endswith("ask whoever runs the app for a larger budget.")
    assert not at.get("plotly_chart")
