"""A run trained from EfficientNet-Lite0's real ImageNet weights (the default backbone):
`tl predict` names what is in real photos, Grad-CAM looks at the cat, and the saved model
loads in safe mode and exports to TFLite with the same answers."""

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from tl import cli, datasets, export
from tl.predict import Predictor

from conftest import LITE0_RUN, tiny_config


SKIMAGE = Path(skimage.data.__file__).parent
CHELSEA, COFFEE = SKIMAGE / "chelsea.png", SKIMAGE / "coffee.png"
CAT_LABELS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
COFFEE_LABELS = {"espresso", "cup", "coffee mug"}
# A hand-drawn box around the cat's face in chelsea.png (451x300): eyes, nose and muzzle.
FACE = (90, 40, 360, 280)  # x0, y0, x1, y1


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lite-runs")


@pytest.fixture(scope="module")
def lite_run(runs_dir, trained_once):
    return trained_once(tiny_config(**LITE0_RUN), runs_dir)


@pytest.mark.slow
def test_cli_predict_names_the_cat_and_the_coffee(lite_run, runs_dir, capsys):
    code = cli.main(["predict", lite_run.id, str(CHELSEA), str(COFFEE), "--top", "3", "--json",
                     "--runs-dir", str(runs_dir)])
    assert code == 0
    cat, coffee = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert cat["shared_backbone"] and cat["reason"] is None
    assert cat["imagenet"][0]["label"] in CAT_LABELS and cat["imagenet"][0]["score"] > 0.5
    assert COFFEE_LABELS & {item["label"] for item in coffee["imagenet"]}
    assert {item["label"] for item in cat["transfer"]} <= set(lite_run.labels)


@pytest.mark.parametrize("engine, precision", [("tensorflow", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")])
def test_classify_says_egyptian_cat_with_every_engine_and_precision(lite_run, engine, precision):
    # bf16 where this CPU has it; elsewhere the predictor says so and runs fp32.
    predictor = Predictor(lite_run, engine=engine, precision=precision)
    assert predictor.engine.engine == engine
    result = predictor.predict(skimage.data.chelsea(), 3)
    assert result.imagenet.labels[0] == "Egyptian cat", (predictor.engine, result.imagenet.labels)
    assert set(result.transfer.labels) <= set(lite_run.labels)


def test_grad_cam_of_the_imagenet_head_looks_at_the_cat(lite_run):
    image = skimage.data.chelsea()
    heat = Predictor(lite_run).grad_cam(image, "imagenet")
    assert heat.method == "grad-cam" and heat.values.shape == image.shape[:2]
    x0, y0, x1, y1 = FACE
    inside = np.zeros(image.shape[:2], dtype=bool)
    inside[y0:y1, x0:x1] = True
    assert heat.values[inside].mean() > 2 * heat.values[~inside].mean()


@pytest.mark.slow
def test_model_loads_in_safe_mode_and_tflite_agrees_on_top1(lite_run, tmp_path):
    import keras
    import tensorflow as tf

    from test_export import tflite_probs

    model = keras.saving.load_model(lite_run.model_path, safe_mode=True, compile=False)
    data = datasets.load(lite_run.config)
    images = [data.read(i) for i in range(len(data))]  # 32x32 synthetic shapes, enlarged inside
    images.append(np.asarray(tf.image.resize(skimage.data.chelsea(), (224, 224), antialias=True)).round()
                  .clip(0, 255).astype(np.uint8))
    # One call per size (the shapes, then the photo): per-image calls cost a call's overhead each.
    keras_probs = np.concatenate([model.predict(np.stack(images[:-1]).astype("float32"), verbose=0),
                                  model.predict(images[-1][None].astype("float32"), verbose=0)])
    lite = tflite_probs(export.export(lite_run, "tflite", tmp_path), images)
    np.testing.assert_array_equal(lite.argmax(axis=1), keras_probs.argmax(axis=1))
    np.testing.assert_allclose(lite, keras_probs, atol=2e-3)
