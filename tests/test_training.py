import json

import numpy as np
import pytest

from tl import datasets, features, learner, runs, training
from tl.backbones import build_backbone, finetunable_layers, set_trainable_top
from tl.config import RunConfig
from tl.errors import ConfigError
from tl.metrics import classification_report
from tl.heads import HEADS
from tl.paths import cache_root
from tl.strategies import STRATEGIES

from conftest import tiny_config, train_run, write_image_folder


def load(run):
    import keras

    return keras.saving.load_model(run.model_path, safe_mode=True)


# Every head on both strategies that fit it on cached features (where a head's build and fit
# differ most: exact L-BFGS, Adam steps, a flattened feature map), and each image-trained
# strategy with the linear head plus one other head each, so that every head also trains on
# images once (warm start on features for the pooled heads, on images for Flatten). The full
# 6 x 4 matrix cost 24 runs; these 16 reach the same code paths.
IMAGE_STRATEGY_HEADS = {"frozen": "dense_stack", "fine_tune": "flatten_dense",
                        "full_fine_tune": "gap_dropout_dense", "scratch": "flatten_dense"}
COMBINATIONS = sorted({(s, h) for s in ("feature_extraction", "earlier_layer") for h in HEADS}
                      | {(s, h) for s, other in IMAGE_STRATEGY_HEADS.items() for h in ("linear", other)})


def test_the_combinations_cover_every_strategy_and_head():
    assert {s for s, _ in COMBINATIONS} == set(STRATEGIES)
    assert {h for s, h in COMBINATIONS if s in IMAGE_STRATEGY_HEADS} == set(HEADS)


@pytest.mark.parametrize("strategy,head", COMBINATIONS)
def test_every_strategy_and_head_trains_one_epoch(runs_dir, strategy, head):
    run = train_run(runs_dir, tiny_config(strategy=strategy, head=head))
    status = run.status()
    assert status["status"] == "done", status.get("reason")
    metrics = run.metrics
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert np.asarray(metrics["confusion_matrix"]).sum() == metrics["test_size"]
    phases = [h["phase"] for h in run.history]
    assert [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p] == list(STRATEGIES[strategy].phases)
    image_epochs = len(phases) - phases.count("head")
    assert image_epochs == (0 if STRATEGIES[strategy].uses_features else 1)  # epochs=1 as asked
    assert run.model_path.exists()
    assert run.labels == ["disk", "square"]


def test_fine_tune_unfreezes_exactly_the_last_n_non_batchnorm_layers():
    backbone = build_backbone("resnet50", 32)
    candidates = finetunable_layers(backbone)
    chosen = set_trainable_top(backbone, 7)
    trainable = [layer.name for layer in backbone.layers if layer.trainable and layer.weights]
    assert trainable == [layer.name for layer in candidates[-7:]] == [layer.name for layer in chosen]
    assert not any(layer.trainable for layer in backbone.layers
                   if layer.__class__.__name__ == "BatchNormalization")
    expected = sum(int(np.prod(w.shape)) for layer in chosen for w in layer.weights)
    assert sum(int(np.prod(w.shape)) for w in backbone.trainable_weights) == expected


def test_fine_tune_phase_two_trains_head_plus_last_n_layers(runs_dir):
    run = train_run(runs_dir, tiny_config(strategy="fine_tune", fine_tune_layers=2))
    events, _ = run.events()
    phases = {e["phase"]: e["trainable_params"] for e in events if e["type"] == "phase"}
    model = load(run)
    head_params = sum(int(np.prod(w.shape)) for w in model.get_layer("head").trainable_weights)
    last_two = finetunable_layers(model.get_layer("backbone"))[-2:]
    layer_params = sum(int(np.prod(w.shape)) for layer in last_two for w in layer.weights)
    assert phases["head"] == head_params
    assert phases["fine_tune"] == head_params + layer_params


