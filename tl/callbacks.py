"""The Keras callback that turns training into progress events for the run folder."""

import math
import time

import keras

from tl import cluster
from tl.errors import Cancelled, TrainingFailed
from tl.history import BATCH_EVENT_SECONDS, HistoryFile, phase_report


class Progress(keras.callbacks.Callback):
    """Per-batch and per-epoch events, NaN guard, cancellation, best checkpoint and
    early stopping (on validation loss) for one phase."""

    def __init__(self, learner, model, phase, learning_rate, patience=0):
        super().__init__()
        self.learner, self.watched, self.phase, self.lr = learner, model, phase, learning_rate
        self.patience = patience
        self.last_event = 0.0
        self.file = HistoryFile(learner)
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
        self.file.appended()  # the last epoch is written by on_train_end
        learner.emit("epoch", **entry)
        if entry["val_loss"] is not None and learner.note_epoch(self.watched, entry["val_accuracy"], val_loss):
            self.stale = 0
        else:
            self.stale += 1
        patience = self.patience
        if patience and not cluster.every_worker(self.stale < patience):  # a cluster stops together
            self.stopped_at = epoch + 1
            learner.emit("log", message=f"Early stopping at epoch {epoch + 1}: no lower validation loss for "
                                        f"{patience} epoch(s); the best epoch's weights are kept.")
            self.watched.stop_training = True

    def on_train_end(self, logs=None):
        self.file.flush()

    def report(self, planned: int) -> dict:
        """How this phase ended (:func:`tl.history.phase_report`)."""
        losses = [h["val_loss"] for h in self.learner.history[self.first_epoch - 1:] if h.get("val_loss") is not None]
        return phase_report(self.phase, losses, planned, self.stopped_at)


def _num(value):
    return None if value is None else float(value)
