"""tl.predict and tl.gradcam: both heads, one backbone pass when shared, Grad-CAM, the CLI."""

import io
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import sklearn.datasets
from PIL import Image

from tl import cli, models, predict
from tl.backbones import BACKBONES
from tl.gradcam import grad_cam, overlay
from tl.images import decode_image
from tl.predict import Predictor

from conftest import tiny_config, train_run


CHINA = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"


def class_index() -> dict:
    path = Path(os.environ["KERAS_HOME"]) / "models" / "imagenet_class_index.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def frozen_run(runs_dir):
    """A backbone with an ImageNet head, trained by feature extraction (shareable). ResNet50
    because its randomly initialised features vary with the image (MobileNetV2's vanish)."""
    return train_run(runs_dir, tiny_config(backbone="resnet50", image_size=64, strategy="feature_extraction",
                                           synthetic_classes=3))


@pytest.fixture(scope="module")
def shared(frozen_run):
    return Predictor(frozen_run, imagenet_weights=None)


@pytest.fixture(scope="module")
def photo():
    return decode_image(CHINA.read_bytes())


@pytest.mark.slow
def test_both_heads_give_probabilities_and_real_imagenet_labels(shared, frozen_run, photo):
    result = shared.predict(photo, k=7)
    assert result.shared and result.imagenet_reason is None
    for head, classes in ((result.transfer, 3), (result.imagenet, 1000)):
        assert head.probs.shape == (classes,)
        assert head.probs.min() >= 0 and head.probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert head.scores == sorted(head.scores, reverse=True)
        assert head.seconds > 0
    assert len(result.imagenet.labels) == 7 and len(result.transfer.labels) == 3
    names = {name.replace("_", " ") for _, name in class_index().values()}
    assert set(result.imagenet.labels) <= names
    top = int(np.argmax(result.imagenet.probs))
    assert result.imagenet.labels[0] == class_index()[str(top)][1].replace("_", " ")
    assert set(result.transfer.labels) == set(frozen_run.labels)
    # The shared trunk reproduces the saved model's own output.
    model = keras.saving.load_model(frozen_run.model_path, safe_mode=True, compile=False)
    np.testing.assert_allclose(result.transfer.probs, model.predict_on_batch(photo[None].astype("float32"))[0],
                               atol=1e-5)


def _calls(monkeypatch):
    """Names of the models run, in order: Keras calls and the engine's backbone passes."""
    from tl import engine

    seen = []
    original = keras.Model.predict_on_batch

    def spy(self, x):
        seen.append(self.name)
        return original(self, x)

    monkeypatch.setattr(keras.Model, "predict_on_batch", spy)
    for kind in (engine.Pass, engine.OpenVinoPass):
        def pass_spy(self, images, _original=kind.__call__):
            seen.append(self.model.name)
            with monkeypatch.context() as inner:  # its own Keras call is not a second pass
                inner.setattr(keras.Model, "predict_on_batch", original)
                return _original(self, images)

        monkeypatch.setattr(kind, "__call__", pass_spy)
    return seen


RESNET50_CONVS = 53  # Conv2D layers of keras.applications.ResNet50 without its top


def _convs(model) -> int:
    found = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _convs(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            found += 1
    return found


def test_imagenet_names_are_keras_own_and_need_no_download(tmp_path, monkeypatch):
    import urllib.request

    from tl import imagenet_labels

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    imagenet_labels.class_index.cache_clear()
    keras_index = class_index()  # Keras's imagenet_class_index.json, byte for byte
    ours = imagenet_labels.class_index()
    assert [(wnid, name.replace(" ", "_")) for wnid, name in ours] == [tuple(keras_index[str(i)]) for i in range(1000)]
    probs = np.full(1000, 0.5 / 999)
    probs[285] = 0.5
    assert imagenet_labels.decode(probs, 2)[0] == ("Egyptian cat", 0.5)


@pytest.mark.slow
def test_shared_path_runs_the_backbone_once_per_image(shared, frozen_run, photo, monkeypatch):
    separate = Predictor(frozen_run, imagenet_weights=None, share=False)
    assert not separate.shared
    seen = _calls(monkeypatch)
    shared.predict(photo)
    shared.predict(photo[:200, :300])
    assert seen == ["features", "transfer_head", "imagenet_head"] * 2
    assert _convs(shared.transfer_path.features) == RESNET50_CONVS  # one backbone inside
    assert _convs(shared.transfer_path.head) == _convs(shared.imagenet_path.head) == 0
    seen.clear()
    both = separate.predict(photo)
    assert seen == ["features", "transfer_head", "features", "imagenet_head"]  # two passes
    assert both.backbone_seconds is None
    np.testing.assert_allclose(both.transfer.probs, shared.predict(photo).transfer.probs, atol=1e-5)


def test_exif_rotated_photo_is_classified_upright(shared, photo):
    stored = np.ascontiguousarray(np.rot90(photo, k=-1))
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 degrees to display"
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "PNG", exif=exif.tobytes())
    upright = decode_image(buffer.getvalue())
    assert upright.shape == photo.shape
    np.testing.assert_allclose(shared.predict(upright).imagenet.probs, shared.predict(photo).imagenet.probs, atol=1e-6)
    assert not np.allclose(shared.predict(stored).imagenet.probs, shared.predict(photo).imagenet.probs, atol=1e-4)