def _weights_file_with_unusual_batchnorm_stats(tmp_path, backbone_name, size):
    """A backbone weights file whose BatchNorm moving stats are far from their init."""
    backbone = build_backbone(backbone_name, size)
    rng = np.random.default_rng(0)
    for layer in backbone.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    path = tmp_path / f"{backbone_name}.weights.h5"
    backbone.save_weights(path)
    stats = {layer.name: (layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
             for layer in backbone.layers if layer.__class__.__name__ == "BatchNormalization"}
    return path, stats


def _assert_batchnorm_unchanged(run, before):
    trained = load(run).get_layer("backbone")
    assert len(before) > 0
    for name, (mean, variance) in before.items():
        layer = trained.get_layer(name)
        np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
        np.testing.assert_array_equal(layer.moving_variance.numpy(), variance)


@pytest.mark.slow
def test_resnet50_frozen_linear_head_on_25_classes(tmp_path, runs_dir):
    """Seed 002's figure (2048 x 25 + 25 trainable weights), and the frozen backbone's
    BatchNorm statistics stay exactly as loaded."""
    root = write_image_folder(tmp_path / "data", {f"c{i:02d}": 3 for i in range(25)}, size=32)
    path, before = _weights_file_with_unusual_batchnorm_stats(tmp_path, "resnet50", 32)
    cfg = tiny_config(dataset="folder", data_dir=str(root), backbone="resnet50", weights=str(path),
                      strategy="frozen", head="linear", image_size=32, samples_per_class=0)
    run = train_run(runs_dir, cfg)
    assert run.status()["status"] == "done", run.status().get("reason")
    assert run.metrics["trainable_params"] == 2048 * 25 + 25 == 51225
    assert run.metrics["total_params"] > 23_500_000
    _assert_batchnorm_unchanged(run, before)


@pytest.mark.parametrize("strategy", ["frozen", "fine_tune"])
def test_batchnorm_statistics_do_not_move_in_any_phase(tmp_path, runs_dir, strategy):
    path, before = _weights_file_with_unusual_batchnorm_stats(tmp_path, "small_cnn", 16)
    cfg = tiny_config(weights=str(path), strategy=strategy, epochs=2, fine_tune_layers=3)
    run = train_run(runs_dir, cfg)
    assert run.status()["status"] == "done", run.status().get("reason")
    _assert_batchnorm_unchanged(run, before)


@pytest.mark.slow
def test_scratch_lets_batchnorm_learn(runs_dir):
    run = train_run(runs_dir, tiny_config(strategy="scratch"))
    bn = load(run).get_layer("backbone").get_layer("block1_bn1")
    assert not np.allclose(bn.moving_mean.numpy(), 0.0)


def test_second_feature_extraction_run_reuses_cached_features(runs_dir, monkeypatch):
    first = train_run(runs_dir, tiny_config(strategy="feature_extraction", head="gap_dropout_dense"))
    assert first.metrics["feature_cache"] == "miss"

    def must_not_run(*args, **kwargs):
        raise AssertionError("the backbone ran again")

    monkeypatch.setattr(features, "extract", must_not_run)
    second = train_run(runs_dir, tiny_config(strategy="feature_extraction", head="linear"))
    assert second.status()["status"] == "done", second.status().get("reason")
    assert second.metrics["feature_cache"] == "hit"
    # A different image size is a different key: the backbone must run (and here cannot).
    third = train_run(runs_dir, tiny_config(strategy="feature_extraction", image_size=24))
    assert third.status()["status"] == "failed" and "backbone ran again" in third.status()["reason"]


def test_feature_store_reads_rows_in_any_order(tmp_path):
    import keras

    inputs = keras.Input((None, None, 3))
    extractor = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(keepdims=True)(inputs))
    images = np.random.default_rng(0).uniform(0, 255, (10, 4, 4, 3)).astype("float32")
    batches = [images[i:i + 3] for i in range(0, 10, 3)]
    folder = tmp_path / "features" / "setting"
    store = features.extract(folder, extractor, batches, [f"photo {i}" for i in range(10)], meta={})
    expected = images.mean(axis=(1, 2))
    np.testing.assert_allclose(store.read([9, 0, 0, 4]), expected[[9, 0, 0, 4]], rtol=1e-6)
    features.write_view(folder, "k", [f"photo {i}" for i in (3, 1, 4, 1, 5)])
    np.testing.assert_allclose(features.lookup(tmp_path, "k").read([4, 0, 3]), expected[[5, 3, 1]], rtol=1e-6)
    assert features.lookup(tmp_path, "k").shape == (5, 3)
    assert features.lookup(tmp_path, "other") is None


