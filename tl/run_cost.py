"""Estimate a run's peak memory and time before it starts, and refuse one over the budget.

Made for small CPU-only hosts such as Streamlit Community Cloud (about 1-2.7 GB). The
budget is ``$TL_MEMORY_BUDGET_MB``; unset (or 0) means no refusal. No TensorFlow here:
the estimate is arithmetic on the config and a per-backbone table.

Model (MB = 2**20 bytes; every tensor float32)::

    memory = BASE_MB                                  TF + Keras + Python, an empty run
           + 3 x params x 4 B                         model, its saved clone, loading
           + trainable x 4 B x (1 + optimizer slots)  gradients and Adam/RMSprop/SGD slots
           + batch x act x S^2 x 4 B x K              activations kept for the backward
                                                      pass (K_TRAIN, K_FINE_TUNE) or alive
                                                      at once in a forward pass (K_FORWARD)
           + images x feature width x 4 B             cached features (feature strategies)
           + dataset arrays held in memory (cifar10)

    time   = BASE_SECONDS + TRACE_SECONDS + forward-equivalent images x GMAC(S) / GMAC_PER_SECOND

``act`` is the sum of every backbone layer's output elements per input pixel and S the
image size; ``trainable`` is the backbone for full_fine_tune and scratch,
FINE_TUNE_SHARE of it for fine_tune (the top 10 weighted layers of ResNet-50 hold 65% of
its parameters), and only a head otherwise. A backward pass counts as two forwards. GMAC
at 224 px are the published multiply-accumulate counts; ``act`` and ``params`` come from
``python bench/budget_calibration.py --table``.

Calibration: ``python bench/budget_calibration.py`` on the development machine (2 CPU
cores shared with other work, TF 2.21 CPU, synthetic data, weights none, 96 images, one
epoch per phase), peak RSS from ``os.wait4`` and wall time of the whole ``python -m tl
train`` process:

==========================================  ========  ======
run                                          peak MB  wall s
==========================================  ========  ======
small_cnn scratch 16 px (the empty run)          725    14.7
resnet50 feature_extraction 128 px, batch 32    1138    34.4
resnet50 fine_tune 128 px, batch 32             1597    71.1
mobilenet_v2 full_fine_tune 128 px, batch 32    1288    43.5
resnet50 full_fine_tune 160 px, batch 32        2104    85.9
==========================================  ========  ======

Solved for the constants: K_FORWARD 0.10, K_FINE_TUNE 0.29, K_TRAIN 0.36 (resnet50) and
0.59 (mobilenet_v2). Used, rounded up so the guard errs on refusing: 0.12, 0.30 and 0.60;
the estimates are then 730, 1173, 1612, 1295 and 2646 MB (the last 26% over). Times: about
8 GMAC/s once traced, and tracing a whole pretrained backbone's training step costs about
20 s (small_cnn: none); the estimates are 14, 34, 86, 37 and 94 s, within about 25%. Expect
a 2-3x spread on other CPUs.

EfficientNet-Lite (depthwise convolutions and ReLU6 keep more activations per MAC) was
measured separately: ``python -m tl train`` at the defaults (224 px, batch 32, 400
synthetic images, ImageNet weights; /usr/bin/time's maximum RSS): feature_extraction 1140
MB, frozen 1292, fine_tune 1374, full_fine_tune 2414, scratch 3444. Solved: K 0.15, 0.22
(frozen), 0.24, 0.66 and 1.09 (scratch: BatchNorm trains too); used K_LITE below, rounded
up, so the estimates are 1,323 / 1,323 / 1,518 / 2,501 / 3,589 MB. Lite0 also runs about
35 GMAC/s here (108 images/s extracting features at 224 px; 84 forward-equivalents/s
training from scratch), not the 8 of the calibration runs above: GMAC_PER_SECOND_LITE.
Times are for all the epochs a config allows; early stopping usually ends sooner.

The frozen-backbone pass on OpenVINO (:mod:`tl.engine`) adds its converter and its own
copy of the network to the peak: ``python -m tl train`` at the defaults, its converted-model
cache cold (a fresh ``--runs-dir``), ``TL_ENGINE=openvino`` against ``tensorflow`` (maximum
RSS, 2026-12-01): EfficientNet-Lite0 (ImageNet weights) 1,388 against 1,100 MB, ResNet-50
(weights none) 1,575 against 1,291 MB: +288 and +284 MB, so ENGINE_MB = 300 wherever
features are extracted and OpenVINO is installed (and not switched off with ``tensorflow``).
"""

