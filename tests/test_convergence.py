"""Heads that converge at the defaults: on real images the default head on cached features
matches a converged logistic regression on the very same features, the README's first train
command succeeds, and every run says how its phases ended."""

import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tl import datasets, features, runs, training
from tl.config import RunConfig
from tl.head_fit import Matrix, fit_softmax
from tl.paths import cache_root

from conftest import REPO, tiny_config, train_run


PER_CLASS = 40  # real scans, at most ~50 per class


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """scikit-learn's 8x8 digit scans (real images), 40 per class, as a folder of PNG files."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digits")
    for label in range(10):
        folder = root / f"digit_{label}"
        folder.mkdir()
        for i, index in enumerate(np.flatnonzero(digits.target == label)[:PER_CLASS]):
            scan = (digits.images[index] / 16 * 255).round().astype(np.uint8)
            Image.fromarray(scan).convert("RGB").save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("convergence-runs")


def logistic_regression_accuracy(run, runs_dir) -> float:
    """scikit-learn's LogisticRegression (standardised, L-BFGS, default C) on the run's own
    cached features and split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    key = next(e["key"] for e in run.events()[0] if e["type"] == "features")
    store = features.lookup(cache_root(runs_dir), key)
    data = datasets.load(run.config)  # the same seeded split as the run's, checked against split.json
    split = json.loads((run.path / "split.json").read_text())
    assert all(split[name] == [data.keys[i] for i in data.splits[name]] for name in ("train", "val", "test"))
    train, test = data.splits["train"], data.splits["test"]
    (x_train, y_train), (x_test, y_test) = (store.read(train), data.labels[train]), (store.read(test), data.labels[test])
    scaler = StandardScaler().fit(x_train)
    classifier = LogisticRegression(max_iter=1000).fit(scaler.transform(x_train), y_train)
    return float(classifier.score(scaler.transform(x_test), y_test))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["feature_extraction", "earlier_layer"])
def test_default_head_is_within_3_points_of_logistic_regression(digits_folder, runs_dir, strategy):
    cfg = RunConfig(dataset="folder", data_dir=str(digits_folder), strategy=strategy)  # every other field default
    assert (cfg.backbone, cfg.weights, cfg.head) == ("efficientnet_lite0", "imagenet", "gap_dropout_dense")
    run = train_run(runs_dir, cfg)
    assert run.status()["status"] == "done", run.status().get("reason")
    ours = run.metrics["test_accuracy"]
    reference = logistic_regression_accuracy(run, runs_dir)
    assert ours >= reference - 0.03, (ours, reference)
    assert reference > 0.5  # the features are informative: chance is 0.1
    (report,) = run.metrics["convergence"]
    assert report["converged"] and report["method"] == "exact"
    model_head = run.load_model().get_layer("head")
    assert model_head.layers[0].name == "standardize"  # inside the saved model


@pytest.mark.slow
def test_readme_first_train_command_reaches_90_percent(tmp_path):
    """Exactly the README's first `python -m tl train` line, as a newcomer types it."""
    readme = (REPO / "README.md").read_text()
    line = next(line.strip() for line in readme.splitlines() if line.strip().startswith("python -m tl train"))
    command = line.split("#")[0].strip()
    result = subprocess.run([sys.executable, *shlex.split(command)[1:], "--json"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["test_accuracy"] >= 0.90, summary
    assert all(report["converged"] for report in summary["convergence"])
    run = runs.get(summary["run_id"], tmp_path / "runs")
    assert run.config.backbone == "efficientnet_lite0" and run.config.weights == "imagenet"


def test_exact_fit_matches_scikit_learn_on_the_same_objective():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 20))
    labels = rng.integers(0, 3, 300)
    x = (centres[labels] + rng.normal(0, 1.5, (300, 20))).astype(np.float32)
    train = Matrix(x, np.arange(300))
    mean, variance = train.own_statistics()
    train.use_statistics(mean, variance)
    fit = fit_softmax(train, labels, 3)
    assert fit.converged and fit.history[-1]["iteration"] == fit.iterations
    reference = LogisticRegression(max_iter=5000, tol=1e-8).fit((x - mean) / np.sqrt(variance), labels)
    # The same minimiser: scikit-learn's multinomial coefficients are ours up to a
    # per-feature shift shared by all classes (softmax is invariant to it; the penalty fixes it).
    np.testing.assert_allclose(fit.kernel.T, reference.coef_, atol=2e-3)
    np.testing.assert_allclose(fit.bias, reference.intercept_, atol=2e-3)


def test_a_large_matrix_is_streamed_in_chunks(monkeypatch):
    from tl import head_fit

    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (1000, 8)).astype(np.float32)
    labels = (x[:, 0] + 0.3 * rng.normal(size=1000) > 0).astype(int)
    whole = Matrix(x, np.arange(1000))
    whole.use_statistics(*whole.own_statistics())
    expected = fit_softmax(whole, labels, 2)
    monkeypatch.setattr(head_fit, "IN_MEMORY_BYTES", 1000)  # as if it did not fit
    monkeypatch.setattr(head_fit, "CHUNK_ROWS", 128)
    streamed = Matrix(x, np.arange(1000))
    assert not streamed.in_memory and len(list(streamed.chunks())) == 8
    streamed.use_statistics(*streamed.own_statistics())
    found = fit_softmax(streamed, labels, 2)
    np.testing.assert_allclose(found.kernel, expected.kernel, atol=1e-4)


@pytest.mark.slow
def test_a_stepped_head_on_features_takes_at_least_min_steps_and_says_how_it_ended(runs_dir):
    cfg = tiny_config(strategy="feature_extraction", head="dense_stack", epochs=1, min_steps=30, batch_size=8)
    run = train_run(runs_dir, cfg)
    assert run.status()["status"] == "done", run.status().get("reason")
    train_size = run.metrics["train_size"]
    steps_per_epoch = -(-train_size // 8)
    assert len(run.history) == -(-30 // steps_per_epoch)  # raised from 1 epoch to reach 30 steps
    (report,) = run.metrics["convergence"]
    assert report["method"] == "steps" and report["planned_epochs"] == len(run.history)
    assert report["converged"] in (True, False, None) and report["summary"]
    assert any("fewer than min_steps=30" in e.get("message", "") for e in run.events()[0])


@pytest.mark.slow
def test_defaults_are_per_strategy_and_recorded_in_the_run(runs_dir):
    from tl.strategies import STRATEGIES

    for name, spec in STRATEGIES.items():
        resolved = RunConfig(strategy=name, weights="none" if name == "scratch" else "imagenet").resolved()
        assert resolved.epochs == spec.defaults["epochs"] and resolved.learning_rate == spec.defaults["learning_rate"]
    assert RunConfig(strategy="scratch", epochs=7).resolved().epochs == 7  # a value given is kept
    # Recorded when the run is made (training reads them from there); no need to train its 30+ epochs.
    run = training.prepare(tiny_config(strategy="scratch", epochs=None, min_steps=None, early_stopping=None,
                                       learning_rate=None, samples_per_class=4), runs_dir)
    saved = json.loads((run.path / "config.json").read_text())
    assert saved["epochs"] == STRATEGIES["scratch"].defaults["epochs"]
    assert saved["learning_rate"] == STRATEGIES["scratch"].defaults["learning_rate"]
