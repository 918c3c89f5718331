"""The inference engine of every frozen-backbone pass: OpenVINO on the CPU when it can,
TensorFlow otherwise.

Feature extraction, the advisor's ImageNet pass, Classify and ``tl predict`` hand a Keras
model to :func:`compile` and call the :class:`Pass` it returns; they never ask which engine
ran. The choice, in order: the caller's ``engine`` (``--engine``), ``$TL_ENGINE``, else
``auto``:

- ``auto``: OpenVINO when it is installed, no GPU is visible to TensorFlow (a GPU runs the
  pass faster in TensorFlow) and the model converts; otherwise TensorFlow.
- ``openvino``: OpenVINO, or TensorFlow with one sentence saying why not.
- ``tensorflow``: the model as it is.

The precision (``engine_precision``, apart from training's mixed-precision policy,
``train_precision``): ``fp32`` by default, which matches TensorFlow's float32 to about 1e-5
(``bench/engines.py``); ``bf16`` on request, only where OpenVINO reports native bf16 on this
CPU (AVX512-BF16 or AMX), else fp32 with a sentence. ``auto`` is fp32 for every backbone: bf16
becomes a backbone's default only once its cost on the served model is measured at half a
point or less, on a CPU that has it (``bench/README.md``, "Engines").

A model whose first layer after its image input is the ``resize`` layer of
:func:`tl.models.image_input` is split there: the resize (anti-aliased, which OpenVINO has no
operation for) runs in TensorFlow, the rest in OpenVINO, so the pass sees exactly the pixels
the saved model sees. The converted model is kept on disk under the cache root
(``<cache>/openvino/<key>/``, or ``$TL_CONVERTED_MODELS_DIR/<key>/``: ``tl.paths``), keyed by
what the caller says the model is, its input size and a digest of its weights; OpenVINO's own
compiled-blob cache sits under the cache root (``<cache>/openvino/blobs/``), so a second run,
process or session converts and compiles nothing.

OpenVINO's model converter reports usage to Intel by default (unless ``CI=true``): this
module makes its telemetry package unimportable before the first ``import openvino``, so
nothing is sent; ``TL_OPENVINO_TELEMETRY=1`` leaves it as OpenVINO ships it.
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tl.errors import ConfigError
from tl.paths import converted_models_root

ENGINES = ("auto", "openvino", "tensorflow")
PRECISIONS = ("auto", "fp32", "bf16")
ENGINE_DESCRIPTIONS = {
    "auto": "OpenVINO on a CPU when it is installed and the model converts, else TensorFlow.",
    "openvino": "Intel's inference runtime for CPUs: about 1.4-1.9x TensorFlow's float32 here, same numbers.",
    "tensorflow": "The model as trained, in TensorFlow.",
}
PRECISION_DESCRIPTIONS = {
    "auto": "fp32 for every backbone (bf16 is nobody's default until its cost is measured small).",
    "fp32": "Full precision: the same features as TensorFlow's float32.",
    "bf16": "bfloat16 on CPUs that have it (AVX512-BF16, AMX): several times faster, features a few % apart.",
}
FORMAT = 1  # of the converted-model cache; bump when the conversion changes


@dataclass(frozen=True)
class Choice:
    """Which engine runs a pass, at which precision, and why not the one asked for.

    Attributes:
        engine: "openvino" or "tensorflow".
        precision: "fp32", "bf16" (OpenVINO) or "fp16" (TensorFlow under mixed_float16).
        note: one sentence when the engine or precision is not what was asked, else ``None``.
    """

    engine: str
    precision: str
    note: str | None = None

    def as_record(self) -> dict:
        """The fields a run's events and metrics carry."""
        return {"engine": self.engine, "engine_precision": self.precision}


def requested(engine: str | None = None, precision: str | None = None) -> tuple:
    """``(engine, precision)`` as asked: the arguments, else ``$TL_ENGINE`` and
    ``$TL_ENGINE_PRECISION``, else ``auto``. Raises :class:`ConfigError` for an unknown name."""
    engine = engine or os.environ.get("TL_ENGINE") or "auto"
    precision = precision or os.environ.get("TL_ENGINE_PRECISION") or "auto"
    check_names(engine, precision)
    return engine, precision


def check_names(engine, precision) -> None:
    """Raise :class:`ConfigError` unless both are known names (``None`` allowed)."""
    for name, value, options in (("engine", engine, ENGINES), ("engine_precision", precision, PRECISIONS)):
        if value is not None and value not in options:
            raise ConfigError(f"Expected `{name}` to be one of {list(options)}. Received: {name}={value!r}.")


