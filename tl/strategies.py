"""Strategies: name -> a short function that freezes, unfreezes and fits in phases.

Each function receives a :class:`tl.learner.Learner` (which owns the model, the data and
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

from dataclasses import dataclass, field
from typing import Callable

from tl.heads import HEADS


def feature_extraction(learner, cfg):
    """Run the frozen backbone once (cached on disk) and fit the head on its features."""
    learner.fit_head_on_features()


def earlier_layer(learner, cfg):
    """Like feature_extraction, on an earlier block's activations (the cut is set at build)."""
    learner.fit_head_on_features()


def frozen(learner, cfg):
    """Backbone frozen: the head starts from its fit on cached features, then trains on
    images, so augmentation applies."""
    learner.freeze_backbone()
    learner.warm_start_head()
    learner.fit("frozen", cfg.epochs, cfg.learning_rate)


def fine_tune(learner, cfg):
    """Fit the head on the frozen backbone, then unfreeze the top layers at a lower LR."""
    learner.freeze_backbone()
    learner.warm_start_head()
    if cfg.fine_tune_epochs:
        learner.unfreeze_top(cfg.fine_tune_layers)
        learner.fit("fine_tune", cfg.fine_tune_epochs, cfg.effective_fine_tune_learning_rate)


def full_fine_tune(learner, cfg):
    """Fit the head on the frozen backbone, then train everything at the low fine-tuning LR."""
    learner.freeze_backbone()
    learner.warm_start_head()
    learner.unfreeze_top(None)
    learner.fit("full", cfg.epochs, cfg.effective_fine_tune_learning_rate)


def scratch(learner, cfg):
    """The same architecture from random weights, BatchNorm included: no transfer. The
    BatchNorm statistics use momentum 0.9, so that they settle within the few hundred steps
    of small data (Keras's 0.99 needs thousands; validation then reads stale statistics)."""
    learner.unfreeze_top(None, batchnorm=True)
    learner.set_batchnorm_momentum(0.9)
    learner.fit("scratch", cfg.epochs, cfg.learning_rate)


@dataclass(frozen=True)
class StrategySpec:
    """Registry entry.

    Attributes:
        uses_features: trains only the head, on cached pooled features.
        cut: "default" (the backbone's last layer) or "earlier" (its earlier cut point).
        pretrained: starts from the configured weights (``False``: random init).
        phases: names of the phases it runs, for the app's charts.
        applies: config fields that matter to it beyond the common ones.
        defaults: what ``None`` in the config means for this strategy (epochs,
            learning_rate, early_stopping, min_steps, fine_tune_epochs); measured on small
            data (bench/README.md, "Defaults").
    """

    name: str
    run: Callable
    uses_features: bool
    cut: str
    pretrained: bool
    phases: tuple
    applies: tuple
    description: str
    defaults: dict = field(default_factory=dict)

    @property
    def keeps_backbone(self) -> bool:
        """Whether training leaves the pretrained backbone as it started (only heads train),
        so its cached features stay the features of the final model."""
        return self.pretrained and set(self.phases) <= {"head", "frozen"}


# epochs: the most passes over the training data; min_steps: at least this many optimiser
# steps (small data: an epoch of 200 images is 7 steps); early_stopping: patience in epochs
# on validation loss, best weights restored. A head on cached features (a feature
# strategy's, or any pretrained strategy's first phase) gets _HEAD_ON_FEATURES' budget when
# it is not fitted exactly; the image-trained phases get their strategy's. The image phase
# of full_fine_tune and fine_tune runs at a tenth of learning_rate.
_HEAD_ON_FEATURES = dict(epochs=200, learning_rate=1e-3, early_stopping=20, min_steps=400, fine_tune_epochs=0)
_IMAGE_FIELDS = ("augment",)
STRATEGIES = {
    spec.name: spec
    for spec in (
        StrategySpec("feature_extraction", feature_extraction, True, "default", True, ("head",), (),
                     "Small data, similar to ImageNet: train a classifier on cached CNN features. Fastest.",
                     _HEAD_ON_FEATURES),
        StrategySpec("earlier_layer", earlier_layer, True, "earlier", True, ("head",), (),
                     "Small data, different from ImageNet: classifier on an earlier block's features.",
                     _HEAD_ON_FEATURES),
        StrategySpec("frozen", frozen, False, "default", True, ("head", "frozen"), _IMAGE_FIELDS,
                     "Frozen backbone: the head is fitted on cached features, then trained on (augmented) images.",
                     dict(epochs=5, learning_rate=1e-4, early_stopping=3, min_steps=0, fine_tune_epochs=0)),
        StrategySpec("fine_tune", fine_tune, False, "default", True, ("head", "fine_tune"),
                     _IMAGE_FIELDS + ("fine_tune_epochs", "fine_tune_layers", "fine_tune_learning_rate"),
                     "Larger data, similar to ImageNet: fit the head, then fine-tune the top layers.",
                     dict(epochs=5, learning_rate=1e-3, early_stopping=3, min_steps=0, fine_tune_epochs=5)),
        StrategySpec("full_fine_tune", full_fine_tune, False, "default", True, ("head", "full"),
                     _IMAGE_FIELDS + ("fine_tune_learning_rate",),
                     "Larger data, different from ImageNet: fit the head, then train everything from the pretrained start.",
                     dict(epochs=5, learning_rate=1e-3, early_stopping=3, min_steps=0, fine_tune_epochs=0)),
        StrategySpec("scratch", scratch, False, "default", False, ("scratch",), _IMAGE_FIELDS,
                     "No transfer: the same architecture from random weights (the baseline).",
                     dict(epochs=100, learning_rate=3e-3, early_stopping=10, min_steps=300, fine_tune_epochs=0)),
    )
}


def head_on_features(strategy: str, head: str) -> bool:
    """Whether the head is trained (first) on the cached pooled features: every pretrained
    strategy whose head reads pooled features (all heads do on the feature strategies)."""
    spec = STRATEGIES[strategy]
    return spec.pretrained and (spec.uses_features or HEADS[head].pools)


def fitted_exactly(strategy: str, head: str) -> bool:
    """Whether the head phase is an exact fit (L-BFGS) rather than gradient steps."""
    return head_on_features(strategy, head) and HEADS[head].linear


def weights_warning(strategy: str, backbone: str, weights: str) -> str | None:
    """The sentence saying why ``strategy`` cannot transfer anything with these weights (a
    transfer strategy on a backbone with no pretrained weights, or with weights ``none``:
    a frozen random network, whose head learns little), or ``None`` when it can."""
    from tl.backbones import BACKBONES

    if not STRATEGIES[strategy].pretrained or weights != "none":
        return None  # scratch, ImageNet, an earlier run's backbone or a weights file
    why = (f"{backbone} has no pretrained weights" if not BACKBONES[backbone].pretrained
           else "the weights are random ('none')")
    return (f"{strategy} transfers what the backbone learned, but {why}: its frozen layers are random "
            "features, so the head learns little (the loss stays near chance). Choose scratch to train "
            "the whole network, or a backbone with ImageNet weights.")
