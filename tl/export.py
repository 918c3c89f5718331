"""Export a finished run: .keras, SavedModel (zip), TFLite (float or quantised), labels, model card,
and a web page that runs the model in a browser (a zip: :mod:`tl.export_web`).

Every format takes plain RGB images with pixel values 0-255; the backbone's preprocessing
is inside, and so is resizing: every format accepts any image size. The ``.keras`` model
and the SavedModel resize exactly as in training (bilinear, anti-aliased). TFLite has no
anti-aliased resize, so the TFLite models resize with plain bilinear interpolation: the
same result when enlarging or at the run's ``image_size`` ``S``, slightly different when
shrinking a much larger photo (shrink it to about ``2S x 2S`` first for the closest match;
see :func:`tflite_usage`). The web bundle's TFLite model is the exception: a fixed
float32 ``(1, S, S, 3)`` input (RGB 0-255) with no resize inside (LiteRT.js needs static
shapes), so the page resizes.

Importing this module does not import TensorFlow.
"""

import re
import tempfile
import zipfile
from pathlib import Path

from tl import export_web
from tl.errors import UserError
from tl.files import atomic_write_bytes, os_error_sentence, read_json

FORMATS = ("keras", "savedmodel", "tflite", "labels", "card", "web")
QUANTIZED = ("tflite", "web")  # the formats that take ``quantize``
# Quantisation variants: float16 weights; dynamic-range 8-bit weights (float in and out);
# full integer (int8 ops, calibrated on up to CALIBRATION_PHOTOS training photos, uint8 in).
VARIANTS = ("float16", "dynamic", "int8")
SUFFIX = {None: "", "float16": "-float16", "dynamic": "-int8", "int8": "-int8-full"}  # -int8: dynamic, as before
CALIBRATION_PHOTOS = 100
EXPORTS_DIR = "exports"


class ExportError(UserError):
    """A run cannot be exported (not finished, or the conversion failed)."""


# -- entry point -----------------------------------------------------------------------

def export(run, fmt: str, out, quantize: bool | str | None = None) -> Path:
    """Write ``run`` in format ``fmt`` to ``out`` and return the file written.

    Args:
        run: a finished :class:`tl.runs.Run`.
        fmt: one of :data:`FORMATS`.
        out: a file path, or an existing folder (the file then gets :func:`filename`).
        quantize: for ``tflite`` and ``web``, one of :data:`VARIANTS` (``True``: ``dynamic``).

    Raises:
        ExportError: the run is not done, the format is unknown, or conversion failed.
    """
    if fmt not in FORMATS:
        raise ExportError(f"Expected `format` to be one of {list(FORMATS)}. Received: format={fmt!r}.")
    quantize = variant(quantize)
    if quantize and fmt not in QUANTIZED:
        raise ExportError(f"--quantize applies to the {' and '.join(QUANTIZED)} formats only; leave it out for "
                          f"format {fmt!r}.")
    check_exportable(run)
    out = Path(out).expanduser()
    if out.is_dir():
        out = out / filename(run, fmt, quantize)
    if not out.parent.is_dir():
        raise ExportError(f"Folder '{out.parent}' does not exist; create it or choose another --out path.")
    try:
        if fmt in QUANTIZED:
            writer = export_tflite if fmt == "tflite" else export_web_bundle
            return writer(run, out, quantize=quantize)
        writer = {"keras": export_keras, "savedmodel": export_savedmodel,
                  "labels": export_labels, "card": export_model_card}[fmt]
        return writer(run, out)
    except OSError as exc:  # every writer works in a temporary file or folder: nothing partial is left
        raise ExportError(f"The export could not be written: {os_error_sentence(exc, exc.filename or out)}") from None


def check_exportable(run) -> None:
    """Raise :class:`ExportError` unless ``run`` finished training and has its model."""
    problem = run.damage()
    if problem:
        raise ExportError(f"{problem} It cannot be exported.")
    status = run.status().get("status")
    if status != "done":
        raise ExportError(f"Run '{run.id}' is {status}; only a finished run (status done) can be "
                          "exported. Wait for it to finish or pick another run.")
    problem = run.model_problem()
    if problem:
        raise ExportError(problem)


