"""Smaller models, measured before download: each TFLite variant of a run on its own test photos.

Quantisation can cost accuracy silently, so before a user downloads a smaller file this
measures every variant (:data:`VARIANTS`: float32, and :data:`tl.export.VARIANTS`) on the run's
test split: file size, test accuracy, top-1 agreement with the Keras model, the largest drop
in one class's accuracy, the largest probability difference and CPU ms per photo (one photo
at a time, after a warm-up). It warns where accuracy drops by more than :data:`MAX_DROP` and
recommends the smallest variant within it. Every model reads the same photos, resized to the
run's size with anti-aliasing (so a TFLite model's own resize is the identity).

The app measures in a process of its own (:mod:`tl.background`), kept in
``<run>/exports/variants/``::

    request.json   the run
    status.json    queued | running | done | failed | cancelled, pid, times, reason
    events.jsonl   progress: one event per variant
    result.json    :func:`measure`'s result
    variants.log   what the process printed

``bench/export_variants.py`` prints the same table for runs it trains. Plain Python at import:
TensorFlow only inside the measuring.
"""

import os
import sys
import time
import warnings
from pathlib import Path

from tl import export
from tl import background
from tl.background import ACTIVE, Job, serve
from tl.errors import Cancelled
from tl.files import append_jsonl, atomic_write_json, read_json

VARIANTS = (None, *export.VARIANTS)  # None: float32
MAX_DROP = 0.02  # of test accuracy against the Keras model: more is warned about
MAX_PHOTOS = 500  # test photos measured (evenly spaced when the split is larger)
FOLDER = "variants"


def name(variant) -> str:
    return variant or "float32"


def test_photos(run):
    """``(uint8 images at the run's size, labels)`` of the run's test split (at most
    :data:`MAX_PHOTOS`).

    Raises:
        UserError: the run's dataset cannot be read any more (one sentence).
    """
    import numpy as np
    import tensorflow as tf

    from tl import datasets

    size = run.config.image_size
    data = datasets.load(run.config)
    keys = np.asarray(data.splits["test"])
    if len(keys) > MAX_PHOTOS:
        keys = keys[np.linspace(0, len(keys) - 1, MAX_PHOTOS).astype(int)]
    images = np.stack([np.clip(np.round(tf.image.resize(data.reader(int(i)), (size, size), antialias=True).numpy()),
                               0, 255).astype(np.uint8) for i in keys])
    return images, np.asarray(data.labels)[keys]


def run_tflite(content: bytes, images):
    """``(probabilities, ms per photo)`` of a TFLite model over uint8 ``images``."""
    import numpy as np
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's LiteRT deprecation notice
        lite = tf.lite.Interpreter(model_content=content, num_threads=os.cpu_count())
    given, taken = lite.get_input_details()[0], lite.get_output_details()[0]
    lite.resize_tensor_input(given["index"], (1, *images.shape[1:]))
    lite.allocate_tensors()

    def one(image):
        lite.set_tensor(given["index"], image[None].astype(given["dtype"]))
        lite.invoke()
        return lite.get_tensor(taken["index"])[0]

    one(images[0])  # warm-up
    started = time.perf_counter()
    probs = np.array([one(image) for image in images])
    return probs, 1000 * (time.perf_counter() - started) / len(images)


def _per_class(predicted, labels, classes: int):
    import numpy as np

    return np.array([(predicted[labels == c] == c).mean() if (labels == c).any() else np.nan for c in range(classes)])


def measure(run, on_event=None, should_stop=None) -> dict:
    """Measure every variant of ``run`` (see the module docstring).

    Returns:
        ``{"rows": [...], "recommended": name, "warnings": [sentences], "photos": n}``; each
        row: ``variant``, ``bytes``, ``accuracy``, ``agreement``, ``worst_drop`` (accuracy
        points as a fraction), ``max_diff``, ``ms``; the first row is the Keras model.

    Raises:
        UserError: the run cannot be exported or its test photos cannot be read.
        Cancelled: ``should_stop()`` became true between two variants.
    """
    import numpy as np

    export.check_exportable(run)
    images, labels = test_photos(run)
    model = run.load_model()
    model.predict(images[:1].astype("float32"), verbose=0)  # warm-up: tracing is not inference
    started = time.perf_counter()
    reference = model.predict(images.astype("float32"), batch_size=1, verbose=0)
    keras_ms = 1000 * (time.perf_counter() - started) / len(images)
    classes, keras_top = reference.shape[1], reference.argmax(axis=1)
    keras_classes = _per_class(keras_top, labels, classes)
    rows = [{"variant": "keras", "bytes": run.model_path.stat().st_size, "accuracy": float((keras_top == labels).mean()),
             "agreement": 1.0, "worst_drop": 0.0, "max_diff": 0.0, "ms": keras_ms}]
    for index, variant in enumerate(VARIANTS):
        if should_stop and should_stop():
            raise Cancelled("Stopped by the user.")
        if on_event:
            on_event({"type": "variant", "variant": name(variant), "index": index, "of": len(VARIANTS)})
        content = export.tflite_bytes(run, quantize=variant)
        probs, ms = run_tflite(content, images)
        top = probs.argmax(axis=1)
        rows.append({"variant": name(variant), "bytes": len(content), "accuracy": float((top == labels).mean()),
                     "agreement": float((top == keras_top).mean()),
                     "worst_drop": float(max(0.0, np.nanmax(keras_classes - _per_class(top, labels, classes)))),
                     "max_diff": float(np.abs(probs - reference).max()), "ms": ms})
    recommended, said = recommend(rows)
    return {"rows": rows, "recommended": recommended, "warnings": said, "photos": int(len(images))}


