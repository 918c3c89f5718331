"""The run configuration: one frozen dataclass, validated when it is made, JSON in and out.

Importing this module does not import TensorFlow: the registries it checks names against
hold only names, metadata and callables.
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from tl.backbones import BACKBONES
from tl.data.catalogue import BUILT_IN, MADE_PREFIX, is_made
from tl.engine import check_names as check_engine_names
from tl.errors import ConfigError
from tl.heads import HEADS
from tl.strategies import STRATEGIES

OPTIMIZER_DESCRIPTIONS = {
    "adam": "Adam: adapts each weight's step size; a safe default.",
    "sgd": "SGD with momentum 0.9: plain gradient steps; usually wants a larger learning rate than adam.",
    "rmsprop": "RMSprop: scales each weight's step by the recent size of its gradients.",
}
OPTIMIZERS = tuple(OPTIMIZER_DESCRIPTIONS)  # the names, in the order the app offers them
# Fields whose None means "the strategy's default" (see RunConfig.resolved).
STRATEGY_DEFAULTS = ("epochs", "fine_tune_epochs", "learning_rate", "early_stopping", "min_steps")
CLASS_WEIGHTS = ("none", "balanced")

# One plain-English line per RunConfig field: what it changes. `python -m tl train --help`
# prints these (with choices and defaults added); the app can reuse them as tooltips.
FIELD_HELP = {
    "dataset": "Where the images come from: a built-in name, or data:NAME for a dataset made in the app "
               "(`python -m tl data list` shows them).",
    "data_dir": "Folder of your own images, one sub-folder per class (dataset 'folder' only).",
    "backbone": "The network that turns each image into features (a pretrained one brings what it "
                "learnt on ImageNet).",
    "weights": "Starting weights of the backbone: 'imagenet', 'none' (random), 'run:<id>' "
               "(a finished run's) or the path of a weights file.",
    "strategy": "How much of the backbone is trained, and on what.",
    "head": "The classifier put on top of the backbone's features.",
    "image_size": "Side in pixels the images are resized to before the backbone.",
    "batch_size": "Images per training step.",
    "epochs": "Most passes over the training images (the first phase's, for fine_tune).",
    "fine_tune_epochs": "Passes over the training images while fine-tuning (fine_tune's second phase).",
    "fine_tune_layers": "How many of the backbone's last weighted layers fine_tune unfreezes.",
    "learning_rate": "Step size of the optimiser; lower it if the loss jumps or becomes NaN.",
    "fine_tune_learning_rate": "Step size of the optimiser once backbone layers train (fine_tune, "
                               "full_fine_tune).",
    "optimizer": "The algorithm that updates the weights.",
    "dropout": "Share of features dropped at random while training the head (0 to below 1); "
               "raise it if the head overfits.",
    "augment": "Randomly flip, rotate, zoom and shift the training images (strategies that train on images).",
    "class_weight": "How the loss weighs each class: 'balanced' counts a rare class's images more, "
                    "'none' treats every image alike.",
    "samples_per_class": "Use at most this many images of each class (0: all of them).",
    "val_fraction": "Share of the images held out to validate during training.",
    "test_fraction": "Share of the images held out for the final test accuracy.",
    "early_stopping": "Stop after this many epochs without a lower validation loss, keeping the "
                      "best weights (0: off).",
    "min_steps": "Add epochs until training has at least this many optimiser steps (helps small data); "
                 "0 when the epochs are given and this is not.",
    "seed": "Same seed, same split and same starting weights.",
    "synthetic_classes": "Number of shape classes the synthetic dataset generates (2 to 10).",
    "name": "A name for the run, to tell it from others (the Classify page and `runs --json` show it).",
    "tags": "Labels for grouping runs (compare tags each run with its sweep).",
    "engine": "What runs the frozen backbone to extract features (not training): 'auto' (OpenVINO on a CPU "
              "when installed, else TensorFlow), 'openvino' or 'tensorflow'.",
    "engine_precision": "Precision of that frozen pass: 'auto' (fp32), 'fp32' (the same features as "
                        "TensorFlow) or 'bf16' (faster on CPUs with AVX512-BF16 or AMX; the test accuracy is "
                        "then scored through the saved float32 model).",
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run.

    Defaults train in a few minutes on a CPU-only machine: a capped number of images per
    class and the cheapest transfer strategy. ``None`` in ``epochs``, ``fine_tune_epochs``,
    ``learning_rate``, ``early_stopping`` and ``min_steps`` means the strategy's own default
    (``STRATEGIES[strategy].defaults``); :meth:`resolved` fills them in, and a run folder
    records the resolved values. The step floor ``min_steps`` is for the default epochs: a
    typed number of epochs is trained as typed, so ``min_steps`` then resolves to 0 unless it
    is typed too (a config file written before this rule, with epochs and no ``min_steps``,
    is read the same way).
    """

    dataset: str = "synthetic"
    data_dir: str | None = None
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    strategy: str = "feature_extraction"
    head: str = "gap_dropout_dense"
    image_size: int = 224
    batch_size: int = 32
    epochs: int | None = None
    fine_tune_epochs: int | None = None
    fine_tune_layers: int = 10
    learning_rate: float | None = None
    fine_tune_learning_rate: float | None = None
    optimizer: str = "adam"
    dropout: float = 0.3
    augment: bool = False
    class_weight: str = "none"
    samples_per_class: int = 100
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    early_stopping: int | None = None
    min_steps: int | None = None
    seed: int = 0
    synthetic_classes: int = 4
    name: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    engine: str | None = None  # None: $TL_ENGINE, else "auto" (tl.engine)
    engine_precision: str | None = None  # None: $TL_ENGINE_PRECISION, else "auto"

    def __post_init__(self):
        # JSON gives lists; keep the dataclass hashable and immutable. A bare string would
        # otherwise become one tag per character.
        if not isinstance(self.tags, (list, tuple)):
            raise ConfigError(f"Expected `tags` to be a list of strings. Received: tags={self.tags!r}.")
        object.__setattr__(self, "tags", tuple(self.tags))
        _validate(self)

    # -- derived values -------------------------------------------------------------
    def resolved(self) -> "RunConfig":
        """A copy with every ``None`` that stands for a strategy default filled in; a
        ``min_steps`` left empty beside typed epochs (those it would stretch) becomes 0."""
        defaults = STRATEGIES[self.strategy].defaults
        filled = {name: defaults[name] for name in STRATEGY_DEFAULTS if getattr(self, name) is None}
        if self.min_steps is None and getattr(self, self.stretched_epochs) is not None:
            filled["min_steps"] = 0  # a typed number of epochs is a promise, kept by the replay too
        return self.replace(**filled)

    @property
    def stretched_epochs(self) -> str:
        """The field holding the epochs ``min_steps`` adds to: ``fine_tune``'s second phase
        (its first is a head fit with a budget of its own), else ``epochs``."""
        return "fine_tune_epochs" if self.strategy == "fine_tune" else "epochs"

    @property
    def effective_fine_tune_learning_rate(self) -> float:
        """The fine-tuning learning rate: as given, else 10x lower than ``learning_rate``."""
        if self.fine_tune_learning_rate is not None:
            return self.fine_tune_learning_rate
        return self.resolved().learning_rate / 10

    @property
    def total_epochs(self) -> int:
        """Epochs over the image-trained phases (``fine_tune``'s second phase is its
        ``fine_tune_epochs``); a head fitted on cached features may run more (``min_steps``)
        or fewer (early stopping)."""
        cfg = self.resolved()
        return cfg.fine_tune_epochs if cfg.strategy == "fine_tune" else cfg.epochs

    # -- JSON -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Return the config as a plain JSON-able dict."""
        data = dataclasses.asdict(self)
        data["tags"] = list(self.tags)
        return data

    def to_json(self) -> str:
        """Return the config as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """Build a config from a dict; unknown keys raise :class:`ConfigError`.

        Keys that are missing take their defaults, so configs written by an older version
        still load.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"A run config must be a JSON object. Received: {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown config field(s) {unknown}. Valid fields are: {sorted(known)}."
            )
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        """Parse JSON text into a config."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"The config is not valid JSON ({exc}).") from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path) -> "RunConfig":
        """Read a JSON config file."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"Cannot read config file '{path}': {exc.strerror}.") from None
        return cls.from_json(text)

    def replace(self, **changes) -> "RunConfig":
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


