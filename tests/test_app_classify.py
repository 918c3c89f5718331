"""The Classify page: real photos through both heads, bad files one line each, Grad-CAM."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import skimage
import sklearn.datasets
from PIL import Image
from streamlit.testing.v1 import AppTest

from tl import datasets, novelty, predict
from tl.images import decode_image

from conftest import LITE0_RUN, REPO, tiny_config, train_run


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


# -- "none of my classes" ------------------------------------------------------------------

def noise_png(seed: int = 0) -> bytes:
    """Uniform noise: a photo of none of any run's classes."""
    return png(Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)))


def training_photo(run, n: int = 0) -> np.ndarray:
    """The ``n``-th photo the run trained on (in-class by construction)."""
    data = datasets.load(run.config)
    index = {key: i for i, key in enumerate(data.keys)}
    return data.read(index[json.loads((run.path / "split.json").read_text())["train"][n]])


def flagged(at) -> list:
    """The keys of the "none of my classes" warnings on the page, in order."""
    found = []

    def walk(node):
        if (getattr(node, "key", None) or "").startswith("classify_unknown_"):
            found.append(node.key)
        for child in (node.children.values() if isinstance(getattr(node, "children", None), dict) else []):
            walk(child)
    walk(at.main)
    return found


def upload(at, files) -> None:
    at.file_uploader(key="classify_files").set_value([(name, data, "image/png") for name, data in files]).run()
    assert not at.exception, at.exception


@pytest.fixture
def lite_app(tmp_path, monkeypatch, trained_once):
    """A copy of a Lite0 feature-extraction run (real ImageNet features: its rule separates
    noise from its shapes), the only run the Classify page finds."""
    root = tmp_path / "runs"
    run = trained_once(tiny_config(**LITE0_RUN), root)
    monkeypatch.setenv("TL_RUNS_DIR", str(root))
    return run


@pytest.mark.slow
def test_an_outsider_is_flagged_and_a_photo_of_its_classes_is_not(lite_app):
    run = lite_app
    assert run.metrics["calibration"]["applied"] and run.metrics["novelty"]["rule"]
    at = open_classify()
    assert at.segmented_control(key="classify_strictness").value == "balanced"
    upload(at, [("noise.png", noise_png()), ("shape.png", png(Image.fromarray(training_photo(run))))])
    assert flagged(at) == ["classify_unknown_0"]
    (warning,) = at.warning
    names = ", ".join(run.labels)
    assert warning.value == (f"This looks like none of the 2 classes this run was trained on ({names}). The guesses "
                             "below are what the model would answer anyway. To flag fewer or more photos, change "
                             "\"Flag photos of none of my classes\" above.")
    assert len(at.get("plotly_chart")) == 4  # the guesses are still shown, for both photos
    assert not at.info  # a calibrated run with a rule has nothing to excuse


def between_the_cuts(run):
    """A photo (a training photo blended with noise) that Relaxed lets through and Strict
    flags, as far from both cuts as the blends allow."""
    predictor = predict.Predictor(run)
    rule, base = predictor.rule, training_photo(run).astype(np.float64)
    noise = np.random.default_rng(1).integers(0, 256, base.shape).astype(np.float64)
    relaxed, strict = novelty.STRICTNESS["relaxed"], novelty.STRICTNESS["strict"]
    best, margin = None, 0.0
    for share in np.linspace(0.2, 0.8, 61):
        image = ((1 - share) * base + share * noise).round().astype(np.uint8)
        answer = predictor.predict(image, 1)
        score, sure = answer.novelty, answer.confidence
        room = min(rule.threshold_at(relaxed) - score, sure - rule.confidence_floor_at(relaxed),
                   max(score - rule.threshold_at(strict), rule.confidence_floor_at(strict) - sure))
        if room > margin:
            best, margin = image, room
    assert best is not None and margin > 1e-3, "no blend lies between the Relaxed and Strict cuts"
    return png(Image.fromarray(best))


@pytest.mark.slow
def test_the_strictness_changes_the_decision_without_running_the_model_again(lite_app, monkeypatch):
    photo = between_the_cuts(lite_app)
    calls = []
    real = predict.Predictor.predict
    monkeypatch.setattr(predict.Predictor, "predict", lambda self, *a, **kw: calls.append(1) or real(self, *a, **kw))
    at = open_classify()
    at.segmented_control(key="classify_strictness").set_value("relaxed").run()
    upload(at, [("blend.png", photo)])
    assert flagged(at) == [] and len(calls) == 1
    at.segmented_control(key="classify_strictness").set_value("strict").run()
    assert not at.exception, at.exception
    assert flagged(at) == ["classify_unknown_0"]
    at.segmented_control(key="classify_strictness").set_value("relaxed").run()
    assert flagged(at) == [] and len(calls) == 1  # judged again from the cached answer


def test_a_run_trained_before_calibration_classifies_and_says_so_once(lite_app):
    run = lite_app
    metrics = json.loads((run.path / "metrics.json").read_text())
    del metrics["calibration"], metrics["novelty"]
    (run.path / "metrics.json").write_text(json.dumps(metrics))
    (run.path / novelty.FILE).unlink()
    at = open_classify()
    assert [g.key for g in at.get("button_group")] == ["classify_mode"]  # no strictness: there is no rule to apply it to
    upload(at, [("noise.png", noise_png()), ("shape.png", png(Image.fromarray(training_photo(run))))])
    assert [i.value for i in at.info] == [
        "This run was trained before calibration: its confidences are the model's own, and it cannot tell a "
        "photo of none of its classes; train it again to get both."]
    assert flagged(at) == [] and not at.warning
    assert len(at.get("plotly_chart")) == 4
