"""The seeds' four-case table as advice: data size x similarity to ImageNet -> strategy.

Plain Python, no TensorFlow at import: the home page uses it on a cold start. The
similarity to ImageNet can also be measured (:func:`measure_similarity`, which imports
Keras when called).
"""

from dataclasses import asdict, dataclass, replace

import numpy as np

from tl.backbones import BACKBONES

# Where "small" ends. Fine-tuning millions of weights on a few hundred images per class
# overfits; from about a thousand per class (CIFAR-10 has 6,000) it pays off.
LARGE_PER_CLASS = 1000


@dataclass(frozen=True)
class Advice:
    """Which of the four cases applies and what it recommends.

    ``similarity``, ``images_per_class`` and ``basis`` (one line on what the advice rests
    on) are set by :func:`advise`, from measurements; :func:`recommend` leaves them empty.
    """

    case: str
    strategy: str
    head: str
    reason: str
    similarity: "Similarity | None" = None
    images_per_class: int | None = None
    basis: str = ""

    def to_dict(self) -> dict:
        return asdict(self)  # the similarity, when set, as a nested dict


_TABLE = {
    (False, True): Advice(
        "small data, similar to ImageNet", "feature_extraction", "linear",
        "ImageNet features already separate your classes; with few images, train only a "
        "linear classifier on them (fast, hard to overfit)."),
    (False, False): Advice(
        "small data, different from ImageNet", "earlier_layer", "gap_dropout_dense",
        "The last block's features are specific to ImageNet's classes; an earlier block's "
        "more generic features (edges, textures, parts) transfer better, and few images "
        "cannot retrain the network."),
    (True, True): Advice(
        "large data, similar to ImageNet", "fine_tune", "gap_dropout_dense",
        "Enough images to adjust the top layers safely: train the head first, then "
        "fine-tune the last layers at a 10x lower learning rate."),
    (True, False): Advice(
        "large data, different from ImageNet", "full_fine_tune", "gap_dropout_dense",
        "Enough images to retrain the whole network; starting from ImageNet weights still "
        "converges faster than starting from scratch."),
}


def no_transfer(backbone: str | None = None, weights: str = "imagenet", unavailable: str | None = None):
    """The advice when nothing pretrained can be transferred, else ``None``.

    Args:
        backbone: registry name (``None``: not known, assumed pretrained).
        weights: the weights the transfer strategies would start from.
        unavailable: the sentence saying why the ImageNet weights cannot be had now (not
            installed, not downloadable), if the caller checked.

    Returns:
        An :class:`Advice` recommending ``scratch`` with the reason, when ``backbone`` has
        no pretrained weights, ``weights`` is ``"none"`` or ``unavailable`` is given.
    """
    if backbone is not None and not BACKBONES[backbone].pretrained:
        return Advice("no pretrained weights", "scratch", "gap_dropout_dense",
                      f"Transfer is not possible: {backbone} has no pretrained weights, so there are no "
                      "ImageNet features to reuse. Train the whole network with scratch, or pick a pretrained "
                      "backbone (efficientnet_lite0's weights install with the app) to transfer.")
    if weights == "none":
        return Advice("random weights", "scratch", "gap_dropout_dense",
                      "Transfer is not possible: the weights are random ('none'), so there are no ImageNet "
                      "features to reuse. Train the whole network with scratch, or choose weights 'imagenet' "
                      "to transfer.")
    if unavailable:
        return Advice("ImageNet weights unavailable", "scratch", "gap_dropout_dense",
                      f"Transfer is not possible until the ImageNet weights are there: {unavailable} Until "
                      "then scratch (no transfer) is the strategy that can run.")
    return None


def recommend(images_per_class: int, similar: bool, backbone: str | None = None, weights: str = "imagenet",
              unavailable: str | None = None) -> Advice:
    """The seeds' four-case advice for a dataset, or ``scratch`` when nothing pretrained
    can be transferred (see :func:`no_transfer`).

    Args:
        images_per_class: typical number of labelled images per class.
        similar: whether the images look like everyday photos (ImageNet-like).
        backbone, weights, unavailable: as for :func:`no_transfer`.
    """
    blocked = no_transfer(backbone, weights, unavailable)
    if blocked is not None:
        return blocked
    return _TABLE[(images_per_class >= LARGE_PER_CLASS, bool(similar))]


# -- measured similarity to ImageNet ---------------------------------------------------
#
# The measure: how confident the backbone's own ImageNet classifier is on a sample of the
# dataset's images, as the mean of each image's largest class probability. Photos of the
# kinds of things ImageNet holds (animals, objects, scenes) usually get one clear top class;
# images from another domain (X-rays, satellite tiles, drawings, microscopy) match no
# ImageNet class well, so the probability spreads over many classes and the top one is low.
# One number, cheap (one forward pass over a few dozen images), and it uses exactly the
# network that would be transferred. A statistic of pooled features would need a
# reference distribution of ImageNet features that we cannot ship offline.
#
# The threshold, measured with EfficientNet-Lite0's real ImageNet weights
# (python bench/advisor_similarity.py): colour photos score 0.52 and 160-pixel crops of them
# 0.41; crops of brick/grass/gravel photos 0.33, the synthetic shapes 0.29, Hubble deep-field
# crops 0.23, grey 25x25 faces 0.20, microscopy and retina images 0.11, 8x8 digit scans 0.08.
# 0.4 keeps everyday photos (and even tight crops of them) on the similar side and
# everything else on the other; other backbones' heads are more or less confident, so the
# line is Lite0's.
SIMILARITY_THRESHOLD = 0.4
SIMILARITY_SAMPLE = 32