@pytest.mark.slow
def test_no_imagenet_column_says_why(runs_dir, frozen_run, photo, monkeypatch):
    baseline = train_run(runs_dir, tiny_config())
    result = Predictor(baseline).predict(photo, k=1)
    assert result.imagenet is None and "baseline" in result.imagenet_reason
    assert len(result.transfer.labels) == 1
    # weights 'none' really has no ImageNet head (the default top weights are the real ones)
    result = Predictor(frozen_run).predict(photo)
    assert result.imagenet is None and "weights 'none'" in result.imagenet_reason
    # Offline: the ImageNet top cannot be downloaded -> one sentence, the transferred head still works.
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    monkeypatch.setattr(Predictor, "_imagenet_unavailable", lambda self: None)
    result = Predictor(frozen_run).predict(photo)
    assert result.imagenet is None and result.transfer.probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert result.imagenet_reason.startswith("No ImageNet column: Could not download the ImageNet weights for resnet50")


def test_predictor_refuses_unfinished_runs_and_bad_k(runs_dir, shared, photo):
    from tl import runs
    from tl.errors import UserError

    queued = runs.create(tiny_config(), runs_dir)
    with pytest.raises(UserError, match="pick a finished run"):
        Predictor(queued)
    for k in (0, 11, "5"):
        with pytest.raises(UserError, match="between 1 and 10"):
            shared.predict(photo, k)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_grad_cam_is_image_sized_for_every_backbone(name):
    spec = BACKBONES[name]
    size = max(spec.min_size, 32)
    model = models.build(tiny_config(backbone=name, image_size=size, strategy="frozen", head="gap_dropout_dense"),
                         3, weights=None)
    path = predict._split_run_model(model)
    image = np.random.default_rng(1).integers(0, 256, (45, 37, 3), dtype=np.uint8)
    heat = grad_cam(path.features, path.head, image)
    assert heat.values.shape == (45, 37) and heat.values.dtype == np.float32
    assert np.isfinite(heat.values).all() and 0 <= heat.values.min() and heat.values.max() <= 1
    assert heat.values.max() == pytest.approx(1.0)  # normalised, not blank
    assert 0 <= heat.class_index < 3
    assert overlay(image, heat).shape == (45, 37, 3)


def test_grad_cam_weighs_a_spatial_map_and_explains_both_heads(shared, photo):
    keras.utils.set_random_seed(0)
    model = models.build(tiny_config(image_size=32, strategy="frozen"), 3, weights=None)
    path = predict._split_run_model(model)
    heat = grad_cam(path.features, path.head, photo)  # the top class: its evidence is positive somewhere
    assert heat.method == "grad-cam" and heat.values.shape == photo.shape[:2]
    assert heat.class_index == int(np.argmax(path.head.predict_on_batch(path.features.predict_on_batch(
        photo[None].astype("float32")))))
    assert grad_cam(path.features, path.head, photo, class_index=2).class_index == 2
    for head in ("transfer", "imagenet"):
        assert shared.grad_cam(photo, head).values.shape == photo.shape[:2]


def _grad_cam_through_the_input(features, head, image, index=None):
    """The Grad-CAM the app drew before issue 31: the tape held the whole backbone (and took
    the input's gradient too). The maps must not change now that only the head is taped."""
    import tensorflow as tf

    chain = features.layers[1:]
    x = tf.convert_to_tensor(image[None].astype(np.float32))
    for layer in chain[:-1]:
        x = layer(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = chain[-1](x, training=False)
        fmap = out[index] if index is not None else out
        probs = head(fmap, training=False)
        score = probs[0, int(tf.argmax(probs[0]))]
    grad_map, _ = tape.gradient(score, [fmap, x])
    cam = np.maximum((fmap.numpy()[0] * grad_map.numpy()[0].mean(axis=(0, 1))).sum(axis=-1), 0.0)
    return cam


def test_grad_cam_through_the_feature_map_draws_the_maps_it_drew_through_the_input(shared, photo):
    for head in ("transfer", "imagenet"):
        path = shared.transfer_path if head == "transfer" else shared.imagenet_path
        before = _grad_cam_through_the_input(path.features, path.head, photo, path.index)
        now = shared.grad_cams(photo, (head,))[head]
        peak = np.unravel_index(before.argmax(), before.shape)
        small = predict_gradcam_resize(now.values, before.shape)
        assert np.unravel_index(small.argmax(), small.shape) == peak, head
        assert np.allclose(predict_gradcam_resize(_normalised(before), photo.shape[:2]), now.values, atol=1e-3)


def _normalised(values):
    values = values - values.min()
    return values / values.max() if values.max() > 0 else values


def predict_gradcam_resize(values, shape):
    from tl.gradcam import resize_map

    return resize_map(values, *shape)


@pytest.mark.slow
def test_cli_predict_json(frozen_run, runs_dir, tmp_path, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    code = cli.main(["predict", frozen_run.id, str(CHINA), str(bad), "--top", "2", "--json",
                     "--runs-dir", str(runs_dir)])
    captured = capsys.readouterr()
    assert code == 2
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["file"] for line in lines] == [str(CHINA), str(bad)]
    good, broken = lines
    assert good["imagenet"] is None and "weights 'none'" in good["reason"]
    assert [set(item) for item in good["transfer"]] == [{"label", "score"}] * 2
    assert good["transfer"][0]["score"] >= good["transfer"][1]["score"]
    assert "notes.jpg is not an image" in broken["error"]
    assert captured.err.count("error:") == 1
    assert cli.main(["predict", frozen_run.id, str(CHINA), "--top", "11", "--runs-dir", str(runs_dir)]) == 2
    assert cli.main(["predict", "no-such-run", str(CHINA), "--runs-dir", str(runs_dir)]) == 2
    assert cli.main(["predict", frozen_run.id, str(CHINA), "--runs-dir", str(runs_dir)]) == 0
    assert "Transferred head" in capsys.readouterr().out
