"""The seeds' four-case table as advice: data size x similarity to ImageNet -> strategy.

Plain Python, no TensorFlow: the home page uses it on a cold start.
"""

from dataclasses import dataclass

# Where "small" ends. Fine-tuning millions of weights on a few hundred images per class
# overfits; from about a thousand per class (CIFAR-10 has 6,000) it pays off.
LARGE_PER_CLASS = 1000


@dataclass(frozen=True)
class Advice:
    case: str
    strategy: str
    head: str
    reason: str


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


def recommend(images_per_class: int, similar: bool) -> Advice:
    """The seeds' four-case advice for a dataset.

    Args:
        images_per_class: typical number of labelled images per class.
        similar: whether the images look like everyday photos (ImageNet-like).
    """
    return _TABLE[(images_per_class >= LARGE_PER_CLASS, bool(similar))]
