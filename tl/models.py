"""Assemble the full model: RGB 0-255 image of any size -> class probabilities.

Layout (layer names are relied on elsewhere)::

    image (None, None, 3) -> resize -> preprocess -> backbone [-> pool] -> head

``resize`` and ``preprocess`` are built-in Keras layers, so a saved model needs no custom
code to load (``safe_mode=True``) and takes plain images. ``pool`` (global average pooling
that keeps a 1x1 map) is present for the strategies that train the head on cached pooled
features; the head then sees exactly the same input in training and in use.
"""


def build(cfg, num_classes: int, weights=None):
    """Build the full model a run config describes.

    Args:
        cfg: a :class:`tl.config.RunConfig` (backbone, strategy, head, image size, dropout).
        num_classes: number of output classes.
        weights: backbone weights: ``None``, ``"imagenet"`` or a weights file path.

    Returns:
        The assembled ``keras.Model``; ``model.get_layer("backbone")`` and
        ``model.get_layer("head")`` are its two trainable parts.
    """
    from tl.backbones import BACKBONES, build_backbone, cut_layer
    from tl.heads import build_head
    from tl.strategies import STRATEGIES, head_on_features

    strategy = STRATEGIES[cfg.strategy]
    backbone = build_backbone(cfg.backbone, cfg.image_size, weights=weights,
                              cut=cut_layer(cfg.backbone, strategy.cut))
    head_input = tuple(backbone.output.shape[1:])
    if strategy.uses_features:
        head_input = (1, 1, head_input[-1])
    head = build_head(cfg.head, head_input, num_classes, cfg.dropout,
                      standardize=head_on_features(cfg.strategy, cfg.head))
    return assemble(backbone, head, image_size=cfg.image_size,
                    preprocess=BACKBONES[cfg.backbone].preprocess,
                    pooled=strategy.uses_features, name=f"{cfg.backbone}_{cfg.strategy}")


def image_input(image_size: int, preprocess: str):
    """``(inputs, x)``: an RGB 0-255 image of any size, resized to ``image_size`` and
    preprocessed for the backbone (the ``image -> resize -> preprocess`` start of every
    model here)."""
    import keras
    from keras import layers

    from tl.backbones import preprocess_layer

    inputs = keras.Input((None, None, 3), name="image")
    # training=False is stored with the call: Keras's image preprocessing layers default
    # to training=True and pass that on to the layers after them, so without it a plain
    # model(x) ran BatchNorm and Dropout in training mode.
    x = layers.Resizing(image_size, image_size, interpolation="bilinear", antialias=True,
                        dtype="float32", name="resize")(inputs, training=False)
    return inputs, preprocess_layer(preprocess)(x)


def assemble(backbone, head, *, image_size: int, preprocess: str, pooled: bool, name: str):
    """Wrap ``backbone`` and ``head`` into the exported model (see the module docstring)."""
    import keras
    from keras import layers

    inputs, x = image_input(image_size, preprocess)
    x = backbone(x)
    if pooled:
        x = layers.GlobalAveragePooling2D(keepdims=True, name="pool")(x)
    outputs = head(x)
    return keras.Model(inputs, outputs, name=name)


def feature_extractor(model):
    """The part of an assembled model that maps images to the backbone's pooled features
    ``(1, 1, C)``: what the feature cache holds, and what a pooling head reads."""
    import keras

    try:
        return keras.Model(model.input, model.get_layer("pool").output, name="features")
    except ValueError:  # a model that feeds the feature map to its head: pool it here
        inputs = keras.Input((None, None, 3), name="image")
        x = model.get_layer("preprocess")(model.get_layer("resize")(inputs))
        pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="pool")(model.get_layer("backbone")(x))
        return keras.Model(inputs, pooled, name="features")


def count_params(weights) -> int:
    """Number of scalars in a list of variables."""
    import math

    return int(sum(math.prod(w.shape) for w in weights))
