"""Exports of one trained run: TFLite (float, quantised) and SavedModel agree with Keras."""

import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from tl import cli, datasets, export, runs

from conftest import REPO, tiny_config, train_run


# Enough steps (about 40 in all) for small_cnn to learn the shapes well above chance, so
# top-1 agreement means something; 16 px keeps them cheap.
SIZE = 16
EXPORT_CONFIG = dict(strategy="scratch", image_size=SIZE, synthetic_classes=4, samples_per_class=300,
                     batch_size=32, epochs=5, learning_rate=3e-3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished run, its Keras model, and its test images (resized to the run's image
    size, as a TFLite user does) with the Keras model's probabilities."""
    import keras
    import tensorflow as tf

    root = tmp_path_factory.mktemp("export-runs")
    run = train_run(root, tiny_config(**EXPORT_CONFIG))
    assert run.status()["status"] == "done", run.status()
    data = datasets.load(run.config)
    resized = tf.image.resize(data.read_batch(data.splits["test"]), (SIZE, SIZE), antialias=True)
    images = np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)
    model = keras.saving.load_model(run.model_path, safe_mode=True, compile=False)
    probs = model.predict(images.astype("float32"), verbose=0)
    return run, model, images, probs


def tflite_probs(path, images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's LiteRT deprecation notice
        import tensorflow as tf

        interpreter = tf.lite.Interpreter(model_path=str(path))
    given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert list(given["shape_signature"]) == [1, -1, -1, 3] and given["dtype"] == np.uint8  # any size
    out = []
    for image in images:
        interpreter.resize_tensor_input(given["index"], (1, *image.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(given["index"], image[None])
        interpreter.invoke()
        out.append(interpreter.get_tensor(taken["index"])[0])
    return np.array(out)


@pytest.mark.slow
def test_the_run_learned_something(trained):
    run, _, images, probs = trained
    assert run.metrics["test_accuracy"] >= 0.5  # 4 classes: chance is 0.25
    assert len(images) == run.metrics["test_size"] >= 100
    assert probs.max(axis=1).mean() > 0.5  # confident enough that top-1 comparisons mean something


def test_tflite_float_matches_keras(trained, tmp_path):
    run, _, images, probs = trained
    path = export.export(run, "tflite", tmp_path)
    assert path.name == f"{run.id}.tflite"
    lite = tflite_probs(path, images)
    np.testing.assert_array_equal(lite.argmax(axis=1), probs.argmax(axis=1))
    np.testing.assert_allclose(lite, probs, atol=1e-3)


def test_tflite_resizes_inside_any_image_size(trained, tmp_path):
    """Other sizes go in as they are. TFLite resizes with plain bilinear interpolation where
    the Keras model anti-aliases, so answers are close, not identical (at the run's own size
    they are identical: the tests above)."""
    import tensorflow as tf

    run, model, images, _ = trained
    path = export.export(run, "tflite", tmp_path)
    for shape in ((2 * SIZE, 2 * SIZE), (SIZE + 7, 3 * SIZE)):
        bigger = np.clip(np.round(tf.image.resize(images[:60], shape).numpy()), 0, 255).astype(np.uint8)
        expected = model.predict(bigger.astype("float32"), verbose=0)
        lite = tflite_probs(path, bigger)
        assert lite.shape == expected.shape
        np.testing.assert_allclose(lite.sum(axis=1), 1.0, atol=1e-5)
        agreement = (lite.argmax(axis=1) == expected.argmax(axis=1)).mean()
        assert agreement >= 0.85, (shape, agreement)


def test_tflite_quantized_is_smaller_and_agrees_on_top1(trained, tmp_path):
    run, _, images, probs = trained
    float_path = export.export(run, "tflite", tmp_path / "float.tflite")
    int8_path = export.export(run, "tflite", tmp_path / "int8.tflite", quantize=True)
    assert int8_path.stat().st_size < 0.5 * float_path.stat().st_size
    lite = tflite_probs(int8_path, images)
    agreement = (lite.argmax(axis=1) == probs.argmax(axis=1)).mean()
    assert agreement >= 0.95, agreement
    assert not np.array_equal(lite, tflite_probs(float_path, images))  # really a different model


def test_savedmodel_zip_loads_and_agrees(trained, tmp_path):
    import tensorflow as tf

    run, _, images, probs = trained
    path = export.export(run, "savedmodel", tmp_path)
    folder = export.unzip_savedmodel(path, tmp_path / "unzipped")
    loaded = tf.saved_model.load(str(folder))
    x = tf.constant(images.astype("float32"))
    served = loaded.serve(x).numpy()
    np.testing.assert_allclose(served, probs, atol=1e-5)
    np.testing.assert_array_equal(loaded.serve(x).numpy(), served)  # inference mode: no dropout
    signature = loaded.signatures["serving_default"]
    np.testing.assert_allclose(next(iter(signature(image=x).values())).numpy(), probs, atol=1e-5)


def test_keras_model_called_plainly_runs_in_inference_mode(trained):
    _, model, images, probs = trained
    x = images.astype("float32")
    np.testing.assert_allclose(model(x).numpy(), probs, atol=1e-5)


def test_keras_copy_labels_and_model_card(trained, tmp_path):
    run, _, _, _ = trained
    copy = export.export(run, "keras", tmp_path / "model.keras")
    assert copy.read_bytes() == run.model_path.read_bytes()
    labels = export.export(run, "labels", tmp_path).read_text().splitlines()
    assert labels == ["disk", "square", "triangle", "ring"] == run.labels
    card = export.export(run, "card", tmp_path).read_text()
    metrics = run.metrics
    for text in ("## Data", "## Configuration", "## Metrics", "## Intended use", "## Limits",
                 "disk, square, triangle, ring", f"{metrics['test_accuracy']:.1%}",
                 f"{metrics['train_size']} train / {metrics['val_size']} validation / {metrics['test_size']} test",
                 "| disk | 300 |", "resize it to 16x16", f"Trained on {metrics['train_size']} images"):
        assert text in card, text


def test_cached_exports_are_built_once(trained):
    run, _, _, _ = trained
    first = export.cached(run, "labels")
    assert first == run.path / "exports" / "labels.txt"
    # Every write is a new file renamed into place, so a rebuild would change the inode.
    stamp = (first.stat().st_ino, first.stat().st_mtime_ns)
    again = export.cached(run, "labels").stat()
    assert (again.st_ino, again.st_mtime_ns) == stamp


def test_an_unloadable_model_is_one_sentence_and_leaves_nothing(trained, tmp_path):
    run, _, _, _ = trained
    root = tmp_path / "runs"
    shutil.copytree(run.path, root / run.id)
    broken = runs.get(run.id, root)
    broken.model_path.write_bytes(b"not a keras file")
    out = tmp_path / "out"
    out.mkdir()
    for fmt in ("savedmodel", "tflite"):
        with pytest.raises(export.ExportError, match=f"The model.keras of run '{run.id}' is damaged "
                                                     r"\(not a Keras archive: cut short or overwritten\?\); train"):
            export.export(broken, fmt, out)
    assert list(out.iterdir()) == []


def test_cli_export_and_refusals(trained, tmp_path, capsys):
    run, _, _, _ = trained
    root = str(run.path.parent)
    out = tmp_path / "m.tflite"
    assert cli.main(["export", run.id, "--format", "tflite", "--quantize", "--out", str(out),
                     "--runs-dir", root]) == 0
    assert out.stat().st_size > 0 and f"Wrote {out}" in capsys.readouterr().out

    queued = runs.create(tiny_config(), root)
    assert cli.main(["export", queued.id, "--format", "keras", "--out", str(tmp_path), "--runs-dir", root]) == 2
    assert f"error: Run '{queued.id}' is queued; only a finished run" in capsys.readouterr().err
    assert cli.main(["export", "nope", "--format", "keras", "--out", str(tmp_path), "--runs-dir", root]) == 2
    assert "There is no run 'nope'" in capsys.readouterr().err
    assert cli.main(["export", run.id, "--format", "keras", "--quantize", "--out", str(tmp_path),
                     "--runs-dir", root]) == 2
    assert "--quantize applies to the tflite format only" in capsys.readouterr().err
    assert cli.main(["export", run.id, "--format", "labels", "--out", str(tmp_path / "no" / "x.txt"),
                     "--runs-dir", root]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not any(p.name.endswith(".keras") for p in tmp_path.iterdir())


def test_export_module_imports_without_tensorflow():
    code = "import sys, tl.export, tl.cli; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
