"""What a run keeps so that its answers can be trusted on new photos, fitted after training
on photos it did not train on: the temperature that calibrates its probabilities
(:mod:`tl.calibration`) and the rule that says a photo looks like none of its classes
(:mod:`tl.novelty`).

Where the temperature is fitted: the validation split when it holds at least
``calibration.MIN_HELD_OUT`` photos and a mistake among them; else, for strategies that keep
the pretrained backbone as it is, out-of-fold predictions of the head refitted on the cached features of the
training and validation photos (:func:`tl.findings.out_of_fold`); else (a fine-tuned
backbone with too few validation photos) nowhere: no temperature, and the run says so.
The features the novelty rule reads are the cached ones for those strategies, and the final
model's for the ones that change the backbone.
"""

from dataclasses import dataclass, field

import numpy as np

from tl import calibration, novelty
from tl.findings import out_of_fold
from tl.strategies import STRATEGIES

MAX_HELD_OUT = 1000  # validation (and test) photos read for the fit: a seeded sample of a larger split
FOLDS = 5
MAX_OUT_OF_FOLD = 4000  # training photos the out-of-fold fits read at most (a seeded sample)


@dataclass
class Trust:
    """What :func:`fit_trust` found."""

    temperature: float | None  # None: not calibrated (see ``note``)
    source: str  # "validation", "out-of-fold" or "none"
    note: str | None = None
    rule: novelty.NoveltyRule | None = None
    test_scores: np.ndarray | None = field(default=None, repr=False)  # novelty of the test photos
    rule_note: str | None = None

    def calibration_record(self, raw_test_probs, test_labels) -> dict:
        """``metrics.json``'s ``calibration``: the temperature (already applied to the saved
        model) and the test split's ECE and NLL before and after."""
        after = calibration.scale(raw_test_probs, self.temperature or 1.0)
        return calibration.summary(raw_test_probs, after, test_labels, self.temperature, self.source, self.note)

    def novelty_record(self, test_confidence=None) -> dict:
        """``metrics.json``'s ``novelty``: the rule, and the share of test photos it calls
        "none of my classes" (``test_confidence``: their calibrated top probabilities)."""
        if self.rule is None:
            return {"rule": None, "note": self.rule_note}
        record = self.rule.as_record()
        if self.test_scores is not None and test_confidence is not None and len(self.test_scores):
            record["test_unknown_rate"] = round(float(np.mean(self.rule.unknown(self.test_scores, test_confidence))), 4)
        return record

    def save(self, run_path) -> None:
        if self.rule is not None:
            self.rule.save(run_path / novelty.FILE)


def fit_trust(learner, seed: int = 0) -> Trust:
    """The temperature and the novelty rule of a trained :class:`tl.learner.Learner`'s model
    (its best weights restored, the temperature not yet applied)."""
    data, cfg = learner.data, learner.cfg
    labels, splits = data.labels, data.splits
    keeps = STRATEGIES[cfg.strategy].keeps_backbone
    rng = np.random.default_rng([seed, 29])
    val = _sample(splits["val"], rng)
    train = np.asarray(splits["train"])
    bank = train[novelty.bank_rows(labels[train], seed=seed)]
    features = learner.cached_features if keeps else learner.model_features
    learner.emit("log", message=f"Calibrating on {len(val)} validation photos and keeping {len(bank)} training "
                                "photos' features to tell photos of none of the classes.")

    val_probs = learner.probs(val) if len(val) else np.zeros((0, data.num_classes))
    oof, oof_rows = None, None
    val_mistakes = int(np.sum(val_probs.argmax(axis=1) != labels[val])) if len(val) else 0
    if len(val) >= calibration.MIN_HELD_OUT and (val_mistakes or not keeps):
        temperature, source, note = calibration.choose_temperature(val_probs, labels[val], seed), "validation", None
    elif keeps:  # too few validation photos, or not one mistake among them to say how sure to be
        oof_rows = np.sort(np.concatenate([train[_sample(np.arange(len(train)), rng, MAX_OUT_OF_FOLD)], val]))
        counts = np.bincount(labels[oof_rows], minlength=data.num_classes)
        folds = int(max(2, min(FOLDS, counts[counts > 0].min())))
        oof = out_of_fold(learner.cached_features(oof_rows), labels[oof_rows], data.num_classes, folds=folds,
                          seed=seed)
        temperature, source = calibration.choose_temperature(oof, labels[oof_rows], seed), "out-of-fold"
        why = "is too small" if len(val) < calibration.MIN_HELD_OUT else "holds no mistake to learn from"
        note = (f"Fitted on out-of-fold predictions of {len(oof_rows)} training and validation photos "
                f"({folds} folds): the validation split alone ({len(val)}) {why}.")
    else:
        temperature, source = None, "none"
        note = (f"Not calibrated: {len(val)} validation photos are too few to calibrate a model whose backbone "
                f"was trained ({calibration.MIN_HELD_OUT} needed); its confidences are the model's own.")

    scale = temperature or 1.0
    held_confidence = calibration.scale(val_probs, scale).max(axis=1) if len(val) else np.zeros(0)
    train_confidence = None
    if oof is not None:
        where = {row: i for i, row in enumerate(oof_rows)}
        train_confidence = calibration.scale(oof[[where[row] for row in bank]], scale).max(axis=1)
    trust = Trust(temperature, source, note)
    try:
        trust.rule = novelty.fit(features(bank), features(val) if len(val) else np.zeros((0, 1)),
                                 held_confidence, train_confidence)
    except ValueError as exc:
        trust.rule_note = f"No rule for photos of none of the classes: {exc}."
        return trust
    test = np.asarray(splits["test"])
    if len(test):
        trust.test_scores = trust.rule.scores(features(test))
    return trust


def _sample(rows, rng, limit: int = None) -> np.ndarray:
    """``rows``, or a seeded sample of ``limit`` (``MAX_HELD_OUT``) of them in order."""
    rows, limit = np.asarray(rows), limit or MAX_HELD_OUT
    return np.sort(rng.choice(rows, limit, replace=False)) if len(rows) > limit else rows
