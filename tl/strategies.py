"""Strategies: name -> a short function that freezes, unfreezes and fits in phases.

Each function receives a :class:`tl.training.Learner` (which owns the model, the data and
the progress events) and the run config. Together they cover the seeds' four cases:

==============  ==================  =======================================
data size       similar to ImageNet  strategy
==============  ==================  =======================================
small           similar              ``feature_extraction`` (linear head on CNN features)
small           different            ``earlier_layer`` (head on earlier activations)
large           similar              ``fine_tune`` (head first, then the top layers)
large           different            ``full_fine_tune`` (train all from the pretrained start)
==============  ==================  =======================================

``frozen`` is feature extraction trained end to end on images (so augmentation applies),
and ``scratch`` is the same architecture from a random start: the no-transfer baseline.
"""

from dataclasses import dataclass
from typing import Callable


def feature_extraction(learner, cfg):
    """Run the frozen backbone once (cached on disk) and train the head on its features."""
    learner.fit_head_on_features(cfg.epochs, cfg.learning_rate)


def earlier_layer(learner, cfg):
    """Like feature_extraction, on an earlier block's activations (the cut is set at build)."""
    learner.fit_head_on_features(cfg.epochs, cfg.learning_rate)


def frozen(learner, cfg):
    """Backbone frozen; the whole model is trained on images, so augmentation applies."""
    learner.freeze_backbone()
    learner.fit("head", cfg.epochs, cfg.learning_rate)


def fine_tune(learner, cfg):
    """Train the head on the frozen backbone, then unfreeze the top layers at a lower LR."""
    learner.freeze_backbone()
    learner.fit("head", cfg.epochs, cfg.learning_rate)
    if cfg.fine_tune_epochs:
        learner.unfreeze_top(cfg.fine_tune_layers)
        learner.fit("fine_tune", cfg.fine_tune_epochs, cfg.effective_fine_tune_learning_rate)


def full_fine_tune(learner, cfg):
    """Everything trainable from the pretrained start, at the low fine-tuning LR."""
    learner.unfreeze_top(None)
    learner.fit("full", cfg.epochs, cfg.effective_fine_tune_learning_rate)


def scratch(learner, cfg):
    """The same architecture from random weights, BatchNorm included: no transfer."""
    learner.unfreeze_top(None, batchnorm=True)
    learner.fit("scratch", cfg.epochs, cfg.learning_rate)


@dataclass(frozen=True)
class StrategySpec:
    """Registry entry.

    Attributes:
        uses_features: trains on cached pooled features rather than on images.
        cut: "default" (the backbone's last layer) or "earlier" (its earlier cut point).
        pretrained: starts from the configured weights (``False``: random init).
        phases: names of the phases it runs, for the app's charts.
        applies: config fields that matter to it beyond the common ones.
    """

    name: str
    run: Callable
    uses_features: bool
    cut: str
    pretrained: bool
    phases: tuple
    applies: tuple
    description: str


_IMAGE_FIELDS = ("augment",)
STRATEGIES = {
    spec.name: spec
    for spec in (
        StrategySpec("feature_extraction", feature_extraction, True, "default", True, ("head",), (),
                     "Small data, similar to ImageNet: train a classifier on cached CNN features. Fastest."),
        StrategySpec("earlier_layer", earlier_layer, True, "earlier", True, ("head",), (),
                     "Small data, different from ImageNet: classifier on an earlier block's features."),
        StrategySpec("frozen", frozen, False, "default", True, ("head",), _IMAGE_FIELDS,
                     "Frozen backbone trained end to end on images, so augmentation applies."),
        StrategySpec("fine_tune", fine_tune, False, "default", True, ("head", "fine_tune"),
                     _IMAGE_FIELDS + ("fine_tune_epochs", "fine_tune_layers", "fine_tune_learning_rate"),
                     "Larger data, similar to ImageNet: train the head, then fine-tune the top layers."),
        StrategySpec("full_fine_tune", full_fine_tune, False, "default", True, ("full",),
                     _IMAGE_FIELDS + ("fine_tune_learning_rate",),
                     "Larger data, different from ImageNet: train everything from the pretrained start."),
        StrategySpec("scratch", scratch, False, "default", False, ("scratch",), _IMAGE_FIELDS,
                     "No transfer: the same architecture from random weights (the baseline)."),
    )
}

DEFAULT_STRATEGY = "feature_extraction"