def variant(quantize) -> str | None:
    """``quantize`` as one of :data:`VARIANTS` or ``None`` (float); ``True`` means ``dynamic``.

    Raises:
        ExportError: an unknown variant name.
    """
    if quantize is True:
        return "dynamic"
    if quantize in (None, False, "", "float", "float32"):
        return None
    if quantize not in VARIANTS:
        raise ExportError(f"Expected `quantize` to be one of {list(VARIANTS)}. Received: quantize={quantize!r}.")
    return quantize


def filename(run, fmt: str, quantize=None) -> str:
    """The default file name of an export, e.g. ``<run id>-int8.tflite``."""
    suffix = SUFFIX[variant(quantize)]
    if fmt == "tflite":
        return f"{run.id}{suffix}.tflite"
    if fmt == "web":
        return f"{run.id}-web{suffix}.zip"
    return {"keras": f"{run.id}.keras", "savedmodel": f"{run.id}-savedmodel.zip",
            "labels": "labels.txt", "card": "MODEL_CARD.md"}[fmt]


def cached_path(run, fmt: str, quantize=None) -> Path:
    """Where :func:`cached` keeps an export: ``<run>/exports/<file name>``."""
    return run.path / EXPORTS_DIR / filename(run, fmt, quantize)


def cached(run, fmt: str, quantize=None) -> Path:
    """The export in ``<run>/exports/``, built the first time it is asked for.

    The app calls this so a page rerun (or another session) never converts twice.
    """
    path = cached_path(run, fmt, quantize)
    if not path.is_file():
        try:
            path.parent.mkdir(exist_ok=True)
        except OSError as exc:
            raise ExportError(f"The export could not be written: {os_error_sentence(exc, path.parent)}") from None
        export(run, fmt, path, quantize=quantize)
    return path


# -- one function per format -----------------------------------------------------------

def export_keras(run, out) -> Path:
    """Copy the run's ``model.keras`` (loads with ``keras.saving.load_model``, safe mode)."""
    out = Path(out)
    atomic_write_bytes(out, run.model_path.read_bytes())
    return out


def export_savedmodel(run, out) -> Path:
    """A zipped TensorFlow SavedModel whose ``serve`` endpoint (also ``serving_default``)
    maps ``image``: float32 ``(batch, height, width, 3)`` RGB 0-255 to probabilities."""
    import keras
    import tensorflow as tf

    model = load_model(run)
    with tempfile.TemporaryDirectory(dir=Path(out).parent, prefix=".savedmodel-") as tmp:
        folder = Path(tmp) / "savedmodel"
        try:
            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint(
                "serve", lambda image: model(image, training=False),
                input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32, name="image")])
            archive.write_out(str(folder), verbose=False)
        except Exception as exc:
            raise _failed(run, "a SavedModel", exc) from None
        # Zipped inside the temporary folder (same file system), then renamed into place:
        # readers never see half a zip, and a failure leaves nothing behind.
        zipped = _zip_folder(folder, Path(tmp) / "savedmodel.zip", root=f"{run.id}-savedmodel")
        return zipped.replace(out)


def export_tflite(run, out, quantize=None) -> Path:
    """A TFLite model: one uint8 RGB image ``(1, height, width, 3)`` of any size in, float32
    ``(1, classes)`` probabilities out.

    Resizing (plain bilinear, see the module docstring) and preprocessing are inside. With
    ``quantize`` (see :func:`tflite_bytes`) the weights are stored smaller.
    """
    out = Path(out)
    atomic_write_bytes(out, tflite_bytes(run, quantize=quantize))
    return out


def export_web_bundle(run, out, quantize=None) -> Path:
    """The web page zip (:mod:`tl.export_web`) around a fixed-input TFLite model."""
    out = Path(out)
    model = tflite_bytes(run, quantize=quantize, fixed=True)
    atomic_write_bytes(out, export_web.bundle(run, model, quantize=variant(quantize)))
    return out