@pytest.mark.parametrize("strategy", ["scratch", "feature_extraction"])
def test_saved_model_reloads_safely_and_reproduces_the_test_metrics(runs_dir, strategy):
    cfg = tiny_config(strategy=strategy, samples_per_class=12)
    run = train_run(runs_dir, cfg)
    model = load(run)
    data = datasets.load(cfg)
    test = data.splits["test"]
    images = data.read_batch(test)  # uint8, 32x32, the model resizes to 16
    probs = model.predict(images, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float((probs.argmax(1) == data.labels[test]).mean())
    assert accuracy == pytest.approx(run.metrics["test_accuracy"])
    as_float = model.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(as_float, probs, rtol=1e-5, atol=1e-6)
    other_size = np.random.default_rng(0).integers(0, 256, (3, 45, 27, 3), dtype=np.uint8)
    out = model.predict(other_size, verbose=0)
    assert out.shape == (3, 2) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_small_cnn_from_scratch_learns_synthetic_shapes(runs_dir):
    cfg = tiny_config(strategy="scratch", head="gap_dropout_dense", synthetic_classes=4,
                      samples_per_class=300, image_size=32, batch_size=32, epochs=8,
                      learning_rate=0.003)
    run = train_run(runs_dir, cfg)
    assert run.status()["status"] == "done"
    assert run.metrics["test_accuracy"] >= 0.9, run.history


@pytest.mark.slow
def test_weights_from_an_earlier_run(runs_dir):
    source = train_run(runs_dir, tiny_config(strategy="scratch"))
    target = train_run(runs_dir, tiny_config(strategy="frozen", weights=f"run:{source.id}"))
    assert target.status()["status"] == "done", target.status().get("reason")
    events, _ = target.events()
    assert any(f"taken from run {source.id}" in e.get("message", "") for e in events)
    before, after = load(source).get_layer("backbone"), load(target).get_layer("backbone")
    for a, b in zip(before.weights, after.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_weights_from_a_missing_or_mismatched_run_fail_before_a_folder_is_made(runs_dir):
    with pytest.raises(ConfigError, match="names no run"):
        training.prepare(tiny_config(weights="run:nope"), runs_dir)
    source = runs.create(tiny_config(), runs_dir)
    with pytest.raises(ConfigError, match="has not finished"):
        training.prepare(tiny_config(weights=f"run:{source.id}"), runs_dir)
    assert [r.id for r in runs.list_runs(runs_dir)] == [source.id]


def test_nan_loss_fails_the_run_with_the_reason(runs_dir, monkeypatch):
    import keras

    # A NaN step size turns every weight into NaN after the first update.
    monkeypatch.setattr(learner, "make_optimizer", lambda name, lr: keras.optimizers.SGD(float("nan")))
    run = train_run(runs_dir, tiny_config(strategy="scratch", batch_size=4))
    status = run.status()
    assert status["status"] == "failed"
    assert status["reason"].startswith("The loss became NaN at epoch 1, batch 2: lower the learning rate")
    events, _ = run.events()
    assert events[-1]["type"] == "status" and events[-1]["status"] == "failed"


@pytest.mark.slow
def test_cancel_keeps_the_history_so_far(runs_dir):
    cfg = tiny_config(strategy="scratch", epochs=5)
    run = training.prepare(cfg, runs_dir)

    def stop_after_first_epoch(event):
        if event["type"] == "epoch":
            run.request_cancel()

    status = training.execute(run, runs_dir, on_event=stop_after_first_epoch)
    assert status["status"] == "cancelled"
    assert len(run.history) == 1 and run.history[0]["epoch"] == 1
    assert not run.model_path.exists()


def test_cancel_during_feature_extraction_caches_nothing(runs_dir):
    run = training.prepare(tiny_config(strategy="feature_extraction"), runs_dir)
    run.request_cancel()
    assert training.execute(run, runs_dir)["status"] == "cancelled"
    assert not list(cache_root(runs_dir).glob("features/*/features.npy"))


@pytest.mark.slow
def test_an_unexpected_error_fails_the_run_and_keeps_the_traceback(runs_dir, monkeypatch):
    def broken(self):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(learner.Learner, "evaluate", broken)
    run = train_run(runs_dir, tiny_config(strategy="scratch"))
    status = run.status()
    assert status["status"] == "failed"
    assert status["reason"] == "Unexpected error: RuntimeError: disk on fire"
    assert "disk on fire" in (run.path / "error.log").read_text()
    assert len(run.history) == 1


def test_early_stopping_stops_when_validation_does_not_improve(runs_dir):
    # Frozen backbone and a step size too small to change anything: nothing improves.
    cfg = tiny_config(strategy="frozen", epochs=6, early_stopping=1, optimizer="sgd",
                      learning_rate=1e-12)
    run = train_run(runs_dir, cfg)
    assert run.status()["status"] == "done"
    # The head's fit on cached features set the best validation loss; the first image
    # epoch does not beat it, and patience 1 ends the phase there.
    assert [h["phase"] for h in run.history].count("frozen") == 1
    assert any("Early stopping at epoch" in e.get("message", "") for e in run.events()[0])
    assert run.metrics["convergence"][-1]["early_stopped_at"] == len(run.history)


@pytest.mark.slow
def test_balanced_class_weights_and_augmentation_train(tmp_path, runs_dir):
    root = write_image_folder(tmp_path / "data", {"few": 4, "many": 12})
    cfg = tiny_config(dataset="folder", data_dir=str(root), strategy="frozen", augment=True,
                      class_weight="balanced", samples_per_class=0)
    run = train_run(runs_dir, cfg)
    assert run.status()["status"] == "done", run.status().get("reason")


@pytest.mark.slow
def test_typed_epochs_are_trained_as_typed_recorded_and_noted(runs_dir):
    run = train_run(runs_dir, tiny_config(strategy="scratch", epochs=2, min_steps=None))
    assert run.status()["status"] == "done" and len(run.history) == 2
    saved = json.loads((run.path / "config.json").read_text())
    assert saved["epochs"] == 2 and saved["min_steps"] == 0  # "Train again" replays the same
    notes = [e["message"] for e in run.events()[0] if e["type"] == "log" and "--min-steps" in e["message"]]
    assert len(notes) == 1 and "At least this many steps" in notes[0], notes


def test_the_short_epochs_note_compares_with_the_floor_the_defaults_would_have_given():
    scratch = RunConfig(strategy="scratch", weights="none", epochs=2, batch_size=32)
    note = training.short_epochs_note(scratch, 64)  # 2 epochs of 2 steps
    assert note.startswith("2 epoch(s) of 2 step(s) are 4 optimiser steps") and "--min-steps 300" in note
    assert training.short_epochs_note(scratch.replace(epochs=150), 64) is None  # 300 steps
    assert training.short_epochs_note(scratch.replace(epochs=None), 64) is None  # the defaults
    assert training.short_epochs_note(scratch.replace(min_steps=300), 64) is None  # the floor typed
    stepped = RunConfig(backbone="small_cnn", weights="none", head="dense_stack", epochs=2, batch_size=32)
    assert "--min-steps 400" in training.short_epochs_note(stepped, 64)
    assert training.short_epochs_note(stepped.replace(head="linear"), 64) is None  # fitted exactly: no steps
    assert training.short_epochs_note(RunConfig(strategy="frozen", epochs=1), 64) is None  # no floor to miss


def test_classification_report():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    report = classification_report(probs, np.array([0, 1, 1, 1]), ["a", "b"])
    assert report["test_accuracy"] == 0.75
    assert report["confusion_matrix"] == [[1, 0], [1, 2]]
    assert report["per_class_accuracy"] == {"a": 1.0, "b": pytest.approx(2 / 3)}
    assert report["misclassified"] == [{"index": 2, "true": "b", "predicted": "a", "confidence": 0.7}]
    assert report["test_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.3, 0.6])))
