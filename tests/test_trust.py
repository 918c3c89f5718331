"""Answers that can be trusted on new photos (issue 29): the calibration temperature
(tl.calibration), the "none of my classes" rule (tl.novelty), both fitted after training
(tl.trust), folded into the saved model and read back by the Predictor and `tl predict`."""

import json

import numpy as np
import pytest

from tl import calibration, novelty
from tl.predict import Predictor

from conftest import LITE0_RUN, tiny_config


def overconfident(n=600, classes=3, accuracy=0.8, top=0.99, seed=0):
    """Labels and probabilities that say ``top`` while being right ``accuracy`` of the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    guess = labels.copy()
    wrong = rng.random(n) > accuracy
    guess[wrong] = (labels[wrong] + 1) % classes
    probs = np.full((n, classes), (1 - top) / (classes - 1))
    probs[np.arange(n), guess] = top
    return probs, labels


def test_the_temperature_softens_an_overconfident_head_and_keeps_its_answers():
    probs, labels = overconfident()
    temperature = calibration.fit_temperature(probs, labels)
    after = calibration.scale(probs, temperature)
    assert temperature > 1.5
    assert calibration.ece(after, labels) < 0.03 < calibration.ece(probs, labels)
    assert calibration.nll(after, labels) < calibration.nll(probs, labels)
    assert np.array_equal(after.argmax(axis=1), probs.argmax(axis=1))  # accuracy never changes
    assert abs(after.max(axis=1).mean() - 0.8) < 0.03


def test_a_held_out_split_with_no_mistakes_does_not_make_every_answer_certain():
    """Laplace's rule: 60 right answers say the error rate is about 1/62, not 0."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 60)
    probs = np.full((60, 4), 1e-9)
    probs[np.arange(60), labels] = 1.0
    temperature = calibration.fit_temperature(probs, labels)
    assert calibration.T_LOW < temperature < calibration.T_HIGH
    assert abs(calibration.scale(probs, temperature).max(axis=1).mean() - (1 - 1 / 62)) < 0.01


def test_ece_nll_and_the_reliability_bins():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    labels = np.array([0, 1, 0, 1])
    bins = calibration.reliability(probs, labels)
    assert [(b["low"], b["count"], b["accuracy"]) for b in bins] == [(0.6, 1, 1.0), (0.8, 1, 1.0), (0.9, 2, 0.5)]
    assert calibration.ece(probs, labels) == pytest.approx((0.4 + 0.2 + 2 * 0.4) / 4)
    assert calibration.nll(probs, labels) == pytest.approx(-np.mean(np.log([0.9, 0.1, 0.6, 0.8])))
    assert np.isnan(calibration.ece(np.zeros((0, 2)), np.zeros(0)))


def test_folding_the_temperature_into_the_softmax_layer_gives_the_scaled_probabilities():
    import keras

    inputs = keras.Input((5,))
    dense = keras.layers.Dense(3, activation="softmax", name="predictions")
    model = keras.Model(inputs, dense(inputs))
    x = np.random.default_rng(2).normal(size=(8, 5)).astype("float32") * 4
    before = model.predict(x, verbose=0)
    calibration.fold_temperature(dense, 2.5)
    assert np.allclose(model.predict(x, verbose=0), calibration.scale(before, 2.5), atol=1e-5)


def clusters(n, centre, rng, spread=0.3, dim=32):
    return centre + spread * rng.normal(size=(n, dim))


def test_the_novelty_rule_passes_its_classes_and_flags_strangers():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 32)) * 3
    train = np.concatenate([clusters(60, c, rng) for c in centres])
    held = np.concatenate([clusters(40, c, rng) for c in centres])
    fresh = np.concatenate([clusters(200, c, rng) for c in centres])
    strangers = clusters(200, rng.normal(size=32) * 3, rng)
    rule = novelty.fit(train, held, np.full(len(held), 0.9))
    assert len(rule.bank) == len(train) and rule.bank.dtype == np.float16
    passed = 1 - rule.unknown(rule.scores(fresh), np.full(len(fresh), 0.9)).mean()
    assert 0.9 <= passed <= 0.99  # about PASS_RATE of new in-class photos pass
    assert rule.unknown(rule.scores(strangers), np.full(len(strangers), 0.9)).mean() > 0.95
    # low confidence alone is enough, and a stricter setting flags more
    assert rule.unknown(rule.scores(fresh[:5]), np.full(5, 0.1)).all()
    assert rule.threshold_at(0.90) < rule.threshold_at(0.99) and rule.confidence_threshold_at(0.5) == 0.9


def test_the_bank_is_a_capped_stratified_sample_and_the_rule_round_trips(tmp_path):
    labels = np.array([0] * 5000 + [1] * 50)
    rows = novelty.bank_rows(labels, limit=200)
    assert len(rows) <= 200 and (labels[rows] == 1).sum() == 2 and np.all(np.diff(rows) > 0)
    rng = np.random.default_rng(4)
    rule = novelty.fit(rng.normal(size=(10, 8)), np.zeros((0, 8)), np.zeros(0), train_confidence=np.full(10, 0.7))
    assert rule.held_out_count == 10  # a tiny split: each banked photo scored against the others
    rule.save(tmp_path / novelty.FILE)
    again = novelty.load(tmp_path / novelty.FILE)
    assert np.array_equal(again.bank, rule.bank) and again.threshold == rule.threshold
    (tmp_path / novelty.FILE).write_bytes(b"not a zip")
    with pytest.raises((ValueError, OSError)):
        novelty.load(tmp_path / novelty.FILE)


