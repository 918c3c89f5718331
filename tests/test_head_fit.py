"""The exact head fit reports a bounded number of its iterations (the first, the last and a
few between, each a history entry and an epoch event), checks every iteration for
cancellation and NaN, and fits the same weights whatever it reports."""

import json
import math
import types

import numpy as np
import pytest

from tl import head_fit, runs
from tl.errors import Cancelled, TrainingFailed
from tl.head_fit import Matrix, fit_softmax
from tl.history import ExactFitRecorder

from conftest import tiny_config, train_run

CLASSES = 5


def blobs(rows, dim=256, seed=0):
    """Two Gaussian blobs per class in 32 latent dimensions mixed into ``dim`` ReLU'd
    features: a fit of about 130 L-BFGS iterations, as backbone features take."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(0, 1, (32, dim)) / np.arange(1, 33)[:, None]
    centres = rng.normal(0, 0.5, (CLASSES, 2, 32))
    y, blob = rng.integers(0, CLASSES, rows), rng.integers(0, 2, rows)
    z = centres[y, blob] + rng.normal(0, 1, (rows, 32))
    return np.maximum(z @ mix + rng.normal(0, 0.1, (rows, dim)), 0).astype(np.float32), y


@pytest.fixture(scope="module")
def split():
    """``(train, labels, val, val_labels)``: standardised with the training rows' statistics."""
    x, y = blobs(250)
    train, val = Matrix(x, np.arange(200)), Matrix(x, np.arange(200, 250))
    statistics = train.own_statistics()
    train.use_statistics(*statistics)
    val.use_statistics(*statistics)
    return train, y[:200], val, y[200:]


@pytest.fixture
def no_time_floor(monkeypatch):
    """Reports by the iteration schedule alone, whatever the machine's speed."""
    monkeypatch.setattr(head_fit, "REPORT_SECONDS", math.inf)


def fit(split, **hooks):
    train, labels, val, val_labels = split
    return fit_softmax(train, labels, CLASSES, val=val, val_labels=val_labels, **hooks)


def test_reports_are_few_and_include_the_first_and_last_iteration(split, no_time_floor):
    seen = []
    found = fit(split, on_iteration=lambda iteration, loss: seen.append(iteration))
    assert found.converged and found.iterations > 60
    assert seen == list(range(1, found.iterations + 1))  # every iteration is checked
    reported = [entry["iteration"] for entry in found.history]
    assert reported[0] == 1 and reported[-1] == found.iterations
    assert reported == sorted(set(reported))
    # The first, the last, and one each time the iteration count grows by sqrt(2).
    assert len(reported) <= 2 + math.log(found.iterations) / math.log(head_fit.REPORT_GROWTH)
    assert 2 + math.log(head_fit.MAX_ITERATIONS) / math.log(head_fit.REPORT_GROWTH) <= 20  # at the cap too
    assert found.history[-1]["loss"] < 0.2 * found.history[0]["loss"]  # it shows how it converged


def test_a_slow_fit_is_reported_every_report_seconds(split, monkeypatch):
    monkeypatch.setattr(head_fit, "REPORT_SECONDS", 0.0)  # as if every iteration took that long
    found = fit(split)
    assert [entry["iteration"] for entry in found.history] == list(range(1, found.iterations + 1))


def test_each_report_keeps_the_objective_and_it_never_rises(split, tmp_path, monkeypatch):
    """The chart of an exact fit plots what it minimises: cross-entropy plus the L2 penalty,
    which L-BFGS lowers at every iteration (the cross-entropy alone may rise)."""
    monkeypatch.setattr(head_fit, "REPORT_SECONDS", 0.0)  # every iteration reported
    learner = Learner(tmp_path, 200)
    found = recorded_fit(split, learner)
    objectives = [entry["objective"] for entry in found.history]
    assert len(objectives) == found.iterations > 10
    assert all(later <= earlier for earlier, later in zip(objectives, objectives[1:]))
    assert objectives[-1] < 0.5 * objectives[0]
    penalty = (found.kernel.astype(np.float64) ** 2).sum() / (2 * 200)  # C = 1, n = 200
    assert found.history[-1]["objective"] == pytest.approx(found.history[-1]["loss"] + penalty, rel=1e-5)
    assert [entry["objective"] for entry in learner.history] == objectives  # recorded for the charts
    written = json.loads((tmp_path / "history.json").read_text())
    assert [entry["objective"] for entry in written] == objectives


def test_the_last_entry_is_a_fresh_evaluation_of_the_returned_weights(split):
    train, labels, val, val_labels = split
    weights = np.where(labels == 0, 3.0, 1.0)  # class weights: the training loss is weighted
    found = fit_softmax(train, labels, CLASSES, val=val, val_labels=val_labels, sample_weight=weights)

    def figures(matrix, y, w):
        logits = matrix._cached.astype(np.float64) @ found.kernel + found.bias
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -(w * log_probs[np.arange(len(y)), y]).sum() / len(y)
        return loss, float((logits.argmax(axis=1) == y).mean())

    last = found.history[-1]
    loss, accuracy = figures(train, labels, weights)
    assert last["loss"] == pytest.approx(loss, rel=1e-5) and last["accuracy"] == accuracy
    val_loss, val_accuracy = figures(val, val_labels, np.ones(len(val_labels)))
    assert last["val_loss"] == pytest.approx(val_loss, rel=1e-5) and last["val_accuracy"] == val_accuracy


