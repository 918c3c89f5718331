"""A run's epoch history as training writes it: throttled writes of ``history.json``, the
reported iterations of an exact head fit as epochs, and whether a phase converged.

Plain Python (no Keras), below both :mod:`tl.training` and :mod:`tl.callbacks`.
"""

import time

import numpy as np

from tl.errors import Cancelled, TrainingFailed

BATCH_EVENT_SECONDS = 0.5  # the most often a batch event or history.json is written


class HistoryFile:
    """Writes a learner's history to ``history.json`` at most every BATCH_EVENT_SECONDS (a
    head on cached features runs hundreds of short epochs); :meth:`flush` writes it now."""

    def __init__(self, learner):
        self.learner = learner
        self.last_write = 0.0

    def appended(self) -> None:
        if time.time() - self.last_write >= BATCH_EVENT_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.last_write = time.time()
        self.learner.run.write_json("history.json", self.learner.history)


class ExactFitRecorder:
    """Turns the reported iterations of an exact head fit (:func:`tl.head_fit.fit_softmax`)
    into history entries and epoch events, and checks every iteration for cancellation and
    a NaN loss (the entries so far are kept on both).

    Each entry is one "epoch" (``epoch`` goes up by one per entry, as the charts and the
    later phases count) and keeps its L-BFGS ``iteration``; ``seconds`` is the time since
    the entry before. Beside the training cross-entropy (``loss``) it keeps ``objective``,
    what the fit minimises (cross-entropy plus the L2 penalty), which the charts plot: the
    cross-entropy alone may rise while the objective falls. Runs recorded before have no
    ``objective``."""

    def __init__(self, learner, phase):
        self.learner, self.phase = learner, phase
        self.started = time.time()
        self.file = HistoryFile(learner)

    def iterated(self, iteration, loss):
        """After every L-BFGS iteration (each reads the whole training split)."""
        self.learner.images_seen += len(self.learner.data.splits["train"])
        self._check(loss)

    def add(self, entry):
        """After each reported iteration: ``entry`` from the fit's history."""
        learner = self.learner
        self._check(entry["loss"])
        learner.epochs_done += 1
        now = time.time()
        record = {"epoch": learner.epochs_done, "phase": self.phase, "method": "exact", "learning_rate": None,
                  "iteration": entry["iteration"], "loss": entry["loss"], "objective": entry.get("objective"),
                  "accuracy": entry["accuracy"],
                  "val_loss": entry["val_loss"], "val_accuracy": entry["val_accuracy"],
                  "seconds": round(now - self.started, 4)}
        self.started = now
        learner.history.append(record)
        learner.emit("epoch", **record)
        self.file.appended()

    def _check(self, loss):
        if self.learner.run.cancel_requested():
            self.file.flush()
            raise Cancelled()
        if not np.isfinite(loss):
            self.file.flush()
            raise TrainingFailed("The head's loss became NaN while fitting it on the cached features; "
                                 "the features hold non-finite values: delete the feature cache and train again.")

    def flush(self):
        self.file.flush()


def phase_report(phase: str, losses: list, planned: int, stopped_at) -> dict:
    """Whether a phase trained by gradient steps converged: early-stopped, or validation
    loss flat at its end (``losses``: the phase's validation losses, one per epoch)."""
    ran = len(losses)
    found = {"phase": phase, "method": "steps", "epochs": ran, "planned_epochs": planned,
             "early_stopped_at": stopped_at}
    if stopped_at:
        return dict(found, converged=True, summary=f"early-stopped at epoch {stopped_at} "
                                                   "(validation loss no longer falling)")
    if ran < 3:
        return dict(found, converged=None, summary=f"{ran} epoch(s): too few to tell whether it converged")
    tail = losses[-max(3, ran // 5):]
    if still_falling(tail):
        return dict(found, converged=False, summary=f"validation loss still falling after {ran} epochs: "
                                                    "more epochs would help")
    return dict(found, converged=True, summary=f"validation loss flat over the last {len(tail)} of {ran} epochs")


def still_falling(tail) -> bool:
    """Whether a run of validation losses still trends down: the least-squares line through
    their logarithms drops by more than 10% over the run, and by more than 0.01 (a loss
    already near zero that halves is not under-training)."""
    values = np.maximum(np.asarray(tail, dtype=float), 1e-12)
    slope = np.polyfit(np.arange(len(values)), np.log(values), 1)[0]
    span = len(values) - 1
    fitted_start = float(np.exp(np.log(values).mean() - slope * span / 2))
    return slope * span < np.log(0.9) and fitted_start * (1 - np.exp(slope * span)) > 0.01