# -- OpenVINO, loaded once -------------------------------------------------------------

_lock = threading.Lock()
_state = {}


def openvino():
    """The ``openvino`` module (telemetry off unless ``TL_OPENVINO_TELEMETRY=1``), or raise
    ImportError."""
    if "module" not in _state:
        with _lock:
            if "module" not in _state:
                if os.environ.get("TL_OPENVINO_TELEMETRY") != "1" and "openvino_telemetry" not in sys.modules:
                    sys.modules["openvino_telemetry"] = None  # its converter then uses its own no-op stub
                import openvino as ov

                _state["module"] = ov
                _state["core"] = ov.Core()
    return _state["module"]


def openvino_problem() -> str | None:
    """Why OpenVINO cannot be used in this process (one sentence), or ``None``."""
    try:
        openvino()
    except ImportError as exc:
        return (f"OpenVINO is not installed ({exc}); `pip install openvino` makes the frozen backbone "
                "several times faster on a CPU")
    except Exception as exc:  # a broken install: a native library that does not load
        return f"OpenVINO did not load ({type(exc).__name__}: {_short(exc)})"
    return None


def cpu_has_bf16() -> bool:
    """Whether OpenVINO reports native bfloat16 on this CPU."""
    if openvino_problem():
        return False
    try:
        return "BF16" in _state["core"].get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:
        return False


def cpu_flags() -> str:
    """The CPU's model name and the instruction-set flags that matter here, for benchmarks."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    return f"{model}; {os.cpu_count()} cores; flags: {' '.join(f for f in wanted if f in flags) or 'none of interest'}"


def _gpu_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _tensorflow_precision() -> str:
    import keras

    return {"mixed_float16": "fp16", "mixed_bfloat16": "bf16"}.get(keras.mixed_precision.global_policy().name, "fp32")


def choose(engine: str | None = None, precision: str | None = None) -> Choice:
    """Resolve what was asked (see :func:`requested`) against this machine."""
    engine, precision = requested(engine, precision)
    if engine == "tensorflow":
        note = None
        if precision == "bf16":
            note = "bf16 inference is OpenVINO's; TensorFlow runs the frozen backbone in its training precision."
        return Choice("tensorflow", _tensorflow_precision(), note)
    if engine == "auto" and _gpu_visible():
        return Choice("tensorflow", _tensorflow_precision())
    problem = openvino_problem()
    if problem:
        return Choice("tensorflow", _tensorflow_precision(), f"{problem}; the frozen backbone runs on TensorFlow.")
    if precision == "bf16" and not cpu_has_bf16():
        return Choice("openvino", "fp32", "This CPU has no native bfloat16 (AVX512-BF16 or AMX), so OpenVINO "
                                          "runs the frozen backbone in fp32.")
    return Choice("openvino", "bf16" if precision == "bf16" else "fp32")


# -- passes ----------------------------------------------------------------------------

class Pass:
    """A frozen model, ready to run: images in, the model's outputs out (numpy, shaped as
    Keras's ``predict`` gives them). Safe to call from several threads."""

    def __init__(self, model, choice: Choice):
        self.model = model
        self.choice = choice

    @property
    def engine(self) -> str:
        return self.choice.engine

    @property
    def precision(self) -> str:
        return self.choice.precision

    def __call__(self, images):
        """Outputs for one batch ``(N, H, W, 3)`` of RGB 0-255 images."""
        return self.model.predict_on_batch(np.asarray(images, dtype=np.float32))

    def predict(self, pipeline) -> np.ndarray:
        """The (single) output for every batch of a ``tf.data`` pipeline of ``(images, ...)``."""
        return np.asarray(self.model.predict(pipeline, verbose=0))


class OpenVinoPass(Pass):
    """The model's ``resize`` in TensorFlow (when it starts with one), the rest compiled by
    OpenVINO."""

    def __init__(self, model, choice: Choice, compiled, resize, outputs: int):
        super().__init__(model, choice)
        self.compiled, self.resize, self.outputs = compiled, resize, outputs

    def _infer(self, batch):
        request = self.compiled.create_infer_request()  # one per call: calls may come from several threads
        results = request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        values = [np.array(results[output]) for output in self.compiled.outputs]
        return values if self.outputs > 1 else values[0]

    def __call__(self, images):
        images = np.asarray(images, dtype=np.float32)
        if self.resize is not None:
            images = np.asarray(self.resize(images))
        return self._infer(images)

    def predict(self, pipeline) -> np.ndarray:
        # The resize joins the pipeline's parallel map, so decoding and resizing the next
        # batches overlap with OpenVINO's inference of this one.
        import tensorflow as tf

        if self.resize is not None:
            resize = self.resize
            pipeline = pipeline.map(lambda x, *rest: resize(tf.cast(x, tf.float32)),
                                    num_parallel_calls=tf.data.AUTOTUNE)
        else:
            pipeline = pipeline.map(lambda x, *rest: tf.cast(x, tf.float32))
        parts = [self._infer(batch.numpy()) for batch in pipeline.prefetch(2)]
        if not parts:
            return np.zeros((0,) + tuple(int(d) for d in self.model.output.shape[1:]), dtype=np.float32)
        return np.concatenate(parts)