# -- validation ------------------------------------------------------------------------

def _one_of(name, value, options):
    if value not in options:
        raise ConfigError(
            f"Expected `{name}` to be one of {sorted(options)}. Received: {name}={value!r}."
        )


def _int_range(name, value, low, high=None, optional=False):
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"Expected `{name}` to be an integer. Received: {name}={value!r}.")
    if value < low or (high is not None and value > high):
        upper = f" and at most {high}" if high is not None else ""
        raise ConfigError(
            f"Expected `{name}` to be at least {low}{upper}. Received: {name}={value!r}."
        )


def _float_range(name, value, low, high, *, low_open=True, high_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"Expected `{name}` to be a number. Received: {name}={value!r}.")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ConfigError(
            f"Expected `{name}` to be in {left}{low}, {high}{right}. Received: {name}={value!r}."
        )


def _validate(cfg: RunConfig) -> None:
    for name in ("weights", "strategy", "backbone", "dataset", "head", "optimizer", "class_weight"):
        if not isinstance(getattr(cfg, name), str):
            raise ConfigError(f"Expected `{name}` to be a name. Received: {name}={getattr(cfg, name)!r}.")
    if is_made(cfg.dataset):  # made in the app; whether it exists is checked when it loads
        if not cfg.dataset[len(MADE_PREFIX):].strip():
            raise ConfigError(f"Expected `dataset` as {MADE_PREFIX}NAME, with the name of a dataset made in the app. "
                              f"Received: dataset='{MADE_PREFIX}'.")
    else:
        _one_of("dataset", cfg.dataset, [*BUILT_IN, f"{MADE_PREFIX}NAME"])
    _one_of("backbone", cfg.backbone, BACKBONES)
    _one_of("strategy", cfg.strategy, STRATEGIES)
    _one_of("head", cfg.head, HEADS)
    _one_of("optimizer", cfg.optimizer, OPTIMIZERS)
    _one_of("class_weight", cfg.class_weight, CLASS_WEIGHTS)
    if not isinstance(cfg.augment, bool):
        raise ConfigError(f"Expected `augment` to be true or false. Received: augment={cfg.augment!r}.")

    spec = BACKBONES[cfg.backbone]
    _int_range("image_size", cfg.image_size, spec.min_size, 1024)
    _int_range("batch_size", cfg.batch_size, 1, 4096)
    _int_range("epochs", cfg.epochs, 1, 1000, optional=True)
    _int_range("fine_tune_epochs", cfg.fine_tune_epochs, 0, 1000, optional=True)
    _int_range("fine_tune_layers", cfg.fine_tune_layers, 1)
    _int_range("samples_per_class", cfg.samples_per_class, 0)
    _int_range("early_stopping", cfg.early_stopping, 0, 1000, optional=True)
    _int_range("min_steps", cfg.min_steps, 0, 100_000, optional=True)
    _int_range("seed", cfg.seed, 0, 2**31 - 1)
    _int_range("synthetic_classes", cfg.synthetic_classes, 2, 10)
    if cfg.learning_rate is not None:
        _float_range("learning_rate", cfg.learning_rate, 0.0, 10.0)
    if cfg.fine_tune_learning_rate is not None:
        _float_range("fine_tune_learning_rate", cfg.fine_tune_learning_rate, 0.0, 10.0)
    _float_range("dropout", cfg.dropout, 0.0, 1.0, low_open=False, high_open=True)
    _float_range("val_fraction", cfg.val_fraction, 0.0, 0.5)
    _float_range("test_fraction", cfg.test_fraction, 0.0, 0.5)
    if cfg.val_fraction + cfg.test_fraction > 0.8:
        raise ConfigError(
            "Expected `val_fraction` + `test_fraction` to leave at least 20% of the images "
            f"for training. Received: val_fraction={cfg.val_fraction}, "
            f"test_fraction={cfg.test_fraction}."
        )

    for name in ("data_dir", "name"):
        value = getattr(cfg, name)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"Expected `{name}` to be text. Received: {name}={value!r}.")
    needs_dir = cfg.dataset in BUILT_IN and BUILT_IN[cfg.dataset].needs_dir
    if needs_dir and not cfg.data_dir:
        raise ConfigError(
            f"Dataset '{cfg.dataset}' reads images from a folder: set `data_dir` to a folder "
            "with one sub-folder per class."
        )
    if cfg.strategy == "earlier_layer" and spec.earlier_cut is None:
        raise ConfigError(
            f"Backbone '{cfg.backbone}' has no earlier layer to cut at; choose strategy "
            "'feature_extraction' or another backbone."
        )
    _validate_weights(cfg, spec)
    check_engine_names(cfg.engine, cfg.engine_precision)
    for tag in cfg.tags:
        if not isinstance(tag, str):
            raise ConfigError(f"Expected `tags` to be strings. Received: tags={list(cfg.tags)!r}.")


def _validate_weights(cfg, spec) -> None:
    weights = cfg.weights
    if not isinstance(weights, str) or not weights:
        raise ConfigError(
            "Expected `weights` to be 'imagenet', 'none', 'run:<id>' or the path of a weights "
            f"file. Received: weights={weights!r}."
        )
    if weights == "imagenet" and not spec.pretrained and cfg.strategy != "scratch":
        raise ConfigError(
            f"Backbone '{cfg.backbone}' has no ImageNet weights; use weights='none' (or a "
            "weights file, or run:<id>)."
        )
    if weights.startswith("run:") and len(weights) == 4:
        raise ConfigError("Expected `weights` as run:<id>, with the id of a finished run. Received: weights='run:'.")
    is_file_name = weights not in ("imagenet", "none") and not weights.startswith("run:")
    if is_file_name and not Path(weights).expanduser().is_file():
        raise ConfigError(
            f"Weights file '{weights}' does not exist; give 'imagenet', 'none', 'run:<id>' "
            "or the path of a weights file."
        )