@pytest.fixture(scope="module")
def lite0_run(tmp_path_factory, trained_once):
    """A Lite0 feature-extraction run on a handful of photos: its validation split is too small,
    so the temperature comes out of fold."""
    return trained_once(tiny_config(**LITE0_RUN), tmp_path_factory.mktemp("trust"))


def test_a_run_records_its_calibration_and_rule_and_its_saved_model_is_calibrated(lite0_run):
    metrics = lite0_run.metrics
    record = metrics["calibration"]
    assert record["applied"] and record["source"] == "out-of-fold" and "out-of-fold" in record["note"]
    assert {"ece_before", "ece_after", "nll_before", "nll_after", "reliability_after"} <= set(record)
    rule = metrics["novelty"]
    assert rule["held_out"] >= metrics["train_size"] and 0 <= rule["test_unknown_rate"] <= 1
    assert (lite0_run.path / novelty.FILE).stat().st_size < 5 * 2 ** 20
    # The saved model gives the calibrated probabilities: the run's own test figures match them.
    import keras

    from tl import datasets

    data = datasets.load(lite0_run.config)
    test = data.splits["test"]
    model = keras.saving.load_model(lite0_run.model_path, safe_mode=True)
    probs = model.predict(np.stack([data.read(i) for i in test]).astype("float32"), verbose=0)
    assert calibration.nll(probs, data.labels[test]) == pytest.approx(record["nll_after"], abs=1e-3)


def test_predict_says_unknown_for_a_stranger_and_json_carries_the_rule(lite0_run, capsys):
    from tl import cli

    predictor = Predictor(lite0_run, imagenet_weights=None)
    assert predictor.rule is not None and predictor.trust_note is None
    from tl import datasets

    data = datasets.load(lite0_run.config)
    inside = predictor.predict(data.read(int(data.splits["train"][0])), 2)
    noise = np.random.default_rng(5).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    outside = predictor.predict(noise, 2)
    assert inside.unknown is False and outside.unknown is True
    assert outside.novelty > outside.threshold > inside.novelty
    relaxed = predictor.judge(outside, 0.999)
    assert relaxed.threshold >= predictor.rule.threshold_at(0.95)
    from PIL import Image

    path = lite0_run.path.parent / "noise.png"
    Image.fromarray(noise).save(path)
    assert cli.main(["predict", lite0_run.id, str(path), "--runs-dir", str(lite0_run.path.parent), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["unknown"] is True and answer["novelty"] > answer["threshold"] and 0 < answer["confidence"] <= 1
    assert cli.main(["predict", lite0_run.id, str(path), "--runs-dir", str(lite0_run.path.parent)]) == 0
    assert "looks like none of these classes" in capsys.readouterr().out


def test_an_older_run_still_classifies_uncalibrated_and_says_so_once(tmp_path, trained_once, capsys):
    from tl import cli, runs

    lite0_run = trained_once(tiny_config(**LITE0_RUN), tmp_path)  # a copy of its own to damage

    metrics = dict(lite0_run.metrics)
    metrics.pop("calibration"), metrics.pop("novelty")
    lite0_run.write_json("metrics.json", metrics)
    (lite0_run.path / novelty.FILE).unlink()
    old = runs.get(lite0_run.id, lite0_run.path.parent)
    predictor = Predictor(old, imagenet_weights=None)
    assert predictor.rule is None and "trained before calibration" in predictor.trust_note
    answer = predictor.predict(np.zeros((40, 40, 3), np.uint8), 2)
    assert answer.unknown is None and answer.as_json("x")["unknown"] is None
    path = lite0_run.path.parent / "grey.png"
    from PIL import Image

    Image.fromarray(np.full((30, 30, 3), 128, np.uint8)).save(path)
    assert cli.main(["predict", old.id, str(path), str(path), "--runs-dir", str(old.path.parent)]) == 0
    assert capsys.readouterr().err.count("trained before calibration") == 1


def test_a_damaged_rule_file_is_one_sentence_and_classifying_goes_on(tmp_path, trained_once):
    lite0_run = trained_once(tiny_config(**LITE0_RUN), tmp_path)
    (lite0_run.path / novelty.FILE).write_bytes(b"\x00garbage")
    predictor = Predictor(lite0_run, imagenet_weights=None)
    assert predictor.rule is None and "damaged" in predictor.trust_note
    assert predictor.predict(np.zeros((32, 32, 3), np.uint8), 1).unknown is None


def test_a_fine_tuned_run_with_few_validation_photos_is_not_calibrated_and_says_why(tmp_path, trained_once):
    run = trained_once(tiny_config(strategy="scratch"), tmp_path)
    record = run.metrics["calibration"]
    assert record["temperature"] is None and not record["applied"] and record["source"] == "none"
    assert "too few to calibrate" in record["note"]
    assert record["ece_before"] == record["ece_after"]


@pytest.mark.slow
def test_classify_reads_a_training_photo_with_the_features_training_cached(tmp_path, trained_once):
    """Small photos enlarged to 224 px: the training pipeline once rounded them to uint8 after
    resizing, the served model does not; a banked training photo then sat 0.016 from itself."""
    from PIL import Image

    from conftest import write_image_folder
    from tl import datasets

    root = write_image_folder(tmp_path / "scans", {"a": 8, "b": 8}, size=12)
    run = trained_once(tiny_config(**{**LITE0_RUN, "dataset": "folder", "data_dir": str(root)}), tmp_path / "runs")
    data = datasets.load(run.config)
    predictor = Predictor(run, imagenet_weights=None)
    first = int(data.splits["train"][0])
    photo = np.asarray(Image.open(root / data.keys[first]).convert("RGB"))
    answer = predictor.predict(photo, 1)
    assert answer.novelty < 0.01 * answer.threshold  # (the rounded pipeline: about 0.3 of it)
