"""Exports of one trained run: TFLite (float, quantised) and SavedModel agree with Keras."""

import json
import re
import shutil
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

from tl import cli, datasets, export, export_web, runs

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


def test_float16_and_full_integer_variants_agree_and_unknown_ones_are_refused(trained, tmp_path, capsys):
    """float16 halves the file; int8 (full integer, calibrated on training photos) takes plain
    uint8 pixels (scale 1, zero point 0); both keep top-1 on the test images."""
    run, _, images, probs = trained
    root = str(run.path.parent)
    sizes = {}
    for variant in ("float16", "int8"):
        assert cli.main(["export", run.id, "--format", "tflite", "--quantize", variant, "--out", str(tmp_path),
                         "--runs-dir", root]) == 0
        path = tmp_path / export.filename(run, "tflite", variant)
        sizes[variant] = path.stat().st_size
        lite = tflite_probs(path, images)
        agreement = (lite.argmax(axis=1) == probs.argmax(axis=1)).mean()
        assert agreement >= 0.9, (variant, agreement)
    assert export.filename(run, "tflite", "int8") == f"{run.id}-int8-full.tflite"
    assert export.filename(run, "tflite", True) == export.filename(run, "tflite", "dynamic") == f"{run.id}-int8.tflite"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow as tf

        given = tf.lite.Interpreter(model_path=str(tmp_path / f"{run.id}-int8-full.tflite")).get_input_details()[0]
    scale, zero_point = given["quantization"]
    assert abs(scale - 1) < 1e-5 and zero_point == 0 and given["dtype"] == np.uint8
    assert sizes["int8"] < sizes["float16"]
    capsys.readouterr()
    assert cli.main(["export", run.id, "--format", "tflite", "--quantize", "int4", "--out", str(tmp_path),
                     "--runs-dir", root]) == 2
    assert capsys.readouterr().err.strip() == ("error: Expected `quantize` to be one of ['float16', 'dynamic', "
                                               "'int8']. Received: quantize='int4'.")


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