def test_reporting_does_not_change_the_fit_and_it_is_scipys_minimiser(split, monkeypatch):
    from scipy.optimize import minimize

    train, labels, val, val_labels = split
    quiet = fit_softmax(train, labels, CLASSES, tolerance=1e-9)
    monkeypatch.setattr(head_fit, "REPORT_SECONDS", 0.0)
    loud = fit_softmax(train, labels, CLASSES, val=val, val_labels=val_labels, tolerance=1e-9,
                       on_iteration=lambda *args: None, on_report=lambda entry: None)
    assert np.array_equal(quiet.kernel, loud.kernel) and np.array_equal(quiet.bias, loud.bias)
    assert len(loud.history) == loud.iterations

    # The same objective written out in float64, minimised by scipy directly.
    x, n, dim = train._cached.astype(np.float64), len(labels), train.dim
    onehot = np.eye(CLASSES)[labels]

    def objective(theta):
        kernel, bias = theta[:dim * CLASSES].reshape(dim, CLASSES), theta[dim * CLASSES:]
        logits = x @ kernel + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        value = -np.log(probs[np.arange(n), labels]).sum() / n + (kernel ** 2).sum() / (2 * n)
        residual = (probs - onehot) / n
        return value, np.concatenate([(x.T @ residual + kernel / n).ravel(), residual.sum(axis=0)])

    # Our products are float32, so the two minimisers agree to about 2e-4, not to gtol.
    direct = minimize(objective, np.zeros(dim * CLASSES + CLASSES), jac=True, method="L-BFGS-B",
                      options={"maxiter": 2000, "gtol": 1e-9}).x
    np.testing.assert_allclose(quiet.kernel, direct[:dim * CLASSES].reshape(dim, CLASSES), atol=1e-3)
    np.testing.assert_allclose(quiet.bias, direct[dim * CLASSES:], atol=1e-3)


class Learner:
    """What :class:`ExactFitRecorder` uses of a Learner, on a real run folder."""

    def __init__(self, path, train_size):
        self.run = runs.Run(path)
        self.data = types.SimpleNamespace(splits={"train": np.arange(train_size)})
        self.history, self.epochs_done, self.images_seen = [], 0, 0

    def emit(self, event_type, **fields):
        return self.run.event(event_type, **fields)


def recorded_fit(split, learner, on_report=None):
    recorder = ExactFitRecorder(learner, "head")

    def report(entry):
        recorder.add(entry)
        if on_report:
            on_report(entry)

    try:
        return fit(split, on_iteration=recorder.iterated, on_report=report)
    finally:
        recorder.flush()


def test_the_recorder_counts_every_iteration_and_records_each_report(split, tmp_path, no_time_floor):
    learner = Learner(tmp_path, 200)
    found = recorded_fit(split, learner)
    assert learner.images_seen == 200 * found.iterations  # images/s counts the work done
    assert [entry["epoch"] for entry in learner.history] == list(range(1, len(found.history) + 1))
    assert [entry["iteration"] for entry in learner.history] == [entry["iteration"] for entry in found.history]
    assert all(entry["method"] == "exact" for entry in learner.history)
    events = [event for event in learner.run.events()[0] if event["type"] == "epoch"]
    assert [event["iteration"] for event in events] == [entry["iteration"] for entry in found.history]
    written = json.loads((tmp_path / "history.json").read_text())
    assert written == json.loads(json.dumps(learner.history))
    assert written[-1]["val_accuracy"] == found.history[-1]["val_accuracy"]


def test_cancelling_mid_fit_raises_and_keeps_the_history_so_far(split, tmp_path, no_time_floor):
    learner = Learner(tmp_path, 200)

    def cancel_at_the_fourth_report(entry):
        if len(learner.history) == 4:
            learner.run.request_cancel()

    with pytest.raises(Cancelled):
        recorded_fit(split, learner, on_report=cancel_at_the_fourth_report)
    assert learner.images_seen == 200 * (learner.history[-1]["iteration"] + 1)  # stopped at the next iteration
    assert len(json.loads((tmp_path / "history.json").read_text())) == 4


def test_non_finite_features_fail_with_the_reason(tmp_path):
    x, y = blobs(60)
    x[3, 7] = np.nan
    train = Matrix(x, np.arange(60))
    train.use_statistics(*train.own_statistics())
    recorder = ExactFitRecorder(Learner(tmp_path, 60), "head")
    with pytest.raises(TrainingFailed, match="delete the feature cache"):
        fit_softmax(train, y, CLASSES, on_iteration=recorder.iterated, on_report=recorder.add)


def test_a_run_keeps_the_l_bfgs_iteration_of_each_reported_point(runs_dir):
    run = train_run(runs_dir, tiny_config(strategy="feature_extraction", head="linear"))
    assert run.status()["status"] == "done", run.status().get("reason")
    (report,) = run.metrics["convergence"]
    history = run.history
    assert [entry["epoch"] for entry in history] == list(range(1, len(history) + 1))
    assert history[0]["iteration"] == 1 and history[-1]["iteration"] == report["iterations"]
