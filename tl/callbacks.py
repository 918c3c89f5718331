"""The Keras callback that turns training into progress events for the run folder."""

import math
import time

import keras

from tl.errors import Cancelled, TrainingFailed
from tl.training import BATCH_EVENT_SECONDS


class Progress(keras.callbacks.Callback):
    """Per-batch and per-epoch events, NaN guard, cancellation, best checkpoint and
    early stopping for one phase."""

    def __init__(self, learner, model, phase, learning_rate):
        super().__init__()
        self.learner, self.watched, self.phase, self.lr = learner, model, phase, learning_rate
        self.last_event = 0.0
        self.stale = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.time()

    def on_train_batch_end(self, batch, logs=None):
        learner = self.learner
        if learner.run.cancel_requested():
            raise Cancelled()
        logs = logs or {}
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
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
        learner.run.write_json("history.json", learner.history)
        learner.emit("epoch", **entry)
        if entry["val_accuracy"] is not None and learner.note_epoch(
                self.watched, entry["val_accuracy"], val_loss or 0.0):
            self.stale = 0
        else:
            self.stale += 1
        patience = learner.cfg.early_stopping
        if patience and self.stale >= patience:
            learner.emit("log", message=f"Early stopping: no better validation accuracy for {patience} epoch(s).")
            self.watched.stop_training = True


def _num(value):
    return None if value is None else float(value)