import os
from dataclasses import dataclass
from typing import NamedTuple

from tl.errors import UserError

BUDGET_ENV = "TL_MEMORY_BUDGET_MB"
MB = 2 ** 20
BASE_MB = 725.0
BASE_SECONDS = 14.0
TRACE_SECONDS = {"forward": 4.0, "backprop": 20.0}
K_FORWARD = 0.12
K_FINE_TUNE = 0.30
K_TRAIN = 0.60
K_LITE = {"forward": 0.23, "fine_tune": 0.30, "train": 0.70, "scratch": 1.15}
FINE_TUNE_SHARE = 0.65
GMAC_PER_SECOND = 8.0
GMAC_PER_SECOND_LITE = 35.0
ENGINE_MB = 300.0
SLOTS = {"adam": 2, "rmsprop": 1, "sgd": 1}
IN_MEMORY_DATA_MB = {"cifar10": 60000 * 32 * 32 * 3 / MB}

# name: (backbone parameters, layer output elements per input pixel, feature width),
# from bench/budget_calibration.py --table; and GMAC per image at 224 px (published).
BACKBONE_COSTS = {
    "efficientnet_lite0": (3413024, 395.47, 1280),
    "efficientnet_lite1": (4189344, 514.91, 1280),
    "efficientnet_lite2": (4869168, 540.08, 1280),
    "resnet50": (23587712, 736.74, 2048),
    "resnet101": (42658176, 1110.74, 2048),
    "vgg16": (14714688, 300.5, 512),
    "inception_v3": (21802784, 330.48, 2048),
    "densenet121": (7037504, 991.99, 1024),
    "mobilenet_v2": (2257984, 431.74, 1280),
    "efficientnet_b0": (4049571, 497.51, 1280),
    "small_cnn": (72752, 175.0, 64),
    "perceptron": (0, 3.0, 3072),
}
# EfficientNet-Lite: 407M, 631M and 899M MACs at their native 224, 240 and 260 px, scaled to 224.
GMAC_224 = {"efficientnet_lite0": 0.41, "efficientnet_lite1": 0.55, "efficientnet_lite2": 0.67, "resnet50": 4.1, "resnet101": 7.8, "vgg16": 15.5, "inception_v3": 3.2, "densenet121": 2.9,
            "mobilenet_v2": 0.3, "efficientnet_b0": 0.39, "small_cnn": 0.5, "perceptron": 0.0}
BACKPROP_STRATEGIES = ("fine_tune", "full_fine_tune", "scratch")
LIGHTEST = "efficientnet_lite0"  # the pretrained backbone a refused run is pointed to


class BudgetError(UserError):
    """A run would need more memory than the configured budget."""


@dataclass(frozen=True)
class Estimate:
    """Peak memory (MB) and wall time (s) of a run, and the memory's parts."""

    memory_mb: float
    seconds: float
    parts: dict

    def describe(self) -> str:
        minutes = self.seconds / 60
        when = f"{self.seconds:.0f} s" if minutes < 2 else f"{minutes:.0f} min"
        return f"Estimated peak memory ~{self.memory_mb:,.0f} MB, time ~{when} on a CPU"


def estimate(cfg, num_images: int, cached: int = 0) -> Estimate:
    """Estimate the peak memory and CPU time of training ``cfg`` on ``num_images`` images.

    Args:
        cfg: a :class:`tl.config.RunConfig`.
        num_images: images in the dataset after the per-class cap (all splits).
        cached: of those, the images whose pooled features the cache already holds for this
            backbone setting (:func:`tl.features.cached_count`): a strategy that trains on
            cached features does not pass them through the backbone again.
    """
    from tl.backbones import BACKBONES
    from tl.strategies import head_on_features

    cfg = cfg.resolved()
    params, act, width = BACKBONE_COSTS[cfg.backbone]
    size2 = cfg.image_size ** 2
    backprop = cfg.strategy in BACKPROP_STRATEGIES
    lite = BACKBONES[cfg.backbone].is_lite
    if cfg.strategy == "fine_tune":
        trainable, k = params * FINE_TUNE_SHARE, K_LITE["fine_tune"] if lite else K_FINE_TUNE
    elif backprop:
        trainable = params
        k = (K_LITE["scratch" if cfg.strategy == "scratch" else "train"]) if lite else K_TRAIN
    else:
        trainable, k = width * 16, K_LITE["forward"] if lite else K_FORWARD  # a head: small next to the backbone
    features = head_on_features(cfg.strategy, cfg.head)
    parts = {
        "base": BASE_MB,
        "weights": 3 * params * 4 / MB,
        "optimizer": trainable * 4 * (1 + SLOTS[cfg.optimizer]) / MB,
        "activations": cfg.batch_size * act * size2 * 4 * k / MB,
        "features": num_images * width * 4 / MB if features else 0.0,
        "data": IN_MEMORY_DATA_MB.get(cfg.dataset, 0.0),
        "engine": ENGINE_MB if features and _openvino_runs(cfg) else 0.0,
    }
    return Estimate(sum(parts.values()), _seconds(cfg, num_images, cached), parts)


