"""The Keras callback that turns training into progress events for the run folder."""

import math
import time

import keras

from tl.errors import Cancelled, TrainingFailed
from tl.training import BATCH_EVENT_SECONDS


class Progress(keras.callbacks.Callback):
    """Per-batch and per-epoch events, NaN guard, cancellation, best checkpoint and
    early stopping (on validation loss) for one phase."""

    def __init__(self, learner, model, phase, learning_rate, patience=0):
        super().__init__()
        self.learner, self.watched, self.phase, self.lr = learner, model, phase, learning_rate
        self.patience = patience
        self.last_event = 0.0
        self.last_write = 0.0
        self.stale = 0
        self.first_epoch = learner.epochs_done + 1
        self.stopped_at = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.time()

    def on_train_batch_end(self, batch, logs=None):
        learner = self.learner
        if learner.run.cancel_requested():
            self.on_train_end()  # the epochs so far are kept
            raise Cancelled()
        logs = logs or {}
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.on_train_end()
            raise TrainingFailed(
                f"The loss became NaN at epoch {learner.epochs_done + 1}, batch {batch + 1}: lower the "
                f"learning rate (it was {self.lr:g}) or pick another optimizer."
            )
        steps = self.params.get("steps")
        now = time.time()
        if now - self.last_event >= BATCH_EVENT_SECONDS or (steps and batch + 1 == steps):
            self.last_event = now
            learner.emit("batch", phase=self.phase, epoch=learner.epochs_done + 1, step=batch + 1,
                         steps=steps, loss=_num(loss), accuracy=_num(logs.get("accuracy")))

    def on_epoch_end(self, epoch, logs=None):
        learner, logs = self.learner, logs or {}
        learner.epochs_done = epoch + 1
        learner.images_seen += len(learner.data.splits["train"])
        val_loss = _num(logs.get("val_loss"))
        if val_loss is not None and not math.isfinite(val_loss):
            self.on_train_end()
            raise TrainingFailed(
                f"The validation loss became NaN at epoch {epoch + 1}: lower the learning rate "
                f"(it was {self.lr:g}) or pick another optimizer."
            )
        entry = {
            "epoch": epoch + 1, "phase": self.phase, "learning_rate": self.lr,
            "loss": _num(logs.get("loss")), "accuracy": _num(logs.get("accuracy")),
            "val_loss": val_loss, "val_accuracy": _num(logs.get("val_accuracy")),
            "seconds": round(time.time() - self.epoch_started, 3),
        }
        learner.history.append(entry)
        # history.json at most twice a second (a head on cached features runs hundreds of
        # short epochs); the last epoch is written by on_train_end.
        if time.time() - self.last_write >= BATCH_EVENT_SECONDS:
            self.last_write = time.time()
            learner.run.write_json("history.json", learner.history)
        learner.emit("epoch", **entry)
        if entry["val_loss"] is not None and learner.note_epoch(self.watched, entry["val_accuracy"], val_loss):
            self.stale = 0
        else:
            self.stale += 1
        patience = self.patience
        if patience and self.stale >= patience:
            self.stopped_at = epoch + 1
            learner.emit("log", message=f"Early stopping at epoch {epoch + 1}: no lower validation loss for "
                                        f"{patience} epoch(s); the best epoch's weights are kept.")
            self.watched.stop_training = True

    def on_train_end(self, logs=None):
        self.learner.run.write_json("history.json", self.learner.history)

    def report(self, planned: int) -> dict:
        """Whether this phase converged: early-stopped, or validation loss flat at its end."""
        losses = [h["val_loss"] for h in self.learner.history[self.first_epoch - 1:] if h.get("val_loss") is not None]
        ran = len(losses)
        found = {"phase": self.phase, "method": "steps", "epochs": ran, "planned_epochs": planned,
                 "early_stopped_at": self.stopped_at}
        if self.stopped_at:
            return dict(found, converged=True, summary=f"early-stopped at epoch {self.stopped_at} "
                                                       "(validation loss no longer falling)")
        if ran < 3:
            return dict(found, converged=None, summary=f"{ran} epoch(s): too few to tell whether it converged")
        tail = losses[-max(3, ran // 5):]
        if _still_falling(tail):
            return dict(found, converged=False, summary=f"validation loss still falling after {ran} epochs: "
                                                        "more epochs would help")
        return dict(found, converged=True, summary=f"validation loss flat over the last {len(tail)} of {ran} epochs")


def _still_falling(tail) -> bool:
    """Whether a run of validation losses still trends down: the least-squares line through
    their logarithms drops by more than 10% over the run, and by more than 0.01 (a loss
    already near zero that halves is not under-training)."""
    import numpy as np

    values = np.maximum(np.asarray(tail, dtype=float), 1e-12)
    slope = np.polyfit(np.arange(len(values)), np.log(values), 1)[0]
    span = len(values) - 1
    fitted_start = float(np.exp(np.log(values).mean() - slope * span / 2))
    return slope * span < np.log(0.9) and fitted_start * (1 - np.exp(slope * span)) > 0.01


def _num(value):
    return None if value is None else float(value)