def test_a_backbone_that_does_not_convert_is_one_sentence_naming_the_operation(trained):
    run, _, _, _ = trained
    lacking = RuntimeError("<unknown>:0: error: loc(callsite(\"backbone\")): 'tf.ImageProjectiveTransformV3' op is "
                           "neither a custom op nor a flex op\n<unknown>:0: note: see current operation: ...")
    assert str(export._failed(run, "TFLite", lacking)) == (
        f"Could not convert run '{run.id}' to TFLite (its backbone uses the operation tf.ImageProjectiveTransformV3, "
        "which TFLite does not have); the .keras model still works, download that instead.")


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
    assert "--quantize applies to the tflite and web formats only" in capsys.readouterr().err
    assert cli.main(["export", queued.id, "--format", "web", "--out", str(tmp_path), "--runs-dir", root]) == 2
    assert f"error: Run '{queued.id}' is queued; only a finished run" in capsys.readouterr().err
    assert cli.main(["export", run.id, "--format", "labels", "--out", str(tmp_path / "no" / "x.txt"),
                     "--runs-dir", root]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not any(p.name.endswith(".keras") for p in tmp_path.iterdir())


def test_web_bundle_holds_the_page_a_fixed_input_model_metadata_and_readme(trained, tmp_path, capsys):
    """The bundle's model takes the run's size, float32 0-255, no resize inside, and gives the
    Keras model's probabilities; metadata carries the labels, the export rule and versions."""
    run, _, images, probs = trained
    assert cli.main(["export", run.id, "--format", "web", "--out", str(tmp_path),
                     "--runs-dir", str(run.path.parent)]) == 0
    path = tmp_path / f"{run.id}-web.zip"
    assert f"Wrote {path}" in capsys.readouterr().out
    root = f"{run.id}-web"
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == [f"{root}/{name}" for name in
                                              ("README.md", "index.html", "metadata.json", "model.tflite")]
        archive.extractall(tmp_path / "site")
    folder = tmp_path / "site" / root
    meta = json.loads((folder / "metadata.json").read_text())
    model = (folder / "model.tflite").read_bytes()
    assert meta["labels"] == run.labels and meta["run_id"] == run.id
    assert meta["model"]["input"] == {"shape": [1, SIZE, SIZE, 3], "dtype": "float32", "range": [0, 255]}
    assert meta["model"]["bytes"] == len(model)
    assert meta["none_of_my_classes"]["threshold"] == run.metrics["novelty"]["confidence_threshold"]
    assert meta["calibration"]["temperature"] == run.metrics["calibration"]["temperature"]
    assert meta["versions"]["litertjs"] == export_web.LITERT_VERSION
    assert meta["top_k"] == len(run.labels)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow as tf

        interpreter = tf.lite.Interpreter(model_content=model)
    given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert list(given["shape_signature"]) == [1, SIZE, SIZE, 3] and given["dtype"] == np.float32  # static
    interpreter.allocate_tensors()
    lite = []
    for image in images[:40]:
        interpreter.set_tensor(given["index"], image[None].astype(np.float32))
        interpreter.invoke()
        lite.append(interpreter.get_tensor(taken["index"])[0])
    np.testing.assert_allclose(np.array(lite), probs[:40], atol=1e-4)

    page = (folder / "index.html").read_text()
    import_map = re.search(r'<script type="importmap">(.*?)</script>', page, re.S).group(1)
    assert json.loads(import_map) == {"imports": export_web.library_urls()}
    assert all(f"@{export_web.LITERT_VERSION}/" in url for url in export_web.library_urls().values())
    assert export_web.wasm_url() in page and "{{" not in page
    for hook in ('data-testid="photos"', '"top-1"', '"unknown"', 'type="file"', "getUserMedia"):
        assert hook in page, hook
    readme = (folder / "README.md").read_text()
    for text in ("## Host it", "## Offline use: vendor the library", f"npm pack @litertjs/core@{export_web.LITERT_VERSION}"):
        assert text in readme, text


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_the_page_resizes_as_the_model_does():
    """The page's own resize (JavaScript, run here by node) is TensorFlow's anti-aliased
    bilinear: shrinking, enlarging, and a mix of both."""
    import tensorflow as tf

    page = export_web.PAGE.read_text()
    code = page[page.index("function taps("):page.index("function pixelsOf(")]
    rng = np.random.default_rng(0)
    for (height, width), size in (((53, 37), 16), ((5, 7), 16), ((40, 9), 16)):
        rgb = rng.integers(0, 256, (height, width, 3))
        rgba = np.concatenate([rgb, np.full((height, width, 1), 255)], axis=2)
        script = (code + f"const out = resize({json.dumps(rgba.ravel().tolist())}, {width}, {height}, {size}, "
                  "'float32'); console.log(JSON.stringify(Array.from(out)));")
        result = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True)
        page_pixels = np.array(json.loads(result.stdout)).reshape(size, size, 3)
        expected = tf.image.resize(rgb[None].astype("float32"), (size, size), antialias=True).numpy()[0]
        np.testing.assert_allclose(page_pixels, expected, atol=1e-3)


def test_the_pinned_library_matches_the_lockfile():
    """The page's exact versions are the ones `npm ci` installs for the browser tests."""
    package = json.loads((REPO / "package.json").read_text())
    lock = json.loads((REPO / "package-lock.json").read_text())["packages"]
    assert package["dependencies"] == {"@litertjs/core": export_web.LITERT_VERSION}
    assert lock["node_modules/@litertjs/core"]["version"] == export_web.LITERT_VERSION
    assert lock["node_modules/@litertjs/wasm-utils"]["version"] == export_web.WASM_UTILS_VERSION


def test_export_module_imports_without_tensorflow():
    code = "import sys, tl.export, tl.export_web, tl.cli; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