@dataclass(frozen=True)
class Similarity:
    """How close a dataset looks to ImageNet, as measured (or why it could not be).

    Attributes:
        similar: the verdict, or ``None`` when it could not be measured.
        score: mean top-1 ImageNet probability over the sample (``None`` if unmeasured).
        sample: how many images were measured.
        reason: one sentence: the finding, or why there is none.
    """

    similar: bool | None
    score: float | None
    sample: int
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def imagenet_confidence(probs) -> float:
    """Mean over images of the largest class probability.

    Args:
        probs: ``(images, classes)`` array of probabilities (each row sums to 1).

    Returns:
        A number in ``[1 / classes, 1]``: 1 when every image has one certain class,
        ``1 / classes`` when every image is spread evenly over all classes.

    Raises:
        ValueError: ``probs`` is not a non-empty 2-D array of probability rows.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ValueError(f"Expected `probs` of shape (images, classes) with at least 2 classes. "
                         f"Received: shape {probs.shape}.")
    if (probs < -1e-6).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("Expected `probs` rows to be probabilities (non-negative, summing to 1).")
    return float(probs.max(axis=1).mean())


def similarity_from_probs(probs, threshold: float = SIMILARITY_THRESHOLD) -> Similarity:
    """The verdict for ImageNet-head probabilities of a sample of images (see the module
    notes above for why this statistic)."""
    score = imagenet_confidence(probs)
    similar = score >= threshold
    verdict = "recognises" if similar else "does not recognise"
    return Similarity(similar, round(score, 4), len(probs),
                      f"The backbone's ImageNet classifier {verdict} these images: its top class "
                      f"holds {score:.0%} of the probability on average over {len(probs)} images "
                      f"(threshold {threshold:.0%}).")


def measure_similarity(data, backbone: str, sample: int = SIMILARITY_SAMPLE, seed: int = 0,
                       weights="imagenet", runs_dir=None) -> Similarity:
    """Run ``backbone``'s ImageNet classifier on up to ``sample`` images of ``data``.

    Args:
        data: a :class:`tl.datasets.Data`.
        backbone: registry name.
        sample: how many images to measure (a seeded choice over the whole dataset).
        seed: seed of that choice.
        weights: "imagenet" (what the measure means); ``None`` builds the same network
            with random weights (for tests of the mechanics).
        runs_dir: whose cache keeps the engine's converted model (:mod:`tl.engine`).

    Returns:
        A :class:`Similarity`; when the backbone has no ImageNet head, or its ImageNet
        weights are not downloaded and cannot be, ``similar`` is ``None`` and ``reason``
        says why. Never raises for those.
    """
    from tl import engine
    from tl.backbones import preprocess_affine
    from tl.paths import cache_root

    spec = BACKBONES[backbone]
    if spec.is_baseline or not spec.pretrained:
        return Similarity(None, None, 0, f"Backbone '{backbone}' has no ImageNet classifier, so similarity "
                                         "to ImageNet cannot be measured; pick a pretrained backbone to measure it.")
    model = _imagenet_classifier(spec, weights)
    if isinstance(model, Similarity):
        return model
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(data), size=min(sample, len(data)), replace=False))
    images = np.stack([_resize(data.read(i), spec.native_size) for i in chosen]).astype("float32")
    kernel, bias = preprocess_affine(spec.preprocess)
    runner = engine.compile(model, key={"pass": "imagenet", "backbone": spec.name, "weights": str(weights)},
                            cache_root=cache_root(runs_dir))
    ready = (images @ kernel + bias).astype("float32")
    probs = np.concatenate([runner(ready[i:i + 16]) for i in range(0, len(ready), 16)])
    return similarity_from_probs(probs)


def _imagenet_classifier(spec, weights):
    """The backbone with its ImageNet top, or a :class:`Similarity` saying why not."""
    from tl.backbones import imagenet_classifier
    from tl.downloads import keras_home
    from tl.errors import DownloadError

    try:
        return imagenet_classifier(spec.name, weights)
    except DownloadError as exc:
        if spec.weights_offline:  # a pip package that is not installed: its own sentence says which
            return Similarity(None, None, 0, f"{exc} Until then similarity to ImageNet is not measured.")
        return Similarity(None, None, 0, f"The ImageNet classifier weights for {spec.name} ({exc.filename}) are not "
                                         f"in {keras_home()}/models and could not be downloaded (no internet?), "
                                         "so similarity to ImageNet was not measured.")


def _resize(image, size: int):
    from PIL import Image

    return np.asarray(Image.fromarray(image).convert("RGB").resize((size, size), Image.BILINEAR))


def images_per_class(data) -> int:
    """The median number of images per class: what the data-size question asks."""
    return int(np.median(list(data.counts().values())))


def advise(per_class: int, similarity: Similarity, assume_similar: bool = True, backbone: str | None = None,
           weights: str = "imagenet", unavailable: str | None = None) -> Advice:
    """The four-case advice from a measured similarity.

    When ``similarity.similar`` is ``None`` (not measurable), ``assume_similar`` decides,
    and the reason says it was assumed. ``backbone``, ``weights`` and ``unavailable`` as
    for :func:`no_transfer`: when nothing can be transferred the advice is ``scratch``.
    """
    blocked = no_transfer(backbone, weights, unavailable)
    if blocked is not None:
        return replace(blocked, similarity=similarity, images_per_class=int(per_class),
                       basis=f"{per_class:,} images per class; with nothing pretrained to transfer, similarity "
                             "to ImageNet does not decide.")
    measured = similarity.similar is not None
    return replace(recommend(per_class, similarity.similar if measured else assume_similar),
                   similarity=similarity, images_per_class=int(per_class),
                   basis=f"{per_class:,} images per class; similarity {'measured' if measured else 'assumed'}: "
                         f"{similarity.reason}")
