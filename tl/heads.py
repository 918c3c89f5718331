"""Heads: name -> builder of the classifier that sits on the backbone's feature map.

Every head is a ``keras.Sequential`` named ``head`` whose input is a feature map
``(h, w, channels)``; for the cached-feature strategies that map is the pooled
``(1, 1, channels)`` vector, on which global pooling and flattening are the identity.
The last layer is a float32 softmax so mixed precision never rounds the probabilities.

On a pretrained backbone a head starts with a ``standardize`` layer (a built-in
``Normalization``) that holds the per-channel mean and variance of the training images'
pooled features, so whatever reads the head's input (the optimiser, an exported model,
Classify) sees standardised features; a softmax on raw features of very different scales
converges slowly. Per-channel standardisation commutes with global average pooling, so
the same statistics serve a pooled vector and a feature map.
"""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class HeadSpec:
    """Registry entry.

    Attributes:
        pools: starts with global average pooling, so it can be trained on the pooled
            features of the feature cache whatever the strategy.
        linear: a softmax of an affine map of the pooled features at inference (dropout is
            the identity there), so on cached features it is fitted exactly
            (:mod:`tl.head_fit`) instead of by gradient steps.
    """

    name: str
    build: Callable
    description: str
    pools: bool
    linear: bool


def _output(num_classes):
    from keras import layers

    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")


def _linear(input_shape, num_classes, dropout):
    from keras import layers

    return [layers.GlobalAveragePooling2D(name="avg_pool"), _output(num_classes)]


def _gap_dropout_dense(input_shape, num_classes, dropout):
    from keras import layers

    return [
        layers.GlobalAveragePooling2D(name="avg_pool"),
        layers.Dropout(dropout, name="dropout"),
        _output(num_classes),
    ]


def _flatten_dense(input_shape, num_classes, dropout):
    from keras import layers

    return [
        layers.Flatten(name="flatten"),
        layers.Dense(256, activation="relu", name="dense"),
        layers.BatchNormalization(momentum=0.9, name="bn"),
        layers.Dropout(dropout, name="dropout"),
        _output(num_classes),
    ]


def _dense_stack(input_shape, num_classes, dropout):
    from keras import layers

    stack = [layers.GlobalAveragePooling2D(name="avg_pool")]
    for i, units in enumerate((512, 256, 128), start=1):
        stack += [
            layers.Dense(units, activation="relu", name=f"dense{i}"),
            layers.BatchNormalization(momentum=0.9, name=f"bn{i}"),
            layers.Dropout(dropout, name=f"dropout{i}"),
        ]
    return stack + [_output(num_classes)]


HEADS = {
    spec.name: spec
    for spec in (
        HeadSpec("gap_dropout_dense", _gap_dropout_dense,
                 "Global average pooling, dropout, softmax: small and robust; on cached features "
                 "fitted exactly (a logistic regression).", pools=True, linear=True),
        HeadSpec("linear", _linear,
                 "Global average pooling then one softmax layer: a linear classifier, fitted exactly "
                 "on cached features.", pools=True, linear=True),
        HeadSpec("flatten_dense", _flatten_dense,
                 "Flatten, Dense(256), BatchNorm, dropout, softmax: keeps spatial detail, many weights.",
                 pools=False, linear=False),
        HeadSpec("dense_stack", _dense_stack,
                 "Pooling then three Dense-BatchNorm-Dropout blocks: more capacity for harder tasks.",
                 pools=True, linear=False),
    )
}


def build_head(name: str, input_shape, num_classes: int, dropout: float = 0.3, standardize: bool = False):
    """Build head ``name`` for a feature map of ``input_shape`` and ``num_classes`` outputs,
    starting with a ``standardize`` layer when asked (its statistics are set by training).

    Raises:
        ConfigError: for an unknown name.
    """
    import keras
    from keras import layers

    from tl.errors import ConfigError

    if name not in HEADS:
        raise ConfigError(f"Expected `head` to be one of {sorted(HEADS)}. Received: head={name!r}.")
    stack = HEADS[name].build(tuple(input_shape), num_classes, dropout)
    if standardize:
        stack = [layers.Normalization(axis=-1, name="standardize")] + stack
    return keras.Sequential([keras.Input(tuple(input_shape))] + stack, name="head")


def set_standardization(head, mean, variance) -> None:
    """Store the training features' per-channel ``mean`` and ``variance`` in the head's
    ``standardize`` layer."""
    import numpy as np

    layer = head.get_layer("standardize")
    count = np.zeros(tuple(layer.weights[2].shape), dtype=layer.weights[2].dtype)
    layer.set_weights([np.asarray(mean, np.float32), np.asarray(variance, np.float32), count])
    layer.finalize_state()


def refresh_standardization(model) -> None:
    """Make ``Normalization`` layers use the statistics just set with ``set_weights``: they
    compute the tensors they apply when built, adapted or loaded from a file, not on every
    ``set_weights`` (Keras 3)."""
    for layer in model.layers:
        if type(layer).__name__ == "Normalization":
            layer.finalize_state()