def compile(model, *, key: dict, cache_root, engine: str | None = None, precision: str | None = None,
            choice: Choice | None = None, on_note=None) -> Pass:
    """A :class:`Pass` of ``model`` on the engine chosen by :func:`choose`.

    Args:
        model: a functional Keras model; one whose input is an image of any size followed
            by the ``resize`` layer is split there (see the module docstring). Its input
            size must otherwise be fixed.
        key: what the model is (backbone, weights, cut, size, which outputs): names the
            converted model on disk, together with a digest of the weights.
        cache_root: the folder the cache lives under (``tl.paths.cache_root``).
        choice: a :class:`Choice` made already (by :func:`choose`); ``engine`` and
            ``precision`` are then not resolved again.
        on_note: called with one sentence when the engine or precision is not what was
            asked (OpenVINO missing, a model that does not convert, no bf16 on this CPU).
    """
    if choice is None:
        choice = choose(engine, precision)
        if choice.note and on_note:
            on_note(choice.note)
    if choice.engine == "tensorflow":
        return Pass(model, choice)
    try:
        return _openvino_pass(model, choice, key, Path(cache_root))
    except Exception as exc:  # a layer OpenVINO cannot convert, a full disk, ...: TensorFlow still works
        fallback = replace(choice, engine="tensorflow", precision=_tensorflow_precision(),
                           note=f"OpenVINO could not run this model ({type(exc).__name__}: {_short(exc)}); "
                                "the frozen backbone runs on TensorFlow.")
        if on_note:
            on_note(fallback.note)
        return Pass(model, fallback)


def _openvino_pass(model, choice: Choice, key: dict, cache: Path) -> OpenVinoPass:
    ov = openvino()
    resize, core_model = _split(model)
    shape = [-1] + [int(d) for d in core_model.input.shape[1:]]
    if any(d is None or d < 0 for d in shape[1:]):
        raise ValueError("the model's input size is not fixed")
    folder = converted_models_root(cache) / _digest(key, shape, core_model)
    xml = folder / "model.xml"
    if not (xml.is_file() and (folder / "model.bin").is_file()):
        _convert(ov, core_model, shape, folder)
    blobs = cache / "openvino" / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    config = {"INFERENCE_PRECISION_HINT": "bf16" if choice.precision == "bf16" else "f32",
              "PERFORMANCE_HINT": "LATENCY", "CACHE_DIR": str(blobs)}
    compiled = _state["core"].compile_model(str(xml), "CPU", config)
    return OpenVinoPass(model, choice, compiled, resize, len(core_model.outputs))


def _split(model):
    """``(resize layer or None, the model after it)``."""
    import keras

    try:
        resize = model.get_layer("resize")
    except ValueError:
        return None, model
    # The layer may be shared with another model (a Predictor's paths reuse the run's): take
    # its call on this model's own input, if it has one.
    for node in resize._inbound_nodes:
        if len(model.inputs) == 1 and node.input_tensors and node.input_tensors[0] is model.inputs[0]:
            return resize, keras.Model(node.output_tensors[0], model.outputs, name=f"{model.name}_core")
    return None, model


def _digest(key: dict, shape, model) -> str:
    digest = hashlib.sha256(json.dumps({"format": FORMAT, "key": key, "shape": shape},
                                       sort_keys=True, default=str).encode())
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:20]


def _convert(ov, model, shape, folder: Path) -> None:
    """Convert and save atomically (a temporary folder renamed into place)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras's note on the input structure while tracing
            converted = ov.convert_model(model, input=[shape])
        ov.save_model(converted, str(tmp / "model.xml"), compress_to_fp16=False)
        try:
            tmp.rename(folder)
        except OSError:  # another process converted it meanwhile
            if not (folder / "model.xml").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _short(exc) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