def tflite_bytes(run, quantize=None, fixed: bool = False) -> bytes:
    """The run's model converted to TFLite: RGB 0-255 in, float32 ``(1, classes)`` out.

    Args:
        quantize: ``None`` (float32), ``float16`` (weights in 16 bits, about 2x smaller),
            ``dynamic`` (``True`` too: weights in 8 bits, about 4x smaller, float computation)
            or ``int8`` (full integer: 8-bit weights and activations calibrated on up to
            :data:`CALIBRATION_PHOTOS` training photos, a uint8 input, float32 probabilities).
        fixed: a static float32 ``(1, S, S, 3)`` input at the run's ``image_size`` ``S`` and no
            resize inside (the caller resizes), for runtimes that need static shapes (LiteRT.js).
            Float, not uint8: the caller's anti-aliased resize gives fractional pixel values, and
            rounding them moved a borderline photo's probabilities by 0.04. Else a uint8
            ``(1, height, width, 3)`` input of any size, resized inside with plain bilinear.

    Raises:
        ExportError: the model cannot be loaded or converted (one sentence naming why).
    """
    import keras
    import tensorflow as tf

    quantize = variant(quantize)
    model = load_model(run)
    size = run.config.image_size
    layers = inference_layers(model)
    calibration = _calibration_images(run) if quantize == "int8" else None

    def serve(image):
        x = tf.cast(image, tf.float32)
        if not fixed:  # RESIZE_BILINEAR is a TFLite builtin; the anti-aliased kernel is not.
            x = tf.image.resize(x, (size, size), method="bilinear", antialias=False)
        for layer in layers:
            x = layer(x, training=False)
        return x

    # int8 takes float images here: the converter quantises the input to uint8 itself.
    dtype = tf.float32 if fixed or quantize == "int8" else tf.uint8
    spec = tf.TensorSpec((1, size, size, 3) if fixed else (1, None, None, 3), dtype, name="image")
    # Converted from a SavedModel written by Keras's ExportArchive, which tracks every
    # variable explicitly (from_concrete_functions lost weights of some loaded models).
    with tempfile.TemporaryDirectory(prefix="tl-tflite-") as tmp:
        try:
            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint("serve", serve, input_signature=[spec])
            archive.write_out(tmp, verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serve"])
            _set_variant(converter, quantize, calibration)
            return converter.convert()
        except Exception as exc:
            raise _failed(run, "TFLite", exc) from None


def _set_variant(converter, quantize, calibration) -> None:
    import tensorflow as tf

    if quantize is None:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8


def _calibration_images(run):
    """Up to :data:`CALIBRATION_PHOTOS` training photos at the run's size (float32 0-255),
    spread over the classes, for full-integer quantisation.

    Raises:
        ExportError: the run's dataset cannot be read any more.
    """
    import numpy as np
    import tensorflow as tf

    from tl import datasets

    size = run.config.image_size
    try:
        data = datasets.load(run.config)
        train = np.asarray(data.splits["train"])
        keep = train[np.linspace(0, len(train) - 1, min(CALIBRATION_PHOTOS, len(train))).astype(int)]
        images = [data.reader(int(i)) for i in keep]  # a folder's photos differ in size
    except (UserError, OSError) as exc:
        raise ExportError(f"int8 calibrates on the run's training photos, which cannot be read ({exc}); "
                          "choose float16 or dynamic instead.") from None
    resized = [tf.image.resize(image, (size, size), antialias=True).numpy() for image in images]
    # One grey ramp from 0 to 255: the input's calibrated range is then exactly 0-255, so its
    # uint8 quantisation is scale 1, zero point 0 and the model takes plain pixel values.
    ramp = np.broadcast_to(np.linspace(0, 255, size, dtype="float32")[None, :, None], (size, size, 3))
    return np.stack([*resized, ramp]).astype("float32")


def export_labels(run, out) -> Path:
    """``labels.txt``: one class name per line, in the model's output order."""
    out = Path(out)
    atomic_write_bytes(out, ("\n".join(run.labels) + "\n").encode())
    return out


def export_model_card(run, out) -> Path:
    """The model card (markdown, see :func:`model_card`)."""
    out = Path(out)
    atomic_write_bytes(out, model_card(run).encode())
    return out


# -- helpers ---------------------------------------------------------------------------

def load_model(run):
    """The run's model, loaded in safe mode without its optimizer.

    Raises:
        ExportError: the run is not done, or its ``model.keras`` cannot be loaded.
    """
    check_exportable(run)
    try:
        return run.load_model()
    except UserError as exc:
        raise ExportError(str(exc)) from None


def inference_layers(model) -> list:
    """The model's layers after the input and the resize, in order (the model is a chain)."""
    return [layer for layer in model.layers
            if layer.name != "resize" and type(layer).__name__ != "InputLayer"]


def _failed(run, what: str, exc: Exception) -> ExportError:
    # The converter's message starts with MLIR locations; the operation it lacks is what helps.
    missing = re.search(r"'(tf\.\w+)' op is neither a custom op nor a flex op", str(exc))
    why = (f"its backbone uses the operation {missing.group(1)}, which {what} does not have" if missing
           else _first_line(exc))
    return ExportError(f"Could not convert run '{run.id}' to {what} ({why}); the .keras "
                       "model still works, download that instead.")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _zip_folder(folder: Path, out: Path, root: str) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{root}/{path.relative_to(folder)}")
    return out


def unzip_savedmodel(path, into) -> Path:
    """Extract a SavedModel zip written by :func:`export_savedmodel`; return its folder."""
    into = Path(into)
    with zipfile.ZipFile(path) as archive:
        archive.extractall(into)
        root = archive.namelist()[0].split("/", 1)[0]
    return into / root


def tflite_usage(size: int) -> str:
    """How to feed the TFLite model, as Python text for the model card."""
    return f"""```python
import numpy as np
from PIL import Image
from ai_edge_litert.interpreter import Interpreter  # pip install ai-edge-litert (tf.lite.Interpreter is deprecated)

interpreter = Interpreter(model_path="model.tflite")
image = Image.open("photo.jpg").convert("RGB")
image.thumbnail(({size} * 2, {size} * 2))                # optional: closest to the Keras model
x = np.asarray(image, dtype=np.uint8)[None]          # (1, height, width, 3), RGB 0-255
index = interpreter.get_input_details()[0]["index"]
interpreter.resize_tensor_input(index, x.shape)      # any size: resizing is inside
interpreter.allocate_tensors()
interpreter.set_tensor(index, x)
interpreter.invoke()
probs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
labels = open("labels.txt").read().splitlines()
print(labels[int(probs.argmax())], float(probs.max()))
```"""


def model_card(run) -> str:
    """A markdown model card: data, config, metrics, intended use, limits, how to use."""
    from tl.update import card_line

    cfg, metrics, labels = run.config, run.metrics, run.labels
    info = read_json(run.path / "labels.json", {})
    counts = info.get("counts", {})
    total = sum(counts.values()) if counts else None
    sizes = {k: metrics.get(f"{k}_size") for k in ("train", "val", "test")}
    per_class = metrics.get("per_class_accuracy", {})
    lines = [
        f"# Model card: {cfg.name or run.id}",
        "",
        f"Run `{run.id}`: a `{cfg.backbone}` backbone transferred with strategy `{cfg.strategy}` and "
        f"head `{cfg.head}` to {len(labels)} classes. Made with Transfer Learning Studio.",
        "",
        "## Data",
        "",
        f"- Dataset: `{info.get('dataset', cfg.dataset)}`"
        + (f" (folder `{cfg.data_dir}`)" if cfg.data_dir else "")
        + (f" (made in the app, version {run.data_origin['version']})" if run.data_origin else ""),
        *([f"- {update_line}"] if (update_line := card_line(metrics)) else []),
        f"- Classes ({len(labels)}), in output order: {', '.join(labels)}",
        f"- Images used: {total if total is not None else 'unknown'} "
        f"(at most {cfg.samples_per_class or 'all'} per class)",
        f"- Split (seed {cfg.seed}, stratified): {sizes['train']} train / {sizes['val']} validation / "
        f"{sizes['test']} test",
        "",
        "| class | images | test accuracy |",
        "|---|---:|---:|",
        *[f"| {name} | {counts.get(name, '')} | {_pct(per_class.get(name))} |" for name in labels],
        "",
        "## Configuration",
        "",
        "| field | value |",
        "|---|---|",
        *[f"| {key} | `{value}` |" for key, value in cfg.to_dict().items() if value not in (None, "", [])],
        "",
        "## Metrics (test split)",
        "",
        f"- Test accuracy: {_pct(metrics.get('test_accuracy'))}",
        f"- Test loss: {metrics.get('test_loss', float('nan')):.4f}",
        f"- Best validation accuracy: {_pct(metrics.get('best_val_accuracy'))} (epoch {metrics.get('best_epoch')})",
        f"- Trainable / total parameters: {metrics.get('trainable_params')} / {metrics.get('total_params')}",
        f"- Training time: {metrics.get('train_seconds')} s on {metrics.get('device', {}).get('kind', 'unknown')}",
        "",
        *_trust_section(metrics),
        "## Intended use",
        "",
        f"Classifying photos into the {len(labels)} classes above, in settings like the training "
        "images, as a starting point or a teaching example. Not for decisions about people, "
        "safety, health or money without a proper evaluation on data from where it will be used.",
        "",
        "## Limits",
        "",
        f"- Trained on {sizes['train']} images and tested on only {sizes['test']}: the test accuracy "
        "has a wide margin of error, and the model knows nothing outside these classes (it still "
        "picks one of them for any image: see the confidence rule above).",
        f"- Images are seen at {cfg.image_size}x{cfg.image_size} pixels; fine detail smaller than that is lost.",
        *_weights_limits(cfg),
        "",
        "## How to use",
        "",
        f"Every format takes RGB images with values 0-255 and returns one probability per class, "
        f"in the order of `labels.txt`. Every format resizes inside (any size); the TFLite models "
        f"take one uint8 image `(1, height, width, 3)` and resize it to {cfg.image_size}x{cfg.image_size} "
        f"with plain bilinear interpolation:",
        "",
        tflite_usage(cfg.image_size),
        "",
    ]
    return "\n".join(lines)


def _trust_section(metrics) -> list:
    """What the card says about the probabilities (calibrated or not) and the rule for a
    photo of none of the classes that a file giving only probabilities can apply."""
    record, rule = metrics.get("calibration"), metrics.get("novelty") or {}
    lines = ["## Confidence, and photos of none of these classes", ""]
    if record is None:
        return lines + ["This run was trained before calibration: its probabilities are the model's own (often "
                        "near 100% even when wrong), and it has no rule for photos of none of its classes.", ""]
    if record.get("applied"):
        where = {"validation": "the validation photos",
                 "out-of-fold": "out-of-fold predictions on the training and validation photos"}.get(
                     record.get("source"), record.get("source"))
        lines.append(f"The probabilities are calibrated: a temperature of {record['temperature']:.4g}, fitted on "
                     f"{where}, is already applied inside every exported file (nothing to do when using it). "
                     f"On the test split: expected calibration error {_num(record.get('ece_before'))} -> "
                     f"{_num(record.get('ece_after'))}, negative log-likelihood {_num(record.get('nll_before'))} -> "
                     f"{_num(record.get('nll_after'))}.")
    else:
        lines.append(record.get("note") or "The probabilities are not calibrated.")
    lines.append("")
    if rule.get("confidence_threshold") is not None:
        lines += [f"Photos of none of these classes: the app also measures how far a photo's features are from "
                  f"the training photos, which these files cannot (they output probabilities only). With a file, "
                  f"treat an answer whose top probability is below **{rule['confidence_threshold']:.4f}** as "
                  f"\"none of these classes\": {rule.get('pass_rate', 0.95):.0%} of held-out photos of the classes "
                  f"reach it. This confidence-only rule catches fewer outsiders than the app's "
                  f"(`bench/calibration.py` measures both).", ""]
    else:
        lines += [rule.get("note") or "This run has no rule for photos of none of its classes.", ""]
    return lines


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _weights_limits(cfg) -> list:
    from tl.strategies import STRATEGIES

    if STRATEGIES[cfg.strategy].pretrained and cfg.weights == "imagenet":
        return ["- The backbone was pretrained on ImageNet, so it inherits ImageNet's biases: mostly "
                "Western, everyday photographs, with some classes and groups of people under-represented."]
    return [f"- The backbone started from weights `{cfg.weights if STRATEGIES[cfg.strategy].pretrained else 'none'}` "
            "(not ImageNet), so it learned only from the images above."]


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"
