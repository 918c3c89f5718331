"""tl.engine: which engine runs the frozen-backbone passes, that OpenVINO fp32 gives
TensorFlow's numbers, the converted-model cache, the fallbacks and their one sentence, and
what a run records."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tl import engine, features, paths
from tl.config import RunConfig
from tl.errors import ConfigError
from tl.paths import cache_root

from conftest import REPO, tiny_config, train_run



@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("TL_ENGINE", raising=False)
    monkeypatch.delenv("TL_ENGINE_PRECISION", raising=False)
    monkeypatch.delenv("TL_CONVERTED_MODELS_DIR", raising=False)  # this module's caches are its own


@pytest.fixture
def hidden_openvino(monkeypatch):
    """This process as if openvino were not installed."""
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    monkeypatch.setattr(engine, "_state", {})


def test_the_flag_beats_the_environment_which_beats_auto(no_env, monkeypatch):
    assert engine.requested() == ("auto", "auto")
    monkeypatch.setenv("TL_ENGINE", "tensorflow")
    monkeypatch.setenv("TL_ENGINE_PRECISION", "fp32")
    assert engine.requested() == ("tensorflow", "fp32")
    assert engine.requested("openvino", "bf16") == ("openvino", "bf16")
    assert engine.choose().engine == "tensorflow"


@pytest.mark.parametrize("field, value", [("engine", "onnx"), ("engine_precision", "int8"), ("engine", 3)])
def test_unknown_engine_names_are_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"Expected `{field}` to be one of"):
        RunConfig(**{field: value})


def test_auto_is_openvino_in_fp32_on_a_cpu(no_env):
    choice = engine.choose()
    assert (choice.engine, choice.precision, choice.note) == ("openvino", "fp32", None)


def test_bf16_on_a_cpu_without_it_is_fp32_said_once(no_env, monkeypatch):
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: False)
    choice = engine.choose("openvino", "bf16")
    assert (choice.engine, choice.precision) == ("openvino", "fp32")
    assert "no native bfloat16" in choice.note


def test_bf16_where_the_cpu_has_it(no_env, monkeypatch):
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: True)
    choice = engine.choose(None, "bf16")
    assert (choice.engine, choice.precision, choice.note) == ("openvino", "bf16", None)


def _lite_features_model(size=64, cut=None):
    from tl.models import build, feature_extractor

    strategy = "earlier_layer" if cut else "feature_extraction"
    model = build(RunConfig(backbone="efficientnet_lite0", weights="none", strategy=strategy, image_size=size), 3)
    return feature_extractor(model)


@pytest.mark.parametrize("cut", [None, "earlier"])
def test_openvino_fp32_gives_tensorflows_features(tmp_path, no_env, cut):
    model = _lite_features_model(cut=cut)
    images = np.random.default_rng(0).uniform(0, 255, (5, 50, 70, 3)).astype("float32")  # resized inside
    runner = engine.compile(model, key={"test": cut}, cache_root=tmp_path)
    assert (runner.engine, runner.precision) == ("openvino", "fp32")
    expected = model.predict_on_batch(images)
    found = runner(images)
    assert found.shape == expected.shape
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_a_model_with_two_outputs_gives_both(tmp_path, no_env):
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="a")(inputs)
    y = keras.layers.Conv2D(2, 3, name="b")(x)
    model = keras.Model(inputs, [x, y])
    images = np.random.default_rng(1).normal(size=(3, 16, 16, 3)).astype("float32")
    outputs = engine.compile(model, key={"test": "two"}, cache_root=tmp_path)(images)
    for found, expected in zip(outputs, model.predict_on_batch(images)):
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_the_converted_model_is_kept_and_reused(tmp_path, no_env, monkeypatch):
    model = _lite_features_model()
    engine.compile(model, key={"k": 1}, cache_root=tmp_path)
    folders = [p for p in (tmp_path / "openvino").iterdir() if p.name != "blobs"]
    assert len(folders) == 1 and (folders[0] / "model.xml").is_file() and (folders[0] / "model.bin").is_file()
    with monkeypatch.context() as patched:
        patched.setattr(engine, "_convert", lambda *a: pytest.fail("converted again"))
        assert engine.compile(model, key={"k": 1}, cache_root=tmp_path).engine == "openvino"
    # Other weights under the same key are another model: converted, not confused.
    engine.compile(_lite_features_model(), key={"k": 1}, cache_root=tmp_path)
    assert len([p for p in (tmp_path / "openvino").iterdir() if p.name != "blobs"]) == 2


def test_a_model_that_does_not_convert_runs_on_tensorflow_with_one_sentence(tmp_path, no_env, monkeypatch):
    def fail(*args):
        raise RuntimeError("No conversion rule found for operations: Frobnicate\nmore detail")

    monkeypatch.setattr(engine, "_convert", fail)
    model = _lite_features_model()
    notes = []
    runner = engine.compile(model, key={}, cache_root=tmp_path, on_note=notes.append)
    assert runner.engine == "tensorflow" and len(notes) == 1
    assert notes[0] == ("OpenVINO could not run this model (RuntimeError: No conversion rule found for operations: "
                        "Frobnicate); the frozen backbone runs on TensorFlow.")
    images = np.zeros((1, 64, 64, 3), "float32")
    np.testing.assert_array_equal(runner(images), model.predict_on_batch(images))


def test_without_openvino_everything_runs_on_tensorflow_and_says_so_once(runs_dir, no_env, hidden_openvino):
    lines = []
    run = train_run(runs_dir, tiny_config(strategy="feature_extraction", head="linear"), on_event=lines.append)
    assert run.status()["status"] == "done", run.status()
    said = [e["message"] for e in lines if e["type"] == "log" and "OpenVINO" in e.get("message", "")]
    assert len(said) == 1 and said[0].startswith("OpenVINO is not installed") and "runs on TensorFlow" in said[0]
    assert (run.metrics["engine"], run.metrics["engine_precision"]) == ("tensorflow", "fp32")


@pytest.mark.slow
def test_a_run_records_engine_and_both_precisions_and_fp32_features_are_shared(runs_dir, no_env, monkeypatch):
    cfg = tiny_config(strategy="feature_extraction", head="linear")
    monkeypatch.setenv("TL_ENGINE", "openvino")
    first = train_run(runs_dir, cfg)
    assert first.metrics["feature_cache"] == "miss"
    assert (first.metrics["engine"], first.metrics["engine_precision"]) == ("openvino", "fp32")
    assert first.metrics["train_precision"] == "float32"
    device = next(e for e in first.events()[0] if e["type"] == "device")
    assert device["train_precision"] == "float32" and "precision" not in device
    stored = next(e for e in first.events()[0] if e["type"] == "features" and e["cache"] == "stored")
    assert (stored["engine"], stored["engine_precision"]) == ("openvino", "fp32")
    # The same fp32 features, whichever engine extracted them.
    monkeypatch.setenv("TL_ENGINE", "tensorflow")
    second = train_run(runs_dir, cfg)
    assert second.metrics["feature_cache"] == "hit"
    assert second.metrics["test_accuracy"] == first.metrics["test_accuracy"]


def test_features_of_another_precision_are_keyed_apart():
    common = dict(backbone="b", weights="imagenet", cut=None, image_size=224, fingerprint="f")
    assert features.cache_key(engine_precision="fp32", **common) != features.cache_key(engine_precision="bf16", **common)


def test_features_not_in_fp32_are_scored_through_the_saved_model(runs_dir, no_env, monkeypatch):
    # As if the cached features came from a bf16 engine: the run reports the saved (float32)
    # model's test accuracy, with the features' beside it.
    monkeypatch.setattr(engine, "choose", lambda *a, **k: engine.Choice("tensorflow", "bf16"))
    run = train_run(runs_dir, tiny_config(strategy="feature_extraction", head="linear", samples_per_class=12))
    metrics = run.metrics
    assert metrics["engine_precision"] == "bf16" and "feature_test_accuracy" in metrics
    import keras

    from tl import datasets

    model = keras.saving.load_model(run.model_path, safe_mode=True, compile=False)
    data = datasets.load(run.config)
    test = data.splits["test"]
    probs = model.predict(np.stack([data.read(i) for i in test]).astype("float32"), verbose=0)
    assert metrics["test_accuracy"] == pytest.approx(float((probs.argmax(1) == data.labels[test]).mean()))


@pytest.mark.slow
def test_cli_predict_takes_an_engine(runs_dir, no_env, capsys):
    from tl import cli

    from test_predict import CHINA as image

    run = train_run(runs_dir, tiny_config(strategy="feature_extraction", head="linear"))
    answers = {}
    for name in ("openvino", "tensorflow"):
        assert cli.main(["predict", run.id, str(image), "--json", "--engine", name, "--runs-dir", str(runs_dir)]) == 0
        answers[name] = json.loads(capsys.readouterr().out.splitlines()[-1])["transfer"]
    assert [a["label"] for a in answers["openvino"]] == [a["label"] for a in answers["tensorflow"]]
    for a, b in zip(answers["openvino"], answers["tensorflow"]):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    with pytest.raises(SystemExit):
        cli.main(["predict", run.id, str(image), "--engine", "onnx", "--runs-dir", str(runs_dir)])
    assert "invalid choice: 'onnx'" in capsys.readouterr().err


def test_openvino_is_imported_with_its_telemetry_switched_off():
    code = ("import sys, json, tl.engine as e; ov = e.openvino(); import openvino.tools.ovc as ovc; "
            "print(json.dumps([type(ovc.telemetry).__module__, sys.modules.get('openvino_telemetry') is None]))")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("CI", "TL_OPENVINO_TELEMETRY")}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == ["openvino.tools.ovc.telemetry_stub", True]


def test_the_engine_module_and_the_cli_import_neither_tensorflow_nor_openvino():
    code = ("import sys, tl.engine, tl.cli, tl.predict, tl.advisor, tl.features; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'openvino')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_flags_name_the_cpu():
    text = engine.cpu_flags()
    assert "cores" in text and "flags:" in text


def test_cache_root_is_where_the_converted_models_go(tmp_path, no_env, monkeypatch):
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_root() == Path(tmp_path / "cache")
    assert paths.converted_models_root(cache_root()) == tmp_path / "cache" / "openvino"


def test_converted_models_can_live_in_a_folder_of_their_own(tmp_path, no_env, monkeypatch):
    monkeypatch.setenv("TL_CONVERTED_MODELS_DIR", str(tmp_path / "shared"))
    engine.compile(_lite_features_model(size=32), key={"k": "own folder"}, cache_root=tmp_path / "cache")
    assert len(list((tmp_path / "shared").glob("*/model.xml"))) == 1
    assert not list((tmp_path / "cache").glob("openvino/*/model.xml"))
    assert (tmp_path / "cache" / "openvino" / "blobs").is_dir()  # OpenVINO's compiled blobs stay in the cache


def test_a_gpu_box_extracts_on_tensorflow_in_its_training_precision(runs_dir, no_env, monkeypatch):
    # auto with a GPU: TensorFlow under mixed_float16 ("fp16", not a name one can ask for),
    # which the run must carry through to the pass rather than resolve again.
    monkeypatch.setattr(engine, "_gpu_visible", lambda: True)
    monkeypatch.setattr(engine, "_tensorflow_precision", lambda: "fp16")
    run = train_run(runs_dir, tiny_config(strategy="feature_extraction", head="linear"))
    assert run.status()["status"] == "done", run.status()
    assert (run.metrics["engine"], run.metrics["engine_precision"]) == ("tensorflow", "fp16")