def recommend(rows) -> tuple:
    """``(the smallest TFLite variant within MAX_DROP of the Keras model's accuracy, warnings)``:
    one sentence per variant that drops more."""
    keras = rows[0]["accuracy"]
    said = [f"{row['variant']} loses {100 * (keras - row['accuracy']):.1f} points of test accuracy "
            f"({keras:.1%} -> {row['accuracy']:.1%}); one class loses {100 * row['worst_drop']:.1f}."
            for row in rows[1:] if keras - row["accuracy"] > MAX_DROP]
    fine = [row for row in rows[1:] if keras - row["accuracy"] <= MAX_DROP]
    return (min(fine, key=lambda row: row["bytes"])["variant"] if fine else "float32"), said


# -- the app's background job ----------------------------------------------------------------

class VariantsJob(Job):
    """A run's measuring folder, read fresh on every call (another session may run it)."""

    died = "Measuring the smaller models stopped unexpectedly (killed, or out of memory); start it again."
    damaged = "The measurement's status file is damaged; start it again."

    def progress(self) -> tuple:
        """``(share done 0..1, one line saying what is happening)``."""
        share, text = 0.0, "Starting (loading TensorFlow and the test photos)..."
        for event in self.events():
            if event.get("type") == "variant":
                share = event["index"] / max(event["of"], 1)
                text = f"Converting and measuring {event['variant']} ({event['index'] + 1} of {event['of']})."
        return share, text

    def result(self) -> dict | None:
        """:func:`measure`'s result once done, else ``None``."""
        try:
            record = read_json(self.path / "result.json")
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("rows"), list) else None


def job_path(run) -> Path:
    return run.path / export.EXPORTS_DIR / FOLDER


def find(run) -> VariantsJob | None:
    """The run's measurement, if one was started."""
    path = job_path(run)
    return VariantsJob(path) if (path / "request.json").is_file() else None


def estimate(run):
    """A :class:`tl.run_cost.Estimate` of measuring: four conversions of the model (measured:
    about 1 GB and 20 s each for EfficientNet-Lite0's 14 MB on two cores), then the photos."""
    from tl.run_cost import Estimate

    model_mb = run.model_path.stat().st_size / 2**20
    memory = 800 + 15 * model_mb
    seconds = 15 + len(VARIANTS) * (5 + model_mb) + 0.05 * len(VARIANTS) * min(run.metrics.get("test_size") or 0,
                                                                                   MAX_PHOTOS)
    return Estimate(memory_mb=memory, seconds=seconds, parts={"conversion": memory})


def start(run, runs_dir=None) -> VariantsJob:
    """Start measuring ``run``'s variants in a process of its own (one already running is
    returned as it is; a finished one is measured afresh). It must fit the app's memory budget
    now, and its estimate is reserved while it runs.

    Raises:
        UserError: the run cannot be exported, its folder cannot be written, the process cannot
            start, or (:class:`tl.run_cost.BudgetError`) it does not fit the budget now.
    """
    from tl import memory

    export.check_exportable(run)
    job = find(run)
    if job is not None and job.status().get("status") in ACTIVE:
        return job
    found = estimate(run)
    memory.need(found.memory_mb, "Measuring the smaller models")
    path = job_path(run)
    background.start(path, "tl.variants", {"run_id": run.id, "runs_dir": str(run.path.parent.resolve())}, what="Measuring",
          log_name="variants.log", memory_mb=found.memory_mb, seconds=found.seconds,
          reserve_as="measuring smaller models")
    return VariantsJob(path)


def work(path) -> int:
    """The measuring process: measure the run the request names and record how it ended."""
    path = Path(path)

    def body(request, should_stop) -> bool:
        from tl import runs

        run = runs.get(request["run_id"], request["runs_dir"])
        result = measure(run, on_event=lambda event: append_jsonl(path / "events.jsonl", event),
                         should_stop=should_stop)
        atomic_write_json(path / "result.json", result)
        return True

    return serve(path, body, "Measuring the smaller models", "variants.log")


if __name__ == "__main__":
    sys.exit(work(sys.argv[1]))
