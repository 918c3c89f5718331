"""Heads: name -> builder of the classifier that sits on the backbone's feature map.

Every head is a ``keras.Sequential`` named ``head`` whose input is a feature map
``(h, w, channels)``; for the cached-feature strategies that map is the pooled
``(1, 1, channels)`` vector, on which global pooling and flattening are the identity.
The last layer is a float32 softmax so mixed precision never rounds the probabilities.
"""

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class HeadSpec:
    name: str
    build: Callable
    description: str


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
                 "Global average pooling, dropout, softmax (seed 000): small and robust."),
        HeadSpec("linear", _linear,
                 "Global average pooling then one softmax layer (seed 002): a linear classifier."),
        HeadSpec("flatten_dense", _flatten_dense,
                 "Flatten, Dense(256), BatchNorm, dropout, softmax (seed 001): keeps spatial detail, many weights."),
        HeadSpec("dense_stack", _dense_stack,
                 "Pooling then three Dense-BatchNorm-Dropout blocks (seed 003): more capacity for harder tasks."),
    )
}

DEFAULT_HEAD = "gap_dropout_dense"


def build_head(name: str, input_shape, num_classes: int, dropout: float = 0.3):
    """Build head ``name`` for a feature map of ``input_shape`` and ``num_classes`` outputs.

    Raises:
        ConfigError: for an unknown name.
    """
    import keras

    from tl.errors import ConfigError

    if name not in HEADS:
        raise ConfigError(f"Expected `head` to be one of {sorted(HEADS)}. Received: head={name!r}.")
    layers = HEADS[name].build(tuple(input_shape), num_classes, dropout)
    head = keras.Sequential([keras.Input(tuple(input_shape))] + layers, name="head")
    return head