# A run's two heads held by the app for Classify (tl.predict.Predictor), in MB: measured as
# the resident memory a fresh process gained loading one and classifying a photo, then
# computing a Grad-CAM (2026-12-02, TF 2.21 CPU): EfficientNet-Lite0 about 100 + 60-110,
# ResNet-50 about 450-510 + 140-160. Modelled as a fixed part and five copies of the
# backbone's float32 weights: 145 and 530 MB.
PREDICTOR_BASE_MB = 80.0
PREDICTOR_WEIGHT_COPIES = 5
# TensorFlow and Keras imported into the app's server by its first model load: the server
# went from 85 MB to 842 MB loading a Lite0 run's model (bench/load.py's setup, 2026-12-02),
# of which about 145 MB is the model itself.
TENSORFLOW_MB = 650.0


def predictor_mb(backbone: str | None) -> float:
    """What holding a run's model for Classify costs the server (an unknown or damaged
    run's backbone counts as the largest)."""
    params = BACKBONE_COSTS[backbone][0] if backbone in BACKBONE_COSTS else max(c[0] for c in BACKBONE_COSTS.values())
    return PREDICTOR_BASE_MB + PREDICTOR_WEIGHT_COPIES * params * 4 / MB


def data_mb(cfg) -> float:
    """What holding ``cfg``'s dataset in the server costs: the arrays of a dataset read
    whole (CIFAR-10), else a little per item (folders and made datasets read files lazily;
    synthetic images are drawn on demand)."""
    return IN_MEMORY_DATA_MB.get(cfg.dataset, 0.0) + 5.0


def _openvino_runs(cfg) -> bool:
    """Whether the frozen pass will likely run on OpenVINO (installed, not switched off),
    without importing it."""
    import importlib.util

    chosen = cfg.engine or os.environ.get("TL_ENGINE") or "auto"
    return chosen != "tensorflow" and importlib.util.find_spec("openvino") is not None


def _seconds(cfg, num_images: int, cached: int = 0) -> float:
    from tl.backbones import BACKBONES
    from tl.strategies import head_on_features

    train = num_images * (1 - cfg.val_fraction - cfg.test_fraction)
    val, test = num_images * cfg.val_fraction, num_images * cfg.test_fraction
    # The head phase: one pass to cache pooled features (the fit itself costs next to
    # nothing), or for a Flatten head its epochs on images.
    pooled = head_on_features(cfg.strategy, cfg.head)
    extract = max(num_images - max(cached, 0), 0)  # the cached photos are read, not passed again
    head = extract if pooled else cfg.epochs * (train + val)
    if cfg.strategy in ("feature_extraction", "earlier_layer"):
        forwards = extract
    elif cfg.strategy == "frozen":
        forwards = head + cfg.epochs * (train + val) + test
    elif cfg.strategy == "fine_tune":
        forwards = head + cfg.fine_tune_epochs * (3 * train + val) + test
    elif cfg.strategy == "full_fine_tune":
        forwards = head + cfg.epochs * (3 * train + val) + test
    else:
        forwards = cfg.epochs * (3 * train + val) + test
    gmac = GMAC_224[cfg.backbone] * cfg.image_size ** 2 / 224 ** 2
    trace = 0.0
    if not BACKBONES[cfg.backbone].is_baseline:  # the small baselines trace in no time
        trace = TRACE_SECONDS["backprop" if cfg.strategy in BACKPROP_STRATEGIES else "forward"]
    rate = GMAC_PER_SECOND_LITE if BACKBONES[cfg.backbone].is_lite else GMAC_PER_SECOND
    return BASE_SECONDS + trace + forwards * gmac / rate


class SweepEstimate(NamedTuple):
    """A sweep's estimate: its runs train one after another, so their times add up, and one
    at a time, so its peak memory is its largest run's."""

    seconds: float  # all the runs
    memory_mb: float  # the largest run's peak
    slowest: str  # the strategy that takes the most time
    largest: str  # the strategy with the largest peak
    each: dict  # strategy -> its run's Estimate


def estimate_sweep(configs, num_images: int) -> SweepEstimate:
    """Estimate a sweep of ``configs`` (one per strategy, as :func:`tl.sweep.sweep_configs`
    makes them) on ``num_images`` images, trained one after another (one worker, the
    default).

    Raises:
        ValueError: no configs.
    """
    each = {cfg.strategy: estimate(cfg, num_images) for cfg in configs}
    if not each:
        raise ValueError("Expected `configs` to hold at least one config. Received: none.")
    slowest = max(each, key=lambda name: each[name].seconds)
    largest = max(each, key=lambda name: each[name].memory_mb)
    return SweepEstimate(sum(found.seconds for found in each.values()), each[largest].memory_mb, slowest, largest,
                         each)


def budget_mb() -> float | None:
    """The memory budget from ``$TL_MEMORY_BUDGET_MB`` (``None``: no limit)."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BudgetError(f"{BUDGET_ENV} must be a number of megabytes, e.g. 2500. Received: {text!r}.") from None
    return value if value > 0 else None


def check(cfg, num_images: int, budget: float | None = None, in_use_mb: float = 0.0, cached: int = 0) -> Estimate:
    """Return the estimate, or raise :class:`BudgetError` with a smaller setting that fits.

    Args:
        cached: images whose features are cached already (:func:`estimate`).
        budget: MB; default :func:`budget_mb` (no limit when unset).
        in_use_mb: MB the budget also covers and the run cannot have: the app's server
            when the app starts the run (:mod:`tl.memory`); 0 for the command line.
    """
    found = estimate(cfg, num_images, cached)
    budget = budget_mb() if budget is None else budget
    if budget is None or found.memory_mb + in_use_mb <= budget:
        return found
    held = f", of which the app itself holds {in_use_mb:,.0f} MB" if in_use_mb else ""
    changes, smaller = suggest(cfg, num_images, budget - in_use_mb)
    if changes:
        advice = (f"try {', '.join(f'{k}={v}' for k, v in changes.items())} "
                  f"(about {smaller.memory_mb:,.0f} MB)")
    else:
        advice = "no smaller setting of this dataset fits; raise the budget or use a bigger machine"
    raise BudgetError(f"This run needs about {found.memory_mb:,.0f} MB of memory but the budget is "
                      f"{budget:,.0f} MB ({BUDGET_ENV}){held}; {advice}.")


def suggest(cfg, num_images: int, budget: float):
    """The fewest changes, cheapest first, after which the estimate fits ``budget``.

    Returns ``(changes, estimate)``; ``changes`` is empty when nothing tried fits.
    """
    from tl.backbones import BACKBONES

    current, changes = cfg, {}
    moves = []
    batch = cfg.batch_size
    while batch > 8:
        batch //= 2
        moves.append(("batch_size", batch))
    min_size = BACKBONES[cfg.backbone].min_size
    moves += [("image_size", s) for s in (160, 128, 96, 64) if min_size <= s < cfg.image_size]
    if cfg.strategy in BACKPROP_STRATEGIES:
        moves.append(("strategy", "feature_extraction"))
    if cfg.backbone != LIGHTEST and BACKBONES[cfg.backbone].pretrained:
        moves.append(("backbone", LIGHTEST))
    for field, value in moves:
        try:
            current = current.replace(**{field: value})
        except UserError:
            continue
        changes[field] = value
        found = estimate(current, num_images)
        if found.memory_mb <= budget:
            return changes, found
    return {}, estimate(cfg, num_images)


def images_hint(cfg) -> int | None:
    """Images a config will use, from the config alone (``None`` for a folder)."""
    from tl.datasets import SYNTHETIC_DEFAULT_PER_CLASS

    if cfg.dataset == "synthetic":
        return cfg.synthetic_classes * (cfg.samples_per_class or SYNTHETIC_DEFAULT_PER_CLASS)
    if cfg.dataset == "cifar10":
        return 10 * cfg.samples_per_class if cfg.samples_per_class else 60000
    return None
